"""The case database's tables (SQLAlchemy Core), on one `metadata`.

The migration `migrations/versions/0001_initial.py` creates exactly these tables (a test
compares the two); change both together, through a new migration, never by editing 0001.

Times are stored as timezone-aware UTC (`UTCDateTime`: SQLite keeps no offset, so it is
normalised on the way in and re-attached on the way out); calendar dates (an order served,
a re-inspection day) are China dates, stored as `Date`.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, Boolean, Column, Date, DateTime, Float, ForeignKey, Index, Integer, MetaData,
                        String, Table, Text, UniqueConstraint, text)
from sqlalchemy.types import TypeDecorator

# Constraint names fixed by convention, so that migrations (and PostgreSQL/SQLite) agree.
metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

# A case that is neither dismissed nor closed is "open" in the sense of the issue: a new
# exceeded hour of its outlet and pollutant joins it. Kept here because the partial unique
# index below enforces "one open case per outlet and pollutant" in the database itself.
TERMINAL_STATES = ("dismissed", "closed")
_OPEN_CASE = text("status NOT IN ('dismissed', 'closed')")


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend; naive datetimes are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: aqpipe stores timezone-aware UTC times only")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


cases = Table(
    "cases", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),  # the rule that opened it: 'stack_exceedance'
    Column("outlet", String(128), nullable=False),
    Column("enterprise", Text, nullable=False),
    Column("permit", String(128)),  # 排污许可证编号; None when the registry has none
    Column("pollutant", String(32), nullable=False),
    Column("limit_value", Float, nullable=False),  # `limit` in the JSON contract (a reserved word in SQL)
    Column("limit_source", Text, nullable=False),  # 'permit' | 'GB13271-2014 table N'
    Column("reference_o2", Float, nullable=False),
    Column("status", String(32), nullable=False),
    Column("case_number", String(128)),  # 立案 number, set when filed
    Column("outcome", Text),  # 结案 outcome, set when closed
    Column("opened_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime),  # closed or dismissed
    UniqueConstraint("case_number"),
    # One open case per (outlet, pollutant): a concurrent second opener fails instead of duplicating.
    Index("uq_cases_open_outlet_pollutant", "outlet", "pollutant", unique=True,
          sqlite_where=_OPEN_CASE, postgresql_where=_OPEN_CASE),
    Index("ix_cases_status", "status"),
)

# Every exceeded hour of a case, with the minute data behind it: the evidence lives here,
# so InfluxDB's retention cannot erase it. `exceeded` is the latest verdict the engine
# recorded (False once a recomputation found the hour compliant: `withdrawn_at` is set and
# the row is kept); `mark_id` is the exempting mark that takes the hour out of judgement.
case_hours = Table(
    "case_hours", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", Integer, ForeignKey("cases.id"), nullable=False),
    Column("hour_end", UTCDateTime, nullable=False),
    Column("avg", Float),
    Column("avg_o2corr", Float),
    Column("o2", Float),
    Column("valid_minutes", Integer, nullable=False),
    Column("limit_value", Float),  # the limit this hour was judged by (a permit may change)
    Column("exceeded", Boolean, nullable=False),
    Column("minutes", JSON, nullable=False),  # [{"time", "value", "o2", "flag"}, ...]
    Column("mark_id", Integer, ForeignKey("marks.id")),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("withdrawn_at", UTCDateTime),
    UniqueConstraint("case_id", "hour_end"),
)

# The audit log: append-only (no function updates or deletes it, and a trigger refuses it).
case_events = Table(
    "case_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", Integer, ForeignKey("cases.id"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("by", Text, nullable=False),  # a person, or 'aqpipe-alerts' for the engine
    Column("action", String(64), nullable=False),  # 'opened', 'transition', 'hour_added', 'hour_withdrawn', ...
    Column("from_state", String(32)),
    Column("to_state", String(32)),
    Column("event_date", Date),  # the China date the action names (order served, re-inspection day)
    Column("note", Text, nullable=False, server_default=""),
    Column("refs", JSON, nullable=False),  # document references: ["决定书 天环改字〔2026〕12号", "file://..."]
    Column("data", JSON, nullable=False),  # the transition's fields, or the hour that was added
    Index("ix_case_events_case_id", "case_id"),
)

# Marks (标记): interval records that take hours out of judgement. Removal is soft
# (removed_at/by/reason), so a mark's whole history stays: false marking is a violation.
marks = Table(
    "marks", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("outlet", String(128), nullable=False),
    Column("pollutant", String(32)),  # None: every pollutant of the outlet
    Column("type", String(32), nullable=False),  # a key of marks.MARK_TYPES
    Column("start", UTCDateTime, nullable=False),
    Column("end", UTCDateTime),  # None: still running (an open stoppage)
    Column("reason", Text, nullable=False),
    Column("evidence_ref", Text),
    Column("created_by", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("removed_by", Text),
    Column("removed_at", UTCDateTime),
    Column("removed_reason", Text),
    Index("ix_marks_outlet", "outlet"),
)

mark_events = Table(
    "mark_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("mark_id", Integer, ForeignKey("marks.id"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("by", Text, nullable=False),
    Column("action", String(32), nullable=False),  # 'added' | 'removed'
    Column("note", Text, nullable=False, server_default=""),
    Column("data", JSON, nullable=False),  # the mark as it was, and the case hours it re-evaluated
    Index("ix_mark_events_mark_id", "mark_id"),
)

# The enterprise's own exceedance report (排污许可管理条例 Art. 21, HJ 819): a sub-record.
enterprise_reports = Table(
    "enterprise_reports", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", Integer, ForeignKey("cases.id"), nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime),
    Column("received_by", Text),  # who at the bureau recorded it
    Column("note", Text, nullable=False, server_default=""),
    Column("refs", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_enterprise_reports_case_id", "case_id"),
)

# Deadlines the case must meet: 'reinspection' (served + cases.reinspection_days),
# 'enterprise_report' (opened + cases.enterprise_report_hours). Met or cancelled ones stay.
deadlines = Table(
    "deadlines", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", Integer, ForeignKey("cases.id"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("due_at", UTCDateTime, nullable=False),  # overdue once now >= due_at
    Column("due_date", Date),  # the China date it is due by, when it is a day
    Column("created_at", UTCDateTime, nullable=False),
    Column("met_at", UTCDateTime),
    Column("cancelled_at", UTCDateTime),  # the case ended before it was met
    Index("ix_deadlines_case_id", "case_id"),
)

# Measures and penalties decided on a case: 责令改正 orders, 限产 / 停产整治 / 查封扣押 /
# 停业关闭 with their dates, fines, and the daily continuous penalty (按日连续处罚) computed
# on a re-inspection that found the violation continuing.
measures = Table(
    "measures", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", Integer, ForeignKey("cases.id"), nullable=False),
    Column("event_id", Integer, ForeignKey("case_events.id")),  # the transition that recorded it
    Column("kind", String(32), nullable=False),  # a key of workflow.MEASURE_KINDS
    Column("start_date", Date),
    Column("end_date", Date),
    Column("doc_number", Text),
    Column("description", Text, nullable=False, server_default=""),
    Column("amount", Float),  # yuan, for fines
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", Text, nullable=False),
    Index("ix_measures_case_id", "case_id"),
)

penalties = Table(
    "penalties", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", Integer, ForeignKey("cases.id"), nullable=False),
    Column("event_id", Integer, ForeignKey("case_events.id"), nullable=False),  # the re-inspection
    Column("kind", String(32), nullable=False),  # 'daily_continuous'
    Column("served_date", Date, nullable=False),
    Column("reinspected_date", Date, nullable=False),
    Column("days", Integer, nullable=False),
    Column("discharge_stopped", Boolean, nullable=False),  # a limit/suspension stopped it: no daily penalty
    Column("daily_amount", Float),  # the original fine per day, when known
    Column("total_amount", Float),
    Column("citation", JSON),  # the law and article chosen by the violation date
    Column("computed_at", UTCDateTime, nullable=False),
    Index("ix_penalties_case_id", "case_id"),
)

# The alert engine's state (alerts/lifecycle.py owns the functions on these two tables).
alerts = Table(
    "alerts", metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("rule", String(128), nullable=False),
    Column("alertname", String(128), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("annotations", JSON, nullable=False),
    Column("state", String(16), nullable=False),  # 'pending' | 'firing' | 'resolved'
    Column("active_since", UTCDateTime),
    Column("fired_at", UTCDateTime),
    Column("resolved_at", UTCDateTime),
    Column("last_sent_at", UTCDateTime),
    Column("value", Float),
    Column("threshold", Float),
    Column("case_id", Integer, ForeignKey("cases.id")),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_alerts_state", "state"),
)

alert_hours = Table(
    "alert_hours", metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("hour_end", UTCDateTime, primary_key=True),
    Column("verdict", String(16), nullable=False),  # 'exceeded' | 'compliant' | 'not_judged'
    Column("reason", Text),
)

# Tables whose rows are never updated or deleted (migration 0001 adds the triggers).
APPEND_ONLY = ("case_events", "mark_events")
