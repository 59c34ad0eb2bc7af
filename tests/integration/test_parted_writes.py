"""A batch written as concurrent requests (influx.write_concurrency), against the real
InfluxDB: every point lands, a point InfluxDB refuses is found and dead-lettered alone,
every message is acknowledged once."""

from __future__ import annotations

import threading

import pytest

from aqpipe.influx import make_writer
from ingest.batcher import Batcher, Entry
from ingest.deadletter import DeadLetterStore

pytestmark = pytest.mark.integration


def test_concurrent_parts_land_and_a_refused_point_is_dead_lettered_alone(config, influx, tmp_path):
    stations, per = 6, 20
    entries = []
    for k in range(per):
        for s in range(stations):
            # station s3's 8th point is a string where the others are floats: a field type conflict (400)
            value = '"x"' if (s, k) == (3, 7) else f"{k}.5"
            entries.append(Entry(f"aq/v1/ambient/p{s}", b"{}", [f"ambient,station=p{s} pm25={value} {1795500000 + k}000000000"],
                                 token=len(entries)))
    acked: list = []
    done = threading.Event()

    def on_durable(tokens: list) -> None:
        acked.extend(tokens)
        if len(acked) >= len(entries):
            done.set()

    writer = Recording(make_writer(config.influx))
    batcher = Batcher(writer, DeadLetterStore(tmp_path), on_durable, batch_size=len(entries), flush_interval_s=1.0,
                      concurrency=2, min_part_lines=10)
    batcher.start()
    for e in entries:
        batcher.put(e)
    assert done.wait(30)
    batcher.stop()
    writer.close()
    assert acked == list(range(len(entries)))
    rows = influx.rows("SELECT count(pm25) FROM ambient GROUP BY station")
    assert {r["station"]: r["count"] for r in rows} == {f"p{s}": per - (s == 3) for s in range(stations)}
    letters = DeadLetterStore(tmp_path).pending()
    assert [(d.topic, d.reason, d.lines) for d in letters] == [
        ("aq/v1/ambient/p3", "write_rejected", ['ambient,station=p3 pm25="x" 1795500007000000000'])]
    assert batcher.written == len(entries) - 1
    # Two requests of whole series (which series go together is fixed: a CRC of the series
    # key), then halves of the refused one's until the bad point stood alone.
    parts = [{f"ambient,station=p{s}" for s in group} for group in ((0, 1, 2, 3), (4, 5))]
    for part in parts:
        lines = [line for e in entries for line in e.lines if _series(line) in part]
        assert lines in writer.requests  # the part's points, in the order received, in one request
    assert all(any({_series(line) for line in r} <= part for part in parts) for r in writer.requests)


class Recording:
    """The real writer, noting each request's lines."""

    def __init__(self, writer) -> None:
        self.writer, self.requests = writer, []

    def write(self, lines: list[str]) -> None:
        self.requests.append(list(lines))
        self.writer.write(lines)

    def close(self) -> None:
        self.writer.close()


def _series(line: str) -> str:
    return line.split(" ", 1)[0]
