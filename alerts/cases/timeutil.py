"""China dates (UTC+8, no daylight saving) for the case store: days with exceedance,
orders served, re-inspection days and the deadlines that fall at the end of a China day."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

CHINA = timezone(timedelta(hours=8), "CST")


def require_aware(t: datetime, name: str) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"{name} is a naive datetime: pass a timezone-aware UTC time")
    return t.astimezone(timezone.utc)


def china_date(t: datetime) -> date:
    """The China calendar day an instant falls on."""
    return require_aware(t, "time").astimezone(CHINA).date()


def hour_china_date(hour_end: datetime) -> date:
    """The China day an hour belongs to: the day of its start (the hour ending 00:00 is the previous day's)."""
    return china_date(hour_end - timedelta(hours=1))


def end_of_china_day(d: date) -> datetime:
    """The instant (UTC) a day-long deadline expires: midnight China time after day `d`."""
    return datetime.combine(d + timedelta(days=1), time(0), CHINA).astimezone(timezone.utc)
