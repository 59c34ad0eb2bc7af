"""The TCP server (`Hj212Gateway`): accepts loggers within the limits, stops with a drain."""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading

from aqpipe.config import Hj212GatewayConfig, MqttConfig
from aqpipe.registry import Registry
from aqpipe.supervision import THREAD_ERRORS
from ingest.hj212_gateway.access import Access
from ingest.hj212_gateway.connection import READ_SIZE, Connection
from ingest.hj212_gateway.metrics import ACCEPTED, CONNECTIONS
from ingest.hj212_gateway.publisher import Publisher

log = logging.getLogger("aqpipe.hj212_gateway")
THREAD = "hj212-gateway"  # the aqpipe_thread_errors_total label of the gateway's event loop


class Hj212Gateway:
    """The TCP server: `await start()`; `await stop()` at SIGTERM (or `run_in_thread` / `stop_in_thread`)."""

    def __init__(self, cfg: Hj212GatewayConfig, mqtt: MqttConfig, topic_prefix: str = "aq/v1",
                 registry: Registry | None = None) -> None:
        self.cfg = cfg
        # Who may talk (MN, PW) and the SM4 keys that check encrypted frames. Without a
        # registry no logger is known: every frame is refused as unknown_mn.
        self.registry = registry if registry is not None else Registry.empty()
        self.access = Access(self.registry, cfg.check_pw)
        self.mqtt = mqtt
        self.prefix = topic_prefix
        self.drain_timeout = cfg.drain_timeout_s
        self.stopping = False
        self.connections: set[Connection] = set()
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.base_events.Server | None = None
        self.publisher: Publisher
        self.port = 0  # the port actually bound (listen on port 0 picks one)

    async def start(self) -> None:
        # Everything of the gateway (connections, paho's socket callbacks) runs on this
        # loop: whatever raises there is logged and counted like any aqpipe thread's error.
        asyncio.get_running_loop().set_exception_handler(_on_loop_error)
        self.publisher = Publisher(self.mqtt, self.cfg.client_id, self.cfg.max_pending, asyncio.get_running_loop())
        host, port = split_listen(self.cfg.listen)
        self._server = await asyncio.start_server(self._accept, host, port, limit=READ_SIZE, ssl=self._tls(),
                                                  reuse_address=True, backlog=min(self.cfg.max_connections, 1024))
        self.publisher.start()  # after the bind: a port in use fails fast, with nothing to undo
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("event=listening address=%s:%d tls=%s mqtt=mqtt://%s:%d client_id=%s max_connections=%d "
                 "idle_timeout_s=%g max_frame_bytes=%d loggers=%d check_pw=%s", host, self.port,
                 self.cfg.tls_cert is not None, self.mqtt.host, self.mqtt.port, self.cfg.client_id,
                 self.cfg.max_connections, self.cfg.idle_timeout_s, self.cfg.max_frame_bytes,
                 len(self.registry._by_mn), self.cfg.check_pw)

    def _tls(self) -> ssl.SSLContext | None:
        """Server-side TLS (1.2 or later) from hj212_gateway.tls_cert / tls_key, or None for plain TCP."""
        if self.cfg.tls_cert is None or self.cfg.tls_key is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cfg.tls_cert, self.cfg.tls_key)
        return ctx

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.stopping or len(self.connections) >= self.cfg.max_connections:
            ACCEPTED.labels("refused").inc()
            log.warning("event=connection_refused peer=%s open=%d max_connections=%d",
                        writer.get_extra_info("peername"), len(self.connections), self.cfg.max_connections)
            writer.transport.abort()
            return
        ACCEPTED.labels("accepted").inc()
        conn = Connection(self, reader, writer)
        self.connections.add(conn)
        CONNECTIONS.set(len(self.connections))
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        log.info("event=connected peer=%s open=%d", conn.peer, len(self.connections))
        try:
            await conn.run()
        finally:
            if not writer.is_closing():  # conn.run raised: the logger sees the close, not a hang
                writer.transport.abort()
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


def _on_loop_error(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """No silent failure: an exception nobody caught on the gateway's loop (a connection's
    handler, a callback) is `event=thread_error thread=hj212-gateway`, counted in
    aqpipe_thread_errors_total (the AqpipeThreadErrors rule). The loop goes on: one
    connection's failure ends that connection only."""
    error = context.get("exception")
    THREAD_ERRORS.labels(THREAD).inc()
    log.error("event=thread_error thread=%s error=%r detail=%s", THREAD, error, context.get("message", ""),
              exc_info=error)


def split_listen(listen: str) -> tuple[str, int]:
    """"HOST:PORT" or "[v6]:PORT" -> (host, port)."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {listen!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def run_in_thread(gateway: Hj212Gateway) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """Run `gateway` on its own event loop in a daemon thread (tests, benchmarks, `aqpipe run`)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def _run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(gateway.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=_run, name=THREAD, daemon=True)
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
