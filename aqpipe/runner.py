"""Run one or more services in one process: one ops endpoint, status lines, clean stop."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Protocol

from aqpipe.cliutil import wait_for_signal
from aqpipe.config import Config
from aqpipe.errors import ConfigError
from aqpipe.ops_http import OpsServer

log = logging.getLogger("aqpipe")


class Service(Protocol):
    """What the runner needs of a service (ingest, aggregator, alerts, ...)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def ready(self) -> tuple[bool, str]: ...
    def status_line(self) -> str: ...


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
    status line per service every ingest.status_interval_s, stop them in reverse
    order on SIGTERM/SIGINT."""
    stop = wait_for_signal()
    started: list[tuple[str, Service]] = []
    ops: OpsServer | None = None
    try:
        services = [(name, make(cfg)) for name, make in factories]
        ops = OpsServer(cfg.metrics.host, cfg.metrics.port) if cfg.metrics.port else None
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
    while not stop.wait(cfg.ingest.status_interval_s):
        for name, service in started:
            log.info("event=status service=%s %s", name, service.status_line())
    log.info("event=stopping (signal)")
    for _, service in reversed(started):
        service.stop()
    if ops is not None:
        ops.close()
    return 0
