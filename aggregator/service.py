"""The aggregator service: MQTT tells it what is dirty, InfluxDB tells it the numbers.

Three threads: paho's network loop reads each message only to learn which (station/outlet,
hour, reading time, fields) it touches (`aqpipe.decoders.touches`, no full decode); the
persister records that in the journal (fsync) and then acknowledges; the scheduler computes
every dirty rollup whose period is over (plus `settle_s`) from the readings stored in
InfluxDB once InfluxDB holds every field seen on MQTT, writes the points (idempotent: same
measurement, tags and time) and publishes them on aq/v1/derived/...

Giving up on readings that do not land is provisional: after `max_wait_s` the rollup is
written with complete=false and re-checked every `recheck_s`; when the readings land
(ingest drained its spool, a dead letter was replayed) it is recomputed, complete=true.

Each runs under a Supervisor (aqpipe/supervision.py): paho's callbacks are guarded, the
persister and the scheduler are restarted after an unexpected exception (the persister
keeps the items in hand), and /readyz names a thread that is failing, dead or stalled.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable

import paho.mqtt.client as paho

from aggregator import metrics, presence
from aggregator.keys import DAY, HOUR, InputKey, OutputKey, affected, closes_at, day_of_hour, hour_of_ns, inputs_of
from aggregator.presence import Marks
from aggregator.rollup import AqiOptions, Point, ambient_points, stack_points
from aggregator.source import NS, fetch, identities
from aggregator.state import AggregatorState
from aqpipe.config import Config
from aqpipe.decoders.touches import Touch, touches
from aqpipe.errors import Reason, RejectedReading
from aqpipe.influx import InfluxQL, QueryError, WriteError, make_writer
from aqpipe.mqtt import (
    ack_durable,
    connect_properties,
    connect_refused,
    make_client,
    on_disconnected,
    on_suback,
    subscribe_all,
)
from aqpipe.reading import IDENTITY_TAG
from aqpipe.registry import Registry
from aqpipe.supervision import Policy, Supervisor, logged_only
from aqpipe.topics import subscriptions

log = logging.getLogger("aqpipe.aggregator")

MAX_RUN_DAYS = 7  # days computed per query batch (bounds memory and response size)
WRITE_CHUNK = 5000
EXPIRE_EVERY_S = 60.0  # how often seen readings and incomplete rollups past the lateness are dropped
# Thread names: labels of aqpipe_thread_errors_total, named by /readyz.
MQTT_THREAD, JOURNAL_THREAD, SCHEDULER_THREAD = "aggregator-mqtt", "aggregator-journal", "aggregator-scheduler"


class AggregatorService:
    def __init__(self, cfg: Config, registry: Registry | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.acfg = cfg.aggregator
        self.clock = clock
        self.registry = registry if registry is not None else Registry.load(cfg.registry_path)
        self.state = AggregatorState(cfg.data_dir / "aggregator")
        self.query = InfluxQL.from_config(cfg.influx)
        self.writer = make_writer(cfg.influx)
        self.options = AqiOptions(self.acfg.cn_standards, self.acfg.cn_2026_effective, self.acfg.us)
        self.supervisor = Supervisor(Policy.from_config(cfg.threads))
        self.status_interval_s = self.acfg.status_interval_s
        self.client = make_client(cfg.mqtt, client_id=self.acfg.client_id, manual_ack=True)
        guard = self.supervisor.callback  # nothing escapes into paho's loop (it would end the thread)
        self.client.on_connect = guard(MQTT_THREAD, self._on_connect, logged_only)
        self.client.on_disconnect = guard(MQTT_THREAD, self._on_disconnect, logged_only)
        self.client.on_message = guard(MQTT_THREAD, self._on_message, self._on_message_failed)
        self.client.on_subscribe = guard(MQTT_THREAD, self._on_subscribe, logged_only)
        self.supervisor.watch(MQTT_THREAD, lambda: getattr(self.client, "_thread", None))
        self._generation = 0
        self._accepting = True
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._journal_in_hand: tuple[list, bool] | None = None  # kept across a restart of the persister
        self._persister = self.supervisor.thread(JOURNAL_THREAD, self._persist_loop)
        self._scheduler = self.supervisor.thread(SCHEDULER_THREAD, self._schedule_loop)
        self._failures = 0
        self._last_watermark = 0.0
        self._last_expiry = 0.0
        self._resumed = self.state.watermark is not None  # a previous run left its journal
        self._recompute_all = threading.Event()
        self._recomputed_on_start = threading.Event()
        self.connected = threading.Event()
        self.idle = threading.Event()  # set while no rollup is due (tests, status)
        self.received = 0
        self.journalled = 0  # messages recorded in the journal (and acknowledged)
        self.rejected = 0
        self.written = 0
        self.batches = 0

    # --- MQTT (network thread) ---
    def _on_connect(self, client: paho.Client, userdata, flags, reason_code, properties) -> None:
        if connect_refused(reason_code, log):
            return
        self._generation += 1
        metrics.MQTT_CONNECTED.set(1)
        if not flags.session_present and self._resumed:
            # The broker lost our session (expired, broker state lost, new client id): whatever
            # it queued for us is gone, late readings included. Recompute the lateness window.
            log.warning("event=mqtt_session_lost client_id=%s (recomputing the last %s hours from InfluxDB)",
                        self.acfg.client_id, self.acfg.lateness_hours)
            self._recompute_all.set()
        filters = subscriptions(self.cfg.mqtt.topic_prefix)
        subscribe_all(client, filters, flags.session_present, log, client_id=self.acfg.client_id)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        on_suback(reason_codes, self.connected, log)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        on_disconnected(client, reason_code, self.connected, metrics.MQTT_CONNECTED, log, expected=not self._accepting)

    def _on_message(self, client: paho.Client, userdata, msg: paho.MQTTMessage) -> None:
        if not self._accepting:
            return  # unacked: the broker redelivers it to our next session
        self.received += 1
        token = (self._generation, msg.mid, msg.qos)
        try:
            marks = self._marks(touches(msg.topic, msg.payload, self.cfg.mqtt.topic_prefix, self.registry,
                                        self.cfg.ingest.max_payload_bytes))
        except RejectedReading:
            self.rejected += 1  # ingest dead-letters it; nothing for us to compute
            marks = {}
        self._queue.put((marks, token))

    def _on_message_failed(self, client: paho.Client, userdata, msg: paho.MQTTMessage, error: Exception) -> None:
        """Learning what the message touches raised (a bug; logged and counted already). Ingest
        stores or dead-letters the same message on its own; what the aggregator owes it is a
        recompute of the hours it touched, which it cannot name now. So: acknowledge it after
        the journal (it must not stay unacked for ever, nor block the ones behind it) and
        recompute the whole lateness window from InfluxDB, as after a lost session."""
        if not self._accepting:
            return
        self._recompute_all.set()
        self._queue.put(({}, (self._generation, msg.mid, msg.qos)))

    def _marks(self, touched: list[Touch]) -> dict[InputKey, Marks]:
        """Per input hour, the reading times and fields to wait for."""
        if not touched:
            return {}  # e.g. an HJ 212 command that carries no data
        now_ns = time.time_ns()
        # Ingest's time window (aqpipe.validate) rejects the whole message: so do we.
        if max(t.time_ns for t in touched) > now_ns + int(self.cfg.ingest.future_tolerance_s * NS):
            raise RejectedReading(Reason.FUTURE, "a reading beyond ingest.future_tolerance_s")
        if min(t.time_ns for t in touched) < now_ns - int(self.cfg.ingest.retention_days * DAY * NS):
            raise RejectedReading(Reason.TOO_OLD, "a reading beyond ingest.retention_days")
        oldest_ns = int((self.clock() - self.acfg.lateness_hours * HOUR) * NS)
        seen: dict[InputKey, Marks] = {}
        for t in touched:
            if t.time_ns < oldest_ns:
                continue  # beyond the lateness: stored by ingest, not recomputed (README)
            mask = presence.mask_of(t.measurement, t.fields)
            if not mask:
                continue  # e.g. meteorology only: no rollup depends on it
            hour = hour_of_ns(t.time_ns)
            marks = seen.setdefault(InputKey(t.measurement, t.identity, hour), {})
            offset = t.time_ns - (hour - HOUR) * NS
            marks[offset] = marks.get(offset, 0) | mask
        return seen

    # --- persister thread: journal, then ack ---
    def _persist_loop(self) -> None:
        done = False
        while not done:
            if self._journal_in_hand is None:  # else: restarted after an error, journalled again
                self._journal_in_hand = self._take()
            items, done = self._journal_in_hand
            if items:
                self._persist(items)
            # Journalled: acked once only (a message id acked twice could ack the message that
            # reuses it), so the items leave our hands before the acks go out.
            self._journal_in_hand = None
            if items:
                self._acknowledge(items)
            self.supervisor.beat(JOURNAL_THREAD)

    def _take(self) -> tuple[list, bool]:
        """Wait for queued marks; returns up to 10,000 of them and whether stop() was asked."""
        while True:
            try:
                first = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                self.supervisor.beat(JOURNAL_THREAD)
        if first is None:
            return [], True
        items = [first]
        while len(items) < 10_000:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return items, True
            items.append(item)
        return items, False

    def _persist(self, items: list) -> None:
        seen: dict[InputKey, Marks] = {}
        for marks, _ in items:
            for key, m in marks.items():
                have = seen.setdefault(key, {})
                for offset, mask in m.items():
                    have[offset] = have.get(offset, 0) | mask
        dirty = {out for key in seen for out in affected(key)}
        self.state.mark(seen, dirty)

    def _acknowledge(self, items: list) -> None:
        ack_durable(self.client, [token for _, token in items], self._generation)
        self.journalled += len(items)
        metrics.DIRTY.set(self.state.counts()[0])

    # --- scheduler thread ---
    def _due_at(self, key: OutputKey) -> float:
        return closes_at(key) + self.acfg.settle_s

    def _schedule_loop(self) -> None:
        while not self._stop.is_set() and not self._recomputed_on_start.is_set():
            self.supervisor.beat(SCHEDULER_THREAD)
            try:
                self._recompute_since_watermark()
                self._recomputed_on_start.set()
                break
            except (QueryError, WriteError) as e:
                log.warning("event=startup_recompute_failed detail=%r (retrying)", str(e)[:200])
                if self._stop.wait(2.0):
                    return
        while not self._stop.is_set():
            if self._recompute_all.is_set():
                try:
                    self._recompute_since_watermark(full=True)
                    self._recompute_all.clear()
                except (QueryError, WriteError) as e:
                    log.warning("event=recompute_failed detail=%r (retrying)", str(e)[:200])
            self.run_once()
            self.supervisor.beat(SCHEDULER_THREAD)
            self._stop.wait(self.acfg.tick_s)

    def _recompute_since_watermark(self, full: bool = False) -> None:
        """Mark dirty every rollup since the watermark (bounded by the lateness), for every identity.

        On start this covers the hours that closed while the service was down, even if their
        readings never reached us over MQTT; `full` (the broker lost our session, so late
        readings it queued are gone too) recomputes the whole lateness window. InfluxDB has
        the readings, so recomputing from it loses no hour.
        """
        now = self.clock()
        oldest = now - self.acfg.lateness_hours * HOUR
        w = self.state.watermark
        start = oldest if w is None or full else max(oldest, w - self.acfg.settle_s - 2 * HOUR)
        first_hour = hour_of_ns(int(start * NS))
        last_hour = hour_of_ns(int(now * NS))
        hours = range(first_hour, last_hour + HOUR, HOUR)
        dirty: list[OutputKey] = []
        for kind in ("ambient", "stack"):
            for ident in identities(self.query, kind):
                dirty += [OutputKey(kind, ident, "hour", h) for h in hours]
                if kind == "ambient":
                    dirty += [OutputKey(kind, ident, "day", d) for d in sorted({day_of_hour(h) for h in hours})]
        self.state.redirty(dirty)
        log.info("event=recompute_scheduled from=%s hours=%d rollups=%d watermark=%s",
                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(first_hour - HOUR)), len(hours), len(dirty), w)

    def run_once(self) -> int:
        """Compute every rollup that is due now; returns how many points were written."""
        now = self.clock()
        if now - self._last_expiry >= EXPIRE_EVERY_S:
            self._expire(now)
        due = self.state.snapshot_due(now, self._due_at)
        rechecks = self.state.snapshot_recheck(now)
        if not due:
            self._maybe_advance_watermark(now)
            self.idle.set()
            if not rechecks:
                return 0
        else:
            self.idle.clear()
        written = 0
        for kind in ("ambient", "stack"):
            outs = {k: s for k, s in due.items() if k.kind == kind}
            again = {k: n for k, n in rechecks.items() if k.kind == kind}
            for run in _day_runs(outs, again):
                written += self._compute(kind, {k: outs[k] for k in run if k in outs},
                                         {k: again[k] for k in run if k in again and k not in outs}, now)
        metrics.DIRTY.set(self.state.counts()[0])
        metrics.INCOMPLETE.set(self.state.incomplete_count())
        return written

    def _expire(self, now: float) -> None:
        """Past `lateness_hours` nothing is recomputed: stop waiting for readings that never landed."""
        self._last_expiry = now
        oldest = now - self.acfg.lateness_hours * HOUR
        for out in self.state.expire(oldest, closes_at, lambda key: max(closes_at(o) for o in affected(key))):
            log.warning("event=rollup_left_incomplete kind=%s identity=%s period=%s time=%d "
                        "(readings seen on MQTT never reached InfluxDB within lateness_hours)",
                        out.kind, out.identity, out.period, out.time)

    def _maybe_advance_watermark(self, now: float) -> None:
        if now - self._last_watermark >= 30.0 or self.state.watermark is None:
            if not self.state.snapshot_due(now, self._due_at, ignore_retry=True):
                self.state.set_watermark(now)
                self._last_watermark = now

    def _compute(self, kind: str, outs: dict[OutputKey, int], rechecks: dict[OutputKey, int], now: float) -> int:
        """Compute dirty `outs` (with their sequence numbers) and incomplete `rechecks` (with
        their missing counts) once InfluxDB holds what they wait for; returns points written."""
        started = time.monotonic()
        wanted = set(outs) | set(rechecks)
        days = sorted({day_of_hour(k.time) if k.period == "hour" else k.time for k in wanted})
        ids = sorted({k.identity for k in wanted})
        # One day of context in front: 8-h, 24-h and NowCast windows of the first hours.
        day0 = days[0] - DAY if kind == "ambient" else days[0]
        n_days = (days[-1] - day0) // DAY + 1
        try:
            series = fetch(self.query, kind, ids, day0, day0 + n_days * DAY)
        except QueryError as e:
            return self._failed(wanted, now, "query", e)

        # Compute only once InfluxDB holds every (reading time, field) seen on MQTT for the
        # hours used, or, after max_wait_s, provisionally: complete=false, re-checked.
        stored = presence.present(series, kind)
        found: dict[InputKey, Marks] = {}
        missing: dict[InputKey, int] = {}
        blocked: set[InputKey] = set()
        wall = time.time()
        for key, (marks, since) in self.state.seen_for({i for k in wanted for i in inputs_of(k)}).items():
            got, miss = presence.split(marks, stored.get(key, {}))
            if got:
                found[key] = got
            if miss:
                missing[key] = presence.count(miss)
                if wall - since < self.acfg.max_wait_s:
                    blocked.add(key)
        self.state.verified(found)
        ready: dict[OutputKey, int] = {}
        incomplete: dict[OutputKey, int] = {}
        later: list[OutputKey] = []
        for k in wanted:
            ins = inputs_of(k)
            if any(i in blocked for i in ins):
                if k in rechecks:
                    later.append(k)
                continue
            n_missing = sum(missing.get(i, 0) for i in ins)
            if k in rechecks and n_missing and n_missing >= rechecks[k]:
                later.append(k)  # nothing more has landed: the point written is still right
                continue
            ready[k] = outs.get(k, -1)  # -1: a re-check, never "done" for a dirty marking
            if n_missing:
                incomplete[k] = n_missing
        if blocked:
            metrics.WAITING_FOR_INGEST.inc()
        if later:
            self.state.recheck_later(later, now + self.acfg.recheck_s)
        if not ready:
            return 0
        gave_up = {i for k in incomplete for i in inputs_of(k) if i in missing}
        if gave_up:
            metrics.GAVE_UP_WAITING.inc(len(gave_up))
            log.warning("event=readings_never_stored kind=%s hours=%d missing=%d identities=%s (written with "
                        "complete=false; re-checked every %ss until lateness_hours; see ingest spool / dead letters)",
                        kind, len(gave_up), sum(missing[i] for i in gave_up),
                        ",".join(sorted({i.identity for i in gave_up})[:5]), self.acfg.recheck_s)

        def want(period: str) -> Callable[[str, int], bool]:
            return lambda ident, t: OutputKey(kind, ident, period, t) in ready

        if kind == "ambient":
            points = ambient_points(series, day0, n_days, self.options, want("hour"), want("day"))
        else:
            points = stack_points(series, day0 + HOUR, n_days * 24, self.registry, self.acfg.stack_o2_mode,
                                  want("hour"))
        for p in points:
            p.set_complete(_output_of(kind, p) not in incomplete)
        try:
            lines = [p.line() for p in points]
            for k in range(0, len(lines), WRITE_CHUNK):
                self.writer.write(lines[k:k + WRITE_CHUNK])
        except WriteError as e:
            return self._failed(ready, now, "write", e)
        self._failures = 0
        self._publish(points)
        self.state.done(ready, incomplete, now + self.acfg.recheck_s)
        for p in points:
            metrics.ROLLUPS.labels(p.measurement).inc()
        self.written += len(points)
        self.batches += 1
        metrics.AGGREGATE_SECONDS.observe(time.monotonic() - started)
        log.debug("event=rollups kind=%s outputs=%d incomplete=%d points=%d seconds=%.3f", kind, len(ready),
                  len(incomplete), len(points), time.monotonic() - started)
        return len(points)

    def _failed(self, outs: Iterable[OutputKey], now: float, what: str, e: Exception) -> int:
        self._failures += 1
        metrics.ERRORS.labels(what).inc()
        delay = min(60.0, 0.5 * 2 ** min(self._failures, 7))
        log.warning("event=rollup_%s_failed delay_s=%.1f detail=%r", what, delay, str(e)[:200])
        self.state.postpone(outs, now + delay)
        return 0

    def _publish(self, points: list[Point]) -> None:
        if not self.acfg.publish_derived:
            return
        prefix = self.cfg.mqtt.topic_prefix
        for p in points:
            self.client.publish(f"{prefix}/derived/{p.topic}", p.payload(), qos=1)

    # --- lifecycle ---
    def start(self) -> None:
        self._persister.start()
        self._scheduler.start()
        self.client.connect_async(self.cfg.mqtt.host, self.cfg.mqtt.port, keepalive=self.cfg.mqtt.keepalive_s,
                                  clean_start=False, properties=connect_properties(self.cfg.mqtt))
        self.client.loop_start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop consuming, journal and ack what was received, finish the batch in hand, disconnect."""
        self._accepting = False
        self.supervisor.stop()
        self._queue.put(None)
        self._persister.join(timeout_s)
        self._stop.set()
        self._scheduler.join(timeout_s)
        self.client.disconnect()
        self.client.loop_stop()
        self.writer.close()
        self.state.close()
        log.info("event=stopped received=%d written=%d", self.received, self.written)

    @property
    def recompute_pending(self) -> bool:
        """A recompute from InfluxDB (start, lost session) is yet to be scheduled."""
        return not self._recomputed_on_start.is_set() or self._recompute_all.is_set()

    def due(self) -> int:
        """How many rollups are due now (computed on the next ticks)."""
        return len(self.state.snapshot_due(self.clock(), self._due_at, ignore_retry=True))

    def ready(self) -> tuple[bool, str]:
        ok, why = self.supervisor.check()
        problems = ([] if ok else [why]) + ([] if self.connected.is_set() else ["mqtt not connected"])
        return (False, "aggregator: " + "; ".join(problems)) if problems else (True, "ok")

    def fatal(self) -> str | None:
        """Why this service cannot go on (a thread given up), for the runner; None while it can."""
        return self.supervisor.fatal()

    def status_line(self) -> str:
        dirty, seen = self.state.counts()
        return (f"received={self.received} rejected={self.rejected} due={self.due()} dirty={dirty} waiting_hours={seen} "
                f"incomplete={self.state.incomplete_count()} written={self.written} batches={self.batches} "
                f"mqtt={'up' if self.connected.is_set() else 'down'}")


def _output_of(kind: str, p: Point) -> OutputKey:
    """The rollup a point is the value of."""
    return OutputKey(kind, p.tags[IDENTITY_TAG[kind]], "day" if p.measurement == "aqi_daily" else "hour", p.time_s)


def _day_runs(*outputs: dict[OutputKey, int]) -> list[dict[OutputKey, int]]:
    """Split outputs into runs of consecutive China days (at most MAX_RUN_DAYS each)."""
    by_day: dict[int, dict[OutputKey, int]] = {}
    for outs in outputs:
        for k, s in outs.items():
            by_day.setdefault(day_of_hour(k.time) if k.period == "hour" else k.time, {})[k] = s
    runs: list[dict[OutputKey, int]] = []
    prev = None
    count = 0
    for d in sorted(by_day):
        if prev is None or d - prev != DAY or count >= MAX_RUN_DAYS:
            runs.append({})
            count = 0
        runs[-1].update(by_day[d])
        prev = d
        count += 1
    return runs
