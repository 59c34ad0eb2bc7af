"""Feeds shared by the benchmarks: one-reading and 50-reading messages, and a
publisher that waits for every PUBACK."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

VALUES = {"pm25": 35.2, "pm10": 61.0, "so2": 8.0, "no2": 31.0, "co": 0.6, "o3": 80.0,
          "temp": 12.3, "rh": 45.0, "ws": 2.1, "wd": 270.0, "pa": 1012.5}
T0 = int(time.time()) - 30 * 86400  # a month ago: inside retention, one point per (station, second)


def client(cid: str | None = None, port: int = 1883) -> paho.Client:
    c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=cid or "", protocol=paho.MQTTv5)
    c.max_inflight_messages_set(2000)
    return c


def session_props() -> Properties:
    p = Properties(PacketTypes.CONNECT)
    p.SessionExpiryInterval = 3600
    p.ReceiveMaximum = 20000
    return p


def register_session(port: int, cid: str) -> None:
    """Create the consumer's persistent session and subscription, then go offline."""
    c = client(cid)
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.connect("127.0.0.1", port, clean_start=True, properties=session_props())
    c.loop_start()
    c.subscribe([("aq/v1/ambient/+", paho.SubscribeOptions(qos=1))])
    done.wait(5)
    c.disconnect()
    c.loop_stop()


def publish(port: int, messages: list[tuple[str, bytes]]) -> float:
    c = client()
    c.connect("127.0.0.1", port)
    c.loop_start()
    started = time.perf_counter()
    infos = [c.publish(t, p, qos=1) for t, p in messages]
    for info in infos:
        info.wait_for_publish(60)
    elapsed = time.perf_counter() - started
    c.disconnect()
    c.loop_stop()
    return elapsed


def one_reading_messages(n: int, tag: str) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        station = f"{tag}-{i % 100:03d}"
        out.append((f"aq/v1/ambient/{station}", json.dumps({"station": station, "time": T0 + i // 100, "values": VALUES}).encode()))
    return out


def batch_messages(readings: int, per: int, tag: str) -> list[tuple[str, bytes]]:
    out = []
    for m in range(readings // per):
        station = f"{tag}-{m % 100:03d}"
        base = T0 + (m // 100) * per
        items = [{"time": base + k, "values": VALUES} for k in range(per)]
        out.append((f"aq/v1/ambient/{station}", json.dumps({"station": station, "readings": items}).encode()))
    return out
