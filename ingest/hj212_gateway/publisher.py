"""The MQTT side: paho on the gateway's event loop, one future per publish, done at PUBACK."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from aqpipe.config import MqttConfig
from ingest.hj212_gateway.metrics import MQTT_CONNECTED, PENDING, PUBACK_SECONDS, PUBLISH_FAILED
from aqpipe.mqtt import make_client

log = logging.getLogger("aqpipe.hj212_gateway")


class PublishRefused(Exception):
    """The broker answered a publish with a failure reason code (e.g. not authorized)."""


class Publisher:
    """paho driven by the gateway's own event loop: `publish()` returns a future done at PUBACK.

    No network thread: paho's socket is watched with add_reader/add_writer and its
    callbacks run on the event loop, so a publish and its PUBACK cost no thread
    hand-off (with loop_start() the two threads fight over the GIL and the gateway
    is several times slower). Only paho's reconnect() (TCP connect, TLS handshake,
    CONNECT queued), which blocks, runs in the default executor. paho is not
    thread-safe, so while it runs the loop leaves the client alone: the socket
    callbacks it makes are applied on the loop once it has returned, and frames are
    handed to paho only after CONNACK (before that they wait in `_held`). A PUBLISH
    queued from the loop in the middle of reconnect() could otherwise reach the
    broker ahead of the CONNECT, which makes Mosquitto drop the connection.
    """

    def __init__(self, mqtt: MqttConfig, client_id: str, max_pending: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._cfg = mqtt
        self._loop = loop
        self._max_pending = max_pending
        self._limit = max_pending  # lowered to the broker's Receive Maximum at CONNACK
        self._reserved = 0  # reserve()d, not yet published
        self._room = asyncio.Event()
        self._pending: dict[int, tuple[asyncio.Future[None], float]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._reconnecting: asyncio.Task | None = None
        self._connect_call: asyncio.Future | None = None  # reconnect() running in the executor
        self._from_connect: list[tuple] = []  # socket callbacks paho made during it, applied after it
        self._lost_while_connecting = False
        self._held: list[tuple[str, bytes, asyncio.Future[None], float]] = []  # publishes waiting for CONNACK
        self._delay = 0.0  # before the next connect attempt; back to 0 at each CONNACK
        self._stopping = False
        self.connected = asyncio.Event()
        self.client = c = make_client(mqtt, client_id)
        # paho's own in-flight limit off (0): reserve() is the limit. With a limit set,
        # paho walks every unacknowledged message at each PUBACK (quadratic).
        c.max_inflight_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_socket_open = lambda client, userdata, sock: self._in_loop(self._watch, sock)
        c.on_socket_close = lambda client, userdata, sock: self._in_loop(self._unwatch, sock.fileno())
        c.on_socket_register_write = lambda client, userdata, sock: self._in_loop(
            self._loop.add_writer, sock, client.loop_write)
        c.on_socket_unregister_write = lambda client, userdata, sock: self._in_loop(
            self._loop.remove_writer, sock.fileno())

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0  # nothing to keep: unacked frames are resent by paho, then by the logger
        self.client.connect_async(self._cfg.host, self._cfg.port, keepalive=self._cfg.keepalive_s,
                                  clean_start=True, properties=props)
        self._spawn(self._misc_loop())
        self._reconnect_soon()

    async def stop(self, timeout: float) -> bool:
        """Wait up to `timeout` for outstanding PUBACKs, then disconnect. True if none was left."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        drained = not self.pending
        self._stopping = True
        if self._connect_call is not None and not self._connect_call.done():
            # paho is busy in the executor: let it finish before touching the client here
            await asyncio.wait([self._connect_call], timeout=max(1.0, deadline - time.monotonic()))
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        self.client.disconnect()  # queued; the writer callback sends it
        for _ in range(50):
            if self.client.socket() is None:
                break
            await asyncio.sleep(0.02)
        for task in list(self._tasks):
            task.cancel()
        MQTT_CONNECTED.set(0)
        return drained

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._held)

    async def reserve(self) -> None:
        """Wait for room among the publishes the broker has not acknowledged: at most
        `max_pending`, and never more than the broker's Receive Maximum."""
        while self.pending + self._reserved >= self._limit:
            self._room.clear()
            await self._room.wait()
        self._reserved += 1

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Publish at QoS 1 (after `reserve()`); the future completes at PUBACK.

        paho only queues the packet here (the writer callback sends it), so the PUBACK
        cannot be handled before the future is registered. Until the broker's CONNACK
        the frame is held here and handed to paho at CONNACK; after that, while the
        broker is away, paho keeps the message and sends it again after reconnecting.
        """
        fut: asyncio.Future[None] = self._loop.create_future()
        self._reserved -= 1
        if self.connected.is_set():
            self._hand_to_paho(topic, payload, fut, time.monotonic())
        else:
            self._held.append((topic, payload, fut, time.monotonic()))
        PENDING.set(self.pending)
        return fut

    def _hand_to_paho(self, topic: str, payload: bytes, fut: asyncio.Future[None], started: float) -> None:
        info = self.client.publish(topic, payload, qos=1)
        self._pending[info.mid] = (fut, started)

    # --- socket plumbing ---
    def _in_loop(self, fn, *args) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn(*args)
        else:  # paho called from the executor thread (reconnect): applied in order once it returns
            self._from_connect.append((fn, args))

    def _watch(self, sock: socket.socket) -> None:
        self._loop.add_reader(sock, self.client.loop_read)

    def _unwatch(self, fd: int) -> None:
        if fd >= 0:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)

    async def _misc_loop(self) -> None:
        while True:  # keepalive pings and the timeout of a dead broker link
            await asyncio.sleep(1)
            if self._connect_call is None or self._connect_call.done():
                self.client.loop_misc()

    def _spawn(self, coro) -> asyncio.Task:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _reconnect_soon(self) -> None:
        if self._stopping:
            return
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = self._spawn(self._reconnect())
        else:  # an attempt is under way: a link lost meanwhile must not be forgotten (it used to be)
            self._lost_while_connecting = True

    async def _reconnect(self) -> None:
        while not self._stopping:
            if self._delay:
                await asyncio.sleep(self._delay)
            first = not self._delay
            self._delay = min(max(2 * self._delay, 0.5), 30.0)  # until a CONNACK says otherwise
            self._lost_while_connecting = False
            self._connect_call = call = self._loop.run_in_executor(None, self.client.reconnect)
            call.add_done_callback(self._connect_returned)  # also when this task is cancelled (stop)
            try:
                await asyncio.shield(call)
            except (OSError, ValueError) as e:
                if first:
                    log.warning("event=mqtt_connect_failed host=%s port=%d error=%r (retrying, up to every 30 s)",
                                self._cfg.host, self._cfg.port, str(e))
                continue
            if not self._lost_while_connecting:
                return  # the CONNACK (or a refusal, then a disconnect) arrives through loop_read

    def _connect_returned(self, call: asyncio.Future) -> None:
        """On the loop, once reconnect() has returned: the socket callbacks it made, in order."""
        done, self._from_connect = self._from_connect, []
        for fn, args in done:
            fn(*args)

    # --- paho callbacks (event loop) ---
    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        entry = self._pending.pop(mid, None)
        if entry is None:
            return
        fut, started = entry
        self._room.set()
        PENDING.set(self.pending)
        PUBACK_SECONDS.observe(time.monotonic() - started)
        if fut.done():
            return
        if reason_code.is_failure:
            PUBLISH_FAILED.inc()
            fut.set_exception(PublishRefused(str(reason_code)))
        else:
            fut.set_result(None)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("event=mqtt_connect_refused reason=%r", str(reason_code))
            return
        MQTT_CONNECTED.set(1)
        self.connected.set()
        self._delay = 0.0
        receive_maximum = getattr(properties, "ReceiveMaximum", 65535) if properties is not None else 65535
        self._limit = max(1, min(self._max_pending, receive_maximum))
        held, self._held = self._held, []
        for topic, payload, fut, started in held:  # paho resends its own unacknowledged ones after this
            self._hand_to_paho(topic, payload, fut, started)
        log.info("event=mqtt_connected host=%s port=%d pending=%d in_flight_limit=%d",
                 self._cfg.host, self._cfg.port, self.pending, self._limit)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        MQTT_CONNECTED.set(0)
        self.connected.clear()
        if self._stopping:
            return
        log.warning("event=mqtt_disconnected reason=%r pending=%d", str(reason_code), self.pending)
        self._in_loop(self._reconnect_soon)
