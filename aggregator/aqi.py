"""Vectorised AQI: many station-hours at once, exact at every breakpoint.

The arithmetic is integer throughout: a concentration is first brought to the table's
published precision (HJ 633: rounded, integer µg/m³ / 0.1 mg/m³; EPA: truncated), held as
an integer count of that unit, and the piecewise-linear index is then a ratio of integers
rounded with integer division. So 75.0000001 µg/m³ of PM2.5 (HJ 633-2012) is 75, IAQI
100, never 101, and EPA's 125.5 rounds up to 126 — no float tolerance anywhere.

Missing is NaN: NaN in gives NaN out, never a made-up number.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from aggregator.tables import (
    AUX_INPUTS,
    MOLAR_MASS,
    MOLAR_VOLUME_25C,
    MOLECULE,
    REPORT_NAME,
    REPORT_ORDER,
    Standard,
    Table,
    _scaled,
)

FloatArray = NDArray[np.float64]

# Floats carry decimal inputs only approximately (4.35 * 100 = 434.99999999999994): snap
# the scaled value to 1e-6 of the precision unit before truncating or rounding, so a
# decimal written at the published precision is read as itself.
_SNAP_DECIMALS = 6
_MAX_SCALED = 2.0**40  # far above any table; keeps every product an exact float64 integer


class AqiInputError(ValueError):
    """An input the AQI core cannot use: unknown pollutant, unit or period."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def to_precision(table: Table, conc: ArrayLike) -> tuple[FloatArray, NDArray[np.bool_]]:
    """Concentrations as whole counts of the table's precision unit, and which are valid.

    Counts are integer-valued float64 (exact: far below 2**53). Invalid: NaN, ±inf, or negative
    after rounding / truncation (sensor noise just below zero reads as 0 and stays valid).
    """
    c = np.asarray(conc, dtype=np.float64)
    scaled = np.round(c * table.scale, _SNAP_DECIMALS)
    scaled = np.trunc(scaled, out=scaled) if table.conc_rounding == "truncate" else np.rint(scaled, out=scaled)
    with np.errstate(invalid="ignore"):
        valid = (scaled >= 0) & (scaled <= _MAX_SCALED)  # False for NaN and ±inf
    return scaled, valid


@functools.cache
def _lookup(table: Table) -> FloatArray:
    """IAQI of every concentration count 0..top, computed once in exact integer arithmetic.

    Tables are small (at most a few thousand precision units), so indexing becomes one
    array gather per pollutant: the speed of the vectorised path comes from here. The
    extra last slot (NaN) is where invalid concentrations point.
    """
    out = np.full(table.top + 2, np.nan)
    for lo, hi, ilo, ihi in table.segments:
        for c in range(lo, hi + 1):
            out[c] = ilo + _divide(table, (ihi - ilo) * (c - lo), hi - lo)
    return out


def _divide(table: Table, num: int, den: int) -> int:
    if table.index_rounding == "ceil":
        return -((-num) // den)
    return (2 * num + den) // (2 * den)  # half up: floor(num/den + 1/2)


def iaqi_from_precision(table: Table, c: FloatArray, valid: NDArray[np.bool_]) -> FloatArray:
    """Index for concentrations already at the table's precision (see `to_precision`)."""
    lut = _lookup(table)
    top = table.top
    idx = np.where(valid, np.minimum(c, top), top + 1).astype(np.intp)
    out = lut[idx]
    beyond = np.flatnonzero(valid & (c > top))
    if beyond.size:
        lo, hi, ilo, ihi = table.segments[-1]
        if table.above_top == "cap":
            out[beyond] = ihi
        else:  # run the last row on, exactly, for the (rare) values past the table
            out[beyond] = [ilo + _divide(table, (ihi - ilo) * (int(x) - lo), hi - lo) for x in c[beyond]]
    return out


def iaqi(table: Table, conc: ArrayLike) -> FloatArray:
    """Individual index of `conc` (in the table's unit) on `table`; NaN where there is none."""
    c, valid = to_precision(table, conc)
    return iaqi_from_precision(table, c, valid)


@dataclass
class AqiResult:
    """AQI for N station-periods: arrays of length N, NaN / 0 / False where there is none."""

    standard: Standard
    aqi: FloatArray  # integer-valued, NaN when no pollutant had an index
    category: NDArray[np.int8]  # 1..6, 0 when aqi is NaN
    iaqi: dict[str, FloatArray]  # input name -> index
    primary: dict[str, NDArray[np.bool_]]  # reported pollutant -> is a primary pollutant
    exceeding: dict[str, NDArray[np.bool_]]  # reported pollutant -> IAQI above the limit index

    def __len__(self) -> int:
        return len(self.aqi)

    def primary_names(self, i: int) -> list[str]:
        return [p for p in REPORT_ORDER if p in self.primary and self.primary[p][i]]

    def exceeding_names(self, i: int) -> list[str]:
        return [p for p in REPORT_ORDER if p in self.exceeding and self.exceeding[p][i]]

    def category_name(self, i: int) -> str:
        level = int(self.category[i])
        return self.standard.categories[level - 1].name if level else ""

    def record(self, i: int) -> dict:
        """Row `i` as the CLI / derived-topic record."""
        aqi = self.aqi[i]
        return {
            "aqi": None if np.isnan(aqi) else int(aqi),
            "category": int(self.category[i]) or None,
            "category_name": self.category_name(i),
            "primary": self.primary_names(i),
            "exceeding": self.exceeding_names(i),
            "iaqi": {name: int(v[i]) for name, v in self.iaqi.items() if not np.isnan(v[i])},
        }


def category_of(standard: Standard, aqi: ArrayLike) -> NDArray[np.int8]:
    """Category level 1..6 of each AQI (0 for NaN)."""
    a = np.asarray(aqi, dtype=np.float64)
    level = np.zeros(a.shape, np.int8)
    valid = ~np.isnan(a)
    level[valid] = 1
    for cat in standard.categories[:-1]:  # one comparison per band edge: cheap, exact
        level += a > cat.upper
    return level


def compute_aqi(standard: Standard, period: str, values: Mapping[str, ArrayLike],
                size: int | None = None) -> AqiResult:
    """AQI, category, primary and exceeding pollutants for arrays of period averages.

    `values` maps input names (`pm25`, `o3_8h`, `so2_24h`…, see `tables`) to equal-length
    arrays in the standard's units (`standard.units`); absent inputs and NaN are missing.
    `size` gives the row count when `values` may be empty.
    """
    try:
        table_of = standard.inputs[period]
    except KeyError:
        raise AqiInputError("period", f"{period!r} is not one of {sorted(standard.inputs)}") from None
    unknown = set(values) - set(table_of) - AUX_INPUTS
    if unknown:
        raise AqiInputError("values", f"unknown inputs {sorted(unknown)}")
    arrays = {k: np.atleast_1d(np.asarray(v, dtype=np.float64)) for k, v in values.items()}
    n = max((len(a) for a in arrays.values()), default=size or 0)
    arrays = {k: np.broadcast_to(a, (n,)) for k, a in arrays.items()}

    sub: dict[str, FloatArray] = {}
    for name, table_name in table_of.items():
        if name not in arrays:
            continue
        table = standard.tables[table_name]
        c, valid = to_precision(table, arrays[name])
        out = iaqi_from_precision(table, c, valid)
        for rule in standard.rules:
            if rule.table != table_name:
                continue
            over = valid & (c > _scaled(rule.above, table.scale))
            if not over.any():
                continue
            if rule.fixed is not None:
                alt = np.full(n, float(rule.fixed))
            else:
                other = arrays.get(rule.use_input or "")
                alt = np.full(n, np.nan)
                if other is not None:
                    alt = iaqi(standard.tables[rule.use_table or ""], other)
                    if rule.at_least is not None:
                        other_valid = np.isfinite(other) & (other >= 0)
                        alt = np.where(other_valid, np.fmax(alt, rule.at_least), alt)
            out = np.where(over, alt, out)
        sub[name] = out

    aqi = np.full(n, np.nan)
    for v in sub.values():
        np.fmax(aqi, v, out=aqi)  # fmax skips NaN: the max over the indices that exist

    primary: dict[str, NDArray[np.bool_]] = {}
    exceeding: dict[str, NDArray[np.bool_]] = {}
    named = aqi > standard.primary_above  # NaN compares False
    for name, v in sub.items():
        report = REPORT_NAME.get(name, name)
        is_primary = named & (v == aqi)
        primary[report] = primary.get(report, np.zeros(n, bool)) | is_primary
        if standard.exceeding_above is not None:
            exceeding[report] = exceeding.get(report, np.zeros(n, bool)) | (v > standard.exceeding_above)
    return AqiResult(standard, aqi, category_of(standard, aqi), sub, primary, exceeding)


def nowcast(hourly: ArrayLike) -> FloatArray:
    """EPA PM NowCast concentration (not truncated) for each row of `hourly`.

    `hourly` is (stations, 12), newest hour first, NaN for a missing hour. Valid only when
    at least 2 of the 3 newest hours are valid. w = max(c_min / c_max, 0.5) over the valid
    hours; a missing hour keeps its place in the exponent (its weight is simply dropped).
    The result is truncated by the AQI table itself (PM2.5 0.1, PM10 1 µg/m³).
    """
    c = np.atleast_2d(np.asarray(hourly, dtype=np.float64))
    if c.shape[1] > 12:
        raise AqiInputError("nowcast", f"at most 12 hourly values, got {c.shape[1]}")
    if c.shape[1] < 12:
        c = np.hstack([c, np.full((c.shape[0], 12 - c.shape[1]), np.nan)])
    valid = np.isfinite(c)
    enough = valid[:, :3].sum(axis=1) >= 2
    cmax = np.max(np.where(valid, c, -np.inf), axis=1)
    cmin = np.min(np.where(valid, c, np.inf), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(cmax > 0, cmin / cmax, 1.0)  # all zero: no change, plain average
    w = np.clip(w, 0.5, 1.0)
    weights = np.where(valid, w[:, None] ** np.arange(12)[None, :], 0.0)
    total = np.sum(weights * np.where(valid, c, 0.0), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = total / np.sum(weights, axis=1)
    return np.where(enough, out, np.nan)


_UNIT_ALIASES = {"ug/m3": "ug/m3", "µg/m3": "ug/m3", "µg/m³": "ug/m3", "ug/m³": "ug/m3",
                 "mg/m3": "mg/m3", "mg/m³": "mg/m3", "ppb": "ppb", "ppm": "ppm"}
_MASS = {"ug/m3": 1.0, "mg/m3": 1000.0}  # in µg/m³
_MIXING = {"ppb": 1.0, "ppm": 1000.0}  # in ppb


def convert_units(value: ArrayLike, input_name: str, from_unit: str, to_unit: str) -> FloatArray:
    """Convert concentrations between ppb/ppm and µg/m³ / mg/m³ at 25 °C and 1 atm.

    µg/m³ = ppb × M / 24.465 (M from aqi.md); particulate matter has no mixing ratio.
    """
    v = np.asarray(value, dtype=np.float64)
    try:
        src, dst = _UNIT_ALIASES[from_unit.strip()], _UNIT_ALIASES[to_unit.strip()]
    except KeyError:
        raise AqiInputError("units", f"unknown unit {from_unit!r} (use ppb, ppm, ug/m3, mg/m3)") from None
    if src == dst:
        return v
    molecule = MOLECULE.get(input_name)
    if molecule is None:
        raise AqiInputError("units", f"unknown pollutant {input_name!r}")
    if src in _MASS and dst in _MASS:
        return v * _MASS[src] / _MASS[dst]
    if src in _MIXING and dst in _MIXING:
        return v * _MIXING[src] / _MIXING[dst]
    if molecule not in MOLAR_MASS:
        raise AqiInputError("units", f"{input_name} is particulate: no {src} <-> {dst} conversion")
    factor = MOLAR_MASS[molecule] / MOLAR_VOLUME_25C  # µg/m³ per ppb
    if src in _MIXING:  # mixing ratio -> mass
        return v * _MIXING[src] * factor / _MASS[dst]
    return v * _MASS[src] / factor / _MIXING[dst]
