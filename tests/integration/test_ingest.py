"""Ingest end to end: real Mosquitto in, real InfluxDB 1.x out."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

from ingest import metrics
from ingest.deadletter import DeadLetterStore
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

CST = timezone(timedelta(hours=8))


def _now_minute() -> datetime:
    return datetime.now(CST).replace(second=0, microsecond=0)


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000


def test_single_reading_lands_with_its_own_timestamp_and_flags(ingest, publisher, influx, unique):
    ingest()
    t = _now_minute() - timedelta(minutes=5)
    station = f"{unique}-001"
    publisher(f"aq/v1/ambient/{station}", {
        "station": station, "time": t.isoformat(), "interval_s": 60,
        "values": {"pm25": 35.2, "pm10": 61, "so2": 8, "no2": 31, "co": 0.6, "o3": 80, "temp": 12.3},
        "flags": {"o3": "C", "pm25": "N"}})
    rows = wait_until(lambda: _whole(influx.rows(f"SELECT * FROM ambient WHERE station = '{station}'"),
                                     "pm25", "pm10", "so2", "no2", "co", "o3", "temp", "o3_flag"))
    assert len(rows) == 1
    row = rows[0]
    assert row["time"] == _ns(t)  # the reading's time, not arrival time
    assert row["pm25"] == 35.2 and row["pm10"] == 61.0 and row["co"] == 0.6
    assert row["o3_flag"] == "C"
    assert "pm25_flag" not in row  # N is the default and is not stored


def _whole(rows: list[dict], *fields: str) -> list[dict] | None:
    """`rows` once the first has every field: InfluxDB makes a point's fields visible one
    by one while it writes it, so a row can be there with some fields still missing."""
    return rows if rows and all(rows[0].get(f) is not None for f in fields) else None


def test_batch_payload_lands_every_reading_at_its_time(ingest, publisher, influx, unique):
    ingest()
    station = f"{unique}-002"
    t0 = _now_minute() - timedelta(hours=2)
    readings = [{"time": (t0 + timedelta(minutes=i)).isoformat(), "values": {"pm25": float(i)}} for i in range(50)]
    publisher(f"aq/v1/ambient/{station}", {"station": station, "readings": readings})
    rows = wait_until(lambda: (r := influx.rows(f"SELECT pm25 FROM ambient WHERE station = '{station}'")) and len(r) == 50 and r)
    assert [r["pm25"] for r in rows] == [float(i) for i in range(50)]
    assert rows[0]["time"] == _ns(t0) and rows[-1]["time"] == _ns(t0 + timedelta(minutes=49))


def test_stack_reading_keeps_plant_status_and_flags(ingest, publisher, influx, unique):
    ingest()
    outlet = f"{unique}-DA001"
    t = _now_minute() - timedelta(minutes=1)
    publisher(f"aq/v1/stack/{outlet}", {"outlet": outlet, "time": int(t.timestamp()), "status": "startup",
                                         "values": {"so2": 30.5, "nox": 45, "o2": 9.5, "flow": 100000},
                                         "flags": {"so2": "M"}})
    rows = wait_until(lambda: _whole(influx.rows(f"SELECT * FROM stack WHERE outlet = '{outlet}'"),
                                     "so2", "nox", "o2", "flow", "status", "so2_flag"))
    assert rows[0]["status"] == "startup" and rows[0]["so2_flag"] == "M" and rows[0]["so2"] == 30.5
    assert rows[0]["time"] == _ns(t)


def test_ppb_values_are_stored_in_canonical_units(ingest, publisher, influx, unique):
    ingest()
    station = f"{unique}-003"
    t = _now_minute()
    publisher(f"aq/v1/ambient/{station}", {"station": station, "time": t.isoformat(), "units": {"o3": "ppb", "co": "ppm"},
                                           "values": {"o3": 50, "co": 1.0}})
    row = wait_until(lambda: _whole(influx.rows(f"SELECT o3, co FROM ambient WHERE station = '{station}'"), "o3", "co"))[0]
    assert row["o3"] == pytest.approx(50 * 48.00 / 24.465)
    assert row["co"] == pytest.approx(28.01 / 24.465)


def test_redelivered_reading_is_written_once_per_delivery_and_stored_once(ingest, publisher, influx, unique):
    service = ingest()
    station = f"{unique}-004"
    msg = {"station": station, "time": _now_minute().isoformat(), "values": {"pm25": 12.0}}
    for _ in range(4):
        publisher(f"aq/v1/ambient/{station}", msg)
    # Rows cannot show a double write (same time: overwritten); the writes counted can.
    wait_until(lambda: service.batcher.written >= 4)
    assert (service.received, service.batcher.written) == (4, 4)
    assert influx.rows(f"SELECT count(pm25) FROM ambient WHERE station = '{station}'")[0]["count"] == 1


def test_unacknowledged_messages_are_redelivered_to_the_next_session_and_stored_once(config, ingest, publisher, influx, unique):
    """Without a spool, a service whose writes fail never acks; the broker redelivers to the next session."""
    down = config.model_copy(deep=True)
    down.influx.url = "http://127.0.0.1:9"  # nothing listens there: every write fails
    down.spool.enabled = False
    first = ingest(down)
    station = f"{unique}-005"
    t0 = _now_minute() - timedelta(minutes=30)
    for i in range(20):
        publisher(f"aq/v1/ambient/{station}", {"station": station, "time": (t0 + timedelta(minutes=i)).isoformat(), "values": {"pm25": i}})
    wait_until(lambda: first.received >= 20)
    first.stop(flush_timeout_s=0.5)
    assert first.batcher.written == 0

    second = ingest()  # same client id: resumes the session, the broker redelivers the 20
    wait_until(lambda: second.batcher.written >= 20)
    assert second.batcher.written == 20  # each redelivered once, nothing written twice
    rows = influx.rows(f"SELECT pm25 FROM ambient WHERE station = '{station}'")
    assert sorted(r["pm25"] for r in rows) == [float(i) for i in range(20)]


def test_published_with_mosquitto_pub_is_ingested(ingest, mosquitto, influx, unique):
    ingest()
    station = f"{unique}-006"
    payload = json.dumps({"station": station, "time": _now_minute().isoformat(), "values": {"no2": 41}})
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-q", "1", "-V", "mqttv5",
                    "-t", f"aq/v1/ambient/{station}", "-m", payload], check=True, timeout=10)
    row = wait_until(lambda: influx.rows(f"SELECT no2 FROM ambient WHERE station = '{station}'"))[0]
    assert row["no2"] == 41.0


def _reading(station: str, **over) -> dict:
    return {"station": station, "time": _now_minute().isoformat(), "values": {"pm25": 10.0}, **over}


# One case per rejection reason of DESIGN.md (HJ 212 reasons: tests/integration/test_hj212.py).
REJECTIONS = {
    "not_utf8": lambda s: b'{"station": "' + s.encode() + b'", "x": "\xff\xfe"}',
    "not_json": lambda s: b'{"station": ',
    "schema": lambda s: {"station": s, "time": _now_minute().isoformat(), "values": "pm25=3"},
    "unknown_pollutant": lambda s: _reading(s, values={"pm2.5": 3}),
    "not_finite": lambda s: f'{{"station": "{s}", "time": "{_now_minute().isoformat()}", "values": {{"pm25": NaN}}}}'.encode(),
    "negative": lambda s: _reading(s, values={"pm25": -50}),
    "future": lambda s: _reading(s, time=(_now_minute() + timedelta(hours=2)).isoformat()),
    "too_old": lambda s: _reading(s, time=(_now_minute() - timedelta(days=500)).isoformat()),
    "no_timezone": lambda s: _reading(s, time="2026-11-24T14:05:00"),
    "identity_mismatch": lambda s: _reading("someone-else"),
    "oversize": lambda s: _reading(s, values={"pm25": 1.0}, pad="x" * 300_000),
    "unknown_unit": lambda s: _reading(s, units={"pm25": "grains"}),
}


@pytest.mark.parametrize("reason", sorted(REJECTIONS))
def test_each_rejection_reason_is_dead_lettered_and_counted(reason, ingest, publisher, config, unique):
    service = ingest()
    station = f"{unique}-rej"
    payload = REJECTIONS[reason](station)
    before = metrics.DEADLETTERED.labels(reason)._value.get()
    publisher(f"aq/v1/ambient/{station}", payload)
    store = DeadLetterStore(config.deadletter_dir)
    letters = wait_until(lambda: store.pending())
    assert [d.reason for d in letters] == [reason]
    letter = letters[0]
    assert letter.topic == f"aq/v1/ambient/{station}"
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    assert letter.payload == raw  # the raw payload, byte for byte (base64 on disk when not UTF-8)
    assert letter.detail
    wait_until(lambda: service.inflight == 0)  # the message was acknowledged (after it was counted)
    assert metrics.DEADLETTERED.labels(reason)._value.get() == before + 1


def test_a_point_influxdb_refuses_is_dead_lettered_and_the_rest_of_the_batch_lands(ingest, publisher, influx, config, unique):
    station = f"{unique}-conflict"
    # pm10 already exists as a string field in this shard: a float pm10 is a field type conflict (HTTP 400).
    t = _now_minute()
    influx.execute  # database exists (fixture)
    import urllib.request
    req = urllib.request.Request(f"{config.influx.url}/write?db={config.influx.database}",
                                 data=f'ambient,station=other pm10="text" {_ns(t)}'.encode(), method="POST")
    urllib.request.urlopen(req).close()
    ingest()
    good = {"station": station, "readings": [{"time": (t - timedelta(minutes=i)).isoformat(), "values": {"pm25": float(i)}} for i in range(1, 6)]}
    bad = {"station": station, "time": t.isoformat(), "values": {"pm25": 99.0, "pm10": 5.0}}
    publisher(f"aq/v1/ambient/{station}", good)
    publisher(f"aq/v1/ambient/{station}", bad)
    letters = wait_until(lambda: DeadLetterStore(config.deadletter_dir).pending())
    assert [d.reason for d in letters] == ["write_rejected"]
    assert letters[0].lines and "pm10=5.0" in letters[0].lines[0]
    rows = wait_until(lambda: (r := influx.rows(f"SELECT pm25 FROM ambient WHERE station = '{station}'")) and len(r) == 5 and r)
    assert sorted(r["pm25"] for r in rows) == [1.0, 2.0, 3.0, 4.0, 5.0]
