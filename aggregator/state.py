"""The aggregator's durable memory: what is dirty, and how far it has got.

A JSON-lines journal under `data_dir/aggregator/`, appended and fsynced before a message
is acknowledged, so a crash between ack and computation loses nothing. It holds:
- seen readings: per (kind, identity, hour) the reading times (ns offsets into the hour)
  the aggregator saw on MQTT. A rollup is computed only once InfluxDB holds all of them
  (ingest writes them concurrently) or `max_wait_s` has passed.
- dirty outputs: rollups to (re)compute, each with a sequence number, so a reading that
  arrives while its hour is being computed re-dirties it instead of being lost.
- the watermark: wall-clock time up to which every due output was computed; on start,
  everything from it (bounded by the lateness) is recomputed from InfluxDB.
The journal is compacted (snapshot, fsync, rename) at start and when it grows.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from aggregator.keys import InputKey, OutputKey

COMPACT_LINES = 20_000


class AggregatorState:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "state.jsonl"
        self._lock = threading.Lock()
        self.seen: dict[InputKey, set[int]] = {}
        self.dirty: dict[OutputKey, int] = {}  # -> sequence number of the last marking
        self.not_before: dict[OutputKey, float] = {}  # retry time after a failed write (memory only)
        self.watermark: float | None = None
        # When readings of an input hour were first seen (memory only; at load: now): how
        # long the aggregator has been waiting for ingest to store them.
        self.seen_since: dict[InputKey, float] = {}
        self._seq = 0
        self._lines = 0
        self._load()
        self._compact()
        self._file = open(self.path, "a", encoding="utf-8")

    # --- reading ---
    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    doc = json.loads(line)
                except ValueError:
                    break  # a torn last line from a crash: everything before it is intact
                self._apply(doc)

    def _apply(self, doc: dict) -> None:
        for kind, ident, hour, offsets in doc.get("seen", ()):
            key = InputKey(kind, ident, hour)
            self.seen.setdefault(key, set()).update(offsets)
            self.seen_since.setdefault(key, time.time())
        for kind, ident, hour, offsets in doc.get("verified", ()):
            key = InputKey(kind, ident, hour)
            left = self.seen.get(key, set()) - set(offsets)
            if left:
                self.seen[key] = left
            else:
                self.seen.pop(key, None)
                self.seen_since.pop(key, None)
        for kind, ident, period, t in doc.get("dirty", ()):
            self._seq += 1
            self.dirty[OutputKey(kind, ident, period, t)] = self._seq
        for kind, ident, period, t in doc.get("done", ()):
            self.dirty.pop(OutputKey(kind, ident, period, t), None)
        if "watermark" in doc:
            self.watermark = doc["watermark"]

    # --- writing ---
    def _append(self, doc: dict, sync: bool) -> None:
        self._file.write(json.dumps(doc, separators=(",", ":")) + "\n")
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())
        self._lines += 1

    def mark(self, seen: dict[InputKey, set[int]], dirty: Iterable[OutputKey]) -> None:
        """Record readings seen and the outputs they make dirty; durable on return."""
        with self._lock:
            new_seen = []
            for key, offsets in seen.items():
                have = self.seen.get(key, set())
                extra = offsets - have
                if extra:
                    new_seen.append([*key, sorted(extra)])
            dirty = list(dirty)
            new_dirty = [key for key in dirty if key not in self.dirty]
            if not new_seen and not new_dirty:
                return  # a redelivery: nothing new, nothing to write
            doc: dict = {}
            if new_seen:
                doc["seen"] = new_seen
            if new_dirty:
                doc["dirty"] = [list(k) for k in new_dirty]
            self._append(doc, sync=True)
            self._apply(doc)
            for key in dirty:  # new readings: an output being computed right now stays dirty
                self._seq += 1
                self.dirty[key] = self._seq

    def redirty(self, dirty: Iterable[OutputKey]) -> None:
        """Mark outputs dirty again even if they are (recompute on start)."""
        with self._lock:
            keys = [list(k) for k in dirty]
            if keys:
                self._append({"dirty": keys}, sync=True)
                self._apply({"dirty": keys})

    def snapshot_due(self, now: float, due_at, ignore_retry: bool = False) -> dict[OutputKey, int]:
        """Dirty outputs whose `due_at(key)` has passed (and, unless `ignore_retry`, whose retry
        time after a failure too), with their sequence numbers."""
        with self._lock:
            return {k: seq for k, seq in self.dirty.items()
                    if due_at(k) <= now and (ignore_retry or self.not_before.get(k, 0.0) <= now)}

    def seen_for(self, keys: Iterable[InputKey]) -> dict[InputKey, tuple[set[int], float]]:
        """Seen reading offsets of `keys`, with when they were first seen."""
        with self._lock:
            return {k: (set(self.seen[k]), self.seen_since[k]) for k in keys if k in self.seen}

    def done(self, outputs: dict[OutputKey, int], verified: dict[InputKey, set[int]]) -> None:
        """Outputs computed (unless marked again since `seq`) and seen readings found in InfluxDB."""
        with self._lock:
            gone = [k for k, seq in outputs.items() if self.dirty.get(k) == seq]
            ver = [[*k, sorted(v)] for k, v in verified.items() if v]
            if not gone and not ver:
                return
            doc: dict = {}
            if gone:
                doc["done"] = [list(k) for k in gone]
            if ver:
                doc["verified"] = ver
            # Not fsynced: losing a "done" only means computing it once more after a crash.
            self._append(doc, sync=False)
            self._apply(doc)
            for k in gone:
                self.not_before.pop(k, None)
            if self._lines > COMPACT_LINES:
                self._compact_locked()

    def postpone(self, outputs: Iterable[OutputKey], until: float) -> None:
        with self._lock:
            for k in outputs:
                if k in self.dirty:
                    self.not_before[k] = until

    def set_watermark(self, t: float) -> None:
        with self._lock:
            self._append({"watermark": t}, sync=True)
            self.watermark = t

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return len(self.dirty), len(self.seen)

    # --- compaction ---
    def _snapshot_doc(self) -> dict:
        doc: dict = {"seen": [[*k, sorted(v)] for k, v in self.seen.items()],
                     "dirty": [list(k) for k in sorted(self.dirty, key=self.dirty.__getitem__)]}
        if self.watermark is not None:
            doc["watermark"] = self.watermark
        return doc

    def _compact(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(self._snapshot_doc(), separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._lines = 1

    def _compact_locked(self) -> None:
        self._file.close()
        self._compact()
        self._file = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            self._file.close()
