"""Nothing lost, nothing doubled: faults injected into the real services mid-stream.

Each scenario publishes a numbered sequence, breaks something while it flows, and
then checks InfluxDB holds every number (and the dead-letter store each malformed
message). "Nothing doubled" is judged on writes counted, not on stored rows (InfluxDB
overwrites a point with the same time, so rows cannot show a double write): exactly one
write per reading where nothing can be redelivered, and no more rewrites than the
in-flight window can explain where a kill or a broker restart redelivers. Run alone with
`pytest -m faults`.
"""

from __future__ import annotations

import random
import time
import urllib.request
from pathlib import Path

import pytest

import servers
from aqpipe.influx import InfluxQL
from tests.faults import Feed, IngestProcess, audit, written_by_ingest
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]
WINDOW = 500  # mqtt.receive_maximum where a test redelivers: at most this many unacked per session


@pytest.fixture
def stack(tmp_path):
    """A Mosquitto and an InfluxDB of this test's own, free to stop and restart; any
    ingest process the test left running (it failed midway) is killed at teardown."""
    mq = servers.Server("mosquitto", servers.free_port(), tmp_path / "mosquitto").start()
    ix = servers.Server("influxdb", servers.free_port(), tmp_path / "influxdb").start()
    yield mq, ix
    IngestProcess.kill_leftovers()
    mq.stop()
    ix.stop()


def _env(mq, ix, data_dir: Path, **extra: str) -> dict[str, str]:
    return {"AQPIPE_MQTT__PORT": str(mq.port), "AQPIPE_INFLUX__URL": ix.url, "AQPIPE_INFLUX__DATABASE": "aq",
            "AQPIPE_DATA_DIR": str(data_dir), "AQPIPE_METRICS__PORT": "0", "AQPIPE_INFLUX__FLUSH_INTERVAL_S": "0.05",
            "AQPIPE_INFLUX__RETRY_MAX_BACKOFF_S": "1", "AQPIPE_MQTT__CLIENT_ID": "aqpipe-ingest", **extra}


def _subscriptions(log: Path) -> int:
    return log.read_text(errors="replace").count("event=mqtt_subscribed") if log.exists() else 0


def _subscribed(mq, client_id: str, env: dict[str, str], log: Path) -> IngestProcess:
    """Start ingest and wait for its SUBACK: from then on the broker keeps what the feed
    publishes for its session (after CONNACK alone, a message could find no subscription)."""
    before = _subscriptions(log)
    proc = IngestProcess(env, log).start()
    wait_until(lambda: _subscriptions(log) > before, timeout=15)
    return proc


def _settle(influx: InfluxQL, station: str, n: int, dirs: list[Path], expect_letters: int = 0, timeout: float = 60):
    def complete():
        a = audit(influx, station, n, dirs)
        return a if not a.missing and a.deadlettered >= expect_letters else None

    try:
        return wait_until(complete, timeout=timeout, interval=0.5)
    except AssertionError:
        return audit(influx, station, n, dirs)


def _check(result, name: str, malformed: int = 0, max_rewrites: int | None = 0) -> None:
    """`max_rewrites`: how many readings may legitimately be written twice (redelivered);
    None when InfluxDB was restarted (its counters with it: the caller checks ingest's count)."""
    print(result.line(name))
    assert result.missing == [], f"{len(result.missing)} readings missing, first {result.missing[:10]}"
    assert result.stored == result.published
    if max_rewrites is not None:
        assert result.written is not None and 0 <= result.rewrites <= max_rewrites, \
            f"{result.written} points written for {result.stored} readings (at most {max_rewrites} rewrites expected)"
    assert result.deadlettered == malformed


def test_influxdb_stopped_mid_stream_then_started_again_loses_and_doubles_nothing(stack, tmp_path):
    mq, ix = stack
    n = 6000
    log = tmp_path / "ingest.log"
    proc = _subscribed(mq, "aqpipe-ingest", _env(mq, ix, tmp_path / "data"), log)
    feed = Feed(mq.port, "seq-influx", n, rate=1500).start()
    wait_until(lambda: feed.published >= n // 4, timeout=30)
    ix.stop()
    wait_until(lambda: feed.published >= n * 3 // 4, timeout=30)  # all this goes to the spool
    ix.start()
    feed.wait(60)
    result = _settle(InfluxQL(ix.url, "aq"), "seq-influx", n, [tmp_path / "data"])
    assert proc.stop() == 0
    _check(result, "influxdb outage", max_rewrites=None)  # InfluxDB restarted: its write counters too
    assert written_by_ingest(log) == n  # each reading written once, directly or from the spool
    assert "action=spooling" in log.read_text() and "event=spool_drained" in log.read_text()


def test_mosquitto_restarted_mid_stream_loses_and_doubles_nothing(stack, tmp_path):
    mq, ix = stack
    n = 6000
    env = _env(mq, ix, tmp_path / "data", AQPIPE_MQTT__RECEIVE_MAXIMUM=str(WINDOW))
    proc = _subscribed(mq, "aqpipe-ingest", env, tmp_path / "ingest.log")
    feed = Feed(mq.port, "seq-broker", n, rate=1500).start()
    wait_until(lambda: feed.published >= n // 3, timeout=30)
    mq.restart()
    feed.wait(90)
    result = _settle(InfluxQL(ix.url, "aq"), "seq-broker", n, [tmp_path / "data"])
    assert proc.stop() == 0
    # Redelivered: what ingest had not acked (its window) and what the feed re-sent (its 200 in flight).
    _check(result, "broker restart", max_rewrites=WINDOW + 200)
    assert (tmp_path / "ingest.log").read_text().count("event=mqtt_connected") >= 2


def test_ingest_killed_repeatedly_mid_stream_loses_and_doubles_nothing(stack, tmp_path):
    mq, ix = stack
    n = 8000
    rng = random.Random(20261128)  # the same kill schedule every run
    env = _env(mq, ix, tmp_path / "data", AQPIPE_MQTT__RECEIVE_MAXIMUM=str(WINDOW))
    log = tmp_path / "ingest.log"
    proc = _subscribed(mq, "aqpipe-ingest", env, log)
    feed = Feed(mq.port, "seq-kill", n, rate=800, malformed_every=97).start()
    kills, mid_feed = 0, 0
    for _ in range(4):
        time.sleep(rng.uniform(0.2, 0.8))  # the fault's timing, not a wait for a condition
        mid_feed += 0 < feed.published < n
        assert proc.kill(), "the ingest process was not running when it was to be killed"
        kills += 1
        proc = _subscribed(mq, "aqpipe-ingest", env, log)
    feed.wait(90)
    result = _settle(InfluxQL(ix.url, "aq"), "seq-kill", n, [tmp_path / "data"], expect_letters=len(feed.malformed))
    assert proc.stop() == 0
    print(f"[sigkill] kills={kills} during the feed={mid_feed}")
    assert kills == 4 and mid_feed >= 1
    # Each kill may redeliver what that process had received and not acked: its window.
    _check(result, "sigkill x%d" % kills, malformed=len(feed.malformed), max_rewrites=kills * WINDOW)


def test_full_spool_engages_back_pressure_and_recovers_without_loss(stack, tmp_path):
    mq, ix = stack
    n = 4000
    env = _env(mq, ix, tmp_path / "data", AQPIPE_SPOOL__MAX_BYTES=str(60_000), AQPIPE_METRICS__PORT=str(servers.free_port()),
               AQPIPE_INFLUX__BATCH_SIZE="200")
    port = int(env["AQPIPE_METRICS__PORT"])
    log = tmp_path / "ingest.log"
    ix.stop()
    proc = _subscribed(mq, "aqpipe-ingest", env, log)
    feed = Feed(mq.port, "seq-spool", n, rate=2000).start()
    feed.wait(60)  # the broker takes everything: it queues what ingest does not ack
    wait_until(lambda: "event=spool_full" in log.read_text(), timeout=30)
    assert _readyz(port) == 503
    assert "aqpipe_spool_full 1.0" in _get(f"http://127.0.0.1:{port}/metrics")
    ix.start()
    result = _settle(InfluxQL(ix.url, "aq"), "seq-spool", n, [tmp_path / "data"], timeout=90)
    assert _readyz(port) == 200
    assert proc.stop() == 0
    _check(result, "spool full")


def test_two_instances_on_a_shared_subscription_write_each_reading_once_and_losing_one_loses_nothing(stack, tmp_path):
    mq, ix = stack
    n = 6000
    dirs = [tmp_path / "data-a", tmp_path / "data-b"]
    envs = [_env(mq, ix, d, AQPIPE_MQTT__SHARED_GROUP="aqpipe-ingest", AQPIPE_MQTT__CLIENT_ID=f"aqpipe-ingest-{i}",
                 AQPIPE_MQTT__RECEIVE_MAXIMUM=str(WINDOW)) for i, d in enumerate(dirs)]
    a = _subscribed(mq, "a", envs[0], tmp_path / "a.log")
    b = _subscribed(mq, "b", envs[1], tmp_path / "b.log")
    feed = Feed(mq.port, "seq-shared", n, rate=1500, malformed_every=101).start()
    wait_until(lambda: feed.published >= n // 2, timeout=30)
    assert b.kill()
    b = _subscribed(mq, "b", envs[1], tmp_path / "b.log")  # its session's unacked messages come back to it
    feed.wait(60)
    result = _settle(InfluxQL(ix.url, "aq"), "seq-shared", n, dirs, expect_letters=len(feed.malformed))
    assert a.stop() == 0 and b.stop() == 0
    _check(result, "shared subscription, one killed", malformed=len(feed.malformed), max_rewrites=WINDOW)
    both = [(tmp_path / f"{x}.log").read_text() for x in ("a", "b")]
    assert all("event=stopped received=" in t for t in both)


def test_malformed_messages_interleaved_all_reach_the_dead_letter_store_and_no_reading_is_lost(stack, tmp_path):
    mq, ix = stack
    n = 5000
    proc = _subscribed(mq, "aqpipe-ingest", _env(mq, ix, tmp_path / "data"), tmp_path / "ingest.log")
    feed = Feed(mq.port, "seq-malformed", n, rate=2500, malformed_every=10).start()
    feed.wait(60)
    result = _settle(InfluxQL(ix.url, "aq"), "seq-malformed", n, [tmp_path / "data"], expect_letters=len(feed.malformed))
    assert proc.stop() == 0
    _check(result, "malformed interleaved", malformed=len(feed.malformed))


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def _readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
