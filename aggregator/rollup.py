"""From raw readings to rollup points: hourly and daily AQI per station, stack hours.

One numpy pass per batch: readings become (identities × hours) arrays once, every
window (8 h, 24 h, NowCast, daily max) is an array operation over all stations, and
`aggregator.aqi.compute_aqi` indexes every station-hour of a standard in one call.

Arrays span whole China days, `day0` first: callers put one day of context in front so
the 8-hour, 24-hour and NowCast windows of the first requested hours are complete.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone

import numpy as np
from numpy.typing import NDArray

from aggregator import windows
from aggregator.aqi import compute_aqi, convert_units, nowcast
from aggregator.keys import DAY, HOUR
from aggregator.source import AMBIENT_FIELDS, NS, STACK_POLLUTANTS, Series
from aggregator.stack import Limit, hourly_record, limit_for, stack_hourly
from aggregator.tables import CHINA_TZ, CN_2012, US_2024, Standard, cn_standard_in_force
from aqpipe.registry import Registry

FloatArray = NDArray[np.float64]
# A reading's interval is not stored; it is inferred from the spacing of a station's
# readings (see `interval_weights`). With a single reading to go by, assume this.
DEFAULT_INTERVAL_S = 60.0

# US EPA units for gases (aqi.md): O3 and CO ppm, SO2 and NO2 ppb; canonical storage units
# are µg/m³ (CO mg/m³).
_CANONICAL_UNIT = {"so2": "ug/m3", "no2": "ug/m3", "o3": "ug/m3", "co": "mg/m3", "pm25": "ug/m3", "pm10": "ug/m3"}


@dataclass(frozen=True)
class AqiOptions:
    cn_standards: str = "in_force"  # "in_force" | "both"
    cn_2026_effective: date = date(2026, 3, 1)
    us: bool = True


@dataclass
class Point:
    """One rollup: an InfluxDB point and the record published on aq/v1/derived/..."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | int | bool | str]
    time_s: int
    topic: str  # derived topic suffix: "aqi/{station}" | "stack/{outlet}"
    record: dict

    def set_complete(self, complete: bool) -> None:
        """Whether every reading seen on MQTT for the hours it uses was in InfluxDB."""
        self.fields["complete"] = complete
        self.record["complete"] = complete

    def line(self) -> str:
        tags = ",".join(f"{k}={_escape_tag(v)}" for k, v in sorted(self.tags.items()))
        fields = ",".join(f"{k}={_field(v)}" for k, v in self.fields.items())
        return f"{self.measurement},{tags} {fields} {self.time_s * NS}"

    def payload(self) -> bytes:
        return json.dumps(self.record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _field(v: float | int | bool | str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, float):
        return repr(v)
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _iso(t_s: int) -> str:
    return datetime.fromtimestamp(t_s, CHINA_TZ).isoformat()


# ---------------------------------------------------------------------------------------
# Ambient

def interval_weights(series: Series, name: str) -> FloatArray:
    """Seconds each reading of `name` stands for, inferred per station (NaN where absent).

    The payload's `interval_s` is not stored, so it is inferred: a station's nominal
    interval is the median spacing of its readings of that pollutant (1-minute, 5-minute,
    hourly…); a reading weighs its spacing from the previous one, capped at that nominal
    interval, so a gap in the data never counts as sampled minutes.
    """
    v = series.values[name]
    w = np.full(len(v), np.nan)
    have = np.isfinite(v)
    for i in range(len(series.identities)):
        rows = np.flatnonzero(have & (series.index == i))
        if not rows.size:
            continue
        t = series.time_ns[rows] / NS
        gaps = np.diff(t)
        gaps = gaps[gaps > 0]
        nominal = float(np.clip(np.median(gaps), 1.0, HOUR)) if gaps.size else DEFAULT_INTERVAL_S
        w[rows] = np.minimum(np.concatenate([[nominal], np.diff(t)]), nominal)
        w[rows[np.concatenate([[False], np.diff(t) <= 0])]] = 0.0  # a duplicate time counts once
    return w


def ambient_hourly(series: Series, day0: int, n_hours: int,
                   rules: windows.ValidityRules = windows.DEFAULT_RULES) -> dict[str, FloatArray]:
    """Hourly averages (stations × hours, NaN under 45 minutes) of each AQI pollutant."""
    out = {}
    for name in AMBIENT_FIELDS:
        w = interval_weights(series, name)
        avg, _ = windows.hourly_from_readings(
            series.index, series.time_ns // NS, series.values[name], np.nan_to_num(w, nan=0.0),
            len(series.identities), day0 + HOUR, n_hours, flags=series.flags[name], rules=rules)
        out[name] = avg
    return out


def _trailing_mean(h: FloatArray, hours: int, min_valid: int) -> FloatArray:
    ok = np.isfinite(h)
    csum = np.concatenate([np.zeros((h.shape[0], 1)), np.cumsum(np.where(ok, h, 0.0), axis=1)], axis=1)
    ccnt = np.concatenate([np.zeros((h.shape[0], 1)), np.cumsum(ok, axis=1)], axis=1)
    end = np.arange(1, h.shape[1] + 1)
    start = np.maximum(end - hours, 0)
    count = ccnt[:, end] - ccnt[:, start]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (csum[:, end] - csum[:, start]) / count
    return np.where(count >= min_valid, mean, np.nan)


def _nowcast_series(h: FloatArray) -> FloatArray:
    """NowCast at every hour from the 12 hours ending there (stations × hours)."""
    s, n = h.shape
    padded = np.hstack([np.full((s, 11), np.nan), h])
    stacked = np.stack([padded[:, 11 - k:11 - k + n] for k in range(12)], axis=-1)  # newest first
    return nowcast(stacked.reshape(-1, 12)).reshape(s, n)


def _us(name: str, values: FloatArray) -> FloatArray:
    return convert_units(values, name, _CANONICAL_UNIT[name.removesuffix("_8h").removesuffix("_24h")],
                         US_2024.units[name])


def _cn_standards_at(starts: list[int], opts: AqiOptions) -> list[list[Standard]]:
    out = []
    for t in starts:
        when = datetime.fromtimestamp(t, timezone.utc)
        if opts.cn_standards == "both":
            out.append([CN_2012, cn_standard_in_force(when, effective=date.min)])
        else:
            out.append([cn_standard_in_force(when, effective=opts.cn_2026_effective)])
    return out


def ambient_points(series: Series, day0: int, n_days: int, opts: AqiOptions,
                   want_hour: Callable[[str, int], bool], want_day: Callable[[str, int], bool],
                   rules: windows.ValidityRules = windows.DEFAULT_RULES) -> list[Point]:
    """`aqi_hourly` and `aqi_daily` points of the wanted (station, hour end) / (station, day start)."""
    n = n_days * 24
    h = ambient_hourly(series, day0, n, rules)
    o3_8h = windows.o3_8h_moving(h["o3"], rules)
    co_8h = windows.o3_8h_moving(h["co"], rules)  # same 6-of-8 rule
    so2_24h = _trailing_mean(h["so2"], 24, rules.day_min_hours)
    hour_ends = [day0 + (j + 1) * HOUR for j in range(n)]
    days = [day0 + d * DAY for d in range(n_days)]
    stations = series.identities

    cn_hour = {"so2": h["so2"], "no2": h["no2"], "co": h["co"], "o3": h["o3"], "o3_8h": o3_8h,
               "pm10": h["pm10"], "pm25": h["pm25"], "so2_24h": so2_24h}
    cn_day = {name: windows.daily_mean(h[name], rules) for name in ("so2", "no2", "co", "pm10", "pm25")}
    cn_day["o3"] = windows.daily_max_1h(h["o3"], rules)
    cn_day["o3_8h"] = windows.daily_max_8h(o3_8h, rules)

    points = _index("aqi_hourly", "hour", stations, hour_ends, [t - HOUR for t in hour_ends], cn_hour,
                    _cn_standards_at([t - HOUR for t in hour_ends], opts), want_hour, HOUR)
    points += _index("aqi_daily", "day", stations, days, days, cn_day, _cn_standards_at(days, opts), want_day, DAY)
    if opts.us:
        us_hour = {"pm25": _nowcast_series(h["pm25"]), "pm10": _nowcast_series(h["pm10"]),
                   "o3_8h": _us("o3_8h", o3_8h), "o3": _us("o3", h["o3"]), "co": _us("co", co_8h),
                   "so2": _us("so2", h["so2"]), "no2": _us("no2", h["no2"]), "so2_24h": _us("so2_24h", so2_24h)}
        us_day = {"pm25": cn_day["pm25"], "pm10": cn_day["pm10"], "o3_8h": _us("o3_8h", cn_day["o3_8h"]),
                  "o3": _us("o3", cn_day["o3"]), "co": _us("co", windows.daily_max_8h(co_8h, rules)),
                  "so2": _us("so2", windows.daily_max_1h(h["so2"], rules)),
                  "no2": _us("no2", windows.daily_max_1h(h["no2"], rules)),
                  "so2_24h": _us("so2_24h", cn_day["so2"])}
        points += _index("aqi_hourly", "hour", stations, hour_ends, [t - HOUR for t in hour_ends], us_hour,
                         [[US_2024]] * n, want_hour, HOUR)
        points += _index("aqi_daily", "day", stations, days, days, us_day, [[US_2024]] * n_days, want_day, DAY)
    return points


def _index(measurement: str, period: str, stations: list[str], labels: list[int], starts: list[int],
           inputs: dict[str, FloatArray], standards: list[list[Standard]],
           want: Callable[[str, int], bool], length: int) -> list[Point]:
    """AQI of the wanted cells of (stations × columns) inputs, grouped by standard."""
    wanted = [(i, j) for j, t in enumerate(labels) for i, s in enumerate(stations) if want(s, t)]
    if not wanted:
        return []
    by_standard: dict[int, tuple[Standard, list[tuple[int, int]]]] = {}
    for i, j in wanted:
        for std in standards[j]:
            by_standard.setdefault(id(std), (std, []))[1].append((i, j))
    points = []
    for std, cells in by_standard.values():
        ii = np.array([c[0] for c in cells])
        jj = np.array([c[1] for c in cells])
        values = {name: arr[ii, jj] for name, arr in inputs.items()}
        res = compute_aqi(std, period, values, size=len(cells))
        for r, (i, j) in enumerate(cells):
            if np.isnan(res.aqi[r]):
                continue  # no valid pollutant: no number, never a made-up one
            rec = res.record(r)
            conc = {name: float(v[r]) for name, v in values.items() if np.isfinite(v[r])}
            fields: dict[str, float | int | bool | str] = {
                "aqi": rec["aqi"], "category": rec["category"], "primary": ",".join(rec["primary"])}
            fields.update({f"iaqi_{k}": v for k, v in rec["iaqi"].items()})
            fields.update({f"conc_{k}": v for k, v in conc.items()})
            record = {"station": stations[i], "standard": std.key, "period": period,
                      "time": _iso(labels[j]), "start": _iso(starts[j]), "end": _iso(starts[j] + length),
                      **rec, "conc": conc}
            if std.phase:
                record["phase"] = std.phase
            points.append(Point(measurement, {"station": stations[i], "standard": std.key}, fields,
                                labels[j], f"aqi/{stations[i]}", record))
    return points


# ---------------------------------------------------------------------------------------
# Stack

def stack_points(series: Series, hour0_end: int, n_hours: int, registry: Registry, o2_mode: str,
                 want: Callable[[str, int], bool]) -> list[Point]:
    """`stack_hourly` points of the wanted (outlet, hour end), one per pollutant measured that hour.

    Minute data (HJ 75): each reading goes to the minute slot of the hour it ends in; a
    second reading in the same minute replaces the first.
    """
    outlets = series.identities
    o, n = len(outlets), n_hours
    hour = -((-series.time_ns) // (HOUR * NS)) * HOUR
    hidx = (hour - hour0_end) // HOUR
    slot = np.clip(-((-(series.time_ns - (hour - HOUR) * NS)) // (60 * NS)) - 1, 0, 59)
    keep = (hidx >= 0) & (hidx < n)
    oi, hi, si = series.index[keep], hidx[keep], slot[keep]

    def grid(src: np.ndarray, fill, dtype) -> np.ndarray:
        g = np.full((o, n, 60), fill, dtype=dtype)
        g[oi, hi, si] = src[keep]
        return g

    o2 = grid(series.values["o2"], np.nan, np.float64)
    o2_flags = grid(series.flags["o2"], "", object).astype(str)
    status = grid(series.status, "", object).astype(str) if len(series.status) else None
    known = [registry.outlets.get(name) for name in outlets]
    ref = np.array([np.nan if out is None else out.ref_o2 for out in known])
    points: list[Point] = []
    for p in STACK_POLLUTANTS:
        values = grid(series.values[p], np.nan, np.float64)
        flags = grid(series.flags[p], "", object).astype(str)
        measured = (np.isfinite(values) | (flags != "")).any(axis=-1)
        if not measured.any():
            continue
        limits = [Limit(None, None) if out is None else limit_for(out, p) for out in known]
        lim = np.array([np.nan if lm.value is None else lm.value for lm in limits])
        res = stack_hourly(values, o2, ref[:, None], lim[:, None], flags=flags, o2_flags=o2_flags,
                           status=status, o2_mode=o2_mode)  # type: ignore[arg-type]
        for i, j in zip(*np.nonzero(measured)):
            t = hour0_end + int(j) * HOUR
            if not want(outlets[i], t):
                continue
            rec = hourly_record(res, int(i), int(j), limits[i])
            fields = {k: v for k, v in rec.items() if v is not None}
            record = {"outlet": outlets[i], "pollutant": p, "time": _iso(t), "start": _iso(t - HOUR),
                      "end": _iso(t), **rec,
                      "not_running_minutes": int(res.not_running_minutes[i, j])}
            points.append(Point("stack_hourly", {"outlet": outlets[i], "pollutant": p}, fields, t,
                                f"stack/{outlets[i]}", record))
    return points
