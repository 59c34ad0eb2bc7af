"""Subcommands: ingest, run, check-config, deadletter list|replay."""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

from ingest.config import Config
from ingest.errors import ConfigError, RejectedReading

log = logging.getLogger("aqpipe")

AddCommon = Callable[[argparse.ArgumentParser], None]


def register(sub: argparse._SubParsersAction, add_common: AddCommon) -> None:
    p = sub.add_parser("ingest", help="run the ingest service (MQTT -> InfluxDB)",
                       description="Subscribe to aq/v1/{ambient,stack,hj212}/+, validate, write to InfluxDB; "
                                   "acknowledge each message only once its readings are durable (in InfluxDB, "
                                   "the disk spool, or the dead-letter store). SIGTERM/Ctrl-C: stop consuming, "
                                   "flush, ack, exit 0.",
                       epilog="Logs a status line every ingest.status_interval_s; metrics, /healthz and /readyz on "
                              "metrics.port (default 9108). Check the configuration first with: "
                              "aqpipe check-config --ping")
    add_common(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("run", help="run every service in one process (ingest + aggregator)",
                       description="Run the services together in one process: ingest and aggregator. "
                                   "Each can also run on its own (aqpipe ingest, aqpipe aggregate); they share "
                                   "nothing but MQTT topics and InfluxDB.")
    add_common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate the configuration and say what is wrong, by key",
                       description="Load aqpipe.toml plus AQPIPE_* environment overrides, validate, print the "
                                   "effective settings (secrets masked). Exit 0 when valid, 2 otherwise.")
    add_common(p)
    p.add_argument("--ping", action="store_true", help="also try to reach the MQTT broker and InfluxDB")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("deadletter", help="list or replay rejected messages",
                       description="Rejected messages are kept in DATA_DIR/deadletter/*.jsonl with topic, raw "
                                   "payload, reason and detail. After fixing the cause (registry, config, "
                                   "device firmware), replay them: each is decoded again with the current "
                                   "configuration and written to InfluxDB; what still fails stays listed.")
    dsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    descriptions = {
        "list": "Show pending dead letters (not yet replayed), oldest first: id, arrival time, reason, topic, "
                "detail; a count by reason on stderr. --json prints each letter with its raw payload.",
        "replay": "Decode each pending letter again with the current configuration and registry and write its "
                  "readings to InfluxDB (directly: no broker account needed). Replayed letters are recorded in "
                  "replayed.jsonl and no longer listed; those still failing stay, with the new reason. "
                  "Exit status 1 while any still fails. Stops early (nothing lost) if InfluxDB refuses writes.",
    }
    examples = ("examples:\n  aqpipe deadletter list --reason unknown_mn\n"
                "  aqpipe deadletter replay --reason unknown_mn --dry-run\n"
                "  aqpipe deadletter replay --id 3f2a9c01d4e5b6a7")
    for name, helptext in (("list", "show pending dead letters"), ("replay", "decode again and write to InfluxDB")):
        q = dsub.add_parser(name, help=helptext, description=textwrap.fill(descriptions[name], 80), epilog=examples,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        add_common(q)
        q.add_argument("--reason", action="append", help="only letters with this reason (repeatable)")
        q.add_argument("--id", action="append", dest="ids", help="only the letter with this id (repeatable)")
        if name == "list":
            q.add_argument("--json", action="store_true", help="one JSON object per line (with payload)")
            q.set_defaults(func=cmd_deadletter_list)
        else:
            q.add_argument("--dry-run", action="store_true", help="decode only; say what would be written")
            q.set_defaults(func=cmd_deadletter_replay)


def _config(args: argparse.Namespace) -> Config:
    from ingest.cli import load_or_exit

    return load_or_exit(args.config)


def where_to_look(cfg: Config) -> str:
    metrics_url = (f"http://{cfg.metrics.host}:{cfg.metrics.port}/metrics (/healthz, /readyz)"
                   if cfg.metrics.port else "(metrics off)")
    target = (f"database={cfg.influx.database}" if cfg.influx.api == "v1"
              else f"org={cfg.influx.org} bucket={cfg.influx.bucket}")
    return (f"mqtt=mqtt://{cfg.mqtt.host}:{cfg.mqtt.port} influx={cfg.influx.url} api={cfg.influx.api} {target} "
            f"metrics={metrics_url} deadletters={cfg.deadletter_dir.resolve()}")


def cmd_ingest(args: argparse.Namespace) -> int:
    from ingest.service import IngestService

    return run_services(args, [("ingest", IngestService)])


def cmd_run(args: argparse.Namespace) -> int:
    from aggregator.service import AggregatorService
    from ingest.service import IngestService

    return run_services(args, [("ingest", IngestService), ("aggregator", AggregatorService)])


def run_services(args: argparse.Namespace, factories: list[tuple[str, Callable[[Config], Any]]]) -> int:
    """Start services in one process with one /metrics /healthz /readyz endpoint, log a
    status line per service every ingest.status_interval_s, stop them in reverse
    order on SIGTERM/SIGINT. Each service has start(), stop(), ready(), status_line()."""
    from ingest.cli import wait_for_signal
    from ingest.http import OpsServer

    cfg = _config(args)
    stop = wait_for_signal()
    started: list[tuple[str, Any]] = []
    try:
        services = [(name, make(cfg)) for name, make in factories]
        ops = OpsServer(cfg.metrics.host, cfg.metrics.port) if cfg.metrics.port else None
        log.info("event=starting services=%s %s", ",".join(n for n, _ in services), where_to_look(cfg))
        for name, service in services:
            service.start()
            started.append((name, service))
            if ops is not None:
                ops.add_check(service.ready)
    except (ConfigError, OSError) as e:
        print(f"aqpipe: {e}", file=sys.stderr)
        for _, service in reversed(started):
            service.stop()
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


def _masked(cfg: Config) -> dict:
    doc = json.loads(cfg.model_dump_json())
    for section, key in (("mqtt", "password"), ("influx", "token")):
        if doc[section].get(key):
            doc[section][key] = "***"
    return doc


def cmd_check_config(args: argparse.Namespace) -> int:
    from ingest.config import load_config
    from ingest.registry import Registry

    try:
        cfg = load_config(args.config)
        registry = Registry.load(cfg.registry_path)
        cfg.mqtt.secret()
        cfg.influx.secret()
    except ConfigError as e:
        print("configuration is NOT valid:", file=sys.stderr)
        print(e.detail if e.detail.startswith(e.key) else f"{e.key}: {e.detail}", file=sys.stderr)
        return 2
    print(f"configuration is valid (file: {cfg.source or 'none, defaults + environment'})")
    print(f"registry: {len(registry.stations)} stations, {len(registry.outlets)} outlets from {cfg.registry_path.resolve()}")
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
    from ingest.influx import InfluxQL

    if InfluxQL.from_config(cfg.influx).ping():
        print(f"influx {cfg.influx.url}: reachable")
    else:
        print(f"influx {cfg.influx.url}: NOT reachable")
        ok = False
    return 0 if ok else 1


def _selected(args: argparse.Namespace, cfg: Config):
    from ingest.deadletter import DeadLetterStore

    letters = DeadLetterStore(cfg.deadletter_dir).pending()
    if args.reason:
        letters = [d for d in letters if d.reason in args.reason]
    if args.ids:
        letters = [d for d in letters if d.id in args.ids]
    return letters


def cmd_deadletter_list(args: argparse.Namespace) -> int:
    from ingest.deadletter import summary

    cfg = _config(args)
    letters = _selected(args, cfg)
    if args.json:
        for d in letters:
            print(d.to_json())
        return 0
    for d in letters:
        print(f"{d.id}  {d.received}  {d.reason:<18} {d.topic}  {d.detail[:100]}")
    counts = ", ".join(f"{r}={n}" for r, n in sorted(summary(letters).items())) or "none"
    print(f"{len(letters)} pending dead letters in {cfg.deadletter_dir.resolve()} ({counts})", file=sys.stderr)
    return 0


def cmd_deadletter_replay(args: argparse.Namespace) -> int:
    from ingest.deadletter import DeadLetterStore
    from ingest.decode import MessageDecoder
    from ingest.influx import WriteError, make_writer
    from ingest.reading import to_line
    from ingest.registry import Registry

    cfg = _config(args)
    letters = _selected(args, cfg)
    decoder = MessageDecoder.from_config(cfg, Registry.load(cfg.registry_path))
    store = DeadLetterStore(cfg.deadletter_dir)
    writer = None if args.dry_run else make_writer(cfg.influx)
    replayed, still = 0, 0
    now = time.time_ns()
    for i, letter in enumerate(letters, 1):
        try:
            lines = [to_line(r) for r in decoder.decode(letter.topic, letter.payload, now)]
            if writer is not None:
                writer.write(lines)
                store.mark_replayed([letter.id])
            replayed += 1
            print(f"{letter.id} ok: {len(lines)} readings{' (dry run)' if writer is None else ''}")
        except RejectedReading as e:
            still += 1
            print(f"{letter.id} still rejected: {e.reason.value}: {e.detail}")
        except WriteError as e:
            still += 1
            print(f"{letter.id} not written: {e}")
            if e.retryable:
                print("InfluxDB is not accepting writes; stopping the replay here (nothing was lost).", file=sys.stderr)
                break
        if i % 1000 == 0:
            print(f"... {i}/{len(letters)}", file=sys.stderr)
    print(f"replayed {replayed}, still failing {still}, of {len(letters)}", file=sys.stderr)
    return 0 if still == 0 else 1
