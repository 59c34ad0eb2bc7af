"""The case store: the functions the alert engine, the web app and the CLI call. None of
them holds case logic of its own.

Every function takes a SQLAlchemy `Connection` inside a transaction the caller owns
(`with engine.begin() as conn:`), so one MQTT message, or one inspector's action, is one
transaction. Times are timezone-aware UTC; "days" are China dates (UTC+8).

This module moves cases along the workflow (`transition`, applying the effects the
transition table names) and records measures; it re-exports the rest of the API from the
modules that own it: `evidence` (hours), `deadlines`, `views` (reading, export), `marks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from alerts.cases import citations
from alerts.cases import penalty as penalties_mod
from alerts.cases import workflow
from alerts.cases.audit import record_case_event
from alerts.cases.deadlines import (CasePolicy, Deadline, add_reinspection, cancel_deadlines, meet_deadlines, overdue,
                                    record_enterprise_report)
from alerts.cases.errors import CaseError, CaseNotFound, TransitionRefused
from alerts.cases.evidence import StackHour, record_compliant_hour, record_exceeded_hour
from alerts.cases.marks import exempting_mark
from alerts.cases.schema import TERMINAL_STATES, case_events, case_hours, cases, measures, penalties
from alerts.cases.timeutil import china_date, hour_china_date, require_aware
from alerts.cases.views import (DEFAULT_URL_TEMPLATE, CaseView, export_case, get_case, last_reinspection_result,
                                list_cases)

__all__ = ["StackHour", "CasePolicy", "CaseView", "Deadline", "record_exceeded_hour", "record_compliant_hour",
           "exempting_mark", "transition", "get_case", "list_cases", "overdue", "export_case",
           "record_enterprise_report", "record_measure", "CaseError", "CaseNotFound", "TransitionRefused",
           "DEFAULT_URL_TEMPLATE"]


def transition(conn: Connection, case_id: int, to_state: str, by: str, note: str = "", date: date | None = None,
               fields: dict[str, Any] | None = None, refs: list[str] | None = None, *, at: datetime,
               policy: CasePolicy | None = None, url_template: str = DEFAULT_URL_TEMPLATE) -> CaseView:
    """Move a case along the workflow (workflow.TRANSITIONS): check, record who/when/note/refs,
    apply the transition's effects, all in the caller's transaction.

    Raises TransitionRefused (from, to, the allowed next states, the problem) or CaseNotFound."""
    at = require_aware(at, "at")
    policy = policy or CasePolicy()
    row = conn.execute(select(cases).where(cases.c.id == case_id).with_for_update()).first()
    if row is None:
        raise CaseNotFound(case_id)
    state = row.status
    last_result = last_reinspection_result(conn, case_id)
    t = workflow.find_transition(case_id, state, to_state, last_result)
    if not by or not by.strip():
        raise TransitionRefused(case_id, state, to_state, workflow.allowed_next(state, last_result),
                                "a transition needs who made it (by)")
    values = workflow.check_fields(case_id, t, fields, date, china_date(at), last_result)
    when = date if date is not None else (china_date(at) if t.date else None)
    if "reinspect" in t.effects:  # the re-inspection cannot precede the order it checks
        served = _current_order_date(conn, case_id)
        if served is not None and when < served:
            raise TransitionRefused(case_id, state, to_state, workflow.allowed_next(state, last_result),
                                    f"the re-inspection day {when} is before the order was served ({served})")
    # Acts whose date is required (orders, re-inspections: the daily penalty counts on them)
    # must follow one another; optional dates default to today and may be entered late.
    previous = _last_dated_act(conn, case_id) if t.date == "required" else None
    if previous is not None and when < previous[1]:
        raise TransitionRefused(case_id, state, to_state, workflow.allowed_next(state, last_result),
                                f"the {t.date_meaning} {when} is before the previous act "
                                f"({previous[0]} on {previous[1]}): dates follow the workflow")
    if "file" in t.effects:
        taken = conn.execute(select(cases.c.id).where(cases.c.case_number == values["case_number"])).first()
        if taken is not None:
            raise TransitionRefused(case_id, state, to_state, workflow.allowed_next(state, last_result),
                                    f"case number {values['case_number']} is already used by case {taken.id}")

    updated = conn.execute(cases.update().where(cases.c.id == case_id, cases.c.status == state)
                           .values(status=to_state, updated_at=at))
    if updated.rowcount != 1:  # someone else moved it since we read it
        raise TransitionRefused(case_id, state, to_state, [], "the case changed state meanwhile; reload it")
    event_id = record_case_event(conn, case_id, at, by.strip(), "transition", from_state=state, to_state=to_state,
                                 event_date=when, note=note, refs=refs, data=values)
    act = _Act(conn, case_id, event_id, when, values, by.strip(), at, policy)
    for effect in t.effects:
        _EFFECTS[effect](act)
    return get_case(conn, case_id, url_template)


def _last_dated_act(conn: Connection, case_id: int) -> tuple[str, date] | None:
    dated = {t.to_state for t in workflow.TRANSITIONS if t.date == "required"}
    row = conn.execute(select(case_events.c.to_state, case_events.c.event_date).where(
        case_events.c.case_id == case_id, case_events.c.action == "transition", case_events.c.to_state.in_(dated))
        .order_by(case_events.c.id.desc()).limit(1)).first()
    return (row.to_state, row.event_date) if row else None


def _current_order_date(conn: Connection, case_id: int) -> date | None:
    row = conn.execute(select(case_events.c.event_date).where(
        case_events.c.case_id == case_id, case_events.c.action == "transition",
        case_events.c.to_state == "ordered").order_by(case_events.c.id.desc()).limit(1)).first()
    return row.event_date if row else None


@dataclass(frozen=True)
class _Act:
    """One transition being applied: what its effects (workflow.Transition.effects) need."""

    conn: Connection
    case_id: int
    event_id: int  # the transition's audit entry, referenced by the measures and penalties it records
    when: date | None
    values: dict[str, Any]
    by: str
    at: datetime
    policy: CasePolicy


def _effect_file(a: _Act) -> None:
    a.conn.execute(cases.update().where(cases.c.id == a.case_id).values(case_number=a.values["case_number"]))


def _effect_order(a: _Act) -> None:
    """责令改正: the order as a measure, and the re-inspection deadline (served + N days)."""
    a.conn.execute(measures.insert().values(
        case_id=a.case_id, event_id=a.event_id, kind="order_to_correct", start_date=a.when,
        doc_number=a.values.get("doc_number"), created_at=a.at, created_by=a.by,
        description=f"re-inspection due within {a.policy.reinspection_days} days"))
    if a.values.get("fine") is not None:  # the original fine (原处罚): the daily penalty's amount per day
        a.conn.execute(measures.insert().values(
            case_id=a.case_id, event_id=a.event_id, kind="fine", start_date=a.when,
            doc_number=a.values.get("doc_number"), amount=a.values["fine"], created_at=a.at, created_by=a.by))
    add_reinspection(a.conn, a.case_id, a.when, a.at, a.policy)


def _effect_reinspect(a: _Act) -> None:
    """复查: meets the re-inspection deadline; a continuing violation computes the daily penalty."""
    meet_deadlines(a.conn, a.case_id, "reinspection", a.at)
    continuing = workflow.REINSPECTION_RESULTS[a.values["result"]]
    if not continuing:
        return
    served = _current_order_date(a.conn, a.case_id)
    fine = a.conn.execute(select(measures.c.amount).where(
        measures.c.case_id == a.case_id, measures.c.kind == "fine", measures.c.amount.is_not(None))
        .order_by(measures.c.id.desc()).limit(1)).first()
    p = penalties_mod.daily_penalty(served, a.when, continuing=True,
                                    discharge_stopped=bool(a.values.get("discharge_stopped", False)),
                                    daily_amount=fine.amount if fine else None)
    a.conn.execute(penalties.insert().values(
        case_id=a.case_id, event_id=a.event_id, kind="daily_continuous", served_date=p.served,
        reinspected_date=p.reinspected, days=p.days, discharge_stopped=p.discharge_stopped,
        daily_amount=p.daily_amount, total_amount=p.total_amount,
        citation=_citation_for(a.conn, a.case_id, "daily_penalty"), computed_at=a.at))


def _effect_measures(a: _Act) -> None:
    for m in a.values.get("measures", []):
        a.conn.execute(measures.insert().values(
            case_id=a.case_id, event_id=a.event_id, kind=m["kind"], start_date=m["start"], end_date=m["end"],
            doc_number=m["doc_number"], description=m["description"], amount=m["amount"], created_at=a.at,
            created_by=a.by))
    if a.values.get("fine") is not None:
        a.conn.execute(measures.insert().values(
            case_id=a.case_id, event_id=a.event_id, kind="fine", start_date=a.when, amount=a.values["fine"],
            created_at=a.at, created_by=a.by))


def _effect_end(a: _Act) -> None:
    """结案 / 不予立案: the case ends; deadlines still open are cancelled, not left overdue."""
    a.conn.execute(cases.update().where(cases.c.id == a.case_id).values(
        closed_at=a.at, outcome=a.values.get("outcome") or a.values.get("reason")))
    cancel_deadlines(a.conn, a.case_id, a.at)


_EFFECTS: dict[str, Callable[[_Act], None]] = {"file": _effect_file, "order": _effect_order, "reinspect": _effect_reinspect,
            "measures": _effect_measures, "end": _effect_end}
missing_effects = {e for t in workflow.TRANSITIONS for e in t.effects} - set(_EFFECTS)
assert not missing_effects, f"workflow effects without an implementation: {missing_effects}"


def _citation_for(conn: Connection, case_id: int, topic: str) -> dict[str, Any] | None:
    """The legal citation for `topic`, chosen by the date of the violation (the first exceeded hour)."""
    first = conn.execute(select(func.min(case_hours.c.hour_end)).where(
        case_hours.c.case_id == case_id, case_hours.c.withdrawn_at.is_(None), case_hours.c.mark_id.is_(None))).scalar()
    if first is None:
        return None
    found = citations.cite(topic, hour_china_date(first))
    return found.to_json() if found else None


def record_measure(conn: Connection, case_id: int, kind: str, by: str, *, at: datetime, start: date | None = None,
                   end: date | None = None, doc_number: str | None = None, description: str = "",
                   amount: float | None = None, note: str = "", refs: list[str] | None = None) -> int:
    """A measure decided while a case runs (限产, 停产整治, 查封扣押, 挂牌督办...), with its dates;
    audited. Closing can record measures too. Returns the measure's id."""
    at = require_aware(at, "at")
    row = conn.execute(select(cases.c.status).where(cases.c.id == case_id)).first()
    if row is None:
        raise CaseNotFound(case_id)
    if row.status in TERMINAL_STATES:
        raise CaseError(f"case {case_id} is {row.status}: a measure cannot be added to an ended case")
    if not by or not by.strip():
        raise CaseError("a measure needs who recorded it (by)")
    try:
        key = workflow.measure_kind(kind)
    except ValueError as e:
        raise CaseError(str(e)) from None
    if key in workflow.DATED_MEASURES and start is None:
        raise CaseError(f"measure {kind} needs its start date")
    if start and end and end < start:
        raise CaseError(f"measure {kind} ends ({end}) before it starts ({start})")
    event_id = record_case_event(conn, case_id, at, by, "measure", event_date=start, note=note, refs=refs,
                                 data={"kind": key, "start": start, "end": end, "doc_number": doc_number,
                                       "description": description, "amount": amount})
    return int(conn.execute(measures.insert().values(
        case_id=case_id, event_id=event_id, kind=key, start_date=start, end_date=end, doc_number=doc_number,
        description=description or "", amount=amount, created_at=at, created_by=by)).inserted_primary_key[0])
