"""The public pages in a real browser: /aqi shows what aqi_hourly holds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from selenium.webdriver.common.by import By

from tests.integration.test_web import write_aqi

pytestmark = pytest.mark.integration
HOUR = timedelta(hours=1)


def test_aqi_page_shows_the_numbers_of_aqi_hourly_in_their_category_colours(browser, phone, web_config, influx):
    latest_end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - HOUR
    write_aqi(web_config, latest_end)
    stored = {r["station"]: r for r in influx.rows(
        "SELECT aqi, category FROM aqi_hourly WHERE standard = 'cn-2026' GROUP BY station ORDER BY time DESC LIMIT 1")}
    browser.get("/aqi")
    for station, row in stored.items():
        card = browser.driver.find_element(By.ID, f"station-{station}")
        value = card.find_element(By.CSS_SELECTOR, '[data-field="aqi"]')
        assert int(value.text) == row["aqi"]
        box = card.find_element(By.CSS_SELECTOR, ".aqi")
        assert f"cat{row['category']}" in box.get_attribute("class")
        # the colour the browser actually paints is HJ 633's for that category
        colour = box.value_of_css_property("background-color")
        expected = {1: "rgba(0, 228, 0, 1)", 2: "rgba(255, 255, 0, 1)", 5: "rgba(153, 0, 76, 1)"}[row["category"]]
        assert colour == expected
        assert card.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")  # the 24-hour chart is drawn
    summary = browser.driver.find_element(By.ID, "summary").text
    assert "重度污染" in summary
    browser.screenshot("aqi")
    phone.get("/aqi")
    card = phone.driver.find_element(By.ID, "station-620503-003")
    assert card.size["width"] <= 390  # one column on a phone, no horizontal scrolling
    assert phone.driver.execute_script("return document.documentElement.scrollWidth") <= 390
    phone.screenshot("aqi-phone")
