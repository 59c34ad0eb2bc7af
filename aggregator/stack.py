"""Stack (CEMS) hourly averages, O2 correction and the emission limit each hour is judged by.

Sources: HJ 75-2017 (valid data, as read in cems.md), GB 13271-2014 Tables 1-3 (limits),
the outlet registry (`aqpipe.registry.Outlet`: fuel, boiler table, reference O2, permit).

Arrays are shaped (outlets, hours, 60): one slot per minute of the hour, NaN when absent.

O2 correction ρ = ρ' × (21 − φ_ref) / (21 − φ') is applied, by default, to the HOURLY
averages of ρ' and φ' over the same valid minutes (`o2_mode="hourly"`). Why: the hourly
average of the converted concentration is what is judged (HJ 75-2017 as read), the data
logger reports hourly ρ' and φ' averages (HJ 212 hour packets), and the factor explodes
as φ' approaches 21 %, so per-minute conversion lets a single near-ambient minute dominate
the hour. Not verified against the HJ 75-2017 text itself here; `o2_mode="minute"` converts
each minute first (the other reading) for a site that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from aggregator.windows import DEFAULT_RULES
from aqpipe import dataflags
from aqpipe.registry import Outlet

FloatArray = NDArray[np.float64]

# HJ 75-2017 (as read): C calibration, M maintenance, D fault, B comms are not valid data;
# F (stopped) and plant status stopped / startup / shutdown are "not running": neither
# valid emissions nor judged for exceedance.
# The letters and their validity are the table in aqpipe.dataflags; a letter not in it
# (HJ 212-2025 may add some) is invalid: the masks below allow listed letters only.
INVALID_FLAGS = dataflags.INVALID_FLAGS
NOT_RUNNING_FLAGS = dataflags.NOT_RUNNING_FLAGS
_COUNTED_FLAGS = ["", *dataflags.VALID_FLAGS]  # "" = no flag stored = N
NOT_RUNNING_STATUS = frozenset({"stopped", "startup", "shutdown"})
MIN_VALID_MINUTES = int(DEFAULT_RULES.hour_min_minutes)  # one 45-minute rule (windows.py), minute slots here

# GB 13271-2014, mg/m³ at reference O2. Keys: (table number, fuel) -> pollutant -> limit.
GB13271_2014: dict[tuple[int, str], dict[str, float]] = {
    (1, "coal"): {"pm": 80, "so2": 400, "nox": 400, "hg": 0.05},
    (1, "oil"): {"pm": 60, "so2": 300, "nox": 400},
    (1, "gas"): {"pm": 30, "so2": 100, "nox": 400},
    (2, "coal"): {"pm": 50, "so2": 300, "nox": 300, "hg": 0.05},
    (2, "oil"): {"pm": 30, "so2": 200, "nox": 250},
    (2, "gas"): {"pm": 20, "so2": 50, "nox": 200},
    (3, "coal"): {"pm": 30, "so2": 200, "nox": 200, "hg": 0.05},
    (3, "oil"): {"pm": 30, "so2": 100, "nox": 200},
    (3, "gas"): {"pm": 20, "so2": 50, "nox": 150},
}
# Table 1 footnote: coal boilers in service in Guangxi, Chongqing, Sichuan, Guizhou: SO2 550.
GB13271_SW_PROVINCE_SO2 = 550.0
_BOILER_TABLE = {"in_service": 1, "new": 2, "special": 3}
# Stack values are mg/m³ except Hg, which arrives in µg/m³ (DESIGN.md); limits are mg/m³.
_LIMIT_TO_VALUE_UNIT = {"hg": 1000.0}


@dataclass(frozen=True)
class Limit:
    value: float | None  # in the pollutant's payload unit (mg/m³; Hg µg/m³); None: no limit
    source: str | None  # "permit" | "GB13271-2014 table N" | None


def gb13271_table(outlet: Outlet) -> int:
    """Which GB 13271-2014 table applies: 3 in a special-limit zone, else by boiler status."""
    return 3 if outlet.special_zone else _BOILER_TABLE[outlet.boiler]


def limit_for(outlet: Outlet, pollutant: str) -> Limit:
    """The limit an outlet's hourly average of `pollutant` is judged by.

    The permit limit when the outlet's `limits` names the pollutant (permits are often
    stricter: ultra-low emission, local standards); otherwise the GB 13271-2014 table for
    its boiler status, fuel and zone; no limit (e.g. CO) gives `Limit(None, None)`.
    """
    factor = _LIMIT_TO_VALUE_UNIT.get(pollutant, 1.0)
    if pollutant in outlet.limits:
        return Limit(outlet.limits[pollutant] * factor, "permit")
    table = gb13271_table(outlet)
    row = GB13271_2014[(table, outlet.fuel)]
    if pollutant not in row:
        return Limit(None, None)
    value = row[pollutant]
    if table == 1 and outlet.fuel == "coal" and pollutant == "so2" and outlet.province_sw:
        value = GB13271_SW_PROVINCE_SO2
    return Limit(value * factor, f"GB13271-2014 table {table}")


@dataclass
class StackHourly:
    """Hourly results, arrays shaped (outlets, hours)."""

    avg: FloatArray  # measured ρ' average over valid running minutes; NaN under 45 minutes
    avg_o2corr: FloatArray  # converted to reference O2; NaN under 45 minutes with O2 too
    valid_minutes: NDArray[np.int64]  # valid running minutes of the pollutant
    not_running_minutes: NDArray[np.int64]  # F-flagged or stopped / startup / shutdown
    judged: NDArray[np.bool_]  # a converted average exists and a limit applies
    exceeded: NDArray[np.bool_]  # judged and avg_o2corr above the limit


def stack_hourly(values: ArrayLike, o2: ArrayLike, ref_o2: ArrayLike, limit: ArrayLike,
                 flags: ArrayLike | None = None, o2_flags: ArrayLike | None = None,
                 status: ArrayLike | None = None, o2_mode: Literal["hourly", "minute"] = "hourly",
                 min_minutes: int = MIN_VALID_MINUTES) -> StackHourly:
    """Hourly averages, O2-corrected averages and exceedances for minute data.

    `values`, `o2`, `flags`, `o2_flags`, `status` are (outlets, hours, 60); `ref_o2` and
    `limit` broadcast against (outlets, hours) — pass `limit` NaN where none applies.
    """
    v = np.asarray(values, dtype=np.float64)
    ox = np.broadcast_to(np.asarray(o2, dtype=np.float64), v.shape)
    not_running = np.zeros(v.shape, bool)
    invalid = ~np.isfinite(v)
    if flags is not None:
        f = np.asarray(flags).astype(str)
        not_running |= np.isin(f, list(NOT_RUNNING_FLAGS))
        invalid |= ~np.isin(f, _COUNTED_FLAGS) & ~not_running
    if status is not None:
        not_running |= np.isin(np.asarray(status).astype(str), list(NOT_RUNNING_STATUS))
    ok = ~invalid & ~not_running
    o2_ok = ok & np.isfinite(ox) & (ox < 21.0)  # at 21 % the factor is undefined
    if o2_flags is not None:
        o2_ok &= np.isin(np.asarray(o2_flags).astype(str), _COUNTED_FLAGS)

    n_ok = ok.sum(axis=-1)
    n_o2 = o2_ok.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = np.where(ok, v, 0.0).sum(axis=-1) / n_ok
        ref = np.asarray(ref_o2, dtype=np.float64)
        if o2_mode == "hourly":
            v_o2 = np.where(o2_ok, v, 0.0).sum(axis=-1) / n_o2
            o2_avg = np.where(o2_ok, ox, 0.0).sum(axis=-1) / n_o2
            corr = v_o2 * (21.0 - ref) / (21.0 - o2_avg)
        elif o2_mode == "minute":
            per_minute = np.where(o2_ok, v * (21.0 - ref[..., None]) / (21.0 - ox), 0.0)
            corr = per_minute.sum(axis=-1) / n_o2
        else:
            raise ValueError(f"o2_mode must be 'hourly' or 'minute', got {o2_mode!r}")
    avg = np.where(n_ok >= min_minutes, avg, np.nan)
    corr = np.where(n_o2 >= min_minutes, corr, np.nan)
    lim = np.broadcast_to(np.asarray(limit, dtype=np.float64), avg.shape)
    judged = np.isfinite(corr) & np.isfinite(lim)
    return StackHourly(avg, corr, n_ok.astype(np.int64), not_running.sum(axis=-1).astype(np.int64),
                       judged, judged & (corr > lim))


def hourly_record(result: StackHourly, i: int, h: int, limit: Limit) -> dict:
    """One `stack_hourly` point (DESIGN.md) for outlet row `i`, hour `h`."""
    avg, corr = result.avg[i, h], result.avg_o2corr[i, h]
    return {
        "avg": None if np.isnan(avg) else float(avg),
        "avg_o2corr": None if np.isnan(corr) else float(corr),
        "limit": limit.value,
        "limit_source": limit.source,
        "exceeded": bool(result.exceeded[i, h]) if result.judged[i, h] else None,
        "valid_minutes": int(result.valid_minutes[i, h]),
    }
