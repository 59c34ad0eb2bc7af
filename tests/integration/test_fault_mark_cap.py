"""The annual cap on fault-mark hours (cases.fault_mark_hours_per_year) on a real case
database: every test runs on an SQLite file and on a real PostgreSQL (`case_engine`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from alerts.cases import marks, store
from alerts.cases.db import engine_for_url, migrate
from alerts.cases.schema import case_events
from alerts.engine import AlertEngine, load_alert
from alerts.lifecycle import fingerprint
from alerts.rules import load_rules
from aqpipe.registry import Registry

pytestmark = pytest.mark.integration

UTC = timezone.utc
H = timedelta(hours=1)
T0 = datetime(2026, 3, 1, 2, tzinfo=UTC)  # an hour ending 10:00 China time
OUTLET = "TS-GAS-01"
URL = "https://bureau.example/cases/{case_id}"


def hour(hour_end: datetime, pollutant: str = "so2") -> store.StackHour:
    return store.StackHour(outlet=OUTLET, enterprise="麦积区示例燃气供热站", permit="91620503MA002XXXXX001P",
                           pollutant=pollutant, limit=50.0, limit_source="permit", reference_o2=3.5,
                           hour_end=hour_end, avg=41.0, avg_o2corr=62.5, o2=9.0, valid_minutes=60, exceeded=True,
                           minutes=[])


def record(engine, ends: list[datetime], cap: int | None) -> int:
    policy = store.CasePolicy(fault_mark_hours_per_year=cap)
    with engine.begin() as conn:
        ids = {store.record_exceeded_hour(conn, hour(e), e + timedelta(minutes=2), policy) for e in ends}
    assert len(ids) == 1
    return ids.pop()


def fault(engine, start: datetime, end: datetime | None, cap: int | None, pollutant: str | None = None) -> marks.Mark:
    with engine.begin() as conn:
        return marks.add_mark(conn, outlet=OUTLET, pollutant=pollutant, type="故障", start=start, end=end,
                              reason="脱硫塔循环泵故障", by="企业 王", at=start, fault_cap=cap)


def verdicts(engine, case_id: int) -> list[str]:
    with engine.connect() as conn:
        return [h["verdict"] for h in store.get_case(conn, case_id, URL).to_json()["hours"]]


def case_events_of(engine, case_id: int) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(r.action, r.note or "") for r in conn.execute(
            sa.select(case_events.c.action, case_events.c.note).where(case_events.c.case_id == case_id)
            .order_by(case_events.c.id))]


def test_hours_within_the_cap_stay_exempt_and_the_first_beyond_it_is_judged_and_counts(case_engine) -> None:
    fault(case_engine, T0 - H, T0 + 4 * H, cap=3)  # covers the hours ending T0 .. T0+4: five hours
    case_id = record(case_engine, [T0 + i * H for i in range(5)], cap=3)
    with case_engine.connect() as conn:
        c = store.get_case(conn, case_id, URL).to_json()
    assert [h["verdict"] for h in c["hours"]] == ["marked"] * 3 + ["exceeded"] * 2
    assert (c["exceeded_hours"], c["marked_hours"], c["first_exceeded_hour"]) == (2, 3, (T0 + 3 * H).isoformat())
    assert [h["fault_cap_reached"] for h in c["hours"]] == [False] * 3 + [True] * 2
    added = [n for a, n in case_events_of(case_engine, case_id) if a == "hour_added"]
    assert ["cap reached" in n for n in added] == [False] * 3 + [True] * 2
    assert "4 fault hours this year" in added[3]


def test_a_fault_mark_added_over_judged_hours_marks_those_within_the_cap_and_says_why_the_rest_stay(
        case_engine) -> None:
    case_id = record(case_engine, [T0, T0 + H], cap=1)
    m = fault(case_engine, T0 - H, T0 + H, cap=1)
    with case_engine.connect() as conn:
        c = store.get_case(conn, case_id, URL).to_json()
    assert [(h["verdict"], h["fault_cap_reached"]) for h in c["hours"]] == [("marked", False), ("exceeded", True)]
    action, note = case_events_of(case_engine, case_id)[-1]
    assert action == "hour_fault_capped" and f"mark {m.id}" in note and "cap reached" in note


def test_unset_cap_keeps_every_fault_hour_exempt(case_engine) -> None:
    fault(case_engine, T0 - H, T0 + 4 * H, cap=None)
    case_id = record(case_engine, [T0 + i * H for i in range(5)], cap=None)
    assert verdicts(case_engine, case_id) == ["marked"] * 5


def test_overlapping_fault_marks_of_several_pollutants_count_an_hour_once(case_engine) -> None:
    fault(case_engine, T0 - H, T0 + 2 * H, cap=3)  # hours ending T0 .. T0+2
    fault(case_engine, T0 - timedelta(minutes=30), T0 + 2 * H, cap=3, pollutant="so2")
    fault(case_engine, T0 - H, T0 + H, cap=3, pollutant="nox")
    case_id = record(case_engine, [T0, T0 + H, T0 + 2 * H], cap=3)
    assert verdicts(case_engine, case_id) == ["marked"] * 3


def test_an_earlier_fault_mark_pushes_later_hours_over_the_cap_and_removing_it_brings_them_back(case_engine) -> None:
    later = fault(case_engine, T0 - H, T0 + H, cap=3)  # hours ending T0, T0+1
    case_id = record(case_engine, [T0, T0 + H], cap=3)
    assert verdicts(case_engine, case_id) == ["marked", "marked"]
    # a fault of another pollutant, earlier that year: two hours, outside the case's hours
    earlier = fault(case_engine, T0 - 30 * H, T0 - 28 * H, cap=3, pollutant="nox")
    assert verdicts(case_engine, case_id) == ["marked", "exceeded"]  # the 4th fault hour of the year
    unmarked = [(a, n) for a, n in case_events_of(case_engine, case_id) if a == "hour_unmarked"]
    assert len(unmarked) == 1 and f"mark {earlier.id}" in unmarked[0][1] and "cap reached" in unmarked[0][1]
    with case_engine.connect() as conn:
        assert marks.mark_history(conn, earlier.id)[0]["data"]["hours"][0]["fault_cap_reached"] is True
    with case_engine.begin() as conn:
        marks.remove_mark(conn, earlier.id, by="检查员 李", reason="核实无此故障", at=T0 + 3 * H, fault_cap=3)
    assert verdicts(case_engine, case_id) == ["marked", "marked"]
    assert case_events_of(case_engine, case_id)[-1][0] == "hour_marked"
    with case_engine.connect() as conn:  # the lookup the engine asks agrees
        assert store.exempting_mark(conn, OUTLET, "so2", T0, T0 + H, 3).id == later.id


def test_a_mark_of_another_type_still_exempts_an_hour_past_the_cap(case_engine) -> None:
    fault(case_engine, T0 - H, T0 + H, cap=1)
    with case_engine.begin() as conn:
        stop = marks.add_mark(conn, outlet=OUTLET, pollutant=None, type="停运", start=T0, end=T0 + H,
                              reason="停运", by="企业", at=T0, fault_cap=1)
        assert store.exempting_mark(conn, OUTLET, "so2", T0, T0 + H, 1).id == stop.id
        assert marks.hour_exemption(conn, OUTLET, "so2", T0 + 2 * H, 1) is None


def test_the_cap_resets_at_midnight_china_time_on_1_january(case_engine) -> None:
    new_year = datetime(2026, 12, 31, 16, tzinfo=UTC)  # 2027-01-01 00:00 China time
    fault(case_engine, new_year - 4 * H, new_year + 2 * H, cap=2)
    case_id = record(case_engine, [new_year + i * H for i in range(-3, 3)], cap=2)
    # hours ending 21:00 22:00 | 23:00 00:00 past the 2026 cap | 01:00 02:00 of 2027, within it again
    assert verdicts(case_engine, case_id) == ["marked", "marked", "exceeded", "exceeded", "marked", "marked"]


def test_the_engine_judges_an_hour_past_the_cap_and_opens_a_case_with_it(case_engine) -> None:
    registry = Registry.load(Path(__file__).resolve().parents[2] / "deploy" / "config")
    outlet = "91620503MA002-DA001"
    eng = AlertEngine(load_rules(), registry, URL, policy=store.CasePolicy(fault_mark_hours_per_year=1))

    def feed(hour_end: datetime):
        rec = {"outlet": outlet, "pollutant": "so2", "time": hour_end.isoformat(), "avg": 40.0, "avg_o2corr": 62.0,
               "limit": 50.0, "limit_source": "permit", "exceeded": True, "valid_minutes": 60,
               "not_running_minutes": 0}
        with case_engine.begin() as conn:
            return eng.stack_record(conn, rec, hour_end + timedelta(minutes=5), evidence=[])

    with case_engine.begin() as conn:
        marks.add_mark(conn, outlet=outlet, pollutant=None, type="fault", start=T0 - H, end=T0 + H,
                       reason="故障", by="企业", at=T0 - H, fault_cap=1)
    assert feed(T0).changed == []  # the first fault hour of the year: exempt
    assert [a.state for a in feed(T0 + H).changed] == ["firing"]  # the second: past the cap, judged
    with case_engine.connect() as conn:
        labels = {"alertname": "StackExceedance", "rule": "stack_exceedance", "outlet": outlet, "pollutant": "so2"}
        assert load_alert(conn, fingerprint("stack_exceedance", {**labels, **_rest(registry, outlet)})) is not None
        (c,) = store.list_cases(conn, URL)
        assert c.to_json()["exceeded_hours"] == 1 and c.to_json()["hours"][0]["fault_cap_reached"] is True


def _rest(registry: Registry, outlet: str) -> dict[str, str]:
    rule = load_rules().by_name("stack_exceedance")
    o = registry.outlets[outlet]
    return {"enterprise": o.enterprise, "team": rule.team, "severity": rule.severity, "alertname": rule.alertname}


def test_aqpipe_cases_show_and_marks_add_say_the_cap_was_used_up(tmp_path) -> None:
    env = {**os.environ, "AQPIPE_DATA_DIR": str(tmp_path), "AQPIPE_CASES__FAULT_MARK_HOURS_PER_YEAR": "2"}
    engine = engine_for_url(f"sqlite:///{tmp_path}/cases.sqlite")
    migrate(engine)
    fault(engine, T0 - H, T0 + H, cap=2)  # the hours ending 10:00 and 11:00 China time
    case_id = record(engine, [T0, T0 + H], cap=2)
    engine.dispose()
    aqpipe = str(Path(sys.executable).parent / "aqpipe")
    # an earlier fault of NOx that day: the hour ending 11:00 becomes the year's 3rd fault hour
    added = subprocess.run([aqpipe, "marks", "add", "--outlet", OUTLET, "--pollutant", "nox", "--type", "故障",
                            "--start", "2026-03-01 06:00", "--end", "2026-03-01 07:00", "--reason", "故障",
                            "--by", "企业"], env=env, capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    assert "1 hour(s) judged: the annual fault-mark cap" in added.stdout, added.stdout
    assert "2026-03-01 11:00" in added.stdout.splitlines()[-1]
    shown = subprocess.run([aqpipe, "cases", "show", str(case_id)], env=env, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0, shown.stderr
    lines = [ln for ln in shown.stdout.splitlines() if "2026-03-01 1" in ln and ("marked" in ln or "exceeded" in ln)]
    assert ["cap used up" in ln for ln in lines] == [False, True], shown.stdout
    as_json = json.loads(subprocess.run([aqpipe, "cases", "show", str(case_id), "--json"], env=env,
                                        capture_output=True, text=True, timeout=120).stdout)
    assert [h["fault_cap_reached"] for h in as_json["hours"]] == [False, True]


@pytest.fixture(params=["sqlite", "postgresql"])
def capped_web(request, env):
    """The case desk with a cap of one fault hour a year, on SQLite and on PostgreSQL."""
    from fastapi.testclient import TestClient

    from alerts.web.app import create_app
    from alerts.web.context import WebContext
    from aqpipe.config import load_config

    env = {**env, "AQPIPE_CASES__FAULT_MARK_HOURS_PER_YEAR": "1"}
    if request.param == "postgresql":
        env["AQPIPE_CASES__DATABASE_URL"] = request.getfixturevalue("postgresql_url")
    ctx = WebContext.from_config(load_config(None, env))
    with TestClient(create_app(ctx), follow_redirects=False) as client:
        yield ctx, client
    ctx.engine.dispose()


def test_a_fault_mark_entered_on_the_desk_is_capped_and_the_case_page_says_so(capped_web) -> None:
    import re

    ctx, client = capped_web
    case_id = record(ctx.engine, [T0, T0 + H, T0 + 2 * H], cap=1)
    password = ctx.users.add_user("li", "operator")
    def csrf_of(html: str) -> str:
        return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)

    login = client.post("/login", data={"username": "li", "password": password,
                                        "csrf": csrf_of(client.get("/login").text)})
    assert login.status_code == 303, login.text
    csrf = csrf_of(client.get("/account").text)
    r = client.post("/marks", data={"csrf": csrf, "outlet": OUTLET, "pollutant": "", "type": "fault",
                                    "start": "2026-03-01T09:00", "end": "2026-03-01T12:00", "reason": "故障",
                                    "evidence_ref": ""})
    assert r.status_code == 303, r.text
    assert verdicts(ctx.engine, case_id) == ["marked", "exceeded", "exceeded"]
    html = client.get(f"/cases/{case_id}").text
    assert html.count("故障标记年度小时上限已用完") == 2 and 'id="exceeded-hours">2<' in html
