"""deploy/ says only true things: files parse, dashboards query what aqpipe writes, every
AQPIPE_* variable is a config key, every metric named in dashboards and alert rules exists,
ports and broker accounts agree between units, compose, Prometheus and the ACL.

PyYAML is not a dependency: YAML is read by tests/yaml_subset.py, a reader for the block
subset deploy/ uses; it refuses what it does not know, so a file outside the subset fails
here instead of passing unread. Where PyYAML happens to be installed, it must read every
file the same way.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

import alerts.web.metrics  # noqa: F401  (aqpipe web's metrics: loaded by the process that serves it)
import aqpipe.cli  # noqa: F401  (registers every service's metrics, as every aqpipe process does)
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
    assert {"AQPIPE_MQTT__USERNAME", "AQPIPE_DATA_DIR", "AQPIPE_HJ212_GATEWAY__LISTEN", "AQPIPE_METRICS__PORT",
            "AQPIPE_CASES__DATABASE_URL", "AQPIPE_ALERTS__ALERTMANAGER_URL", "AQPIPE_WEB__USERS_FILE"} <= names


# --------------------------------------------------------------------------- accounts, data dirs, ports

@dataclass(frozen=True)
class DeployedService:
    """One aqpipe service as deploy/ ships it: unit aqpipe-NAME.service, compose service NAME,
    Prometheus job aqpipe-NAME. Adding a service to deploy/ is adding a row to SERVICES."""

    name: str
    command: str  # the aqpipe subcommand its unit and container run
    metrics_port: int
    port_key: str  # the config key that sets metrics_port
    account: str | None  # its broker account; None: it never connects to MQTT
    state_dirs: tuple[str, ...]  # StateDirectory=; the first is its data dir
    volumes: tuple[str, ...]  # compose volumes under /var/lib/aqpipe; the first is its data dir
    shares_case_database: bool = False
    http_port: int | None = None  # a port it serves besides the ops endpoint


SERVICES = (
    DeployedService("ingest", "ingest", 9108, "metrics.port", "aqpipe-ingest",
                    ("aqpipe/ingest",), ("ingest-data:/var/lib/aqpipe",)),
    DeployedService("aggregator", "aggregate", 9110, "metrics.port", "aqpipe-aggregator",
                    ("aqpipe/aggregator",), ("aggregator-data:/var/lib/aqpipe",)),
    DeployedService("hj212-gateway", "hj212-gateway", 9109, "hj212_gateway.metrics_port", "aqpipe-hj212-gateway",
                    (), ()),
    DeployedService("alerts", "alerts", 9111, "metrics.port", "aqpipe-alerts",
                    ("aqpipe/cases",), ("cases-data:/var/lib/aqpipe/cases",), shares_case_database=True),
    DeployedService("web", "web", 9112, "metrics.port", None,
                    ("aqpipe/web", "aqpipe/cases"), ("web-data:/var/lib/aqpipe", "cases-data:/var/lib/aqpipe/cases"),
                    shares_case_database=True, http_port=9120),
)
BY_NAME = {s.name: s for s in SERVICES}


def _unit(service: DeployedService) -> Path:
    return DEPLOY / "systemd" / f"aqpipe-{service.name}.service"


def _acl_users() -> set[str]:
    return set(re.findall(r"^user (\S+)", (DEPLOY / "mosquitto" / "aqpipe.acl").read_text(), re.M))


def _prometheus_targets() -> dict[str, list[str]]:
    prom = _load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    return {job["job_name"]: job["static_configs"][0]["targets"] for job in prom["scrape_configs"]}


def test_the_table_of_services_is_what_deploy_ships():
    assert {u.stem for u in UNITS} == {f"aqpipe-{s.name}" for s in SERVICES}
    assert {s.name for s in SERVICES} <= set(_compose()["services"])
    assert {f"aqpipe-{s.name}" for s in SERVICES} == {job for job in _prometheus_targets() if job.startswith("aqpipe-")}
    ports = [s.metrics_port for s in SERVICES] + [s.http_port for s in SERVICES if s.http_port]
    assert len(ports) == len(set(ports)), "two services on one port cannot share a host"


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_each_service_has_its_own_broker_account_known_to_the_acl_in_its_unit_and_compose(service):
    unit, compose = _unit_env(_unit(service)), _compose()["services"][service.name]["environment"]
    if service.account is None:  # no MQTT at all: no account, no password, no broker host
        assert not any(k.startswith("AQPIPE_MQTT__") for k in (*unit, *compose))
        return
    assert unit["AQPIPE_MQTT__USERNAME"] == compose["AQPIPE_MQTT__USERNAME"] == service.account
    assert service.account in _acl_users()
    assert re.search(rf"^for user .*\b{re.escape(service.account)}\b", (DEPLOY / "mosquitto" / "accounts.sh").read_text(), re.M)
    assert unit["AQPIPE_MQTT__PASSWORD_FILE"] == f"/etc/aqpipe/{service.account}.secret"  # the secret is per account
    secret = compose["AQPIPE_MQTT__PASSWORD_FILE"].removeprefix("/run/secrets/")
    assert _compose()["secrets"][secret]["file"] == f"./mosquitto/{service.account}.secret"
    assert secret in _compose()["services"][service.name]["secrets"]
    # deploy/README.md's loops write each account's secret file (systemd and compose)
    loops = re.findall(r"^for u in (.*); do$", (DEPLOY / "README.md").read_text(), re.M)
    assert len(loops) == 2 and all(service.account in loop.split() for loop in loops)


def test_each_broker_account_the_units_use_is_a_row_and_only_those():
    used = {_unit_env(u).get("AQPIPE_MQTT__USERNAME") for u in UNITS} - {None}
    assert used == {s.account for s in SERVICES if s.account}


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_each_stateful_unit_has_its_state_directories_and_the_first_as_data_dir(service):
    unit = _unit(service)
    env = _unit_env(unit)
    state, writable = _unit_setting(unit, "StateDirectory"), _unit_setting(unit, "ReadWritePaths")
    if not service.state_dirs:
        assert state is None and writable is None and "AQPIPE_DATA_DIR" not in env
    else:
        assert state.split() == list(service.state_dirs)
        assert writable.split() == [f"/var/lib/{d}" for d in service.state_dirs]  # ProtectSystem=strict otherwise
        assert env["AQPIPE_DATA_DIR"] == f"/var/lib/{service.state_dirs[0]}"
    assert _unit_setting(unit, "ExecStart").split()[:2] == ["/opt/aqpipe/.venv/bin/aqpipe", service.command]
    assert _unit_setting(unit, "Restart") == "always"
    compose = _compose()["services"][service.name]
    assert compose["command"][:2] == ["aqpipe", service.command]
    mounted = [v for v in compose.get("volumes", []) if ":/var/lib/aqpipe" in v]
    assert mounted == list(service.volumes)
    if service.volumes:
        assert compose["environment"]["AQPIPE_DATA_DIR"] == service.volumes[0].split(":")[1]
        assert {v.split(":")[0] for v in service.volumes} <= set(_compose()["volumes"])


def test_the_units_and_containers_sharing_the_case_database_name_one_they_can_all_write():
    sharing = [s for s in SERVICES if s.shares_case_database]
    assert len(sharing) >= 2
    units = {_unit_env(_unit(s)).get("AQPIPE_CASES__DATABASE_URL") for s in SERVICES if not s.shares_case_database}
    assert units == {None}
    for where in ("systemd", "compose"):
        urls = {(_unit_env(_unit(s)) if where == "systemd" else _compose()["services"][s.name]["environment"])
                ["AQPIPE_CASES__DATABASE_URL"] for s in sharing}
        assert len(urls) == 1, f"{where}: one case database, not {urls}"
        url = urls.pop()
        assert url.startswith("sqlite:////")
        directory = str(Path(url.removeprefix("sqlite:///")).parent)  # WAL writes -wal and -shm beside it
        for s in sharing:
            if where == "systemd":
                assert directory in _unit_setting(_unit(s), "ReadWritePaths").split(), s.name
                assert directory.removeprefix("/var/lib/") in _unit_setting(_unit(s), "StateDirectory").split(), s.name
            else:
                volumes = _compose()["services"][s.name]["volumes"]
                assert any(v.endswith(f":{directory}") for v in volumes), s.name
        if where == "compose":  # one named volume, the same in each container
            assert len({v for s in sharing for v in _compose()["services"][s.name]["volumes"] if v.endswith(f":{directory}")}) == 1
    # the image creates that directory owned by aqpipe, so a new named volume is writable by it
    assert "/var/lib/aqpipe/cases" in (DEPLOY / "Dockerfile").read_text()


def _port_of(env: dict[str, str], key: str) -> int:
    node: Any = load_config(None, {k: str(v) for k, v in env.items() if k.startswith(ENV_PREFIX) and k != CONFIG_ENV})
    for part in key.split("."):
        node = getattr(node, part)
    return node


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_prometheus_scrapes_each_service_where_compose_and_its_unit_make_it_listen(service):
    targets = _prometheus_targets()
    compose = _compose()["services"][service.name]
    env = compose["environment"]
    port = _port_of(env, service.port_key)
    assert port == service.metrics_port == _port_of(_unit_env(_unit(service)), service.port_key)
    assert targets[f"aqpipe-{service.name}"] == [f"{service.name}:{port}"]
    assert f"{port}:{port}" in compose["ports"]
    assert env["AQPIPE_METRICS__HOST"] == "0.0.0.0"  # reachable from the prometheus container
    assert str(port) in json.dumps(compose["healthcheck"]["test"])
    assert str(port) in (DEPLOY / "Dockerfile").read_text()
    if service.http_port:  # web.port: published, and reachable from outside the container
        assert _port_of(env, "web.port") == service.http_port == _port_of(_unit_env(_unit(service)), "web.port")
        assert f"{service.http_port}:{service.http_port}" in compose["ports"] and env["AQPIPE_WEB__HOST"] == "0.0.0.0"
    assert service.name in _compose()["services"]["prometheus"]["depends_on"]


def test_prometheus_loads_the_rules_and_grafana_finds_influxdb_and_prometheus():
    prom = _load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    services = _compose()["services"]
    assert prom["rule_files"] == ["aqpipe-rules.yml"]
    assert "./prometheus/aqpipe-rules.yml:/etc/prometheus/aqpipe-rules.yml:ro" in services["prometheus"]["volumes"]
    grafana_env = services["grafana"]["environment"]
    assert grafana_env["INFLUXDB_URL"].endswith(":-http://influxdb:8086}")
    assert grafana_env["PROMETHEUS_URL"].endswith(":-http://prometheus:9090}")
    for depends in (s.get("depends_on", []) for s in services.values()):
        assert set(depends) <= set(services)

# --------------------------------------------------------------------------- metric names

def _exported_metric_names() -> set[str]:
    """Every series name the aqpipe services can expose (what the CLI and aqpipe web register)."""
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


def _unlabelled_gauges() -> set[str]:
    """Gauges every aqpipe process exports at 0, whichever service it runs (the CLI imports them all)."""
    return {f.name for f in REGISTRY.collect()
            if f.name.startswith("aqpipe_") and f.type == "gauge" and all(not s.labels for s in f.samples)}


def test_rules_that_alert_on_an_unlabelled_gauge_at_zero_select_the_job_that_runs_its_service():
    gauges = _unlabelled_gauges()
    assert {"aqpipe_mqtt_connected", "aqpipe_aggregator_mqtt_connected", "aqpipe_alerts_mqtt_connected"} <= gauges
    jobs = set(_prometheus_targets())
    checked = 0
    for rule in _alert_rules():
        for m in re.finditer(r"\b(aqpipe_\w+)(\{[^}]*\})?\s*(==\s*0|<\s*1)(?![.\d])", rule["expr"]):
            if m.group(1) in gauges:
                job = re.search(r'job="([^"]+)"', m.group(2) or "")
                assert job and job.group(1) in jobs, f"{rule['alert']}: {m.group(0)} fires on every other aqpipe process"
                checked += 1
    assert checked >= 4


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


@contextlib.contextmanager
def _refusing_port() -> Iterator[int]:
    """A port where no broker can appear while the test runs: bound here and never listening,
    so connections to it are refused (a port merely free when picked was once taken by a
    Mosquitto another test started, and the gateway got ready)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def test_the_gateway_is_ready_only_while_listening_and_connected_to_the_broker():
    with _refusing_port() as mqtt_port:
        _gateway_ready_only_while_listening_and_connected(mqtt_port)


def _gateway_ready_only_while_listening_and_connected(mqtt_port: int) -> None:
    ops = OpsServer("127.0.0.1", 0)
    port = ops.httpd.server_address[1]
    gw = hj212_gateway.Hj212Gateway(Hj212GatewayConfig(listen="127.0.0.1:0", drain_timeout_s=0.5),
                                    MqttConfig(port=mqtt_port))
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
    with _refusing_port() as mqtt_port:
        _gateway_command_serves_ops(mqtt_port)


def _gateway_command_serves_ops(mqtt_port: int) -> None:
    metrics_port, listen_port = _closed_port(), _closed_port()
    env = {**os.environ, "AQPIPE_HJ212_GATEWAY__METRICS_PORT": str(metrics_port),
           "AQPIPE_MQTT__PORT": str(mqtt_port), "AQPIPE_HJ212_GATEWAY__DRAIN_TIMEOUT_S": "0.5"}
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
