"""`aqpipe aqi`: AQI of JSON lines on stdin, one JSON line out per line in.

Lines are parsed one by one, then computed in batches through the vectorised core
(`aggregator.aqi`), grouped by standard and period; output keeps the input order.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import numpy as np

from aggregator.aqi import AqiInputError, compute_aqi, convert_units, nowcast
from aggregator.tables import (
    ALL_INPUTS,
    UnknownStandard,
    Standard,
    cn_standard_in_force,
    get_standard,
)

BATCH = 10_000

HELP = """\
Compute the AQI of JSON lines read from stdin; print one JSON line per input line.

Input line:
  {"standard": "cn"|"us", "version": "2012"|"2026", "period": "hour"|"day",
   "values": {"pm25": .., "pm10": .., "so2": .., "no2": .., "co": .., "o3": .., "o3_8h": .., "so2_24h": ..},
   "units": {"o3": "ppb"}}
  - version: China only, default "2026" (HJ 633-2026, transition phase). Optional
    "phase": "transition"|"final"; optional "time" (ISO 8601 with offset, the start of the
    period) picks the version in force (before 2026-03-01: 2012) and the phase, unless
    "version" / "phase" are given.
  - values: any subset; null = missing. Each value is the average the standard asks for:
    China, period "hour" (实时报): so2, no2, co, o3 = 1-hour values on the 1-hour tables;
      pm10, pm25 = 1-hour values on the 24-hour tables (no 1-hour PM table);
      o3_8h = 8-hour moving average on the 8-hour table;
      so2_24h = 24-hour average, used only when 1-hour SO2 > 800 (2012: SO2 then indexed
      from it; 2026: SO2 counts as IAQI 200 without it).
    China, period "day" (日报): so2, no2, co, pm10, pm25 = 24-hour averages; o3 = daily
      max 1-hour (1-hour table); o3_8h = daily max 8-hour (8-hour table).
    US (EPA 2024), both periods: pm25, pm10 = 24-hour averages (for the hour: a NowCast,
      see below); o3_8h = 8-hour average (ppm); o3 = 1-hour (ppm; indexed only from
      0.125 ppm; used instead of the 8-hour above 0.200 ppm; the larger index is reported);
      co = 8-hour average (ppm); no2 = 1-hour (ppb; day: daily max 1-hour);
      so2 = 1-hour (ppb; day: daily max 1-hour); so2_24h = 24-hour average (ppb), which
      decides when 1-hour SO2 > 304 ppb (index at least 200).
  - units: China default µg/m³ (CO mg/m³); US default PM µg/m³, O3 and CO ppm, SO2 and
    NO2 ppb. "units" may name ppb, ppm, ug/m3 or mg/m3 per value (or one string for all);
    gases convert at 25 °C and 1 atm (SO2 64.07, NO2 46.01, O3 48.00, CO 28.01 g/mol).
  NowCast (US, PM): {"standard": "us", "nowcast": {"pm25": [newest, ..., oldest]}} with up
    to 12 hourly averages, null for a missing hour; at least 2 of the 3 newest needed.

Output line:
  {"aqi": int|null, "category": 1..6|null, "category_name": str, "primary": [..],
   "exceeding": [..], "iaqi": {input: int}}  (+ "nowcast": {"pm25": µg/m³} for NowCast)
  primary: pollutants whose index equals the AQI when AQI > 50 (ties: several); O3 is
  named "o3" whichever averaging period decided it. exceeding: IAQI > 100, HJ 633-2012
  only (2026 and the US have none). A bad line prints {"error": "..."} and the tool goes on.
  Concentrations are brought to the standard's precision before indexing: China rounds
  (integer µg/m³, CO 0.1 mg/m³; half to even) and carries the IAQI up; the US truncates
  (PM2.5 0.1, PM10 1, O3 0.001, CO 0.1, SO2/NO2 1) and rounds the AQI half up.
"""

EXAMPLES = """\
examples:
  echo '{"standard":"cn","version":"2012","period":"day","values":{"pm25":75,"pm10":160,"o3_8h":100}}' | aqpipe aqi
  -> {"aqi": 105, "category": 3, "category_name": "轻度污染", "primary": ["pm10"], "exceeding": ["pm10"], ...}
  echo '{"standard":"us","period":"hour","values":{"o3_8h":0.078}}' | aqpipe aqi
  -> {"aqi": 126, "category": 3, "category_name": "Unhealthy for Sensitive Groups", "primary": ["o3"], ...}
  echo '{"standard":"us","nowcast":{"pm25":[71,0,0,0,0,0,0,0,0,0,0,0]}}' | aqpipe aqi
  -> {"aqi": 101, ..., "nowcast": {"pm25": 35.5}}
  echo '{"standard":"cn","period":"hour","values":{"o3":100},"units":{"o3":"ppb"}}' | aqpipe aqi
"""


class LineError(ValueError):
    """A line that cannot be computed; its message becomes the output's `error`."""


@dataclass
class _Job:
    standard: Standard
    period: str
    values: dict[str, float]
    nowcast: dict[str, float | None] = field(default_factory=dict)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `aqi` subcommand to the `aqpipe` CLI."""
    p = subparsers.add_parser("aqi", help="compute AQI for JSON lines on stdin", description=HELP,
                              epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> int:
    """Read stdin to the end, write one line per input line; exit 0 (bad lines are reported inline)."""
    src = stdin if stdin is not None else sys.stdin
    out = stdout if stdout is not None else sys.stdout
    chunk: list[str] = []
    for line in src:
        chunk.append(line)
        if len(chunk) >= BATCH:
            _emit(chunk, out)
            chunk = []
    if chunk:
        _emit(chunk, out)
    out.flush()
    return 0


def process_lines(lines: list[str]) -> list[dict[str, Any]]:
    """Output records for input lines, in order (the CLI without the I/O)."""
    jobs: list[_Job | dict[str, Any]] = []
    for line in lines:
        try:
            jobs.append(_parse(line))
        except (LineError, AqiInputError, UnknownStandard) as e:
            jobs.append({"error": str(e).strip('"')})
    results: list[dict[str, Any] | None] = [j if isinstance(j, dict) else None for j in jobs]
    groups: dict[tuple[int, str], list[int]] = {}
    for i, j in enumerate(jobs):
        if isinstance(j, _Job):
            groups.setdefault((id(j.standard), j.period), []).append(i)
    for idx in groups.values():
        first = jobs[idx[0]]
        assert isinstance(first, _Job)
        names = sorted({k for i in idx for k in jobs[i].values})  # type: ignore[union-attr]
        arrays = {k: np.array([jobs[i].values.get(k, np.nan) for i in idx], dtype=np.float64)  # type: ignore[union-attr]
                  for k in names}
        res = compute_aqi(first.standard, first.period, arrays, size=len(idx))
        for row, i in enumerate(idx):
            rec = res.record(row)
            job = jobs[i]
            assert isinstance(job, _Job)
            if job.nowcast:
                rec["nowcast"] = job.nowcast
            results[i] = rec
    return [r for r in results if r is not None]


def _emit(lines: list[str], out: IO[str]) -> None:
    for rec in process_lines(lines):
        out.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _parse(line: str) -> _Job:
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as e:
        raise LineError(f"not JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(doc, dict):
        raise LineError("a line must be a JSON object")
    known = {"standard", "version", "phase", "time", "period", "values", "units", "nowcast"}
    extra = set(doc) - known
    if extra:
        raise LineError(f"unknown keys {sorted(extra)}")
    standard = _standard(doc)
    values = _numbers(doc.get("values", {}), "values")
    units = doc.get("units", {})
    if isinstance(units, str):
        units = {k: units for k in values}
    if not isinstance(units, dict):
        raise LineError("units must be an object or a string")
    for name, unit in units.items():
        if name not in ALL_INPUTS:
            raise LineError(f"units: unknown pollutant {name!r}")
        if not isinstance(unit, str):
            raise LineError(f"units.{name} must be a string")

    nc_out: dict[str, float | None] = {}
    if "nowcast" in doc:
        if standard.family != "us":
            raise LineError("nowcast is a US EPA method: use standard \"us\"")
        series = doc["nowcast"]
        if not isinstance(series, dict) or not series:
            raise LineError("nowcast must be an object like {\"pm25\": [newest, ..., oldest]}")
        for name, hours in series.items():
            if name not in ("pm25", "pm10"):
                raise LineError(f"nowcast: only pm25 and pm10, not {name!r}")
            if not isinstance(hours, list) or not 1 <= len(hours) <= 12:
                raise LineError(f"nowcast.{name} must be a list of 1 to 12 hourly values, newest first")
            hourly = [_number(v, f"nowcast.{name}[{k}]") for k, v in enumerate(hours)]
            if name in units:
                hourly = list(convert_units(hourly, name, units[name], standard.units[name]))
            conc = float(nowcast([hourly])[0])
            table = standard.tables[standard.inputs["hour"][name]]
            values[name] = conc
            nc_out[name] = None if math.isnan(conc) else _truncated(conc, table.scale)
        period = doc.get("period", "hour")
    else:
        period = doc.get("period")
        if period is None:
            raise LineError("period is required: \"hour\" or \"day\"")
    if period not in ("hour", "day"):
        raise LineError(f"period must be \"hour\" or \"day\", not {period!r}")

    for name, unit in units.items():
        if name in values and not (name in nc_out):
            values[name] = float(convert_units(values[name], name, unit, standard.units[name]))
    return _Job(standard, period, values, nc_out)


def _standard(doc: dict[str, Any]) -> Standard:
    family = doc.get("standard")
    if family == "us":
        if "version" in doc and str(doc["version"]) not in ("2024",):
            raise LineError("version applies to China only (US uses EPA 2024)")
        return get_standard("us")
    if family != "cn":
        raise LineError(f"standard must be \"cn\" or \"us\", not {family!r}")
    version = doc.get("version")
    phase = doc.get("phase")
    if "time" in doc:
        try:
            when = datetime.fromisoformat(str(doc["time"]))
            in_force = cn_standard_in_force(when)
        except ValueError as e:
            raise LineError(f"time: {e}") from None
        version = version if version is not None else in_force.version
        phase = phase if phase is not None else (in_force.phase or None)
    version = str(version) if version is not None else "2026"
    if version == "2012":
        if phase:
            raise LineError("phase applies to version 2026 only")
        return get_standard("cn-2012")
    if version != "2026":
        raise LineError(f"version must be \"2012\" or \"2026\", not {version!r}")
    phase = phase or "transition"
    if phase not in ("transition", "final"):
        raise LineError(f"phase must be \"transition\" or \"final\", not {phase!r}")
    return get_standard(f"cn-2026-{phase}")


def _numbers(obj: Any, where: str) -> dict[str, float]:
    if not isinstance(obj, dict):
        raise LineError(f"{where} must be an object")
    out: dict[str, float] = {}
    for name, v in obj.items():
        if name not in ALL_INPUTS:
            raise LineError(f"{where}: unknown pollutant {name!r} (known: {', '.join(ALL_INPUTS)})")
        x = _number(v, f"{where}.{name}")
        if not math.isnan(x):
            out[name] = x
    return out


def _number(v: Any, where: str) -> float:
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise LineError(f"{where} must be a number or null, not {v!r}")
    x = float(v)
    if not math.isfinite(x):
        raise LineError(f"{where} must be finite")
    if x < 0:
        raise LineError(f"{where} is negative ({v})")
    return x


def _truncated(conc: float, scale: int) -> float:
    # Same snapping as the AQI core, so the printed NowCast is the concentration indexed.
    return math.trunc(round(conc * scale, 6)) / scale


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m aggregator.aqi_cli`) until the lead wires `aqpipe aqi`."""
    parser = argparse.ArgumentParser(prog="aqpipe")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
