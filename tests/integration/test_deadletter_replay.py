"""A point InfluxDB refuses while the spool drains is kept as line protocol, and
`aqpipe deadletter replay` writes it as it is once the cause is fixed."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from ingest.deadletter import LINE_PROTOCOL, DeadLetterStore
from tests.helpers import service_starter, spooled_while_influxdb_down, wait_until

pytestmark = pytest.mark.integration

CST = timezone(timedelta(hours=8))


def _replay(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aqpipe.cli", "deadletter", "replay"],
                          env=os.environ | env, capture_output=True, text=True, timeout=60)


def test_a_point_refused_while_the_spool_drains_is_replayed_as_line_protocol(config, env, influx, publisher, unique):
    t = datetime.now(CST).replace(second=0, microsecond=0) - timedelta(minutes=3)
    t_ns = int(t.timestamp()) * 10**9
    good, bad = f"{unique}-good", f"{unique}-bad"
    # pm10 exists as a string field in this shard: a float pm10 is a field type conflict (HTTP 400),
    # found only when the spool drains (InfluxDB was down when the message came).
    req = urllib.request.Request(f"{config.influx.url}/write?db={config.influx.database}",
                                 data=f'ambient,station=other pm10="text" {t_ns}'.encode(), method="POST")
    urllib.request.urlopen(req).close()

    def publish() -> int:
        publisher(f"aq/v1/ambient/{good}", {"station": good, "time": t.isoformat(), "values": {"pm25": 10.0}})
        publisher(f"aq/v1/ambient/{bad}", {"station": bad, "time": t.isoformat(), "values": {"pm25": 20.0, "pm10": 5.5}})
        return 2

    spooled_while_influxdb_down(config, publish)
    from ingest.service import IngestService

    for start in service_starter(IngestService, config):  # one pass; the ingest is stopped after it
        service = start()
        wait_until(lambda: service.batcher.spool.empty())
        [letter] = wait_until(lambda: DeadLetterStore(config.deadletter_dir).pending())
        assert (letter.reason, letter.format, letter.topic) == ("write_rejected", LINE_PROTOCOL, f"aq/v1/ambient/{bad}")
        assert "field type conflict" in letter.detail
        assert letter.payload.decode() == letter.lines[0]
        assert letter.lines[0].startswith(f"ambient,station={bad} ") and "pm10=5.5" in letter.lines[0]
        assert influx.rows(f"SELECT pm25 FROM ambient WHERE station = '{good}'")[0]["pm25"] == 10.0

    still = _replay(env)  # the cause is not fixed yet: InfluxDB refuses it again, the letter stays
    assert still.returncode == 1, still.stdout + still.stderr
    assert f"{letter.id} not written" in still.stdout and "not_json" not in still.stdout
    assert [d.id for d in DeadLetterStore(config.deadletter_dir).pending()] == [letter.id]

    influx.execute("DROP MEASUREMENT ambient")  # the operator removes the conflicting string field
    done = _replay(env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{letter.id} ok: 1 readings" in done.stdout
    [row] = influx.rows(f"SELECT pm25, pm10 FROM ambient WHERE station = '{bad}'")
    assert (row["time"], row["pm25"], row["pm10"]) == (t_ns, 20.0, 5.5)
    assert DeadLetterStore(config.deadletter_dir).pending() == []
