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
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import servers
from tests import grafana
from tests.helpers import http_get, metric_value, wait_until
from tests.yaml_subset import load_yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "aqpipe-rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "aqpipe-rules.test.yml"
OPERATIONS_DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "aqpipe-operations.json"
PROMETHEUS_DATASOURCE = next(d for d in load_yaml(ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "aqpipe.yaml")
                             ["datasources"] if d["type"] == "prometheus")
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


# --------------------------------------------------------------------------- a real Prometheus

TEST_FOR = "2s"  # the shipped `for:` (AqpipeSpoolFull: 1m) would make the test wait a minute


def rules_with_short_for(text: str, duration: str = TEST_FOR) -> str:
    """The shipped rules, every `for:` shortened: the expressions, labels and annotations
    Prometheus evaluates are the shipped ones, not a hand-written copy."""
    shortened, n = re.subn(r"^(\s+for:\s*)\S+\s*$", rf"\g<1>{duration}", text, flags=re.M)
    assert n == text.count("for:") > 0, "every `for:` line found and shortened"
    return shortened


def test_rules_with_short_for_changes_only_the_durations():
    original = RULES.read_text()
    short = rules_with_short_for(original)
    assert short.count(f"for: {TEST_FOR}\n") == original.count("for:")
    assert re.sub(r"for: \S+", "for:", short) == re.sub(r"for: \S+", "for:", original)


def _prometheus_config(target: str, rules: Path) -> str:
    """Shipped scrape job for ingest (`aqpipe run` serves ingest's endpoint), aimed at the test's process."""
    job = next(j["job_name"] for j in load_yaml(CONFIG)["scrape_configs"]
               if j["static_configs"][0]["targets"][0].endswith(":9108"))
    return f"""\
global:
  scrape_interval: 500ms
  evaluation_interval: 500ms
rule_files:
  - {rules}
scrape_configs:
  - job_name: {job}
    static_configs:
      - targets: ["{target}"]
"""


def _api(prom: servers.Server, path: str, **params: str) -> list | dict:
    url = f"{prom.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            doc = json.load(r)
    except urllib.error.HTTPError as e:  # 400 / 422: Prometheus refused the query
        doc = json.loads(e.read() or b"{}") | {"url": url}
    assert doc.get("status") == "success", doc
    return doc["data"]


def _alerts(prom: servers.Server, name: str) -> list[dict]:
    return [a for a in _api(prom, "alerts")["alerts"] if a["labels"]["alertname"] == name]


def _metrics(port: int) -> str:
    try:
        return http_get(f"http://127.0.0.1:{port}/metrics")
    except OSError:
        return ""


def _readyz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


@pytest.fixture
def own_influxdb(tmp_path) -> Iterator[servers.Server]:
    """An InfluxDB of this test's own: it is stopped to make ingest spool."""
    server = servers.Server("influxdb", servers.free_port(), tmp_path / "influxdb").start()
    yield server
    server.stop()


@pytest.fixture
def aqpipe_run(mosquitto, own_influxdb, tmp_path, unique) -> Iterator[tuple[subprocess.Popen, int]]:
    """`aqpipe run` (ingest + aggregator) as a process, metrics on a free port, a 1 KiB spool."""
    port = servers.free_port()
    env = {**os.environ, "AQPIPE_MQTT__PORT": str(mosquitto.port), "AQPIPE_MQTT__CLIENT_ID": f"aqpipe-ingest-{unique}",
           "AQPIPE_AGGREGATOR__CLIENT_ID": f"aqpipe-aggregator-{unique}", "AQPIPE_INFLUX__URL": own_influxdb.url,
           "AQPIPE_INFLUX__DATABASE": "aq", "AQPIPE_INFLUX__FLUSH_INTERVAL_S": "0.05",
           "AQPIPE_DATA_DIR": str(tmp_path / "data"), "AQPIPE_METRICS__PORT": str(port),
           "AQPIPE_SPOOL__MAX_BYTES": "1024", "AQPIPE_REGISTRY_DIR": str(ROOT / "deploy" / "config"),
           "AQPIPE_WEB__PORT": str(servers.free_port())}  # aqpipe run also serves web: not on the fixed 9120
    env.pop("AQPIPE_CONFIG", None)
    log = tmp_path / "aqpipe-run.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([AQPIPE, "run"], env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        # /readyz is 200 once ingest and the aggregator have their SUBACKs: nothing published misses them
        wait_until(lambda: _readyz(port) == 200 or proc.poll() is not None, timeout=20)
        assert proc.poll() is None, log.read_text()
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def prometheus(aqpipe_run, tmp_path) -> Iterator[servers.Server]:
    _, port = aqpipe_run
    rules = tmp_path / "aqpipe-rules.yml"
    rules.write_text(rules_with_short_for(RULES.read_text()))
    config = tmp_path / "prometheus.yml"
    config.write_text(_prometheus_config(f"127.0.0.1:{port}", rules))
    server = servers.Server("prometheus", servers.free_port(), tmp_path / "prometheus", config_file=config).start()
    yield server
    server.stop()


def test_prometheus_scraping_aqpipe_run_fires_spool_full_when_the_spool_fills(
        aqpipe_run, prometheus, own_influxdb, publisher, unique):
    proc, port = aqpipe_run
    instance = f"127.0.0.1:{port}"

    def scraped_spool_full() -> list[str]:
        result = _api(prometheus, "query", query=f'aqpipe_spool_full{{instance="{instance}"}}')["result"]
        return [r["value"][1] for r in result]

    # the shipped rules are loaded, the target is scraped, and nothing fires yet
    loaded = {r["name"]: r for g in _api(prometheus, "rules")["groups"] for r in g["rules"]}
    assert set(loaded) == set(_alert_names()) and loaded["AqpipeSpoolFull"]["duration"] == 2
    assert wait_until(scraped_spool_full, timeout=20) == ["0"]
    assert _alerts(prometheus, "AqpipeSpoolFull") == []

    own_influxdb.stop()
    station = f"{unique}-prom"
    t0 = datetime.now(CST).replace(second=0, microsecond=0) - timedelta(hours=2)
    published = 0
    deadline = time.monotonic() + 30
    while metric_value(_metrics(port), "aqpipe_spool_full") != 1:
        assert time.monotonic() < deadline and proc.poll() is None, f"spool not full after {published} messages"
        readings = [{"time": (t0 + timedelta(minutes=published * 20 + i)).isoformat(), "values": {"pm25": 10.0 + i}}
                    for i in range(20)]  # ~1.2 KB of line protocol: more than the spool's 1 KiB
        publisher(f"aq/v1/ambient/{station}", {"station": station, "readings": readings})
        published += 1
        wait_until(lambda: metric_value(_metrics(port), "aqpipe_spool_full") == 1 or
                   metric_value(_metrics(port), "aqpipe_received_messages_total", 'kind="ambient"') >= published)

    firing = wait_until(lambda: [a for a in _alerts(prometheus, "AqpipeSpoolFull") if a["state"] == "firing"], timeout=30)
    assert [a["labels"] for a in firing] == [{"alertname": "AqpipeSpoolFull", "job": "aqpipe-ingest", "instance": instance,
                                              "severity": "critical", "team": "operations"}]
    assert firing[0]["annotations"]["summary"].startswith(f"ingest on {instance}: spool full")

    # InfluxDB back: the spool drains and the alert resolves
    own_influxdb.start()
    wait_until(lambda: scraped_spool_full() == ["0"], timeout=30)
    wait_until(lambda: _alerts(prometheus, "AqpipeSpoolFull") == [], timeout=10)


def test_the_operations_dashboards_queries_run_on_a_prometheus_scraping_aqpipe_run(aqpipe_run, prometheus, publisher, unique):
    """Each PromQL target, as Grafana would send it, is accepted by the real Prometheus, and
    returns series whenever Prometheus holds every metric it names (the gateway's panels select
    job aqpipe-hj212-gateway, which this Prometheus does not scrape)."""
    _, port = aqpipe_run
    station = f"{unique}-ops"
    publisher(f"aq/v1/ambient/{station}", {"station": station, "time": datetime.now(CST).isoformat(), "values": {"pm25": 1.0}})
    publisher(f"aq/v1/ambient/{station}", b"not json")  # a dead letter: its labelled family gets a series
    wait_until(lambda: metric_value(_metrics(port), "aqpipe_deadletter_total", 'reason="not_json"') == 1, timeout=10)
    # the series the messages created scraped twice, so rate() over them has two samples
    for name in ("aqpipe_received_messages_total", "aqpipe_deadletter_total"):
        wait_until(lambda: _api(prometheus, "query", query=f"min(count_over_time({name}[1m])) >= 2")["result"], timeout=20)

    dash = json.loads(OPERATIONS_DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    selected = {}
    for var in grafana.query_variables(dash, "prometheus"):
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
        assert m, f"variable {var['name']}: not label_values(selector, label): {var['query']}"
        selected[var["name"]] = _api(prometheus, f"label/{m.group(2)}/values", **{"match[]": m.group(1)})
    assert selected == {"instance": [f"127.0.0.1:{port}"]}
    interval = grafana.interval(dash["time"], PROMETHEUS_DATASOURCE["jsonData"]["timeInterval"])
    builtins = {"__interval": interval,
                "__rate_interval": grafana.rate_interval(interval, PROMETHEUS_DATASOURCE["jsonData"]["timeInterval"])}
    scraped = set(_api(prometheus, "label/__name__/values"))

    with_data, without = [], []
    for target in grafana.promql_targets(dash, OPERATIONS_DASHBOARD.name):
        q = grafana.interpolate(target.query, variables, selected, builtins, escape=grafana.promql_regex_escape)
        result = _api(prometheus, "query", query=q)["result"]  # a query Prometheus refuses fails here
        named = set(re.findall(r"\b([a-z_][a-z0-9_]*)\{", q))
        if 'job="aqpipe-hj212-gateway"' in q or not named <= scraped:
            without.append(str(target))
            continue
        assert result, f"{target}: no series although Prometheus holds {sorted(named)}: {q}"
        with_data.append(str(target))
    assert len(with_data) >= 15, f"with data: {with_data}; not checked for data: {without}"
