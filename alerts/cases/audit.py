"""The case audit log: one append-only row per thing that happened to a case.

This module only inserts. There is deliberately no function that updates or deletes an
event, and migration 0001 adds triggers that refuse it in the database."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection

from alerts.cases.schema import case_events, mark_events


def record_case_event(conn: Connection, case_id: int, at: datetime, by: str, action: str, *,
                      from_state: str | None = None, to_state: str | None = None, event_date: date | None = None,
                      note: str = "", refs: list[str] | None = None, data: dict[str, Any] | None = None) -> int:
    """Append one event to a case's history; returns its id."""
    result = conn.execute(case_events.insert().values(
        case_id=case_id, at=at, by=by, action=action, from_state=from_state, to_state=to_state,
        event_date=event_date, note=note or "", refs=list(refs or []), data=_jsonable(data or {})))
    return int(result.inserted_primary_key[0])


def record_mark_event(conn: Connection, mark_id: int, at: datetime, by: str, action: str, *, note: str = "",
                      data: dict[str, Any] | None = None) -> int:
    result = conn.execute(mark_events.insert().values(mark_id=mark_id, at=at, by=by, action=action, note=note or "",
                                                      data=_jsonable(data or {})))
    return int(result.inserted_primary_key[0])


def _jsonable(value: Any) -> Any:
    """Dates and datetimes as ISO strings, so any dict of fields can go into a JSON column."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value
