"""Deadlines of a case, and the enterprise's own exceedance report (a sub-record).

- `enterprise_report`: the enterprise reports an exceedance with its analysis (排污许可管理条例
  Art. 21, HJ 819); due `cases.enterprise_report_hours` after the case opens (local rules
  vary: Jiangsu 48 h, 4 h for key polluters, medium confidence); met when it is received.
- `reinspection`: MEP Order No. 28, within `cases.reinspection_days` (30) of serving the
  order to correct, by the end of that China day; met by the re-inspection.

A case that ends cancels its open deadlines. `overdue(conn, now)` is what the alert engine
turns into `CaseDeadline` alerts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from alerts.cases.audit import record_case_event
from alerts.cases.errors import CaseError, CaseNotFound
from alerts.cases.schema import TERMINAL_STATES, cases, deadlines, enterprise_reports
from alerts.cases.timeutil import end_of_china_day, require_aware


@dataclass(frozen=True)
class CasePolicy:
    """The deadlines a case runs on (`[cases]` in aqpipe.toml)."""

    reinspection_days: int = 30  # MEP Order No. 28: re-inspect within 30 days of serving the order
    enterprise_report_hours: float = 48.0  # the enterprise's exceedance report (Jiangsu: 48 h; key polluters 4 h)
    # fault marks (故障) exempt at most this many hours per outlet and China year; None: not
    # enforced (no figure in our sources: the bureau sets it from the industry rule)
    fault_mark_hours_per_year: int | None = None

    @classmethod
    def from_config(cls, cases_cfg: Any) -> "CasePolicy":
        return cls(reinspection_days=int(getattr(cases_cfg, "reinspection_days", cls.reinspection_days)),
                   enterprise_report_hours=float(getattr(cases_cfg, "enterprise_report_hours",
                                                         cls.enterprise_report_hours)),
                   fault_mark_hours_per_year=getattr(cases_cfg, "fault_mark_hours_per_year", None))


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


def open_enterprise_report(conn: Connection, case_id: int, at: datetime, policy: CasePolicy) -> None:
    """A new case expects the enterprise's own exceedance report within the policy's hours."""
    due = at + timedelta(hours=policy.enterprise_report_hours)
    conn.execute(enterprise_reports.insert().values(case_id=case_id, due_at=due, refs=[], created_at=at))
    conn.execute(deadlines.insert().values(case_id=case_id, kind="enterprise_report", due_at=due, created_at=at))


def add_reinspection(conn: Connection, case_id: int, served: date, at: datetime, policy: CasePolicy) -> date:
    """The re-inspection is due `reinspection_days` after the order was served, by the end of that China day."""
    due_date = served + timedelta(days=policy.reinspection_days)
    conn.execute(deadlines.insert().values(case_id=case_id, kind="reinspection", due_at=end_of_china_day(due_date),
                                           due_date=due_date, created_at=at))
    return due_date


def meet_deadlines(conn: Connection, case_id: int, kind: str, at: datetime) -> None:
    conn.execute(deadlines.update().where(deadlines.c.case_id == case_id, deadlines.c.kind == kind,
                                          deadlines.c.met_at.is_(None), deadlines.c.cancelled_at.is_(None))
                 .values(met_at=at))


def cancel_deadlines(conn: Connection, case_id: int, at: datetime) -> None:
    """A case that ended leaves its open deadlines cancelled, never overdue."""
    conn.execute(deadlines.update().where(deadlines.c.case_id == case_id, deadlines.c.met_at.is_(None),
                                          deadlines.c.cancelled_at.is_(None)).values(cancelled_at=at))


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
    meet_deadlines(conn, case_id, "enterprise_report", at)
    record_case_event(conn, case_id, at, by, "enterprise_report_received", note=note, refs=refs,
                      data={"received": received.isoformat()})


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
