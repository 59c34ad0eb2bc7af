"""alerts/engine.py on a real case database (SQLite file and PostgreSQL): derived stack
records in, alert state, case hours and the outbox out. Minute data comes from a fixed
table (no InfluxDB here)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from alerts.cases import store
from alerts.cases.marks import add_mark
from alerts.engine import AlertEngine, load_alert, load_alerts, mark_sent, unsent
from alerts.lifecycle import fingerprint
from alerts.rules import load_rules, parse_rules
from aqpipe.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = Registry.load(ROOT / "deploy" / "config")
OUTLET = "91620503MA002-DA001"  # gas boiler, 麦积区示例燃气供热站
T0 = datetime(2026, 11, 24, 2, tzinfo=timezone.utc)  # 10:00 China time
NOW = datetime(2026, 11, 24, 5, tzinfo=timezone.utc)
URL = "http://127.0.0.1:9120/cases/{case_id}"


class Minutes:
    """The minute data of every hour: 60 minutes at 40 mg/m³, O2 12 %."""

    def minutes(self, outlet, pollutant, hour_end):
        return [{"time": (hour_end - timedelta(minutes=59 - i)).isoformat(), "value": 40.0, "o2": 12.0, "flag": "N"}
                for i in range(60)]

    def hourly(self, outlet, pollutant, hour_end):
        return record(hour_end)


def record(hour_end: datetime, corr: float = 62.0, exceeded: bool | None = True, valid: int = 60,
           not_running: int = 0, pollutant: str = "so2") -> dict:
    return {"outlet": OUTLET, "pollutant": pollutant, "time": hour_end.astimezone(timezone(timedelta(hours=8))).isoformat(),
            "avg": 40.0, "avg_o2corr": corr, "limit": 50.0, "limit_source": "permit", "exceeded": exceeded,
            "valid_minutes": valid, "not_running_minutes": not_running}


pytestmark = pytest.mark.integration


@pytest.fixture
def db(case_engine):
    return case_engine


def make_engine(rules=None) -> AlertEngine:
    return AlertEngine(rules or load_rules(), REGISTRY, URL, minutes=Minutes())


def feed(db, eng: AlertEngine, rec: dict, now: datetime = NOW):
    with db.begin() as conn:
        return eng.stack_record(conn, rec, now)


def fp() -> str:
    return fingerprint("stack_exceedance", {"alertname": "StackExceedance", "rule": "stack_exceedance", "outlet": OUTLET,
                                            "pollutant": "so2", "enterprise": "麦积区示例燃气供热站",
                                            "team": "inspectors", "severity": "critical"})


def test_the_first_exceeded_hour_fires_opens_a_case_and_links_it(db):
    eng = make_engine()
    effects = feed(db, eng, record(T0))
    assert [a.state for a in effects.changed] == ["firing"] and len(effects.cases) == 1
    with db.connect() as conn:
        alert = load_alert(conn, fp())
        case = store.get_case(conn, alert.case_id, URL)
    assert alert.state == "firing" and alert.last_sent_at is None
    assert alert.labels["alertname"] == "StackExceedance" and alert.labels["team"] == "inspectors"
    assert alert.annotations["case_url"] == case.url == URL.format(case_id=case.id)
    assert "62.0" in alert.annotations["summary"] and "超过限值 50" in alert.annotations["summary"]
    doc = case.to_json()
    assert doc["permit"] == "91620503MA002XXXXX001P" and doc["reference_o2"] == 3.5
    assert [(h["avg_o2corr"], h["o2"], h["valid_minutes"]) for h in doc["hours"]] == [(62.0, 12.0, 60)]


def test_a_redelivered_record_changes_nothing(db):
    eng = make_engine()
    feed(db, eng, record(T0))
    with db.begin() as conn:
        mark_sent(conn, [(a.fingerprint, a.updated_at) for a in unsent(conn)], NOW)
        before = load_alert(conn, fp())
    effects = feed(db, eng, record(T0), NOW + timedelta(minutes=3))
    assert effects.changed == [] and effects.cases == set()
    with db.connect() as conn:
        assert load_alert(conn, fp()) == before
        assert unsent(conn) == []


def test_a_second_hour_joins_the_case_and_a_compliant_hour_resolves(db):
    eng = make_engine()
    feed(db, eng, record(T0))
    assert feed(db, eng, record(T0 + timedelta(hours=1), corr=70.0)).changed == []  # still firing: no new notice
    effects = feed(db, eng, record(T0 + timedelta(hours=2), corr=30.0, exceeded=False))
    assert [a.state for a in effects.changed] == ["resolved"]
    with db.connect() as conn:
        cases = store.list_cases(conn, URL)
        alert = load_alert(conn, fp())
    assert len(cases) == 1 and cases[0].to_json()["exceeded_hours"] == 2
    assert alert.state == "resolved" and alert.resolved_at == T0 + timedelta(hours=2)
    assert "已恢复达标" in alert.annotations["summary"] and alert.annotations["case_url"] == cases[0].url


def test_hours_not_judged_neither_fire_nor_resolve(db):
    eng = make_engine()
    stopped = record(T0, corr=None, exceeded=None, valid=0, not_running=60)
    assert feed(db, eng, stopped).changed == []
    feed(db, eng, record(T0 + timedelta(hours=1)))
    assert feed(db, eng, record(T0 + timedelta(hours=2), corr=None, exceeded=None, valid=0, not_running=60)).changed == []
    with db.connect() as conn:
        assert load_alert(conn, fp()).state == "firing"
        assert store.list_cases(conn, URL)[0].to_json()["exceeded_hours"] == 1


def test_an_exempting_mark_keeps_the_hour_out_of_judgement(db):
    eng = make_engine()
    with db.begin() as conn:
        add_mark(conn, outlet=OUTLET, pollutant=None, type="停运", start=T0 - timedelta(hours=1), end=T0,
                 reason="计划停炉", evidence_ref=None, by="enterprise", at=NOW)
    assert feed(db, eng, record(T0)).changed == []
    with db.connect() as conn:
        assert load_alert(conn, fp()) is None and store.list_cases(conn, URL) == []


def test_for_two_hours_waits_then_puts_both_hours_on_the_case(db):
    rules = load_rules()
    doc = {"rule": [{**rules.by_name("stack_exceedance").model_dump(), "for_hours": 2}]}
    eng = make_engine(parse_rules(doc, Path("r.toml")))
    assert feed(db, eng, record(T0)).changed == []
    with db.connect() as conn:
        assert load_alert(conn, fp()).state == "pending" and store.list_cases(conn, URL) == []
    assert [a.state for a in feed(db, eng, record(T0 + timedelta(hours=1))).changed] == ["firing"]
    with db.connect() as conn:
        assert [h["hour_end"] for h in store.list_cases(conn, URL)[0].to_json()["hours"]] == [
            T0.isoformat(), (T0 + timedelta(hours=1)).isoformat()]


def test_a_recomputed_compliant_hour_leaves_the_case_and_resolves_the_alert(db):
    eng = make_engine()
    feed(db, eng, record(T0))
    effects = feed(db, eng, record(T0, corr=45.0, exceeded=False), NOW + timedelta(hours=1))
    assert [a.state for a in effects.changed] == ["resolved"]
    with db.connect() as conn:
        case = store.list_cases(conn, URL)[0].to_json()
    assert case["exceeded_hours"] == 0


def test_restart_reads_the_state_back_and_does_not_renotify(db):
    feed(db, make_engine(), record(T0))
    with db.begin() as conn:
        mark_sent(conn, [(a.fingerprint, a.updated_at) for a in unsent(conn)], NOW)
    fresh = make_engine()  # a new process: nothing in memory
    assert feed(db, fresh, record(T0)).changed == []
    assert feed(db, fresh, record(T0 + timedelta(hours=1), corr=55.0)).changed == []
    with db.connect() as conn:
        assert [a.state for a in load_alerts(conn)] == ["firing"] and unsent(conn) == []


def test_ambient_hourly_aqi_fires_after_n_hours_at_the_category(db):
    eng = make_engine()
    rule = eng.rules.by_name("aqi_hourly_severe")
    rec = lambda h, aqi, cat: {"station": "620503-001", "standard": "cn-2026", "period": "hour",  # noqa: E731
                               "time": (T0 + timedelta(hours=h)).isoformat(), "aqi": aqi, "category": cat}
    with db.begin() as conn:
        assert eng.aqi_record(conn, rec(0, 230, 5), NOW).changed == []
        changed = eng.aqi_record(conn, rec(1, 240, 5), NOW).changed
    assert rule.for_hours == 2 and [(a.alertname, a.state, a.labels["team"]) for a in changed] == [
        ("AQISevere", "firing", "inspectors")]
    assert "240" in changed[0].annotations["summary"] and "case_url" not in changed[0].annotations


def test_an_overdue_enterprise_report_raises_case_deadline_until_it_arrives(db):
    eng = make_engine()
    feed(db, eng, record(T0))  # the case opens at NOW; the enterprise's report is due 48 h later
    with db.begin() as conn:
        assert eng.deadlines(conn, NOW + timedelta(hours=47)).changed == []
        late = eng.deadlines(conn, NOW + timedelta(hours=49)).changed
        case_id = store.list_cases(conn, URL)[0].id
    assert [(a.alertname, a.state, a.labels["team"], a.labels["deadline"]) for a in late] == [
        ("CaseDeadline", "firing", "inspectors", "enterprise_report")]
    assert late[0].annotations["case_url"] == URL.format(case_id=case_id) and "逾期" in late[0].annotations["summary"]
    with db.begin() as conn:
        assert eng.deadlines(conn, NOW + timedelta(hours=50)).changed == []  # still overdue: no new notice
        store.record_enterprise_report(conn, case_id, NOW + timedelta(hours=51), "enterprise", at=NOW + timedelta(hours=51))
        met = eng.deadlines(conn, NOW + timedelta(hours=52)).changed
    assert [(a.alertname, a.state) for a in met] == [("CaseDeadline", "resolved")]


def test_an_outlet_silent_for_n_minutes_fires_to_operations_unless_marked_stopped(db):
    eng = make_engine()
    rule = eng.rules.by_name("outlet_silent")
    seen = {OUTLET: NOW - timedelta(minutes=45), "91620503MA001-DA001": NOW - timedelta(minutes=2)}
    with db.begin() as conn:
        fired = eng.silence(conn, rule, seen, set(), NOW).changed
    assert [(a.alertname, a.labels["outlet"], a.labels["team"]) for a in fired] == [("OutletSilent", OUTLET, "operations")]
    with db.begin() as conn:
        assert eng.silence(conn, rule, seen, set(), NOW + timedelta(minutes=1)).changed == []
        back = {**seen, OUTLET: NOW + timedelta(minutes=2)}
        assert [a.state for a in eng.silence(conn, rule, back, set(), NOW + timedelta(minutes=3)).changed] == ["resolved"]
        # silent again, but the enterprise marked the outlet stopped (停运): not judged
        add_mark(conn, outlet=OUTLET, pollutant=None, type="停运", start=NOW, end=None, reason="停炉检修",
                 by="enterprise", at=NOW)
        assert eng.silence(conn, rule, {OUTLET: back[OUTLET]}, set(), NOW + timedelta(hours=2)).changed == []
        # and a plant whose last reading says stopped is not silent either
        assert eng.silence(conn, rule, {"91620503MA001-DA001": NOW - timedelta(hours=3)}, {"91620503MA001-DA001"},
                           NOW).changed == []


def test_a_stuck_value_fires_and_clears(db):
    eng = make_engine()
    rule = eng.rules.by_name("stack_value_stuck")
    with db.begin() as conn:
        fired = eng.stuck(conn, rule, {(OUTLET, "so2"): [12.5] * 30, (OUTLET, "o2"): [3.1, 3.2] * 15}, NOW).changed
        cleared = eng.stuck(conn, rule, {(OUTLET, "so2"): [12.5] * 29 + [13.0]}, NOW + timedelta(minutes=1)).changed
    assert [(a.alertname, a.labels["field"]) for a in fired] == [("ValueStuck", "so2")]
    assert [a.state for a in cleared] == ["resolved"]


def test_a_low_daily_valid_data_rate_fires(db):
    eng = make_engine()
    rule = eng.rules.by_name("outlet_valid_rate")
    hours = [{"time": f"h{i}", "valid_minutes": 60, "not_running_minutes": 0} for i in range(18)]
    with db.begin() as conn:
        fired = eng.valid_rate(conn, rule, OUTLET, T0, hours, NOW).changed
    assert [(a.alertname, a.value) for a in fired] == [("OutletValidDataRateLow", 0.75)]
    assert "有效传输率 75.0%" in fired[0].annotations["summary"]


def test_the_heavy_pollution_watch_fires_on_observed_data_and_says_so(db):
    eng = make_engine()
    rec = {"station": "620503-001", "standard": "cn-2026", "period": "hour", "time": T0.isoformat(), "aqi": 160,
           "category": 4}
    history = [160.0] * (23 + 72 + 1)  # > 150 for 72 h: orange (and yellow)
    with db.begin() as conn:
        changed = eng.aqi_record(conn, rec, NOW, history=history).changed
        again = eng.aqi_record(conn, rec, NOW, history=history).changed
    levels = sorted((a.labels["level"], a.alertname, a.labels["team"]) for a in changed)
    assert levels == [("orange", "HeavyPollutionWatch", "inspectors"), ("yellow", "HeavyPollutionWatch", "inspectors")]
    assert all("观测数据，非官方预警" in a.annotations["summary"] for a in changed) and again == []


def test_a_recomputed_hour_still_exceeded_keeps_the_latest_average_on_the_case(db):
    eng = make_engine()
    feed(db, eng, record(T0))
    assert feed(db, eng, record(T0, corr=80.0)).changed == []  # late data: a higher average, same verdict
    with db.connect() as conn:
        case = store.list_cases(conn, URL)[0]
        hist = [e["action"] for e in case.to_json().get("history", [])]
    assert [h["avg_o2corr"] for h in case.to_json()["hours"]] == [80.0]
    assert hist.count("hour_revised") == 1
    feed(db, eng, record(T0, corr=80.0))  # and the same record again: nothing more
    with db.connect() as conn:
        assert [e["action"] for e in store.list_cases(conn, URL)[0].to_json()["history"]].count("hour_revised") == 1
