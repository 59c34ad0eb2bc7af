"""Marks (标记): interval records, entered by the enterprise or an operator, that say why an
outlet's data of some period is not to be judged (生态环境部公告 2022 年第 21 号).

A mark names an outlet, a pollutant or all of them (None), a type, [start, end) (end None:
still running), a reason, a reference to the evidence, who and when. An exempting mark
takes the hours it overlaps out of judgement; a case shows them as marked. Removal is soft
and every add/remove is audited (`mark_events`), because a false mark is itself a
violation. Adding or removing a mark re-evaluates the case hours it covers, in the
caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from alerts.cases.audit import record_case_event, record_mark_event
from alerts.cases.errors import MarkError, MarkNotFound
from alerts.cases.faultcap import ceil_hour, china_year_bounds, fault_hours_through, within_cap
from alerts.cases.schema import TERMINAL_STATES, case_hours, cases, mark_events, marks
from alerts.cases.timeutil import require_aware

HOUR = timedelta(hours=1)
# the case events that record how an hour was judged (the last one of an hour holds)
HOUR_JUDGEMENTS = ("hour_added", "hour_marked", "hour_unmarked", "hour_fault_capped")


@dataclass(frozen=True)
class MarkType:
    key: str
    label: str  # the word the enterprise and the platform use
    exempting: bool  # takes the hours it covers out of judgement
    category: str  # 'operating' (工况标记) or 'device' (设备标记), the "1+N" system's two halves
    capped: bool = False  # counts against cases.fault_mark_hours_per_year (alerts/cases/faultcap.py)


# Types as data: add a row for a new industry rule. Not exempting: marks that only inform.
MARK_TYPES: dict[str, MarkType] = {t.key: t for t in (
    MarkType("stopped", "停运", True, "operating"),
    MarkType("startup", "启炉", True, "operating"),
    MarkType("shutdown", "停炉", True, "operating"),
    MarkType("fault", "故障", True, "operating", capped=True),  # platforms cap fault hours per year
    MarkType("maintenance", "维护", True, "device"),
    MarkType("calibration", "校准", True, "device"),
    MarkType("comms_outage", "通讯中断", True, "device"),
    MarkType("manual_data", "人工补遗", True, "device"),  # manual values substituted for a gap
    MarkType("force_majeure", "不可抗力", True, "device"),
    MarkType("grid_connected", "并网", False, "operating"),
    MarkType("note", "说明", False, "operating"),
)}


# the types whose hours share the annual cap (one count per outlet and year)
CAPPED_TYPES: tuple[str, ...] = tuple(t.key for t in MARK_TYPES.values() if t.capped)


def mark_type(name: str) -> MarkType:
    """A mark type by key or by its Chinese label (`停运` -> stopped)."""
    if name in MARK_TYPES:
        return MARK_TYPES[name]
    for t in MARK_TYPES.values():
        if t.label == name:
            return t
    raise MarkError(f"unknown mark type {name!r}; one of: "
                    + ", ".join(f"{t.key} ({t.label}{', exempting' if t.exempting else ''})"
                                for t in MARK_TYPES.values()))


@dataclass(frozen=True)
class Mark:
    id: int
    outlet: str
    pollutant: str | None  # None: all pollutants of the outlet
    type: str
    start: datetime
    end: datetime | None
    reason: str
    evidence_ref: str | None
    created_by: str
    created_at: datetime
    removed_by: str | None = None
    removed_at: datetime | None = None
    removed_reason: str | None = None

    @property
    def exempting(self) -> bool:
        return MARK_TYPES[self.type].exempting if self.type in MARK_TYPES else False

    @property
    def active(self) -> bool:
        return self.removed_at is None

    def to_json(self) -> dict[str, Any]:
        t = MARK_TYPES.get(self.type)
        return {"id": self.id, "outlet": self.outlet, "pollutant": self.pollutant, "type": self.type,
                "type_label": t.label if t else self.type, "exempting": self.exempting,
                "start": _iso(self.start), "end": _iso(self.end), "reason": self.reason,
                "evidence_ref": self.evidence_ref, "created_by": self.created_by, "created_at": _iso(self.created_at),
                "active": self.active, "removed_by": self.removed_by, "removed_at": _iso(self.removed_at),
                "removed_reason": self.removed_reason}


ALL_POLLUTANTS = ("*", "all", "")


def _pollutant(p: str | None) -> str | None:
    """None for a mark of every pollutant ('*', 'all', '' and None all mean that)."""
    return None if p is None or p.strip().lower() in ALL_POLLUTANTS else p.strip()


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _mark(row: Any) -> Mark:
    return Mark(id=row.id, outlet=row.outlet, pollutant=row.pollutant, type=row.type, start=row.start, end=row.end,
                reason=row.reason, evidence_ref=row.evidence_ref, created_by=row.created_by,
                created_at=row.created_at, removed_by=row.removed_by, removed_at=row.removed_at,
                removed_reason=row.removed_reason)


def add_mark(conn: Connection, *, outlet: str, pollutant: str | None, type: str, start: datetime,
             end: datetime | None, reason: str, by: str, at: datetime, evidence_ref: str | None = None,
             fault_cap: int | None = None) -> Mark:
    """Record a mark, audit it, and re-evaluate the case hours it covers (a fault mark under a
    cap, `fault_cap` hours a year: every later hour of its years, which may cross the cap)."""
    kind = mark_type(type)
    start, at = require_aware(start, "start"), require_aware(at, "at")
    end = require_aware(end, "end") if end is not None else None
    if end is not None and end <= start:
        raise MarkError(f"a mark must end after it starts: start {start.isoformat()}, end {end.isoformat()}")
    if not outlet.strip():
        raise MarkError("a mark needs an outlet")
    if not reason.strip():
        raise MarkError("a mark needs a reason (the evidence of the condition it records)")
    if not by.strip():
        raise MarkError("a mark needs who entered it (by)")
    mark_id = conn.execute(marks.insert().values(
        outlet=outlet.strip(), pollutant=_pollutant(pollutant), type=kind.key, start=start, end=end, reason=reason.strip(),
        evidence_ref=evidence_ref or None, created_by=by, created_at=at)).inserted_primary_key[0]
    mark = get_mark(conn, int(mark_id))
    changed = _reevaluate(conn, mark, by, at, fault_cap)
    record_mark_event(conn, mark.id, at, by, "added", note=reason, data={"mark": mark.to_json(), "hours": changed})
    return mark


def remove_mark(conn: Connection, mark_id: int, *, by: str, reason: str, at: datetime,
                fault_cap: int | None = None) -> Mark:
    """Withdraw a mark (soft: the row and its history stay), audit it, re-evaluate its hours."""
    at = require_aware(at, "at")
    mark = get_mark(conn, mark_id)
    if not mark.active:
        raise MarkError(f"mark {mark_id} was already removed by {mark.removed_by} at {mark.removed_at.isoformat()}")
    if not reason.strip():
        raise MarkError("removing a mark needs a reason")
    conn.execute(marks.update().where(marks.c.id == mark_id)
                 .values(removed_by=by, removed_at=at, removed_reason=reason.strip()))
    mark = get_mark(conn, mark_id)
    changed = _reevaluate(conn, mark, by, at, fault_cap)
    record_mark_event(conn, mark_id, at, by, "removed", note=reason, data={"mark": mark.to_json(), "hours": changed})
    return mark


def get_mark(conn: Connection, mark_id: int) -> Mark:
    row = conn.execute(select(marks).where(marks.c.id == mark_id)).first()
    if row is None:
        raise MarkNotFound(mark_id)
    return _mark(row)


def list_marks(conn: Connection, outlet: str | None = None, pollutant: str | None = None,
               start: datetime | None = None, end: datetime | None = None,
               include_removed: bool = False) -> list[Mark]:
    """Marks, newest first; with start/end, those overlapping [start, end); with a
    pollutant, those of that pollutant and those of all pollutants."""
    q = select(marks).order_by(marks.c.start.desc(), marks.c.id.desc())
    if outlet:
        q = q.where(marks.c.outlet == outlet)
    if pollutant and _pollutant(pollutant) is not None:
        q = q.where(or_(marks.c.pollutant == _pollutant(pollutant), marks.c.pollutant.is_(None)))
    if end is not None:
        q = q.where(marks.c.start < end)
    if start is not None:
        q = q.where(or_(marks.c.end.is_(None), marks.c.end > start))
    if not include_removed:
        q = q.where(marks.c.removed_at.is_(None))
    return [_mark(r) for r in conn.execute(q)]


def mark_history(conn: Connection, mark_id: int) -> list[dict[str, Any]]:
    """The audit entries of one mark, oldest first."""
    rows = conn.execute(select(mark_events).where(mark_events.c.mark_id == mark_id).order_by(mark_events.c.id))
    return [{"at": r.at.isoformat(), "by": r.by, "action": r.action, "note": r.note, "data": r.data} for r in rows]


def exempting_mark(conn: Connection, outlet: str, pollutant: str | None, start: datetime,
                   end: datetime, fault_cap: int | None = None) -> Mark | None:
    """An active exempting mark of the outlet (this pollutant or all) overlapping [start, end),
    the earliest entered first; None when the period is to be judged. With pollutant None or
    '*' (the whole outlet, e.g. an outlet gone silent) only marks of all pollutants count.

    `fault_cap` (cases.fault_mark_hours_per_year; None: not enforced): a fault mark exempts
    only while the outlet's fault hours of the year, through the clock hour `end` falls in,
    are within the cap; past it another exempting mark may still exempt, else None."""
    exempting = [t.key for t in MARK_TYPES.values() if t.exempting]
    pollutant = _pollutant(pollutant)
    q = (select(marks).where(
        marks.c.outlet == outlet,
        marks.c.pollutant.is_(None) if pollutant is None
        else or_(marks.c.pollutant == pollutant, marks.c.pollutant.is_(None)),
        marks.c.type.in_(exempting),
        marks.c.removed_at.is_(None),
        marks.c.start < require_aware(end, "end"),
        or_(marks.c.end.is_(None), marks.c.end > require_aware(start, "start")),
    ).order_by(marks.c.id))
    if fault_cap is None:
        row = conn.execute(q.limit(1)).first()
        return _mark(row) if row is not None else None
    capped: bool | None = None  # computed once, only if a fault mark is met first
    for row in conn.execute(q).all():
        if row.type not in CAPPED_TYPES:
            return _mark(row)
        if capped is None:
            capped = fault_cap_reached(conn, outlet, ceil_hour(require_aware(end, "end")), fault_cap)
        if not capped:
            return _mark(row)
    return None


def hour_exemption(conn: Connection, outlet: str, pollutant: str, hour_end: datetime,
                   fault_cap: int | None = None) -> Mark | None:
    """The exempting mark covering any part of the hour ending at `hour_end` (fault marks
    within `fault_cap` hours a year, see exempting_mark)."""
    return exempting_mark(conn, outlet, pollutant, hour_end - HOUR, hour_end, fault_cap)


def fault_hours_used(conn: Connection, outlet: str, hour_end: datetime) -> int:
    """The outlet's fault-mark hours of the China year of the hour ending at `hour_end`, through that hour."""
    year_start, _ = china_year_bounds(hour_end)
    rows = conn.execute(select(marks.c.start, marks.c.end).where(
        marks.c.outlet == outlet, marks.c.type.in_(CAPPED_TYPES), marks.c.removed_at.is_(None),
        marks.c.start < require_aware(hour_end, "hour_end"),
        or_(marks.c.end.is_(None), marks.c.end > year_start))).all()
    return fault_hours_through([(r.start, r.end) for r in rows], hour_end)


def fault_cap_reached(conn: Connection, outlet: str, hour_end: datetime, fault_cap: int | None) -> bool:
    """Whether the hour ending at `hour_end` is past the outlet's annual fault-mark cap (a fault
    mark covering it no longer exempts it)."""
    return not within_cap(fault_hours_used(conn, outlet, hour_end), fault_cap)


def cap_note(conn: Connection, outlet: str, hour_end: datetime, fault_cap: int | None) -> str:
    """'' or the words saying the hour is judged because the fault cap of its year is used up."""
    if fault_cap is None or not fault_cap_reached(conn, outlet, hour_end, fault_cap):
        return ""
    return (f"fault-mark cap reached ({fault_hours_used(conn, outlet, hour_end)} fault hours this year "
            f"> cases.fault_mark_hours_per_year {fault_cap}): the hour is judged")


def fault_mark_covers(conn: Connection, outlet: str, pollutant: str, hour_end: datetime) -> bool:
    """Whether an active fault mark covers the hour (so an unmarked hour was judged by the cap)."""
    return conn.execute(select(marks.c.id).where(
        marks.c.outlet == outlet, marks.c.type.in_(CAPPED_TYPES), marks.c.removed_at.is_(None),
        or_(marks.c.pollutant == pollutant, marks.c.pollutant.is_(None)),
        marks.c.start < hour_end, or_(marks.c.end.is_(None), marks.c.end > hour_end - HOUR)).limit(1)).first() is not None


def _reevaluate(conn: Connection, mark: Mark, by: str, at: datetime,
                fault_cap: int | None = None) -> list[dict[str, Any]]:
    """Re-judge every hour of a running case this mark's interval touches; audit each change on its case.
    A fault mark under a cap also moves the count of every later hour of its years, of every
    pollutant of the outlet: those are re-judged up to the end of the China year its end falls in."""
    # Cases that ended (dismissed, closed) keep the evidence they were decided on: a mark
    # entered or withdrawn afterwards is audited on the mark, not applied to them.
    capped = fault_cap is not None and mark.type in CAPPED_TYPES
    covered = [cases.c.outlet == mark.outlet, case_hours.c.hour_end > mark.start,
               cases.c.status.not_in(TERMINAL_STATES)]
    if mark.pollutant is not None and not capped:
        covered.append(cases.c.pollutant == mark.pollutant)
    if mark.end is not None:
        covered.append(case_hours.c.hour_end <= china_year_bounds(ceil_hour(mark.end))[1] if capped
                       else case_hours.c.hour_end < mark.end + HOUR)
    rows = conn.execute(select(case_hours.c.id, case_hours.c.case_id, case_hours.c.hour_end, case_hours.c.mark_id,
                               cases.c.pollutant)
                        .join(cases, cases.c.id == case_hours.c.case_id).where(and_(*covered))
                        .order_by(case_hours.c.case_id, case_hours.c.hour_end)).all()
    changed = []
    for row in rows:
        now_mark = hour_exemption(conn, mark.outlet, row.pollutant, row.hour_end, fault_cap)
        new_id = now_mark.id if now_mark is not None else None
        if new_id == row.mark_id:
            if new_id is None and capped and row.hour_end > mark.start and (
                    mark.end is None or row.hour_end - HOUR < mark.end):
                # this fault mark covers the hour, yet it stays judged: say why, once per mark change
                cap = cap_note(conn, mark.outlet, row.hour_end, fault_cap) if mark.active else ""
                if cap:
                    change = {"case_id": row.case_id, "hour_end": row.hour_end.isoformat(), "mark_id": None,
                              "previous_mark_id": None, "fault_cap_reached": True}
                    record_case_event(conn, row.case_id, at, by, "hour_fault_capped",
                                      note=f"mark {mark.id} ({MARK_TYPES[mark.type].label}) added; {cap}", data=change)
                    changed.append(change)
            continue
        conn.execute(case_hours.update().where(case_hours.c.id == row.id).values(mark_id=new_id, updated_at=at))
        action = "hour_marked" if new_id is not None else "hour_unmarked"
        change = {"case_id": row.case_id, "hour_end": row.hour_end.isoformat(), "mark_id": new_id,
                  "previous_mark_id": row.mark_id}
        note = f"mark {mark.id} ({MARK_TYPES[mark.type].label}) {'removed' if not mark.active else 'added'}"
        if new_id is None and fault_mark_covers(conn, mark.outlet, row.pollutant, row.hour_end):
            cap = cap_note(conn, mark.outlet, row.hour_end, fault_cap)
            if cap:
                note += f"; {cap}"
                change["fault_cap_reached"] = True
        record_case_event(conn, row.case_id, at, by, action, note=note, data=change)
        changed.append(change)
    return changed
