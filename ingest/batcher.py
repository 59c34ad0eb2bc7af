"""Batch readings into InfluxDB writes and report which messages became durable.

Messages go in whole (a message's readings never straddle two batches), so a message
is acknowledged exactly when its batch is durable: written to InfluxDB, or appended
and fsynced to the disk spool, with any refused points and rejected messages
appended and fsynced to the dead-letter store.

Two threads: the writer batches and writes (straight to InfluxDB while it answers
and nothing is spooled; to the spool otherwise, so new data queues behind old), and
the drainer moves spooled batches into InfluxDB, in order, once it answers again.

Both run under the service's Supervisor (aqpipe/supervision.py): an unexpected
exception restarts the loop, and the writer keeps the batch in hand across the
restart, so the batch is made durable (and acknowledged) once, later.

A large batch is written as `concurrency` requests at once, its messages parted by
series (InfluxDB handles concurrent writes on several cores: on 2 cores, 72,000 ->
95,000 readings/s with 2 requests instead of 1). A series' points stay in one request,
in order, so a point given twice in a batch keeps its last value, as with one request.
The batch is durable when every request is; if one fails the batch is written again
whole (the accepted points overwrite themselves).
"""

from __future__ import annotations

import logging
import random
from bisect import bisect_right
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from itertools import accumulate
from dataclasses import dataclass, field
from typing import Any

from ingest import metrics
from ingest.deadletter import LINE_PROTOCOL, DeadLetter, DeadLetterStore
from aqpipe.errors import Reason
from aqpipe.influx import Writer, WriteError
from aqpipe.supervision import Supervisor
from ingest.spool import Spool, SpoolFull

log = logging.getLogger("aqpipe.batcher")

WRITER = "ingest-writer"  # thread names: metric labels of aqpipe_thread_errors_total, named by /readyz
DRAINER = "ingest-drainer"
IDLE_BEAT_S = 1.0  # an idle writer still beats its heartbeat this often


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
        spool: Spool | None = None,
        supervisor: Supervisor | None = None,
        concurrency: int = 1,
        min_part_lines: int = 1000,
    ) -> None:
        self.writer = writer
        self.concurrency = concurrency
        self.min_part_lines = min_part_lines  # a batch is parted only if each part would have as many lines
        self._parts_pool = (ThreadPoolExecutor(max_workers=concurrency - 1, thread_name_prefix="ingest-write-part")
                            if concurrency > 1 else None)
        self.store = store
        self.on_durable = on_durable
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_backoff_s = max_backoff_s
        # A deque and an event rather than a Queue: a Queue wakes the writer for every
        # message, and at thousands of messages a second those wake-ups (and the GIL
        # hand-overs they cause) cost more than decoding. Here the producer wakes the
        # writer only for the first entry of a batch, a full batch, or the end.
        self._pending: deque[Entry | None] = deque()
        self._wake = threading.Event()
        self._lines_put = 0  # written by the producer only
        self._lines_taken = 0  # written by the writer only
        self._idle = True  # the writer waits for the first entry of a batch
        self._stopping = threading.Event()
        self._own_supervisor = supervisor is None
        self.supervisor = supervisor if supervisor is not None else Supervisor()
        # The batch taken from _pending and not yet durable: kept across a restart of the writer.
        self._in_hand: tuple[list[Entry], bool] | None = None
        self._thread = self.supervisor.thread(WRITER, self._run)
        self.spool = spool
        self._drainer = self.supervisor.thread(DRAINER, self._drain_loop)
        # Set while InfluxDB is failing: batches go to the spool without trying it first.
        self.influx_down = threading.Event()
        self.spool_full = False
        self.written = 0
        self.deadlettered = 0
        self.failed_attempts = 0
        self.spooled = 0
        self.drained = 0

    def start(self) -> None:
        self._thread.start()
        if self.spool is not None:
            if not self.spool.empty():
                self.influx_down.set()  # a backlog from the last run drains first
            self._update_spool_metrics()
            self._drainer.start()

    def put(self, entry: Entry) -> None:
        self._pending.append(entry)
        self._lines_put += len(entry.lines) or 1
        if (self._idle and len(self._pending) == 1) or self._lines_put - self._lines_taken >= self.batch_size:
            self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Flush what was put so far and end the thread. While InfluxDB keeps failing,
        the batch in hand is given up unacknowledged after `timeout` (the broker redelivers)."""
        self._pending.append(None)
        self._wake.set()
        self._thread.join(timeout)
        self._stopping.set()
        if self._own_supervisor:
            self.supervisor.stop()
        self._thread.join()
        if self._parts_pool is not None:
            self._parts_pool.shutdown(wait=True)
        if self.spool is not None:
            if self._drainer.is_alive():
                self._drainer.join()
            self.spool.close()

    def _collect(self) -> tuple[list[Entry], bool]:
        """Wait for a first entry, then up to flush_interval_s for a full batch (or the end)."""
        self._idle = True
        while not self._pending:
            self.supervisor.beat(WRITER)
            self._wake.wait(IDLE_BEAT_S)
            self._wake.clear()
        self._idle = False
        deadline = time.monotonic() + self.flush_interval_s
        while self._lines_put - self._lines_taken < self.batch_size and self._pending[-1] is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wake.wait(remaining)
            self._wake.clear()
        entries: list[Entry] = []
        count = 0
        while self._pending and count < self.batch_size:
            entry = self._pending.popleft()
            if entry is None:
                return entries, True
            entries.append(entry)
            count += len(entry.lines) or 1
        self._lines_taken += count
        return entries, False

    def _run(self) -> None:
        done = False
        while not done:
            if self._in_hand is None:  # else: restarted after an error, the batch is tried again
                self._in_hand = self._collect()
            entries, done = self._in_hand
            tokens: list[Any] = []
            if entries:
                try:
                    tokens = self._flush(entries)
                except Stopped:
                    log.warning("event=shutdown_unflushed messages=%d reason=influx_unavailable", len(entries))
                    return
            # Durable: never flushed again (acking a message id twice could ack the message
            # that reuses it), so the batch leaves our hands before the acks go out.
            self._in_hand = None
            self.on_durable(tokens)
            self.supervisor.beat(WRITER)

    def _flush(self, entries: list[Entry]) -> list[Any]:
        """Make a batch durable; returns the tokens of its messages, now safe to acknowledge.
        Safe to repeat after an error: points overwrite themselves, letters are listed once."""
        started = time.monotonic()
        written, cuts = self._parted(entries)  # the entries in the order their lines are written
        lines: list[str] = []
        for entry in written:
            lines.extend(entry.lines)
        refused: list[tuple[int, str]] = []
        spooled = False
        if lines and self.spool is not None:
            result = self._write_or_spool(lines, written, cuts)
            spooled = result is None
            refused = result or []
        elif lines:
            refused = self._write_with_retry(lines, cuts)

        letters = [e.letter for e in entries if e.letter is not None]
        if refused:
            # Which message each refused line came from: found from the entries' starting
            # offsets, only here (refusals are rare; no per-line list on every batch).
            starts = list(accumulate((len(e.lines) for e in written), initial=0))
            by_entry: dict[int, list[tuple[str, str]]] = {}
            for index, detail in refused:
                by_entry.setdefault(bisect_right(starts, index) - 1, []).append((lines[index], detail))
            for i, bad in by_entry.items():
                e = written[i]
                letters.append(DeadLetter(e.topic, e.payload, Reason.WRITE_REJECTED.value, bad[0][1], lines=[b[0] for b in bad]))
        self.store.append(letters)
        for letter in letters:
            metrics.DEADLETTERED.labels(letter.reason).inc()
        self.deadlettered += len(letters)
        if not spooled:  # spooled readings are counted as written when the drainer writes them
            good = len(lines) - len(refused)
            self.written += good
            metrics.READINGS_WRITTEN.inc(good)
        metrics.BATCH_SECONDS.observe(time.monotonic() - started)
        return [e.token for e in entries if e.token is not None]

    def _parted(self, entries: list[Entry]) -> tuple[list[Entry], list[int]]:
        """The entries in the order to write them, and where each request's lines start and
        end: one request, or (a large batch, concurrency > 1) one per part, each message
        in the part of its series and in the order received."""
        total = sum(len(e.lines) for e in entries)
        if self.concurrency < 2 or total < 2 * self.min_part_lines:
            return entries, [0, total]
        parts: list[list[Entry]] = [[] for _ in range(self.concurrency)]
        for entry in entries:
            parts[zlib.crc32(_series(entry).encode()) % self.concurrency].append(entry)
        ordered = [entry for part in parts for entry in part]
        cuts = list(accumulate((sum(len(e.lines) for e in part) for part in parts), initial=0))
        return ordered, cuts

    def _write_parts(self, lines: list[str], cuts: list[int], thread: str) -> list[tuple[int, str]]:
        """Write lines[cuts[k]:cuts[k+1]] for every k at once (the first in this thread); the
        refused points of all, or the first retryable WriteError once every request ended."""
        spans = [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]
        if len(spans) < 2 or self._parts_pool is None:
            return self._write_isolating(lines, 0, len(lines), thread)
        futures: list[Future] = [self._parts_pool.submit(self._write_isolating, lines, lo, hi, thread)
                                 for lo, hi in spans[1:]]
        try:
            refused = self._write_isolating(lines, spans[0][0], spans[0][1], thread)
        finally:
            wait(futures)  # no request of this batch outlives the call, whatever happens
        for future in futures:
            refused += future.result()  # raises the part's WriteError (or bug) here
        return refused

    def _write_or_spool(self, lines: list[str], entries: list[Entry], cuts: list[int]) -> list[tuple[int, str]] | None:
        """Write to InfluxDB and return the refused points, or spool the batch and return None."""
        assert self.spool is not None
        if not self.influx_down.is_set() and self.spool.empty():
            try:
                return self._write_parts(lines, cuts, WRITER)
            except WriteError as e:
                metrics.WRITE_ERRORS.labels("unreachable" if e.status is None else str(e.status)).inc()
                self.failed_attempts += 1
                self.influx_down.set()
                log.warning("event=influx_unavailable status=%s detail=%r action=spooling", e.status, e.detail[:200])
        owners: list[tuple[str, int]] = []  # runs of (topic, lines), message by message
        for entry in entries:
            if not entry.lines:
                continue
            if owners and owners[-1][0] == entry.topic:
                owners[-1] = (entry.topic, owners[-1][1] + len(entry.lines))
            else:
                owners.append((entry.topic, len(entry.lines)))
        while True:
            try:
                self.spool.append(lines, owners)
                break
            except SpoolFull as e:
                # Back-pressure: no ack, so the broker's in-flight window fills and it
                # stops sending; its persistent session queues for us meanwhile.
                if not self.spool_full:
                    log.error("event=spool_full detail=%r action=holding_acks", str(e))
                    self.spool_full = True
                    metrics.SPOOL_FULL.set(1)
                self.supervisor.beat(WRITER)  # waiting on purpose: not stalled
                if self._stopping.wait(0.2):
                    raise Stopped() from e
        if self.spool_full:
            log.warning("event=spool_accepting_again bytes=%d", self.spool.bytes)
            self.spool_full = False
            metrics.SPOOL_FULL.set(0)
        metrics.SPOOLED.inc(len(lines))
        self.spooled += len(lines)
        self._update_spool_metrics()
        return None

    def _drain_loop(self) -> None:
        assert self.spool is not None
        attempt = 0
        while not self._stopping.is_set():
            self.supervisor.beat(DRAINER)
            if not self.spool.wait(0.2):
                continue
            record = self.spool.peek()
            if record is None:
                continue
            try:
                refused = self._write_isolating(record.lines, 0, len(record.lines), DRAINER)
            except WriteError as e:
                self.failed_attempts += 1
                metrics.WRITE_ERRORS.labels("unreachable" if e.status is None else str(e.status)).inc()
                delay = self._backoff(attempt, e)
                attempt = min(attempt + 1, 16)
                self._update_spool_metrics()
                self._pause(DRAINER, delay)
                continue
            attempt = 0
            # The spool keeps points, not messages: the letter's payload is the refused point,
            # marked as line protocol so that replay writes it as it is.
            letters = [DeadLetter(record.topic_of(i), record.lines[i].encode(), Reason.WRITE_REJECTED.value, detail,
                                  lines=[record.lines[i]], format=LINE_PROTOCOL) for i, detail in refused]
            self.store.append(letters)
            for letter in letters:
                metrics.DEADLETTERED.labels(letter.reason).inc()
            self.deadlettered += len(letters)
            self.spool.commit(record)
            good = len(record.lines) - len(refused)
            self.written += good
            self.drained += good
            metrics.READINGS_WRITTEN.inc(good)
            metrics.DRAINED.inc(good)
            if self.spool.empty():
                self.influx_down.clear()
                log.info("event=spool_drained")
            self._update_spool_metrics()

    def _update_spool_metrics(self) -> None:
        if self.spool is None:
            return
        metrics.SPOOL_BYTES.set(self.spool.bytes)
        metrics.SPOOL_SEGMENTS.set(self.spool.segments)
        oldest = self.spool.oldest_at
        metrics.SPOOL_OLDEST_AGE.set(time.time() - oldest if oldest else 0)

    def _backoff(self, attempt: int, e: WriteError) -> float:
        delay = min(self.max_backoff_s, 0.1 * 2**attempt) * random.uniform(0.5, 1.0)
        if e.retry_after is not None:
            delay = max(delay, min(e.retry_after, self.max_backoff_s * 4))
        return delay

    def _pause(self, thread: str, delay: float) -> bool:
        """Wait `delay` (a retry backoff: an expected wait, not a stall), beating the thread's
        heartbeat meanwhile; True if the batcher is stopping."""
        deadline = time.monotonic() + delay
        while (remaining := deadline - time.monotonic()) > 0:
            self.supervisor.beat(thread)
            if self._stopping.wait(min(IDLE_BEAT_S, remaining)):
                return True
        return self._stopping.is_set()

    def _write_with_retry(self, lines: list[str], cuts: list[int]) -> list[tuple[int, str]]:
        attempt = 0
        while True:
            try:
                return self._write_parts(lines, cuts, WRITER)
            except WriteError as e:
                self.failed_attempts += 1
                metrics.WRITE_ERRORS.labels("unreachable" if e.status is None else str(e.status)).inc()
                if self._stopping.is_set():
                    raise Stopped() from e
                delay = self._backoff(attempt, e)
                attempt = min(attempt + 1, 16)
                log.warning("event=write_retry status=%s delay_s=%.2f attempt=%d detail=%r", e.status, delay, attempt, e.detail[:200])
                if self._pause(WRITER, delay):
                    raise Stopped() from e

    def _write_isolating(self, lines: list[str], lo: int, hi: int, thread: str) -> list[tuple[int, str]]:
        """Write lines[lo:hi]; on a non-retryable refusal, halve until the refused points
        are found. Rewriting accepted points is harmless: a point overwrites itself."""
        self.supervisor.beat(thread)  # the writer's or the drainer's: each write is bounded by influx.timeout_s
        try:
            self.writer.write(lines[lo:hi])
            return []
        except WriteError as e:
            if e.retryable:
                raise
            if hi - lo == 1:
                return [(lo, e.detail)]
        mid = (lo + hi) // 2
        return self._write_isolating(lines, lo, mid, thread) + self._write_isolating(lines, mid, hi, thread)


def _series(entry: Entry) -> str:
    """What parts a batch: the series key of the message's points (its first line up to the
    first space; an escaped space in an identity cuts it short, the same way for every
    point of that series)."""
    first = entry.lines[0] if entry.lines else entry.topic
    return first[:first.find(" ")]
