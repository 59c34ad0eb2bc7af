"""Run one or more services in one process: one ops endpoint, status lines, clean stop.

Exit status: 0 after SIGTERM/SIGINT (a clean stop); 2 when a service cannot start
(configuration, ports, data_dir in use); 70 (EXIT_FATAL) when a service reports that a
thread of it cannot recover (aqpipe/supervision.py): the services are stopped as cleanly
as they still can be, and systemd (Restart= in deploy/systemd) starts the process
again. Messages not acknowledged wait in the broker, so nothing is lost.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Protocol

from aqpipe.cliutil import wait_for_signal
from aqpipe.config import Config
from aqpipe.errors import ConfigError
from aqpipe.ops_http import OpsServer
from aqpipe.supervision import EXIT_FATAL

log = logging.getLogger("aqpipe")


class Service(Protocol):
    """What the runner needs of a service (ingest, aggregator, alerts, ...)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def ready(self) -> tuple[bool, str]: ...
    def status_line(self) -> str: ...

# Optional on a service: `fatal() -> str | None` (why it cannot go on) and `status_interval_s`
# (how often its status line is logged; default ingest.status_interval_s).

FATAL_CHECK_S = 0.5  # how soon a fatal service is noticed
FATAL_STOP_TIMEOUT_S = 60.0  # a wedged thread must not keep a fatal process from exiting


ServiceFactory = Callable[[Config], Service]


def where_to_look(cfg: Config) -> str:
    metrics_url = (f"http://{cfg.metrics.host}:{cfg.metrics.port}/metrics (/healthz, /readyz)"
                   if cfg.metrics.port else "(metrics off)")
    target = (f"database={cfg.influx.database}" if cfg.influx.api == "v1"
              else f"org={cfg.influx.org} bucket={cfg.influx.bucket}")
    return (f"mqtt=mqtt://{cfg.mqtt.host}:{cfg.mqtt.port} influx={cfg.influx.url} api={cfg.influx.api} {target} "
            f"metrics={metrics_url} deadletters={cfg.deadletter_dir.resolve()}")


def run_services(cfg: Config, factories: list[tuple[str, ServiceFactory]]) -> int:
    """Start services in one process with one /metrics /healthz /readyz endpoint, log a
    status line per service at its own status_interval_s, stop them in reverse order on
    SIGTERM/SIGINT (exit 0) or when one reports a fatal error (exit EXIT_FATAL)."""
    stop = wait_for_signal()
    started: list[tuple[str, Service]] = []
    ops: OpsServer | None = None
    try:
        services = [(name, make(cfg)) for name, make in factories]
        ops = OpsServer(cfg.metrics.host, cfg.metrics.port) if cfg.metrics.port else None
        if ops is not None:
            # Before any starts: /readyz must not answer 200 while a service is not yet up.
            for _, service in services:
                ops.add_check(service.ready)
        log.info("event=starting services=%s %s", ",".join(n for n, _ in services), where_to_look(cfg))
        for name, service in services:
            if ops is not None:  # before start: /readyz must not answer 200 for a service not yet up
                ops.add_check(service.ready)
            service.start()
            started.append((name, service))
    except (ConfigError, OSError) as e:
        print(f"aqpipe: {e}", file=sys.stderr)
        for _, service in reversed(started):
            service.stop()
        if ops is not None:
            ops.close()
        return 2
    status = 0
    intervals = {name: getattr(service, "status_interval_s", cfg.ingest.status_interval_s) for name, service in started}
    next_status = {name: time.monotonic() + interval for name, interval in intervals.items()}
    while not stop.wait(min([FATAL_CHECK_S, *intervals.values()])):
        failed = _fatal(started)
        if failed is not None:
            log.critical("event=service_fatal service=%s reason=%r action=stopping exit_status=%d "
                         "(restarted by systemd; unacknowledged messages wait in the broker)",
                         failed[0], failed[1], EXIT_FATAL)
            status = EXIT_FATAL
            break
        now = time.monotonic()
        for name, service in started:
            if now >= next_status[name]:
                log.info("event=status service=%s %s", name, service.status_line())
                next_status[name] = now + intervals[name]
    if status == 0:
        log.info("event=stopping (signal)")
    _stop_all(started, ops, FATAL_STOP_TIMEOUT_S if status else None)
    return status


def _fatal(started: list[tuple[str, Service]]) -> tuple[str, str] | None:
    for name, service in started:
        check = getattr(service, "fatal", None)
        reason = check() if check is not None else None
        if reason:
            return name, reason
    return None


def _stop_all(started: list[tuple[str, Service]], ops: OpsServer | None, timeout: float | None) -> None:
    """Stop the services in reverse order, then the ops endpoint. With a timeout (a fatal
    error: a thread may be wedged) give up waiting after it; the process exits anyway."""
    def stop_them() -> None:
        for name, service in reversed(started):
            try:
                service.stop()
            except Exception as e:  # noqa: BLE001 - stop the others; the exit status says it failed
                log.error("event=stop_failed service=%s error=%r", name, f"{type(e).__name__}: {e}")
        if ops is not None:
            ops.close()

    if timeout is None:
        stop_them()
        return
    stopper = threading.Thread(target=stop_them, name="aqpipe-stop", daemon=True)
    stopper.start()
    stopper.join(timeout)
    if stopper.is_alive():
        log.error("event=stop_timeout seconds=%.0f (exiting anyway)", timeout)
