"""The annual cap on fault-mark hours (故障标记: a platform exempts fault hours only up to a
number of hours a year, `cases.fault_mark_hours_per_year`).

Per outlet and China calendar year (UTC+8), the clock hours covered by active `fault` marks
are counted in time order, each hour once however many fault marks or pollutants cover it
(a mark covering any part of an hour covers the hour, as for exemption). A fault mark exempts
an hour only while that year's count up to and including the hour is within the cap; past
it the hour is judged (unless a mark of another exempting type covers it). The cap is data
passed in (None: not enforced); the domain notes give no figure, so the bureau sets it from
the industry rule.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from typing import Iterable

from alerts.cases.timeutil import CHINA, require_aware

HOUR = timedelta(hours=1)


def floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def ceil_hour(t: datetime) -> datetime:
    f = floor_hour(t)
    return f if f == t else f + HOUR


def china_year_bounds(hour_end: datetime) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the China year the hour ending at `hour_end` belongs to (the year of its start)."""
    year = (require_aware(hour_end, "hour_end") - HOUR).astimezone(CHINA).year
    start = datetime.combine(datetime(year, 1, 1).date(), time(0), CHINA).astimezone(timezone.utc)
    end = datetime.combine(datetime(year + 1, 1, 1).date(), time(0), CHINA).astimezone(timezone.utc)
    return start, end


def fault_hours_through(intervals: Iterable[tuple[datetime, datetime | None]], hour_end: datetime) -> int:
    """Clock hours of the year of `hour_end`, up to and including that hour, that any of the
    fault-mark intervals [start, end) (end None: still running) touches; each hour once."""
    year_start, _ = china_year_bounds(hour_end)
    hour_end = require_aware(hour_end, "hour_end")
    spans = []
    for start, end in intervals:
        lo = max(floor_hour(require_aware(start, "start")), year_start)
        hi = hour_end if end is None else min(ceil_hour(require_aware(end, "end")), hour_end)
        if hi > lo:
            spans.append((lo, hi))
    total, reach = timedelta(0), None
    for lo, hi in sorted(spans):  # union of the spans, in time order
        if reach is not None:
            lo = max(lo, reach)
        if hi > lo:
            total += hi - lo
        reach = hi if reach is None else max(reach, hi)
    return int(total / HOUR)


def within_cap(used: int, cap: int | None) -> bool:
    """Whether a fault mark still exempts an hour whose year's count (through it) is `used`."""
    return cap is None or used <= cap
