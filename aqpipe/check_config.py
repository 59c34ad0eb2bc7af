"""`aqpipe check-config`: validate the configuration and registries, say what is wrong by key."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Callable, Sequence

from aqpipe.cliutil import AddCommon
from aqpipe.config import Config, load_config
from aqpipe.errors import ConfigError
from aqpipe.influx import InfluxQL
from aqpipe.registry import Registry

# A service's own data-file check (e.g. the alert rules), passed in by aqpipe/cli.py so the
# core never imports a service: returns a line saying what it validated, or raises ConfigError.
ExtraCheck = Callable[[Config], str]
_EXTRA_CHECKS: list[ExtraCheck] = []


def register(sub: argparse._SubParsersAction, add_common: AddCommon, checks: Sequence[ExtraCheck] = ()) -> None:
    _EXTRA_CHECKS[:] = list(checks)
    p = sub.add_parser("check-config", help="validate the configuration and say what is wrong, by key",
                       description="Load aqpipe.toml plus AQPIPE_* environment overrides, validate, print the "
                                   "effective settings (secrets masked). Exit 0 when valid, 2 otherwise.")
    add_common(p)
    p.add_argument("--ping", action="store_true", help="also try to reach the MQTT broker and InfluxDB")
    p.set_defaults(func=cmd_check_config)


def _masked(cfg: Config) -> dict:
    doc = json.loads(cfg.model_dump_json())
    for section, key in (("mqtt", "password"), ("influx", "token")):
        if doc[section].get(key):
            doc[section][key] = "***"
    return doc


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
        registry = Registry.load(cfg.registry_path)
        cfg.mqtt.secret()
        cfg.influx.secret()
        extra = [check(cfg) for check in _EXTRA_CHECKS]
    except ConfigError as e:
        print("configuration is NOT valid:", file=sys.stderr)
        print(e.detail if e.detail.startswith(e.key) else f"{e.key}: {e.detail}", file=sys.stderr)
        return 2
    print(f"configuration is valid (file: {cfg.source or 'none, defaults + environment'})")
    print(f"registry: {len(registry.stations)} stations, {len(registry.outlets)} outlets from {cfg.registry_path.resolve()}")
    print(f"HJ 212 secrets: {len(registry.hj212_keys)} SM4 keys (values not shown)")
    for problem in registry.hj212_problems():
        print(f"warning: {problem}")
    for line in extra:
        print(line)
    print(json.dumps(_masked(cfg), indent=2, ensure_ascii=False))
    if not args.ping:
        return 0
    ok = True
    try:
        socket.create_connection((cfg.mqtt.host, cfg.mqtt.port), timeout=3).close()
        print(f"mqtt {cfg.mqtt.host}:{cfg.mqtt.port}: reachable")
    except OSError as e:
        print(f"mqtt {cfg.mqtt.host}:{cfg.mqtt.port}: NOT reachable ({e})")
        ok = False
    if InfluxQL.from_config(cfg.influx).ping():
        print(f"influx {cfg.influx.url}: reachable")
    else:
        print(f"influx {cfg.influx.url}: NOT reachable")
        ok = False
    return 0 if ok else 1


