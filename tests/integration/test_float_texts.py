"""Floats written as line protocol read back as the same float64, on both write paths.

aqpipe writes a float as msgspec's JSON encoder does (`1e-7`, `1e16`, `0.00001`: the
shortest digits that round-trip, JSON's exponent style; aqpipe/reading.py), not as
Python's repr (`1e-07`, `1e+16`, `1e-05`). These tests send values that take each
notation, through MQTT and ingest, and compare what the database stores with the
floats the decoder made: every path that formats points (a batch formatted at once, a
point with flags formatted alone, a unit-converted reading formatted from its `Reading`).
"""

from __future__ import annotations

import json
import time
import urllib.parse
from datetime import datetime, timedelta, timezone

import pytest

from aqpipe.config import load_config
from aqpipe.decode import MessageDecoder
from aqpipe.pollutants import AMBIENT_FIELDS
from aqpipe.registry import Registry
from aqpipe.validate import Validator
from tests.helpers import http_get, wait_until

pytestmark = pytest.mark.integration

# Each notation a float can take: plain with and without a fraction, small and large
# exponents, the largest float, the smallest normal and subnormal ones, 17 digits.
EDGES = [1e-07, 1e16, 1e-05, 1.2345678901234568e17, 1.7976931348623157e308, 123456789.0, 2.5e-08, 0.1,
         1e22, 2.2250738585072014e-308, 5e-324, 35.2, 0.0, 61.0, 0.30000000000000004, 1e-300]
NAMES = sorted(AMBIENT_FIELDS)  # 16 value names, each takes every edge value in turn


def _payloads(station: str, t0: datetime, edges: list[float], rotate: bool = True) -> list[dict]:
    """A batch of readings, one with a flag, the values of each rotated through `edges`
    (each name takes each value in turn); with `rotate`, also a single reading with units
    to convert (17-digit results). Without, each name keeps one value."""
    assert len(edges) >= len(NAMES)
    readings = [{"time": int((t0 + timedelta(minutes=k)).timestamp()),
                 "values": {name: edges[(i + k * rotate) % len(edges)] for i, name in enumerate(NAMES)}}
                for k in range(len(edges))]
    readings[3]["flags"] = {"pm25": "D"}
    converted = {"station": station, "time": int((t0 - timedelta(minutes=1)).timestamp()),
                 "values": {"so2": 1e-05, "no2": 1.2345678901234568e17, "pm25": 1e16}, "units": {"so2": "ppb", "no2": "ppm"}}
    return [{"station": station, "readings": readings}] + ([converted] if rotate else [])


def _expected(topic: str, payloads: list[dict]) -> dict[int, dict[str, float]]:
    """time (ns) -> values, as the decoder makes them: what ingest means to store."""
    decoder = MessageDecoder("aq/v1", Registry.empty(), Validator(), 256 * 1024)
    now = time.time_ns()
    return {r.time_ns: r.values for p in payloads for r in decoder.decode(topic, json.dumps(p).encode(), now)}


def test_influxdb_stores_the_floats_ingest_decoded(ingest, publisher, influx, unique):
    ingest()
    station = f"{unique}-floats"
    topic = f"aq/v1/ambient/{station}"
    payloads = _payloads(station, datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(hours=1), EDGES)
    for p in payloads:
        publisher(topic, p)
    expected = _expected(topic, payloads)
    rows = wait_until(lambda: (r := influx.rows(f"SELECT * FROM ambient WHERE station = '{station}'"))
                      and len(r) == len(expected) and all(x.get("pm25") is not None for x in r) and r)
    for row in rows:
        want = expected[row["time"]]
        # InfluxDB's JSON writes the shortest digits (1e20 as an integer): float() reads
        # them back to the float they came from. -0.0 == 0.0.
        got = {name: float(row[name]) for name in want}
        assert got == want, row["time"]
    assert [r.get("pm25_flag") for r in rows].count("D") == 1


def _export(vm_url: str, match: str) -> list[dict]:
    http_get(f"{vm_url}/internal/force_flush")
    q = urllib.parse.urlencode({"match[]": match})
    return [json.loads(line) for line in http_get(f"{vm_url}/api/v1/export?{q}").splitlines() if line]


# VictoriaMetrics keeps values as decimals (int64 mantissas with a power of ten shared
# by a block of one series): it rounds what that cannot hold (the largest float,
# subnormals, 17 significant digits, and small values in a series beside huge ones).
# So here each series keeps one value, and the values are ones it holds exactly.
VM_EDGES = [1e-07, 1e16, 1e-05, 123456789.0, 2.5e-08, 0.1, 1e22, 35.2, 0.0, 61.0, 1e-300, 12.5, 1e-12, 0.0045, 0.001, 7.0]


def test_victoriametrics_stores_the_floats_ingest_decoded(env, ingest, publisher, victoriametrics, unique):
    cfg = load_config(None, {**env, "AQPIPE_INFLUX__API": "v2", "AQPIPE_INFLUX__URL": victoriametrics.url,
                             "AQPIPE_INFLUX__BUCKET": "aq", "AQPIPE_INFLUX__ORG": "bureau", "AQPIPE_INFLUX__TOKEN": "unused"})
    ingest(cfg)
    station = f"{unique}-vmfloats"
    topic = f"aq/v1/ambient/{station}"
    payloads = _payloads(station, datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(hours=1), VM_EDGES,
                         rotate=False)
    for p in payloads:
        publisher(topic, p)
    expected = _expected(topic, payloads)
    for name in NAMES:
        want = {t // 1_000_000: v[name] for t, v in expected.items() if name in v}
        series = wait_until(lambda: (s := _export(victoriametrics.url, f'ambient_{name}{{station="{station}"}}'))
                            and len(s[0]["values"]) == len(want) and s, timeout=15)
        assert {t: float(v) for t, v in zip(series[0]["timestamps"], series[0]["values"])} == want, name
