"""Subcommand `aqpipe aggregate`: registered by the CLI like ingest/commands.py."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from ingest.errors import ConfigError

log = logging.getLogger("aqpipe")

AddCommon = Callable[[argparse.ArgumentParser], None]


def register(sub: argparse._SubParsersAction, add_common: AddCommon) -> None:
    p = sub.add_parser(
        "aggregate", help="run the aggregator (hourly/daily AQI and stack hourly rollups)",
        description="Subscribe to aq/v1/{ambient,stack,hj212}/+ with its own persistent session, note which "
                    "station/outlet hours are dirty (journal under DATA_DIR/aggregator, then ack), and once an "
                    "hour or day is over (+ aggregator.settle_s) compute it from the readings in InfluxDB: "
                    "aqi_hourly, aqi_daily (cn-2012 / cn-2026 / us), stack_hourly, also published on "
                    "aq/v1/derived/... Late readings (within aggregator.lateness_hours) recompute what they "
                    "touch. SIGTERM/Ctrl-C: stop consuming, journal, ack, exit 0. See aggregator/README.md.")
    add_common(p)
    p.set_defaults(func=cmd_aggregate)


def cmd_aggregate(args: argparse.Namespace) -> int:
    from aggregator import metrics
    from aggregator.service import AggregatorService
    from ingest.cli import load_or_exit, wait_for_signal

    cfg = load_or_exit(args.config)
    stop = wait_for_signal()
    try:
        service = AggregatorService(cfg)
    except ConfigError as e:
        print(f"aqpipe: configuration error: {e}", file=sys.stderr)
        return 2
    metrics.serve(cfg.metrics.host, cfg.metrics.port)
    a = cfg.aggregator
    log.info("event=starting service=aggregator mqtt=mqtt://%s:%d client_id=%s influx=%s settle_s=%s "
             "lateness_hours=%s state=%s", cfg.mqtt.host, cfg.mqtt.port, a.client_id, cfg.influx.url, a.settle_s,
             a.lateness_hours, (cfg.data_dir / "aggregator").resolve())
    service.start()
    while not stop.wait(a.status_interval_s):
        log.info("event=status service=aggregator %s", service.status_line())
    log.info("event=stopping service=aggregator (signal)")
    service.stop()
    return 0
