"""The disk spool: batches InfluxDB could not take yet, kept in order until it can.

Append-only segment files `data_dir/spool/NNNNNNNNNNNN.seg`. A record is one JSON
header line (`{"n": lines, "bytes": body length, "owners": [[topic, lines], ...],
"t": spooled at}`) followed by the body: the batch's line protocol. A record is
fsynced before the messages in it are acknowledged. The drain position is kept in
`cursor` (segment and offset); losing the last cursor update only means re-writing
a few points, which InfluxDB stores once (a point overwrites itself).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ingest.durable import fsync_dir, make_dir, write_all

SEGMENT_BYTES = 64 * 1024 * 1024


class SpoolFull(Exception):
    """The spool holds spool.max_bytes already: stop acknowledging until it drains."""


@dataclass(slots=True)
class Record:
    lines: list[str]
    owners: list[tuple[str, int]]  # (topic, number of lines) in order: who to blame for a refused point
    spooled_at: float
    segment: int
    end: int  # offset just past this record in its segment

    def topic_of(self, index: int) -> str:
        for topic, count in self.owners:
            if index < count:
                return topic
            index -= count
        return ""


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        make_dir(self.directory)
        self._lock = threading.Lock()
        self.not_empty = threading.Condition(self._lock)
        self._segments = sorted(int(p.stem) for p in self.directory.glob("*.seg"))
        self._cursor = self._read_cursor()
        if not self._segments or self._cursor[0] > self._segments[-1]:
            # Drained and deleted, but the crash came before the cursor was reset: a
            # stale cursor would skip the segments numbered afresh from 1.
            self._cursor = (0, 0)
        self._repair_tail()
        self._bytes = self._measure()
        self._fd: int | None = None
        self.oldest_at: float | None = None
        if self._bytes:
            first = self._peek_unlocked()
            self.oldest_at = first.spooled_at if first else None

    # --- state ---
    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def segments(self) -> int:
        return len(self._segments)

    def empty(self) -> bool:
        with self._lock:
            return self._bytes == 0

    # --- writing ---
    def append(self, lines: list[str], owners: list[tuple[str, int]]) -> None:
        """Append one batch durably (fsync). Raises SpoolFull when over max_bytes."""
        body = "\n".join(lines).encode("utf-8")
        header = json.dumps({"n": len(lines), "bytes": len(body), "owners": owners, "t": time.time()}).encode() + b"\n"
        with self._lock:
            if self._bytes + len(header) + len(body) > self.max_bytes and self._bytes > 0:
                raise SpoolFull(f"spool holds {self._bytes} bytes (spool.max_bytes {self.max_bytes})")
            fd = self._writable_segment()
            write_all(fd, header + body + b"\n")
            os.fsync(fd)
            was_empty = self._bytes == 0
            self._bytes += len(header) + len(body) + 1
            if was_empty:
                self.oldest_at = time.time()
            self.not_empty.notify_all()

    def _writable_segment(self) -> int:
        if self._fd is not None and os.fstat(self._fd).st_size < SEGMENT_BYTES:
            return self._fd
        if self._fd is not None:
            os.close(self._fd)
        seq = (self._segments[-1] + 1) if self._segments else 1
        self._segments.append(seq)
        self._fd = os.open(self._path(seq), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        fsync_dir(self.directory)  # the new segment's name is durable before any record in it is acked
        return self._fd

    # --- draining ---
    def peek(self) -> Record | None:
        """The oldest record not yet drained, or None."""
        with self._lock:
            return self._peek_unlocked()

    def _peek_unlocked(self) -> Record | None:
        seg, offset = self._cursor
        for seq in self._segments:
            if seq < seg:
                continue
            start = offset if seq == seg else 0
            path = self._path(seq)
            with path.open("rb") as f:
                f.seek(start)
                header = f.readline()
                if not header:
                    continue
                meta = json.loads(header)
                body = f.read(meta["bytes"] + 1)
            lines = body[:-1].decode("utf-8").split("\n") if meta["n"] else []
            end = start + len(header) + len(body)
            return Record(lines, [tuple(o) for o in meta["owners"]], meta["t"], seq, end)
        return None

    def commit(self, record: Record) -> None:
        """The record is in InfluxDB: move the cursor past it, delete drained segments."""
        with self._lock:
            self._cursor = (record.segment, record.end)
            self._write_cursor()
            for seq in list(self._segments):
                if seq >= record.segment:
                    break
                self._path(seq).unlink(missing_ok=True)
                self._segments.remove(seq)
            if self._segments and _fully_read(self._path(record.segment), record.end) and record.segment == self._segments[-1]:
                # Everything drained: start afresh so the files do not grow forever.
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                for seq in self._segments:
                    self._path(seq).unlink(missing_ok=True)
                self._segments = []
                self._cursor = (0, 0)
                self._write_cursor()
            self._bytes = self._measure()
            nxt = self._peek_unlocked() if self._bytes else None
            self.oldest_at = nxt.spooled_at if nxt else None

    def wait(self, timeout: float) -> bool:
        """Block until something is spooled (or timeout); True if not empty."""
        with self._lock:
            if self._bytes == 0:
                self.not_empty.wait(timeout)
            return self._bytes > 0

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # --- files ---
    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:012d}.seg"

    def _measure(self) -> int:
        seg, offset = self._cursor
        total = 0
        for seq in self._segments:
            if seq < seg:
                continue
            try:
                size = self._path(seq).stat().st_size
            except FileNotFoundError:
                continue
            total += size - (offset if seq == seg else 0)
        return max(0, total)

    def _read_cursor(self) -> tuple[int, int]:
        try:
            seg, offset = (self.directory / "cursor").read_text().split()
            return int(seg), int(offset)
        except (OSError, ValueError):
            return (0, 0)

    def _write_cursor(self) -> None:
        tmp = self.directory / "cursor.tmp"
        with tmp.open("w") as f:
            f.write(f"{self._cursor[0]} {self._cursor[1]}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / "cursor")
        fsync_dir(self.directory)  # the rename, and the segments unlinked before it

    def _repair_tail(self) -> None:
        """Cut a torn last record (a crash mid-append): it was never acknowledged."""
        if not self._segments:
            return
        path = self._path(self._segments[-1])
        good = 0
        with path.open("rb") as f:
            while True:
                header = f.readline()
                if not header:
                    break
                try:
                    meta = json.loads(header)
                    body = f.read(meta["bytes"] + 1)
                except (ValueError, KeyError):
                    break
                if len(body) != meta["bytes"] + 1 or not body.endswith(b"\n"):
                    break
                good = f.tell()
        if good != path.stat().st_size:
            with path.open("r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())


def _fully_read(path: Path, offset: int) -> bool:
    try:
        return path.stat().st_size <= offset
    except FileNotFoundError:
        return True
