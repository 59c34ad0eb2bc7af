"""The aggregator's durable memory: what is dirty, and how far it has got.

A JSON-lines journal under `data_dir/aggregator/`, appended and fsynced before a message
is acknowledged, so a crash between ack and computation loses nothing. It holds:
- seen readings: per (kind, identity, hour) the reading times (ns offsets into the hour)
  the aggregator saw on MQTT, each with the mask of rollup fields it brings
  (`presence.py`). A rollup is computed once InfluxDB holds all of them (ingest writes
  them concurrently) or `max_wait_s` has passed; what is found is dropped from here, what
  is still missing stays until it lands or its hour is older than `lateness_hours`.
- dirty outputs: rollups to (re)compute, each with a sequence number, so a reading that
  arrives while its hour is being computed re-dirties it instead of being lost.
- incomplete outputs: rollups written without some readings seen on MQTT (complete=false),
  with how many (time, field) pairs were missing; re-checked until they land (then
  recomputed, complete=true) or the period is older than `lateness_hours`.
- the watermark: wall-clock time up to which every due output was computed; on start,
  everything from it (bounded by the lateness) is recomputed from InfluxDB.
The journal is compacted (snapshot, fsync, rename) at start and when it grows.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from aggregator.keys import InputKey, OutputKey
from aggregator.presence import Marks

COMPACT_LINES = 20_000


def _marks(items: list) -> Marks:
    """Journal form of marks: [[offset, mask], ...]; a bare offset (older journals) is mask 0."""
    out: Marks = {}
    for item in items:
        if isinstance(item, list):
            out[item[0]] = out.get(item[0], 0) | item[1]
        else:
            out[item] = out.get(item, 0)
    return out


def _journal(marks: Marks) -> list:
    return [[off, mask] for off, mask in sorted(marks.items())]


class AggregatorState:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "state.jsonl"
        self._lock = threading.Lock()
        self.seen: dict[InputKey, Marks] = {}
        self.dirty: dict[OutputKey, int] = {}  # -> sequence number of the last marking
        self.not_before: dict[OutputKey, float] = {}  # retry time after a failed write (memory only)
        # Written incomplete -> (time, field) pairs then missing; when to look again (memory only).
        self.incomplete: dict[OutputKey, int] = {}
        self.recheck_at: dict[OutputKey, float] = {}
        self.watermark: float | None = None
        # When readings of an input hour were last added (memory only; at load: now): how
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

    def _apply(self, doc: dict, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for kind, ident, hour, items in doc.get("seen", ()):
            key = InputKey(kind, ident, hour)
            have = self.seen.setdefault(key, {})
            for off, mask in _marks(items).items():
                have[off] = have.get(off, 0) | mask
            self.seen_since[key] = now
        for kind, ident, hour, items in doc.get("verified", ()):
            key = InputKey(kind, ident, hour)
            have = self.seen.get(key)
            if have is None:
                continue
            for off, mask in _marks(items).items():
                if off in have:
                    left = have[off] & ~mask
                    if left:
                        have[off] = left
                    else:
                        del have[off]
            if not have:
                self.seen.pop(key, None)
                self.seen_since.pop(key, None)
        for kind, ident, hour in doc.get("expired", ()):
            key = InputKey(kind, ident, hour)
            self.seen.pop(key, None)
            self.seen_since.pop(key, None)
        for kind, ident, period, t in doc.get("dirty", ()):
            self._seq += 1
            self.dirty[OutputKey(kind, ident, period, t)] = self._seq
        for kind, ident, period, t in doc.get("done", ()):
            self.dirty.pop(OutputKey(kind, ident, period, t), None)
        for kind, ident, period, t, missing in doc.get("incomplete", ()):
            self.incomplete[OutputKey(kind, ident, period, t)] = missing
        for kind, ident, period, t in doc.get("complete", ()):
            key = OutputKey(kind, ident, period, t)
            self.incomplete.pop(key, None)
            self.recheck_at.pop(key, None)
        if "watermark" in doc:
            self.watermark = doc["watermark"]

    # --- writing ---
    def _append(self, doc: dict, sync: bool) -> None:
        self._file.write(json.dumps(doc, separators=(",", ":")) + "\n")
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())
        self._lines += 1

    def mark(self, seen: dict[InputKey, Marks], dirty: Iterable[OutputKey]) -> None:
        """Record readings seen and the outputs they make dirty; durable on return."""
        with self._lock:
            new_seen = []
            for key, marks in seen.items():
                have = self.seen.get(key, {})
                extra = {off: m for off, m in marks.items() if off not in have or m & ~have[off]}
                if extra:
                    new_seen.append([*key, _journal(extra)])
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

    def snapshot_due(self, now: float, due_at: Callable[[OutputKey], float],
                     ignore_retry: bool = False) -> dict[OutputKey, int]:
        """Dirty outputs whose `due_at(key)` has passed (and, unless `ignore_retry`, whose retry
        time after a failure too), with their sequence numbers."""
        with self._lock:
            return {k: seq for k, seq in self.dirty.items()
                    if due_at(k) <= now and (ignore_retry or self.not_before.get(k, 0.0) <= now)}

    def snapshot_recheck(self, now: float) -> dict[OutputKey, int]:
        """Incomplete outputs (not dirty) whose time to look again has come, with their missing counts."""
        with self._lock:
            return {k: n for k, n in self.incomplete.items()
                    if k not in self.dirty and self.recheck_at.get(k, 0.0) <= now}

    def seen_for(self, keys: Iterable[InputKey]) -> dict[InputKey, tuple[Marks, float]]:
        """Seen reading marks of `keys`, with when they were last added to."""
        with self._lock:
            return {k: (dict(self.seen[k]), self.seen_since[k]) for k in keys if k in self.seen}

    def verified(self, found: dict[InputKey, Marks]) -> None:
        """Seen (time, field) pairs InfluxDB now holds: no longer waited for."""
        with self._lock:
            ver = [[*k, _journal(v)] for k, v in found.items() if v]
            if ver:
                # Not fsynced: losing it only means checking InfluxDB for them once more.
                self._append({"verified": ver}, sync=False)
                self._apply({"verified": ver})

    def done(self, outputs: dict[OutputKey, int], incomplete: dict[OutputKey, int],
             recheck_at: float) -> None:
        """Outputs computed (unless marked again since `seq`); which of them were written
        incomplete (with their missing counts), to be re-checked from `recheck_at`."""
        with self._lock:
            gone = [k for k, seq in outputs.items() if self.dirty.get(k) == seq]
            now_complete = [k for k in outputs if k not in incomplete and k in self.incomplete]
            changed = [k for k, n in incomplete.items() if self.incomplete.get(k) != n]
            doc: dict = {}
            if gone:
                doc["done"] = [list(k) for k in gone]
            if changed:
                doc["incomplete"] = [[*k, incomplete[k]] for k in changed]
            if now_complete:
                doc["complete"] = [list(k) for k in now_complete]
            if doc:
                # Not fsynced: losing it only means computing once more after a crash.
                self._append(doc, sync=False)
                self._apply(doc)
            for k in gone:
                self.not_before.pop(k, None)
            for k in incomplete:
                self.recheck_at[k] = recheck_at
            if self._lines > COMPACT_LINES:
                self._compact_locked()

    def recheck_later(self, outputs: Iterable[OutputKey], when: float) -> None:
        with self._lock:
            for k in outputs:
                if k in self.incomplete:
                    self.recheck_at[k] = when

    def expire(self, oldest: float, closes_at: Callable[[OutputKey], float],
               last_use: Callable[[InputKey], float]) -> list[OutputKey]:
        """Stop re-checking outputs whose period closed before `oldest` and forget seen
        readings no output still re-checked depends on (`last_use`: when the last output
        using them closes); returns the outputs left incomplete."""
        with self._lock:
            old_outs = [k for k in self.incomplete if closes_at(k) < oldest]
            # Not before: an input forgotten while an output using it is re-checked would
            # look found, and that output would be rewritten complete=true without it.
            old_seen = [k for k in self.seen if last_use(k) < oldest]
            if not old_seen and not old_outs:
                return []
            doc: dict = {}
            if old_seen:
                doc["expired"] = [list(k) for k in old_seen]
            if old_outs:
                doc["complete"] = [list(k) for k in old_outs]  # no longer tracked (stays complete=false)
            self._append(doc, sync=False)
            self._apply(doc)
            return old_outs

    def postpone(self, outputs: Iterable[OutputKey], until: float) -> None:
        with self._lock:
            for k in outputs:
                if k in self.dirty:
                    self.not_before[k] = until
                elif k in self.incomplete:
                    self.recheck_at[k] = until

    def set_watermark(self, t: float) -> None:
        with self._lock:
            self._append({"watermark": t}, sync=True)
            self.watermark = t

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return len(self.dirty), len(self.seen)

    def incomplete_count(self) -> int:
        with self._lock:
            return len(self.incomplete)

    # --- compaction ---
    def _snapshot_doc(self) -> dict:
        doc: dict = {"seen": [[*k, _journal(v)] for k, v in self.seen.items()],
                     "dirty": [list(k) for k in sorted(self.dirty, key=self.dirty.__getitem__)],
                     "incomplete": [[*k, n] for k, n in self.incomplete.items()]}
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
