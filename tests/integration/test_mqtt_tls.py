"""aqpipe's MQTT client (aqpipe.mqtt.make_client: buffered reads, its own PUBLISH decoding)
over TLS to a real Mosquitto: every message arrives whole, in order, as bytes.

The buffered reader serves paho's small reads from one large `recv`; over TLS a `recv`
returns at most one TLS record and the SSL layer may hold decrypted bytes the kernel no
longer shows, which is what `pending()` covers. Payloads from 1 byte to 200 KB (more
than the 64 KiB read and than a 16 KB TLS record) cross both boundaries.
"""

from __future__ import annotations

import random
import ssl
import threading

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import servers
from aqpipe.config import MqttConfig
from aqpipe.mqtt import make_client
from tests.helpers import self_signed, wait_until


@pytest.fixture
def tls_broker(tmp_path):
    cert, key = self_signed(tmp_path, "aqpipe-mqtt-tls-test")
    broker = servers.Server("mosquitto", servers.free_port(), tmp_path / "broker", tls=(cert, key))
    broker.start()
    yield broker, cert
    broker.stop()


def test_messages_over_tls_arrive_whole_and_in_order_through_the_buffered_client(tls_broker, unique):
    broker, cert = tls_broker
    rng = random.Random(20261128)
    sizes = [1, 2, 127, 128, 16383, 16384, 16385, 65535, 65536, 65537, 200_000]
    sizes += [rng.choice([rng.randint(1, 300), rng.randint(300, 70_000)]) for _ in range(300)]
    payloads = [bytes(rng.getrandbits(8) for _ in range(min(n, 64))) * (n // 64 + 1) for n in sizes]
    payloads = [p[:n] for p, n in zip(payloads, sizes)]

    got: list[tuple[str, bytes, type, type]] = []
    subscribed = threading.Event()
    sub = make_client(MqttConfig(port=broker.port, tls_ca=cert), client_id=f"tls-sub-{unique}")
    sub.on_message = lambda c, u, m: got.append((m.topic, m.payload, type(m.payload), type(m.properties)))
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("tls/#", qos=1)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    pub = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5,
                      client_id=f"tls-pub-{unique}")
    pub.tls_set(ca_certs=str(cert), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        assert subscribed.wait(10), "no SUBACK over TLS"
        for i, payload in enumerate(payloads):
            pub.publish(f"tls/{i % 7}", payload, qos=1)
        wait_until(lambda: len(got) >= len(payloads), timeout=60)
    finally:
        pub.loop_stop()
        pub.disconnect()
        sub.loop_stop()
        sub.disconnect()
    assert len(got) == len(payloads)
    assert [p for _, p, _, _ in got] == payloads  # whole, and in publish order (one publisher, QoS 1)
    assert [t for t, _, _, _ in got] == [f"tls/{i % 7}" for i in range(len(payloads))]
    assert {pt for _, _, pt, _ in got} == {bytes}
