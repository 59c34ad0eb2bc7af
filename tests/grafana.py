"""What Grafana sends to InfluxDB (InfluxQL targets) and Prometheus (PromQL targets) for a
dashboard: its template variables, $timeFilter, $__interval and $__rate_interval substituted
as Grafana's data sources do, so the tests can run the dashboards' queries on the real
servers without a Grafana.

Variable syntaxes: $var, ${var}, ${var:format}, [[var]]. A multi-value or include-all
variable becomes a regex alternation of its values, `(a|b)`, each regex-escaped (Grafana's
default, used inside /^$var$/ in InfluxQL and =~"$var" in PromQL, where the escape's backslash
is itself escaped in the string literal); a single-value variable is its value as is.
Relative time ranges become `time >= now() - 24h` (Grafana's $timeFilter when the range
ends at now). $__interval is the range over max data points, rounded with Grafana's
table, never under the data source's min interval (`timeInterval`); $__rate_interval is
max($__interval + scrape interval, 4 x scrape interval).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]")
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
# Grafana's rangeutil.roundInterval: (below this many ms, use this interval)
_ROUND = [(15, "10ms"), (35, "20ms"), (75, "50ms"), (150, "100ms"), (350, "200ms"), (750, "500ms"),
          (1500, "1s"), (3500, "2s"), (7500, "5s"), (12500, "10s"), (17500, "15s"), (25000, "20s"),
          (45000, "30s"), (90000, "1m"), (180000, "2m"), (450000, "5m"), (1050000, "10m"), (2100000, "15m"),
          (4500000, "30m"), (10800000, "1h"), (21600000, "3h"), (43200000, "6h"), (86400000, "12h"),
          (604800000, "1d"), (1814400000, "1w"), (3628800000, "30d")]


class UnknownVariable(KeyError):
    """A query names a variable the dashboard does not define and Grafana does not provide."""


@dataclass(frozen=True)
class Target:
    dashboard: str
    panel: str
    ref_id: str
    query: str
    interval: str | None  # the panel's own min interval, if set

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref_id}"


def _panels(dash: dict) -> Iterator[dict]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def influxql_targets(dash: dict, name: str) -> list[Target]:
    return [Target(name, p["title"], t["refId"], t["query"], p.get("interval"))
            for p in _panels(dash) for t in p.get("targets", []) if t["datasource"]["type"] == "influxdb"]


def promql_targets(dash: dict, name: str) -> list[Target]:
    return [Target(name, p["title"], t["refId"], t["expr"], p.get("interval"))
            for p in _panels(dash) for t in p.get("targets", []) if t["datasource"]["type"] == "prometheus"]


def expression_targets(dash: dict) -> list[tuple[str, str, set[str]]]:
    """Server-side expressions: (panel title, expression, refIds of the panel's other targets)."""
    out = []
    for p in _panels(dash):
        targets = p.get("targets", [])
        for t in targets:
            if t["datasource"]["type"] == "__expr__":
                out.append((p["title"], t["expression"], {o["refId"] for o in targets if o is not t}))
    return out


def query_variables(dash: dict, datasource: str = "influxdb") -> list[dict]:
    """Template variables whose values come from a query to this type of data source, in dashboard order."""
    return [v for v in dash["templating"]["list"] if v["type"] == "query" and v["datasource"]["type"] == datasource]


def _seconds(duration: str) -> int:
    m = re.fullmatch(r"(\d+)([smhdwy])", duration)
    if m is None:
        raise ValueError(f"not a Grafana duration: {duration!r}")
    return int(m.group(1)) * _UNITS_S[m.group(2)]


def time_filter(time_range: Mapping[str, str]) -> str:
    """$timeFilter for a relative range such as {"from": "now-24h", "to": "now"}."""
    m = re.fullmatch(r"now-(\d+[smhdwy])", time_range["from"])
    if m is None or time_range["to"] != "now":
        raise ValueError(f"only ranges relative to now are supported: {time_range}")
    return f"time >= now() - {m.group(1)}"


def interval(time_range: Mapping[str, str], min_interval: str, max_data_points: int = 1000) -> str:
    """$__interval: range / max data points, rounded as Grafana does, at least min_interval."""
    range_ms = _seconds(time_range["from"].removeprefix("now-")) * 1000
    raw = range_ms / max_data_points
    rounded = next((value for limit, value in _ROUND if raw < limit), "1y")
    rounded_ms = _seconds(rounded) * 1000 if not rounded.endswith("ms") else int(rounded[:-2])
    return rounded if rounded_ms >= _seconds(min_interval) * 1000 else min_interval


def rate_interval(interval_: str, scrape_interval: str) -> str:
    return f"{max(_seconds(interval_) + _seconds(scrape_interval), 4 * _seconds(scrape_interval))}s"


def regex_escape(value: str) -> str:
    """For a regex literal /.../ (InfluxQL)."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(0), value)


def promql_regex_escape(value: str) -> str:
    """For a regex inside a PromQL double-quoted string: the backslash doubled."""
    return re.sub(r"[\\^$*+?.()|\[\]{}]", lambda m: "\\\\" + m.group(0), value)


def interpolate(query: str, variables: Mapping[str, dict], values: Mapping[str, Sequence[str]],
                builtins: Mapping[str, str], escape: Callable[[str], str] = regex_escape) -> str:
    """The query with every variable replaced; `values` holds the selected values per variable."""
    def replace(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(5)
        if name in builtins:
            return builtins[name]
        if name not in variables or name not in values:
            raise UnknownVariable(f"{name!r} in {query!r}")
        chosen = list(values[name])
        var = variables[name]
        if fmt not in (None, "regex", "raw"):
            raise UnknownVariable(f"format {fmt!r} of {name!r} is not supported here")
        if fmt == "raw" or not (var.get("multi") or var.get("includeAll")):
            assert len(chosen) == 1, f"{name} takes one value: {chosen}"
            return chosen[0]
        escaped = [escape(v) for v in chosen]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    return _VARIABLE.sub(replace, query)
