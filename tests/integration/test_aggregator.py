"""The aggregator end to end: readings published through the real Mosquitto, stored by the
real ingest service in the real InfluxDB 1.x, rolled up by `AggregatorService`."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from aggregator.aqi import compute_aqi, convert_units, nowcast
from aggregator.tables import US_2024, get_standard
from aqpipe.config import Config
from tests.helpers import service_starter, wait_until

pytestmark = pytest.mark.integration

CST = timezone(timedelta(hours=8))
HOUR = 3600
CN = get_standard("cn-2026")  # every test day is after 2026-03-01: HJ 633-2026, transition phase
POLLUTANTS = ("pm25", "pm10", "so2", "no2", "co", "o3")


def _day0(days_ago: int) -> int:
    """China midnight `days_ago` days before today's, as epoch seconds."""
    today = datetime.now(CST).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((today - timedelta(days=days_ago)).timestamp())


@pytest.fixture
def agg_config(config: Config, unique: str) -> Config:
    cfg = config.model_copy(deep=True)
    a = cfg.aggregator
    a.client_id = f"aqpipe-aggregator-{unique}"
    a.settle_s = 0.2
    a.tick_s = 0.1
    a.lateness_hours = 24 * 10  # the week-long replay starts 8 days ago
    a.max_wait_s = 30
    return cfg


@pytest.fixture
def aggregator(agg_config: Config) -> Iterator[Callable[..., object]]:
    from aggregator.service import AggregatorService

    yield from service_starter(AggregatorService, agg_config)


@pytest.fixture
def derived(mosquitto) -> Iterator[list]:
    """Records published on aq/v1/derived/#, collected as (topic, dict)."""
    got: list = []
    ready = threading.Event()
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_message = lambda c, u, m: got.append((m.topic, json.loads(m.payload)))
    client.on_subscribe = lambda *a: ready.set()
    client.connect("127.0.0.1", mosquitto.port)
    client.subscribe("aq/v1/derived/#", qos=1)
    client.loop_start()
    assert ready.wait(5)
    yield got
    client.disconnect()
    client.loop_stop()


def _settled(service, expect_received: int, timeout: float = 40.0) -> None:
    """Wait until the aggregator has journalled every message and computed every due rollup."""
    wait_until(lambda: service.journalled >= expect_received and not service.recompute_pending and service.due() == 0,
               timeout=timeout, interval=0.1)


# --- feeds -----------------------------------------------------------------------------

def _wave(station: int, p: int, t: int) -> float:
    """A deterministic, varied concentration (canonical units) for station, pollutant, time."""
    base = (40, 70, 12, 30, 0.8, 90)[p]
    hours = t / 3600
    v = base * (1 + 0.6 * math.sin(hours / 3.0 + station + p) + 0.25 * math.sin(hours * 1.7 + 2 * p))
    return round(max(v, 0.0), 3 if p == 4 else 1)


def _feed(stations: dict[str, Callable[[int], dict]], start: int, hours: int, step_s: int = 300,
          skip: Callable[[str, int], bool] = lambda s, t: False) -> list[tuple[str, dict]]:
    """One batch message per station and hour: readings every `step_s`, ending at :05 … :60."""
    msgs = []
    for station, values in stations.items():
        for h in range(hours):
            readings = []
            for t in range(start + h * HOUR + step_s, start + (h + 1) * HOUR + 1, step_s):
                if not skip(station, t):
                    readings.append({"time": t, "interval_s": step_s, "values": values(t)})
            msgs.append((f"aq/v1/ambient/{station}", {"station": station, "readings": readings}))
    return msgs


def _publish_all(publisher, msgs) -> None:
    for topic, payload in msgs:
        publisher(topic, payload)


def _rows(influx, measurement: str, station: str, standard: str) -> dict[int, dict]:
    rows = influx.rows(f"SELECT * FROM {measurement} WHERE station = '{station}' AND standard = '{standard}'")
    return {r["time"] // 10**9: r for r in rows}


# --- independent expectations ------------------------------------------------------------

def _hourly_means(readings: dict[int, dict], start: int, hours: int) -> dict[str, list[float]]:
    """Plain-Python hourly means of equally spaced readings, NaN under 45 minutes (5-min: 9 readings)."""
    out = {p: [] for p in POLLUTANTS}
    for h in range(hours):
        lo, hi = start + h * HOUR, start + (h + 1) * HOUR
        for p in POLLUTANTS:
            vals = [v[p] for t, v in readings.items() if lo < t <= hi and p in v]
            out[p].append(sum(vals) / len(vals) if len(vals) * 5 >= 45 else math.nan)
    return out


def _window_mean(series: list[float], end: int, length: int, min_valid: int) -> float:
    vals = [x for x in series[max(0, end - length + 1):end + 1] if not math.isnan(x)]
    return sum(vals) / len(vals) if len(vals) >= min_valid else math.nan


def _us(name: str, v: float) -> float:
    unit = "mg/m3" if name == "co" else "ug/m3"
    return float(convert_units(v, name, unit, US_2024.units[name]))


def _expected(readings: dict[int, dict], start: int, days: int):
    """(hourly, daily) expected records keyed by (standard, time) from independent averages."""
    n = days * 24
    h = _hourly_means(readings, start, n)
    o3_8h = [_window_mean(h["o3"], j, 8, 6) for j in range(n)]
    co_8h = [_window_mean(h["co"], j, 8, 6) for j in range(n)]
    so2_24h = [_window_mean(h["so2"], j, 24, 20) for j in range(n)]
    hourly, daily = {}, {}
    for j in range(n):
        t = start + (j + 1) * HOUR
        cn = {p: h[p][j] for p in POLLUTANTS} | {"o3_8h": o3_8h[j], "so2_24h": so2_24h[j]}
        hourly[("cn-2026", t)] = compute_aqi(CN, "hour", {k: [v] for k, v in cn.items()}).record(0)
        last12 = lambda p: [h[p][k] if k >= 0 else math.nan for k in range(j, j - 12, -1)]  # noqa: E731
        us = {"pm25": float(nowcast([last12("pm25")])[0]), "pm10": float(nowcast([last12("pm10")])[0]),
              "o3_8h": _us("o3_8h", o3_8h[j]), "o3": _us("o3", h["o3"][j]), "co": _us("co", co_8h[j]),
              "so2": _us("so2", h["so2"][j]), "no2": _us("no2", h["no2"][j]), "so2_24h": _us("so2_24h", so2_24h[j])}
        hourly[("us", t)] = compute_aqi(US_2024, "hour", {k: [v] for k, v in us.items()}).record(0)
    for d in range(days):
        hs = range(d * 24, d * 24 + 24)
        mean = {p: _window_mean([h[p][k] for k in hs], 23, 24, 20) for p in POLLUTANTS}
        max1 = lambda s: max((s[k] for k in hs if not math.isnan(s[k])), default=math.nan)  # noqa: E731
        max8 = lambda s: max((s[k] for k in hs[7:] if not math.isnan(s[k])), default=math.nan)  # noqa: E731
        cn = {p: mean[p] for p in ("so2", "no2", "co", "pm10", "pm25")} | {"o3": max1(h["o3"]), "o3_8h": max8(o3_8h)}
        t = start + d * 86400
        daily[("cn-2026", t)] = compute_aqi(CN, "day", {k: [v] for k, v in cn.items()}).record(0)
        us = {"pm25": mean["pm25"], "pm10": mean["pm10"], "o3_8h": _us("o3_8h", max8(o3_8h)),
              "o3": _us("o3", max1(h["o3"])), "co": _us("co", max8(co_8h)), "so2": _us("so2", max1(h["so2"])),
              "no2": _us("no2", max1(h["no2"])), "so2_24h": _us("so2_24h", mean["so2"])}
        daily[("us", t)] = compute_aqi(US_2024, "day", {k: [v] for k, v in us.items()}).record(0)
    return hourly, daily


def _assert_matches(influx, measurement: str, station: str, expected: dict) -> int:
    checked = 0
    for standard in ("cn-2026", "us"):
        stored = _rows(influx, measurement, station, standard)
        for (std, t), rec in expected.items():
            if std != standard:
                continue
            row = stored.get(t)
            if rec["aqi"] is None:
                assert row is None, f"{measurement} {station} {std} {t}: a number from invalid data"
                continue
            assert row is not None, f"{measurement} {station} {std} at {datetime.fromtimestamp(t, CST)} missing"
            assert row["aqi"] == rec["aqi"], (measurement, station, std, datetime.fromtimestamp(t, CST), row, rec)
            assert row["primary"] == ",".join(rec["primary"])
            assert row["category"] == rec["category"]
            for name, iaqi in rec["iaqi"].items():
                assert row[f"iaqi_{name}"] == iaqi, (name, row, rec)
            checked += 1
    return checked


CONSTANT = {"pm25": 75.0, "pm10": 100.0, "so2": 10.0, "no2": 20.0, "co": 1.0, "o3": 100.0}


# --- tests -------------------------------------------------------------------------------

@pytest.mark.parametrize("n_stations,days", [(4, 3), (20, 7)], ids=["4-stations-3-days", "20-stations-a-week"])
def test_replayed_multi_day_feed_yields_every_hourly_and_daily_aqi_as_the_standards_compute_it(
        ingest, aggregator, publisher, influx, unique, derived, n_stations, days):
    ingest()
    agg = aggregator()
    start = _day0(days + 1)
    names = [f"{unique}-s{k}" for k in range(n_stations)]
    values = {name: (lambda t, k=k: {p: _wave(k, i, t) for i, p in enumerate(POLLUTANTS)}) for k, name in enumerate(names)}
    msgs = _feed(values, start, days * 24)
    _publish_all(publisher, msgs)
    _settled(agg, len(msgs))

    checked = 0
    for k, name in enumerate(names):
        readings = {t: values[name](t) for t in range(start + 300, start + days * 86400 + 1, 300)}
        hourly, daily = _expected(readings, start, days)
        checked += _assert_matches(influx, "aqi_hourly", name, hourly)
        checked += _assert_matches(influx, "aqi_daily", name, daily)
        assert len(_rows(influx, "aqi_daily", name, "cn-2026")) == days
        # the 8-hour O3 average (6 of 8 hours) still has an index for 2 hours after the feed
        assert len(_rows(influx, "aqi_hourly", name, "cn-2026")) == days * 24 + 2
    assert checked == len(names) * days * 25 * 2
    assert any(topic == f"aq/v1/derived/aqi/{names[0]}" and rec["period"] == "day" for topic, rec in derived)


def test_constant_day_gives_the_hand_computed_aqi_to_the_integer(ingest, aggregator, publisher, influx, unique):
    ingest()
    agg = aggregator()
    start, station = _day0(3), f"{unique}-hand"
    msgs = _feed({station: lambda t: dict(CONSTANT)}, start, 24)
    _publish_all(publisher, msgs)
    _settled(agg, len(msgs))
    # HJ 633-2026: PM2.5 75 on 60..115 -> 100 + 50*15/55 = 113.6 -> 114 (rounded up);
    # PM10 100 on 50..120 -> 50 + 50*50/70 = 85.7 -> 86; O3 8-h 100 -> 50; SO2 24-h 10 -> 10.
    day = _rows(influx, "aqi_daily", station, "cn-2026")[start]
    assert (day["aqi"], day["category"], day["primary"]) == (114, 3, "pm25")
    assert (day["iaqi_pm25"], day["iaqi_pm10"], day["iaqi_o3_8h"], day["iaqi_so2"], day["iaqi_no2"], day["iaqi_co"]) == \
        (114, 86, 50, 10, 25, 25)
    assert day["conc_pm25"] == pytest.approx(75.0)
    # EPA 2024: PM2.5 75.0 on 55.5..125.4 -> 151 + 49/69.9*19.5 = 164.7 -> 165.
    us = _rows(influx, "aqi_daily", station, "us")[start]
    assert (us["aqi"], us["category"], us["primary"]) == (165, 4, "pm25")
    # Hourly (实时报): PM2.5 1-h 75 judged on the 24-h table -> 114; O3 1-h 100 -> 32; CO 1-h 1.0 -> 10.
    hour = _rows(influx, "aqi_hourly", station, "cn-2026")[start + 13 * HOUR]
    assert (hour["aqi"], hour["iaqi_o3"], hour["iaqi_co"], hour["iaqi_o3_8h"]) == (114, 32, 10, 50)


def test_an_hour_with_44_valid_minutes_gives_no_aqi_for_that_pollutant(ingest, aggregator, publisher, influx, unique):
    ingest()
    agg = aggregator()
    start, station = _day0(2), f"{unique}-valid"
    h44, h45 = start + 3 * HOUR, start + 4 * HOUR  # hour ends

    def values(t: int) -> dict:
        v = dict(CONSTANT)
        # pm25 missing in the first 16 minutes of hour 44 and flagged C in the first 15 of hour 45.
        if h44 - HOUR < t <= h44 - HOUR + 16 * 60:
            del v["pm25"]
        return v

    msgs = _feed({station: values}, start, 6, step_s=60)
    for _, payload in msgs:
        for r in payload["readings"]:
            if h45 - HOUR < r["time"] <= h45 - HOUR + 15 * 60:
                r["flags"] = {"pm25": "C"}
    _publish_all(publisher, msgs)
    _settled(agg, len(msgs))
    rows = _rows(influx, "aqi_hourly", station, "cn-2026")
    assert "iaqi_pm25" not in rows[h44] or rows[h44]["iaqi_pm25"] is None  # 44 minutes: no PM2.5 index
    assert rows[h44]["iaqi_pm10"] == 86 and rows[h44]["aqi"] == 86  # the hour still has its other pollutants
    assert rows[h45]["iaqi_pm25"] == 114 and rows[h45]["aqi"] == 114  # 45 valid minutes: counted


def test_late_reading_for_a_closed_hour_rewrites_that_hour_and_its_day(ingest, aggregator, publisher, influx, unique, derived):
    ingest()
    agg = aggregator()
    start, station = _day0(2), f"{unique}-late"
    late_t = start + 12 * HOUR + 30 * 60  # the :30 reading of the hour ending 13:00, held back
    msgs = _feed({station: lambda t: dict(CONSTANT)}, start, 24, skip=lambda s, t: t == late_t)
    _publish_all(publisher, msgs)
    _settled(agg, len(msgs))
    hour_end = start + 13 * HOUR
    assert _rows(influx, "aqi_hourly", station, "cn-2026")[hour_end]["aqi"] == 114
    assert _rows(influx, "aqi_daily", station, "cn-2026")[start]["aqi"] == 114
    written = agg.written

    # 11 readings of 75 and the late one of 555: hour mean 115 -> PM2.5 IAQI 150;
    # day mean 75 + 40/24 = 76.67 -> 77 -> 100 + 50*17/55 = 115.5 -> 116; US 76.6 -> 165.8 -> 166.
    publisher(f"aq/v1/ambient/{station}", {"station": station, "time": late_t, "values": {**CONSTANT, "pm25": 555.0}})
    wait_until(lambda: _rows(influx, "aqi_daily", station, "cn-2026")[start]["aqi"] == 116, timeout=20)
    _settled(agg, len(msgs) + 1)
    hour = _rows(influx, "aqi_hourly", station, "cn-2026")[hour_end]
    assert (hour["aqi"], hour["category"], hour["conc_pm25"]) == (150, 3, pytest.approx(115.0))
    assert _rows(influx, "aqi_daily", station, "us")[start]["aqi"] == 166
    assert _rows(influx, "aqi_hourly", station, "cn-2026")[hour_end - HOUR]["aqi"] == 114  # the hour before: untouched
    assert agg.written > written
    assert any(rec.get("period") == "day" and rec["aqi"] == 116 for _, rec in derived)


def test_redelivered_readings_change_no_stored_rollup(ingest, aggregator, publisher, influx, unique):
    ingest()
    agg = aggregator()
    start, station = _day0(2), f"{unique}-redo"
    msgs = _feed({station: lambda t: {p: _wave(1, i, t) for i, p in enumerate(POLLUTANTS)}}, start, 24)
    _publish_all(publisher, msgs)
    _settled(agg, len(msgs))
    before = {m: influx.rows(f"SELECT * FROM {m} WHERE station = '{station}'") for m in ("aqi_hourly", "aqi_daily")}
    _publish_all(publisher, msgs[5:9])  # the broker redelivers, or a device resends
    _settled(agg, len(msgs) + 4)
    after = {m: influx.rows(f"SELECT * FROM {m} WHERE station = '{station}'") for m in ("aqi_hourly", "aqi_daily")}
    assert after == before
    assert len(before["aqi_hourly"]) == (24 + 2) * 2 and len(before["aqi_daily"]) == 2


def test_restart_mid_feed_loses_no_hour(ingest, aggregator, publisher, influx, unique, agg_config):
    ingest()
    first = aggregator()
    start, station = _day0(3), f"{unique}-restart"
    msgs = _feed({station: lambda t: {p: _wave(2, i, t) for i, p in enumerate(POLLUTANTS)}}, start, 48)
    _publish_all(publisher, msgs[:20])
    _settled(first, 20)
    first.stop()
    _publish_all(publisher, msgs[20:])  # the broker queues them for the aggregator's session
    second = aggregator()
    _settled(second, len(msgs) - 20)
    readings = {t: {p: _wave(2, i, t) for i, p in enumerate(POLLUTANTS)} for t in range(start + 300, start + 2 * 86400 + 1, 300)}
    hourly, daily = _expected(readings, start, 2)
    assert _assert_matches(influx, "aqi_hourly", station, hourly) == 48 * 2
    assert _assert_matches(influx, "aqi_daily", station, daily) == 2 * 2


def test_restart_after_the_broker_lost_the_session_recomputes_from_influxdb(ingest, aggregator, publisher, influx, unique,
                                                                         agg_config):
    ingest()
    first = aggregator()
    start, station = _day0(3), f"{unique}-lost"
    msgs = _feed({station: lambda t: dict(CONSTANT)}, start, 24)
    _publish_all(publisher, msgs[:10])
    _settled(first, 10)
    first.stop()
    _publish_all(publisher, msgs[10:])  # ingest stores them; no session keeps them for the aggregator
    wait_until(lambda: influx.rows(f"SELECT count(pm25) FROM ambient WHERE station = '{station}'")[0]["count"] == 24 * 12)
    cfg = agg_config.model_copy(deep=True)
    cfg.aggregator.client_id += "-new"  # a brand-new session: the broker has nothing queued for it
    second = aggregator(cfg)
    _settled(second, 0)
    hours = _rows(influx, "aqi_hourly", station, "cn-2026")
    assert all(hours[start + k * HOUR]["aqi"] == 114 for k in range(1, 25))  # every hour of the day
    assert _rows(influx, "aqi_daily", station, "cn-2026")[start]["aqi"] == 114


def test_stack_hour_above_the_permit_limit_is_exceeded_with_the_o2_corrected_average(
        ingest, aggregator, publisher, influx, derived):
    ingest()
    agg = aggregator()
    outlet = "91620503MA001-DA001"  # deploy/config/outlets.toml: coal (reference O2 9 %), permit SO2 35 mg/m3
    hour_end = _day0(1) + 10 * HOUR
    readings = []
    for m in range(1, 61):
        r = {"time": hour_end - HOUR + m * 60, "values": {"so2": 40.0, "nox": 30.0, "o2": 12.0}}
        if m <= 10:
            r = {**r, "values": {"so2": 999.0, "nox": 30.0, "o2": 12.0}, "flags": {"so2": "C"}}  # calibration
        readings.append(r)
    publisher(f"aq/v1/stack/{outlet}", {"outlet": outlet, "readings": readings})
    _settled(agg, 1)
    rows = {r["pollutant"]: r for r in influx.rows(f"SELECT * FROM stack_hourly WHERE outlet = '{outlet}'")}
    so2 = rows["so2"]
    assert so2["time"] == hour_end * 10**9
    # 50 valid minutes of 40 mg/m3 at 12 % O2 -> 40 x (21 - 9) / (21 - 12) = 53.3 > 35 (permit).
    assert so2["avg"] == pytest.approx(40.0) and so2["avg_o2corr"] == pytest.approx(40.0 * 12 / 9)
    assert (so2["limit"], so2["limit_source"], so2["exceeded"], so2["valid_minutes"]) == (35.0, "permit", True, 50)
    nox = rows["nox"]  # 30 x 12/9 = 40 <= 50 (permit)
    assert (nox["exceeded"], nox["valid_minutes"], nox["avg_o2corr"]) == (False, 60, pytest.approx(40.0))
    wait_until(lambda: any(t == f"aq/v1/derived/stack/{outlet}" and r["pollutant"] == "so2" and r["exceeded"]
                           for t, r in derived))
