"""MQTT `aq/v1/alerts/{fingerprint}`: the alert as JSON, retained while firing, cleared
(an empty retained message) on resolve, so a subscriber arriving later sees exactly the
alerts firing now."""

from __future__ import annotations

import json
from collections.abc import Sequence

import paho.mqtt.client as paho

from alerts.notify import DeliveryError, Notification


class MqttNotifier:
    channel = "mqtt"

    def __init__(self, client: paho.Client, topic_prefix: str = "aq/v1", timeout_s: float = 5.0) -> None:
        self.client = client
        self.prefix = topic_prefix
        self.timeout_s = timeout_s

    def topic(self, n: Notification) -> str:
        return f"{self.prefix}/alerts/{n.fingerprint}"

    def send(self, batch: Sequence[Notification]) -> None:
        infos = []
        for n in batch:
            payload = b"" if n.state == "resolved" else json.dumps(n.to_json(), ensure_ascii=False).encode("utf-8")
            infos.append(self.client.publish(self.topic(n), payload, qos=1, retain=True))
        for info in infos:
            try:
                info.wait_for_publish(self.timeout_s)
            except (RuntimeError, ValueError) as e:
                raise DeliveryError(self.channel, f"publish failed: {e}") from e
            if not info.is_published():
                raise DeliveryError(self.channel, f"no PUBACK within {self.timeout_s} s (broker down?)")

    def close(self) -> None:
        pass
