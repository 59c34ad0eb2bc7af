"""deploy/prometheus/ on the real tools: promtool checks the config and the rules and runs
the rules' unit tests (aqpipe-rules.test.yml); a real Prometheus scrapes a running
`aqpipe run` and fires AqpipeSpoolFull when ingest's spool fills.

promtool comes with Debian's `prometheus` package (`make deps`); without it these fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import servers
from tests.helpers import http_get, metric_value, wait_until
from tests.yaml_subset import load_yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "aqpipe-rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "aqpipe-rules.test.yml"
AQPIPE = str(Path(sys.executable).parent / "aqpipe")
CST = timezone(timedelta(hours=8))


def _promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool") or "/usr/bin/promtool"
    assert os.access(exe, os.X_OK), "promtool is not installed: apt-get install prometheus (or run `make deps`)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def _alert_names() -> list[str]:
    return [rule["alert"] for group in load_yaml(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


# --------------------------------------------------------------------------- promtool

def test_promtool_accepts_the_shipped_config_and_the_rules_it_loads():
    r = _promtool("check", "config", str(CONFIG))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(load_yaml(CONFIG)['rule_files'])} rule files found" in r.stdout + r.stderr


def test_promtool_accepts_the_rules():
    r = _promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(_alert_names())} rules found" in r.stdout + r.stderr


def test_every_alert_rule_has_a_unit_test_where_it_fires_and_one_where_it_stays_quiet():
    """Adding a rule means adding its cases to aqpipe-rules.test.yml: this names the missing ones."""
    doc = load_yaml(RULE_TESTS)
    assert doc["rule_files"] == [RULES.name]
    fires, quiet = set(), set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = set(_alert_names())
    assert names, RULES
    missing = {"firing": sorted(names - fires), "quiet": sorted(names - quiet)}
    assert missing == {"firing": [], "quiet": []}, f"alert rules without a unit test in {RULE_TESTS.name}: {missing}"
    assert (fires | quiet) <= names, f"tests of rules that do not exist: {sorted((fires | quiet) - names)}"


def test_promtool_runs_the_rules_unit_tests_and_they_pass():
    r = _promtool("test", "rules", str(RULE_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr
