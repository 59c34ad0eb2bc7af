"""Validity rules of the averages (GB 3095-2012 Table 4, HJ 663 as read)."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.windows import (
    DEFAULT_RULES,
    ValidityRules,
    daily_max_1h,
    daily_max_8h,
    daily_mean,
    hourly_from_readings,
    o3_8h_moving,
)

NAN = np.nan


def _hour(valid: int, value: float = 10.0, flags: list | None = None, rules: ValidityRules | None = None):
    """One station, one hour ending at 3600: one-minute readings ending at minutes 1..`valid`."""
    t = np.arange(60, 60 * valid + 1, 60)
    kw = {"rules": rules} if rules else {}
    f = None if flags is None else np.asarray(flags[:valid], dtype=object)
    return hourly_from_readings(np.zeros(len(t), int), t, np.full(len(t), value), 60, 1, 3600, 1, flags=f, **kw)


def test_hour_with_45_valid_minutes_has_an_average():
    avg, minutes = _hour(45)
    assert avg[0, 0] == 10.0 and minutes[0, 0] == 45


def test_hour_with_44_valid_minutes_has_none():
    avg, minutes = _hour(44)
    assert np.isnan(avg[0, 0]) and minutes[0, 0] == 44


def test_flagged_minutes_do_not_count_unless_their_flag_is_valid():
    flags = ["C"] * 16 + ["N"] * 44
    avg, minutes = _hour(60, flags=flags)
    assert np.isnan(avg[0, 0]) and minutes[0, 0] == 44
    lenient = ValidityRules(valid_flags=frozenset({"N", "C"}))
    avg, minutes = _hour(60, flags=flags, rules=lenient)
    assert avg[0, 0] == 10.0 and minutes[0, 0] == 60


def test_missing_flag_reads_as_normal():
    avg, _ = _hour(60, value=3.0, flags=[None] * 30 + [""] * 30)
    assert avg[0, 0] == 3.0


def test_hourly_average_weighs_each_reading_by_its_interval():
    # a 40-minute value ending at :40 and a 20-minute one ending at :60
    avg, minutes = hourly_from_readings([0, 0], [2400, 3600], [10.0, 40.0], [40 * 60, 20 * 60], 1, 3600, 1)
    assert avg[0, 0] == pytest.approx(20.0) and minutes[0, 0] == 60


def test_stack_hours_are_judged_on_the_same_45_minutes():
    from aggregator import stack

    assert stack.MIN_VALID_MINUTES == DEFAULT_RULES.hour_min_minutes


def test_flat_readings_are_bucketed_into_the_hour_they_end_in():
    # hour 0 ends at t=3600: (0, 3600]; a reading ending exactly at 3600 belongs to it
    t = np.arange(60, 3601, 60)  # 60 one-minute readings in hour 0
    t2 = np.arange(3600 + 60, 3600 + 44 * 60 + 1, 60)  # 44 in hour 1
    station = np.zeros(len(t) + len(t2), int)
    value = np.concatenate([np.full(len(t), 5.0), np.full(len(t2), 7.0)])
    avg, minutes = hourly_from_readings(station, np.concatenate([t, t2]), value, 60, 1, 3600, 2)
    assert avg[0, 0] == 5.0 and minutes[0, 0] == 60
    assert np.isnan(avg[0, 1]) and minutes[0, 1] == 44


def test_day_with_20_valid_hours_has_a_24_hour_average():
    h = np.full((1, 24), 8.0)
    h[0, :4] = NAN
    assert daily_mean(h)[0, 0] == 8.0


def test_day_with_19_valid_hours_has_none():
    h = np.full((1, 24), 8.0)
    h[0, :5] = NAN
    assert np.isnan(daily_mean(h)[0, 0])


def test_eight_hour_average_needs_6_of_8_hours():
    h = np.full((1, 8), 100.0)
    h[0, :2] = NAN
    assert o3_8h_moving(h)[0, 7] == 100.0  # 6 valid
    h[0, 2] = NAN
    assert np.isnan(o3_8h_moving(h)[0, 7])  # 5 valid


def test_eight_hour_average_is_a_moving_mean_of_the_last_eight_hours():
    h = np.arange(1, 25, dtype=float)[None, :]
    m = o3_8h_moving(h)
    assert m[0, 7] == pytest.approx(np.mean(np.arange(1, 9)))
    assert m[0, 23] == pytest.approx(np.mean(np.arange(17, 25)))
    assert np.isnan(m[0, 4])  # only 5 hours behind it


def _eight_hour_day(valid_windows: int) -> np.ndarray:
    d = np.full((1, 24), NAN)
    d[0, 7:7 + valid_windows] = np.arange(valid_windows, dtype=float)
    return d


def test_daily_max_8h_needs_14_valid_8_hour_values():
    assert daily_max_8h(_eight_hour_day(14))[0, 0] == 13.0
    assert np.isnan(daily_max_8h(_eight_hour_day(13))[0, 0])


def test_daily_max_8h_uses_only_windows_ending_08_to_24():
    d = np.full((1, 24), 50.0)
    d[0, :7] = 999.0  # windows ending 01..07 reach into the day before
    assert daily_max_8h(d)[0, 0] == 50.0


def test_daily_max_1h_is_the_largest_valid_hour():
    h = np.full((2, 24), 30.0)
    h[0, 13] = 210.0
    h[1, :5] = NAN
    out = daily_max_1h(h)
    assert out[0, 0] == 210.0 and np.isnan(out[1, 0])


def test_windows_are_vectorised_over_stations_and_days():
    rng = np.random.default_rng(0)
    h = rng.uniform(0, 100, (50, 72))
    assert daily_mean(h).shape == (50, 3)
    assert daily_max_8h(o3_8h_moving(h)).shape == (50, 3)
    np.testing.assert_allclose(daily_mean(h)[7, 1], h[7, 24:48].mean())


def test_partial_days_are_refused():
    with pytest.raises(ValueError):
        daily_mean(np.zeros((1, 30)))
