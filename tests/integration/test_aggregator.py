"""The aggregator end to end: readings published through the real Mosquitto, stored by the
real ingest service in the real InfluxDB 1.x, rolled up by `AggregatorService`."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import REGISTRY

import servers
from aggregator.aqi import compute_aqi, convert_units, nowcast
from aggregator.tables import US_2024, get_standard
from aqpipe.config import Config, load_config
from aqpipe.influx import InfluxQL, make_writer
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
    a.recheck_s = 0.5  # should ingest lag past max_wait_s on a busy machine, the hour converges soon after
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
    """Wait until the aggregator has journalled every message and computed every due rollup
    from complete data (none written complete=false and waiting for readings to land)."""
    wait_until(lambda: service.journalled >= expect_received and not service.recompute_pending and service.due() == 0
               and service.state.incomplete_count() == 0, timeout=timeout, interval=0.1)


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
            assert row["complete"] is True, row
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
    # published after the write, delivered to our subscriber's thread later: wait for it
    wait_until(lambda: any(topic == f"aq/v1/derived/aqi/{names[0]}" and rec["period"] == "day"
                           for topic, rec in list(derived)))


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
    # The record is published after the write that the waits above saw, and reaches our
    # subscriber's thread later still: wait for it (asserting at once failed under load).
    wait_until(lambda: any(topic == f"aq/v1/derived/aqi/{station}" and rec.get("period") == "day"
                           and rec.get("standard") == "cn-2026" and rec["aqi"] == 116 for topic, rec in list(derived)))


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


def _waits() -> float:
    return REGISTRY.get_sample_value("aqpipe_aggregator_waits_total") or 0.0


def _line(station: str, t: int, values: dict) -> str:
    return f"ambient,station={station} " + ",".join(f"{k}={v!r}" for k, v in values.items()) + f" {t * 10**9}"


def test_an_hour_waits_for_every_field_seen_not_only_for_its_reading_times(aggregator, publisher, influx, config, unique):
    """The race behind a stored hour without `iaqi_so2`, made deterministic.

    InfluxDB 1.x makes a point's fields visible one by one while ingest writes it (each
    field is its own series in its cache), and HJ 212 multi-packet frames share one
    DataTime: a query can see every reading *time* of an hour and not yet its SO2. Here
    the test plays ingest and stores the readings without SO2 first: the aggregator must
    wait, not compute an hour without SO2 and call it done.
    """
    agg = aggregator()
    # Its start-up recompute reads InfluxDB with nothing seen on MQTT; let it pass first.
    wait_until(lambda: not agg.recompute_pending)
    start, station = _day0(2), f"{unique}-fields"
    hour_end = start + 10 * HOUR
    times = [hour_end - HOUR + 300 * k for k in range(1, 13)]
    writer = make_writer(config.influx)
    writer.write([_line(station, t, {p: v for p, v in CONSTANT.items() if p != "so2"}) for t in times])
    waits = _waits()
    publisher(f"aq/v1/ambient/{station}", {"station": station, "readings": [{"time": t, "values": CONSTANT} for t in times]})
    wait_until(lambda: agg.journalled >= 1 and _waits() >= waits + 2, timeout=20)  # it looked, and waited
    assert _rows(influx, "aqi_hourly", station, "cn-2026") == {}  # nothing computed without SO2
    writer.write([_line(station, t, {"so2": CONSTANT["so2"]}) for t in times])  # the rest of the points lands
    _settled(agg, 1)
    row = _rows(influx, "aqi_hourly", station, "cn-2026")[hour_end]
    assert row["iaqi_so2"] is not None and row["conc_so2"] == pytest.approx(10.0) and row["complete"] is True
    writer.close()


@pytest.fixture
def own_influxdb(tmp_path) -> Iterator[servers.Server]:
    """An InfluxDB of this test's own, free to stop and start."""
    ix = servers.Server("influxdb", servers.free_port(), tmp_path / "influxdb").start()
    yield ix
    ix.stop()


def test_an_hour_written_incomplete_during_an_influxdb_outage_converges_when_the_spool_drains(
        env, ingest, aggregator, publisher, own_influxdb, unique, derived):
    """The outside check: readings reach the aggregator while InfluxDB is down and ingest
    spools; past max_wait_s the hour is written complete=false from what InfluxDB holds;
    when the spool drains, it is recomputed from the full data, complete=true."""
    ix = own_influxdb
    cfg = load_config(None, {**env, "AQPIPE_INFLUX__URL": ix.url, "AQPIPE_INFLUX__RETRY_MAX_BACKOFF_S": "0.5"})
    a = cfg.aggregator
    a.client_id, a.settle_s, a.tick_s, a.lateness_hours = f"aqpipe-aggregator-{unique}", 0.2, 0.1, 24 * 10
    a.max_wait_s, a.recheck_s = 1.0, 0.2
    influx = InfluxQL.from_config(cfg.influx)
    influx.execute(f'CREATE DATABASE "{cfg.influx.database}"')
    first = ingest(cfg)
    agg = aggregator(cfg)
    station = f"{unique}-outage"
    hour_end = _day0(2) + 15 * HOUR
    values = {t: {p: _wave(3, i, t) for i, p in enumerate(POLLUTANTS)} for t in range(hour_end - HOUR + 300, hour_end + 1, 300)}
    times = sorted(values)
    before, during = times[:10], times[10:]  # 50 minutes stored, the last 10 during the outage

    def stored_hour() -> dict | None:
        return _rows(influx, "aqi_hourly", station, "cn-2026").get(hour_end)

    def expected(ts: list[int]) -> dict:
        return _expected({t: values[t] for t in ts}, hour_end - HOUR, 1)[0][("cn-2026", hour_end)]

    def pm25(ts: list[int]) -> float:
        return sum(values[t]["pm25"] for t in ts) / len(ts)

    publisher(f"aq/v1/ambient/{station}", {"station": station, "readings": [{"time": t, "values": values[t]} for t in before]})
    _settled(agg, 1)
    assert stored_hour()["complete"] is True

    ix.stop()
    publisher(f"aq/v1/ambient/{station}", {"station": station, "readings": [{"time": t, "values": values[t]} for t in during]})
    wait_until(lambda: first.batcher.spooled >= len(during) and agg.journalled >= 2, timeout=20)
    first.stop()  # the readings wait in ingest's spool, on disk
    ix.start()

    # Past max_wait_s the hour is computed from the 50 minutes InfluxDB holds, and says so.
    row = wait_until(lambda: (r := stored_hour()) is not None and r["complete"] is False and r, timeout=60)
    partial = expected(before)
    assert (row["aqi"], row["conc_pm25"]) == (partial["aqi"], pytest.approx(pm25(before)))
    assert agg.state.incomplete_count() > 0

    ingest(cfg)  # drains the spool into InfluxDB: no MQTT message tells the aggregator
    row = wait_until(lambda: (r := stored_hour()) is not None and r["complete"] is True and r, timeout=60)
    full = expected(times)
    assert (row["aqi"], row["category"], row["primary"]) == (full["aqi"], full["category"], ",".join(full["primary"]))
    assert row["conc_pm25"] == pytest.approx(pm25(times)) != pytest.approx(pm25(before))
    for name, iaqi in full["iaqi"].items():
        assert row[f"iaqi_{name}"] == iaqi
    wait_until(lambda: agg.state.incomplete_count() == 0, timeout=20)

    def published() -> list[bool]:
        return [r["complete"] for t, r in list(derived) if t == f"aq/v1/derived/aqi/{station}" and r["period"] == "hour"
                and r["standard"] == "cn-2026" and r["time"] == datetime.fromtimestamp(hour_end, CST).isoformat()]

    wait_until(lambda: published() and published()[-1] is True)  # QoS 1 keeps their order
    assert False in published()


def test_a_span_influxdb_answers_only_partially_is_fetched_in_pages(tmp_path, monkeypatch):
    """InfluxDB cuts an answer at its max-row-limit and says `"partial": true`: the reader
    raises rather than return a cut answer, and the aggregator asks again in halves."""
    from aggregator.source import fetch
    from aqpipe.influx import PartialResultError

    monkeypatch.setenv("INFLUXDB_HTTP_MAX_ROW_LIMIT", "50")  # influxd reads its config from the environment too
    ix = servers.Server("influxdb", servers.free_port(), tmp_path / "influxdb").start()
    monkeypatch.delenv("INFLUXDB_HTTP_MAX_ROW_LIMIT")
    try:
        q = InfluxQL(ix.url, "aq")
        q.execute('CREATE DATABASE "aq"')
        day0 = _day0(3)
        times = list(range(day0 + 300, day0 + 86400 + 1, 300))  # 288 readings: more than 50
        writer = make_writer(Config.model_validate({"influx": {"url": ix.url, "database": "aq"}}).influx)
        writer.write([_line("p1", t, {"pm25": float(k)}) for k, t in enumerate(times)])
        writer.close()
        with pytest.raises(PartialResultError):
            q.rows(f"SELECT pm25 FROM ambient WHERE time > {day0 * 10**9} AND time <= {(day0 + 86400) * 10**9}")
        series = fetch(q, "ambient", ["p1"], day0, day0 + 86400)
        assert (series.time_ns // 10**9).tolist() == times
        assert series.values["pm25"].tolist() == [float(k) for k in range(len(times))]
    finally:
        ix.stop()
