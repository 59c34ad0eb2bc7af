from __future__ import annotations

from ingest.deadletter import DeadLetter, DeadLetterStore


def test_letters_survive_a_new_store_and_binary_payloads_round_trip(tmp_path):
    store = DeadLetterStore(tmp_path)
    store.append([DeadLetter("aq/v1/ambient/S1", b"\xff\x00bin", "not_utf8", "byte 0"),
                  DeadLetter("aq/v1/ambient/S1", '{"站": 1}'.encode(), "schema", "x")])
    letters = DeadLetterStore(tmp_path).pending()
    assert [d.payload for d in letters] == [b"\xff\x00bin", '{"站": 1}'.encode()]
    assert "payload_b64" in next(tmp_path.glob("*.jsonl")).read_text().splitlines()[0]


def test_a_redelivered_message_is_one_letter(tmp_path):
    store = DeadLetterStore(tmp_path)
    for _ in range(3):
        store.append([DeadLetter("aq/v1/ambient/S1", b"garbage", "not_json", "x")])
    assert len(store.pending()) == 1


def test_replayed_letters_are_no_longer_pending_and_others_stay(tmp_path):
    store = DeadLetterStore(tmp_path)
    a, b = DeadLetter("t/a", b"a", "schema", "x"), DeadLetter("t/b", b"b", "schema", "x")
    store.append([a, b])
    store.mark_replayed([a.id])
    assert [d.id for d in store.pending()] == [b.id]


def test_a_torn_last_line_from_a_crash_is_skipped(tmp_path):
    store = DeadLetterStore(tmp_path)
    store.append([DeadLetter("t/a", b"a", "schema", "x")])
    with next(tmp_path.glob("*.jsonl")).open("a") as f:
        f.write('{"id": "abc", "rec')
    assert len(store.pending()) == 1
