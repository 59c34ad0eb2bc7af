"""paho-mqtt client set-up shared by every aqpipe service: MQTT 5, persistent session."""

from __future__ import annotations

import logging
import random
import ssl
import struct
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from aqpipe.config import MqttConfig


_READ_SIZE = 65536


class BufferedSocket:
    """The broker connection, read up to 64 KiB at a time.

    paho reads a packet with one `recv` for its type byte, one per byte of its length and
    one or more for the rest, each a system call, and calls `select` before every packet:
    at thousands of small PUBLISH packets a second those calls cost more than decoding the
    message. Here one `recv` takes what the kernel holds and paho's reads are served from
    it; `pending()` (which paho already asks of TLS sockets) tells its loop not to wait in
    `select` while bytes are buffered. Only reads are buffered: writes go straight through.
    """

    __slots__ = ("_sock", "_buf", "_pos")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        buf, pos = self._buf, self._pos
        if pos >= len(buf):  # empty: one read of what the kernel has (raises BlockingIOError if nothing)
            buf = self._sock.recv(_READ_SIZE)
            if not buf:
                return buf  # end of stream
            self._buf, pos = buf, 0
        self._pos = pos + size
        return buf[pos:pos + size] if pos or size < len(buf) else buf

    def buffered(self) -> int:
        """Bytes read from the kernel and not yet taken."""
        return len(self._buf) - self._pos

    def whole_packet(self) -> tuple[int, int, bytes] | None:
        """(type byte, remaining length, rest) of the next MQTT packet, taken from the
        buffer if it holds all of it; else None and nothing taken (a packet cut by the end
        of the buffer, or a length that is not a valid variable byte integer, is left to
        paho's own reads, which raise or wait as they always did)."""
        buf, pos = self._buf, self._pos
        end = len(buf)
        length, mult, at = 0, 1, pos + 1
        while at < end and at < pos + 5:  # at most 4 length bytes
            byte = buf[at]
            length += (byte & 127) * mult
            at += 1
            if byte < 128:
                if at + length > end:
                    return None
                self._pos = at + length
                return buf[pos], length, buf[at:at + length]
            mult *= 128
        return None

    def pending(self) -> int:
        """Bytes readable without waiting: ours, and those a TLS layer holds decrypted."""
        inner = getattr(self._sock, "pending", None)
        return max(0, len(self._buf) - self._pos) + (inner() if inner is not None else 0)

    def send(self, data: bytes | bytearray) -> int:
        return self._sock.send(data)

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)


# What _Client._handle_publish uses of paho's internals; without them it leaves all to paho.
_FAST_PUBLISH = all(callable(getattr(paho.Client, name, None))
                    for name in ("_handle_publish", "_handle_on_message", "_send_puback", "_easy_log"))
# The properties of every PUBLISH that carries none (devices send none): one empty object,
# where paho builds one per message (about 20 µs, the largest single cost of a message).
NO_PROPERTIES = Properties(PacketTypes.PUBLISH)
_now = getattr(paho, "time_func", time.monotonic)  # paho's clock for message.timestamp
# What _Client._packet_read uses of paho's internals; without them paho reads as it always did.
_FAST_READ = all(callable(getattr(paho.Client, name, None)) for name in ("_packet_read", "_packet_handle", "_easy_log"))
# Packets handled in one loop_read beyond paho's one: then paho's loop sends what is queued
# (acks) and checks the keepalive, at least every 100 messages (~50 ms of 50-reading ones).
_MORE_PACKETS = 100


def _length_bytes(length: int) -> list[int]:
    """The remaining length as MQTT's variable byte integer (paho keeps the bytes it read)."""
    out = []
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | 128 if length else byte)
        if not length:
            return out


class _Client(paho.Client):
    """paho's client, reading through a BufferedSocket and decoding a plain PUBLISH without
    a Properties object of its own. `_create_socket` is paho's own hook (it wraps sockets
    for TLS and websockets there); were it renamed, this class would read unbuffered."""

    def _create_socket(self) -> Any:
        return BufferedSocket(super()._create_socket())

    def loop_read(self, max_packets: int = 1) -> paho.MQTTErrorCode:
        """paho's `loop_read`, which handles one packet, then the packets already buffered
        (up to _MORE_PACKETS): paho's loop would go round `select`, its writes and its
        keepalive checks once per packet. A packet cut by the end of the buffer is read
        on as paho reads it: MQTT_ERR_AGAIN (here: return) when the kernel has no more."""
        rc = super().loop_read(max_packets)
        sock = self._sock
        if type(sock) is not BufferedSocket:
            return rc
        for _ in range(_MORE_PACKETS):
            if rc != paho.MQTTErrorCode.MQTT_ERR_SUCCESS or self._sock is not sock or not sock.buffered():
                break
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == paho.MQTTErrorCode.MQTT_ERR_AGAIN:
                return paho.MQTTErrorCode.MQTT_ERR_SUCCESS
        return rc

    def _packet_read(self) -> paho.MQTTErrorCode:
        """paho's `_packet_read` for a packet the buffer holds whole: one slice instead of
        a `recv` per header byte and for the rest, then paho's own `_packet_handle` on the
        same `_in_packet` paho's reads would have built. Anything else (no buffer, a packet
        partly read or not all buffered) is paho's."""
        sock = self._sock
        if not _FAST_READ or type(sock) is not BufferedSocket or self._in_packet["command"] != 0:
            return super()._packet_read()
        whole = sock.whole_packet()
        if whole is None:
            return super()._packet_read()
        command, length, rest = whole
        length_bytes = _length_bytes(length)
        self._in_packet = {"command": command, "have_remaining": 1, "remaining_count": length_bytes,
                           "remaining_mult": 128 ** len(length_bytes), "remaining_length": length,
                           "packet": bytearray(rest), "to_process": 0, "pos": 0}
        now = _now()
        with self._msgtime_mutex:
            self._last_bytes_received = now
        try:
            rc = self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(paho.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = paho.MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = {"command": 0, "have_remaining": 0, "remaining_count": [], "remaining_mult": 1,
                           "remaining_length": 0, "packet": bytearray(b""), "to_process": 0, "pos": 0}
        with self._msgtime_mutex:
            self._last_bytes_received = _now()
        return rc

    def _handle_publish(self) -> paho.MQTTErrorCode:
        """paho's `_handle_publish` for an MQTT 5 PUBLISH at QoS 0 or 1 without properties,
        the messages devices send; any other packet (QoS 2, properties, MQTT 3, too short to
        be well formed) is paho's to decode and answer, as before. The message handed to
        on_message is the same but for `properties`, the shared empty NO_PROPERTIES."""
        packet: bytearray = self._in_packet["packet"]  # paho reads into a bytearray
        command = self._in_packet["command"]
        qos = (command & 0x06) >> 1
        if not _FAST_PUBLISH or self._protocol != paho.MQTTv5 or qos > 1 or len(packet) < 2:
            return super()._handle_publish()
        # Variable header: topic length (2 bytes), topic, packet id (2, QoS 1), properties
        # length (a variable byte integer: one 0 byte when there are none).
        end = 2 + int.from_bytes(packet[:2], "big")
        at = end + 2 * qos
        if len(packet) <= at or packet[at] != 0:
            return super()._handle_publish()
        view = memoryview(packet)  # bytes() of a slice of it: one copy, as paho's struct.unpack makes
        message = paho.MQTTMessage(mid=int.from_bytes(view[end:at], "big") if qos else 0, topic=bytes(view[2:end]))
        message.dup = (command & 0x08) != 0
        message.qos = qos
        message.retain = (command & 0x01) != 0
        message.properties = NO_PROPERTIES
        message.payload = bytes(view[at + 1:])
        view.release()
        self._easy_log(paho.MQTT_LOG_DEBUG, "Received PUBLISH (d%d, q%d, r%d, m%d), %r, ...  (%d bytes)",
                       message.dup, qos, message.retain, message.mid, message._topic, len(message.payload))
        message.timestamp = _now()
        self._handle_on_message(message)
        if qos == 0 or self._manual_ack:
            return paho.MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._send_puback(message.mid)


def make_client(cfg: MqttConfig, client_id: str | None = None, manual_ack: bool = False) -> paho.Client:
    client = _Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id or cfg.client_id,
        protocol=paho.MQTTv5,
        manual_ack=manual_ack,
    )
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.secret())
    if cfg.tls_ca:
        client.tls_set(ca_certs=str(cfg.tls_ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    # Outgoing QoS 1 window (publishers, the derived/alert topics).
    client.max_inflight_messages_set(1000)
    return client


def connect_properties(cfg: MqttConfig) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = cfg.session_expiry_s
    props.ReceiveMaximum = cfg.receive_maximum
    return props


_PUBACK = struct.Struct("!BBH")  # fixed header 0x40, remaining length 2, packet id


def ack_many(client: paho.Client, mids: list[int]) -> None:
    """PUBACK many QoS 1 messages in one socket write.

    paho's `ack()` queues one 4-byte packet and wakes its network thread per message;
    at thousands of acks per batch that is most of the cost of acking. A PUBACK with
    reason Success and no properties is the same 4 bytes in MQTT 3.1.1 and 5, so the
    batch is queued as one packet. Falls back to `ack()` if paho's internals change.
    """
    if not mids:
        return
    queue = getattr(client, "_packet_queue", None)
    if queue is None:
        for mid in mids:
            client.ack(mid, 1)
        return
    queue(paho.PUBACK, b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids]), 0, 1)


def ack_durable(client: paho.Client, tokens: list[tuple[int, int, int]], generation: int) -> None:
    """Acknowledge messages whose effect is now durable. A token is (connection
    generation, mid, qos): an ack only means something on the connection the message
    arrived on; after a reconnect the broker redelivers what we had not acked."""
    ack_many(client, [mid for gen, mid, qos in tokens if gen == generation and qos == 1])
    for gen, mid, qos in tokens:
        if gen == generation and qos == 2:
            client.ack(mid, qos)


def connect_refused(reason_code, log: logging.Logger) -> bool:
    """True, logged, when the broker refused our CONNECT (paho retries on its own)."""
    if reason_code.is_failure:
        log.error("event=mqtt_connect_refused reason=%r", str(reason_code))
        return True
    return False


def subscribe_all(client: paho.Client, filters: list[str], session_present: bool, log: logging.Logger,
                  **fields: object) -> None:
    """Subscribe to every filter at QoS 1 (SUBACK arrives in on_suback) and log the connection."""
    client.subscribe([(f, paho.SubscribeOptions(qos=1)) for f in filters])
    extra = "".join(f" {k}={v}" for k, v in fields.items())
    log.info("event=mqtt_connected%s session_present=%s subscriptions=%s", extra, session_present, ",".join(filters))


def on_suback(reason_codes: list, connected: threading.Event, log: logging.Logger) -> None:
    """SUBACK: "connected" means subscribed, so nothing published from now on can miss us."""
    failed = [str(rc) for rc in reason_codes if rc.is_failure]
    if failed:
        log.error("event=subscribe_refused reasons=%s (check the broker ACL for this account)", ",".join(failed))
        return
    connected.set()
    log.info("event=mqtt_subscribed")  # from here on nothing published to our filters can miss us


def on_disconnected(client: paho.Client, reason_code, connected: threading.Event, gauge, log: logging.Logger,
                    expected: bool) -> None:
    """Note the loss; paho reconnects by itself, after a jittered delay so a fleet of
    services does not reconnect in lock-step after a broker restart."""
    gauge.set(0)
    connected.clear()
    client.reconnect_delay_set(min_delay=random.uniform(0.5, 1.5), max_delay=30)
    if not expected:
        log.warning("event=mqtt_disconnected reason=%r (reconnecting)", str(reason_code))
