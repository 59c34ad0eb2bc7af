"""`aqpipe`: the command line of every aqpipe service and tool.

The only module that knows every service: it registers each package's subcommands
and builds `aqpipe run` from their service classes.
"""

from __future__ import annotations

import argparse
import sys

from aggregator import aqi_cli
from aggregator import commands as aggregator_commands
from aggregator.service import AggregatorService
from alerts import commands as alerts_commands
from alerts import rules as alert_rules
from alerts.cases import commands as cases_commands
from alerts.service import AlertsService
from alerts.web import commands as web_commands
from aqpipe import check_config, logs, simulator
from aqpipe.cliutil import add_common, load_or_exit
from aqpipe.decoders import hj212_cli
from aqpipe.runner import run_services
from ingest import commands as ingest_commands
from ingest import hj212_gateway
from ingest.service import IngestService

DESCRIPTION = """\
aqpipe - air-quality sensor ingestion pipeline (MQTT -> InfluxDB, AQI, alerts).

Configuration: --config FILE, else $AQPIPE_CONFIG, else ./aqpipe.toml, else defaults
matching the services `make run` starts (Mosquitto 127.0.0.1:1883, InfluxDB
http://127.0.0.1:8086, database aq). Any key can be overridden by environment:
AQPIPE_MQTT__PORT=1884, AQPIPE_INFLUX__URL=..., AQPIPE_DATA_DIR=...
"""

# The services `aqpipe run` starts together, in start order.
RUN_SERVICES = [("ingest", IngestService), ("aggregator", AggregatorService), ("alerts", AlertsService),
                ("web", web_commands.web_service)]


def _register_run(sub: argparse._SubParsersAction) -> None:
    names = " + ".join(name for name, _ in RUN_SERVICES)
    p = sub.add_parser("run", help=f"run every service in one process ({names})",
                       description=f"Run the services together in one process: {names}. "
                                   "Each can also run on its own (aqpipe ingest, aqpipe aggregate, aqpipe alerts); they "
                                   "share nothing but MQTT topics, InfluxDB and (alerts) the case database. Exit 0 after "
                                   "SIGTERM, 70 when a thread of any keeps failing (threads.max_restarts; systemd restarts it).")
    add_common(p)
    p.set_defaults(func=lambda args: run_services(load_or_exit(args.config), RUN_SERVICES))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aqpipe", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    ingest_commands.register(sub, add_common)
    _register_run(sub)
    check_config.register(sub, add_common, checks=[alert_rules.check_rules])
    aggregator_commands.register(sub, add_common)
    alerts_commands.register(sub, add_common)
    hj212_gateway.register(sub, add_common)
    simulator.register(sub, add_common)
    hj212_cli.register(sub)
    aqi_cli.register(sub)
    cases_commands.register(sub, add_common)
    web_commands.register(sub, add_common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "log_level"):
        logs.setup(args.log_level, args.log_format)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
