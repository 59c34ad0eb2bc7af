"""The daily continuous penalty (按日连续处罚): how many days, and how much.

EPL 2014 Art. 59 and MEP Order No. 28 (domain/enforcement.md, cems.md): when the
re-inspection after an order to correct finds the illegal discharge continuing (or is
refused), the penalty runs from the day AFTER the order was served THROUGH the day of that
re-inspection, at the original fine per day. A new order follows and the cycle repeats;
each cycle is computed on its own re-inspection (Order No. 28 accumulates the days of
successive re-inspections: `cumulative_days`). No daily penalty when a production limit
or a suspension stopped the discharge, or when the re-inspection found it corrected.

Dates are China calendar dates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


class PenaltyError(ValueError):
    """Dates that cannot bound a penalty period (re-inspection before the order was served)."""


@dataclass(frozen=True)
class DailyPenalty:
    served: date  # the order to correct was served on this day
    reinspected: date  # the re-inspection that found the violation continuing
    days: int  # days counted: served+1 .. reinspected, both inclusive
    discharge_stopped: bool  # a limit/suspension stopped the discharge: days is 0
    daily_amount: float | None  # the original fine (yuan), charged per day
    total_amount: float | None


def penalty_days(served: date, reinspected: date) -> int:
    """Days from the day after `served` through `reinspected`, inclusive.

    served 2026-03-01, re-inspected 2026-03-31 -> 30 (March 2 .. March 31)."""
    if reinspected < served:
        raise PenaltyError(f"the re-inspection ({reinspected}) is before the order was served ({served})")
    return (reinspected - served).days


def daily_penalty(served: date, reinspected: date, *, continuing: bool = True, discharge_stopped: bool = False,
                  daily_amount: float | None = None) -> DailyPenalty:
    """The penalty one re-inspection computes. Not continuing, or stopped: zero days."""
    days = penalty_days(served, reinspected)
    if not continuing or discharge_stopped:
        days = 0
    total = days * daily_amount if daily_amount is not None else None
    return DailyPenalty(served, reinspected, days, discharge_stopped, daily_amount, total)


def cumulative_days(penalties: list[DailyPenalty]) -> int:
    """The days of every cycle of one case, added up (Order No. 28: 计罚日数累计执行)."""
    return sum(p.days for p in penalties)
