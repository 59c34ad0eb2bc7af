"""The case store on a real database: every test runs on an SQLite file and on a fresh
database of a real PostgreSQL (the `case_engine` fixture, tests/conftest.py)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from alerts.cases import marks, store
from alerts.cases.db import current_revision, migrate
from alerts.cases.errors import MarkError, TransitionRefused
from alerts.cases.schema import case_events, case_hours, cases, mark_events, metadata

pytestmark = pytest.mark.integration

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 2, tzinfo=UTC)  # an hour ending 10:00 China time


def hour(hour_end: datetime, avg_o2corr: float = 62.5, *, outlet: str = "TS-GAS-01", pollutant: str = "so2",
         exceeded: bool = True, avg: float = 41.0) -> store.StackHour:
    minutes = [{"time": (hour_end - timedelta(minutes=60 - i)).isoformat(), "value": avg, "o2": 9.0, "flag": "N"}
               for i in range(60)]
    return store.StackHour(outlet=outlet, enterprise="麦积区示例燃气供热站", permit="91620503MA002XXXXX001P",
                           pollutant=pollutant, limit=50.0, limit_source="permit", reference_o2=3.5,
                           hour_end=hour_end, avg=avg, avg_o2corr=avg_o2corr, o2=9.0, valid_minutes=60,
                           exceeded=exceeded, minutes=minutes)


def add(engine, *hours: store.StackHour, at: datetime | None = None) -> int:
    with engine.begin() as conn:
        ids = {store.record_exceeded_hour(conn, h, at or h.hour_end + timedelta(minutes=2)) for h in hours}
    assert len(ids) == 1
    return ids.pop()


def case(engine, case_id: int, now: datetime | None = None) -> dict:
    with engine.connect() as conn:
        return store.get_case(conn, case_id, "https://bureau.example/cases/{case_id}", now=now).to_json()


def events(engine, case_id: int) -> list[str]:
    with engine.connect() as conn:
        return [r.action for r in conn.execute(sa.select(case_events.c.action)
                                               .where(case_events.c.case_id == case_id).order_by(case_events.c.id))]


def move(engine, case_id: int, to: str, at: datetime, **kw) -> dict:
    with engine.begin() as conn:
        return store.transition(conn, case_id, to, kw.pop("by", "张检查"), at=at, **kw).to_json()


# --- schema ------------------------------------------------------------------------------


def test_migration_creates_exactly_the_schema_and_is_idempotent(case_engine) -> None:
    migrate(case_engine)  # a second run changes nothing
    assert current_revision(case_engine) == "0001_initial"
    with case_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []


def test_alert_tables_have_the_columns_the_engine_relies_on(case_engine) -> None:
    insp = sa.inspect(case_engine)
    assert {c["name"] for c in insp.get_columns("alerts")} == {
        "fingerprint", "rule", "alertname", "labels", "annotations", "state", "active_since", "fired_at",
        "resolved_at", "last_sent_at", "value", "threshold", "case_id", "updated_at"}
    assert insp.get_pk_constraint("alerts")["constrained_columns"] == ["fingerprint"]
    assert {c["name"] for c in insp.get_columns("alert_hours")} == {"fingerprint", "hour_end", "verdict", "reason"}
    assert insp.get_pk_constraint("alert_hours")["constrained_columns"] == ["fingerprint", "hour_end"]


@pytest.mark.parametrize("statement", [
    "UPDATE case_events SET note = 'rewritten'",
    "DELETE FROM case_events",
])
def test_the_case_audit_log_refuses_update_and_delete(case_engine, statement) -> None:
    case_id = add(case_engine, hour(T0))
    with pytest.raises(sa.exc.DatabaseError, match="append-only"):
        with case_engine.begin() as conn:
            conn.execute(sa.text(statement))
    assert events(case_engine, case_id) == ["opened", "hour_added"]


def test_the_mark_audit_log_refuses_update(case_engine) -> None:
    with case_engine.begin() as conn:
        marks.add_mark(conn, outlet="TS-GAS-01", pollutant=None, type="停运", start=T0, end=T0 + timedelta(hours=2),
                       reason="检修停炉", by="企业 王", at=T0)
    with pytest.raises(sa.exc.DatabaseError, match="append-only"):
        with case_engine.begin() as conn:
            conn.execute(sa.update(mark_events).values(note="x"))


def test_the_database_allows_one_open_case_per_outlet_and_pollutant(case_engine) -> None:
    add(case_engine, hour(T0))
    with pytest.raises(sa.exc.IntegrityError):
        with case_engine.begin() as conn:
            conn.execute(cases.insert().values(kind="stack_exceedance", outlet="TS-GAS-01", enterprise="x",
                                               pollutant="so2", limit_value=50, limit_source="permit",
                                               reference_o2=3.5, status="verified", opened_at=T0, updated_at=T0))


# --- hours -----------------------------------------------------------------------------


def test_an_exceeded_hour_opens_a_case_with_every_contract_field(case_engine) -> None:
    case_id = add(case_engine, hour(T0), hour(T0 + timedelta(hours=1), 70.0))
    c = case(case_engine, case_id)
    for key in ("id", "kind", "outlet", "enterprise", "permit", "pollutant", "limit", "limit_source", "reference_o2",
                "status", "opened_at", "first_exceeded_hour", "last_exceeded_hour", "exceeded_hours",
                "days_with_exceedance", "hours", "url", "history", "marks", "deadlines", "penalties"):
        assert key in c, key
    assert (c["id"], c["kind"], c["outlet"], c["pollutant"], c["status"]) == (case_id, "stack_exceedance",
                                                                                "TS-GAS-01", "so2", "open")
    assert (c["enterprise"], c["permit"]) == ("麦积区示例燃气供热站", "91620503MA002XXXXX001P")
    assert (c["limit"], c["limit_source"], c["reference_o2"]) == (50.0, "permit", 3.5)
    assert isinstance(c["limit"], float) and isinstance(c["exceeded_hours"], int)
    assert c["first_exceeded_hour"] == T0.isoformat()
    assert c["last_exceeded_hour"] == (T0 + timedelta(hours=1)).isoformat()
    assert (c["exceeded_hours"], c["days_with_exceedance"]) == (2, 1)
    assert [{k: h[k] for k in ("hour_end", "avg", "avg_o2corr", "o2", "valid_minutes", "exceeded")}
            for h in c["hours"]] == [
        {"hour_end": T0.isoformat(), "avg": 41.0, "avg_o2corr": 62.5, "o2": 9.0, "valid_minutes": 60,
         "exceeded": True},
        {"hour_end": (T0 + timedelta(hours=1)).isoformat(), "avg": 41.0, "avg_o2corr": 70.0, "o2": 9.0,
         "valid_minutes": 60, "exceeded": True}]
    assert c["url"] == f"https://bureau.example/cases/{case_id}"
    assert c["allowed_next"] == ["verified", "dismissed"]
    assert [d["kind"] for d in c["deadlines"]] == ["enterprise_report"]


def test_the_minute_evidence_is_kept_with_the_case(case_engine) -> None:
    h = hour(T0)
    case_id = add(case_engine, h)
    with case_engine.connect() as conn:
        view = store.get_case(conn, case_id)
    assert view.hours[0]["minutes"] == h.minutes
    assert "minutes" not in view.to_json()["hours"][0]  # the list stays small; export carries them
    assert view.to_json(minutes=True)["hours"][0]["minutes"] == h.minutes


def test_a_redelivered_hour_changes_nothing(case_engine) -> None:
    case_id = add(case_engine, hour(T0))
    before = case(case_engine, case_id)
    assert add(case_engine, hour(T0), at=T0 + timedelta(hours=5)) == case_id
    assert case(case_engine, case_id) == before
    assert events(case_engine, case_id) == ["opened", "hour_added"]


def test_other_pollutants_and_outlets_get_their_own_cases(case_engine) -> None:
    a = add(case_engine, hour(T0))
    b = add(case_engine, hour(T0, pollutant="nox"))
    c = add(case_engine, hour(T0, outlet="TS-COAL-01"))
    assert len({a, b, c}) == 3


def test_a_recomputed_hour_that_still_exceeds_is_revised_with_an_audit_entry(case_engine) -> None:
    case_id = add(case_engine, hour(T0, 62.5))
    add(case_engine, hour(T0, 55.0))
    c = case(case_engine, case_id)
    assert c["hours"][0]["avg_o2corr"] == 55.0 and c["exceeded_hours"] == 1
    revised = c["history"][-1]
    assert revised["action"] == "hour_revised"
    assert revised["data"]["previous"]["avg_o2corr"] == 62.5 and revised["data"]["new"]["avg_o2corr"] == 55.0


def test_an_hour_recomputed_as_compliant_leaves_the_evidence_but_stays_on_record(case_engine) -> None:
    case_id = add(case_engine, hour(T0), hour(T0 + timedelta(hours=1)))
    with case_engine.begin() as conn:
        touched = store.record_compliant_hour(conn, hour(T0, 45.0, exceeded=False), T0 + timedelta(hours=3))
        again = store.record_compliant_hour(conn, hour(T0, 45.0, exceeded=False), T0 + timedelta(hours=4))
        unknown = store.record_compliant_hour(conn, hour(T0 + timedelta(hours=9), 10.0, exceeded=False),
                                              T0 + timedelta(hours=10))
    assert (touched, again, unknown) == (case_id, None, None)
    c = case(case_engine, case_id)
    assert c["exceeded_hours"] == 1
    assert c["first_exceeded_hour"] == (T0 + timedelta(hours=1)).isoformat()
    withdrawn = c["hours"][0]
    assert (withdrawn["verdict"], withdrawn["exceeded"], withdrawn["avg_o2corr"]) == ("withdrawn", False, 45.0)
    entry = [e for e in c["history"] if e["action"] == "hour_withdrawn"]
    assert len(entry) == 1 and entry[0]["data"]["previous"]["avg_o2corr"] == 62.5
    # ... and if it is recomputed as exceeded once more, it counts again
    add(case_engine, hour(T0, 58.0))
    c = case(case_engine, case_id)
    assert c["exceeded_hours"] == 2 and c["history"][-1]["action"] == "hour_reinstated"


def test_days_with_exceedance_are_china_dates(case_engine) -> None:
    # 15:00 and 17:00 UTC on 1 March are 23:00 on 1 March and 01:00 on 2 March in China;
    # the hour ending 16:00 UTC (00:00 China) belongs to 1 March.
    ends = [datetime(2026, 3, 1, 15, tzinfo=UTC), datetime(2026, 3, 1, 16, tzinfo=UTC),
            datetime(2026, 3, 1, 17, tzinfo=UTC)]
    case_id = add(case_engine, *(hour(e) for e in ends))
    c = case(case_engine, case_id)
    assert [h["china_date"] for h in c["hours"]] == ["2026-03-01", "2026-03-01", "2026-03-02"]
    assert c["days_with_exceedance"] == 2


def test_a_compliant_hour_handed_to_record_exceeded_hour_is_an_error(case_engine) -> None:
    with pytest.raises(ValueError, match="record_compliant_hour"):
        with case_engine.begin() as conn:
            store.record_exceeded_hour(conn, hour(T0, 20.0, exceeded=False), T0)


# --- marks -----------------------------------------------------------------------------


def test_adding_and_removing_a_mark_re_evaluates_the_case_hours_it_covers(case_engine) -> None:
    case_id = add(case_engine, *(hour(T0 + timedelta(hours=i)) for i in range(4)))
    with case_engine.begin() as conn:  # covers the 2nd and 3rd hours (ending T0+1h and T0+2h)
        m = marks.add_mark(conn, outlet="TS-GAS-01", pollutant="so2", type="启炉", start=T0 + timedelta(minutes=10),
                           end=T0 + timedelta(hours=1, minutes=30), reason="冷态启炉", evidence_ref="doc://ledger/17",
                           by="企业 王", at=T0 + timedelta(hours=5))
    c = case(case_engine, case_id)
    assert [h["verdict"] for h in c["hours"]] == ["exceeded", "marked", "marked", "exceeded"]
    assert [h["mark_label"] for h in c["hours"]][1:3] == ["启炉", "启炉"]
    assert (c["exceeded_hours"], c["marked_hours"]) == (2, 2)
    assert [mk["id"] for mk in c["marks"]] == [m.id]
    assert events(case_engine, case_id)[-2:] == ["hour_marked", "hour_marked"]

    with case_engine.begin() as conn:
        marks.remove_mark(conn, m.id, by="检查员 李", reason="现场核实：当日未启炉，标记不实", at=T0 + timedelta(hours=30))
    c = case(case_engine, case_id)
    assert [h["verdict"] for h in c["hours"]] == ["exceeded"] * 4 and c["exceeded_hours"] == 4
    assert c["marks"][0]["active"] is False and c["marks"][0]["removed_by"] == "检查员 李"
    assert events(case_engine, case_id)[-2:] == ["hour_unmarked", "hour_unmarked"]
    with case_engine.connect() as conn:
        history = marks.mark_history(conn, m.id)
    assert [(e["action"], e["by"]) for e in history] == [("added", "企业 王"), ("removed", "检查员 李")]
    assert len(history[0]["data"]["hours"]) == 2


def test_a_mark_of_another_pollutant_or_a_non_exempting_mark_leaves_hours_judged(case_engine) -> None:
    case_id = add(case_engine, hour(T0))
    with case_engine.begin() as conn:
        marks.add_mark(conn, outlet="TS-GAS-01", pollutant="nox", type="维护", start=T0 - timedelta(hours=2),
                       end=T0, reason="NOx 分析仪维护", by="运维", at=T0)
        marks.add_mark(conn, outlet="TS-GAS-01", pollutant=None, type="并网", start=T0 - timedelta(hours=2),
                       end=T0, reason="并网", by="运维", at=T0)
    assert case(case_engine, case_id)["exceeded_hours"] == 1


def test_removing_one_of_two_overlapping_marks_keeps_the_hour_marked(case_engine) -> None:
    case_id = add(case_engine, hour(T0))
    with case_engine.begin() as conn:
        a = marks.add_mark(conn, outlet="TS-GAS-01", pollutant=None, type="stopped", start=T0 - timedelta(hours=3),
                           end=None, reason="停运", by="企业", at=T0)
        b = marks.add_mark(conn, outlet="TS-GAS-01", pollutant="so2", type="calibration",
                           start=T0 - timedelta(minutes=30), end=T0, reason="校准", by="运维", at=T0)
    with case_engine.begin() as conn:
        marks.remove_mark(conn, a.id, by="检查员", reason="误标", at=T0 + timedelta(hours=1))
    c = case(case_engine, case_id)
    assert c["hours"][0]["verdict"] == "marked" and c["hours"][0]["mark_id"] == b.id


def test_exempting_mark_finds_overlaps_by_pollutant_or_all(case_engine) -> None:
    with case_engine.begin() as conn:
        so2 = marks.add_mark(conn, outlet="O", pollutant="so2", type="fault", start=T0, end=T0 + timedelta(hours=1),
                             reason="脱硫故障", by="企业", at=T0)
        whole = marks.add_mark(conn, outlet="O", pollutant="*", type="通讯中断", start=T0 + timedelta(hours=5),
                               end=None, reason="通讯中断", by="企业", at=T0)
    with case_engine.connect() as conn:
        def find(pollutant, start_h, end_h):
            m = store.exempting_mark(conn, "O", pollutant, T0 + timedelta(hours=start_h), T0 + timedelta(hours=end_h))
            return m.id if m else None
        assert find("so2", 0, 1) == so2.id
        assert find("so2", -1, 0) is None  # [start, end): touching is not overlapping
        assert find("so2", 1, 2) is None
        assert find("nox", 0, 1) is None
        assert find("nox", 100, 101) == whole.id  # open-ended
        assert store.exempting_mark(conn, "P", "so2", T0, T0 + timedelta(hours=1)) is None
        # the whole outlet ('*', e.g. an outlet gone silent): only marks of all pollutants
        assert store.exempting_mark(conn, "O", "*", T0, T0 + timedelta(hours=1)) is None
        assert store.exempting_mark(conn, "O", "*", T0 + timedelta(hours=6), T0 + timedelta(hours=7)).id == whole.id
        assert store.exempting_mark(conn, "O", None, T0 + timedelta(hours=6), T0 + timedelta(hours=7)).id == whole.id


def test_an_hour_recorded_under_an_exempting_mark_is_shown_marked_not_counted(case_engine) -> None:
    with case_engine.begin() as conn:
        marks.add_mark(conn, outlet="TS-GAS-01", pollutant=None, type="停炉", start=T0 - timedelta(minutes=20),
                       end=T0 + timedelta(hours=2), reason="停炉", by="企业", at=T0 - timedelta(hours=1))
    case_id = add(case_engine, hour(T0))
    c = case(case_engine, case_id)
    assert (c["hours"][0]["verdict"], c["exceeded_hours"], c["first_exceeded_hour"]) == ("marked", 0, None)


@pytest.mark.parametrize("kwargs, problem", [
    ({"type": "nap"}, "unknown mark type"),
    ({"end": T0 - timedelta(hours=1)}, "must end after it starts"),
    ({"reason": "  "}, "needs a reason"),
])
def test_a_bad_mark_is_refused_and_nothing_is_stored(case_engine, kwargs, problem) -> None:
    args = {"outlet": "O", "pollutant": None, "type": "stopped", "start": T0, "end": T0 + timedelta(hours=1),
            "reason": "停运", "by": "企业", "at": T0, **kwargs}
    with pytest.raises(MarkError, match=problem):
        with case_engine.begin() as conn:
            marks.add_mark(conn, **args)
    with case_engine.connect() as conn:
        assert marks.list_marks(conn, include_removed=True) == []


def test_a_mark_cannot_be_removed_twice(case_engine) -> None:
    with case_engine.begin() as conn:
        m = marks.add_mark(conn, outlet="O", pollutant=None, type="stopped", start=T0, end=None, reason="停运",
                           by="企业", at=T0)
        marks.remove_mark(conn, m.id, by="李", reason="误标", at=T0)
    with pytest.raises(MarkError, match="already removed"):
        with case_engine.begin() as conn:
            marks.remove_mark(conn, m.id, by="李", reason="again", at=T0)


# --- the workflow ----------------------------------------------------------------------


def test_a_case_goes_through_the_whole_workflow_including_the_order_loop(case_engine) -> None:
    case_id = add(case_engine, hour(T0))
    day = lambda d: datetime.combine(d, datetime.min.time(), UTC) + timedelta(hours=4)  # noqa: E731
    move(case_engine, case_id, "verified", day(date(2026, 3, 2)), note="现场核实为工艺超标", refs=["核查记录 2026-031"])
    move(case_engine, case_id, "filed", day(date(2026, 3, 3)), fields={"case_number": "天环立〔2026〕15号"})
    move(case_engine, case_id, "ordered", day(date(2026, 3, 5)), date=date(2026, 3, 5),
         fields={"doc_number": "天环改〔2026〕8号", "fine": "200000"})
    c = move(case_engine, case_id, "reinspected", day(date(2026, 3, 25)), date=date(2026, 3, 25),
             fields={"result": "continuing"})
    assert c["allowed_next"] == ["ordered"]
    assert [(p["served_date"], p["reinspected_date"], p["days"], p["total_amount"]) for p in c["penalties"]] == [
        ("2026-03-05", "2026-03-25", 20, 20 * 200000.0)]
    move(case_engine, case_id, "ordered", day(date(2026, 3, 25)), date=date(2026, 3, 25))
    c = move(case_engine, case_id, "reinspected", day(date(2026, 4, 10)), date=date(2026, 4, 10),
             fields={"result": "corrected"})
    assert len(c["penalties"]) == 1 and c["allowed_next"] == ["closed"]
    c = move(case_engine, case_id, "closed", day(date(2026, 4, 12)), note="罚款已缴清",
             fields={"outcome": "已改正，罚款及按日连续处罚已执行", "fine": 200000,
                     "measures": json.dumps([{"kind": "限产", "start": "2026-03-26", "end": "2026-04-10",
                                              "doc_number": "天环限〔2026〕3号"}])})
    assert (c["status"], c["status_label"], c["outcome"]) == ("closed", "结案", "已改正，罚款及按日连续处罚已执行")
    assert c["allowed_next"] == []
    assert [m["kind"] for m in c["measures"]] == ["order_to_correct", "fine", "order_to_correct", "production_limit",
                                                  "fine"]
    transitions = [(e["from_state"], e["to_state"], e["by"]) for e in c["history"] if e["action"] == "transition"]
    assert transitions == [("open", "verified", "张检查"), ("verified", "filed", "张检查"),
                           ("filed", "ordered", "张检查"), ("ordered", "reinspected", "张检查"),
                           ("reinspected", "ordered", "张检查"), ("ordered", "reinspected", "张检查"),
                           ("reinspected", "closed", "张检查")]
    verified = next(e for e in c["history"] if e["to_state"] == "verified")
    assert (verified["note"], verified["refs"]) == ("现场核实为工艺超标", ["核查记录 2026-031"])
    assert all(d["met_at"] or d["cancelled_at"] for d in c["deadlines"])


def test_a_discharge_stopped_by_a_suspension_has_no_daily_penalty(case_engine) -> None:
    case_id = add(case_engine, hour(T0))
    at = T0 + timedelta(days=40)
    move(case_engine, case_id, "verified", at)
    move(case_engine, case_id, "filed", at, fields={"case_number": "N-1"})
    move(case_engine, case_id, "ordered", at, date=date(2026, 3, 5), fields={"fine": 100000})
    c = move(case_engine, case_id, "reinspected", at, date=date(2026, 3, 20),
             fields={"result": "continuing", "discharge_stopped": "true"})
    assert [(p["days"], p["discharge_stopped"], p["total_amount"]) for p in c["penalties"]] == [(0, True, 0.0)]


@pytest.mark.parametrize("steps, to, kwargs, problem", [
    ([], "filed", {"fields": {"case_number": "X"}}, "open -> filed is not a transition"),
    ([], "dismissed", {}, "needs reason"),
    ([], "closed", {"fields": {"outcome": "x"}}, "open -> closed is not a transition"),
    ([], "nonsense", {}, "unknown state"),
    ([], "verified", {"fields": {"case_number": "X"}}, "takes no field case_number"),
    ([], "verified", {"by": " "}, "needs who made it"),
    (["verified"], "filed", {}, "needs case_number"),
    (["verified", "filed"], "ordered", {}, "needs --date"),
    (["verified", "filed"], "ordered", {"date": date(2030, 1, 1)}, "is in the future"),
    (["verified", "filed", "ordered"], "reinspected", {"date": date(2026, 3, 20), "fields": {"result": "maybe"}},
     "must be one of corrected, continuing, refused"),
    (["verified", "filed", "ordered"], "reinspected", {"date": date(2026, 3, 1), "fields": {"result": "corrected"}},
     "before the order was served"),
    (["verified", "filed", "ordered"], "closed", {"fields": {"outcome": "x"}}, "ordered -> closed is not"),
    (["verified", "filed", "ordered"], "reinspected", {"date": date(2026, 3, 4), "fields": {"result": "corrected"}},
     "before the order was served \\(2026-03-05\\)"),
])
def test_a_transition_not_allowed_is_refused_with_the_allowed_states(case_engine, steps, to, kwargs, problem) -> None:
    case_id = add(case_engine, hour(T0))
    at = T0 + timedelta(days=30)
    args = {"verified": {}, "filed": {"fields": {"case_number": "F-1"}}, "ordered": {"date": date(2026, 3, 5)}}
    for step in steps:
        move(case_engine, case_id, step, at, **args[step])
    before = case(case_engine, case_id, now=at)
    with pytest.raises(TransitionRefused, match=problem) as refused:
        move(case_engine, case_id, to, at, **kwargs)
    assert refused.value.from_state == before["status"] and refused.value.to_state == to
    assert refused.value.allowed == before["allowed_next"]
    assert "may go to" in str(refused.value)
    assert case(case_engine, case_id, now=at) == before


def test_dismissed_and_closed_cases_are_ended_and_a_new_hour_opens_a_new_case(case_engine) -> None:
    case_id = add(case_engine, hour(T0))
    c = move(case_engine, case_id, "dismissed", T0 + timedelta(hours=3), fields={"reason": "CEMS 故障，数据无效"})
    assert (c["status"], c["outcome"], c["allowed_next"]) == ("dismissed", "CEMS 故障，数据无效", [])
    with pytest.raises(TransitionRefused, match="none \\(the case is ended\\)"):
        move(case_engine, case_id, "verified", T0 + timedelta(hours=4))
    assert add(case_engine, hour(T0 + timedelta(hours=6))) != case_id
    # an hour already on the dismissed case stays there
    assert add(case_engine, hour(T0)) == case_id


def test_a_case_number_is_used_once(case_engine) -> None:
    a = add(case_engine, hour(T0))
    b = add(case_engine, hour(T0, pollutant="nox"))
    at = T0 + timedelta(days=1)
    for case_id in (a, b):
        move(case_engine, case_id, "verified", at)
    move(case_engine, a, "filed", at, fields={"case_number": "天环立〔2026〕1号"})
    with pytest.raises(TransitionRefused, match=f"already used by case {a}"):
        move(case_engine, b, "filed", at, fields={"case_number": "天环立〔2026〕1号"})


# --- deadlines -------------------------------------------------------------------------


def test_deadlines_fall_due_and_are_met(case_engine) -> None:
    opened = T0 + timedelta(minutes=2)
    case_id = add(case_engine, hour(T0), at=opened)
    with case_engine.connect() as conn:
        assert store.overdue(conn, opened + timedelta(hours=47)) == []
        late = store.overdue(conn, opened + timedelta(hours=48))
    assert [(d.case_id, d.kind, d.due, d.outlet, d.pollutant) for d in late] == [
        (case_id, "enterprise_report", opened + timedelta(hours=48), "TS-GAS-01", "so2")]
    with case_engine.begin() as conn:
        store.record_enterprise_report(conn, case_id, opened + timedelta(hours=50), "张检查",
                                       at=opened + timedelta(hours=51), refs=["企业报告 2026-03-03"])
    served = date(2026, 3, 5)
    at = datetime(2026, 3, 5, 8, tzinfo=UTC)
    move(case_engine, case_id, "verified", at)
    move(case_engine, case_id, "filed", at, fields={"case_number": "D-1"})
    move(case_engine, case_id, "ordered", at, date=served)
    due_end = datetime(2026, 4, 4, 16, tzinfo=UTC)  # end of 4 April China time = served + 30 days
    with case_engine.connect() as conn:
        assert store.overdue(conn, due_end - timedelta(seconds=1)) == []
        late = store.overdue(conn, due_end)
        assert [(d.kind, d.due_date) for d in late] == [("reinspection", date(2026, 4, 4))]
        listed = store.list_cases(conn, now=due_end)
    assert listed[0].id == case_id and listed[0].to_json()["overdue"] is True
    c = case(case_engine, case_id, now=due_end)
    assert c["enterprise_reports"][0]["received_at"] == (opened + timedelta(hours=50)).isoformat()


def test_the_reinspection_deadline_follows_the_configured_days(case_engine) -> None:
    case_id = add(case_engine, hour(T0))
    at = T0 + timedelta(days=10)
    move(case_engine, case_id, "verified", at)
    move(case_engine, case_id, "filed", at, fields={"case_number": "D-2"})
    with case_engine.begin() as conn:
        c = store.transition(conn, case_id, "ordered", "张", date=date(2026, 3, 5), at=at,
                             policy=store.CasePolicy(reinspection_days=10)).to_json()
    assert [d["due_date"] for d in c["deadlines"] if d["kind"] == "reinspection"] == ["2026-03-15"]


def test_list_cases_puts_overdue_first_and_filters(case_engine) -> None:
    old = add(case_engine, hour(T0), at=T0)
    new = add(case_engine, hour(T0 + timedelta(hours=60), pollutant="nox"), at=T0 + timedelta(hours=60))
    with case_engine.begin() as conn:
        store.record_enterprise_report(conn, new, T0 + timedelta(hours=61), "李", at=T0 + timedelta(hours=61))
    with case_engine.connect() as conn:
        now = T0 + timedelta(hours=62)
        assert [v.id for v in store.list_cases(conn, now=now)] == [old, new]  # old is overdue (no report)
        assert [v.id for v in store.list_cases(conn, pollutant="nox", now=now)] == [new]
        assert [v.id for v in store.list_cases(conn, status="verified", now=now)] == []
        with pytest.raises(store.CaseError, match="unknown status"):
            store.list_cases(conn, status="bogus")


# --- export ----------------------------------------------------------------------------


def test_export_carries_the_evidence_as_json_and_csv(case_engine) -> None:
    case_id = add(case_engine, hour(T0), hour(T0 + timedelta(hours=1), 75.0))
    with case_engine.connect() as conn:
        as_json = json.loads(store.export_case(conn, case_id, "json"))
        rows = list(csv.DictReader(io.StringIO(store.export_case(conn, case_id, "csv"))))
    assert as_json["exceeded_hours"] == 2 and len(as_json["hours"][0]["minutes"]) == 60
    assert [(r["hour_end"], float(r["avg_o2corr"]), r["verdict"]) for r in rows] == [
        (T0.isoformat(), 62.5, "exceeded"), ((T0 + timedelta(hours=1)).isoformat(), 75.0, "exceeded")]
    assert len(json.loads(rows[0]["minutes"])) == 60
    assert rows[0]["permit"] == "91620503MA002XXXXX001P"


def test_a_time_without_timezone_is_refused(case_engine) -> None:
    with pytest.raises(ValueError, match="naive"):
        with case_engine.begin() as conn:
            store.record_exceeded_hour(conn, hour(T0.replace(tzinfo=None)), T0)
    with case_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(case_hours)).scalar() == 0


def test_a_case_cites_the_law_in_force_on_the_day_of_its_first_exceeded_hour(case_engine) -> None:
    before = add(case_engine, hour(datetime(2026, 8, 14, 15, tzinfo=UTC)))  # 23:00 on 14 August, China time
    after = add(case_engine, hour(datetime(2026, 8, 14, 17, tzinfo=UTC), pollutant="nox"))  # 01:00 on the 15th
    cited = {c: {x["topic"]: x for x in case(case_engine, c)["citations"]} for c in (before, after)}
    assert cited[before]["daily_penalty"]["article"] == "第五十九条"
    assert cited[after]["daily_penalty"]["law"] == "生态环境法典"
    assert cited[after]["daily_penalty"]["confidence"] == "medium"


def test_measures_are_recorded_on_running_cases_only(case_engine) -> None:
    case_id = add(case_engine, hour(T0))
    with case_engine.begin() as conn:
        store.record_measure(conn, case_id, "停产整治", "李", at=T0 + timedelta(days=2), start=date(2026, 3, 3),
                             end=date(2026, 4, 2), doc_number="天环停〔2026〕1号", refs=["决定书"])
    c = case(case_engine, case_id)
    assert [(m["kind"], m["label"], m["end_date"]) for m in c["measures"]] == [("suspension", "停产整治", "2026-04-02")]
    assert c["history"][-1]["action"] == "measure" and c["history"][-1]["refs"] == ["决定书"]
    move(case_engine, case_id, "dismissed", T0 + timedelta(days=3), fields={"reason": "设备故障"})
    with pytest.raises(store.CaseError, match="ended case"):
        with case_engine.begin() as conn:
            store.record_measure(conn, case_id, "限产", "李", at=T0 + timedelta(days=4))


def test_two_writers_opening_the_same_case_at_once_end_with_one_case(case_engine) -> None:
    """Two processes (or a redelivery racing its original) record exceeded hours of the same
    outlet and pollutant in overlapping transactions: the second waits for the first and
    joins its case instead of failing or opening a duplicate."""
    import threading

    first = case_engine.connect()
    tx = first.begin()
    a = store.record_exceeded_hour(first, hour(T0), T0 + timedelta(minutes=1))
    result: dict[str, object] = {}

    def second() -> None:
        try:
            with case_engine.begin() as conn:
                result["id"] = store.record_exceeded_hour(conn, hour(T0 + timedelta(hours=1)),
                                                          T0 + timedelta(hours=1, minutes=1))
        except Exception as e:  # reported below
            result["error"] = e

    t = threading.Thread(target=second)
    t.start()
    if case_engine.dialect.name == "postgresql":  # wait until it is blocked on our uncommitted case
        with case_engine.connect() as watcher:
            deadline = datetime.now(UTC) + timedelta(seconds=20)
            while not watcher.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'")).scalar():
                assert datetime.now(UTC) < deadline, "the second writer never waited for the first"
                watcher.rollback()
    # SQLite: BEGIN IMMEDIATE serialises the two transactions whenever the second one starts,
    # so there is no state to wait for; the outcome must be the same.
    tx.commit()
    first.close()
    t.join(30)
    assert "error" not in result, result.get("error")
    assert result["id"] == a
    assert case(case_engine, a)["exceeded_hours"] == 2
    with case_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(cases)).scalar() == 1


def test_a_refusal_after_a_continuing_reinspection_names_only_the_loop(case_engine) -> None:
    case_id = add(case_engine, hour(T0))
    at = T0 + timedelta(days=30)
    move(case_engine, case_id, "verified", at)
    move(case_engine, case_id, "filed", at, fields={"case_number": "L-1"})
    move(case_engine, case_id, "ordered", at, date=date(2026, 3, 5))
    move(case_engine, case_id, "reinspected", at, date=date(2026, 3, 20), fields={"result": "refused"})
    with pytest.raises(TransitionRefused, match="needs --date") as refused:
        move(case_engine, case_id, "ordered", at)
    assert refused.value.allowed == ["ordered"]
    with pytest.raises(TransitionRefused, match="is before the previous act \\(reinspected on 2026-03-20\\)"):
        move(case_engine, case_id, "ordered", at, date=date(2026, 3, 19))


def test_hours_the_engine_did_not_judge_within_the_episode_are_shown_with_their_reason(case_engine) -> None:
    case_id = add(case_engine, hour(T0), hour(T0 + timedelta(hours=3)))
    with case_engine.begin() as conn:  # what the alert engine keeps for its stack_exceedance alert
        conn.execute(sa.insert(metadata.tables["alerts"]).values(
            fingerprint="fp1", rule="stack_exceedance", alertname="StackExceedance", labels={}, annotations={},
            state="firing", case_id=case_id, updated_at=T0))
        conn.execute(sa.insert(metadata.tables["alert_hours"]), [
            {"fingerprint": "fp1", "hour_end": T0 - timedelta(hours=1), "verdict": "not_judged", "reason": "stopped"},
            {"fingerprint": "fp1", "hour_end": T0, "verdict": "exceeded", "reason": None},
            {"fingerprint": "fp1", "hour_end": T0 + timedelta(hours=1), "verdict": "not_judged", "reason": "flag F"},
            {"fingerprint": "fp1", "hour_end": T0 + timedelta(hours=2), "verdict": "not_judged",
             "reason": "valid_minutes 30 < 45"},
            {"fingerprint": "fp1", "hour_end": T0 + timedelta(hours=3), "verdict": "exceeded", "reason": None},
            {"fingerprint": "fp1", "hour_end": T0 + timedelta(hours=4), "verdict": "compliant", "reason": None},
        ])
    c = case(case_engine, case_id)
    assert c["not_judged_hours"] == [
        {"hour_end": (T0 + timedelta(hours=1)).isoformat(), "reason": "flag F"},
        {"hour_end": (T0 + timedelta(hours=2)).isoformat(), "reason": "valid_minutes 30 < 45"}]
    assert c["exceeded_hours"] == 2


def test_a_mark_entered_after_a_case_ended_does_not_rewrite_its_evidence(case_engine) -> None:
    case_id = add(case_engine, hour(T0))
    move(case_engine, case_id, "dismissed", T0 + timedelta(days=1), fields={"reason": "企业已整改"})
    before = case(case_engine, case_id)
    with case_engine.begin() as conn:
        m = marks.add_mark(conn, outlet="TS-GAS-01", pollutant=None, type="故障", start=T0 - timedelta(hours=1),
                           end=T0, reason="补录故障标记", by="企业", at=T0 + timedelta(days=2))
    after = case(case_engine, case_id)
    assert (after["hours"], after["exceeded_hours"], after["history"]) == (
        before["hours"], before["exceeded_hours"], before["history"])
    assert [mk["id"] for mk in after["marks"]] == [m.id]  # shown, so an inspector sees it came late
    with case_engine.connect() as conn:
        assert marks.mark_history(conn, m.id)[0]["data"]["hours"] == []
