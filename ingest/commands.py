"""Subcommands of the ingest service: ingest, deadletter list|replay."""

from __future__ import annotations

import argparse
import sys
import textwrap
import time

from aqpipe.cliutil import AddCommon, load_or_exit
from aqpipe.config import Config
from aqpipe.decode import MessageDecoder
from aqpipe.errors import RejectedReading
from aqpipe.influx import WriteError, make_writer
from aqpipe.registry import Registry
from aqpipe.runner import run_services
from ingest.deadletter import LINE_PROTOCOL, DeadLetter, DeadLetterStore, summary
from ingest.service import IngestService


def register(sub: argparse._SubParsersAction, add_common: AddCommon) -> None:
    p = sub.add_parser("ingest", help="run the ingest service (MQTT -> InfluxDB)",
                       description="Subscribe to aq/v1/{ambient,stack,hj212}/+, validate, write to InfluxDB; "
                                   "acknowledge each message only once its readings are durable (in InfluxDB, "
                                   "the disk spool, or the dead-letter store). SIGTERM/Ctrl-C: stop consuming, "
                                   "flush, ack, exit 0. Exit 70 when a thread keeps failing (threads.max_restarts): "
                                   "systemd restarts it, the broker keeps what was not acknowledged.",
                       epilog="Logs a status line every ingest.status_interval_s; metrics, /healthz and /readyz on "
                              "metrics.port (default 9108). Check the configuration first with: "
                              "aqpipe check-config --ping")
    add_common(p)
    p.set_defaults(func=cmd_ingest)

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
                  "Points InfluxDB refused while the spool drained (format line_protocol) are written as they are. "
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
    return load_or_exit(args.config)


def cmd_ingest(args: argparse.Namespace) -> int:
    return run_services(_config(args), [("ingest", IngestService)])


def _selected(args: argparse.Namespace, cfg: Config) -> list[DeadLetter]:
    letters = DeadLetterStore(cfg.deadletter_dir).pending()
    if args.reason:
        letters = [d for d in letters if d.reason in args.reason]
    if args.ids:
        letters = [d for d in letters if d.id in args.ids]
    return letters


def cmd_deadletter_list(args: argparse.Namespace) -> int:
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


def _points(letter: DeadLetter, decoder: MessageDecoder, now_ns: int) -> list[str]:
    """The line protocol a letter stands for: its message decoded again with the current
    configuration, or, for points refused while the spool drained, the points themselves."""
    if letter.format == LINE_PROTOCOL:
        return [line for line in letter.payload.decode("utf-8").split("\n") if line]
    return decoder.decode(letter.topic, letter.payload, now_ns).lines


def cmd_deadletter_replay(args: argparse.Namespace) -> int:
    cfg = _config(args)
    letters = _selected(args, cfg)
    decoder = MessageDecoder.from_config(cfg, Registry.load(cfg.registry_path))
    store = DeadLetterStore(cfg.deadletter_dir)
    writer = None if args.dry_run else make_writer(cfg.influx)
    replayed, still = 0, 0
    now = time.time_ns()
    for i, letter in enumerate(letters, 1):
        try:
            lines = _points(letter, decoder, now)
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
