"""tests/grafana.py: the dashboards' queries as Grafana's InfluxDB data source would send them."""

from __future__ import annotations

import pytest

from tests import grafana

VARIABLES = {"station": {"name": "station", "multi": True, "includeAll": True},
             "standard": {"name": "standard", "multi": False, "includeAll": False}}
BUILTINS = {"timeFilter": "time >= now() - 24h", "__interval": "1m"}


@pytest.mark.parametrize("syntax", ["$station", "${station}", "${station:regex}", "[[station]]"])
def test_a_multi_value_variable_becomes_an_escaped_alternation_in_every_syntax(syntax):
    q = f'SELECT mean("pm25") FROM "ambient" WHERE "station" =~ /^{syntax}$/ AND $timeFilter GROUP BY time($__interval)'
    out = grafana.interpolate(q, VARIABLES, {"station": ["620503-001", "a.b"]}, BUILTINS)
    assert out == ('SELECT mean("pm25") FROM "ambient" WHERE "station" =~ /^(620503-001|a\\.b)$/ '
                   "AND time >= now() - 24h GROUP BY time(1m)")
    assert grafana.interpolate(q, VARIABLES, {"station": ["a.b"]}, BUILTINS).count("/^a\\.b$/") == 1


def test_a_single_value_variable_is_its_value_and_an_unknown_one_is_refused():
    assert grafana.interpolate("\"standard\" = '$standard'", VARIABLES, {"standard": ["cn-2026"]}, {}) == "\"standard\" = 'cn-2026'"
    with pytest.raises(grafana.UnknownVariable):
        grafana.interpolate("$site", VARIABLES, {}, {})
    with pytest.raises(grafana.UnknownVariable):
        grafana.interpolate("$__range", VARIABLES, {}, BUILTINS)


def test_time_filter_and_interval_follow_the_dashboard_range_and_the_min_interval():
    assert grafana.time_filter({"from": "now-7d", "to": "now"}) == "time >= now() - 7d"
    with pytest.raises(ValueError):
        grafana.time_filter({"from": "2026-01-01", "to": "now"})
    assert grafana.interval({"from": "now-24h", "to": "now"}, "1m") == "1m"  # 86.4 s rounds to 1m
    assert grafana.interval({"from": "now-7d", "to": "now"}, "1m") == "10m"  # 604.8 s
    assert grafana.interval({"from": "now-1h", "to": "now"}, "1m") == "1m"  # 3.6 s, raised to the min interval
    assert grafana.interval({"from": "now-2d", "to": "now"}, "5m") == "5m"


def test_promql_gets_its_regex_escapes_doubled_inside_the_string_and_a_rate_interval():
    variables = {"instance": {"name": "instance", "multi": True, "includeAll": True}}
    q = grafana.interpolate('up{instance=~"$instance"}[$__rate_interval]', variables,
                            {"instance": ["127.0.0.1:9108", "b:1"]}, {"__rate_interval": "1m"},
                            escape=grafana.promql_regex_escape)
    assert q == 'up{instance=~"(127\\\\.0\\\\.0\\\\.1:9108|b:1)"}[1m]'
    assert grafana.rate_interval("20s", "15s") == "60s"  # 4 x scrape interval
    assert grafana.rate_interval("2m", "15s") == "135s"  # interval + scrape interval
