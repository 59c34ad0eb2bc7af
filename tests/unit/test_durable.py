"""Durable appends: every byte of a short write, the directory fsynced when a file is created;
dead letters that say how replay turns them into points."""

from __future__ import annotations

import os

from ingest import durable
from ingest.deadletter import LINE_PROTOCOL, MESSAGE, DeadLetter, DeadLetterStore
from ingest.spool import Spool


def _short_writes(monkeypatch) -> list[int]:
    """os.write that writes at most 7 bytes a call, as it may (signals, quotas)."""
    sizes: list[int] = []
    real = os.write

    def short(fd: int, data) -> int:
        n = real(fd, bytes(data[:7]))
        sizes.append(n)
        return n

    monkeypatch.setattr(durable.os, "write", short)
    return sizes


def _dir_fsyncs(monkeypatch) -> list[str]:
    synced: list[str] = []
    real = durable.fsync_dir

    def record(directory) -> None:
        synced.append(str(directory))
        real(directory)

    monkeypatch.setattr(durable, "fsync_dir", record)
    return synced


def test_a_short_write_is_continued_until_every_byte_is_written(monkeypatch, tmp_path):
    sizes = _short_writes(monkeypatch)
    path = tmp_path / "f"
    durable.append_durably(path, b"0123456789" * 5)
    durable.append_durably(path, b"end\n")
    assert path.read_bytes() == b"0123456789" * 5 + b"end\n"
    assert len(sizes) > 8


def test_dead_letters_written_with_short_writes_read_back_whole(monkeypatch, tmp_path):
    _short_writes(monkeypatch)
    store = DeadLetterStore(tmp_path / "dl")
    store.append([DeadLetter("aq/v1/ambient/S1", '{"pm25": "α"}'.encode(), "schema", "pm25 is not a number")])
    assert [(d.topic, d.payload.decode(), d.reason) for d in store.pending()] == [
        ("aq/v1/ambient/S1", '{"pm25": "α"}', "schema")]


def test_creating_a_file_fsyncs_its_directory_and_appending_does_not(monkeypatch, tmp_path):
    synced = _dir_fsyncs(monkeypatch)
    path = tmp_path / "letters.jsonl"
    durable.append_durably(path, b"a\n")
    assert synced == [str(tmp_path)]
    durable.append_durably(path, b"b\n")
    assert synced == [str(tmp_path)]


def test_a_new_spool_segment_and_the_cursor_rename_are_fsynced_in_the_directory(monkeypatch, tmp_path):
    synced: list[str] = []
    real = durable.fsync_dir
    monkeypatch.setattr("ingest.spool.fsync_dir", lambda d: (synced.append(str(d)), real(d)))
    spool = Spool(tmp_path / "spool", 1 << 20)
    spool.append(["ambient,station=S1 pm25=1 1"], [("aq/v1/ambient/S1", 1)])
    assert synced == [str(tmp_path / "spool")]  # the segment's name
    spool.commit(spool.peek())
    assert len(synced) >= 2  # the cursor's rename
    spool.close()


def test_a_letter_keeps_its_payload_format_and_old_letters_are_messages():
    letter = DeadLetter("aq/v1/ambient/S1", b"ambient,station=S1 pm10=5 1", "write_rejected", "type conflict",
                        lines=["ambient,station=S1 pm10=5 1"], format=LINE_PROTOCOL)
    back = DeadLetter.from_json(letter.to_json())
    assert back.format == LINE_PROTOCOL and back.payload == letter.payload and back.id == letter.id
    old = '{"id": "x", "received": "2026-01-01T00:00:00.000+00:00", "topic": "t", "reason": "schema", ' \
          '"detail": "d", "payload": "{}"}'
    assert DeadLetter.from_json(old).format == MESSAGE
