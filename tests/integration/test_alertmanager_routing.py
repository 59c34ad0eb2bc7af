"""deploy/alertmanager/alertmanager.yml on the real Alertmanager: where each alert goes."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

import servers
from tests.helpers import wait_until

pytestmark = pytest.mark.integration
CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "alertmanager" / "alertmanager.yml"
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "aqpipe-rules.yml"


@pytest.fixture
def routed_alertmanager(tmp_path):
    server = servers.Server("alertmanager", servers.free_port(), tmp_path / "am", config_file=CONFIG).start()
    yield server
    server.stop()


def _post(am, alerts: list[dict]) -> None:
    req = urllib.request.Request(f"{am.url}/api/v2/alerts", data=json.dumps(alerts).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=5).close()


def _alerts(am) -> dict[str, dict]:
    with urllib.request.urlopen(f"{am.url}/api/v2/alerts", timeout=5) as r:
        return {a["labels"]["alertname"]: a for a in json.load(r)}


def test_the_shipped_routing_config_passes_amtool():
    r = subprocess.run(["amtool", "check-config", str(CONFIG)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_operational_rule_carries_the_label_its_route_needs():
    text = RULES.read_text()
    assert text.count("- alert: ") == text.count("team: operations") > 0


def test_alerts_reach_the_receiver_their_team_and_severity_call_for(routed_alertmanager):
    am = routed_alertmanager
    base = {"job": "aqpipe-ingest", "instance": "ingest-1:9108"}
    _post(am, [
        {"labels": {"alertname": "AqpipeSpoolFull", "team": "operations", "severity": "critical", **base}},
        {"labels": {"alertname": "AqpipeDeadLettersRising", "team": "operations", "severity": "warning", **base}},
        {"labels": {"alertname": "StackExceedance", "team": "inspectors", "severity": "critical",
                    "outlet": "91620503MA001-DA001"}},
        {"labels": {"alertname": "CaseDeadline", "team": "inspectors", "severity": "warning",
                    "outlet": "91620503MA001-DA001"}},
        {"labels": {"alertname": "AQISevere", "team": "inspectors", "severity": "warning", "station": "620503-001"}},
        {"labels": {"alertname": "HeavyPollutionWatch", "team": "inspectors", "severity": "warning",
                    "station": "620503-001", "level": "yellow"}},
        {"labels": {"alertname": "OutletSilent", "team": "operations", "severity": "warning",
                    "outlet": "91620503MA001-DA001"}},
    ])
    got = wait_until(lambda: (a := _alerts(am)) and len(a) == 7 and a)
    receivers = {name: [r["name"] for r in a["receivers"]] for name, a in got.items()}
    assert receivers == {"AqpipeSpoolFull": ["operators-page"], "AqpipeDeadLettersRising": ["operators"],
                         "StackExceedance": ["inspectors"], "CaseDeadline": ["inspectors"],
                         "AQISevere": ["duty-officers"], "HeavyPollutionWatch": ["duty-officers"],
                         "OutletSilent": ["operators"]}
    # the inspectors get one group per outlet: the exceedance and the deadline together
    with urllib.request.urlopen(f"{am.url}/api/v2/alerts/groups", timeout=5) as r:
        groups = [g for g in json.load(r) if g["receiver"]["name"] == "inspectors"]
    assert [(g["labels"], len(g["alerts"])) for g in groups] == [({"outlet": "91620503MA001-DA001"}, 2)]


def test_a_service_that_is_down_silences_its_other_operational_alerts(routed_alertmanager):
    am = routed_alertmanager
    base = {"job": "aqpipe-ingest", "instance": "ingest-1:9108", "team": "operations"}
    _post(am, [{"labels": {"alertname": "AqpipeServiceDown", "severity": "critical", **base}},
               {"labels": {"alertname": "AqpipeSpoolFilling", "severity": "warning", **base}},
               {"labels": {"alertname": "AqpipeSpoolFilling", "severity": "warning", **base, "instance": "ingest-2:9108"}}])

    def states():
        return sorted((a["labels"]["instance"], a["labels"]["alertname"], a["status"]["state"])
                      for a in json.load(urllib.request.urlopen(f"{am.url}/api/v2/alerts", timeout=5)))

    got = wait_until(lambda: (s := states()) and len(s) == 3 and ("ingest-1:9108", "AqpipeSpoolFilling", "suppressed") in s and s)
    assert got == [("ingest-1:9108", "AqpipeServiceDown", "active"),
                   ("ingest-1:9108", "AqpipeSpoolFilling", "suppressed"),
                   ("ingest-2:9108", "AqpipeSpoolFilling", "active")]
