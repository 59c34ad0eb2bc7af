"""The batcher's own logic, with an in-process writer (the real-server path is in tests/integration)."""

from __future__ import annotations

import threading

from ingest.batcher import Batcher, Entry
from ingest.deadletter import DeadLetterStore
from aqpipe.influx import WriteError


class RefusingWriter:
    """Refuses any batch containing a line with `bad` (like InfluxDB's 400), else records it."""

    def __init__(self, fail_first: int = 0) -> None:
        self.stored: list[str] = []
        self.calls = 0
        self.fail_first = fail_first

    def write(self, lines: list[str]) -> None:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise WriteError(503, "overloaded", retry_after=0.01)
        if any("bad" in l for l in lines):
            raise WriteError(400, "partial write: field type conflict")
        self.stored.extend(lines)

    def close(self) -> None:
        pass


def _run(writer, entries, tmp_path, **options):
    """Put `entries`, wait until every one is acknowledged, stop: (acks in order, batcher)."""
    acked: list = []
    done = threading.Event()

    def on_durable(tokens):
        acked.extend(tokens)
        if len(acked) >= len(entries):
            done.set()

    kw = {"batch_size": 100, "flush_interval_s": 0.01, "max_backoff_s": 0.05, **options}
    b = Batcher(writer, DeadLetterStore(tmp_path), on_durable, **kw)
    b.start()
    for e in entries:
        b.put(e)
    assert done.wait(10)
    b.stop()
    return acked, b


def test_refused_points_are_isolated_and_only_they_are_dead_lettered(tmp_path):
    entries = [Entry("t/a", b"a", [f"m,s=a v={i} {i}" for i in range(20)], token=1),
               Entry("t/b", b"b", ["m,s=b v=1 1", "m,s=b bad=1 2"], token=2),
               Entry("t/c", b"c", [f"m,s=c v={i} {i}" for i in range(13)], token=3)]
    writer = RefusingWriter()
    acked, b = _run(writer, entries, tmp_path)
    assert sorted(acked) == [1, 2, 3]
    assert len(writer.stored) == 34 and "m,s=b bad=1 2" not in writer.stored
    letters = DeadLetterStore(tmp_path).pending()
    assert [(d.topic, d.reason, d.lines) for d in letters] == [("t/b", "write_rejected", ["m,s=b bad=1 2"])]
    assert b.written == 34


def test_retryable_errors_are_retried_until_the_batch_lands(tmp_path):
    writer = RefusingWriter(fail_first=3)
    acked, b = _run(writer, [Entry("t/a", b"a", ["m v=1 1"], token=7)], tmp_path)
    assert acked == [7] and writer.stored == ["m v=1 1"] and b.failed_attempts == 3
    assert DeadLetterStore(tmp_path).pending() == []


def test_stopping_while_influx_is_down_leaves_the_batch_unacknowledged(tmp_path):
    class Down:
        def write(self, lines):
            raise WriteError(None, "connection refused")

        def close(self):
            pass

    acked = []
    b = Batcher(Down(), DeadLetterStore(tmp_path), acked.extend, flush_interval_s=0.01, max_backoff_s=0.05)
    b.start()
    b.put(Entry("t/a", b"a", ["m v=1 1"], token=1))
    b.stop(timeout=0.2)
    assert acked == []


class ConcurrentWriter(RefusingWriter):
    """Records each request (and the thread that made it); the first `together` requests
    wait for one another, which only requests made at once can pass."""

    def __init__(self, together: int = 2, fail_calls: frozenset[int] = frozenset()) -> None:
        super().__init__()
        self.fail_calls = fail_calls  # which requests (1, 2, ...) answer 503
        self.requests: list[list[str]] = []
        self._barrier = threading.Barrier(together, timeout=5)
        self._lock = threading.Lock()

    def write(self, lines: list[str]) -> None:
        with self._lock:
            self.calls += 1
            calls = self.calls
            self.requests.append(list(lines))
        if calls <= self._barrier.parties:
            self._barrier.wait()  # BrokenBarrierError (a test failure) unless the parts go at once
        if calls in self.fail_calls:
            raise WriteError(503, "overloaded", retry_after=0.01)
        if any("bad" in line for line in lines):
            raise WriteError(400, "partial write: field type conflict")
        with self._lock:
            self.stored.extend(lines)


def _series_entries(stations: int, per: int, bad: str | None = None) -> list[Entry]:
    entries = []
    for k in range(per):
        for s in range(stations):
            line = f"m,s=s{s} v={k} {k}" if f"s{s}" != bad or k != 1 else f"m,s=s{s} bad=1 {k}"
            entries.append(Entry(f"t/s{s}", b"x", [line], token=len(entries)))
    return entries


def _run_parted(writer, entries, tmp_path):
    """`_run` with the entries in one batch, written as 2 concurrent requests."""
    return _run(writer, entries, tmp_path, batch_size=len(entries), flush_interval_s=1.0, concurrency=2, min_part_lines=2)


def test_a_large_batch_goes_as_concurrent_requests_each_series_whole_and_in_order(tmp_path):
    entries = _series_entries(stations=8, per=5)  # one batch: 40 messages of 8 series, interleaved
    writer = ConcurrentWriter()
    acked, b = _run_parted(writer, entries, tmp_path)
    assert acked == list(range(40))  # acknowledged in the order received
    assert len(writer.requests) == 2 and sorted(writer.stored) == sorted(l for e in entries for l in e.lines)
    for s in range(8):  # a series in one request, its points in the order received
        holding = [r for r in writer.requests if any(line.startswith(f"m,s=s{s} ") for line in r)]
        assert len(holding) == 1
        assert [line for line in holding[0] if line.startswith(f"m,s=s{s} ")] == [f"m,s=s{s} v={k} {k}" for k in range(5)]
    assert b.written == 40


def test_a_refused_point_in_one_part_is_the_only_one_dead_lettered(tmp_path):
    entries = _series_entries(stations=8, per=5, bad="s3")
    writer = ConcurrentWriter()
    acked, b = _run_parted(writer, entries, tmp_path)
    assert sorted(acked) == list(range(40))
    assert len(writer.stored) == 39 and "m,s=s3 bad=1 1" not in writer.stored
    letters = DeadLetterStore(tmp_path).pending()
    assert [(d.topic, d.reason, d.lines) for d in letters] == [("t/s3", "write_rejected", ["m,s=s3 bad=1 1"])]


def test_a_part_that_fails_has_the_whole_batch_written_again_and_acknowledged_once(tmp_path):
    entries = _series_entries(stations=8, per=5)
    writer = ConcurrentWriter(fail_calls=frozenset({2}))  # one of the first two requests fails
    acked, b = _run_parted(writer, entries, tmp_path)
    assert acked == list(range(40))  # once each
    assert len(writer.requests) == 4 and b.failed_attempts == 1  # both parts written again
    assert sorted(writer.requests[2] + writer.requests[3]) == sorted(l for e in entries for l in e.lines)


def test_a_small_batch_goes_as_one_request(tmp_path):
    writer = RefusingWriter()
    acked: list = []
    b = Batcher(writer, DeadLetterStore(tmp_path), acked.extend, flush_interval_s=0.01, concurrency=2, min_part_lines=1000)
    b.start()
    for e in _series_entries(stations=8, per=5):
        b.put(e)
    b.stop()
    assert writer.calls == 1 and len(acked) == 40
