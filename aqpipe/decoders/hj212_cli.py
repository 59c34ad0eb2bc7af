"""`aqpipe hj212 decode [FILE]`: decode HJ 212 frames, one JSON line per input line.

For operators looking at a captured frame ("why was this dead-lettered?") and
for scripts. Wired into the `aqpipe` CLI by `aqpipe.cli` through `register`.
The access password (PW) is never printed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import IO, Any

from aqpipe.decoders.hj212 import POLLUTANT_FIELDS, Frame, Hj212Error, parse_frame

_DESCRIPTION = """\
Decode HJ 212-2017 frames, one frame per line, from FILE (or standard input when
FILE is omitted or '-'). Prints exactly one JSON line for every non-empty input
line, in order; blank lines are skipped. The access password (PW) is never printed.

Decoded:  {"ok": true, "qn", "st", "cn", "mn", "flag", "data_time", "values", "fields"}
          data_time is ISO 8601 in Beijing time (+08:00) or null; values are as on the
          wire ({code: {suffix: number or text}}); fields names the aqpipe field of
          each known pollutant code.
Failed:   {"ok": false, "error": "framing" | "length" | "crc" | "syntax", "detail": "..."}

Exit status: 0 when every frame decoded, 1 when any line failed.
"""

_EPILOG = """\
example:
  echo '##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80' \\
    | aqpipe hj212 decode
  {"ok": true, "qn": "20160801085857223", "st": "32", "cn": "1062", "mn": "010000A8900016F000169DC0", "flag": 5, ...}
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `hj212 decode` to the `aqpipe` command line."""
    hj212 = subparsers.add_parser("hj212", help="HJ 212 frame tools", description="HJ 212-2017 frame tools.")
    commands = hj212.add_subparsers(dest="hj212_command", metavar="COMMAND", required=True)
    decode = commands.add_parser(
        "decode",
        help="decode frames to JSON lines",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    decode.add_argument("file", nargs="?", default="-", metavar="FILE", help="frames, one per line ('-': stdin)")
    decode.set_defaults(func=run_decode)


def run_decode(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """Handler of `hj212 decode`: returns the exit status."""
    out = out if out is not None else sys.stdout
    if args.file == "-":
        return decode_lines(sys.stdin.buffer, out)
    with open(args.file, "rb") as f:
        return decode_lines(f, out)


def decode_lines(lines: IO[bytes], out: IO[str]) -> int:
    """One JSON line on `out` per non-empty line of `lines`; 1 if any failed."""
    status = 0
    for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            record = frame_record(parse_frame(line))
        except Hj212Error as e:
            record = {"ok": False, "error": e.kind, "detail": e.detail}
            status = 1
        out.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
    return status


def frame_record(frame: Frame) -> dict[str, Any]:
    """The JSON object printed for a decoded frame (no PW)."""
    return {
        "ok": True,
        "qn": frame.qn,
        "st": frame.st,
        "cn": frame.cn,
        "mn": frame.mn,
        "flag": frame.flag,
        "data_time": frame.data_time.isoformat() if frame.data_time is not None else None,
        "values": {code: {sfx: _json_value(v) for sfx, v in group.items()} for code, group in frame.values.items()},
        "fields": {code: POLLUTANT_FIELDS[code] for code in frame.values if code in POLLUTANT_FIELDS},
    }


def _json_value(value: float | str) -> float | str:
    # JSON has no NaN or infinity; print them as the JavaScript-style words.
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry, same arguments as `aqpipe`: `python -m aqpipe.decoders.hj212_cli hj212 decode FILE`."""
    parser = argparse.ArgumentParser(prog="aqpipe")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
