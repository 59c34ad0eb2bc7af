"""One logger's TCP connection: split its bytes, check who sends them, publish its frames, answer each after its PUBACK."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Protocol

from aqpipe.config import Hj212GatewayConfig
from aqpipe.decoders.hj212 import Frame
from aqpipe.errors import Reason
from aqpipe.registry import Registry
from ingest.hj212_gateway.access import Access, pw_of
from ingest.hj212_gateway.metrics import BYTES_IN, DISCONNECTS, GARBAGE, INVALID, PUBLISHED, REJECTED, REPLIES
from ingest.hj212_gateway.publisher import Publisher, PublishRefused
from ingest.hj212_gateway.replies import HEARTBEAT, refusal_reply, reply_command, reply_for
from ingest.hj212_gateway.splitter import TOPIC_SAFE_MN, FrameSplitter, Rejected, mn_of


log = logging.getLogger("aqpipe.hj212_gateway")

READ_SIZE = 64 * 1024
_LOGGED_INVALID = 5  # invalid frames logged at WARNING per connection; the rest at DEBUG


class Gateway(Protocol):
    """What a connection needs of the server that accepted it."""

    cfg: Hj212GatewayConfig
    publisher: Publisher
    prefix: str
    stopping: bool
    drain_timeout: float
    registry: Registry
    access: Access


class _Refused(Exception):
    """Too many refused frames on this connection: close it."""


# A reply-queue item: the publish future (None: nothing published, e.g. a heartbeat or a
# refused frame), the frame it answers, and a reply decided at read time (refusals).
_Item = tuple["asyncio.Future[None] | None", "Frame | None", "str | None"]


class Connection:
    """One logger: a reader that splits and publishes, a replier that answers in order."""

    def __init__(self, gateway: Gateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.gw = gateway
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.splitter = FrameSplitter(gateway.cfg.max_frame_bytes, gateway.registry.hj212_keys)
        self._window = asyncio.Semaphore(gateway.cfg.window)
        self._replies: asyncio.Queue[_Item | None] = asyncio.Queue()
        self.frames = 0
        self.invalid = 0
        self.refused = 0
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
        except _Refused:
            reason = "refused"
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
                    data = await self.reader.read(READ_SIZE)
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
                    mn = mn_of(event.raw) if event.raw is not None else None
                    # Only a known logger with its PW fills the dead letters.
                    if mn is not None and self._refusal(mn, pw_of(event.raw), None) is None:
                        await self._forward_for_dead_letter(mn, event.raw)
                    continue
                frame = event.frame
                if not TOPIC_SAFE_MN.fullmatch(frame.mn):
                    self._invalid(Reason.HJ212_SYNTAX, f"MN {frame.mn!r} cannot be an MQTT topic level", len(event.raw))
                    continue
                if self._refusal(frame.mn, frame.pw, frame) is not None:
                    continue
                if frame.cn == HEARTBEAT:  # the link is alive; nothing to publish, answered in order
                    self.mn = frame.mn
                    self._replies.put_nowait((None, frame, None))
                    continue
                # Back-pressure: stop reading while this connection or the whole gateway
                # has too many frames the broker has not acknowledged.
                await self._window.acquire()
                await self.gw.publisher.reserve()
                fut = self.gw.publisher.publish(f"{self.gw.prefix}/hj212/{frame.mn}", event.raw)
                self._replies.put_nowait((fut, frame, None))  # no await between publish and queueing
                self.frames += 1
                self.mn = frame.mn

    async def _forward_for_dead_letter(self, mn: str, raw: bytes) -> None:
        """Publish a frame that failed its checks, for the dead letters (no reply: the
        logger keeps it and resends; nothing of it is stored as a reading)."""
        await self._window.acquire()
        await self.gw.publisher.reserve()
        fut = self.gw.publisher.publish(f"{self.gw.prefix}/hj212/{mn}", raw)
        self._replies.put_nowait((fut, None, None))

    def _refusal(self, mn: str, pw: str | None, frame: Frame | None) -> str | None:
        """Access control: None when the logger may talk; else count, log, maybe answer, maybe close."""
        refusal = self.gw.access.check(mn, pw)
        if refusal is None:
            return None
        self.refused += 1
        REJECTED.labels(refusal).inc()
        level = logging.WARNING if self.refused <= _LOGGED_INVALID else logging.DEBUG
        # Never the PW, not even the wrong one (it may be a neighbour's, mistyped).
        log.log(level, "event=frame_refused peer=%s mn=%r reason=%s cn=%s refused=%d/%d",
                self.peer, mn, refusal, frame.cn if frame else "?", self.refused, self.gw.cfg.max_auth_failures)
        if frame is not None and self.gw.cfg.auth_reply == "9011" and frame.cn not in ("9011", "9012", "9013", "9014"):
            logger = self.gw.registry.hj212_logger(frame.mn)
            self._replies.put_nowait((None, None, refusal_reply(frame, refusal, logger.version if logger else None)))
        if self.refused >= self.gw.cfg.max_auth_failures:
            raise _Refused()
        return refusal

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
            fut, frame, text = item
            if fut is not None:
                try:
                    await fut
                except PublishRefused as e:
                    log.error("event=publish_refused peer=%s mn=%s cn=%s reason=%r (no reply: the logger will resend)",
                              self.peer, frame.mn if frame else self.mn, frame.cn if frame else "?", str(e))
                    continue
                finally:
                    self._window.release()
                PUBLISHED.inc()
            if text is not None:  # a refusal (9011), decided when the frame was read
                cn = "9011"
            elif frame is None:  # a malformed frame forwarded for the dead letters: never answered
                continue
            else:
                cn = reply_command(frame)
                if cn is None:
                    continue
                logger = self.gw.registry.hj212_logger(frame.mn)
                text = reply_for(frame, logger.version if logger else None)
            if text is None or self.writer.is_closing():
                continue
            self.writer.write(text.encode("utf-8"))
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
