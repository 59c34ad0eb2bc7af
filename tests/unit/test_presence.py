"""Per-field presence: what the aggregator waits for before computing an hour."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.keys import HOUR, InputKey
from aggregator.presence import count, mask_of, present, split
from aggregator.source import NS, Series
from aqpipe.influx import PartialResultError, rows_of

H = 1795190400 + HOUR  # an hour end


def _series(rows: list[dict]) -> Series:
    names = ("pm25", "pm10", "so2", "no2", "co", "o3")
    return Series(["s"], np.zeros(len(rows), np.int64), np.array([r["t"] for r in rows], np.int64),
                  {n: np.array([r.get(n, np.nan) for r in rows], float) for n in names},
                  {n: np.array([r.get(f"{n}_flag", "") for r in rows], object) for n in names})


def test_a_time_present_with_only_some_of_its_fields_leaves_the_others_missing():
    """InfluxDB 1.x shows a point's fields one by one while it writes: pm25 there, so2 not yet."""
    t = (H - HOUR) * NS + 300 * NS
    seen = {300 * NS: mask_of("ambient", frozenset({"pm25", "so2"}))}
    stored = present(_series([{"t": t, "pm25": 10.0}]), "ambient")
    got, missing = split(seen, stored[InputKey("ambient", "s", H)])
    assert got == {300 * NS: mask_of("ambient", frozenset({"pm25"}))}
    assert missing == {300 * NS: mask_of("ambient", frozenset({"so2"}))} and count(missing) == 1


def test_flags_are_fields_too_and_untracked_fields_ask_for_nothing():
    assert mask_of("ambient", frozenset({"temp", "rh"})) == 0
    t = (H - HOUR) * NS + 60 * NS
    stored = present(_series([{"t": t, "so2": 1.0, "so2_flag": "C"}]), "ambient")[InputKey("ambient", "s", H)]
    got, missing = split({60 * NS: mask_of("ambient", frozenset({"so2", "so2_flag"}))}, stored)
    assert not missing and got


def test_a_bare_time_from_an_older_journal_asks_only_for_the_time():
    got, missing = split({60: 0, 120: 0}, {60: mask_of("ambient", frozenset({"o3"}))})
    assert got == {60: 0} and missing == {120: 0} and count(missing) == 1


def test_a_partial_influxdb_answer_is_an_error_not_the_whole_answer():
    full = {"results": [{"series": [{"name": "ambient", "columns": ["time", "pm25"], "values": [[1, 2.0]]}]}]}
    assert rows_of(full) == [{"time": 1, "pm25": 2.0}]
    cut = {"results": [{"series": [{"name": "ambient", "columns": ["time"], "values": [[1]], "partial": True}]}]}
    with pytest.raises(PartialResultError):
        rows_of(cut)
    with pytest.raises(PartialResultError):
        rows_of({"results": [{"partial": True, "series": []}]})
