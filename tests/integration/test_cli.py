"""The `aqpipe` command as an operator runs it: a real process, real servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ingest.deadletter import DeadLetterStore
from tests.helpers import http_get, metric_value, wait_until

pytestmark = pytest.mark.integration
AQPIPE = str(Path(sys.executable).parent / "aqpipe")
CST = timezone(timedelta(hours=8))


def _run(args: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([AQPIPE, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60, **kw)


def _free_port() -> int:
    import servers

    return servers.free_port()


def test_ingest_process_serves_metrics_and_exits_zero_on_sigterm_after_flushing(env, publisher, influx, unique, tmp_path):
    port = _free_port()
    env = {**env, "AQPIPE_METRICS__PORT": str(port), "AQPIPE_INGEST__STATUS_INTERVAL_S": "0.5"}
    proc = subprocess.Popen([AQPIPE, "ingest"], env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _readyz(port) == 200, timeout=15)  # ready = SUBACK received, not just CONNACK
        assert "aqpipe_mqtt_connected 1.0" in _metrics(port)
        station = f"{unique}-cli"
        t0 = datetime.now(CST).replace(second=0, microsecond=0) - timedelta(hours=1)
        for i in range(30):
            publisher(f"aq/v1/ambient/{station}", {"station": station, "time": (t0 + timedelta(minutes=i)).isoformat(), "values": {"pm25": i}})
        publisher(f"aq/v1/ambient/{station}", b"not json")
        wait_until(lambda: metric_value(_metrics(port), "aqpipe_written_readings_total") >= 30)
        text = _metrics(port)
        assert metric_value(text, "aqpipe_deadletter_total", 'reason="not_json"') == 1
        assert metric_value(text, "aqpipe_received_messages_total", 'kind="ambient"') == 30
        assert "aqpipe_batch_write_seconds_bucket" in text
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "event=stopped received=31 written=30 deadlettered=1" in err
    assert influx.rows(f"SELECT count(pm25) FROM ambient WHERE station = '{station}'")[0]["count"] == 30


def _readyz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None  # not listening yet


def _metrics(port: int) -> str:
    try:
        return http_get(f"http://127.0.0.1:{port}/metrics")
    except OSError:
        return ""


def test_check_config_names_the_offending_key_and_its_environment_variable(tmp_path):
    f = tmp_path / "aqpipe.toml"
    f.write_text("[influx]\nbatch_size = 0\n")
    r = _run(["check-config", "--config", str(f)], {})
    assert r.returncode == 2
    assert "influx.batch_size" in r.stderr and "AQPIPE_INFLUX__BATCH_SIZE" in r.stderr


def test_check_config_with_ping_reaches_the_servers_and_masks_secrets(env):
    r = _run(["check-config", "--ping"], {**env, "AQPIPE_INFLUX__TOKEN": "t0psecret"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reachable" in r.stdout and "NOT" not in r.stdout
    assert "t0psecret" not in r.stdout + r.stderr


def test_deadletter_replay_after_a_config_fix_lands_the_data(env, ingest, publisher, config, influx, unique):
    ingest()
    station = f"{unique}-old"
    t = datetime.now(CST).replace(microsecond=0) - timedelta(days=500)
    publisher(f"aq/v1/ambient/{station}", {"station": station, "time": t.isoformat(), "values": {"pm25": 42.0}})
    publisher(f"aq/v1/ambient/{station}", b"\xff broken")
    store = DeadLetterStore(config.deadletter_dir)
    wait_until(lambda: len(store.pending()) == 2)

    listed = _run(["deadletter", "list"], env)
    assert listed.returncode == 0 and "too_old" in listed.stdout and "not_utf8" in listed.stdout
    assert "2 pending dead letters" in listed.stderr

    still = _run(["deadletter", "replay", "--reason", "too_old"], env)  # nothing fixed yet
    assert still.returncode == 1 and "still rejected: too_old" in still.stdout

    fixed = _run(["deadletter", "replay", "--reason", "too_old"], {**env, "AQPIPE_INGEST__RETENTION_DAYS": "1000"})
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    rows = influx.rows(f"SELECT pm25 FROM ambient WHERE station = '{station}'")
    assert [r["pm25"] for r in rows] == [42.0] and rows[0]["time"] == int(t.timestamp()) * 10**9
    assert [d.reason for d in store.pending()] == ["not_utf8"]  # the other letter is still there

    as_json = _run(["deadletter", "list", "--json"], env)
    assert [json.loads(line)["reason"] for line in as_json.stdout.splitlines()] == ["not_utf8"]


def test_help_explains_every_command():
    r = _run(["--help"], {})
    for command in ("ingest", "run", "aggregate", "alerts", "check-config", "deadletter", "simulate", "hj212", "hj212-gateway", "aqi"):
        assert command in r.stdout
    for sub in (["ingest"], ["aggregate"], ["deadletter", "replay"], ["simulate"], ["check-config"], ["hj212-gateway"]):
        assert _run([*sub, "--help"], {}).returncode == 0


def test_simulator_feed_is_ingested_with_some_dead_letters(env, ingest, config, influx):
    ingest()
    r = _run(["simulate", "--stations", "5", "--interval", "1", "--duration", "0.1", "--malformed", "0.5",
              "--backfill-hours", "1", "--seed", "3"], env)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: influx.rows("SELECT count(pm25) FROM ambient") and
               influx.rows("SELECT count(pm25) FROM ambient")[0]["count"] >= 5 * 60, timeout=20)
    outlets = {r["outlet"] for r in influx.rows("SELECT count(so2) FROM stack GROUP BY outlet")}
    assert outlets == {"91620503MA001-DA001", "91620503MA002-DA001", "91620503MA003-DA001"}  # the last via HJ 212
    hj212 = influx.rows("SELECT so2, so2_zs, so2_max FROM stack WHERE outlet = '91620503MA003-DA001'")[0]
    assert hj212["so2_zs"] is not None and hj212["so2_max"] >= hj212["so2"]
    wait_until(lambda: DeadLetterStore(config.deadletter_dir).pending())
