"""alerts/cases/faultcap.py: counting fault-mark hours of a China year (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from alerts.cases.faultcap import china_year_bounds, fault_hours_through, within_cap

UTC = timezone.utc
H = timedelta(hours=1)
T0 = datetime(2026, 3, 1, 2, tzinfo=UTC)  # an hour ending 10:00 China time


def test_each_clock_hour_is_counted_once_however_many_marks_cover_it() -> None:
    spans = [(T0 - 3 * H, T0), (T0 - 2 * H, T0 + H), (T0 - 2 * H, T0 - H)]
    assert fault_hours_through(spans, T0 + H) == 4


def test_a_mark_touching_part_of_an_hour_counts_the_whole_hour_and_later_hours_do_not_count() -> None:
    assert fault_hours_through([(T0 - timedelta(minutes=10), T0 + timedelta(minutes=5))], T0 + 5 * H) == 2
    assert fault_hours_through([(T0 - 3 * H, None)], T0) == 3  # open-ended: up to the hour asked about
    assert fault_hours_through([(T0 + H, T0 + 2 * H)], T0) == 0


def test_the_count_starts_again_at_midnight_china_time_on_1_january() -> None:
    new_year = datetime(2026, 12, 31, 16, tzinfo=UTC)  # 2027-01-01 00:00 China time
    assert china_year_bounds(new_year)[1] == new_year  # the hour ending at midnight is the old year's
    assert china_year_bounds(new_year + H)[0] == new_year
    spans = [(new_year - 5 * H, new_year + 2 * H)]
    assert fault_hours_through(spans, new_year) == 5
    assert fault_hours_through(spans, new_year + 2 * H) == 2


def test_within_cap_includes_the_cap_itself_and_none_is_unlimited() -> None:
    assert within_cap(3, 3) and not within_cap(4, 3) and within_cap(10**6, None) and not within_cap(1, 0)
