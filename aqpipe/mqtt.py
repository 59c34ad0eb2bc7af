"""paho-mqtt client set-up shared by every aqpipe service: MQTT 5, persistent session."""

from __future__ import annotations

import logging
import random
import ssl
import struct
import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from aqpipe.config import MqttConfig


def make_client(cfg: MqttConfig, client_id: str | None = None, manual_ack: bool = False) -> paho.Client:
    client = paho.Client(
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
