"""Averaging windows with the validity rules of GB 3095-2012 Table 4 and HJ 663 (as read).

Pure numpy over arrays shaped (stations, …). A window without enough valid data is NaN —
never a number made from too little data. Hours are labelled by their END (DESIGN.md: a
reading's time is the end of its interval): hour index h of a day covers (h, h+1] o'clock,
so index 0 is the hour ending 01:00 and index 23 the hour ending 24:00.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class ValidityRules:
    """Minimum data for each average; defaults are GB 3095-2012 Table 4 / HJ 663 as read."""

    hour_min_minutes: float = 45.0  # 1-h average: ≥ 45 minutes sampled in the hour
    day_min_hours: int = 20  # 24-h average: ≥ 20 valid hourly values
    o3_8h_min_hours: int = 6  # 8-h moving average: ≥ 6 valid of the 8 hours
    o3_max8h_min_values: int = 14  # daily max 8-h: ≥ 14 valid 8-h values (windows ending 08..24)
    o3_max1h_min_hours: int = 20  # daily max 1-h: ≥ 20 valid hours (assumption: as the 24-h rule)
    valid_flags: frozenset[str] = frozenset({"N"})  # HJ 212 flags whose values count


DEFAULT_RULES = ValidityRules()


def valid_mask(values: ArrayLike, flags: ArrayLike | None = None,
               valid_flags: frozenset[str] = DEFAULT_RULES.valid_flags) -> NDArray[np.bool_]:
    """Finite values whose flag (if any; "" or None read as N) counts as valid."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    if flags is not None:
        f = np.asarray(flags, dtype=object)
        f = np.where((f == None) | (f == ""), "N", f)  # noqa: E711 — elementwise on object array
        ok &= np.isin(f.astype(str), list(valid_flags))
    return ok


def hourly_from_readings(station: ArrayLike, time_end_s: ArrayLike, value: ArrayLike, interval_s: ArrayLike,
                         n_stations: int, hour0_end_s: int, n_hours: int, flags: ArrayLike | None = None,
                         rules: ValidityRules = DEFAULT_RULES) -> tuple[FloatArray, FloatArray]:
    """Hourly averages from flat readings (station index, end time, value, interval).

    A reading ending at t belongs to the hour ending at ceil(t / 3600) × 3600 (the hour
    (H − 1 h, H]). Output hour j ends at `hour0_end_s + 3600 j`. Returns (stations, n_hours)
    arrays of averages (NaN below the minimum minutes) and valid minutes.
    """
    s = np.asarray(station, dtype=np.int64)
    t = np.asarray(time_end_s, dtype=np.int64)
    v = np.asarray(value, dtype=np.float64)
    w = np.broadcast_to(np.asarray(interval_s, dtype=np.float64), v.shape)
    hour_end = -((-t) // 3600) * 3600
    j = (hour_end - hour0_end_s) // 3600
    ok = valid_mask(v, flags, rules.valid_flags) & (j >= 0) & (j < n_hours) & (s >= 0) & (s < n_stations)
    ok &= np.isfinite(w) & (w > 0)
    cell = s[ok] * n_hours + j[ok]
    size = n_stations * n_hours
    seconds = np.bincount(cell, weights=w[ok], minlength=size)
    total = np.bincount(cell, weights=w[ok] * v[ok], minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = total / seconds
    minutes = np.minimum(seconds / 60.0, 60.0)
    avg = np.where(minutes >= rules.hour_min_minutes, avg, np.nan)
    return avg.reshape(n_stations, n_hours), minutes.reshape(n_stations, n_hours)


def _nanmean_min(x: FloatArray, axis: int, min_valid: int) -> FloatArray:
    ok = np.isfinite(x)
    count = ok.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, x, 0.0).sum(axis=axis) / count
    return np.where(count >= min_valid, mean, np.nan)


def daily_mean(hourly: ArrayLike, rules: ValidityRules = DEFAULT_RULES) -> FloatArray:
    """24-h averages from hourly values shaped (stations, days × 24); NaN under 20 valid hours."""
    h = _days(hourly)
    return _nanmean_min(h, axis=-1, min_valid=rules.day_min_hours)


def o3_8h_moving(hourly: ArrayLike, rules: ValidityRules = DEFAULT_RULES) -> FloatArray:
    """8-h moving average ending at each hour, over (stations, hours); NaN under 6 valid of 8.

    The value at hour index i averages indices i−7..i; the first 7 hours of the array have
    fewer than 8 hours behind them and count only the hours present (pass the previous
    day's last 7 hours in front if you need them).
    """
    h = np.atleast_2d(np.asarray(hourly, dtype=np.float64))
    ok = np.isfinite(h)
    zero = np.where(ok, h, 0.0)
    csum = np.concatenate([np.zeros((h.shape[0], 1)), np.cumsum(zero, axis=1)], axis=1)
    ccnt = np.concatenate([np.zeros((h.shape[0], 1)), np.cumsum(ok, axis=1)], axis=1)
    end = np.arange(1, h.shape[1] + 1)
    start = np.maximum(end - 8, 0)
    total = csum[:, end] - csum[:, start]
    count = ccnt[:, end] - ccnt[:, start]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    return np.where(count >= rules.o3_8h_min_hours, mean, np.nan)


def daily_max_8h(o3_8h: ArrayLike, rules: ValidityRules = DEFAULT_RULES) -> FloatArray:
    """Daily max 8-h O3 from 8-h moving averages shaped (stations, days × 24).

    HJ 663: the 8-h averages of the day are those ending 08:00..24:00 (hour indices 7..23,
    17 windows, all inside the day); at least 14 of them must be valid.
    """
    d = _days(o3_8h)[..., 7:24]
    count = np.isfinite(d).sum(axis=-1)
    mx = np.max(np.where(np.isfinite(d), d, -np.inf), axis=-1)
    return np.where(count >= rules.o3_max8h_min_values, mx, np.nan)


def daily_max_1h(hourly: ArrayLike, rules: ValidityRules = DEFAULT_RULES) -> FloatArray:
    """Daily max 1-h value from hourly values shaped (stations, days × 24)."""
    d = _days(hourly)
    count = np.isfinite(d).sum(axis=-1)
    mx = np.max(np.where(np.isfinite(d), d, -np.inf), axis=-1)
    return np.where(count >= rules.o3_max1h_min_hours, mx, np.nan)


def _days(hourly: ArrayLike) -> FloatArray:
    h = np.atleast_2d(np.asarray(hourly, dtype=np.float64))
    if h.shape[-1] % 24:
        raise ValueError(f"hourly arrays must hold whole days (a multiple of 24 hours), got {h.shape[-1]}")
    return h.reshape(*h.shape[:-1], h.shape[-1] // 24, 24)
