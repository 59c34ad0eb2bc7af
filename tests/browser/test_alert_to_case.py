"""From the alert to the case, as the inspector woken at night does it: minute data of a gas
boiler whose O2-corrected NOx exceeds its permit limit for two hours goes through the real
Mosquitto, ingest, InfluxDB, aggregator and alerts service to a real Alertmanager; the
inspector takes the alert's `case_url` from Alertmanager, opens it in Chromium, sees the
exceedance with its minute data, and records `verified`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from selenium.webdriver.common.by import By

import servers
from alerts.cases import store
from tests.browser.conftest import login, submit, timeline_states
from tests.helpers import http_get, service_starter, stack_minutes, wait_until

pytestmark = pytest.mark.integration
CST = timezone(timedelta(hours=8))
OUTLET = "91620503MA002-DA001"  # deploy/config: 麦积区示例燃气供热站, gas boiler (reference O2 3.5 %), permit NOx 50


@pytest.fixture
def alertmanager(tmp_path) -> Iterator[servers.Server]:
    server = servers.Server("alertmanager", servers.free_port(), tmp_path / "am").start()
    yield server
    server.stop()


@pytest.fixture
def web_env(web_env, alertmanager, unique) -> dict[str, str]:
    """The web server's environment is also the alert path's: same case database, same
    case_url_template (this test's web server), this test's Alertmanager."""
    return {**web_env, "AQPIPE_ALERTS__ALERTMANAGER_URL": alertmanager.url,
            "AQPIPE_ALERTS__CLIENT_ID": f"aqpipe-alerts-{unique}",
            "AQPIPE_AGGREGATOR__CLIENT_ID": f"aqpipe-aggregator-{unique}",
            "AQPIPE_AGGREGATOR__SETTLE_S": "0.2", "AQPIPE_AGGREGATOR__TICK_S": "0.1",
            "AQPIPE_AGGREGATOR__LATENESS_HOURS": "96", "AQPIPE_AGGREGATOR__US": "false"}


@pytest.fixture
def alert_path(web_config, ingest) -> Iterator[None]:
    """Ingest, aggregator and alerts service on the test servers, each subscribed (SUBACK)."""
    from aggregator.service import AggregatorService
    from alerts.service import AlertsService

    ingest()
    starters = [service_starter(AggregatorService, web_config), service_starter(AlertsService, web_config)]
    try:
        for gen in starters:
            next(gen)()
        yield
    finally:
        for gen in reversed(starters):
            for _ in gen:
                pass


def stack_alerts(alertmanager: servers.Server) -> list[dict]:
    """What Alertmanager's API holds for this outlet's stack exceedance."""
    return [a for a in json.loads(http_get(f"{alertmanager.url}/api/v2/alerts?filter=alertname%3D%22StackExceedance%22"))
            if a["labels"].get("alertname") == "StackExceedance" and a["labels"].get("outlet") == OUTLET]


def test_the_inspector_opens_the_case_from_the_alert_in_alertmanager(
        alert_path, publisher, alertmanager, web, browser):
    today = datetime.now(CST).replace(hour=0, minute=0, second=0, microsecond=0)
    h1 = int((today - timedelta(days=1)).timestamp()) + 10 * 3600  # yesterday 10:00 China time
    # Raw NOx 40 mg/m³ (< 50) at 10 % O2: corrected 40 × (21 − 3.5) / (21 − 10) = 63.6 > 50.
    for h in (h1, h1 + 3600):
        publisher(f"aq/v1/stack/{OUTLET}", stack_minutes(OUTLET, h, {"nox": 40.0, "o2": 10.0}))

    alert = wait_until(lambda: stack_alerts(alertmanager), timeout=60)[0]
    case_url = alert["annotations"]["case_url"]

    def cases() -> list:
        with web.ctx.engine.connect() as conn:
            return [c.to_json() for c in store.list_cases(conn, web.ctx.url_template)]
    case = wait_until(lambda: [c for c in cases() if c["exceeded_hours"] == 2], timeout=60)[0]
    assert len(cases()) == 1 and case["outlet"] == OUTLET
    path = f"/cases/{case['id']}"
    assert case_url == case["url"] == web.url + path  # a real link to this test's web server

    login(browser, web, "wang", "inspector", path, url=case_url)
    d = browser.driver
    assert d.current_url == case_url
    assert d.find_element(By.ID, "exceeded-hours").text == "2"
    rows = d.find_elements(By.CSS_SELECTOR, "#hours tr.verdict-exceeded")
    assert len(rows) == 2
    corrected = f"{40.0 * (21 - 3.5) / (21 - 10):.1f}"
    assert all(corrected in r.text and "60" in r.text for r in rows), [r.text for r in rows]
    chart = d.find_element(By.CSS_SELECTOR, "#chart .wide svg")
    assert chart.size["width"] > 300 and chart.find_elements(By.CSS_SELECTOR, "line.hline")
    assert len(chart.find_elements(By.CSS_SELECTOR, "line.step")) == 2
    # the minute data the alerts service read from InfluxDB's `stack` as the case's evidence
    points = sum(len(p.get_attribute("points").split()) for p in chart.find_elements(By.CSS_SELECTOR, "polyline.line"))
    assert points == 120

    submit(browser, "verified", note="夜间接警，现场核实")
    assert not d.find_elements(By.ID, "error")
    assert timeline_states(browser)[0] == "verified"
    assert d.find_element(By.CSS_SELECTOR, "#timeline li.event-transition").text.count("wang") == 1
    assert [c["status"] for c in cases()] == ["verified"]
