"""Stack hourly averages: validity, O2 correction, limit lookup and exceedance."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator.stack import Limit, gb13271_table, hourly_record, limit_for, stack_hourly
from aqpipe.registry import Outlet

NAN = np.nan


def _hour(value: float = 100.0, o2: float = 9.0) -> tuple[np.ndarray, np.ndarray]:
    return np.full((1, 1, 60), value), np.full((1, 1, 60), o2)


def test_o2_correction_to_reference_oxygen():
    v, o2 = _hour(100.0, 12.0)
    r = stack_hourly(v, o2, ref_o2=9.0, limit=NAN)
    # 100 × (21 − 9) / (21 − 12) = 133.33
    assert r.avg[0, 0] == 100.0
    assert r.avg_o2corr[0, 0] == pytest.approx(100 * 12 / 9)


def test_o2_correction_on_hourly_averages_differs_from_per_minute_when_o2_varies():
    v = np.full((1, 1, 60), 100.0)
    o2 = np.full((1, 1, 60), 9.0)
    o2[0, 0, :30] = 19.0
    hourly = stack_hourly(v, o2, 9.0, NAN).avg_o2corr[0, 0]
    minute = stack_hourly(v, o2, 9.0, NAN, o2_mode="minute").avg_o2corr[0, 0]
    assert hourly == pytest.approx(100 * 12 / (21 - 14))
    assert minute == pytest.approx((100 * 12 / 2 + 100 * 12 / 12) / 2)


def test_hour_with_45_valid_minutes_is_judged_and_44_is_not():
    v, o2 = _hour(500.0)
    flags = np.full((1, 1, 60), "N")
    flags[0, 0, :15] = "C"
    r = stack_hourly(v, o2, 9.0, 300.0, flags=flags)
    assert r.valid_minutes[0, 0] == 45 and r.judged[0, 0] and r.exceeded[0, 0]
    flags[0, 0, 15] = "M"
    r = stack_hourly(v, o2, 9.0, 300.0, flags=flags)
    assert r.valid_minutes[0, 0] == 44 and np.isnan(r.avg[0, 0]) and not r.judged[0, 0] and not r.exceeded[0, 0]


@pytest.mark.parametrize("flag", ["C", "M", "D", "B", "K", "Zz"])  # K, Zz: letters not in aqpipe.dataflags
def test_calibration_maintenance_fault_and_comms_minutes_are_not_valid(flag):
    v, o2 = _hour()
    flags = np.full((1, 1, 60), flag)
    r = stack_hourly(v, o2, 9.0, 10.0, flags=flags)
    assert r.valid_minutes[0, 0] == 0 and not r.exceeded[0, 0]


@pytest.mark.parametrize("flag", ["", "N", "S", "T"])
def test_normal_manually_set_and_over_range_minutes_count(flag):
    v, o2 = _hour()
    r = stack_hourly(v, o2, 9.0, 10.0, flags=np.full((1, 1, 60), flag))
    assert r.valid_minutes[0, 0] == 60


def test_stopped_and_startup_periods_are_not_judged():
    v, o2 = _hour(900.0, 20.5)
    status = np.full((1, 1, 60), "startup")
    r = stack_hourly(v, o2, 9.0, 300.0, status=status)
    assert r.not_running_minutes[0, 0] == 60 and not r.judged[0, 0] and not r.exceeded[0, 0]
    flags = np.full((1, 1, 60), "F")
    r = stack_hourly(v, o2, 9.0, 300.0, flags=flags)
    assert r.not_running_minutes[0, 0] == 60 and not r.exceeded[0, 0]


def test_minute_at_ambient_oxygen_is_dropped_from_the_converted_average():
    v, o2 = _hour(100.0, 9.0)
    o2[0, 0, 0] = 21.0
    r = stack_hourly(v, o2, 9.0, NAN, o2_mode="minute")
    assert r.avg_o2corr[0, 0] == pytest.approx(100.0)


def test_exceedance_is_judged_on_the_converted_average():
    v, o2 = _hour(250.0, 12.0)  # converted 333 > 300, measured 250 < 300
    r = stack_hourly(v, o2, 9.0, 300.0)
    assert r.exceeded[0, 0]


def test_stack_hourly_is_vectorised_over_outlets_and_hours():
    rng = np.random.default_rng(2)
    v = rng.uniform(0, 100, (20, 24, 60))
    o2 = rng.uniform(3, 12, (20, 24, 60))
    r = stack_hourly(v, o2, np.full((20, 1), 9.0), np.full((20, 1), 50.0))
    assert r.avg.shape == (20, 24)
    np.testing.assert_allclose(r.avg[3, 5], v[3, 5].mean())


# --- limits --------------------------------------------------------------------------------
def test_permit_limit_overrides_the_national_table():
    o = Outlet(id="o1", fuel="coal", boiler="new", limits={"so2": 35})
    assert limit_for(o, "so2") == Limit(35, "permit")
    assert limit_for(o, "nox") == Limit(300, "GB13271-2014 table 2")


@pytest.mark.parametrize(("boiler", "fuel", "zone", "pollutant", "expected"), [
    ("in_service", "coal", False, "pm", Limit(80, "GB13271-2014 table 1")),
    ("in_service", "oil", False, "so2", Limit(300, "GB13271-2014 table 1")),
    ("in_service", "gas", False, "nox", Limit(400, "GB13271-2014 table 1")),
    ("new", "coal", False, "so2", Limit(300, "GB13271-2014 table 2")),
    ("new", "oil", False, "nox", Limit(250, "GB13271-2014 table 2")),
    ("new", "gas", False, "pm", Limit(20, "GB13271-2014 table 2")),
    ("special", "coal", False, "nox", Limit(200, "GB13271-2014 table 3")),
    ("new", "gas", True, "nox", Limit(150, "GB13271-2014 table 3")),
    ("in_service", "oil", True, "so2", Limit(100, "GB13271-2014 table 3")),
])
def test_national_limit_by_boiler_fuel_and_zone(boiler, fuel, zone, pollutant, expected):
    assert limit_for(Outlet(id="o", boiler=boiler, fuel=fuel, special_zone=zone), pollutant) == expected


def test_south_west_provinces_allow_550_so2_for_coal_boilers_in_service_only():
    sw = dict(id="o", fuel="coal", province_sw=True)
    assert limit_for(Outlet(boiler="in_service", **sw), "so2") == Limit(550, "GB13271-2014 table 1")
    assert limit_for(Outlet(boiler="new", **sw), "so2").value == 300
    assert limit_for(Outlet(boiler="in_service", id="o", fuel="gas", province_sw=True), "so2").value == 100


def test_mercury_limit_is_in_the_payload_unit_of_micrograms():
    assert limit_for(Outlet(id="o", fuel="coal"), "hg") == Limit(50.0, "GB13271-2014 table 2")
    assert limit_for(Outlet(id="o", fuel="gas"), "hg") == Limit(None, None)


def test_pollutant_without_a_limit_is_not_judged():
    o = Outlet(id="o", fuel="coal")
    lim = limit_for(o, "co")
    assert lim == Limit(None, None)
    v, o2 = _hour(1000.0)
    r = stack_hourly(v, o2, o.ref_o2, NAN)
    rec = hourly_record(r, 0, 0, lim)
    assert rec["exceeded"] is None and rec["limit"] is None and rec["valid_minutes"] == 60


def test_special_zone_takes_table_3():
    assert gb13271_table(Outlet(id="o", boiler="in_service", special_zone=True)) == 3


def test_hourly_record_has_the_contract_fields():
    o = Outlet(id="o", fuel="gas", boiler="new")
    lim = limit_for(o, "nox")
    v, o2 = _hour(250.0, 3.5)
    rec = hourly_record(stack_hourly(v, o2, o.ref_o2, lim.value), 0, 0, lim)
    assert rec == {"avg": 250.0, "avg_o2corr": 250.0, "limit": 200, "limit_source": "GB13271-2014 table 2",
                   "exceeded": True, "valid_minutes": 60}
