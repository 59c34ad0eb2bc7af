"""AQI over arrays: agencies' examples, special rules, exact rounding, NowCast, properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from aggregator.aqi import AqiInputError, category_of, compute_aqi, convert_units, iaqi, nowcast
from aggregator.tables import CN_2012, CN_2026_TRANSITION, US_2024

NAN = np.nan


# --- EPA TAD worked examples (Technical Assistance Document, "calculating the AQI") ------
@pytest.mark.parametrize(("table", "conc", "expected"), [
    ("o3_8h", 0.08753333, 154),  # TAD: truncate to 0.087, (200−151)/(0.105−0.086)·(0.087−0.086)+151 = 153.6
    ("o3_8h", 0.078, 126),  # 101 + 49/0.014 · 0.007 = 125.5 exactly: half rounds up
    ("pm25_24h", 35.9, 102),  # 101 + 49/19.9 · 0.4 = 101.98
    ("co_8h", 8.4, 90),  # 51 + 49/4.9 · 3.9 = 90 exactly
])
def test_us_index_reproduces_the_tad_examples(table, conc, expected):
    assert iaqi(US_2024.tables[table], [conc])[0] == expected


def test_us_concentration_is_truncated_not_rounded():
    t = US_2024.tables["pm25_24h"]
    assert iaqi(t, [9.09])[0] == 50  # 9.0
    assert iaqi(t, [35.49])[0] == 100  # 35.4


def test_us_index_rounds_half_up_exactly():
    # NO2: 51 + 49/46 · (77 − 54) = 75.5 exactly → 76 (a float path gives 75.49999 or 75.5000001)
    assert iaqi(US_2024.tables["no2_1h"], [77])[0] == 76


# --- HJ 633: rounding up, exactly ------------------------------------------------------
def test_cn_iaqi_at_a_breakpoint_plus_float_noise_is_not_carried_up():
    t = CN_2012.tables["pm25_24h"]
    assert iaqi(t, [75.0000001, 74.9999999, 75.0])[0] == 100
    assert list(iaqi(t, [75.0000001, 74.9999999, 75.0])) == [100, 100, 100]


def test_cn_iaqi_is_carried_up_not_rounded():
    t = CN_2012.tables["pm25_24h"]
    assert iaqi(t, [36])[0] == 52  # 51.25 → 52
    assert iaqi(CN_2012.tables["co_24h"], [2.1])[0] == 53  # 50 + 25·0.1 = 52.5 → 53


def test_cn_concentration_is_rounded_to_the_published_precision_first():
    pm = CN_2012.tables["pm25_24h"]
    assert iaqi(pm, [35.4])[0] == 50  # 35
    assert iaqi(pm, [35.6])[0] == 52  # 36
    co = CN_2012.tables["co_1h"]
    assert iaqi(co, [5.04])[0] == 50  # 5.0 mg/m³
    assert iaqi(co, [5.06])[0] == 51  # 5.1 → 50 + 10·0.1 = 51


def test_cn_2026_pm25_at_75_is_light_pollution():
    # HJ 633-2026: 100 + (75 − 60)/(115 − 60)·50 = 113.6 → 114
    assert iaqi(CN_2026_TRANSITION.tables["pm25_24h"], [75])[0] == 114
    assert iaqi(CN_2026_TRANSITION.tables["pm10_24h"], [150])[0] == 112


def test_missing_concentration_gives_no_index():
    out = iaqi(CN_2012.tables["pm25_24h"], [NAN, np.inf, -5.0, 10.0])
    assert np.isnan(out[:3]).all() and out[3] == 15


def test_sensor_noise_just_below_zero_reads_as_zero():
    assert iaqi(CN_2012.tables["pm25_24h"], [-0.4])[0] == 0


# --- special rules -----------------------------------------------------------------------
def test_cn_2012_hourly_so2_above_800_is_indexed_from_its_24_hour_average():
    r = compute_aqi(CN_2012, "hour", {"so2": [801, 801, 800], "so2_24h": [200, NAN, 200]})
    # 24-h table: 100 + 50·(200−150)/325 = 107.7 → 108; without a 24-h value: none
    assert r.iaqi["so2"][0] == 108
    assert np.isnan(r.iaqi["so2"][1])
    assert r.iaqi["so2"][2] == 200  # 800 itself is on the 1-h table


def test_cn_2026_hourly_so2_above_800_counts_as_200():
    r = compute_aqi(CN_2026_TRANSITION, "hour", {"so2": [801, 5000], "so2_24h": [10, 10]})
    assert list(r.iaqi["so2"]) == [200, 200]


def test_cn_2012_eight_hour_ozone_above_800_is_indexed_from_the_one_hour_value():
    r = compute_aqi(CN_2012, "day", {"o3_8h": [801], "o3": [900]})
    assert r.iaqi["o3_8h"][0] == 350  # 1-h table: 300 + 100·100/200
    assert r.primary_names(0) == ["o3"]


def test_cn_2026_eight_hour_ozone_above_800_counts_as_300():
    r = compute_aqi(CN_2026_TRANSITION, "day", {"o3_8h": [801, 2000]})
    assert list(r.iaqi["o3_8h"]) == [300, 300]


def test_us_eight_hour_ozone_above_0_200_is_indexed_from_the_one_hour_value():
    r = compute_aqi(US_2024, "hour", {"o3_8h": [0.201, 0.201], "o3": [0.405, NAN]})
    assert r.iaqi["o3_8h"][0] == 301
    assert np.isnan(r.iaqi["o3_8h"][1])


def test_us_ozone_reports_the_larger_of_8_hour_and_1_hour():
    r = compute_aqi(US_2024, "hour", {"o3_8h": [0.078], "o3": [0.165]})
    assert r.aqi[0] == 151 and r.primary_names(0) == ["o3"]


def test_us_so2_above_304_ppb_is_decided_by_the_24_hour_average():
    r = compute_aqi(US_2024, "hour", {"so2": [305, 305, 305, 304], "so2_24h": [605, 100, NAN, 605]})
    assert r.iaqi["so2"][0] == 301
    assert r.iaqi["so2"][1] == 200  # 24-h below its table: at least 200 (the 1-h exceeded 304)
    assert np.isnan(r.iaqi["so2"][2])
    assert r.iaqi["so2"][3] == 200  # 304 is still on the 1-h table


# --- AQI, primary, exceeding ------------------------------------------------------------
def test_aqi_is_the_largest_index_and_ties_give_several_primary_pollutants():
    r = compute_aqi(CN_2026_TRANSITION, "day", {"pm25": [60, 30], "pm10": [120, 40], "so2": [10, 5]})
    assert r.aqi[0] == 100
    assert r.primary_names(0) == ["pm25", "pm10"]
    assert r.aqi[1] == 43 and r.primary_names(1) == []  # AQI ≤ 50: no primary pollutant


def test_exceeding_pollutants_are_named_only_under_2012():
    v = {"pm25": [80], "pm10": [160], "no2": [50]}
    old = compute_aqi(CN_2012, "day", v)
    assert old.exceeding_names(0) == ["pm25", "pm10"]
    assert compute_aqi(CN_2026_TRANSITION, "day", v).exceeding_names(0) == []


def test_cn_hourly_judges_pm_on_the_24_hour_table_and_gases_on_1_hour_tables():
    r = compute_aqi(CN_2012, "hour", {"pm25": [75], "no2": [200], "co": [10]})
    assert r.iaqi["pm25"][0] == 100 and r.iaqi["no2"][0] == 100 and r.iaqi["co"][0] == 100
    d = compute_aqi(CN_2012, "day", {"no2": [200], "co": [10]})
    assert d.iaqi["no2"][0] > 100 and d.iaqi["co"][0] > 100


def test_nothing_measured_gives_no_aqi_and_category_zero():
    r = compute_aqi(CN_2012, "day", {"pm25": [NAN]})
    assert np.isnan(r.aqi[0]) and r.category[0] == 0 and r.record(0)["aqi"] is None


@pytest.mark.parametrize(("aqi", "level"), [(0, 1), (50, 1), (51, 2), (100, 2), (101, 3), (150, 3),
                                            (151, 4), (200, 4), (201, 5), (300, 5), (301, 6), (500, 6), (700, 6)])
def test_category_bands(aqi, level):
    assert category_of(CN_2012, [aqi])[0] == level


def test_category_names_and_colours_follow_each_standard():
    assert CN_2012.categories[4].name == "重度污染" and CN_2012.categories[4].rgb == (153, 0, 76)
    assert US_2024.categories[4].name == "Very Unhealthy" and US_2024.categories[4].rgb == (143, 63, 151)


def test_unknown_input_or_period_is_a_typed_error():
    with pytest.raises(AqiInputError):
        compute_aqi(CN_2012, "day", {"nh3": [1]})
    with pytest.raises(AqiInputError):
        compute_aqi(CN_2012, "week", {"pm25": [1]})


# --- NowCast -------------------------------------------------------------------------------
def test_nowcast_of_a_single_pulse_weights_it_by_half_powers():
    # EPA/Wikipedia example: 71 µg/m³ in the newest hour, zero before: w = 0.5,
    # NowCast = 71 / Σ 0.5^i (i = 0..11) = 35.5087 → 35.5 → AQI 101
    c = nowcast([[71] + [0] * 11])[0]
    assert c == pytest.approx(71 / sum(0.5**i for i in range(12)))
    assert iaqi(US_2024.tables["pm25_24h"], [c])[0] == 101


def test_nowcast_of_steady_air_is_the_twelve_hour_average():
    assert nowcast([[10.0] * 12])[0] == pytest.approx(10.0)


def test_nowcast_keeps_a_missing_hour_in_the_exponent():
    hours = [20, NAN, 10] + [10] * 9
    w = 0.5  # 10 / 20
    num = 20 + sum(10 * w**i for i in range(2, 12))
    den = 1 + sum(w**i for i in range(2, 12))
    assert nowcast([hours])[0] == pytest.approx(num / den)


def test_nowcast_needs_two_of_the_three_newest_hours():
    out = nowcast([[NAN, NAN, 5] + [5] * 9, [NAN, 5, 5] + [NAN] * 9, [5, NAN, NAN] + [5] * 9])
    assert np.isnan(out[0]) and out[1] == pytest.approx(5) and np.isnan(out[2])


def test_nowcast_weight_is_bounded_below_by_a_half():
    hours = [100, 1] + [1] * 10  # cmin/cmax = 0.01 → w = 0.5
    expected = (100 + sum(0.5**i for i in range(1, 12))) / sum(0.5**i for i in range(12))
    assert nowcast([hours])[0] == pytest.approx(expected)


def test_nowcast_is_vectorised_over_stations():
    rng = np.random.default_rng(1)
    h = rng.uniform(0, 200, (500, 12))
    out = nowcast(h)
    for k in (0, 17, 499):
        assert out[k] == pytest.approx(nowcast(h[k:k + 1])[0])


# --- units ---------------------------------------------------------------------------------
def test_units_convert_at_25_degrees_and_one_atmosphere():
    assert convert_units(1000, "o3", "ppb", "ug/m3") == pytest.approx(1000 * 48.00 / 24.465)
    assert convert_units(1, "co", "ppm", "mg/m3") == pytest.approx(28.01 / 24.465)
    assert convert_units(64.07, "so2_24h", "ug/m3", "ppb") == pytest.approx(24.465)
    assert convert_units(2.0, "co", "mg/m3", "ug/m3") == pytest.approx(2000)
    assert convert_units(0.07, "o3_8h", "ppm", "ppb") == pytest.approx(70)
    with pytest.raises(AqiInputError):
        convert_units(1, "pm25", "ppb", "ug/m3")
    with pytest.raises(AqiInputError):
        convert_units(1, "o3", "furlongs", "ppb")


# --- properties ---------------------------------------------------------------------------
_TABLES = [(s, n) for s in (CN_2012, CN_2026_TRANSITION, US_2024) for n in s.tables]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(_TABLES), arrays(np.float64, 50, elements=st.floats(0, 5000, allow_nan=False)))
def test_index_is_monotone_in_concentration(table_ref, conc):
    std, name = table_ref
    t = std.tables[name]
    c = np.sort(conc)
    out = iaqi(t, c)
    ok = ~np.isnan(out)
    assert (np.diff(out[ok]) >= 0).all()


_CONC = st.one_of(st.just(np.nan), st.floats(0, 1000, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([CN_2012, CN_2026_TRANSITION]), st.sampled_from(["hour", "day"]),
       st.lists(st.tuples(_CONC, _CONC, _CONC, _CONC, st.one_of(st.just(np.nan), st.floats(0, 100)), _CONC, _CONC),
                min_size=1, max_size=30))
def test_aqi_is_the_maximum_index_and_primary_pollutants_reach_it(std, period, rows):
    names = ["pm25", "pm10", "so2", "no2", "co", "o3", "o3_8h"]
    values = {n: np.array([r[k] for r in rows]) for k, n in enumerate(names)}
    r = compute_aqi(std, period, values)
    stacked = np.vstack(list(r.iaqi.values()))
    for i in range(len(rows)):
        col = stacked[:, i][~np.isnan(stacked[:, i])]
        if col.size == 0:
            assert np.isnan(r.aqi[i])
            continue
        assert r.aqi[i] == col.max()
        if r.aqi[i] > 50:
            assert r.primary_names(i)
            for p in r.primary_names(i):
                keys = [k for k in r.iaqi if k == p or (p == "o3" and k == "o3_8h")]
                assert any(r.iaqi[k][i] == r.aqi[i] for k in keys)
        else:
            assert r.primary_names(i) == []


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["pm25_24h", "pm10_24h", "o3_8h", "co_8h", "no2_1h", "so2_1h"]),
       st.integers(0, 600_000))
def test_us_index_equals_the_exact_rational_formula(name, units):
    from fractions import Fraction
    import math
    t = US_2024.tables[name]
    if units > t.top:
        units = t.top
    conc = units / t.scale
    expected = None
    for lo, hi, ilo, ihi in t.segments:
        if lo <= units <= hi:
            x = Fraction(ihi - ilo, hi - lo) * (units - lo) + ilo
            expected = math.floor(x + Fraction(1, 2))
    got = iaqi(t, [conc])[0]
    assert got == expected
