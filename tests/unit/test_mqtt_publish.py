"""aqpipe's paho client decodes a PUBLISH as paho does: same message (but for the shared
empty properties), same answer, same packets queued; and leaves to paho what it does not
take (QoS 2, properties, MQTT 3.1.1, malformed)."""

from __future__ import annotations

import struct

import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from aqpipe import mqtt
from aqpipe.config import MqttConfig


def _properties(kind: str) -> bytes:
    if kind == "none":
        return b"\x00"
    props = Properties(PacketTypes.PUBLISH)
    if kind == "format":
        props.PayloadFormatIndicator = 1
    else:
        props.UserProperty = ("k", "v")
    return props.pack()


@st.composite
def publish_packets(draw: st.DrawFn) -> tuple[int, bytes]:
    qos = draw(st.sampled_from([0, 1, 1, 1, 2]))
    command = 0x30 | (draw(st.booleans()) << 3) | (qos << 1) | draw(st.booleans())
    topic = draw(st.sampled_from([b"aq/v1/ambient/S1", b"", b"aq/\xff\xfe", "aq/v1/stack/排口".encode()]))
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", draw(st.integers(1, 65535)))
    body += _properties(draw(st.sampled_from(["none", "none", "format", "user"]))) + draw(st.binary(max_size=300))
    cut = draw(st.sampled_from([None, None, None, 1, 3, len(body) - 1]))  # now and then a malformed, short packet
    return command, body if cut is None else body[:max(cut, 0)]


def _handle(client_class: type, command: int, packet: bytes, manual_ack: bool, protocol: int) -> tuple:
    """What handling one PUBLISH does: the message on_message got, the result, what is queued to send."""
    client = client_class(callback_api_version=CallbackAPIVersion.VERSION2, protocol=protocol, manual_ack=manual_ack)
    got = []
    client.on_message = lambda c, u, m: got.append(m)
    client._in_packet = {"command": command, "packet": bytearray(packet)}  # what paho reads into
    try:
        rc: object = client._handle_publish()
    except Exception as e:  # noqa: BLE001 - paho's own answer to a malformed packet is part of what is compared
        rc = type(e).__name__
    messages = [(m.mid, m._topic, type(m._topic), m.payload, type(m.payload), m.qos, m.dup, m.retain, m.state, m.info.mid,
                 sorted(m.properties.json().items()) if m.properties is not None else None) for m in got]
    queued = [(p["command"], bytes(p["packet"]), p["qos"], p["mid"]) for p in client._out_packet]
    return rc, messages, queued


@settings(max_examples=600, deadline=None)
@given(publish_packets(), st.booleans(), st.sampled_from([paho.MQTTv5, paho.MQTTv5, paho.MQTTv311]))
def test_a_publish_is_handled_as_paho_handles_it(packet, manual_ack, protocol):
    command, body = packet
    assert _handle(mqtt._Client, command, body, manual_ack, protocol) == _handle(paho.Client, command, body, manual_ack, protocol)


def test_a_device_publish_takes_the_shared_empty_properties():
    body = struct.pack("!H", 3) + b"a/b" + struct.pack("!H", 7) + b"\x00" + b'{"x": 1}'
    client = mqtt.make_client(MqttConfig(), manual_ack=True)
    got = []
    client.on_message = lambda c, u, m: got.append(m)
    client._in_packet = {"command": 0x32, "packet": bytearray(body)}
    assert client._handle_publish() == paho.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got[0].properties is mqtt.NO_PROPERTIES and got[0].mid == 7 and got[0].payload == b'{"x": 1}'
    assert not client._out_packet  # manual ack: nothing sent until the message is durable


@pytest.mark.parametrize("kind", ["format", "user"])
def test_a_publish_with_properties_keeps_them(kind):
    body = struct.pack("!H", 3) + b"a/b" + struct.pack("!H", 7) + _properties(kind) + b"{}"
    client = mqtt.make_client(MqttConfig(), manual_ack=True)
    got = []
    client.on_message = lambda c, u, m: got.append(m)
    client._in_packet = {"command": 0x32, "packet": bytearray(body)}
    client._handle_publish()
    assert got[0].properties is not mqtt.NO_PROPERTIES and got[0].properties.json()
