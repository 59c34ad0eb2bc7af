"""Issue 9's "Done when": minute data of a gas boiler whose O2-corrected SO2 average exceeds
its permit limit for two hours (while the raw value does not), through the real Mosquitto,
InfluxDB, ingest, aggregator and alerts service, to a real Alertmanager delivering to an
HTTP receiver in the test, and to the case."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alerts.cases import store
from aqpipe.config import Config, load_config
from tests.alerting import Receiver
from tests.helpers import http_get, service_starter, stack_minutes, wait_until

pytestmark = pytest.mark.integration
CST = timezone(timedelta(hours=8))
HOUR = 3600
OUTLET = "91620599GB001-DA001"
# A gas boiler (reference O2 3.5 %) whose permit limits SO2 to 50 mg/m³.
OUTLETS_TOML = f"""
[[outlet]]
id = "{OUTLET}"
enterprise = "测试燃气锅炉有限公司"
permit = "91620599GB001XXXXX001P"
boiler = "new"
fuel = "gas"
limits = {{ so2 = 50, nox = 50 }}
"""




@pytest.fixture
def e2e_config(env, tmp_path, unique, alertmanager) -> Config:
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "outlets.toml").write_text(OUTLETS_TOML, encoding="utf-8")
    cfg = load_config(None, {**env, "AQPIPE_REGISTRY_DIR": str(registry),
                             "AQPIPE_AGGREGATOR__CLIENT_ID": f"aqpipe-aggregator-{unique}",
                             "AQPIPE_AGGREGATOR__SETTLE_S": "0.2", "AQPIPE_AGGREGATOR__TICK_S": "0.1",
                             "AQPIPE_AGGREGATOR__LATENESS_HOURS": "96", "AQPIPE_AGGREGATOR__US": "false",
                             "AQPIPE_ALERTS__CLIENT_ID": f"aqpipe-alerts-{unique}",
                             "AQPIPE_ALERTS__ALERTMANAGER_URL": alertmanager.url,
                             "AQPIPE_ALERTS__CASE_URL_TEMPLATE": "http://cases.example.invalid/cases/{case_id}"})
    return cfg


@pytest.fixture
def derived(mosquitto) -> Iterator[list]:
    """Stack records the aggregator publishes, as (topic, raw payload)."""
    got: list = []
    ready = threading.Event()
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    client.on_subscribe = lambda *a: ready.set()
    client.connect("127.0.0.1", mosquitto.port)
    client.subscribe(f"aq/v1/derived/stack/{OUTLET}", qos=1)
    client.loop_start()
    assert ready.wait(5)
    yield got
    client.disconnect()
    client.loop_stop()


def _stack_bodies(receiver: Receiver) -> list[dict]:
    """Alertmanager's notifications about the stack exceedance (the data-quality rules may
    rightly notice that this synthetic feed is constant: ValueStuck)."""
    return [b for b in receiver.bodies("/am") if b["commonLabels"].get("alertname") == "StackExceedance"]


def _records(derived: list, hour_end: int) -> list[dict]:
    want = datetime.fromtimestamp(hour_end, CST).isoformat()
    return [json.loads(p) for _, p in derived if json.loads(p)["time"] == want and json.loads(p)["pollutant"] == "so2"]


def test_two_corrected_exceedance_hours_make_one_alert_one_case_then_resolve_and_stay_quiet(
        ingest, publisher, e2e_config, alertmanager, receiver, derived, influx):
    from aggregator.service import AggregatorService
    from alerts.service import AlertsService

    starters = []
    def start(factory):  # noqa: E306
        gen = service_starter(factory, e2e_config)
        starters.append(gen)
        return next(gen)()

    ingest(e2e_config)
    start(AggregatorService)
    alerts = start(AlertsService)
    today = datetime.now(CST).replace(hour=0, minute=0, second=0, microsecond=0)
    h1 = int((today - timedelta(days=1)).timestamp()) + 10 * HOUR  # yesterday 10:00 China time
    h2, h3, h4 = h1 + HOUR, h1 + 2 * HOUR, h1 + 3 * HOUR
    try:
        # Raw SO2 40 mg/m³ (< 50) at 10 % O2: corrected 40 × (21 − 3.5) / (21 − 10) = 63.6 > 50.
        for h in (h1, h2):
            publisher(f"aq/v1/stack/{OUTLET}", stack_minutes(OUTLET, h, {"so2": 40.0, "o2": 10.0}))
        wait_until(lambda: len(_records(derived, h2)) >= 1, timeout=60)
        am_alerts = wait_until(lambda: [a for a in json.loads(http_get(f"{alertmanager.url}/api/v2/alerts"))
                                        if a["labels"]["alertname"] == "StackExceedance"], timeout=30)
        assert len(am_alerts) == 1
        alert = am_alerts[0]
        assert {k: alert["labels"][k] for k in ("outlet", "pollutant", "team", "enterprise", "rule")} == {
            "outlet": OUTLET, "pollutant": "so2", "team": "inspectors", "enterprise": "测试燃气锅炉有限公司",
            "rule": "stack_exceedance"}
        wait_until(lambda: alerts.processed >= 2, timeout=30)
        with alerts.db.connect() as conn:
            cases = store.list_cases(conn, e2e_config.alerts.case_url_template)
        assert len(cases) == 1
        case = cases[0].to_json()
        assert alert["annotations"]["case_url"] == case["url"] == f"http://cases.example.invalid/cases/{case['id']}"
        corrected = 40.0 * (21 - 3.5) / (21 - 10)
        assert case["permit"] == "91620599GB001XXXXX001P" and case["limit"] == 50.0 and case["limit_source"] == "permit"
        assert [(h["hour_end"], round(h["avg"], 3), round(h["avg_o2corr"], 3), h["valid_minutes"], h["exceeded"])
                for h in case["hours"]] == [
            (datetime.fromtimestamp(h, timezone.utc).isoformat(), 40.0, round(corrected, 3), 60, True) for h in (h1, h2)]
        assert case["exceeded_hours"] == 2 and case["reference_o2"] == 3.5
        firing = wait_until(lambda: [b for b in _stack_bodies(receiver) if b["status"] == "firing"])
        assert len(firing) == 1 and len(firing[0]["alerts"]) == 1

        # A compliant hour resolves it: 20 × 17.5 / 11 = 31.8.
        publisher(f"aq/v1/stack/{OUTLET}", stack_minutes(OUTLET, h3, {"so2": 20.0, "o2": 10.0}))
        resolved = wait_until(lambda: [b for b in _stack_bodies(receiver) if b["status"] == "resolved"], timeout=60)
        assert resolved[0]["alerts"][0]["labels"]["outlet"] == OUTLET

        # A later hour flagged stopped (F, plant stopped) with huge values: nothing.
        publisher(f"aq/v1/stack/{OUTLET}", stack_minutes(OUTLET, h4, {"so2": 900.0, "o2": 20.5}, flag="F", status="stopped"))
        wait_until(lambda: _records(derived, h4), timeout=60)
        wait_until(lambda: alerts.processed >= 4, timeout=30)
        n_stack = len(_stack_bodies(receiver))

        # Restart the alerts service, and redeliver the exceeded hours' records: nothing again.
        alerts.stop()
        alerts = start(AlertsService)
        for topic, payload in [(t, p) for t, p in derived if json.loads(p)["pollutant"] == "so2"]:
            publisher(topic, payload)
        wait_until(lambda: alerts.processed >= 4, timeout=30)
        alerts.send_once()
        with alerts.db.connect() as conn:
            again = [c.to_json() for c in store.list_cases(conn, e2e_config.alerts.case_url_template)]
        assert len(again) == 1 and again[0]["exceeded_hours"] == 2
        assert [a for a in json.loads(http_get(f"{alertmanager.url}/api/v2/alerts"))
                if a["status"]["state"] == "active" and a["labels"]["alertname"] == "StackExceedance"] == []
        assert len(_stack_bodies(receiver)) == n_stack
        assert len([b for b in _stack_bodies(receiver) if b["status"] == "firing"]) == 1
        events = influx.rows(f"SELECT state FROM alert_events WHERE outlet = '{OUTLET}' AND \"rule\" = 'stack_exceedance'")
        assert [e["state"] for e in events] == ["firing", "resolved"]
    finally:
        for gen in reversed(starters):
            for _ in gen:
                pass
