"""alerts/web: HJ 633 categories as data, the standard in force, the city summary."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from alerts.web.aqi_data import StationAqi, city_summary, cn_key_in_force
from aqpipe.hj633 import CATEGORIES, category, category_of_aqi

CST = timezone(timedelta(hours=8))


def test_categories_match_hj633_table_2_and_appendix_a():
    # aqi.md: 0-50 优 (0,228,0); 51-100 良 (255,255,0); 101-150 轻度污染 (255,126,0);
    # 151-200 中度污染 (255,0,0); 201-300 重度污染 (153,0,76); >300 严重污染 (126,0,35)
    assert [(c.lower, c.upper, c.name, c.rgb) for c in CATEGORIES] == [
        (0, 50, "优", (0, 228, 0)), (51, 100, "良", (255, 255, 0)), (101, 150, "轻度污染", (255, 126, 0)),
        (151, 200, "中度污染", (255, 0, 0)), (201, 300, "重度污染", (153, 0, 76)), (301, None, "严重污染", (126, 0, 35))]
    assert all(c.health_effects and c.advice for c in CATEGORIES)
    assert category(5).colour == "#99004c"


@pytest.mark.parametrize("aqi, level", [(0, 1), (50, 1), (51, 2), (100, 2), (101, 3), (200, 4), (300, 5), (301, 6),
                                        (500, 6)])
def test_category_of_aqi(aqi, level):
    assert category_of_aqi(aqi).level == level


def test_an_unknown_level_is_a_clear_error():
    with pytest.raises(ValueError, match="1..6"):
        category(7)


def test_text_is_legible_on_each_colour():
    assert category(2).text_colour == "#000000"  # yellow
    assert category(6).text_colour == "#ffffff"  # maroon


def test_the_standard_in_force_is_chosen_by_the_china_date_of_the_hours_start():
    effective = date(2026, 3, 1)
    # The hour 00:00-01:00 China time on 2026-03-01 is the first hour under HJ 633-2026.
    assert cn_key_in_force(datetime(2026, 3, 1, 1, 0, tzinfo=CST), effective) == "cn-2026"
    # The hour ending at midnight China time started on 2026-02-28: still 2012.
    assert cn_key_in_force(datetime(2026, 3, 1, 0, 0, tzinfo=CST), effective) == "cn-2012"
    assert cn_key_in_force(datetime(2026, 2, 28, 16, 0, tzinfo=timezone.utc), effective) == "cn-2012"
    assert cn_key_in_force(datetime(2026, 2, 28, 17, 0, tzinfo=timezone.utc), effective) == "cn-2026"


def test_city_summary_counts_stations_with_data_in_every_category():
    stations = [StationAqi("a", "a", "", aqi=30, category=category(1)),
                StationAqi("b", "b", "", aqi=40, category=category(1)),
                StationAqi("c", "c", "", aqi=220, category=category(5)),
                StationAqi("d", "d", "")]  # no data: not counted
    summary = city_summary(stations)
    assert [s.category.level for s in summary] == [1, 2, 3, 4, 5, 6]
    assert [s.count for s in summary] == [2, 0, 0, 0, 1, 0]
    assert summary[0].share == pytest.approx(2 / 3) and summary[4].share == pytest.approx(1 / 3)
    assert all(s.share == 0 for s in city_summary([]))
