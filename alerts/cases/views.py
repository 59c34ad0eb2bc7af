"""Reading cases: `CaseView` (its `to_json()` is the contract of `aqpipe cases list --json`
and of the API), `get_case`, `list_cases` and `export_case`.

Counts are derived, never stored: an hour counts as exceeded when it was judged exceeded,
is not withdrawn and no exempting mark covers it; days with exceedance are the distinct
China dates (UTC+8) of the counted hours, an hour belonging to the day it starts in.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

from sqlalchemy import Connection, select

from alerts.cases import citations, workflow
from alerts.cases.errors import CaseError, CaseNotFound
from alerts.cases.marks import HOUR_JUDGEMENTS, MARK_TYPES, Mark, list_marks
from alerts.cases.schema import (TERMINAL_STATES, alert_hours, alerts, case_events, case_hours, cases, deadlines,
                                 enterprise_reports, measures, penalties)
from alerts.cases.timeutil import hour_china_date

DEFAULT_URL_TEMPLATE = "http://127.0.0.1:9120/cases/{case_id}"
HOUR = timedelta(hours=1)
# The legal bases a stack-exceedance case may need, cited by the date of its first exceeded hour.
CASE_CITATION_TOPICS = ("daily_penalty", "daily_penalty_procedure", "limit_suspension", "seal_seizure")


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
    citations: list[dict[str, Any]]  # the law in force on the day of the violation (citations.toml)
    not_judged_hours: list[dict[str, Any]]  # the engine's not-judged hours within the episode, with the reason
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
            "citations": self.citations, "not_judged_hours": self.not_judged_hours,
        }


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
    # an exceeded hour was judged because the year's fault-mark cap was used up when the last
    # audited judgement of it (hour_added/_marked/_unmarked/_fault_capped) says so
    capped: dict[str, bool] = {}
    for e in history:
        if e["action"] in HOUR_JUDGEMENTS and isinstance(e["data"], dict) and "hour_end" in e["data"]:
            capped[e["data"]["hour_end"]] = bool(e["data"].get("fault_cap_reached"))
    for h in hours:
        h["fault_cap_reached"] = h["verdict"] == "exceeded" and capped.get(h["hour_end"], False)
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
    counted = [h for h in hours if h["exceeded"]]
    violation_day = date.fromisoformat(counted[0]["china_date"]) if counted else None
    cited = [c.to_json() for c in (citations.cite(t, violation_day) for t in CASE_CITATION_TOPICS)
             if c is not None] if violation_day else []
    return CaseView(
        id=cid, kind=row.kind, outlet=row.outlet, enterprise=row.enterprise, permit=row.permit,
        pollutant=row.pollutant, limit=row.limit_value, limit_source=row.limit_source,
        reference_o2=row.reference_o2, status=row.status, case_number=row.case_number, outcome=row.outcome,
        opened_at=row.opened_at, updated_at=row.updated_at, closed_at=row.closed_at,
        url=url_template.format(case_id=cid), hours=hours, history=history, marks=shown_marks, deadlines=dls,
        penalties=pens, measures=meas, enterprise_reports=reports, citations=cited,
        not_judged_hours=_not_judged(conn, cid, hour_rows),
        allowed_next=workflow.allowed_next(row.status, last_reinspection_result(conn, cid)))


def _not_judged(conn: Connection, case_id: int, hour_rows: list[Any]) -> list[dict[str, Any]]:
    """Hours between the case's first and last recorded hour that the alert engine did not
    judge (stopped, start-up, flagged, too few valid minutes, marked), from its `alert_hours`
    for the alerts linked to this case: the gaps in the episode, shown with their reason."""
    if not hour_rows:
        return []
    linked = select(alerts.c.fingerprint).where(alerts.c.case_id == case_id)
    rows = conn.execute(select(alert_hours.c.hour_end, alert_hours.c.reason).where(
        alert_hours.c.fingerprint.in_(linked), alert_hours.c.verdict == "not_judged",
        alert_hours.c.hour_end >= hour_rows[0].hour_end, alert_hours.c.hour_end <= hour_rows[-1].hour_end)
        .order_by(alert_hours.c.hour_end)).all()
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:  # one entry per hour even if two linked alerts recorded it
        seen.setdefault(r.hour_end.isoformat(), {"hour_end": r.hour_end.isoformat(), "reason": r.reason})
    return list(seen.values())


def last_reinspection_result(conn: Connection, case_id: int) -> str | None:
    row = conn.execute(select(case_events.c.data).where(
        case_events.c.case_id == case_id, case_events.c.action == "transition",
        case_events.c.to_state == "reinspected").order_by(case_events.c.id.desc()).limit(1)).first()
    return row.data.get("result") if row else None


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
