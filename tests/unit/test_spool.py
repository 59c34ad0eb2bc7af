"""The disk spool on its own: order, durability across reopen, bounds, crash leftovers."""

from __future__ import annotations

import pytest

from ingest.spool import Spool, SpoolFull


def _drain(spool: Spool) -> list[list[str]]:
    out = []
    while (record := spool.peek()) is not None:
        out.append(record.lines)
        spool.commit(record)
    return out


def test_batches_come_back_in_the_order_they_were_spooled_and_the_spool_empties(tmp_path):
    spool = Spool(tmp_path, 10_000_000)
    for i in range(5):
        spool.append([f"m v={i} {i}", f"m v={i} {i + 100}"], [("aq/v1/ambient/a", 2)])
    assert not spool.empty() and spool.bytes > 0
    assert _drain(spool) == [[f"m v={i} {i}", f"m v={i} {i + 100}"] for i in range(5)]
    assert spool.empty() and spool.bytes == 0 and list(tmp_path.glob("*.seg")) == []


def test_what_was_spooled_and_not_drained_survives_a_restart(tmp_path):
    spool = Spool(tmp_path, 10_000_000)
    for i in range(3):
        spool.append([f"m v={i} {i}"], [("t", 1)])
    first = spool.peek()
    spool.commit(first)
    spool.close()
    again = Spool(tmp_path, 10_000_000)
    assert _drain(again) == [["m v=1 1"], ["m v=2 2"]]


def test_a_torn_last_record_from_a_crash_mid_append_is_cut_off(tmp_path):
    spool = Spool(tmp_path, 10_000_000)
    spool.append(["m v=1 1"], [("t", 1)])
    spool.close()
    seg = next(tmp_path.glob("*.seg"))
    with seg.open("ab") as f:
        f.write(b'{"n": 1, "bytes": 50, "owners": [["t", 1]], "t": 0}\nm v=2')  # never acknowledged
    assert _drain(Spool(tmp_path, 10_000_000)) == [["m v=1 1"]]


def test_a_full_spool_refuses_more_until_drained(tmp_path):
    spool = Spool(tmp_path, 200)  # one ~130-byte record fits, two do not
    spool.append(["m v=1 1" * 10], [("t", 1)])
    with pytest.raises(SpoolFull):
        spool.append(["m v=2 2" * 10], [("t", 1)])
    _drain(spool)
    spool.append(["m v=2 2" * 10], [("t", 1)])  # room again


def test_a_stale_cursor_left_by_a_crash_after_cleanup_does_not_hide_new_batches(tmp_path):
    spool = Spool(tmp_path, 10_000_000)
    spool.append(["m v=1 1"], [("t", 1)])
    record = spool.peek()
    spool.close()
    # The crash: segments deleted, cursor still pointing past them.
    (tmp_path / "cursor").write_text(f"{record.segment + 5} 999\n")
    for seg in tmp_path.glob("*.seg"):
        seg.unlink()
    again = Spool(tmp_path, 10_000_000)
    again.append(["m v=2 2"], [("t", 1)])
    assert _drain(again) == [["m v=2 2"]]


def test_a_refused_point_is_traced_to_the_topic_of_its_message(tmp_path):
    spool = Spool(tmp_path, 10_000_000)
    spool.append(["a1", "a2", "b1", "c1"], [("t/a", 2), ("t/b", 1), ("t/c", 1)])
    record = spool.peek()
    assert [record.topic_of(i) for i in range(4)] == ["t/a", "t/a", "t/b", "t/c"]
