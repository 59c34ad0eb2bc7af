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


def _run(writer, entries, tmp_path):
    acked: list = []
    done = threading.Event()

    def on_durable(tokens):
        acked.extend(tokens)
        if len(acked) >= len(entries):
            done.set()

    b = Batcher(writer, DeadLetterStore(tmp_path), on_durable, batch_size=100, flush_interval_s=0.01, max_backoff_s=0.05)
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
