"""The v2 write path (/api/v2/write through influxdb-client), against VictoriaMetrics:
an independent server implementing that endpoint, read back through its export API."""

from __future__ import annotations

import json
import urllib.parse
from datetime import datetime, timedelta, timezone

import pytest

from aqpipe.config import load_config
from tests.helpers import http_get, wait_until

pytestmark = pytest.mark.integration


def _export(vm_url: str, match: str) -> list[dict]:
    http_get(f"{vm_url}/internal/force_flush")
    q = urllib.parse.urlencode({"match[]": match})
    return [json.loads(line) for line in http_get(f"{vm_url}/api/v1/export?{q}").splitlines() if line]


def test_v2_write_path_stores_readings_with_their_time(env, ingest, publisher, victoriametrics, unique):
    cfg = load_config(None, {**env, "AQPIPE_INFLUX__API": "v2", "AQPIPE_INFLUX__URL": victoriametrics.url,
                             "AQPIPE_INFLUX__BUCKET": "aq", "AQPIPE_INFLUX__ORG": "bureau", "AQPIPE_INFLUX__TOKEN": "unused"})
    ingest(cfg)
    station = f"{unique}-v2"
    t0 = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=10)
    readings = [{"time": int((t0 + timedelta(minutes=i)).timestamp()), "values": {"pm25": 10.0 + i, "o3": 50.0}} for i in range(5)]
    publisher(f"aq/v1/ambient/{station}", {"station": station, "readings": readings})
    series = wait_until(lambda: _export(victoriametrics.url, f'ambient_pm25{{station="{station}"}}'), timeout=15)
    assert series[0]["values"] == [10.0, 11.0, 12.0, 13.0, 14.0]
    assert series[0]["timestamps"] == [int((t0 + timedelta(minutes=i)).timestamp()) * 1000 for i in range(5)]
