"""alerts/rules.py: the rules file schema (errors name rule and key) and each kind's verdict."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from alerts.rules import (DEFAULT_RULES_FILE, RulesError, judge_aqi_day, judge_aqi_hour, judge_silence,
                          judge_stack_hour, judge_stuck, judge_valid_rate, load_rules, parse_rules, rolling_24h,
                          watch_levels)

RULES = load_rules()
STACK = RULES.by_name("stack_exceedance")


def stack_record(**over) -> dict:
    rec = {"outlet": "o1", "pollutant": "so2", "time": "2026-11-24T10:00:00+08:00", "avg": 40.0,
           "avg_o2corr": 62.0, "limit": 50.0, "limit_source": "permit", "exceeded": True, "valid_minutes": 60,
           "not_running_minutes": 0}
    rec.update(over)
    return rec


def test_the_shipped_rules_file_is_valid_and_has_every_rule_the_issue_names():
    names = {r.name for r in RULES.rules}
    assert {"stack_exceedance", "aqi_hourly_severe", "aqi_daily_high", "heavy_pollution_watch", "outlet_silent",
            "outlet_valid_rate", "stack_value_stuck"} <= names
    assert STACK.resolve_after_hours == 1 and RULES.by_name("aqi_hourly_severe").category == 5
    assert RULES.by_name("outlet_valid_rate").below == 0.90
    assert {r.team for r in RULES.rules} == {"inspectors", "operations"}


@pytest.mark.parametrize("rule, key", [
    ({"name": "x", "kind": "stack_exceedance", "alertname": "A", "team": "inspectors", "for_hours": 0}, "rules[x].for_hours"),
    ({"name": "x", "kind": "stack_exceedance", "alertname": "A", "team": "police"}, "rules[x].team"),
    ({"name": "x", "kind": "stack_exceedance", "alertname": "A", "team": "inspectors", "typo": 1}, "rules[x].typo"),
    ({"name": "x", "kind": "nonsense", "alertname": "A", "team": "inspectors"}, "rules[x].kind"),
    ({"kind": "silence", "alertname": "A", "team": "operations", "measurement": "stack"}, "rules[#1].name"),
    ({"name": "w", "kind": "aqi_watch", "alertname": "W", "team": "inspectors",
      "levels": [{"level": "red", "any": [{"above": 150, "hours": 48}], "all": [{"above": 1, "hours": 1}]}]},
     "rules[w].levels.0"),
])
def test_a_bad_rule_is_refused_naming_the_rule_and_the_key(rule, key):
    with pytest.raises(RulesError) as e:
        parse_rules({"rule": [rule]}, Path("r.toml"))
    assert e.value.key == key


def test_a_rule_name_given_twice_is_refused():
    r = {"name": "x", "kind": "aqi_daily", "alertname": "A", "team": "inspectors"}
    with pytest.raises(RulesError, match="twice"):
        parse_rules({"rule": [r, r]}, Path("r.toml"))


def test_check_config_names_the_offending_rule_and_key(tmp_path):
    bad = tmp_path / "rules.toml"
    bad.write_text(DEFAULT_RULES_FILE.read_text().replace("resolve_after_hours = 1   #", "resolve_after_hours = -1   #"))
    env = {"AQPIPE_ALERTS__RULES_FILE": str(bad), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "aqpipe.cli", "check-config"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert "rules[stack_exceedance].resolve_after_hours" in done.stderr
    good = subprocess.run([sys.executable, "-m", "aqpipe.cli", "check-config"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path, timeout=60)
    assert good.returncode == 0 and "alert rules: 8 enabled" in good.stdout


def test_an_exceeded_valid_hour_is_exceeded_and_a_compliant_one_compliant():
    j = judge_stack_hour(STACK, stack_record())
    assert (j.verdict, j.value, j.threshold) == ("exceeded", 62.0, 50.0)
    assert judge_stack_hour(STACK, stack_record(avg_o2corr=30.0, exceeded=False)).verdict == "compliant"


@pytest.mark.parametrize("over, reason", [
    ({"valid_minutes": 0, "not_running_minutes": 60, "exceeded": None, "avg_o2corr": None}, "stopped"),
    ({"valid_minutes": 30, "exceeded": None}, "flagged"),
    ({"valid_minutes": 44, "exceeded": True}, "44 valid minutes"),
    ({"exceeded": None}, "no judgement"),
    ({"complete": False}, "incomplete"),
])
def test_hours_that_are_not_judged(over, reason):
    j = judge_stack_hour(STACK, stack_record(**over))
    assert j.verdict == "not_judged" and reason in j.reason


def test_an_exempting_mark_takes_the_hour_out_of_judgement():
    j = judge_stack_hour(STACK, stack_record(), exempt_by="停运")
    assert j.verdict == "not_judged" and "停运" in j.reason


def test_hourly_aqi_at_or_above_the_category():
    rule = RULES.by_name("aqi_hourly_severe")
    assert judge_aqi_hour(rule, {"aqi": 201, "category": 5}).verdict == "exceeded"
    assert judge_aqi_hour(rule, {"aqi": 320, "category": 6}).verdict == "exceeded"
    assert judge_aqi_hour(rule, {"aqi": 200, "category": 4}).verdict == "compliant"


def test_daily_aqi_strictly_above_the_threshold():
    rule = RULES.by_name("aqi_daily_high")
    assert judge_aqi_day(rule, {"aqi": 201}).verdict == "exceeded"
    assert judge_aqi_day(rule, {"aqi": 200}).verdict == "compliant"


def test_rolling_24h_needs_enough_hours():
    assert rolling_24h([100.0] * 19, 20)[-1] is None
    assert rolling_24h([100.0] * 19 + [None, 200.0], 20)[-1] == pytest.approx(2100 / 20)


def test_heavy_pollution_watch_follows_the_2024_grading():
    # with 24 of 24 hours required, a series of 23 + N hours has N rolling values
    rule = RULES.by_name("heavy_pollution_watch").model_copy(update={"min_hours": 24})
    h = rule.history_hours
    assert h == 23 + 72
    level = lambda series: {k: j.verdict for k, j in watch_levels(rule, series).items()}  # noqa: E731
    # 160 for 23 + 48 hours: the rolling value has been > 150 for 48 h -> yellow only
    assert level([160.0] * (23 + 48)) == {"yellow": "exceeded", "orange": "compliant", "red": "compliant"}
    assert level([160.0] * (23 + 47))["yellow"] == "compliant"
    # > 200 for 48 h: orange (and yellow)
    assert level([210.0] * (23 + 48))["orange"] == "exceeded"
    # red needs both > 200 for 72 h and > 300 for 24 h
    assert level([210.0] * (23 + 72))["red"] == "compliant"
    assert level([310.0] * (23 + 72))["red"] == "exceeded"
    assert level([None] * 30)["yellow"] == "not_judged"


def test_silence_counts_minutes_since_the_last_reading_unless_marked():
    rule = RULES.by_name("outlet_silent")
    now = datetime(2026, 11, 24, 12, tzinfo=timezone.utc)
    assert judge_silence(rule, now - timedelta(minutes=31), now).verdict == "exceeded"
    assert judge_silence(rule, now - timedelta(minutes=5), now).verdict == "compliant"
    assert judge_silence(rule, now - timedelta(minutes=90), now, exempt_by="停运").verdict == "not_judged"


def test_valid_data_rate_excludes_stopped_hours_and_counts_missing_ones():
    rule = RULES.by_name("outlet_valid_rate")
    valid = [{"time": f"h{i}", "valid_minutes": 60, "not_running_minutes": 0} for i in range(20)]
    stopped = [{"time": f"s{i}", "valid_minutes": 0, "not_running_minutes": 60} for i in range(2)]
    j = judge_valid_rate(rule, valid + stopped)  # 20 valid of 22 due (2 missing) = 0.909
    assert j.verdict == "compliant" and j.value == pytest.approx(20 / 22, abs=1e-4)
    j = judge_valid_rate(rule, valid[:19] + stopped)
    assert j.verdict == "exceeded" and j.value == pytest.approx(19 / 22, abs=1e-4)


def test_a_value_repeated_n_times_is_stuck():
    rule = RULES.by_name("stack_value_stuck")
    assert judge_stuck(rule, [12.5] * 30).verdict == "exceeded"
    assert judge_stuck(rule, [12.5] * 29 + [12.6]).verdict == "compliant"
    assert judge_stuck(rule, [12.5] * 10).verdict == "not_judged"
