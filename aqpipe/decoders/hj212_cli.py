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
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from aqpipe.decoders.hj212 import POLLUTANT_FIELDS, SYSTEM_CODES, Frame, Hj212Error, parse_frame
from aqpipe.errors import ConfigError
from aqpipe.hj212_secrets import load_secrets, parse_key

_DESCRIPTION = """\
Decode HJ 212-2017 and HJ 212-2025 frames, one frame per line, from FILE (or standard
input when FILE is omitted or '-'). Prints exactly one JSON line for every non-empty
input line, in order; blank lines are skipped. The access password (PW) and SM4 keys
are never printed.

Decoded:  {"ok": true, "version", "qn", "st", "st_name", "cn", "mn", "flag", "rf",
           "encrypted", "data_time", "values", "fields"}
          version is "2005" | "2017" | "2025" from Flag (null without Flag); rf is
          true for back-filled (RF=1) packets; encrypted is true when the CP came
          SM4-encrypted and was decrypted with --key-file; data_time is ISO 8601 in
          Beijing time (+08:00) or null; values are as on the wire ({code: {suffix:
          number or text}}); fields names the aqpipe field of each known pollutant code.
Failed:   {"ok": false, "error": "framing" | "length" | "crc" | "syntax" | "decrypt",
           "detail": "..."}
          an encrypted frame without --key-file (or without a key for its MN, or
          with the wrong key) fails with "decrypt".

Exit status: 0 when every frame decoded, 1 when any line failed, 2 when the key file
cannot be read.
"""

_EPILOG = """\
example:
  echo '##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80' \\
    | aqpipe hj212 decode
  {"ok": true, "version": "2017", "qn": "20160801085857223", "st": "32", ..., "cn": "1062", ...}

  an HJ 212-2025 logger's captured log, SM4-encrypted:
  aqpipe hj212 decode --key-file /etc/aqpipe/hj212-secrets.toml capture.txt

key file: the registry's secrets file ([mn."<MN>"] tables with key = "<32 hex digits>"),
or a file holding one key (32 hex digits) used for every MN. Keep it at mode 0600.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `hj212 decode` to the `aqpipe` command line."""
    hj212 = subparsers.add_parser("hj212", help="HJ 212 frame tools", description="HJ 212-2017 / HJ 212-2025 frame tools.")
    commands = hj212.add_subparsers(dest="hj212_command", metavar="COMMAND", required=True)
    decode = commands.add_parser(
        "decode",
        help="decode frames to JSON lines",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    decode.add_argument("file", nargs="?", default="-", metavar="FILE", help="frames, one per line ('-': stdin)")
    decode.add_argument("--key-file", metavar="PATH", type=Path,
                        help="SM4 keys to decrypt HJ 212-2025 frames: the registry's secrets file "
                             "([mn.\"<MN>\"] key = ...) or one 32-hex-digit key for every MN")
    decode.set_defaults(func=run_decode)


def run_decode(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """Handler of `hj212 decode`: returns the exit status."""
    out = out if out is not None else sys.stdout
    keys: Mapping[str, bytes] | None = None
    if getattr(args, "key_file", None) is not None:
        try:
            keys = load_key_file(args.key_file)
        except (OSError, ConfigError) as e:
            print(f"aqpipe: --key-file: {e}", file=sys.stderr)
            return 2
    if args.file == "-":
        return decode_lines(sys.stdin.buffer, out, keys)
    with open(args.file, "rb") as f:
        return decode_lines(f, out, keys)


class _EveryMn(Mapping[str, bytes]):
    """One key for whatever MN asks (a single-key file)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __getitem__(self, mn: str) -> bytes:
        return self._key

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "<one SM4 key for every MN>"


def load_key_file(path: Path) -> Mapping[str, bytes]:
    """Keys by MN from a secrets file, or one key (32 hex digits) for every MN."""
    text = path.read_text(encoding="utf-8")
    bare = "".join(line for line in text.splitlines() if not line.lstrip().startswith("#")).strip()
    if bare and all(c in "0123456789abcdefABCDEF" for c in bare):
        return _EveryMn(parse_key(bare, str(path)))
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise ConfigError(str(path), "neither one key (32 hex digits) nor a TOML secrets file") from None
    return load_secrets([path]).keys


def decode_lines(lines: IO[bytes], out: IO[str], keys: Mapping[str, bytes] | None = None) -> int:
    """One JSON line on `out` per non-empty line of `lines`; 1 if any failed."""
    status = 0
    for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            record = frame_record(parse_frame(line, keys))
        except Hj212Error as e:
            record = {"ok": False, "error": e.kind, "detail": e.detail}
            status = 1
        out.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
    return status


def frame_record(frame: Frame) -> dict[str, Any]:
    """The JSON object printed for a decoded frame (no PW)."""
    return {
        "ok": True,
        "version": frame.version,
        "qn": frame.qn,
        "st": frame.st,
        "st_name": SYSTEM_CODES.get(frame.st, ("unknown", True))[0],
        "cn": frame.cn,
        "mn": frame.mn,
        "flag": frame.flag,
        "rf": frame.rf,
        "encrypted": frame.encrypted,
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
