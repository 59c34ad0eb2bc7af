"""`aqpipe web` as a service the runner hosts: uvicorn in a thread, stopped cleanly.

The runner (`aqpipe web` alone, or `aqpipe run` with the others) owns the signals and
the /metrics /healthz /readyz endpoint; this class starts uvicorn on web.host:web.port
and stops it on SIGTERM (uvicorn finishes the requests in progress, then returns).
"""

from __future__ import annotations

import logging
import threading

import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from alerts.web.app import create_app
from alerts.web.context import WebContext
from alerts.web.sessions import SessionKeyError
from alerts.web.users import UsersFileError
from aqpipe.config import Config
from aqpipe.errors import ConfigError

log = logging.getLogger("aqpipe.web")


class WebService:
    def __init__(self, cfg: Config, ctx: WebContext | None = None) -> None:
        self.cfg = cfg
        try:
            self.ctx = ctx or WebContext.from_config(cfg)
        except SQLAlchemyError as e:  # the runner reports a ConfigError with its key and exits 2
            raise ConfigError("cases.database_url", f"the case database cannot be opened or migrated: "
                                                    f"{type(e).__name__}: {str(e).splitlines()[0]}") from e
        except (UsersFileError, SessionKeyError) as e:
            raise ConfigError("web.users_file" if isinstance(e, UsersFileError) else "web.session_key_file",
                              str(e)) from e
        self.app = create_app(self.ctx)
        proxies = cfg.web.trusted_proxies.strip()
        self._server = uvicorn.Server(uvicorn.Config(
            self.app, host=cfg.web.host, port=cfg.web.port, log_level="warning", access_log=False,
            proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None, server_header=False,
            timeout_graceful_shutdown=10, lifespan="off"))
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.cfg.web.host}:{self.cfg.web.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="aqpipe-web", daemon=True)
        self._thread.start()
        # Wait until the socket is bound (or binding failed), so a port in use is an error now.
        while not self._server.started and self._thread.is_alive():
            self._thread.join(0.05)
        if not self._server.started:
            raise ConfigError("web.port", f"aqpipe web could not listen on {self.cfg.web.host}:{self.cfg.web.port} "
                                          f"({self._failed or 'address in use?'})")
        log.info("event=web_listening url=%s users_file=%s", self.url, self.ctx.users.path)

    def _serve(self) -> None:
        try:
            self._server.run()
        except BaseException as e:  # noqa: BLE001 - reported by start(); SystemExit is uvicorn's bind failure
            self._failed = e

    def fatal(self) -> str | None:
        """uvicorn's thread ended without being asked to: the runner stops the process (exit 70)."""
        if self._thread is not None and not self._thread.is_alive() and not self._server.should_exit:
            return f"the web server thread ended ({self._failed or 'no error given'})"
        return None

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)

    def ready(self) -> tuple[bool, str]:
        alive = self._thread is not None and self._thread.is_alive() and self._server.started
        return (True, "web ok") if alive else (False, f"web: not serving on {self.url}")

    def status_line(self) -> str:
        c = self.ctx.counters
        return (f"url={self.url} requests={c.requests} logins_ok={c.logins_ok} logins_failed={c.logins_failed} "
                f"logins_throttled={c.logins_throttled}")
