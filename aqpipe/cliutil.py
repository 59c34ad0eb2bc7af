"""What every subcommand shares: common options, loading the configuration, signals."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable

from aqpipe.config import Config, load_config
from aqpipe.errors import ConfigError

AddCommon = Callable[[argparse.ArgumentParser], None]


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="aqpipe.toml to read (default: $AQPIPE_CONFIG or ./aqpipe.toml)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-format", default="kv", choices=["kv", "json"], help="key=value lines or JSON lines")


def load_or_exit(path: str | None) -> Config:
    """The configuration, or exit 2 with the offending key on stderr."""
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"aqpipe: configuration error\n{e.detail if e.detail.startswith(e.key) else e}", file=sys.stderr)
        print("(run `aqpipe check-config` for the full report)", file=sys.stderr)
        raise SystemExit(2) from None


def wait_for_signal() -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C): the services' cue to shut down cleanly."""
    stop = threading.Event()

    def _handler(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return stop
