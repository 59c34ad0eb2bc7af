"""What a reading makes dirty, and when each rollup may be computed.

Hours are labelled by their END, like readings (DESIGN.md): hour H covers (H − 1 h, H].
Days are China calendar days (UTC+8, no DST), labelled by their START; day D holds the
hours ending D + 1 h … D + 24 h (windows.py: index 0 is the hour ending 01:00).
All times here are UTC epoch seconds.
"""

from __future__ import annotations

from typing import NamedTuple

HOUR = 3600
DAY = 86400
CHINA_OFFSET_S = 8 * HOUR

# An ambient hour feeds the hourly AQI of the next hours too: the O3 / CO 8-hour moving
# averages (8 h), the US NowCast of PM (12 h) and the trailing 24-hour SO2 (the CN rule for
# 1-hour SO2 above 800 µg/m³, the US SO2 24-hour index). So hour H dirties hours H … H + 23 h.
AMBIENT_HOURS_AFFECTED = 24


class InputKey(NamedTuple):
    """Readings seen for one identity in one hour (kind: ambient | stack)."""

    kind: str
    identity: str
    hour: int  # end of the hour


class OutputKey(NamedTuple):
    """One rollup to (re)compute: an hourly or daily AQI of a station, a stack hour."""

    kind: str  # ambient | stack
    identity: str
    period: str  # hour | day
    time: int  # hour: its end; day: its start (China midnight)


def hour_of_ns(t_ns: int) -> int:
    """End (epoch s) of the hour holding a reading that ends at `t_ns` (ceil to the hour)."""
    return -((-t_ns) // (HOUR * 10**9)) * HOUR


def day_of_hour(hour_end: int) -> int:
    """Start (China midnight, as UTC epoch s) of the China day an hour belongs to."""
    start = hour_end - HOUR
    return (start + CHINA_OFFSET_S) // DAY * DAY - CHINA_OFFSET_S


def day_start(t_s: float) -> int:
    """China midnight at or before `t_s`."""
    return int((int(t_s) + CHINA_OFFSET_S) // DAY * DAY - CHINA_OFFSET_S)


def affected(key: InputKey) -> list[OutputKey]:
    """The rollups that depend on the readings of `key`."""
    if key.kind == "stack":
        return [OutputKey("stack", key.identity, "hour", key.hour)]
    hours = [OutputKey("ambient", key.identity, "hour", key.hour + k * HOUR) for k in range(AMBIENT_HOURS_AFFECTED)]
    return hours + [OutputKey("ambient", key.identity, "day", day_of_hour(key.hour))]


def inputs_of(out: OutputKey) -> list[InputKey]:
    """The input hours an output is computed from (the inverse of `affected`)."""
    if out.kind == "stack":
        return [InputKey("stack", out.identity, out.time)]
    if out.period == "day":
        return [InputKey("ambient", out.identity, out.time + k * HOUR) for k in range(1, 25)]
    return [InputKey("ambient", out.identity, out.time - k * HOUR) for k in range(AMBIENT_HOURS_AFFECTED)]


def closes_at(out: OutputKey) -> int:
    """When the period of `out` is over (its data can be complete)."""
    return out.time + DAY if out.period == "day" else out.time
