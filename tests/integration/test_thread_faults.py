"""A fault injected into each long-lived thread: /readyz turns 503 and names it, the metric
counts it, and after recovery (or a restart of the process) every reading is stored.

Real Mosquitto and InfluxDB; the fault is one of our own methods replaced, inside the test
process (or the `aqpipe ingest` process), by one that raises.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import servers
from aqpipe.config import Config
from aqpipe.ops_http import OpsServer
from ingest.deadletter import DeadLetterStore
from tests.helpers import metric_value, service_starter, spooled_while_influxdb_down, wait_until

pytestmark = pytest.mark.integration

CST = timezone(timedelta(hours=8))
INJECTED = "injected fault"


@pytest.fixture
def config(config: Config) -> Config:
    """Room for a few restarts: the tests clear the fault after the second error."""
    cfg = config.model_copy(deep=True)
    cfg.threads.max_restarts = 50
    return cfg


@pytest.fixture
def ingest(config: Config) -> Iterator[Callable[..., object]]:
    from ingest.service import IngestService

    yield from service_starter(IngestService, config)


class Ops:
    """The real ops endpoint (/metrics, /readyz) on a free port, with the services' checks."""

    def __init__(self) -> None:
        self.port = servers.free_port()
        self.server = OpsServer("127.0.0.1", self.port)

    def readyz(self) -> tuple[int, str]:
        return _get(f"http://127.0.0.1:{self.port}/readyz")

    def errors(self, thread: str) -> float:
        text = _get(f"http://127.0.0.1:{self.port}/metrics")[1]
        return metric_value(text, "aqpipe_thread_errors_total", f'thread="{thread}"')

    def deadletters(self, reason: str) -> float:
        text = _get(f"http://127.0.0.1:{self.port}/metrics")[1]
        return metric_value(text, "aqpipe_deadletter_total", f'reason="{reason}"')

    def not_ready_naming(self, thread: str) -> str:
        status, body = wait_until(lambda: (r := self.readyz())[0] == 503 and f"thread {thread} " in r[1] and r)
        return body

    def ready_again(self) -> None:
        wait_until(lambda: self.readyz() == (200, "ok\n"), timeout=15)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def ops() -> Iterator[Ops]:
    o = Ops()
    yield o
    o.server.close()


class Fault:
    """While set, the wrapped method raises RuntimeError(INJECTED) instead of running."""

    def __init__(self) -> None:
        self.on = threading.Event()
        self.on.set()
        self.raised = 0

    def wrap(self, method: Callable) -> Callable:
        def faulty(*args, **kwargs):
            if self.on.is_set():
                self.raised += 1
                raise RuntimeError(INJECTED)
            return method(*args, **kwargs)
        return faulty


def _minutes_ago(n: int) -> datetime:
    return datetime.now(CST).replace(second=0, microsecond=0) - timedelta(minutes=n)


def _reading(station: str, t: datetime, pm25: float) -> dict:
    return {"station": station, "time": t.isoformat(), "values": {"pm25": pm25}}


def _count(influx, station: str, measurement: str = "ambient") -> int:
    rows = influx.rows(f"SELECT count(pm25) FROM {measurement} WHERE station = '{station}'")
    return rows[0]["count"] if rows else 0


def test_a_writer_that_raises_turns_readyz_503_is_counted_and_its_batch_is_stored_after_recovery(
        ingest, publisher, influx, ops, unique):
    service = ingest()
    ops.server.add_check(service.ready)
    fault = Fault()
    service.batcher._flush = fault.wrap(service.batcher._flush)
    before = ops.errors("ingest-writer")
    station = f"{unique}-w"
    for i in range(10):
        publisher(f"aq/v1/ambient/{station}", _reading(station, _minutes_ago(i + 1), float(i)))

    body = ops.not_ready_naming("ingest-writer")
    assert f"thread ingest-writer failing: RuntimeError: {INJECTED}" in body
    wait_until(lambda: ops.errors("ingest-writer") >= before + 2)  # restarted, failed again
    assert service.inflight == 10  # nothing acknowledged while nothing is durable
    fault.on.clear()

    ops.ready_again()
    wait_until(lambda: _count(influx, station) == 10)
    wait_until(lambda: service.inflight == 0)
    assert ops.errors("ingest-writer") == before + fault.raised


def test_a_writer_stuck_in_a_write_is_named_stalled_and_its_batch_lands_once_it_returns(
        config, publisher, influx, ops, unique):
    from ingest.service import IngestService

    cfg = config.model_copy(deep=True)
    cfg.threads.stall_after_s = 1.0
    for start in service_starter(IngestService, cfg):  # one pass; the ingest is stopped after it
        service = start()
        ops.server.add_check(service.ready)
        release = threading.Event()
        real_write = service.writer.write

        def hung_write(lines):  # a write that hangs, as on a half-open connection
            release.wait(30)
            return real_write(lines)

        service.writer.write = hung_write
        station = f"{unique}-hung"
        publisher(f"aq/v1/ambient/{station}", _reading(station, _minutes_ago(1), 7.0))
        body = ops.not_ready_naming("ingest-writer")
        assert "thread ingest-writer stalled: no heartbeat for" in body and "(threads.stall_after_s 1)" in body
        release.set()
        wait_until(lambda: _count(influx, station) == 1)
        ops.ready_again()


def test_a_decoder_bug_in_on_message_dead_letters_the_message_acks_it_and_replay_stores_it(
        ingest, publisher, influx, ops, config, env, unique, monkeypatch):
    service = ingest()
    ops.server.add_check(service.ready)
    good, buggy = f"{unique}-good", f"{unique}-bug"
    real_decode = service.decoder.decode

    def decode(topic, payload, now_ns):
        if topic.endswith(buggy):
            raise KeyError(INJECTED)
        return real_decode(topic, payload, now_ns)

    monkeypatch.setattr(service.decoder, "decode", decode)
    before, before_letters = ops.errors("ingest-mqtt"), ops.deadletters("internal_error")
    publisher(f"aq/v1/ambient/{buggy}", _reading(buggy, _minutes_ago(2), 42.0))

    body = ops.not_ready_naming("ingest-mqtt")
    assert f"thread ingest-mqtt failing: KeyError: '{INJECTED}'" in body
    [letter] = wait_until(lambda: DeadLetterStore(config.deadletter_dir).pending())
    assert (letter.reason, letter.topic) == ("internal_error", f"aq/v1/ambient/{buggy}")
    assert letter.detail == f"KeyError: '{INJECTED}'"
    assert json.loads(letter.payload)["values"] == {"pm25": 42.0}  # kept as received: replayable
    assert ops.errors("ingest-mqtt") == before + 1
    assert ops.deadletters("internal_error") == before_letters + 1
    wait_until(lambda: service.inflight == 0)  # acknowledged once the letter was durable

    # The thread goes on: the next message is stored, and readiness is back with it.
    publisher(f"aq/v1/ambient/{good}", _reading(good, _minutes_ago(2), 1.0))
    wait_until(lambda: _count(influx, good) == 1)
    ops.ready_again()

    monkeypatch.setattr(service.decoder, "decode", real_decode)  # the bug fixed
    publisher(f"aq/v1/ambient/{good}", _reading(good, _minutes_ago(1), 2.0))
    replay = subprocess.run([sys.executable, "-m", "aqpipe.cli", "deadletter", "replay"],
                            env=os.environ | env, capture_output=True, text=True, timeout=60)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert f"{letter.id} ok: 1 readings" in replay.stdout
    assert influx.rows(f"SELECT pm25 FROM ambient WHERE station = '{buggy}'")[0]["pm25"] == 42.0
    assert _count(influx, good) == 2


def test_a_drainer_that_raises_turns_readyz_503_is_counted_and_the_spool_drains_after_recovery(
        config, publisher, influx, ops, unique):
    from ingest.service import IngestService

    station = f"{unique}-d"
    def publish() -> int:
        for i in range(6):
            publisher(f"aq/v1/ambient/{station}", _reading(station, _minutes_ago(i + 1), float(i)))
        return 6

    spooled_while_influxdb_down(config, publish)
    service = IngestService(config)
    fault = Fault()
    service.batcher.spool.peek = fault.wrap(service.batcher.spool.peek)
    ops.server.add_check(service.ready)
    before = ops.errors("ingest-drainer")
    service.start()
    try:
        body = ops.not_ready_naming("ingest-drainer")
        assert f"thread ingest-drainer failing: RuntimeError: {INJECTED}" in body
        wait_until(lambda: ops.errors("ingest-drainer") >= before + 2)
        assert _count(influx, station) == 0
        fault.on.clear()
        wait_until(lambda: _count(influx, station) == 6)
        wait_until(lambda: service.batcher.spool.empty())
        ops.ready_again()
        assert ops.errors("ingest-drainer") == before + fault.raised
    finally:
        service.stop()


# --- the aggregator ---------------------------------------------------------------------

@pytest.fixture
def aggregator(config: Config, unique: str) -> Iterator[Callable[..., object]]:
    from aggregator.service import AggregatorService

    cfg = config.model_copy(deep=True)
    cfg.aggregator.client_id = f"aqpipe-aggregator-{unique}"
    cfg.aggregator.settle_s = 0.2
    cfg.aggregator.tick_s = 0.1
    yield from service_starter(AggregatorService, cfg)


def _last_hour(station: str) -> tuple[int, list[dict]]:
    """The previous whole China hour: its end (epoch s) and 12 five-minute readings of pm25 75."""
    end = int(datetime.now(CST).replace(minute=0, second=0, microsecond=0).timestamp())
    return end, [{"time": t, "interval_s": 300, "values": {"pm25": 75.0}} for t in range(end - 3300, end + 1, 300)]


def _hourly(influx, station: str, end: int) -> list[dict]:
    return influx.rows(f"SELECT * FROM aqi_hourly WHERE station = '{station}' AND standard = 'cn-2026' "
                       f"AND time = {end}s")


def test_a_scheduler_step_that_raises_turns_readyz_503_is_counted_and_the_rollup_is_written_after_recovery(
        ingest, aggregator, publisher, influx, ops, unique):
    ingest()
    agg = aggregator()
    ops.server.add_check(agg.ready)
    before = ops.errors("aggregator-scheduler")
    fault = Fault()
    agg.run_once = fault.wrap(agg.run_once)
    station = f"{unique}-s"
    end, readings = _last_hour(station)
    publisher(f"aq/v1/ambient/{station}", {"station": station, "readings": readings})

    body = ops.not_ready_naming("aggregator-scheduler")
    assert f"thread aggregator-scheduler failing: RuntimeError: {INJECTED}" in body
    wait_until(lambda: ops.errors("aggregator-scheduler") >= before + 2)
    wait_until(lambda: agg.journalled == 1)  # the journal thread goes on meanwhile
    assert _hourly(influx, station, end) == []
    fault.on.clear()

    [row] = wait_until(lambda: _hourly(influx, station, end), timeout=20)
    assert row["conc_pm25"] == 75.0 and row["aqi"] is not None  # the mean of the hour's 12 readings
    ops.ready_again()
    assert ops.errors("aggregator-scheduler") == before + fault.raised


def test_a_bug_in_the_aggregators_on_message_acks_the_message_and_recomputes_from_influxdb(
        ingest, aggregator, publisher, influx, ops, unique, monkeypatch):
    ingest()
    agg = aggregator()
    ops.server.add_check(agg.ready)
    station = f"{unique}-m"
    end, readings = _last_hour(station)
    stored = threading.Event()

    def marks(*args):
        # The bug strikes once ingest has stored the readings, so the recompute can see them.
        stored.wait(20)
        raise KeyError(INJECTED)

    monkeypatch.setattr(agg, "_marks", marks)  # what the message pass calls to learn what it touches
    before = ops.errors("aggregator-mqtt")
    publisher(f"aq/v1/ambient/{station}", {"station": station, "readings": readings})
    wait_until(lambda: _count(influx, station) == 12)
    stored.set()

    body = ops.not_ready_naming("aggregator-mqtt")
    assert f"thread aggregator-mqtt failing: KeyError: '{INJECTED}'" in body
    assert ops.errors("aggregator-mqtt") == before + 1
    wait_until(lambda: agg.journalled == 1)  # acknowledged, not left in flight for ever
    [row] = wait_until(lambda: _hourly(influx, station, end), timeout=30)
    assert row["conc_pm25"] == 75.0 and row["aqi"] is not None


# --- a thread that cannot recover: the process exits non-zero, the restart stores it all ----

_WITH_BROKEN_WRITER = """
import sys
from ingest.batcher import Batcher
def broken(self, entries):
    raise RuntimeError("injected writer bug")
Batcher._flush = broken
from aqpipe.cli import main
sys.exit(main(["ingest"]))
"""


def _aqpipe_ingest(env: dict[str, str], log: Path, code: str | None = None) -> subprocess.Popen:
    argv = [sys.executable, "-c", code] if code else [sys.executable, "-m", "aqpipe.cli", "ingest"]
    with log.open("w") as f:  # a file, not a pipe: the process never blocks on a full pipe
        return subprocess.Popen(argv, env=os.environ | env, stdout=f, stderr=subprocess.STDOUT, text=True)


def test_a_writer_that_cannot_recover_exits_70_and_the_restarted_process_stores_every_message(
        env, publisher, influx, unique, tmp_path):
    port = servers.free_port()
    env = env | {"AQPIPE_METRICS__PORT": str(port), "AQPIPE_THREADS__MAX_RESTARTS": "1"}
    readyz = f"http://127.0.0.1:{port}/readyz"
    station = f"{unique}-x"

    log = tmp_path / "broken.log"
    broken = _aqpipe_ingest(env, log, _WITH_BROKEN_WRITER)
    try:
        wait_until(lambda: _up(readyz) == (200, "ok\n"), timeout=20)  # subscribed: nothing published can miss it
        for i in range(3):
            publisher(f"aq/v1/ambient/{station}", _reading(station, _minutes_ago(i + 1), float(i)))
        broken.wait(timeout=30)
    finally:
        if broken.poll() is None:
            broken.kill()
    err = log.read_text()
    assert broken.returncode == 70, err[-3000:]
    assert "event=thread_fatal thread=ingest-writer" in err
    assert "event=service_fatal service=ingest" in err
    assert _count(influx, station) == 0

    fixed = _aqpipe_ingest(env, tmp_path / "fixed.log")
    try:
        # The broker kept the session: the three unacknowledged messages come again.
        wait_until(lambda: _count(influx, station) == 3, timeout=20)
        wait_until(lambda: _up(readyz) == (200, "ok\n"))
    finally:
        fixed.send_signal(signal.SIGTERM)
        fixed.wait(timeout=60)
    assert fixed.returncode == 0, (tmp_path / "fixed.log").read_text()[-3000:]


def _up(url: str) -> tuple[int, str] | None:
    try:
        return _get(url)
    except OSError:
        return None  # not listening yet
