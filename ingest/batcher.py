"""Batch readings into InfluxDB writes and report which messages became durable.

One writer thread owns the InfluxDB connection. Messages go in whole (a message's
readings never straddle two batches), so a message is acknowledged exactly when its
batch is durable: written to InfluxDB, with any refused points and any rejected
messages appended and fsynced to the dead-letter store.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ingest import metrics
from ingest.deadletter import DeadLetter, DeadLetterStore
from ingest.errors import Reason
from ingest.influx import Writer, WriteError

log = logging.getLogger("aqpipe.batcher")


@dataclass(slots=True)
class Entry:
    """One MQTT message on its way to durability."""

    topic: str
    payload: bytes
    lines: list[str] = field(default_factory=list)
    letter: DeadLetter | None = None  # rejected before writing
    token: Any = None  # what the caller needs to acknowledge it (None: nothing to ack)


class Stopped(Exception):
    """The batcher was stopped while InfluxDB was failing; the batch was not made durable."""


class Batcher:
    def __init__(
        self,
        writer: Writer,
        store: DeadLetterStore,
        on_durable: Callable[[list[Any]], None],
        batch_size: int = 5000,
        flush_interval_s: float = 0.2,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.writer = writer
        self.store = store
        self.on_durable = on_durable
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_backoff_s = max_backoff_s
        self._queue: queue.SimpleQueue[Entry | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aqpipe-writer", daemon=True)
        self.written = 0
        self.deadlettered = 0
        self.failed_attempts = 0

    def start(self) -> None:
        self._thread.start()

    def put(self, entry: Entry) -> None:
        self._queue.put(entry)

    def stop(self, timeout: float | None = None) -> None:
        """Flush what was put so far and end the thread. While InfluxDB keeps failing,
        the batch in hand is given up unacknowledged after `timeout` (the broker redelivers)."""
        self._queue.put(None)
        self._thread.join(timeout)
        self._stopping.set()
        self._thread.join()

    def _collect(self) -> tuple[list[Entry], bool]:
        first = self._queue.get()
        if first is None:
            return [], True
        entries = [first]
        count = len(first.lines)
        deadline = time.monotonic() + self.flush_interval_s
        while count < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                entry = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is None:
                return entries, True
            entries.append(entry)
            count += len(entry.lines)
        return entries, False

    def _run(self) -> None:
        done = False
        while not done:
            entries, done = self._collect()
            if entries:
                try:
                    self._flush(entries)
                except Stopped:
                    log.warning("event=shutdown_unflushed messages=%d reason=influx_unavailable", len(entries))
                    return

    def _flush(self, entries: list[Entry]) -> None:
        started = time.monotonic()
        lines: list[str] = []
        owner: list[int] = []
        for i, entry in enumerate(entries):
            lines.extend(entry.lines)
            owner.extend([i] * len(entry.lines))
        refused = self._write_with_retry(lines) if lines else []

        letters = [e.letter for e in entries if e.letter is not None]
        if refused:
            by_entry: dict[int, list[tuple[str, str]]] = {}
            for index, detail in refused:
                by_entry.setdefault(owner[index], []).append((lines[index], detail))
            for i, bad in by_entry.items():
                e = entries[i]
                letters.append(DeadLetter(e.topic, e.payload, Reason.WRITE_REJECTED.value, bad[0][1], lines=[b[0] for b in bad]))
        self.store.append(letters)
        for letter in letters:
            metrics.DEADLETTERED.labels(letter.reason).inc()
        self.deadlettered += len(letters)
        good = len(lines) - len(refused)
        self.written += good
        metrics.READINGS_WRITTEN.inc(good)
        metrics.BATCH_SECONDS.observe(time.monotonic() - started)
        self.on_durable([e.token for e in entries if e.token is not None])

    def _write_with_retry(self, lines: list[str]) -> list[tuple[int, str]]:
        attempt = 0
        while True:
            try:
                return self._write_isolating(lines, 0, len(lines))
            except WriteError as e:
                self.failed_attempts += 1
                metrics.WRITE_ERRORS.labels("unreachable" if e.status is None else str(e.status)).inc()
                if self._stopping.is_set():
                    raise Stopped() from e
                delay = min(self.max_backoff_s, 0.1 * 2**attempt) * random.uniform(0.5, 1.0)
                if e.retry_after is not None:
                    delay = max(delay, min(e.retry_after, self.max_backoff_s * 4))
                attempt = min(attempt + 1, 16)
                log.warning("event=write_retry status=%s delay_s=%.2f attempt=%d detail=%r", e.status, delay, attempt, e.detail[:200])
                if self._stopping.wait(delay):
                    raise Stopped() from e

    def _write_isolating(self, lines: list[str], lo: int, hi: int) -> list[tuple[int, str]]:
        """Write lines[lo:hi]; on a non-retryable refusal, halve until the refused points
        are found. Rewriting accepted points is harmless: a point overwrites itself."""
        try:
            self.writer.write(lines[lo:hi])
            return []
        except WriteError as e:
            if e.retryable:
                raise
            if hi - lo == 1:
                return [(lo, e.detail)]
        mid = (lo + hi) // 2
        return self._write_isolating(lines, lo, mid) + self._write_isolating(lines, mid, hi)
