"""alerts/notify/: each channel against its real server (Alertmanager, an HTTP receiver,
Mosquitto, InfluxDB), and the one retry stage."""

from __future__ import annotations

import json
import urllib.request
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alerts.notify import Delivery, Notification, RetryPolicy
from alerts.notify.alertmanager import AlertmanagerNotifier
from alerts.notify.influx import InfluxNotifier
from alerts.notify.mqtt import MqttNotifier
from alerts.notify.webhook import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, WebhookNotifier, verify
from aqpipe.influx import make_writer
from tests.helpers import http_get, metric_value, wait_until

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 24, 2, tzinfo=timezone.utc)
SECRET = b"0123456789abcdef-test-secret"


def notification(state: str = "firing", outlet: str = "91620503MA002-DA001") -> Notification:
    labels = {"alertname": "StackExceedance", "rule": "stack_exceedance", "outlet": outlet, "pollutant": "so2",
              "enterprise": "麦积区示例燃气供热站", "team": "inspectors", "severity": "critical"}
    ann = {"summary": "麦积区示例燃气供热站 排口 DA001 SO2 折算小时均值 62.0 mg/m³，超过限值 50 mg/m³",
           "value": "62.0", "limit": "50", "case_url": "http://127.0.0.1:9120/cases/7"}
    return Notification("abcdef0123456789", "stack_exceedance", state, labels, ann, T0,  # type: ignore[arg-type]
                        T0 + timedelta(hours=2) if state == "resolved" else None, 62.0, 50.0, 7,
                        "http://127.0.0.1:9120/cases/7")




def _am_alerts(am) -> list[dict]:
    return json.loads(http_get(f"{am.url}/api/v2/alerts"))


def test_alertmanager_takes_a_firing_alert_delivers_it_and_then_its_resolution(alertmanager, receiver):
    am = AlertmanagerNotifier(alertmanager.url)
    assert Delivery().deliver(am, [notification()])
    got = wait_until(lambda: _am_alerts(alertmanager))
    assert got[0]["labels"]["alertname"] == "StackExceedance" and got[0]["status"]["state"] == "active"
    assert got[0]["annotations"]["case_url"] == "http://127.0.0.1:9120/cases/7"
    assert got[0]["startsAt"].startswith("2026-11-24T02:00:00")
    firing = wait_until(lambda: [b for b in receiver.bodies("/am") if b["status"] == "firing"])
    alert = firing[0]["alerts"][0]
    assert alert["labels"]["outlet"] == "91620503MA002-DA001" and alert["labels"]["team"] == "inspectors"
    assert "62.0" in alert["annotations"]["summary"]

    assert Delivery().deliver(am, [notification("resolved")])
    resolved = wait_until(lambda: [b for b in receiver.bodies("/am") if b["status"] == "resolved"], timeout=20)
    assert resolved[0]["alerts"][0]["endsAt"].startswith("2026-11-24T04:00:00")
    assert len([b for b in receiver.bodies("/am") if b["status"] == "firing"]) == 1


def test_the_webhook_body_is_signed_with_the_secret_and_carries_an_idempotency_key(receiver):
    wh = WebhookNotifier(receiver.url + "/hook", SECRET)
    assert Delivery().deliver(wh, [notification()])
    path, headers, body = receiver.requests[0]
    assert verify(SECRET, body, headers[SIGNATURE_HEADER])
    assert not verify(b"another-secret-of-16+", body, headers[SIGNATURE_HEADER])
    assert not verify(SECRET, body + b" ", headers[SIGNATURE_HEADER])
    doc = json.loads(body)
    assert doc["status"] == "firing" and doc["labels"]["alertname"] == "StackExceedance" and doc["case_id"] == 7
    assert headers[IDEMPOTENCY_HEADER] == doc["idempotency_key"] == notification().idempotency_key


def test_a_failing_receiver_is_retried_with_backoff_then_counted_as_failed(receiver):
    from prometheus_client import REGISTRY, generate_latest

    def count(result: str) -> float:
        return metric_value(generate_latest(REGISTRY).decode(), "aqpipe_alert_notifications_total",
                            f'channel="webhook",result="{result}"')

    before = {r: count(r) for r in ("sent", "retried", "failed")}
    receiver.status = 503
    wh = WebhookNotifier(receiver.url + "/hook", SECRET)
    assert not Delivery(RetryPolicy(attempts=3, backoff_s=0.01)).deliver(wh, [notification()])
    assert len(receiver.requests) == 3
    assert count("retried") - before["retried"] == 2 and count("failed") - before["failed"] == 1
    receiver.status = 200
    assert Delivery(RetryPolicy(attempts=3, backoff_s=0.01)).deliver(wh, [notification()])
    assert count("sent") - before["sent"] == 1
    keys = {h[IDEMPOTENCY_HEADER] for _, h, _ in receiver.requests}
    assert len(keys) == 1  # every retry of the same change carries the same key


def test_a_refused_request_is_not_retried(receiver):
    receiver.status = 400
    wh = WebhookNotifier(receiver.url + "/hook", SECRET)
    assert not Delivery(RetryPolicy(attempts=5, backoff_s=0.01)).deliver(wh, [notification()])
    assert len(receiver.requests) == 1


def test_mqtt_alert_is_retained_while_firing_and_cleared_on_resolve(mosquitto):
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        mq = MqttNotifier(client)
        n = notification()
        assert Delivery().deliver(mq, [n])

        def retained() -> list[bytes]:
            got: list[bytes] = []
            sub = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
            sub.on_message = lambda c, u, m: got.append(m.payload)
            sub.connect("127.0.0.1", mosquitto.port)
            sub.subscribe(mq.topic(n), qos=1)
            sub.loop_start()
            try:
                wait_until(lambda: got, timeout=1.0)
            except AssertionError:
                pass  # nothing retained: the empty list says so
            finally:
                sub.disconnect()
                sub.loop_stop()
            return got

        got = retained()
        assert json.loads(got[0])["status"] == "firing"
        assert Delivery().deliver(mq, [notification("resolved")])
        assert retained() == []
    finally:
        client.disconnect()
        client.loop_stop()


def test_alert_events_are_written_to_influxdb_once_per_change(config, influx):
    inf = InfluxNotifier(make_writer(config.influx))
    assert Delivery().deliver(inf, [notification(), notification()])  # twice: overwrites itself
    assert Delivery().deliver(inf, [notification("resolved")])
    rows = influx.rows("SELECT state, value, threshold, case_id, summary FROM alert_events "
                       "WHERE outlet = '91620503MA002-DA001' AND \"rule\" = 'stack_exceedance'")
    assert [(r["state"], r["value"], r["threshold"], r["case_id"]) for r in rows] == [
        ("firing", 62.0, 50.0, 7), ("resolved", 62.0, 50.0, 7)]
    assert "超过限值" in rows[0]["summary"]


def test_alertmanager_down_is_retried_then_failed_without_raising():
    am = AlertmanagerNotifier("http://127.0.0.1:9")  # nothing listens on the discard port
    assert not Delivery(RetryPolicy(attempts=2, backoff_s=0.01)).deliver(am, [notification()])


def test_urlopen_of_alertmanager_api_sees_no_alert_it_was_not_sent(alertmanager):
    # a fresh Alertmanager holds nothing: the first test's alert came from our POST
    with urllib.request.urlopen(f"{alertmanager.url}/api/v2/alerts", timeout=5) as r:
        assert json.load(r) == []


def test_the_dashboards_alert_annotations_find_the_events_in_influxdb(config, influx):
    from pathlib import Path

    inf = InfluxNotifier(make_writer(config.influx))
    assert Delivery().deliver(inf, [notification(), notification("resolved")])
    station = Notification("0011223344556677", "aqi_hourly_severe", "firing",
                           {"alertname": "AQISevere", "station": "620503-001", "severity": "warning"},
                           {"summary": "小时AQI 240"}, T0, value=240.0, threshold=5.0)
    assert Delivery().deliver(inf, [station])
    dashboards = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
    for name, var, ident in (("aqpipe-stack.json", "outlet", "91620503MA002-DA001"), ("aqpipe-aqi.json", "station", "620503-001")):
        dash = json.loads((dashboards / name).read_text(encoding="utf-8"))
        [ann] = [a for a in dash["annotations"]["list"] if a.get("datasource", {}).get("type") == "influxdb"]
        q = (ann["query"].replace(f"${var}", ident.replace("-", "\\-"))
             .replace("$timeFilter", "time >= '2026-11-23T00:00:00Z' AND time <= '2026-11-25T00:00:00Z'"))
        rows = influx.rows(q)
        assert rows and all(r[ann["textColumn"]] and r[ann["titleColumn"]] and r[ann["tagsColumn"]] for r in rows), (name, q, rows)
