"""Every breakpoint of every table: the table matches the standard, and the index is exact
at the breakpoint and one precision unit either side."""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from aggregator.aqi import iaqi
from aggregator.tables import (
    CN_2012,
    CN_2026_FINAL,
    CN_2026_TRANSITION,
    US_2024,
    Table,
    UnknownStandard,
    cn_standard_in_force,
    get_standard,
)

DATA = json.loads((Path(__file__).parents[1] / "data" / "aqi" / "breakpoints.json").read_text())


def _cn_expected(standard_key: str) -> dict[str, list[list[float]]]:
    expected = dict(DATA["cn-2012"])
    if standard_key == "cn-2026":
        expected.update(DATA["cn-2026"])
    return expected


def _cn_cases():
    for std in (CN_2012, CN_2026_TRANSITION, CN_2026_FINAL):
        for name, nodes in _cn_expected(std.key).items():
            yield pytest.param(std, name, nodes, id=f"{std.key}-{std.phase or 'only'}-{name}")


@pytest.mark.parametrize(("std", "name", "nodes"), list(_cn_cases()))
def test_cn_table_matches_the_standard(std, name, nodes):
    t: Table = std.tables[name]
    got = [(Fraction(s[0], t.scale), s[2]) for s in t.segments] + [(Fraction(t.segments[-1][1], t.scale), t.segments[-1][3])]
    assert got == [(Fraction(str(c)), i) for c, i in nodes]


def _ref_cn(t: Table, c_units: int) -> int:
    """Reference HJ 633 IAQI in exact rationals: c in precision units."""
    for lo, hi, ilo, ihi in t.segments:
        if lo <= c_units <= hi:
            return math.ceil(Fraction(ihi - ilo, hi - lo) * (c_units - lo) + ilo)
    return t.segments[-1][3]


@pytest.mark.parametrize(("std", "name", "nodes"), list(_cn_cases()))
def test_cn_index_is_exact_at_and_around_every_breakpoint(std, name, nodes):
    t: Table = std.tables[name]
    unit = 1 / t.scale
    for c, expected_at in nodes:
        assert iaqi(t, [c])[0] == expected_at, f"{name} at {c}"
        c_units = round(c * t.scale)
        for step in (-1, 1):
            if c_units + step < 0:
                continue
            got = iaqi(t, [c + step * unit])[0]
            assert got == _ref_cn(t, c_units + step), f"{name} at {c}{step:+} unit"
            if step == -1:
                assert got <= expected_at
            else:
                assert got > expected_at or c_units + step > t.top


def _us_cases():
    for name, rows in DATA["us"].items():
        yield pytest.param(name, rows, id=f"us-{name}")


@pytest.mark.parametrize(("name", "rows"), list(_us_cases()))
def test_us_table_matches_the_tad(name, rows):
    t = US_2024.tables[name]
    got = [(Fraction(lo, t.scale), Fraction(hi, t.scale), ilo, ihi) for lo, hi, ilo, ihi in t.segments]
    assert got == [(Fraction(lo), Fraction(hi), ilo, ihi) for lo, hi, ilo, ihi in rows]


@pytest.mark.parametrize(("name", "rows"), list(_us_cases()))
def test_us_index_at_each_row_end_is_the_row_index(name, rows):
    t = US_2024.tables[name]
    for lo, hi, ilo, ihi in rows:
        assert iaqi(t, [float(lo)])[0] == ilo, f"{name} at {lo}"
        assert iaqi(t, [float(hi)])[0] == ihi, f"{name} at {hi}"
        # just inside the row end: truncation keeps it in the row
        inside = float(Decimal(hi) + Decimal(1) / t.scale / 2)
        if Decimal(hi) < Decimal(rows[-1][1]):
            assert iaqi(t, [inside])[0] == ihi, f"{name} at {inside} truncates to {hi}"


def test_us_index_below_the_first_row_of_one_hour_ozone_is_missing():
    assert np.isnan(iaqi(US_2024.tables["o3_1h"], [0.124])[0])
    assert iaqi(US_2024.tables["o3_1h"], [0.125])[0] == 101


def test_us_index_above_the_top_row_runs_on_the_last_row():
    t = US_2024.tables["pm25_24h"]
    # 301 + 199 / 99.9 × (425.5 − 225.5) = 699.4 → 699
    assert iaqi(t, [425.5])[0] == 699


def test_cn_index_above_the_top_breakpoint_is_capped_at_500():
    assert iaqi(CN_2012.tables["pm25_24h"], [501, 900])[0] == 500


def test_cn_2026_pm_columns_differ_from_2012_only_at_the_iaqi_100_step():
    for name in ("pm25_24h", "pm10_24h"):
        old = CN_2012.tables[name].segments
        new = CN_2026_TRANSITION.tables[name].segments
        changed = {k for k, (a, b) in enumerate(zip(old, new)) if a != b}
        assert changed == {1, 2}  # the two segments that meet at IAQI 100
    for name in CN_2012.tables:
        if name not in ("pm25_24h", "pm10_24h"):
            assert CN_2026_TRANSITION.tables[name] == CN_2012.tables[name]


def test_every_table_names_its_source():
    for std in (CN_2012, CN_2026_TRANSITION, CN_2026_FINAL, US_2024):
        assert std.source
        for t in std.tables.values():
            assert t.source


CN = timezone(timedelta(hours=8))


@pytest.mark.parametrize(("when", "expected"), [
    (datetime(2026, 2, 28, 23, 59, tzinfo=CN), ("cn-2012", "")),
    (datetime(2026, 3, 1, 0, 0, tzinfo=CN), ("cn-2026", "transition")),
    (datetime(2026, 2, 28, 16, 0, tzinfo=timezone.utc), ("cn-2026", "transition")),  # 00:00 in China
    (datetime(2026, 2, 28, 15, 59, tzinfo=timezone.utc), ("cn-2012", "")),
    (date(2030, 12, 31), ("cn-2026", "transition")),
    (date(2031, 1, 1), ("cn-2026", "final")),
])
def test_version_in_force_follows_the_china_date(when, expected):
    std = cn_standard_in_force(when)
    assert (std.key, std.phase) == expected


def test_version_in_force_takes_a_configured_effective_date():
    assert cn_standard_in_force(date(2026, 6, 1), effective=date(2027, 1, 1)).key == "cn-2012"


def test_version_in_force_refuses_a_naive_datetime():
    with pytest.raises(ValueError):
        cn_standard_in_force(datetime(2026, 3, 1))


def test_unknown_standard_name_is_a_typed_error():
    with pytest.raises(UnknownStandard) as e:
        get_standard("eu-caqi")
    assert "cn-2012" in e.value.known
