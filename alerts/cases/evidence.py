"""The evidence of a case: the exceeded hours the alert engine records, with the minute
data behind them (kept here, so InfluxDB's retention cannot erase it).

A firing stack exceedance opens a case for its outlet and pollutant, or joins the open one
(any state but dismissed/closed). Hours are upserted by `hour_end`, so a redelivered record
changes nothing; a recomputed hour is revised, withdrawn (compliant after all) or
reinstated, each with an audit entry holding the previous values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from alerts.cases import workflow
from alerts.cases.audit import record_case_event
from alerts.cases.deadlines import CasePolicy, open_enterprise_report
from alerts.cases.marks import cap_note, fault_mark_covers, hour_exemption
from alerts.cases.schema import TERMINAL_STATES, case_hours, cases
from alerts.cases.timeutil import require_aware

CASE_KIND = "stack_exceedance"
ENGINE_ACTOR = "aqpipe-alerts"  # the `by` of what the engine records


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
        existing = _find_hour(conn, hour.outlet, hour.pollutant, hour_end)  # a concurrent opener's very hour
        if existing is not None:
            _revise_hour(conn, existing, hour, at, exceeded=True)
            return int(existing.case_id)
    cap = (policy or CasePolicy()).fault_mark_hours_per_year
    mark = hour_exemption(conn, hour.outlet, hour.pollutant, hour_end, cap)
    note = cap_note(conn, hour.outlet, hour_end, cap) if mark is None and fault_mark_covers(
        conn, hour.outlet, hour.pollutant, hour_end) else ""
    conn.execute(case_hours.insert().values(
        case_id=case_id, hour_end=hour_end, avg=hour.avg, avg_o2corr=hour.avg_o2corr, o2=hour.o2,
        valid_minutes=hour.valid_minutes, limit_value=hour.limit, exceeded=True, minutes=list(hour.minutes),
        mark_id=mark.id if mark else None, recorded_at=at, updated_at=at))
    record_case_event(conn, case_id, at, ENGINE_ACTOR, "hour_added", note=note, data={
        **_hour_summary(hour), "mark_id": mark.id if mark else None, **({"fault_cap_reached": True} if note else {})})
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
    """A new case, or the one another process opened for the same outlet and pollutant
    meanwhile: the partial unique index makes the second insert wait for the first
    transaction and then fail; we roll back to a savepoint and join the winner's case."""
    try:
        with conn.begin_nested():
            case_id = int(conn.execute(cases.insert().values(
                kind=CASE_KIND, outlet=hour.outlet, enterprise=hour.enterprise, permit=hour.permit or None,
                pollutant=hour.pollutant, limit_value=hour.limit, limit_source=hour.limit_source,
                reference_o2=hour.reference_o2, status=workflow.INITIAL_STATE, opened_at=at, updated_at=at,
            )).inserted_primary_key[0])
    except IntegrityError:
        winner = _open_case_id(conn, hour.outlet, hour.pollutant)
        if winner is None:
            raise
        return winner
    record_case_event(conn, case_id, at, ENGINE_ACTOR, "opened", to_state=workflow.INITIAL_STATE,
                      data={"outlet": hour.outlet, "pollutant": hour.pollutant, "limit": hour.limit,
                            "limit_source": hour.limit_source})
    open_enterprise_report(conn, case_id, at, policy)
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
