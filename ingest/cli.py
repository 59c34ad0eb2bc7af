"""`aqpipe`: the command line of every aqpipe service and tool."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from ingest import logs
from ingest.config import Config, load_config
from ingest.errors import ConfigError

DESCRIPTION = """\
aqpipe - air-quality sensor ingestion pipeline (MQTT -> InfluxDB, AQI, alerts).

Configuration: --config FILE, else $AQPIPE_CONFIG, else ./aqpipe.toml, else defaults
matching the services `make run` starts (Mosquitto 127.0.0.1:1883, InfluxDB
http://127.0.0.1:8086, database aq). Any key can be overridden by environment:
AQPIPE_MQTT__PORT=1884, AQPIPE_INFLUX__URL=..., AQPIPE_DATA_DIR=...
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="aqpipe.toml to read (default: $AQPIPE_CONFIG or ./aqpipe.toml)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-format", default="kv", choices=["kv", "json"], help="key=value lines or JSON lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aqpipe", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from ingest import commands, hj212_gateway, simulator
    from ingest.decoders import hj212_cli
    from aggregator import aqi_cli

    commands.register(sub, _add_common)
    from aggregator import commands as agg_commands; agg_commands.register(sub, _add_common)
    hj212_gateway.register(sub, _add_common)
    simulator.register(sub, _add_common)
    hj212_cli.register(sub)
    aqi_cli.register(sub)
    return parser


def load_or_exit(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"aqpipe: configuration error\n{e.detail if e.detail.startswith(e.key) else e}", file=sys.stderr)
        print("(run `aqpipe check-config` for the full report)", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "log_level"):
        logs.setup(args.log_level, args.log_format)
    return int(args.func(args) or 0)


def wait_for_signal() -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C): the services' cue to shut down cleanly."""
    stop = threading.Event()

    def _handler(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop


if __name__ == "__main__":
    sys.exit(main())
