"""The case store: the functions the alert engine, the web app and the CLI call. None of
them holds case logic of its own.

Every function takes a SQLAlchemy `Connection` inside a transaction the caller owns
(`with engine.begin() as conn:`), so one MQTT message, or one inspector's action, is one
transaction. Times are timezone-aware UTC; "days" are China dates (UTC+8).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

from sqlalchemy import Connection, func, select

from alerts.cases import citations
from alerts.cases import penalty as penalties_mod
from alerts.cases import workflow
from alerts.cases.audit import record_case_event
from alerts.cases.errors import CaseError, CaseNotFound, TransitionRefused
from alerts.cases.marks import MARK_TYPES, Mark, exempting_mark, hour_exemption, list_marks
from alerts.cases.schema import (TERMINAL_STATES, case_events, case_hours, cases, deadlines, enterprise_reports,
                                 measures, penalties)
from alerts.cases.timeutil import china_date, end_of_china_day, hour_china_date, require_aware

__all__ = ["StackHour", "CasePolicy", "CaseView", "Deadline", "record_exceeded_hour", "record_compliant_hour",
           "exempting_mark", "transition", "get_case", "list_cases", "overdue", "export_case",
           "record_enterprise_report", "CaseError", "CaseNotFound", "TransitionRefused", "DEFAULT_URL_TEMPLATE"]

DEFAULT_URL_TEMPLATE = "http://127.0.0.1:9120/cases/{case_id}"
CASE_KIND = "stack_exceedance"
ENGINE_ACTOR = "aqpipe-alerts"
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class StackHour:
    """One judged hour of one outlet and pollutant, as the engine hands it to the store."""

    outlet: str
    enterprise: str
    permit: str | None
    pollutant: str
    limit: float
    limit_source: str
    reference_o2: float
    hour_end: datetime
    avg: float | None
    avg_o2corr: float | None
    o2: float | None
    valid_minutes: int
    exceeded: bool
    minutes: list[dict] = field(default_factory=list)  # [{"time", "value", "o2", "flag"}, ...]


@dataclass(frozen=True)
class CasePolicy:
    """The deadlines a case runs on (`[cases]` in aqpipe.toml)."""

    reinspection_days: int = 30  # MEP Order No. 28: re-inspect within 30 days of serving the order
    enterprise_report_hours: float = 48.0  # the enterprise's exceedance report (Jiangsu: 48 h; key polluters 4 h)

    @classmethod
    def from_config(cls, cases_cfg: Any) -> "CasePolicy":
        return cls(reinspection_days=int(getattr(cases_cfg, "reinspection_days", cls.reinspection_days)),
                   enterprise_report_hours=float(getattr(cases_cfg, "enterprise_report_hours",
                                                         cls.enterprise_report_hours)))


@dataclass(frozen=True)
class Deadline:
    id: int
    case_id: int
    kind: str  # 'reinspection' | 'enterprise_report'
    due: datetime  # overdue from this instant
    due_date: date | None
    outlet: str
    pollutant: str
    enterprise: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "case_id": self.case_id, "kind": self.kind, "due": self.due.isoformat(),
                "due_date": self.due_date.isoformat() if self.due_date else None, "outlet": self.outlet,
                "pollutant": self.pollutant, "enterprise": self.enterprise}


@dataclass(frozen=True)
class CaseView:
    """A case as callers see it; `to_json()` is the contract of `aqpipe cases list --json`."""

    id: int
    kind: str
    outlet: str
    enterprise: str
    permit: str | None
    pollutant: str
    limit: float
    limit_source: str
    reference_o2: float
    status: str
    case_number: str | None
    outcome: str | None
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    url: str
    hours: list[dict[str, Any]]
    history: list[dict[str, Any]]
    marks: list[Mark]
    deadlines: list[dict[str, Any]]
    penalties: list[dict[str, Any]]
    measures: list[dict[str, Any]]
    enterprise_reports: list[dict[str, Any]]
    allowed_next: list[str]

    @property
    def counted_hours(self) -> list[dict[str, Any]]:
        """The hours that count as exceeded: judged exceeded, not withdrawn, not marked."""
        return [h for h in self.hours if h["exceeded"]]

    @property
    def overdue(self) -> bool:
        return any(d["overdue"] for d in self.deadlines)

    def to_json(self, minutes: bool = False) -> dict[str, Any]:
        counted = self.counted_hours
        hours = self.hours if minutes else [{k: v for k, v in h.items() if k != "minutes"} for h in self.hours]
        return {
            "id": self.id, "kind": self.kind, "outlet": self.outlet, "enterprise": self.enterprise,
            "permit": self.permit, "pollutant": self.pollutant, "limit": self.limit,
            "limit_source": self.limit_source, "reference_o2": self.reference_o2, "status": self.status,
            "status_label": workflow.STATES[self.status].label, "case_number": self.case_number,
            "outcome": self.outcome, "opened_at": self.opened_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
            "first_exceeded_hour": counted[0]["hour_end"] if counted else None,
            "last_exceeded_hour": counted[-1]["hour_end"] if counted else None,
            "exceeded_hours": len(counted),
            "days_with_exceedance": len({h["china_date"] for h in counted}),
            "marked_hours": sum(1 for h in self.hours if h["verdict"] == "marked"),
            "hours": hours, "url": self.url, "allowed_next": self.allowed_next, "overdue": self.overdue,
            "history": self.history, "marks": [m.to_json() for m in self.marks], "deadlines": self.deadlines,
            "penalties": self.penalties, "measures": self.measures, "enterprise_reports": self.enterprise_reports,
        }


# --- the engine's side: hours -------------------------------------------------------


def record_exceeded_hour(conn: Connection, hour: StackHour, at: datetime, policy: CasePolicy | None = None) -> int:
    """Open a case for the hour's outlet and pollutant, or join the open one, and upsert the
    hour by hour_end (a redelivered hour changes nothing). Returns the case id.

    An hour already on a case stays on that case (a revised average is audited there). An
    hour an exempting mark covers is recorded as marked and not counted."""
    at = require_aware(at, "at")
    hour_end = require_aware(hour.hour_end, "hour_end")
    if not hour.exceeded:
        raise ValueError(f"record_exceeded_hour got a compliant hour ({hour.outlet} {hour.pollutant} "
                         f"{hour_end.isoformat()}): call record_compliant_hour")
    existing = _find_hour(conn, hour.outlet, hour.pollutant, hour_end)
    if existing is not None:
        _revise_hour(conn, existing, hour, at, exceeded=True)
        return int(existing.case_id)
    case_id = _open_case_id(conn, hour.outlet, hour.pollutant)
    if case_id is None:
        case_id = _open_case(conn, hour, at, policy or CasePolicy())
    mark = hour_exemption(conn, hour.outlet, hour.pollutant, hour_end)
    conn.execute(case_hours.insert().values(
        case_id=case_id, hour_end=hour_end, avg=hour.avg, avg_o2corr=hour.avg_o2corr, o2=hour.o2,
        valid_minutes=hour.valid_minutes, limit_value=hour.limit, exceeded=True, minutes=list(hour.minutes),
        mark_id=mark.id if mark else None, recorded_at=at, updated_at=at))
    record_case_event(conn, case_id, at, ENGINE_ACTOR, "hour_added", data={
        **_hour_summary(hour), "mark_id": mark.id if mark else None})
    conn.execute(cases.update().where(cases.c.id == case_id).values(updated_at=at))
    return case_id


def record_compliant_hour(conn: Connection, hour: StackHour, at: datetime) -> int | None:
    """An hour recomputed as compliant leaves its case's evidence: the row is kept, flagged
    withdrawn, with the recomputed values, and the previous ones go into the audit entry.
    Returns the case touched, or None (no case had the hour, or it was already withdrawn)."""
    at = require_aware(at, "at")
    existing = _find_hour(conn, hour.outlet, hour.pollutant, require_aware(hour.hour_end, "hour_end"))
    if existing is None or existing.withdrawn_at is not None:
        return None
    _revise_hour(conn, existing, hour, at, exceeded=False)
    return int(existing.case_id)


def _find_hour(conn: Connection, outlet: str, pollutant: str, hour_end: datetime) -> Any:
    return conn.execute(select(case_hours).join(cases, cases.c.id == case_hours.c.case_id).where(
        cases.c.outlet == outlet, cases.c.pollutant == pollutant, case_hours.c.hour_end == hour_end)
        .order_by(case_hours.c.id.desc()).limit(1)).first()


def _open_case_id(conn: Connection, outlet: str, pollutant: str) -> int | None:
    row = conn.execute(select(cases.c.id).where(cases.c.outlet == outlet, cases.c.pollutant == pollutant,
                                                cases.c.status.not_in(TERMINAL_STATES))
                       .with_for_update()).first()
    return int(row.id) if row else None


def _open_case(conn: Connection, hour: StackHour, at: datetime, policy: CasePolicy) -> int:
    case_id = int(conn.execute(cases.insert().values(
        kind=CASE_KIND, outlet=hour.outlet, enterprise=hour.enterprise, permit=hour.permit or None,
        pollutant=hour.pollutant, limit_value=hour.limit, limit_source=hour.limit_source,
        reference_o2=hour.reference_o2, status=workflow.INITIAL_STATE, opened_at=at, updated_at=at,
    )).inserted_primary_key[0])
    record_case_event(conn, case_id, at, ENGINE_ACTOR, "opened", to_state=workflow.INITIAL_STATE,
                      data={"outlet": hour.outlet, "pollutant": hour.pollutant, "limit": hour.limit,
                            "limit_source": hour.limit_source})
    due = at + timedelta(hours=policy.enterprise_report_hours)
    conn.execute(enterprise_reports.insert().values(case_id=case_id, due_at=due, refs=[], created_at=at))
    conn.execute(deadlines.insert().values(case_id=case_id, kind="enterprise_report", due_at=due, created_at=at))
    return case_id


def _hour_summary(hour: StackHour) -> dict[str, Any]:
    return {"hour_end": require_aware(hour.hour_end, "hour_end").isoformat(), "avg": hour.avg,
            "avg_o2corr": hour.avg_o2corr, "o2": hour.o2, "valid_minutes": hour.valid_minutes, "limit": hour.limit,
            "exceeded": hour.exceeded}


def _revise_hour(conn: Connection, row: Any, hour: StackHour, at: datetime, exceeded: bool) -> None:
    """Bring a stored hour to the engine's latest judgement; audit only a real change."""
    new = {"avg": hour.avg, "avg_o2corr": hour.avg_o2corr, "o2": hour.o2, "valid_minutes": hour.valid_minutes,
           "limit_value": hour.limit, "minutes": list(hour.minutes)}
    old = {k: getattr(row, k) for k in new}
    was_withdrawn = row.withdrawn_at is not None
    if old == new and row.exceeded == exceeded and was_withdrawn == (not exceeded):
        return
    values = {**new, "exceeded": exceeded, "updated_at": at, "withdrawn_at": None if exceeded else at}
    conn.execute(case_hours.update().where(case_hours.c.id == row.id).values(**values))
    if not exceeded:
        action, note = "hour_withdrawn", "recomputed as compliant: the hour leaves the evidence"
    elif was_withdrawn:
        action, note = "hour_reinstated", "recomputed as exceeded again"
    else:
        action, note = "hour_revised", "recomputed (late data): still exceeded"
    record_case_event(conn, row.case_id, at, ENGINE_ACTOR, action, note=note,
                      data={"new": _hour_summary(hour), "previous": {**old, "exceeded": row.exceeded}})
    conn.execute(cases.update().where(cases.c.id == row.case_id).values(updated_at=at))


# --- the inspectors' side: the workflow ----------------------------------------------


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
    last_result = _last_reinspection_result(conn, case_id)
    t = workflow.find_transition(case_id, state, to_state, last_result)
    if not by or not by.strip():
        raise TransitionRefused(case_id, state, to_state, workflow.allowed_next(state, last_result),
                                "a transition needs who made it (by)")
    values = workflow.check_fields(case_id, t, fields, date, china_date(at))
    when = date if date is not None else (china_date(at) if t.date else None)
    if "reinspect" in t.effects:  # the re-inspection cannot precede the order it checks
        served = _current_order_date(conn, case_id)
        if served is not None and when < served:
            raise TransitionRefused(case_id, state, to_state, workflow.allowed_next(state, last_result),
                                    f"the re-inspection day {when} is before the order was served ({served})")
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
    for effect in t.effects:
        _EFFECTS[effect](conn, case_id, event_id, when, values, by.strip(), at, policy)
    return get_case(conn, case_id, url_template)


def _last_reinspection_result(conn: Connection, case_id: int) -> str | None:
    row = conn.execute(select(case_events.c.data).where(
        case_events.c.case_id == case_id, case_events.c.action == "transition",
        case_events.c.to_state == "reinspected").order_by(case_events.c.id.desc()).limit(1)).first()
    return row.data.get("result") if row else None


def _current_order_date(conn: Connection, case_id: int) -> date | None:
    row = conn.execute(select(case_events.c.event_date).where(
        case_events.c.case_id == case_id, case_events.c.action == "transition",
        case_events.c.to_state == "ordered").order_by(case_events.c.id.desc()).limit(1)).first()
    return row.event_date if row else None


def _effect_file(conn, case_id, event_id, when, values, by, at, policy) -> None:
    conn.execute(cases.update().where(cases.c.id == case_id).values(case_number=values["case_number"]))


def _effect_order(conn, case_id, event_id, when, values, by, at, policy) -> None:
    """责令改正: the order as a measure, and the re-inspection deadline (served + N days)."""
    conn.execute(measures.insert().values(
        case_id=case_id, event_id=event_id, kind="order_to_correct", start_date=when,
        doc_number=values.get("doc_number"), created_at=at, created_by=by,
        description=f"re-inspection due within {policy.reinspection_days} days"))
    if values.get("fine") is not None:  # the original fine (原处罚): the daily penalty's amount per day
        conn.execute(measures.insert().values(case_id=case_id, event_id=event_id, kind="fine", start_date=when,
                                              doc_number=values.get("doc_number"), amount=values["fine"],
                                              created_at=at, created_by=by))
    due_date = when + timedelta(days=policy.reinspection_days)
    conn.execute(deadlines.insert().values(case_id=case_id, kind="reinspection", due_at=end_of_china_day(due_date),
                                           due_date=due_date, created_at=at))


def _effect_reinspect(conn, case_id, event_id, when, values, by, at, policy) -> None:
    """复查: meets the re-inspection deadline; a continuing violation computes the daily penalty."""
    _meet_deadlines(conn, case_id, "reinspection", at)
    continuing = workflow.REINSPECTION_RESULTS[values["result"]]
    if not continuing:
        return
    served = _current_order_date(conn, case_id)
    fine = conn.execute(select(measures.c.amount).where(
        measures.c.case_id == case_id, measures.c.kind == "fine", measures.c.amount.is_not(None))
        .order_by(measures.c.id.desc()).limit(1)).first()
    p = penalties_mod.daily_penalty(served, when, continuing=True,
                                    discharge_stopped=bool(values.get("discharge_stopped", False)),
                                    daily_amount=fine.amount if fine else None)
    conn.execute(penalties.insert().values(
        case_id=case_id, event_id=event_id, kind="daily_continuous", served_date=p.served,
        reinspected_date=p.reinspected, days=p.days, discharge_stopped=p.discharge_stopped,
        daily_amount=p.daily_amount, total_amount=p.total_amount, citation=_citation_for(conn, case_id, "daily_penalty"),
        computed_at=at))


def _effect_measures(conn, case_id, event_id, when, values, by, at, policy) -> None:
    for m in values.get("measures", []):
        conn.execute(measures.insert().values(
            case_id=case_id, event_id=event_id, kind=m["kind"], start_date=m["start"], end_date=m["end"],
            doc_number=m["doc_number"], description=m["description"], amount=m["amount"], created_at=at,
            created_by=by))
    if values.get("fine") is not None:
        conn.execute(measures.insert().values(case_id=case_id, event_id=event_id, kind="fine", start_date=when,
                                              amount=values["fine"], created_at=at, created_by=by))


def _effect_end(conn, case_id, event_id, when, values, by, at, policy) -> None:
    """结案 / 不予立案: the case ends; deadlines still open are cancelled, not left overdue."""
    conn.execute(cases.update().where(cases.c.id == case_id).values(
        closed_at=at, outcome=values.get("outcome") or values.get("reason")))
    conn.execute(deadlines.update().where(deadlines.c.case_id == case_id, deadlines.c.met_at.is_(None),
                                          deadlines.c.cancelled_at.is_(None)).values(cancelled_at=at))


_EFFECTS = {"file": _effect_file, "order": _effect_order, "reinspect": _effect_reinspect,
            "measures": _effect_measures, "end": _effect_end}
missing_effects = {e for t in workflow.TRANSITIONS for e in t.effects} - set(_EFFECTS)
assert not missing_effects, f"workflow effects without an implementation: {missing_effects}"


def _meet_deadlines(conn: Connection, case_id: int, kind: str, at: datetime) -> None:
    conn.execute(deadlines.update().where(deadlines.c.case_id == case_id, deadlines.c.kind == kind,
                                          deadlines.c.met_at.is_(None), deadlines.c.cancelled_at.is_(None))
                 .values(met_at=at))


def _citation_for(conn: Connection, case_id: int, topic: str) -> dict[str, Any] | None:
    """The legal citation for `topic`, chosen by the date of the violation (the first exceeded hour)."""
    first = conn.execute(select(func.min(case_hours.c.hour_end)).where(case_hours.c.case_id == case_id)).scalar()
    if first is None:
        return None
    found = citations.cite(topic, hour_china_date(first))
    return found.to_json() if found else None


def record_enterprise_report(conn: Connection, case_id: int, received: datetime, by: str, *, at: datetime,
                             note: str = "", refs: list[str] | None = None) -> None:
    """The enterprise's own exceedance report arrived: record it and meet its deadline."""
    at, received = require_aware(at, "at"), require_aware(received, "received")
    row = conn.execute(select(cases.c.id).where(cases.c.id == case_id)).first()
    if row is None:
        raise CaseNotFound(case_id)
    report = conn.execute(select(enterprise_reports).where(enterprise_reports.c.case_id == case_id)
                          .order_by(enterprise_reports.c.id.desc()).limit(1)).first()
    if report is not None and report.received_at is not None:
        raise CaseError(f"case {case_id}: the enterprise report was already recorded as received "
                        f"{report.received_at.isoformat()} by {report.received_by}")
    if report is None:
        conn.execute(enterprise_reports.insert().values(case_id=case_id, due_at=received, received_at=received,
                                                        received_by=by, note=note, refs=list(refs or []),
                                                        created_at=at))
    else:
        conn.execute(enterprise_reports.update().where(enterprise_reports.c.id == report.id).values(
            received_at=received, received_by=by, note=note, refs=list(refs or [])))
    _meet_deadlines(conn, case_id, "enterprise_report", at)
    record_case_event(conn, case_id, at, by, "enterprise_report_received", note=note, refs=refs,
                      data={"received": received.isoformat()})


# --- reading ---------------------------------------------------------------------------


def get_case(conn: Connection, case_id: int, url_template: str = DEFAULT_URL_TEMPLATE,
             now: datetime | None = None) -> CaseView:
    row = conn.execute(select(cases).where(cases.c.id == case_id)).first()
    if row is None:
        raise CaseNotFound(case_id)
    return _view(conn, row, url_template, now or datetime.now(timezone.utc))


def list_cases(conn: Connection, url_template: str = DEFAULT_URL_TEMPLATE, status: str | None = None,
               enterprise: str | None = None, outlet: str | None = None, pollutant: str | None = None,
               now: datetime | None = None) -> list[CaseView]:
    """Cases matching the filters: those with an overdue deadline first, then newest first."""
    if status is not None and status not in workflow.STATES:
        raise CaseError(f"unknown status {status!r}; one of: {', '.join(workflow.STATES)}")
    q = select(cases).order_by(cases.c.opened_at.desc(), cases.c.id.desc())
    for col, value in ((cases.c.status, status), (cases.c.enterprise, enterprise), (cases.c.outlet, outlet),
                       (cases.c.pollutant, pollutant)):
        if value is not None:
            q = q.where(col == value)
    now = now or datetime.now(timezone.utc)
    views = [_view(conn, r, url_template, now) for r in conn.execute(q).all()]
    return sorted(views, key=lambda v: not v.overdue)  # stable: keeps newest-first within each group


def overdue(conn: Connection, now: datetime) -> list[Deadline]:
    """Deadlines of open cases that are past due and neither met nor cancelled."""
    now = require_aware(now, "now")
    q = (select(deadlines, cases.c.outlet, cases.c.pollutant, cases.c.enterprise)
         .join(cases, cases.c.id == deadlines.c.case_id)
         .where(deadlines.c.met_at.is_(None), deadlines.c.cancelled_at.is_(None), deadlines.c.due_at <= now,
                cases.c.status.not_in(TERMINAL_STATES))
         .order_by(deadlines.c.due_at, deadlines.c.id))
    return [Deadline(r.id, r.case_id, r.kind, r.due_at, r.due_date, r.outlet, r.pollutant, r.enterprise)
            for r in conn.execute(q)]


def _view(conn: Connection, row: Any, url_template: str, now: datetime) -> CaseView:
    cid = row.id
    mark_types = {}
    hours = []
    hour_rows = conn.execute(select(case_hours).where(case_hours.c.case_id == cid)
                             .order_by(case_hours.c.hour_end)).all()
    for h in hour_rows:
        if h.withdrawn_at is not None:
            verdict = "withdrawn"
        elif h.mark_id is not None:
            verdict = "marked"
        else:
            verdict = "exceeded"
        hours.append({
            "hour_end": h.hour_end.isoformat(), "china_date": hour_china_date(h.hour_end).isoformat(),
            "avg": h.avg, "avg_o2corr": h.avg_o2corr, "o2": h.o2, "valid_minutes": h.valid_minutes,
            "limit": h.limit_value, "exceeded": verdict == "exceeded", "verdict": verdict, "mark_id": h.mark_id,
            "withdrawn_at": h.withdrawn_at.isoformat() if h.withdrawn_at else None,
            "recorded_at": h.recorded_at.isoformat(), "minutes": h.minutes,
        })
    shown_marks: list[Mark] = []
    if hour_rows:
        shown_marks = list_marks(conn, outlet=row.outlet, pollutant=row.pollutant,
                                 start=hour_rows[0].hour_end - HOUR, end=hour_rows[-1].hour_end, include_removed=True)
        mark_types = {m.id: m.type for m in shown_marks}
    for h in hours:
        t = mark_types.get(h["mark_id"])
        h["mark_type"] = t
        h["mark_label"] = MARK_TYPES[t].label if t in MARK_TYPES else None
    history = [{"id": e.id, "at": e.at.isoformat(), "by": e.by, "action": e.action, "from_state": e.from_state,
                "to_state": e.to_state, "date": e.event_date.isoformat() if e.event_date else None, "note": e.note,
                "refs": e.refs, "data": e.data}
               for e in conn.execute(select(case_events).where(case_events.c.case_id == cid)
                                     .order_by(case_events.c.id))]
    terminal = row.status in TERMINAL_STATES
    dls = [{"id": d.id, "kind": d.kind, "due": d.due_at.isoformat(),
            "due_date": d.due_date.isoformat() if d.due_date else None,
            "met_at": d.met_at.isoformat() if d.met_at else None,
            "cancelled_at": d.cancelled_at.isoformat() if d.cancelled_at else None,
            "overdue": (not terminal and d.met_at is None and d.cancelled_at is None and d.due_at <= now)}
           for d in conn.execute(select(deadlines).where(deadlines.c.case_id == cid).order_by(deadlines.c.id))]
    pens = [{"id": p.id, "kind": p.kind, "served_date": p.served_date.isoformat(),
             "reinspected_date": p.reinspected_date.isoformat(), "days": p.days,
             "discharge_stopped": p.discharge_stopped, "daily_amount": p.daily_amount,
             "total_amount": p.total_amount, "citation": p.citation, "event_id": p.event_id}
            for p in conn.execute(select(penalties).where(penalties.c.case_id == cid).order_by(penalties.c.id))]
    meas = [{"id": m.id, "kind": m.kind, "label": workflow.MEASURE_KINDS.get(m.kind, m.kind),
             "start_date": m.start_date.isoformat() if m.start_date else None,
             "end_date": m.end_date.isoformat() if m.end_date else None, "doc_number": m.doc_number,
             "description": m.description, "amount": m.amount, "created_by": m.created_by,
             "created_at": m.created_at.isoformat(), "event_id": m.event_id}
            for m in conn.execute(select(measures).where(measures.c.case_id == cid).order_by(measures.c.id))]
    reports = [{"id": r.id, "due": r.due_at.isoformat(),
                "received_at": r.received_at.isoformat() if r.received_at else None,
                "received_by": r.received_by, "note": r.note, "refs": r.refs}
               for r in conn.execute(select(enterprise_reports).where(enterprise_reports.c.case_id == cid)
                                     .order_by(enterprise_reports.c.id))]
    return CaseView(
        id=cid, kind=row.kind, outlet=row.outlet, enterprise=row.enterprise, permit=row.permit,
        pollutant=row.pollutant, limit=row.limit_value, limit_source=row.limit_source,
        reference_o2=row.reference_o2, status=row.status, case_number=row.case_number, outcome=row.outcome,
        opened_at=row.opened_at, updated_at=row.updated_at, closed_at=row.closed_at,
        url=url_template.format(case_id=cid), hours=hours, history=history, marks=shown_marks, deadlines=dls,
        penalties=pens, measures=meas, enterprise_reports=reports,
        allowed_next=workflow.allowed_next(row.status, _last_reinspection_result(conn, cid)))


# --- export ----------------------------------------------------------------------------

CSV_COLUMNS = ["case_id", "kind", "status", "enterprise", "permit", "outlet", "pollutant", "limit", "limit_source",
               "reference_o2", "hour_end", "china_date", "avg", "avg_o2corr", "o2", "valid_minutes", "verdict",
               "exceeded", "mark_id", "mark_type", "minutes"]


def export_case(conn: Connection, case_id: int, fmt: Literal["json", "csv"],
                url_template: str = DEFAULT_URL_TEMPLATE) -> str:
    """The whole case as evidence: JSON (everything, minute data included), or CSV (one row
    per hour, its minute data as a JSON array in the last column)."""
    view = get_case(conn, case_id, url_template)
    if fmt == "json":
        return json.dumps(view.to_json(minutes=True), ensure_ascii=False, indent=2) + "\n"
    if fmt != "csv":
        raise CaseError(f"unknown export format {fmt!r}: json or csv")
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for h in view.hours:
        w.writerow([view.id, view.kind, view.status, view.enterprise, view.permit or "", view.outlet, view.pollutant,
                    view.limit, view.limit_source, view.reference_o2, h["hour_end"], h["china_date"],
                    _num(h["avg"]), _num(h["avg_o2corr"]), _num(h["o2"]), h["valid_minutes"], h["verdict"],
                    "true" if h["exceeded"] else "false", h["mark_id"] or "", h["mark_type"] or "",
                    json.dumps(h["minutes"], ensure_ascii=False)])
    return out.getvalue()


def _num(x: float | None) -> str:
    return "" if x is None else repr(float(x))
