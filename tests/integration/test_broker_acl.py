"""deploy/mosquitto/aqpipe.acl on the real broker: each device writes only its own topic."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import servers

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = {"620503-001": "pw-one", "620503-002": "pw-two", "aqpipe-ingest": "pw-ingest"}


@pytest.fixture
def secured_broker(tmp_path):
    passwd = tmp_path / "passwd"
    passwd.touch()
    for user, pw in ACCOUNTS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, pw], check=True, capture_output=True)
    server = servers.Server("mosquitto", servers.free_port(), tmp_path / "mq",
                            auth=(passwd, ROOT / "deploy" / "mosquitto" / "aqpipe.acl")).start()
    yield server
    server.stop()


def _client(port: int, user: str, pw: str) -> paho.Client:
    c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"acl-{user}", protocol=paho.MQTTv5)
    c.username_pw_set(user, pw)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_a_station_account_can_publish_its_own_topic_but_not_another_stations(secured_broker):
    port = secured_broker.port
    got: list[str] = []
    subscribed = threading.Event()
    ingest = _client(port, "aqpipe-ingest", "pw-ingest")
    ingest.on_message = lambda c, u, m: got.append(m.topic)
    ingest.on_subscribe = lambda *a: subscribed.set()
    ingest.subscribe("aq/v1/ambient/+", qos=1)
    assert subscribed.wait(5)

    station = _client(port, "620503-001", "pw-one")
    station.publish("aq/v1/ambient/620503-002", b"{}", qos=1).wait_for_publish(5)  # spoofing: dropped
    station.publish("aq/v1/ambient/620503-001", b"{}", qos=1).wait_for_publish(5)
    threading.Event().wait(0.5)
    assert got == ["aq/v1/ambient/620503-001"]
    for c in (station, ingest):
        c.disconnect()
        c.loop_stop()


def test_a_wrong_password_is_refused(secured_broker):
    c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.username_pw_set("620503-001", "wrong")
    result: list = []
    done = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: (result.append(rc), done.set())
    c.connect("127.0.0.1", secured_broker.port)
    c.loop_start()
    assert done.wait(5)
    c.loop_stop()
    assert result[0].is_failure
