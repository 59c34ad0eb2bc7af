"""`aqpipe alerts`: derived records in, alerts and enforcement cases out.

Threads: paho's network loop queues each message; the worker evaluates it in one database
transaction (alert state, verdicts, case hours) and acknowledges it only after the commit;
the sender delivers committed changes (the outbox: alerts with `last_sent_at` NULL) to every
channel and re-posts firing alerts to Alertmanager every `alerts.resend_s`; the checker runs
the timer rules (overdue case deadlines, silence, stuck values, the daily valid-data rate).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

import paho.mqtt.client as paho
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from alerts import metrics
from alerts.cases import schema, store
from alerts.cases.db import make_engine, migrate
from alerts.engine import (AlertEngine, Effects, due_for_resend, load_alerts, mark_sent, notification, parse_time,
                           unsent)
from alerts.lifecycle import fingerprint
from alerts.notify import Delivery, Notifier, RetryPolicy
from alerts.notify.alertmanager import AlertmanagerNotifier
from alerts.notify.influx import InfluxNotifier
from alerts.notify.mqtt import MqttNotifier
from alerts.notify.webhook import WebhookNotifier, read_secret
from alerts.rules import rules_for
from alerts.sources import InfluxSource
from aqpipe.config import Config
from aqpipe.influx import InfluxQL, QueryError, make_writer
from aqpipe.mqtt import (
    ack_durable,
    connect_properties,
    connect_refused,
    make_client,
    on_disconnected,
    on_suback,
    subscribe_all,
)
from aqpipe.registry import Registry
from aqpipe.supervision import Policy, Supervisor

log = logging.getLogger("aqpipe.alerts")
CHINA = timezone(timedelta(hours=8))
STACK_POLLUTANTS = ("so2", "nox", "pm", "hg", "co")
# Messages committed in one transaction when they queue up (a fleet's hour arriving at once):
# one fsync for all of them; each is still acked only after that commit.
MAX_BATCH = 500
# Thread names (metric labels of aqpipe_thread_errors_total; unique per process).
MQTT_THREAD, WORKER_THREAD, SENDER_THREAD, CHECKER_THREAD = "alerts-mqtt", "alerts-worker", "alerts-sender", "alerts-checker"
# Queued by the network thread when the broker had no session for us: the worker replays
# the aggregator's stored rollups (see catch_up).
_CATCH_UP = "catch-up"


def subscriptions(prefix: str) -> list[str]:
    return [f"{prefix}/derived/stack/+", f"{prefix}/derived/aqi/+", f"{prefix}/status/+"]


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


class AlertsService:
    def __init__(self, cfg: Config, clock=time.time) -> None:
        self.cfg = cfg
        self.acfg = cfg.alerts
        self.clock = clock
        self.rules = rules_for(cfg)
        self.registry = Registry.load(cfg.registry_path)
        self.db = make_engine(cfg)
        migrate(self.db)
        self.source = InfluxSource(InfluxQL.from_config(cfg.influx))
        self.engine = AlertEngine(self.rules, self.registry, self.acfg.case_url_template, minutes=self.source,
                                  aqi_history=self.source.aqi_history,
                                  policy=store.CasePolicy.from_config(cfg.cases))
        self.supervisor = Supervisor(Policy.from_config(cfg.threads))
        self.client = make_client(cfg.mqtt, client_id=self.acfg.client_id, manual_ack=True)
        guard = self.supervisor.callback  # nothing escapes into paho's loop (it would end the thread)
        self.client.on_connect = guard(MQTT_THREAD, self._on_connect, _logged_only)
        self.client.on_disconnect = guard(MQTT_THREAD, self._on_disconnect, _logged_only)
        # a message that could not even be queued stays unacknowledged: redelivered next session
        self.client.on_message = guard(MQTT_THREAD, self._on_message, _logged_only)
        self.client.on_subscribe = guard(MQTT_THREAD, self._on_subscribe, _logged_only)
        self.supervisor.watch(MQTT_THREAD, lambda: getattr(self.client, "_thread", None))
        self.delivery = Delivery(RetryPolicy(self.acfg.notify_attempts, self.acfg.notify_backoff_s))
        self.alertmanager = (AlertmanagerNotifier(self.acfg.alertmanager_url, self.acfg.notify_timeout_s)
                             if self.acfg.alertmanager_url else None)
        self.channels: list[Notifier] = [n for n in [
            self.alertmanager,
            WebhookNotifier(self.acfg.webhook_url, read_secret(self.acfg.webhook_secret_file), self.acfg.notify_timeout_s)
            if self.acfg.webhook_url else None,
            MqttNotifier(self.client, cfg.mqtt.topic_prefix, self.acfg.notify_timeout_s) if self.acfg.mqtt_publish else None,
            InfluxNotifier(make_writer(cfg.influx)) if self.acfg.influx_events else None,
        ] if n is not None]
        self._generation = 0
        self._accepting = True
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._wake = threading.Event()
        # a batch taken from the queue and not yet acked: kept across a restart of the worker
        self._in_hand: tuple[list, bool] | None = None
        self._worker = self.supervisor.thread(WORKER_THREAD, self._work_loop)
        self._sender = self.supervisor.thread(SENDER_THREAD, self._send_loop)
        self._checker = self.supervisor.thread(CHECKER_THREAD, self._check_loop)
        self.connected = threading.Event()
        self.device_status: dict[str, str] = {}
        self.received = 0
        self.processed = 0  # committed and acknowledged
        self.rejected = 0
        self.notified = 0
        self.failed_sends = 0
        self.cases_touched: set[int] = set()
        self._valid_rate_day: date | None = None
        watches = self.rules.of_kind("aqi_watch")
        self._watch_hours = max((w.history_hours for w in watches), default=0)
        self._watch_standards = {s for w in watches for s in w.standards}
        self.last_check: float = 0.0

    # --- MQTT (network thread) ---
    def _on_connect(self, client: paho.Client, userdata, flags, reason_code, properties) -> None:
        if connect_refused(reason_code, log):
            return
        self._generation += 1
        metrics.MQTT_CONNECTED.set(1)
        if not flags.session_present:
            # Derived records published while we had no session are gone for us: the worker
            # replays the aggregator's stored rollups of the last catch_up_hours (a no-op for
            # hours it has already judged).
            self._queue.put(_CATCH_UP)
        filters = subscriptions(self.cfg.mqtt.topic_prefix)
        subscribe_all(client, filters, flags.session_present, log, client_id=self.acfg.client_id)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        on_suback(reason_codes, self.connected, log)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        on_disconnected(client, reason_code, self.connected, metrics.MQTT_CONNECTED, log, expected=not self._accepting)

    def _on_message(self, client: paho.Client, userdata, msg: paho.MQTTMessage) -> None:
        if not self._accepting:
            return  # unacked: redelivered to our next session
        self.received += 1
        self._queue.put((msg.topic, msg.payload, (self._generation, msg.mid, msg.qos), time.monotonic()))

    # --- worker: evaluate, commit, then ack ---
    def _work_loop(self) -> None:
        while True:
            if self._in_hand is None:  # else: restarted after an error, the same batch again
                self._in_hand = self._take()
            batch, last = self._in_hand
            if batch == [_CATCH_UP]:
                self._catch_up_safely()
                self._in_hand = None
            elif batch:
                effects = self._commit(batch)
                if effects is None:
                    return  # stopping while a commit fails: unacked, redelivered next session
                # committed: acked once only (an id acked twice could ack the message that
                # reuses it), so the batch leaves our hands before the acks go out
                self._in_hand = None
                self._acknowledge(batch, effects)
            else:
                self._in_hand = None
            self.supervisor.beat(WORKER_THREAD)
            if last:
                return

    def _take(self) -> tuple[list, bool]:
        """The next batch (what queued up meanwhile, up to MAX_BATCH: one commit for all) and
        whether stop() was asked. A catch-up request is a batch of its own."""
        while True:
            try:
                first = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                self.supervisor.beat(WORKER_THREAD)
        if first is None:
            return [], True
        if first == _CATCH_UP:
            return [first], False
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                return batch, True
            if nxt == _CATCH_UP:
                self._queue.put(nxt)  # after this batch
                break
            batch.append(nxt)
        return batch, False

    def _commit(self, batch: list) -> Effects | None:
        """Commit the effect of a batch of messages; None when stopping before it could."""
        failures = 0
        while True:
            try:
                return self.handle([(topic, payload) for topic, payload, _, _ in batch])
            except (SQLAlchemyError, QueryError) as e:
                # the database or InfluxDB (minute evidence) is unreachable: nothing was
                # committed; keep the messages unacked and try again, in order
                failures += 1
                kind = "database" if isinstance(e, SQLAlchemyError) else "influx"
                metrics.ERRORS.labels(kind).inc()
                delay = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.warning("event=records_failed kind=%s messages=%d delay_s=%.1f detail=%r", kind, len(batch),
                            delay, str(e)[:200])
                self.supervisor.beat(WORKER_THREAD)  # alive, waiting as it should
                if self._stop.wait(delay):
                    return None  # shutting down: unacked, the broker redelivers them

    def _acknowledge(self, batch: list, effects: Effects) -> None:
        ack_durable(self.client, [token for _, _, token, _ in batch], self._generation)
        self.processed += len(batch)
        done = time.monotonic()
        for _, _, _, arrived in batch:
            metrics.RECORD_SECONDS.observe(done - arrived)
        if effects.changed:
            self._wake.set()
        self.cases_touched |= effects.cases

    def _catch_up_safely(self) -> None:
        try:
            self.catch_up()
        except (SQLAlchemyError, QueryError) as e:
            metrics.ERRORS.labels("catch_up").inc()
            log.warning("event=catch_up_failed detail=%r (records published while we had no session may be missed)",
                        str(e)[:200])

    def catch_up(self) -> int:
        """Replay the aggregator's rollups of the last `alerts.catch_up_hours` from InfluxDB
        through the engine, if this database has judged anything before (a first start does
        not alert on history). Idempotent: an hour already judged the same changes nothing."""
        with self.db.connect() as conn:
            seen_before = conn.execute(select(schema.alert_hours.c.fingerprint).limit(1)).first() is not None
        if not seen_before:
            return 0
        since = _utc(self.clock()) - timedelta(hours=self.acfg.catch_up_hours)
        prefix = self.cfg.mqtt.topic_prefix
        rollups = self.source.rollups_since(since)
        effects = Effects()
        for k in range(0, len(rollups), MAX_BATCH):
            chunk = rollups[k:k + MAX_BATCH]
            effects.add(self.handle([(f"{prefix}/derived/{topic}", json.dumps(rec).encode()) for topic, rec in chunk]))
        if effects.changed:
            self._wake.set()
        self.cases_touched |= effects.cases
        log.info("event=catch_up rollups=%d changed=%d since=%s", len(rollups), len(effects.changed), since.isoformat())
        return len(rollups)

    def _parse(self, topic: str, payload: bytes) -> dict[str, Any] | None:
        """The record of a derived topic, or None (status message, or bad input: counted, logged)."""
        parts = topic.split("/")
        if len(parts) >= 2 and parts[-2] == "status":
            self.device_status[parts[-1]] = payload.decode("utf-8", "replace").strip()
            return None
        try:
            record = json.loads(payload)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            self.rejected += 1
            log.warning("event=record_rejected topic=%s detail=%r", topic, str(e)[:200])
            return None
        return record

    def _apply(self, conn, topic: str, record: dict[str, Any], now: datetime,
               evidence: dict[int, list[dict[str, Any]]] | None = None) -> Effects:
        if "/derived/stack/" in topic:
            return self.engine.stack_record(conn, record, now, (evidence or {}).get(id(record)))
        if "/derived/aqi/" in topic:
            return self.engine.aqi_record(conn, record, now, (evidence or {}).get(id(record)))
        return Effects()

    def handle(self, messages: list[tuple[str, bytes]]) -> Effects:
        """The effect of some messages, committed in one transaction. A record that is not what
        the aggregator publishes is rejected alone: the batch is then redone one by one."""
        records = [(t, r) for t, p in messages if (r := self._parse(t, p)) is not None]
        now = _utc(self.clock())
        effects = Effects()
        # The minute evidence of exceeded hours is read from InfluxDB before the transaction:
        # SQLite's write lock (BEGIN IMMEDIATE) is then held only for the database work.
        evidence = {}
        for topic, record in records:
            if "/derived/stack/" in topic and record.get("exceeded") is True:
                try:
                    evidence[id(record)] = self.source.minutes(str(record["outlet"]), str(record["pollutant"]),
                                                               parse_time(record["time"]))
                except (KeyError, ValueError):
                    pass  # a malformed record: rejected below
            elif "/derived/aqi/" in topic and record.get("period") == "hour" and self._watch_hours \
                    and record.get("standard") in self._watch_standards:
                try:  # the watch's AQI history, likewise read before the transaction
                    evidence[id(record)] = self.source.aqi_history(str(record["station"]), str(record["standard"]),
                                                                   parse_time(record["time"]), self._watch_hours)
                except (KeyError, ValueError):
                    pass
        try:
            with self.db.begin() as conn:
                for topic, record in records:
                    effects.add(self._apply(conn, topic, record, now, evidence))
            return effects
        except (SQLAlchemyError, QueryError):
            raise  # infrastructure: the caller retries the whole batch, unacked meanwhile
        except Exception:  # noqa: BLE001 - one record's fault: find it, alone
            effects = Effects()
        for topic, record in records:
            try:
                with self.db.begin() as conn:
                    effects.add(self._apply(conn, topic, record, now, evidence))
            except (SQLAlchemyError, QueryError):
                raise
            except Exception as e:  # noqa: BLE001
                # not what the aggregator publishes (or a bug it trips): rolled back alone and
                # acknowledged with the batch, so it cannot block the ones behind it; the rollup
                # stays in InfluxDB (stack_hourly / aqi_*) for a replay once fixed
                self.rejected += 1
                metrics.ERRORS.labels("record").inc()
                log.warning("event=record_rejected topic=%s detail=%r", topic, f"{type(e).__name__}: {e}"[:200],
                            exc_info=not isinstance(e, (KeyError, ValueError, TypeError)))
        return effects

    # --- sender: the outbox, and Alertmanager's resends ---
    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self.supervisor.beat(SENDER_THREAD)
            self._wake.wait(min(1.0, self.acfg.resend_s / 4))
            self._wake.clear()
            try:
                self.send_once()
            except SQLAlchemyError as e:
                metrics.ERRORS.labels("database").inc()
                log.warning("event=send_failed detail=%r", str(e)[:200])
                self._stop.wait(2.0)

    def send_once(self) -> int:
        """Deliver committed changes to every channel; re-post firing alerts due for a resend."""
        now = _utc(self.clock())
        with self.db.begin() as conn:
            changes = unsent(conn)
            resend = due_for_resend(conn, now, self.acfg.resend_s) if self.alertmanager else []
        sent = 0
        if changes:
            batch = [notification(st) for st in changes]
            ok = all([self.delivery.deliver(ch, batch) for ch in self.channels])
            if ok:
                with self.db.begin() as conn:
                    mark_sent(conn, [(st.fingerprint, st.updated_at) for st in changes], now)
                sent += len(changes)
                self.notified += len(changes)
            else:
                self.failed_sends += len(changes)  # stays in the outbox: tried again next round
        if resend and self.alertmanager is not None:
            if self.delivery.deliver(self.alertmanager, [notification(st) for st in resend]):
                with self.db.begin() as conn:
                    mark_sent(conn, [(st.fingerprint, st.updated_at) for st in resend], now)
        return sent

    # --- checker: timer rules ---
    def _check_loop(self) -> None:
        while not self._wait_check():
            self.supervisor.beat(CHECKER_THREAD)
            try:
                effects = self.check_once()
            except (SQLAlchemyError, QueryError) as e:
                metrics.ERRORS.labels("check").inc()
                log.warning("event=check_failed detail=%r", str(e)[:200])
                effects = Effects()
            self.last_check = self.clock()
            if effects.changed:
                self._wake.set()

    def _wait_check(self) -> bool:
        """Wait for the next check (at once on start), beating meanwhile; True when stopping."""
        deadline = time.monotonic() + (0 if self.last_check == 0 else self.acfg.dq_interval_s)
        while (left := deadline - time.monotonic()) > 0:
            if self._stop.wait(min(left, 5.0)):
                return True
            self.supervisor.beat(CHECKER_THREAD)
        return self._stop.is_set()

    def check_once(self) -> Effects:
        now = _utc(self.clock())
        effects = Effects()
        with self.db.begin() as conn:
            effects.add(self.engine.deadlines(conn, now))
        for rule in self.rules.of_kind("silence"):
            window = max(timedelta(days=1), timedelta(minutes=2 * rule.minutes))
            seen, stopped = self.source.last_seen(rule.measurement, window)
            with self.db.begin() as conn:
                effects.add(self.engine.silence(conn, rule, seen, stopped, now))
        for rule in self.rules.of_kind("stuck"):
            series = self.source.recent_values(rule.measurement, rule.fields, rule.readings, timedelta(days=1))
            with self.db.begin() as conn:
                effects.add(self.engine.stuck(conn, rule, series, now))
        effects.add(self._valid_rate(now))
        for rule in self.rules.rules:
            with self.db.begin() as conn:
                metrics.FIRING.labels(rule.name).set(len(load_alerts(conn, rule.name, ["firing"])))
        return effects

    def _valid_rate(self, now: datetime) -> Effects:
        """Judge yesterday's (China date) valid-data rate of every outlet, once a day, from the
        stack_exceedance verdicts kept in alert_hours (valid = judged; stopped = not due)."""
        effects = Effects()
        yesterday = (now.astimezone(CHINA) - timedelta(days=1)).date()
        stack_rules = self.rules.of_kind("stack_exceedance")
        if self._valid_rate_day == yesterday or not stack_rules:
            return effects
        start = datetime(yesterday.year, yesterday.month, yesterday.day, tzinfo=CHINA).astimezone(timezone.utc)
        end = start + timedelta(days=1)
        sr = stack_rules[0]
        # which outlet each stack_exceedance series belongs to (fingerprints are rule + labels)
        owner = {fingerprint(sr.name, {"alertname": sr.alertname, "rule": sr.name, "outlet": o.id, "pollutant": p,
                                       "enterprise": o.enterprise, "team": sr.team, "severity": sr.severity}): o.id
                 for o in self.registry.outlets.values() for p in STACK_POLLUTANTS}
        t = schema.alert_hours
        with self.db.begin() as conn:
            by_outlet: dict[str, list[dict[str, Any]]] = {}
            for r in conn.execute(select(t.c.fingerprint, t.c.hour_end, t.c.verdict, t.c.reason).where(
                    t.c.hour_end > start, t.c.hour_end <= end)):
                if r.fingerprint in owner:
                    by_outlet.setdefault(owner[r.fingerprint], []).append(
                        {"time": r.hour_end.isoformat(), "valid_minutes": 60 if r.verdict != "not_judged" else 0,
                         "not_running_minutes": 60 if (r.reason or "").startswith("stopped") else 0})
            # an outlet without any verdict that day: the silence rule speaks for it
            for rule in self.rules.of_kind("valid_rate"):
                for outlet, hours in sorted(by_outlet.items()):
                    effects.add(self.engine.valid_rate(conn, rule, outlet, end, hours, now))
        self._valid_rate_day = yesterday
        return effects

    # --- lifecycle ---
    def start(self) -> None:
        self._worker.start()
        self._sender.start()
        self._checker.start()
        self.client.connect_async(self.cfg.mqtt.host, self.cfg.mqtt.port, keepalive=self.cfg.mqtt.keepalive_s,
                                  clean_start=False, properties=connect_properties(self.cfg.mqtt))
        self.client.loop_start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop consuming, finish (commit and ack) what was received, deliver, disconnect."""
        self._accepting = False
        self.supervisor.stop()
        self._queue.put(None)
        # set first: a worker retrying a failed commit gives up (its messages stay unacked,
        # redelivered to the next session); one that can commit finishes the queue
        self._stop.set()
        self.delivery.stop.set()  # no waiting between retries now
        self._worker.join(timeout_s)
        self._wake.set()
        self._sender.join(timeout_s)
        self._checker.join(timeout_s)
        try:
            self.delivery.stop.clear()
            self.send_once()  # what the last records changed
        except SQLAlchemyError:
            pass
        self.client.disconnect()
        self.client.loop_stop()
        for ch in self.channels:
            ch.close()
        self.db.dispose()
        log.info("event=stopped received=%d processed=%d notified=%d", self.received, self.processed, self.notified)

    def ready(self) -> tuple[bool, str]:
        ok, why = self.supervisor.check()
        problems = ([] if ok else [why]) + ([] if self.connected.is_set() else ["mqtt not connected"])
        return (False, "alerts: " + "; ".join(problems)) if problems else (True, "ok")

    def fatal(self) -> str | None:
        """Why this service cannot go on (a thread given up), for the runner; None while it can."""
        return self.supervisor.fatal()

    def status_line(self) -> str:
        with self.db.connect() as conn:
            firing = len(load_alerts(conn, states=["firing"]))
            outbox = len(unsent(conn))
        return (f"received={self.received} processed={self.processed} rejected={self.rejected} firing={firing} "
                f"notified={self.notified} outbox={outbox} cases={len(self.cases_touched)} "
                f"devices_offline={sum(1 for v in list(self.device_status.values()) if v == 'offline')} "
                f"mqtt={'up' if self.connected.is_set() else 'down'} "
                f"alertmanager={'on' if self.alertmanager else 'off'}")


def _logged_only(*args) -> None:
    """A callback raised: logged and counted by the supervisor; nothing to set aside."""
