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
