"""`aqpipe hj212-gateway`: HJ 212 data loggers over TCP -> MQTT `aq/v1/hj212/{mn}`.

Data loggers (数采仪) open a TCP connection to the platform and send HJ 212-2017
frames; most cannot speak MQTT. The gateway cuts frames out of the byte stream
(`FrameSplitter`: partial reads, several frames per read, garbage between frames,
resync on the next `##dddd`, buffer bounded by `max_frame_bytes`), checks framing,
length and CRC with the decoder's `parse_frame`, publishes each valid frame as
received (CRLF-terminated) at QoS 1, and only once the broker has acknowledged it
(PUBACK) answers the logger when the frame's Flag asks for it (bit 0): 9014 data
reply for uploads, 9013 notification reply for 1013. A logger that has its reply
may drop the data; one that has none sends it again (a repeated reading overwrites
itself in InfluxDB). Decoding into readings, registry lookup and dead letters stay
in `aqpipe ingest`: the gateway holds no registry and no state.

Invalid frames are counted and logged (never with PW) and the connection stays
open. Limits: connections, idle time, frame size, frames per connection awaiting
PUBACK (`window`, reading pauses) and publishes awaiting PUBACK overall
(`max_pending`), so a slow broker, a silent or half-open client or a flood of
bytes cannot grow memory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import Counter, Gauge, Histogram

from ingest.config import Config, Hj212GatewayConfig, MqttConfig
from ingest.decoders.hj212 import Frame, Hj212Error, build_frame, parse_frame, reply_9014
from ingest.errors import Reason
from ingest.http import OpsServer
from ingest.mqtt import make_client

log = logging.getLogger("aqpipe.hj212_gateway")

# --------------------------------------------------------------------------- metrics

CONNECTIONS = Gauge("aqpipe_hj212_gateway_connections", "Open logger connections")
ACCEPTED = Counter("aqpipe_hj212_gateway_connection_attempts_total", "Logger connections accepted or refused (max_connections)", ["result"])
DISCONNECTS = Counter("aqpipe_hj212_gateway_disconnects_total", "Closed logger connections by cause", ["reason"])
BYTES_IN = Counter("aqpipe_hj212_gateway_received_bytes_total", "Bytes received from loggers")
GARBAGE = Counter("aqpipe_hj212_gateway_garbage_bytes_total", "Bytes skipped outside any frame (resync)")
PUBLISHED = Counter("aqpipe_hj212_gateway_published_frames_total", "Valid frames published and acknowledged by the broker")
INVALID = Counter("aqpipe_hj212_gateway_invalid_frames_total", "Frames not published, by reason", ["reason"])
REPLIES = Counter("aqpipe_hj212_gateway_replies_total", "Replies sent to loggers, by command", ["cn"])
PUBLISH_FAILED = Counter("aqpipe_hj212_gateway_publish_failures_total", "Publishes the broker refused (PUBACK reason code)")
PENDING = Gauge("aqpipe_hj212_gateway_pending_publishes", "Publishes awaiting the broker's PUBACK")
PUBACK_SECONDS = Histogram(
    "aqpipe_hj212_gateway_puback_seconds", "Time from publish to the broker's PUBACK",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MQTT_CONNECTED = Gauge("aqpipe_hj212_gateway_mqtt_connected", "1 while the gateway is connected to the broker")

# --------------------------------------------------------------------------- replies

# Commands a logger sends to the platform that answer a platform request: replying
# to them would start a loop. (HJ 212-2017: 9011 request reply, 9012 execution
# result, 9013 notification reply, 9014 data reply.)
_REPLY_COMMANDS = frozenset({"9011", "9012", "9013", "9014"})
# Notifications from the logger, answered with 9013 (通知应答). 1013: the logger asks
# for a time calibration (现场机时间校准请求); the time itself would come from a later
# 1012 the gateway does not send (it issues no commands).
_NOTIFICATIONS = frozenset({"1013"})


def reply_command(frame: Frame) -> str | None:
    """The CN of the reply the platform owes the logger, or None when it asked for nothing.

    Flag bit 0 asks for a reply. Uploads (2xxx data, 3xxx parameters and states)
    get the 9014 data reply; the 1013 notification gets 9013. 9011/9012 are what a
    logger sends to answer *platform* requests, which the gateway never makes, so
    it never has one to send; other 1xxx codes are platform-to-logger commands.
    """
    if frame.flag is None or not frame.flag & 1 or frame.cn in _REPLY_COMMANDS:
        return None
    if frame.cn in _NOTIFICATIONS:
        return "9013"
    if frame.cn[0] in "23":
        return "9014"
    return None


def reply_for(frame: Frame) -> str | None:
    """The reply frame (CRLF-terminated) for `frame`, or None."""
    cn = reply_command(frame)
    if cn is None:
        return None
    return reply_9014(frame) if cn == "9014" else _reply(frame, cn)


def _reply(frame: Frame, cn: str) -> str:
    """HJ 212-2017 reply form: same QN, PW and MN, ST=91, Flag=4, empty CP."""
    head = [f"QN={frame.qn}"] if frame.qn is not None else []
    head += ["ST=91", f"CN={cn}"]
    if frame.pw is not None:
        head.append(f"PW={frame.pw}")
    head += [f"MN={frame.mn}", "Flag=4", "CP=&&&&"]
    return build_frame(";".join(head))


# --------------------------------------------------------------------------- splitting

_MARK = re.compile(rb"##[0-9]{4}")  # where a frame can start
_LINE_END = b"\r\n"
_HEADER = 6  # "##" + 4-digit length
_OVERHEAD = 10  # header + 4-hex CRC (CRLF not counted)
# An MN becomes a topic level: nothing that MQTT gives a meaning, nothing invisible.
_TOPIC_SAFE_MN = re.compile(r"[0-9A-Za-z_.\-]{1,24}")
_MN_FIELD = re.compile(rb"(?:^|;)MN=([^;&]*)")


def _mn_of(raw: bytes) -> str | None:
    """The MN of a frame that does not parse, if it names a usable one."""
    m = _MN_FIELD.search(raw[6:])  # after "##dddd"
    if m is None:
        return None
    mn = m.group(1).decode("ascii", "replace")
    return mn if _TOPIC_SAFE_MN.fullmatch(mn) else None


@dataclass(slots=True)
class Accepted:
    frame: Frame
    raw: bytes  # the frame as received, CRLF-terminated


@dataclass(slots=True)
class Rejected:
    reason: Reason
    detail: str  # never holds the password (parse_frame scrubs it)
    size: int
    # A frame-shaped piece (starts with ##dddd) that fails length, CRC or structure: it is
    # forwarded, unanswered, for ingest to dead-letter with its reason (kept, inspectable).
    raw: bytes | None = None


class FrameSplitter:
    """Frames out of a TCP byte stream, with a bounded buffer.

    `feed(data)` returns the frames completed by `data`, valid (`Accepted`) or not
    (`Rejected`, with the decoder's reason). A frame is cut at the end its length
    field gives when the CRC checks there (the CRLF is then optional); otherwise at
    the first CRLF or the next `##dddd`, whichever comes first, and the piece is
    reported with its precise reason (length, crc, framing). Bytes outside frames
    are skipped and counted in `garbage_bytes`. Never more than `max_frame_bytes`
    plus one read is buffered: a length field above the limit is refused at once,
    and a frame without an end within the limit is dropped.
    """

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.garbage_bytes = 0
        self.high_water = 0  # largest buffer seen, for tests and curiosity
        self._buf = bytearray()
        self._exact_tried = False  # the frame at the buffer start was parsed at its stated length

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Accepted | Rejected]:
        buf = self._buf
        buf += data
        self.high_water = max(self.high_water, len(buf))
        out: list[Accepted | Rejected] = []
        pos = 0
        try:
            while True:
                pos = self._resync(buf, pos)
                if len(buf) - pos < _HEADER:
                    break
                taken = self._take(buf, pos, out)
                if taken == 0:
                    break
                pos += taken
                self._exact_tried = False
        finally:
            del buf[:pos]
        return out

    def _resync(self, buf: bytearray, pos: int) -> int:
        """Move `pos` to the next `##dddd` (or as close as the data allows), counting garbage."""
        end = len(buf)
        while pos < end:
            c = buf[pos]
            if c == 0x0D or c == 0x0A:  # line ends between frames are not garbage
                pos += 1
                continue
            m = _MARK.search(buf, pos)
            if m is not None:
                self.garbage_bytes += m.start() - pos
                return m.start()
            # No full mark: keep a tail that could still become one ("#", "##", "##01"...).
            keep = pos
            for k in range(max(pos, end - 5), end):
                if buf[k] == 0x23 and all(0x30 <= b <= 0x39 for b in buf[k + 2 : end]) and (
                    k + 1 >= end or buf[k + 1] == 0x23
                ):
                    keep = k
                    break
            else:
                keep = end
            self.garbage_bytes += keep - pos
            return keep
        return pos

    def _take(self, buf: bytearray, pos: int, out: list[Accepted | Rejected]) -> int:
        """Bytes consumed by the frame starting at `pos` (0: wait for more)."""
        length = int(buf[pos + 2 : pos + 6])
        n = length + _OVERHEAD
        if n + len(_LINE_END) > self.max_frame_bytes:
            out.append(Rejected(Reason.OVERSIZE, f"length field {length} makes a frame larger than "
                                                 f"max_frame_bytes {self.max_frame_bytes}", _HEADER))
            return 2  # drop "##": what follows is skipped as garbage up to the next frame
        avail = len(buf) - pos
        if avail >= n and not self._exact_tried:
            self._exact_tried = True
            try:
                frame = parse_frame(bytes(buf[pos : pos + n]))
            except Hj212Error as e:
                if e.kind == "syntax":  # length and CRC check: the boundary is certain
                    out.append(Rejected(e.reason, e.detail, n, raw=bytes(buf[pos : pos + n]) + _LINE_END))
                    return n
            else:
                out.append(Accepted(frame, bytes(buf[pos : pos + n]) + _LINE_END))
                return n
        # The stated length does not end a valid frame: cut at the first line end or next mark.
        crlf = buf.find(_LINE_END, pos + _HEADER)
        mark = _MARK.search(buf, pos + 2)
        ends = [e for e in (crlf + 2 if crlf >= 0 else -1, mark.start() if mark else -1) if e > 0]
        if ends:
            end = min(ends)
            piece = bytes(buf[pos:end])
            try:
                out.append(Accepted(parse_frame(piece), piece.rstrip(b"\r\n") + _LINE_END))
            except Hj212Error as e:
                # Kept for the dead letters like any bad input (HJ 212 issue: length, CRC and
                # structure faults are dead-lettered with their reason); never answered.
                raw = piece.rstrip(b"\r\n") + _LINE_END if e.kind in ("length", "crc", "syntax") else None
                out.append(Rejected(e.reason, e.detail, len(piece), raw=raw))
            return end - pos
        if avail >= self.max_frame_bytes:
            out.append(Rejected(Reason.HJ212_FRAMING, f"no frame end (CRLF or next '##') within "
                                                      f"max_frame_bytes {self.max_frame_bytes}", avail))
            return 2
        return 0


# --------------------------------------------------------------------------- MQTT side

class PublishRefused(Exception):
    """The broker answered a publish with a failure reason code (e.g. not authorized)."""


class _Publisher:
    """paho driven by the gateway's own event loop: `publish()` returns a future done at PUBACK.

    No network thread: paho's socket is watched with add_reader/add_writer and its
    callbacks run on the event loop, so a publish and its PUBACK cost no thread
    hand-off (with loop_start() the two threads fight over the GIL and the gateway
    is several times slower). Only the TCP connect to the broker, which blocks,
    runs in the default executor; paho's socket callbacks from there are posted
    back to the loop.
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
        while self._pending and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        drained = not self._pending
        self._stopping = True
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
        return len(self._pending)

    async def reserve(self) -> None:
        """Wait for room among the publishes the broker has not acknowledged: at most
        `max_pending`, and never more than the broker's Receive Maximum."""
        while len(self._pending) + self._reserved >= self._limit:
            self._room.clear()
            await self._room.wait()
        self._reserved += 1

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Publish at QoS 1 (after `reserve()`); the future completes at PUBACK.

        paho only queues the packet here (the writer callback sends it), so the PUBACK
        cannot be handled before the future is registered. While the broker is away
        paho keeps the message and sends it again after reconnecting.
        """
        fut: asyncio.Future[None] = self._loop.create_future()
        self._reserved -= 1
        info = self.client.publish(topic, payload, qos=1)
        self._pending[info.mid] = (fut, time.monotonic())
        PENDING.set(len(self._pending))
        return fut

    # --- socket plumbing ---
    def _in_loop(self, fn, *args) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn(*args)
        else:  # paho called from the executor thread (reconnect): keep the order, run on the loop
            self._loop.call_soon_threadsafe(fn, *args)

    def _watch(self, sock: socket.socket) -> None:
        self._loop.add_reader(sock, self.client.loop_read)

    def _unwatch(self, fd: int) -> None:
        if fd >= 0:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)

    async def _misc_loop(self) -> None:
        while True:  # keepalive pings and the timeout of a dead broker link
            await asyncio.sleep(1)
            self.client.loop_misc()

    def _spawn(self, coro) -> asyncio.Task:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _reconnect_soon(self) -> None:
        if not self._stopping and (self._reconnecting is None or self._reconnecting.done()):
            self._reconnecting = self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        while not self._stopping:
            if self._delay:
                await asyncio.sleep(self._delay)
            first = not self._delay
            self._delay = min(max(2 * self._delay, 0.5), 30.0)  # until a CONNACK says otherwise
            try:
                await self._loop.run_in_executor(None, self.client.reconnect)
                return  # the CONNACK (or a refusal, then a disconnect) arrives through loop_read
            except (OSError, ValueError) as e:
                if first:
                    log.warning("event=mqtt_connect_failed host=%s port=%d error=%r (retrying, up to every 30 s)",
                                self._cfg.host, self._cfg.port, str(e))

    # --- paho callbacks (event loop) ---
    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        entry = self._pending.pop(mid, None)
        if entry is None:
            return
        fut, started = entry
        self._room.set()
        PENDING.set(len(self._pending))
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
        log.info("event=mqtt_connected host=%s port=%d pending=%d in_flight_limit=%d",
                 self._cfg.host, self._cfg.port, len(self._pending), self._limit)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        MQTT_CONNECTED.set(0)
        self.connected.clear()
        if self._stopping:
            return
        log.warning("event=mqtt_disconnected reason=%r pending=%d", str(reason_code), len(self._pending))
        self._in_loop(self._reconnect_soon)


# --------------------------------------------------------------------------- TCP side

_READ_SIZE = 64 * 1024
_LOGGED_INVALID = 5  # invalid frames logged at WARNING per connection; the rest at DEBUG


class _Connection:
    """One logger: a reader that splits and publishes, a replier that answers in order."""

    def __init__(self, gateway: Hj212Gateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.gw = gateway
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.splitter = FrameSplitter(gateway.cfg.max_frame_bytes)
        self._window = asyncio.Semaphore(gateway.cfg.window)
        self._replies: asyncio.Queue[tuple[asyncio.Future[None], Frame | None] | None] = asyncio.Queue()
        self.frames = 0
        self.invalid = 0
        self.mn = "-"  # the last MN seen on this connection, for the logs
        self.reading: asyncio.Task | None = None
        self._stalled = False  # the client stopped reading its replies
        self._garbage_logged = False

    async def run(self) -> None:
        sock = self.writer.get_extra_info("socket")
        if sock is not None:  # half-open peers (power cut, NAT drop) are found by keepalive
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            # Replies are ~120 bytes: a small fixed send buffer bounds kernel memory per
            # logger (autotuning would allow MBs) and shows a client that stops reading.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        self.writer.transport.set_write_buffer_limits(high=64 * 1024)
        replier = asyncio.create_task(self._reply_loop())
        self.reading = asyncio.create_task(self._read_loop())
        try:
            reason = await self.reading
        except asyncio.CancelledError:
            if self._stalled:
                reason = "reply_stalled"
            elif self.gw.stopping:
                reason = "shutdown"
            else:
                replier.cancel()
                raise
        except (ConnectionError, OSError):
            reason = "error"
        # Answer what was already published before closing: the logger (or a client that
        # half-closed after sending) is owed its replies.
        self._replies.put_nowait(None)
        try:
            async with asyncio.timeout(self.gw.drain_timeout):
                await replier
        except TimeoutError:
            pass  # PUBACKs or the client too slow: the logger resends what it got no reply for
        if self._stalled:
            reason = "reply_stalled"
        DISCONNECTS.labels(reason).inc()
        log.info("event=disconnected peer=%s mn=%s reason=%s frames=%d invalid=%d garbage_bytes=%d",
                 self.peer, self.mn, reason, self.frames, self.invalid, self.splitter.garbage_bytes)
        self.writer.close()

    async def _read_loop(self) -> str:
        idle = self.gw.cfg.idle_timeout_s
        while True:
            try:
                async with asyncio.timeout(idle):
                    data = await self.reader.read(_READ_SIZE)
            except TimeoutError:
                return "idle"
            if not data:
                return "eof"
            BYTES_IN.inc(len(data))
            before = self.splitter.garbage_bytes
            events = self.splitter.feed(data)
            if self.splitter.garbage_bytes != before:
                GARBAGE.inc(self.splitter.garbage_bytes - before)
                if not self._garbage_logged:
                    self._garbage_logged = True
                    log.warning("event=garbage peer=%s bytes=%d (skipped up to the next '##dddd'; "
                                "counted in aqpipe_hj212_gateway_garbage_bytes_total)",
                                self.peer, self.splitter.garbage_bytes - before)
            for event in events:
                if isinstance(event, Rejected):
                    self._invalid(event.reason, event.detail, event.size)
                    mn = _mn_of(event.raw) if event.raw is not None else None
                    if mn is not None:
                        await self._forward_for_dead_letter(mn, event.raw)
                    continue
                frame = event.frame
                if not _TOPIC_SAFE_MN.fullmatch(frame.mn):
                    self._invalid(Reason.HJ212_SYNTAX, f"MN {frame.mn!r} cannot be an MQTT topic level", len(event.raw))
                    continue
                # Back-pressure: stop reading while this connection or the whole gateway
                # has too many frames the broker has not acknowledged.
                await self._window.acquire()
                await self.gw.publisher.reserve()
                fut = self.gw.publisher.publish(f"{self.gw.prefix}/hj212/{frame.mn}", event.raw)
                self._replies.put_nowait((fut, frame))  # no await between publish and queueing
                self.frames += 1
                self.mn = frame.mn

    async def _forward_for_dead_letter(self, mn: str, raw: bytes) -> None:
        """Publish a frame that failed its checks, for the dead letters (no reply: the
        logger keeps it and resends; nothing of it is stored as a reading)."""
        await self._window.acquire()
        await self.gw.publisher.reserve()
        fut = self.gw.publisher.publish(f"{self.gw.prefix}/hj212/{mn}", raw)
        self._replies.put_nowait((fut, None))

    def _invalid(self, reason: Reason, detail: str, size: int) -> None:
        self.invalid += 1
        INVALID.labels(reason.value).inc()
        level = logging.WARNING if self.invalid <= _LOGGED_INVALID else logging.DEBUG
        log.log(level, "event=invalid_frame peer=%s reason=%s bytes=%d detail=%r",
                self.peer, reason.value, size, detail)

    async def _reply_loop(self) -> None:
        """Send replies in frame order, each after its PUBACK.

        A client that stops reading its replies for idle_timeout_s is dropped: its
        reader would otherwise wait on the window forever, holding a connection slot.
        """
        while True:
            item = await self._replies.get()
            if item is None:
                return
            fut, frame = item
            try:
                await fut
            except PublishRefused as e:
                log.error("event=publish_refused peer=%s mn=%s cn=%s reason=%r (no reply: the logger will resend)",
                          self.peer, frame.mn if frame else self.mn, frame.cn if frame else "?", str(e))
                continue
            finally:
                self._window.release()
            PUBLISHED.inc()
            if frame is None:  # a malformed frame forwarded for the dead letters: never answered
                continue
            cn = reply_command(frame)
            if cn is None or self.writer.is_closing():
                continue
            self.writer.write((reply_9014(frame) if cn == "9014" else _reply(frame, cn)).encode("utf-8"))
            try:
                async with asyncio.timeout(self.gw.cfg.idle_timeout_s):
                    await self.writer.drain()
            except TimeoutError:
                self._stalled = True
                if self.reading is not None:
                    self.reading.cancel()
                return
            except (ConnectionError, OSError):
                continue  # gone; keep releasing the window for what is still in flight
            REPLIES.labels(cn).inc()


class Hj212Gateway:
    """The TCP server: `await start()`; `await stop()` at SIGTERM (or `run_in_thread` / `stop_in_thread`)."""

    def __init__(self, cfg: Hj212GatewayConfig, mqtt: MqttConfig, topic_prefix: str = "aq/v1") -> None:
        self.cfg = cfg
        self.mqtt = mqtt
        self.prefix = topic_prefix
        self.drain_timeout = cfg.drain_timeout_s
        self.stopping = False
        self.connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.base_events.Server | None = None
        self.publisher: _Publisher
        self.port = 0  # the port actually bound (listen on port 0 picks one)

    async def start(self) -> None:
        self.publisher = _Publisher(self.mqtt, self.cfg.client_id, self.cfg.max_pending, asyncio.get_running_loop())
        host, port = split_listen(self.cfg.listen)
        self._server = await asyncio.start_server(self._accept, host, port, limit=_READ_SIZE,
                                                  reuse_address=True, backlog=min(self.cfg.max_connections, 1024))
        self.publisher.start()  # after the bind: a port in use fails fast, with nothing to undo
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("event=listening address=%s:%d mqtt=mqtt://%s:%d client_id=%s max_connections=%d "
                 "idle_timeout_s=%g max_frame_bytes=%d", host, self.port, self.mqtt.host, self.mqtt.port,
                 self.cfg.client_id, self.cfg.max_connections, self.cfg.idle_timeout_s, self.cfg.max_frame_bytes)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.stopping or len(self.connections) >= self.cfg.max_connections:
            ACCEPTED.labels("refused").inc()
            log.warning("event=connection_refused peer=%s open=%d max_connections=%d",
                        writer.get_extra_info("peername"), len(self.connections), self.cfg.max_connections)
            writer.transport.abort()
            return
        ACCEPTED.labels("accepted").inc()
        conn = _Connection(self, reader, writer)
        self.connections.add(conn)
        CONNECTIONS.set(len(self.connections))
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        log.info("event=connected peer=%s open=%d", conn.peer, len(self.connections))
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            CONNECTIONS.set(len(self.connections))
            if task is not None:
                self._tasks.discard(task)

    def ready(self) -> tuple[bool, str]:
        """For /readyz (called from the HTTP thread; reads flags only): listening and connected to the broker."""
        server = self._server
        if self.stopping or server is None or not server.is_serving():
            return False, "hj212-gateway: not listening"
        if not self.publisher.connected.is_set():
            return False, "hj212-gateway: mqtt not connected"
        return True, "ok"

    async def stop(self) -> bool:
        """Stop accepting, stop reading, send the replies of what the broker acknowledged, disconnect.

        True when every published frame was acknowledged within drain_timeout_s.
        """
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.reading is not None:
                conn.reading.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.drain_timeout + 1)
        drained = await self.publisher.stop(self.drain_timeout)
        log.info("event=stopped drained=%s", drained)
        return drained


def split_listen(listen: str) -> tuple[str, int]:
    """"HOST:PORT" or "[v6]:PORT" -> (host, port)."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {listen!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


# --------------------------------------------------------------------------- command

AddCommon = Callable[[argparse.ArgumentParser], None]


def register(sub: argparse._SubParsersAction, add_common: AddCommon) -> None:
    p = sub.add_parser(
        "hj212-gateway", help="accept HJ 212 data loggers over TCP and publish their frames to MQTT",
        description="TCP server for HJ 212-2017 data loggers: checks each frame (length, CRC, structure), "
                    "publishes it at QoS 1 on aq/v1/hj212/{MN} and, once the broker has acknowledged it, "
                    "sends the reply the frame asks for (9014 data reply). Defaults from [hj212_gateway] "
                    "in aqpipe.toml (AQPIPE_HJ212_GATEWAY__*). SIGTERM/Ctrl-C: stop accepting, finish "
                    "publishes and replies, exit 0. See ingest/README-hj212.md.")
    add_common(p)
    p.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:9212; "
                                                         "0.0.0.0:9212 for loggers on the network)")
    p.add_argument("--max-connections", type=int, metavar="N", help="open connections at most (default 1000)")
    p.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                   help="close a connection silent this long (default 300)")
    p.add_argument("--max-frame-bytes", type=int, metavar="N",
                   help="largest frame accepted, ## to CRLF (default and maximum 10011, the standard's)")
    p.set_defaults(func=cmd_gateway)


def gateway_config(cfg: Config, args: argparse.Namespace) -> Hj212GatewayConfig:
    """[hj212_gateway] with the command-line options on top, validated like the file."""
    over = {key: value for key, value in (
        ("listen", args.listen), ("max_connections", args.max_connections),
        ("idle_timeout_s", args.idle_timeout), ("max_frame_bytes", args.max_frame_bytes)) if value is not None}
    return Hj212GatewayConfig.model_validate({**cfg.hj212_gateway.model_dump(), **over})


def cmd_gateway(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ingest.cli import load_or_exit
    from ingest.config import config_error_from

    cfg = load_or_exit(args.config)
    try:
        gw_cfg = gateway_config(cfg, args)
    except ValidationError as e:
        print(f"aqpipe: {config_error_from(e)}", file=sys.stderr)
        return 2
    ops = None
    if gw_cfg.metrics_port:
        try:
            ops = OpsServer(cfg.metrics.host, gw_cfg.metrics_port)
        except OSError as e:
            log.error("event=metrics_listen_failed address=%s:%d error=%r", cfg.metrics.host, gw_cfg.metrics_port, str(e))
            return 1
    try:
        return asyncio.run(_main(gw_cfg, cfg.mqtt, cfg.mqtt.topic_prefix, ops))
    finally:
        if ops is not None:
            ops.close()


async def _main(cfg: Hj212GatewayConfig, mqtt: MqttConfig, prefix: str, ops: OpsServer | None = None) -> int:
    gateway = Hj212Gateway(cfg, mqtt, prefix)
    if ops is not None:
        ops.add_check(gateway.ready)  # /readyz: 503 until listening and connected to the broker
    try:
        await gateway.start()
    except OSError as e:
        log.error("event=listen_failed listen=%s error=%r", cfg.listen, str(e))
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("event=stopping (signal) open=%d pending=%d", len(gateway.connections), gateway.publisher.pending)
    await gateway.stop()
    return 0


def run_in_thread(gateway: Hj212Gateway) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """Run `gateway` on its own event loop in a daemon thread (tests, benchmarks, `aqpipe run`)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def _run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(gateway.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=_run, name="hj212-gateway", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("hj212 gateway did not start")
    return loop, thread


def stop_in_thread(gateway: Hj212Gateway, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> bool:
    drained = asyncio.run_coroutine_threadsafe(gateway.stop(), loop).result(gateway.drain_timeout + 15)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()
    return drained
