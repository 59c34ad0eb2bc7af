"""deploy/ says only true things: files parse, dashboards query what aqpipe writes, every
AQPIPE_* variable is a config key, every metric named in dashboards and alert rules exists,
ports and broker accounts agree between units, compose, Prometheus and the ACL.

PyYAML is not a dependency: YAML is read by tests/yaml_subset.py, a reader for the block
subset deploy/ uses; it refuses what it does not know, so a file outside the subset fails
here instead of passing unread. Where PyYAML happens to be installed, it must read every
file the same way.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

import aggregator.metrics  # noqa: F401  (registers the aggregator's metrics)
import ingest.metrics  # noqa: F401  (registers the ingest metrics)
from aggregator.stack import Limit, hourly_record
from aggregator.tables import ALL_INPUTS, AUX_INPUTS
from ingest import hj212_gateway
from aqpipe.config import CONFIG_ENV, ENV_PREFIX, Hj212GatewayConfig, MqttConfig, load_config
from aqpipe.ops_http import OpsServer
from aqpipe.pollutants import AMBIENT_FIELDS, STACK_FIELDS
from tests.yaml_subset import load_yaml as _load_yaml
from tests.yaml_subset import parse_yaml as _yaml

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


# --------------------------------------------------------------------------- files parse

@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_deploy_yaml_file_parses_and_reads_the_same_as_pyyaml_would(path):
    doc = _load_yaml(path)
    assert isinstance(doc, dict) and doc
    try:
        import yaml
    except ImportError:
        return  # not installed here: the reader above is the check
    assert doc == yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", DASHBOARDS + sorted(DEPLOY.rglob("*.toml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_deploy_json_and_toml_file_parses(path):
    if path.suffix == ".json":
        assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    else:
        with open(path, "rb") as f:
            assert isinstance(tomllib.load(f), dict)


def test_the_yaml_reader_refuses_what_it_does_not_understand():
    assert _yaml("a:\n  - b: 1\n    c: [x, 'y z']\n  - plain # comment\n") == {"a": [{"b": 1, "c": ["x", "y z"]}, "plain"]}
    for bad in ("a: |\n  text\n", "a: 1\n   b: 2\n", "a: yes\n", "a: 1\na: 2\n", "a: [[1]]\n"):
        with pytest.raises((ValueError, AssertionError)):
            _yaml(bad)


# --------------------------------------------------------------------------- dashboards vs InfluxDB schema

def _influx_schema() -> dict[str, dict[str, set[str]]]:
    """Measurement -> tags and fields that aqpipe writes (DESIGN.md, from the code's own tables)."""
    def values_and_flags(names):
        return set(names) | {f"{n}_flag" for n in names}

    result = SimpleNamespace(avg=np.array([[1.0]]), avg_o2corr=np.array([[1.0]]), valid_minutes=np.array([[60]]),
                             judged=np.array([[True]]), exceeded=np.array([[False]]))
    stack_hourly_fields = set(hourly_record(result, 0, 0, Limit(10.0, "permit")))  # every key when all computable
    aqi_fields = ({"aqi", "category", "primary"} | {f"iaqi_{p}" for p in ALL_INPUTS if p not in AUX_INPUTS}
                  | {f"conc_{p}" for p in ALL_INPUTS} | {"complete"})
    return {
        "ambient": {"tags": {"station"}, "fields": values_and_flags(AMBIENT_FIELDS)},
        "stack": {"tags": {"outlet"}, "fields": values_and_flags(STACK_FIELDS) | {"status"}},
        "aqi_hourly": {"tags": {"station", "standard"}, "fields": aqi_fields},
        "aqi_daily": {"tags": {"station", "standard"}, "fields": aqi_fields},
        "stack_hourly": {"tags": {"outlet", "pollutant"}, "fields": stack_hourly_fields | {"complete"}},
    }


def _dashboard(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _panels(dash: dict):
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _influxql_queries(dash: dict) -> list[str]:
    queries = [t["query"] for p in _panels(dash) for t in p.get("targets", []) if t["datasource"]["type"] == "influxdb"]
    queries += [v["query"] for v in dash["templating"]["list"]
                if v["type"] == "query" and v["datasource"]["type"] == "influxdb"]
    return queries


def _promql_queries(dash: dict) -> list[str]:
    queries = [t["expr"] for p in _panels(dash) for t in p.get("targets", []) if t["datasource"]["type"] == "prometheus"]
    queries += [v["query"]["query"] for v in dash["templating"]["list"]
                if v["type"] == "query" and v["datasource"]["type"] == "prometheus"]
    return queries


def test_the_influxql_dashboards_exist_with_their_titles():
    titles = {_dashboard(p)["title"] for p in DASHBOARDS}
    assert titles == {"aqpipe – ambient stations", "aqpipe – AQI", "aqpipe – stack emissions", "aqpipe – operations"}
    assert all(_dashboard(p)["schemaVersion"] == 39 for p in DASHBOARDS)


def test_every_influxql_query_names_only_measurements_tags_and_fields_aqpipe_writes():
    schema = _influx_schema()
    checked = 0
    for path in DASHBOARDS:
        for q in _influxql_queries(_dashboard(path)):
            where = f"{path.name}: {q}"
            measurements = re.findall(r'\bFROM\s+("?)(\w+)\1', q)
            assert len(measurements) == 1, f"one FROM per query, quoted: {where}"
            quoted, measurement = measurements[0]
            assert quoted and measurement in schema, f"unknown measurement {measurement!r}: {where}"
            known = schema[measurement]["tags"] | schema[measurement]["fields"]
            rest = re.sub(r'\bAS\s+"[^"]*"', "", q)  # aliases name columns, not data
            rest = rest.replace(f'"{measurement}"', "", 1)
            names = re.findall(r'"([^"]*)"', rest)
            assert names, where
            unknown = sorted(set(names) - known)
            assert not unknown, f"not written to {measurement}: {unknown}: {where}"
            # identifiers unquoted inside functions would escape the check above
            bare = re.findall(r"\b(?!time\b|fill\b)\w+\(\s*([A-Za-z_]\w*)\s*\)", q)
            assert not bare, f"quote field names: {bare}: {where}"
            show = re.match(r'SHOW TAG VALUES FROM "(\w+)" WITH KEY = "(\w+)"', q)
            if q.startswith("SHOW"):
                assert show and show.group(2) in schema[measurement]["tags"], where
            checked += 1
    assert checked >= 30


def test_the_dashboards_read_the_values_the_brief_promises():
    fields_by_dash = {}
    for path in DASHBOARDS:
        text = " ".join(_influxql_queries(_dashboard(path)))
        fields_by_dash[path.stem] = text
    for f in ("pm25", "pm10", "o3", "no2", "so2", "co", "pm25_flag", "o3_flag"):
        assert f'"{f}"' in fields_by_dash["aqpipe-ambient"]
    for f in ('FROM "aqi_hourly"', 'FROM "aqi_daily"', '"primary"', '"standard"', '"aqi" <= 100'):
        assert f in fields_by_dash["aqpipe-aqi"]
    for f in ('"avg_o2corr"', '"limit"', '"exceeded" = true', '"valid_minutes"'):
        assert f in fields_by_dash["aqpipe-stack"]


def test_the_aqi_panels_colour_the_china_categories():
    aqi = _dashboard(DEPLOY / "grafana" / "dashboards" / "aqpipe-aqi.json")
    hourly = next(p for p in _panels(aqi) if p["title"] == "Hourly AQI")
    steps = [(s["value"], s["color"]) for s in hourly["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps == [(None, "#00E400"), (51, "#FFFF00"), (101, "#FF7E00"), (151, "#FF0000"),
                     (201, "#99004C"), (301, "#7E0023")]


def test_dashboards_use_only_variables_they_define_and_default_to_the_provisioned_datasources():
    provisioned = _load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "aqpipe.yaml")["datasources"]
    by_uid = {d["uid"]: d for d in provisioned}
    influx = next(d for d in provisioned if d["type"] == "influxdb")
    assert influx["jsonData"]["version"] == "InfluxQL" and influx["jsonData"]["dbName"] == "aq"
    assert {d["type"] for d in provisioned} == {"influxdb", "prometheus"}
    builtin = {"timeFilter", "__interval", "__rate_interval", "col", "tag_station", "tag_outlet", "tag_pollutant"}
    for path in DASHBOARDS:
        dash = _dashboard(path)
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        ds = variables["ds"]
        assert ds["type"] == "datasource" and by_uid[ds["current"]["value"]]["type"] == ds["query"]
        used = set(re.findall(r"\$\{?(\w+)", json.dumps(dash["panels"]) + json.dumps(list(variables.values()))))
        # $A, $B in server-side expressions are query refIds
        refids = {t["refId"] for p in _panels(dash) for t in p.get("targets", [])}
        assert used - builtin - refids <= set(variables), f"{path.name}: undefined {used - builtin - refids - set(variables)}"
        for p in _panels(dash):
            if p["type"] != "row":
                assert p["datasource"]["uid"] == "${ds}", f"{path.name}: {p['title']}"


def test_the_dashboard_provider_points_at_where_compose_mounts_the_dashboards():
    provider = _load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "aqpipe.yaml")["providers"][0]
    grafana = _compose()["services"]["grafana"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]


# --------------------------------------------------------------------------- environment variables

def _compose() -> dict:
    return _load_yaml(DEPLOY / "compose.yaml")


def _unit_env(path: Path) -> dict[str, str]:
    return dict(line.removeprefix("Environment=").split("=", 1)
                for line in path.read_text().splitlines() if line.startswith("Environment="))


def _unit_setting(path: Path, key: str) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1]
    return None


def _aqpipe_env_settings() -> list[tuple[str, str, str]]:
    out = []
    for name, service in _compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            out.append((f"compose.yaml {name}", key, str(value)))
    for unit in UNITS:
        for key, value in _unit_env(unit).items():
            out.append((unit.name, key, value))
    return [s for s in out if s[1].startswith(ENV_PREFIX)]


@pytest.mark.parametrize("where,name,value", _aqpipe_env_settings())
def test_every_aqpipe_variable_in_compose_and_systemd_sets_a_real_config_key(where, name, value):
    if name == CONFIG_ENV:
        assert value == "/etc/aqpipe/aqpipe.toml", where  # where units and compose put deploy/config
        return
    cfg = load_config(None, {name: value})  # raises ConfigError for an unknown key or a bad value
    node: Any = cfg
    for part in name[len(ENV_PREFIX):].lower().split("__"):
        node = getattr(node, part)
    assert str(node) == value, f"{where}: {name}={value} read as {node!r}"


def test_compose_and_systemd_set_aqpipe_variables_at_all():
    names = {name for _, name, _ in _aqpipe_env_settings()}
    assert {"AQPIPE_MQTT__USERNAME", "AQPIPE_DATA_DIR", "AQPIPE_HJ212_GATEWAY__LISTEN", "AQPIPE_METRICS__PORT"} <= names


# --------------------------------------------------------------------------- accounts, data dirs, ports

def _acl_users() -> set[str]:
    return set(re.findall(r"^user (\S+)", (DEPLOY / "mosquitto" / "aqpipe.acl").read_text(), re.M))


def test_each_service_has_its_own_broker_account_known_to_the_acl_in_units_and_compose():
    units = {u.stem: _unit_env(u)["AQPIPE_MQTT__USERNAME"] for u in UNITS}
    assert units == {"aqpipe-ingest": "aqpipe-ingest", "aqpipe-aggregator": "aqpipe-aggregator",
                     "aqpipe-hj212-gateway": "aqpipe-hj212-gateway"}
    services = _compose()["services"]
    compose = {name: services[name]["environment"]["AQPIPE_MQTT__USERNAME"]
               for name in ("ingest", "aggregator", "hj212-gateway")}
    assert set(compose.values()) == set(units.values()) <= _acl_users()
    accounts_sh = (DEPLOY / "mosquitto" / "accounts.sh").read_text()
    assert all(user in accounts_sh for user in units.values())
    for unit in UNITS:  # the secret is per account
        assert _unit_env(unit)["AQPIPE_MQTT__PASSWORD_FILE"] == f"/etc/aqpipe/{unit.stem}.secret"


def test_each_stateful_unit_has_its_own_state_directory_as_data_dir_and_the_gateway_none():
    for unit in UNITS:
        env, state = _unit_env(unit), _unit_setting(unit, "StateDirectory")
        if unit.stem == "aqpipe-hj212-gateway":
            assert state is None and "AQPIPE_DATA_DIR" not in env
        else:
            assert env["AQPIPE_DATA_DIR"] == f"/var/lib/{state}" and state == f"aqpipe/{unit.stem.removeprefix('aqpipe-')}"
        command = _unit_setting(unit, "ExecStart").split()
        assert command[:2] == ["/opt/aqpipe/.venv/bin/aqpipe", {"aqpipe-ingest": "ingest", "aqpipe-aggregator": "aggregate",
                                                                 "aqpipe-hj212-gateway": "hj212-gateway"}[unit.stem]]
    services = _compose()["services"]
    assert "ingest-data:/var/lib/aqpipe" in services["ingest"]["volumes"]
    assert "aggregator-data:/var/lib/aqpipe" in services["aggregator"]["volumes"]
    assert not any("/var/lib/aqpipe" in v for v in services["hj212-gateway"]["volumes"])


def _metrics_port(env: dict[str, str], gateway: bool) -> int:
    cfg = load_config(None, {k: str(v) for k, v in env.items() if k.startswith(ENV_PREFIX) and k != CONFIG_ENV})
    return cfg.hj212_gateway.metrics_port if gateway else cfg.metrics.port


def test_prometheus_scrapes_each_service_where_compose_and_the_units_make_it_listen():
    prom = _load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in prom["scrape_configs"]}
    services = _compose()["services"]
    for job, service in (("aqpipe-ingest", "ingest"), ("aqpipe-aggregator", "aggregator"),
                         ("aqpipe-hj212-gateway", "hj212-gateway")):
        env = services[service]["environment"]
        port = _metrics_port(env, gateway=service == "hj212-gateway")
        assert targets[job] == [f"{service}:{port}"]
        assert f"{port}:{port}" in services[service]["ports"]
        assert env["AQPIPE_METRICS__HOST"] == "0.0.0.0"  # reachable from the prometheus container
        assert str(port) in json.dumps(services[service]["healthcheck"]["test"])
        assert port == _metrics_port(_unit_env(DEPLOY / "systemd" / f"{job}.service"), gateway=service == "hj212-gateway")
    assert (targets["aqpipe-ingest"][0][-4:], targets["aqpipe-hj212-gateway"][0][-4:]) == ("9108", "9109")
    assert prom["rule_files"] == ["aqpipe-rules.yml"]
    prometheus = services["prometheus"]["volumes"]
    assert "./prometheus/aqpipe-rules.yml:/etc/prometheus/aqpipe-rules.yml:ro" in prometheus
    grafana_env = services["grafana"]["environment"]
    assert grafana_env["INFLUXDB_URL"].endswith(":-http://influxdb:8086}")
    assert grafana_env["PROMETHEUS_URL"].endswith(":-http://prometheus:9090}")
    for depends in (s.get("depends_on", []) for s in services.values()):
        assert set(depends) <= set(services)


# --------------------------------------------------------------------------- metric names

def _exported_metric_names() -> set[str]:
    """Every series name the three services can expose (gateway metrics come with ingest.hj212_gateway)."""
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("aqpipe_"):
            names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


def _alert_rules() -> list[dict]:
    doc = _load_yaml(DEPLOY / "prometheus" / "aqpipe-rules.yml")
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_every_metric_in_the_operations_dashboard_and_the_alert_rules_exists():
    exported = _exported_metric_names()
    assert {"aqpipe_received_messages_total", "aqpipe_rollups_total", "aqpipe_hj212_gateway_mqtt_connected"} <= exported
    ops = _dashboard(DEPLOY / "grafana" / "dashboards" / "aqpipe-operations.json")
    exprs = {"dashboard": _promql_queries(ops), "rules": [r["expr"] for r in _alert_rules()]}
    for where, queries in exprs.items():
        used = {m for q in queries for m in re.findall(r"\baqpipe_\w+", q)}
        assert used, where
        assert used <= exported, f"{where}: no such metric {sorted(used - exported)}"
    dashboard_metrics = " ".join(exprs["dashboard"])
    for name in ("aqpipe_received_messages_total", "aqpipe_written_readings_total", "aqpipe_deadletter_total",
                 "aqpipe_batch_write_seconds_bucket", "aqpipe_spool_bytes", "aqpipe_spool_full", "aqpipe_mqtt_connected",
                 "aqpipe_rollups_total"):
        assert name in dashboard_metrics


def test_the_alert_rules_are_well_formed_and_gateway_rules_select_the_gateway_job():
    rules = _alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)) >= 6
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning") and rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")") and rule["expr"].count("{") == rule["expr"].count("}")
        if "for" in rule:
            assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), rule["alert"]
        # every aqpipe process exports the gateway's families (at 0): select the gateway's job
        for m in re.finditer(r"aqpipe_hj212_gateway_\w+(\{[^}]*\})?", rule["expr"]):
            assert m.group(1) and 'job="aqpipe-hj212-gateway"' in m.group(1), rule["alert"]
    prom_jobs = {job["job_name"] for job in _load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]}
    assert "aqpipe-hj212-gateway" in prom_jobs


# --------------------------------------------------------------------------- the gateway's ops endpoint

def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_gateway_is_ready_only_while_listening_and_connected_to_the_broker():
    ops = OpsServer("127.0.0.1", 0)
    port = ops.httpd.server_address[1]
    gw = hj212_gateway.Hj212Gateway(Hj212GatewayConfig(listen="127.0.0.1:0", drain_timeout_s=0.5),
                                    MqttConfig(port=_closed_port()))
    ops.add_check(gw.ready)
    try:
        assert _get(port, "/readyz") == (503, "hj212-gateway: not listening\n")
        loop, thread = hj212_gateway.run_in_thread(gw)
        try:
            assert _get(port, "/healthz") == (200, "ok\n")
            assert _get(port, "/readyz") == (503, "hj212-gateway: mqtt not connected\n")
            loop.call_soon_threadsafe(gw.publisher.connected.set)  # as at CONNACK
            deadline = time.monotonic() + 5
            while _get(port, "/readyz")[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _get(port, "/readyz") == (200, "ok\n")
            assert "aqpipe_hj212_gateway_connections" in _get(port, "/metrics")[1]
        finally:
            hj212_gateway.stop_in_thread(gw, loop, thread)
        assert _get(port, "/readyz")[0] == 503  # stopping: no longer listening
    finally:
        ops.close()


def test_the_gateway_command_serves_metrics_healthz_and_readyz_on_its_metrics_port():
    metrics_port, listen_port = _closed_port(), _closed_port()
    env = {**os.environ, "AQPIPE_HJ212_GATEWAY__METRICS_PORT": str(metrics_port),
           "AQPIPE_MQTT__PORT": str(_closed_port()), "AQPIPE_HJ212_GATEWAY__DRAIN_TIMEOUT_S": "0.5"}
    env.pop("AQPIPE_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "aqpipe.cli", "hj212-gateway", "--listen", f"127.0.0.1:{listen_port}"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                status = _get(metrics_port, "/healthz")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.1)
        assert status == (200, "ok\n")
        assert _get(metrics_port, "/readyz") == (503, "hj212-gateway: mqtt not connected\n")  # no broker there
        assert "aqpipe_hj212_gateway_mqtt_connected 0.0" in _get(metrics_port, "/metrics")[1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
