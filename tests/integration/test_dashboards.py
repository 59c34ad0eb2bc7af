"""deploy/grafana/dashboards/ on the real InfluxDB: a known feed goes through the real ingest
and aggregator services (ambient, stack, aqi_hourly, aqi_daily, stack_hourly), then every
InfluxQL target of every dashboard runs as Grafana would send it (tests/grafana.py substitutes
the template variables, $timeFilter from the dashboard's default range and $__interval), once
with every variable at "All" and once per single value, and must return a series with data
for each station / outlet / pollutant it selects. The template variables' own queries run
first and give the values. Every field and tag a query names must be one InfluxDB holds
(SHOW FIELD KEYS / SHOW TAG KEYS): InfluxQL answers an unknown field with nothing, not an error.

The feed: two stations (5-minute readings from yesterday's China midnight to the last full
hour, calibration flags C on every pollutant at some hours, levels that make good days) and
two outlets (minute readings for the last 6 hours, one hour over every limit).
"""

from __future__ import annotations

import json
import random
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from aggregator.service import AggregatorService
from aqpipe.config import Config, load_config
from aqpipe.influx import InfluxQL
from aqpipe.simulator import OUTLETS, Station, ambient_values, stack_values
from ingest.service import IngestService
from tests import grafana
from tests.helpers import wait_until
from tests.yaml_subset import load_yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "deploy" / "grafana" / "dashboards"
INFLUX_DATASOURCE = next(d for d in load_yaml(ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "aqpipe.yaml")
                         ["datasources"] if d["type"] == "influxdb")
HOUR = 3600
CST = timezone(timedelta(hours=8))
STATIONS = [Station("620503-001", 14.0, 55.0, 0.5), Station("620503-002", 17.0, 60.0, 2.5)]  # good days: AQI <= 100
STACK_HOURS = 6
EXCEEDING_HOUR = 2  # of the last STACK_HOURS: every pollutant x30, over every limit
POLLUTANT_FIELDS = ("pm25", "pm10", "so2", "no2", "co", "o3")


def _dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


TARGETS = [t for name, dash in _dashboards().items() for t in grafana.influxql_targets(dash, name)]


# --------------------------------------------------------------------------- the feed

@dataclass
class Fed:
    influx: InfluxQL
    stations: set[str]
    outlets: set[str]


def _ambient_messages(start: int, end: int) -> list[tuple[str, dict]]:
    rng = random.Random(7)
    msgs = []
    for st in STATIONS:
        for h0 in range(start, end, HOUR):
            readings = []
            for t in range(h0 + 300, h0 + HOUR + 1, 300):
                item = {"time": t, "interval_s": 300,
                        "values": ambient_values(st, datetime.fromtimestamp(t, timezone.utc), rng)}
                if t == h0 + 300 and (h0 // HOUR) % 6 == 0:  # a zero/span check: every analyser reports C
                    item["flags"] = {p: "C" for p in POLLUTANT_FIELDS}
                readings.append(item)
            msgs.append((f"aq/v1/ambient/{st.id}", {"station": st.id, "readings": readings}))
    return msgs


def _stack_messages(end: int) -> list[tuple[str, dict]]:
    rng = random.Random(11)
    msgs = []
    for outlet, fuel in OUTLETS:
        for k in range(STACK_HOURS):
            h0 = end - (STACK_HOURS - k) * HOUR
            readings = []
            for t in range(h0 + 60, h0 + HOUR + 1, 60):
                values = stack_values(fuel, datetime.fromtimestamp(t, timezone.utc), rng)
                if k == EXCEEDING_HOUR:
                    values |= {p: round(values[p] * 30, 1) for p in ("so2", "nox", "pm")}
                readings.append({"time": t, "interval_s": 60, "values": values, "status": "running"})
            msgs.append((f"aq/v1/stack/{outlet}", {"outlet": outlet, "readings": readings}))
    return msgs


@pytest.fixture(scope="module")
def fed(mosquitto, influxdb, tmp_path_factory) -> Iterator[Fed]:
    """The feed published over MQTT, stored by ingest and rolled up by the aggregator, both
    stopped once every due rollup is written; InfluxDB keeps the data for the tests."""
    tag = f"dash{int(datetime.now().timestamp() * 1000) % 10**8}"
    cfg: Config = load_config(None, {
        "AQPIPE_MQTT__PORT": str(mosquitto.port), "AQPIPE_MQTT__CLIENT_ID": f"aqpipe-ingest-{tag}",
        "AQPIPE_INFLUX__URL": influxdb.url, "AQPIPE_INFLUX__DATABASE": f"db_{tag}", "AQPIPE_INFLUX__FLUSH_INTERVAL_S": "0.05",
        "AQPIPE_DATA_DIR": str(tmp_path_factory.mktemp("dashboards")), "AQPIPE_METRICS__PORT": "0",
        "AQPIPE_REGISTRY_DIR": str(ROOT / "deploy" / "config"),
        "AQPIPE_AGGREGATOR__CLIENT_ID": f"aqpipe-aggregator-{tag}", "AQPIPE_AGGREGATOR__SETTLE_S": "0.2",
        "AQPIPE_AGGREGATOR__TICK_S": "0.1", "AQPIPE_AGGREGATOR__LATENESS_HOURS": "72", "AQPIPE_AGGREGATOR__MAX_WAIT_S": "30",
    })
    influx = InfluxQL.from_config(cfg.influx)
    influx.execute(f'CREATE DATABASE "{cfg.influx.database}"')

    now = int(datetime.now(timezone.utc).timestamp())
    end = now // HOUR * HOUR  # the last full hour
    today_cst = datetime.now(CST).replace(hour=0, minute=0, second=0, microsecond=0)
    start = int((today_cst - timedelta(days=1)).timestamp())  # yesterday, China time: one full day
    msgs = _ambient_messages(start, end) + _stack_messages(end)
    readings = sum(len(m["readings"]) for _, m in msgs)

    ingest, aggregator = IngestService(cfg), AggregatorService(cfg)
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    try:
        for service in (ingest, aggregator):
            service.start()
            assert service.connected.wait(10), f"{type(service).__name__} did not subscribe"  # SUBACK
        client.connect("127.0.0.1", mosquitto.port)
        client.loop_start()
        for topic, payload in msgs:
            client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(10)
        wait_until(lambda: ingest.batcher.written >= readings, timeout=30)
        wait_until(lambda: aggregator.journalled >= len(msgs) and not aggregator.recompute_pending
                   and aggregator.due() == 0, timeout=60, interval=0.1)
        assert ingest.batcher.deadlettered == 0
    finally:
        client.disconnect()
        client.loop_stop()
        for service in (aggregator, ingest):
            if service._accepting:
                service.stop()
    yield Fed(influx, {s.id for s in STATIONS}, {o for o, _ in OUTLETS})
    influx.execute(f'DROP DATABASE "{cfg.influx.database}"')


# --------------------------------------------------------------------------- InfluxDB's answers

def _series(fed: Fed, q: str) -> list[dict]:
    """Every series of the query's one statement; an InfluxQL error fails the test."""
    url = f"{fed.influx.url}/query?" + urllib.parse.urlencode({"db": fed.influx.database, "q": q, "epoch": "ms"})
    with urllib.request.urlopen(url, timeout=10) as r:
        results = json.load(r)["results"]
    assert len(results) == 1 and "error" not in results[0], f"{q}: {results}"
    assert not results[0].get("partial"), f"{q}: partial answer"
    return results[0].get("series", [])


def _tag_values(fed: Fed, q: str) -> list[str]:
    """SHOW TAG VALUES answers (key, value) rows."""
    return [row[1] for s in _series(fed, q) for row in s["values"]]


def _schema(fed: Fed, measurement: str) -> tuple[set[str], set[str]]:
    """(field keys, tag keys) InfluxDB holds for the measurement."""
    fields = {row[0] for s in _series(fed, f'SHOW FIELD KEYS FROM "{measurement}"') for row in s["values"]}
    tags = {row[0] for s in _series(fed, f'SHOW TAG KEYS FROM "{measurement}"') for row in s["values"]}
    return fields, tags


# --------------------------------------------------------------------------- what a query names

_SELECT = re.compile(r'SELECT (?P<select>.+?) FROM "(?P<measurement>\w+)"(?: WHERE (?P<where>.+?))?'
                     r"(?: GROUP BY (?P<group>.+?))?(?: ORDER BY time (?:ASC|DESC))?(?: LIMIT \d+)?(?: tz\('(?P<tz>[\w/]+)'\))?$",
                     re.S)
_SHOW = re.compile(r'SHOW TAG VALUES FROM "(?P<measurement>\w+)" WITH KEY = "(?P<key>\w+)"$')


@dataclass
class Names:
    measurement: str
    fields: set[str]  # selected: must be field keys
    either: set[str]  # compared in WHERE: field or tag keys
    tags: set[str]  # grouped by or SHOWn: must be tag keys


def names(q: str) -> Names:
    """The measurement, fields and tags a dashboard query names; unquoted names are refused
    (they would escape this check) and so is a query shape this parser does not know."""
    if show := _SHOW.match(q):
        return Names(show["measurement"], set(), set(), {show["key"]})
    m = _SELECT.match(q)
    assert m, f"not a query shape the test knows: {q}"
    select = re.sub(r'\bAS "[^"]*"', "", m["select"])  # aliases name columns, not data
    where = re.sub(r"'[^']*'|/[^/]*/", "", m["where"] or "")  # string and regex literals
    group = m["group"] or ""
    bare = (re.findall(r"\w+\(\s*([A-Za-z_]\w*)\s*\)", select)
            + [w for w in re.findall(r'(?<![\w"$])([A-Za-z_]\w*)\s*(?:=~|!~|<=|>=|!=|=|<|>)', where) if w != "time"]
            + re.findall(r"\w+", re.sub(r'"[^"]*"|\b(?:time|fill)\([^)]*\)|,', "", group)))
    assert not bare, f"quote field and tag names: {bare} in {q}"
    quoted = lambda text: set(re.findall(r'"([^"]*)"', text))  # noqa: E731
    return Names(m["measurement"], quoted(select), quoted(where), quoted(group))


# --------------------------------------------------------------------------- the tests

def test_every_dashboard_has_influxql_targets_and_only_the_variables_grafana_would_fill():
    assert {t.dashboard for t in TARGETS} == {"aqpipe-ambient.json", "aqpipe-aqi.json", "aqpipe-stack.json"}
    for name, dash in _dashboards().items():
        for panel, expression, ref_ids in grafana.expression_targets(dash):
            used = set(re.findall(r"\$\{?(\w+)", expression))
            assert used and used <= ref_ids, f"{name} / {panel}: {expression} uses {used - ref_ids}"


def test_the_template_variables_list_the_feeds_stations_outlets_and_what_the_aggregator_writes(fed):
    values = {}
    for name, dash in _dashboards().items():
        for var in grafana.query_variables(dash):
            values[(name, var["name"])] = set(_tag_values(fed, var["query"]))
    assert values[("aqpipe-ambient.json", "station")] == fed.stations
    assert values[("aqpipe-aqi.json", "station")] == fed.stations
    assert values[("aqpipe-stack.json", "outlet")] == fed.outlets
    assert values[("aqpipe-aqi.json", "standard")] >= {"us"} and any(s.startswith("cn-") for s in values[("aqpipe-aqi.json", "standard")])
    assert {"so2", "nox", "pm"} <= values[("aqpipe-stack.json", "pollutant")]


def _all_queries() -> list[tuple[str, str]]:
    out = [(str(t), t.query) for t in TARGETS]
    for name, dash in _dashboards().items():
        out += [(f"{name} / variable {v['name']}", v["query"]) for v in grafana.query_variables(dash)]
    return out


def test_every_query_names_only_fields_and_tags_influxdb_holds(fed):
    schemas: dict[str, tuple[set[str], set[str]]] = {}
    measurements = {row[0] for s in _series(fed, "SHOW MEASUREMENTS") for row in s["values"]}
    assert {"ambient", "stack", "aqi_hourly", "aqi_daily", "stack_hourly"} <= measurements
    for where, q in _all_queries():
        n = names(q)
        assert n.measurement in measurements, f"{where}: no measurement {n.measurement!r}"
        fields, tags = schemas.setdefault(n.measurement, _schema(fed, n.measurement))
        unknown = {"fields": sorted(n.fields - fields), "fields or tags": sorted(n.either - fields - tags),
                   "tags": sorted(n.tags - tags)}
        assert unknown == {"fields": [], "fields or tags": [], "tags": []}, \
            f"{where}: {n.measurement} has no such {unknown}: {q}"


@pytest.fixture(scope="module")
def variable_values(fed) -> dict[str, dict[str, list[str]]]:
    """Per dashboard, each query variable's values as Grafana would list them."""
    return {name: {v["name"]: _tag_values(fed, v["query"]) for v in grafana.query_variables(dash)}
            for name, dash in _dashboards().items()}


def scenarios(variables: dict[str, dict], options: dict[str, list[str]]) -> list[tuple[str, dict[str, list[str]]]]:
    """Every multi-value variable at All (single-value ones at their first value, Grafana's
    default), then each value of each variable alone."""
    base = {name: opts if (variables[name].get("multi") or variables[name].get("includeAll")) else opts[:1]
            for name, opts in options.items()}
    out = [("all", base)]
    for name, opts in options.items():
        out += [(f"{name}={v}", {**base, name: [v]}) for v in opts if base[name] != [v]]
    return out


@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_every_influxql_target_returns_data_for_each_selected_station_outlet_and_pollutant(fed, variable_values, target):
    dash = _dashboards()[target.dashboard]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    tag_of = {v["name"]: names(v["query"]).tags.pop() for v in grafana.query_variables(dash)}
    options = variable_values[target.dashboard]
    builtins = {"timeFilter": grafana.time_filter(dash["time"]),
                "__interval": grafana.interval(dash["time"], target.interval or INFLUX_DATASOURCE["jsonData"]["timeInterval"])}
    grouped = names(target.query).tags
    checked = 0
    for scenario, selected in scenarios(variables, options):
        q = grafana.interpolate(target.query, variables, selected, builtins)
        where = f"{target} [{scenario}]: {q}"
        with_data = [s for s in _series(fed, q) if any(v is not None for row in s["values"] for v in row[1:])]
        assert with_data, f"no data: {where}"
        keys = sorted(name for name, tag in tag_of.items() if tag in grouped)
        expected = {()}
        for name in keys:
            expected = {e + (v,) for e in expected for v in selected[name]}
        if re.search(r"GROUP BY time\(\d+d\)", q):  # days are China days (UTC+8), as the bureau counts them
            starts = {row[0] // 1000 for s in with_data for row in s["values"]}
            assert all((t + 8 * HOUR) % 86400 == 0 for t in starts), f"day buckets not at China midnight: {where}"
        empty = [s["tags"] for s in with_data if not all((s.get("tags") or {}).get(tag) for tag in grouped)]
        assert not empty, f"series keyed by a tag the data does not carry {empty}: {where}"
        got = {tuple(s["tags"][tag_of[name]] for name in keys) for s in with_data}
        assert got == expected, f"series with data {sorted(got)}, expected {sorted(expected)}: {where}"
        checked += 1
    assert checked == len(scenarios(variables, options)) >= 2
