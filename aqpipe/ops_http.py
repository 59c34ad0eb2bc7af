"""The operations endpoint on metrics.port: /metrics, /healthz, /readyz."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

ReadyCheck = Callable[[], tuple[bool, str]]


class OpsServer:
    """Readiness is the AND of every registered check (one per service in the process)."""

    def __init__(self, host: str, port: int) -> None:
        self.checks: list[ReadyCheck] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.startswith("/metrics"):
                    self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    self._send(200, b"ok\n")
                elif self.path == "/readyz":
                    failing = [why for ok, why in (check() for check in server.checks) if not ok]
                    self._send(503 if failing else 200, ("\n".join(failing) or "ok").encode() + b"\n")
                else:
                    self._send(404, b"try /metrics, /healthz or /readyz\n")

            def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # scrapes every 15 s are not events
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, name="aqpipe-http", daemon=True).start()

    def add_check(self, check: ReadyCheck) -> None:
        self.checks.append(check)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
