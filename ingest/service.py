"""The ingest service: MQTT in, InfluxDB out, acknowledged only once durable."""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from pathlib import Path
from typing import IO

import paho.mqtt.client as paho

from ingest import metrics
from ingest.batcher import Batcher, Entry
from aqpipe.config import Config
from ingest.deadletter import DeadLetter, DeadLetterStore
from aqpipe.decode import MessageDecoder
from aqpipe.errors import ConfigError, Reason, RejectedReading
from aqpipe.influx import InfluxQL, make_writer
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
from ingest.spool import Spool
from aqpipe.supervision import Policy, Supervisor, logged_only
from aqpipe.topics import subscriptions

log = logging.getLogger("aqpipe.ingest")

MQTT_THREAD = "ingest-mqtt"  # paho's network thread (its callbacks): label and /readyz name


class IngestService:
    def __init__(self, cfg: Config, registry: Registry | None = None) -> None:
        self.cfg = cfg
        registry = registry if registry is not None else Registry.load(cfg.registry_path)
        self.decoder = MessageDecoder.from_config(cfg, registry)
        self.store = DeadLetterStore(cfg.deadletter_dir)
        self.writer = make_writer(cfg.influx)
        self.supervisor = Supervisor(Policy.from_config(cfg.threads))
        self.status_interval_s = cfg.ingest.status_interval_s
        self.batcher = Batcher(
            self.writer, self.store, self._ack,
            batch_size=cfg.influx.batch_size,
            flush_interval_s=cfg.influx.flush_interval_s,
            max_backoff_s=cfg.influx.retry_max_backoff_s,
            spool=Spool(cfg.spool_dir, cfg.spool.max_bytes) if cfg.spool.enabled else None,
            supervisor=self.supervisor,
            concurrency=cfg.influx.write_concurrency,
        )
        self.client = make_client(cfg.mqtt, manual_ack=True)
        # An exception must not escape into paho's loop: it would end the network thread
        # (no more messages, no acks) while the process stays up.
        guard = self.supervisor.callback
        self.client.on_connect = guard(MQTT_THREAD, self._on_connect, logged_only)
        self.client.on_disconnect = guard(MQTT_THREAD, self._on_disconnect, logged_only)
        self.client.on_message = guard(MQTT_THREAD, self._on_message, self._on_message_failed)
        self.client.on_subscribe = guard(MQTT_THREAD, self._on_subscribe, logged_only)
        self.supervisor.watch(MQTT_THREAD, lambda: getattr(self.client, "_thread", None))
        # Acks only make sense on the connection a message arrived on: after a reconnect
        # the broker redelivers what we had not acked, and a stale mid may name another message.
        self._generation = 0
        self._lock = threading.Lock()
        self._accepting = True
        self.received = 0
        self.inflight = 0
        self.connected = threading.Event()
        self._received = {kind: metrics.RECEIVED.labels(kind) for kind in ("ambient", "stack", "rejected")}

    # --- MQTT callbacks (network thread) ---
    def _on_connect(self, client: paho.Client, userdata, flags, reason_code, properties) -> None:
        if connect_refused(reason_code, log):
            return
        with self._lock:
            self._generation += 1
            self.inflight = 0
        metrics.MQTT_CONNECTED.set(1)
        metrics.MQTT_RECONNECTS.inc()
        filters = subscriptions(self.cfg.mqtt.topic_prefix, self.cfg.mqtt.shared_group)
        subscribe_all(client, filters, flags.session_present, log, host=self.cfg.mqtt.host, port=self.cfg.mqtt.port)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        on_suback(reason_codes, self.connected, log)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        on_disconnected(client, reason_code, self.connected, metrics.MQTT_CONNECTED, log, expected=not self._accepting)

    def _on_message(self, client: paho.Client, userdata, msg: paho.MQTTMessage) -> None:
        if not self._accepting:
            return  # shutting down: left unacked, the broker redelivers it to the next session
        self.received += 1
        token = (self._generation, msg.mid, msg.qos)
        with self._lock:
            self.inflight += 1
        topic, payload = msg.topic, msg.payload
        try:
            decoded = self.decoder.decode(topic, payload, time.time_ns())
        except RejectedReading as e:
            self._received["rejected"].inc()
            self.batcher.put(Entry(topic, payload, letter=DeadLetter(topic, payload, e.reason.value, e.detail), token=token))
            return
        self._received[decoded.measurement or "rejected"].inc()
        self.batcher.put(Entry(topic, payload, decoded.lines, token=token))

    def _on_message_failed(self, client: paho.Client, userdata, msg: paho.MQTTMessage, error: Exception) -> None:
        """Handling the message raised (a bug, not bad input; logged and counted already).
        Dead-letter it as internal_error with the exception: it is kept, listed and, once the
        bug is fixed, replayable; and it is acknowledged once the letter is durable, so one
        such message neither stays unacked for ever nor stops the ones behind it."""
        if not self._accepting:
            return
        token = (self._generation, msg.mid, msg.qos)
        detail = f"{type(error).__name__}: {error}"[:500]
        self._received["rejected"].inc()
        self.batcher.put(Entry(msg.topic, msg.payload, letter=DeadLetter(msg.topic, msg.payload,
                                                                           Reason.INTERNAL_ERROR.value, detail),
                               token=token))

    # --- writer thread ---
    def _ack(self, tokens: list) -> None:
        ack_durable(self.client, tokens, self._generation)
        with self._lock:
            self.inflight = max(0, self.inflight - len(tokens))
        metrics.IN_FLIGHT.set(self.inflight)

    # --- lifecycle ---
    def start(self) -> None:
        self._lock_file = _lock_data_dir(self.cfg.data_dir)
        if self.cfg.influx.api == "v1" and self.cfg.influx.create_database:
            threading.Thread(target=_ensure_database, args=(self.cfg,), name="aqpipe-createdb", daemon=True).start()
        self.batcher.start()
        self.client.connect_async(
            self.cfg.mqtt.host, self.cfg.mqtt.port, keepalive=self.cfg.mqtt.keepalive_s,
            clean_start=False, properties=connect_properties(self.cfg.mqtt),
        )
        self.client.loop_start()

    def stop(self, flush_timeout_s: float = 30.0) -> None:
        """Stop consuming, flush what was received, send the acks, disconnect."""
        self._accepting = False
        self.supervisor.stop()
        self.batcher.stop(timeout=flush_timeout_s)
        self.client.disconnect()
        self.client.loop_stop()
        self.writer.close()
        self._lock_file.close()
        log.info("event=stopped received=%d written=%d deadlettered=%d", self.received, self.batcher.written, self.batcher.deadlettered)

    def ready(self) -> tuple[bool, str]:
        """Ready: every thread alive, beating and not failing; subscribed to the broker; and
        InfluxDB answering or the spool accepting."""
        ok, why = self.supervisor.check()
        problems = [] if ok else [why]
        if not self.connected.is_set():
            problems.append("mqtt not connected")
        if self.batcher.influx_down.is_set() and (self.batcher.spool is None or self.batcher.spool_full):
            problems.append("influxdb unavailable and spool full" if self.batcher.spool else "influxdb unavailable")
        return (False, "ingest: " + "; ".join(problems)) if problems else (True, "ok")

    def fatal(self) -> str | None:
        """Why this service cannot go on (a thread given up), for the runner; None while it can."""
        return self.supervisor.fatal()

    def status_line(self) -> str:
        b = self.batcher
        spool = f" spooled_bytes={b.spool.bytes}" if b.spool is not None else ""
        return (f"received={self.received} written={b.written} deadlettered={b.deadlettered} "
                f"inflight={self.inflight} mqtt={'up' if self.connected.is_set() else 'down'} "
                f"influx={'down' if b.influx_down.is_set() else 'up'}{spool} write_failures={b.failed_attempts}")


def _lock_data_dir(data_dir: Path) -> IO:
    """One ingest per data_dir: two would interleave the same spool segments."""
    data_dir.mkdir(parents=True, exist_ok=True)
    f = open(data_dir / "ingest.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ConfigError("data_dir", f"{data_dir} is in use by another running ingest; give each instance its own data_dir") from None
    return f


def _ensure_database(cfg: Config) -> None:
    """InfluxDB 1.x needs the database to exist; CREATE DATABASE is idempotent."""
    q = InfluxQL.from_config(cfg.influx)
    for attempt in range(30):
        try:
            q.execute(f'CREATE DATABASE "{cfg.influx.database}"')
            return
        except Exception as e:  # noqa: BLE001 - any failure here is "not up yet"; we retry and then report
            last = e
            time.sleep(min(2.0, 0.2 * (attempt + 1)))
    log.warning("event=create_database_failed database=%s detail=%r (writes will retry)", cfg.influx.database, str(last))
