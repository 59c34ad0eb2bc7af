"""paho-mqtt client set-up shared by every aqpipe service: MQTT 5, persistent session."""

from __future__ import annotations

import ssl

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.config import MqttConfig


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
