"""Subcommand `aqpipe aggregate`: registered by the CLI like ingest/commands.py."""

from __future__ import annotations

import argparse

from aggregator.service import AggregatorService
from aqpipe.cliutil import AddCommon, load_or_exit
from aqpipe.runner import run_services


def register(sub: argparse._SubParsersAction, add_common: AddCommon) -> None:
    p = sub.add_parser(
        "aggregate", help="run the aggregator (hourly/daily AQI and stack hourly rollups)",
        description="Subscribe to aq/v1/{ambient,stack,hj212}/+ with its own persistent session, note which "
                    "station/outlet hours are dirty (journal under DATA_DIR/aggregator, then ack), and once an "
                    "hour or day is over (+ aggregator.settle_s) compute it from the readings in InfluxDB: "
                    "aqi_hourly, aqi_daily (cn-2012 / cn-2026 / us), stack_hourly, also published on "
                    "aq/v1/derived/... Late readings (within aggregator.lateness_hours) recompute what they "
                    "touch. SIGTERM/Ctrl-C: stop consuming, journal, ack, exit 0; exit 70 when a thread keeps "
                    "failing (threads.max_restarts), for systemd to restart it. See aggregator/README.md.")
    add_common(p)
    p.set_defaults(func=cmd_aggregate)


def cmd_aggregate(args: argparse.Namespace) -> int:
    return run_services(load_or_exit(args.config), [("aggregator", AggregatorService)])
