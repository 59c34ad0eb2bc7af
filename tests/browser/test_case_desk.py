"""The case desk in a real browser: an inspector works a case, a viewer only reads,
the public disclosure page shows closed penalised cases only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.browser.conftest import click_through, login, submit, timeline_states
from tests.integration.test_web_cases import ENTERPRISE, PERMIT, close_with_penalty, open_case

pytestmark = pytest.mark.integration
AQPIPE = str(Path(sys.executable).parent / "aqpipe")


def test_inspector_verifies_files_and_orders_a_case(browser, phone, web, env):
    case_id = open_case(web.ctx.engine, hours=3)
    from alerts.cases.store import get_case

    with web.ctx.engine.begin() as conn:
        url = get_case(conn, case_id, web.ctx.url_template).url  # what an alert's case_url annotation carries
    path = f"/cases/{case_id}"
    assert url == web.url + path
    login(browser, web, "wang", "inspector", path, url=url)
    d = browser.driver
    assert d.find_element(By.ID, "exceeded-hours").text == "3"
    assert len(d.find_elements(By.CSS_SELECTOR, "#hours tr.verdict-exceeded")) == 3
    chart = d.find_element(By.CSS_SELECTOR, "#chart .wide svg")
    assert chart.size["width"] > 300 and chart.find_elements(By.CSS_SELECTOR, "line.hline")
    assert len(chart.find_elements(By.CSS_SELECTOR, "line.step")) == 3
    browser.screenshot("case")
    submit(browser, "verified", note="现场核实：工艺超标")
    assert timeline_states(browser)[0] == "verified"
    submit(browser, "filed", f_case_number="麦环罚〔2026〕12号", note="立案")
    submit(browser, "ordered", date=date.today().isoformat(), f_doc_number="麦环改〔2026〕12号", note="现场送达")
    assert not d.find_elements(By.ID, "error"), d.find_element(By.ID, "error").text
    assert timeline_states(browser)[:3] == ["ordered", "filed", "verified"]
    assert "责令改正" in d.find_element(By.ID, "status").text
    assert d.find_elements(By.ID, "to-reinspected")  # only the next allowed step is offered now
    assert not d.find_elements(By.ID, "to-verified") and not d.find_elements(By.ID, "to-filed")
    browser.screenshot("case-ordered")
    # What the operator's CLI says about it, from the same database
    shown = subprocess.run([AQPIPE, "cases", "show", str(case_id), "--json"], capture_output=True, text=True,
                           timeout=60, env={**os.environ, **env,
                                            "AQPIPE_ALERTS__CASE_URL_TEMPLATE": web.cfg.alerts.case_url_template})
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["status"] == "ordered" and view["case_number"] == "麦环罚〔2026〕12号" and view["url"] == url
    assert [(h["to_state"], h["by"], h["note"]) for h in view["history"] if h["action"] == "transition"] == [
        ("verified", "wang", "现场核实：工艺超标"), ("filed", "wang", "立案"), ("ordered", "wang", "现场送达")]
    browser.get("/cases")
    row = d.find_element(By.CSS_SELECTOR, f'tr[data-case="{case_id}"]')
    assert "责令改正" in row.text and "复查到期" in row.text
    browser.screenshot("cases")
    # the case page on a phone (the inspector woken at night)
    login(phone, web, "wang2", "inspector", path)
    wide = phone.driver.execute_script("""
        return [...document.querySelectorAll('main *')].filter(e => e.getBoundingClientRect().right > 392
                 && !e.closest('.scroll')).map(e => e.tagName + '.' + e.className + ' ' + e.getBoundingClientRect().right)""")
    assert wide == []  # nothing but the wide tables (which scroll by themselves) leaves a phone's screen
    narrow = phone.driver.find_element(By.CSS_SELECTOR, "#chart .narrow svg")
    assert narrow.is_displayed() and not phone.driver.find_element(By.CSS_SELECTOR, "#chart .wide svg").is_displayed()
    phone.screenshot("case-phone")


def test_a_viewer_finds_no_transition_form(browser, web):
    case_id = open_case(web.ctx.engine)
    login(browser, web, "zhao", "viewer", f"/cases/{case_id}")
    d = browser.driver
    assert not d.find_elements(By.CSS_SELECTOR, "form.transition")
    assert d.find_element(By.ID, "no-actions").is_displayed()
    # a forged POST from this viewer's own session (with its CSRF token) is refused
    browser.get("/account")
    csrf = d.find_element(By.CSS_SELECTOR, 'form[action="/logout"] input[name=csrf]').get_attribute("value")
    d.execute_script("""
        const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];
        for (const [k, v] of Object.entries({csrf: arguments[1], to_state: 'verified'})) {
          const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); }
        document.body.appendChild(f); f.submit();""", f"/cases/{case_id}/transition", csrf)
    assert "403" in d.find_element(By.CSS_SELECTOR, "h1.error").text
    from alerts.cases.store import get_case

    with web.ctx.engine.begin() as conn:
        assert get_case(conn, case_id).status == "open"


def test_operator_enters_a_mark_and_sees_its_effect(browser, web):
    case_id = open_case(web.ctx.engine, hours=3)
    from alerts.cases.store import get_case

    with web.ctx.engine.begin() as conn:
        first = get_case(conn, case_id).hours[0]["hour_end"]
    login(browser, web, "li", "operator", "/marks")
    d = browser.driver
    form = d.find_element(By.ID, "add-mark")
    form.find_element(By.NAME, "outlet").send_keys("TS-GAS-01")
    Select(form.find_element(By.NAME, "pollutant")).select_by_value("so2")
    Select(form.find_element(By.NAME, "type")).select_by_value("startup")
    from datetime import datetime, timedelta, timezone

    start = datetime.fromisoformat(first).astimezone(timezone(timedelta(hours=8))) - timedelta(hours=1)
    for name, value in (("start", start), ("end", start + timedelta(hours=1))):
        d.execute_script("arguments[0].value = arguments[1]", form.find_element(By.NAME, name),
                         value.strftime("%Y-%m-%dT%H:%M"))
    form.find_element(By.NAME, "reason").send_keys("锅炉启炉，DCS 记录为证")
    # The marks page lists marks before the post too: read the row only once the answer
    # page has replaced this one (else it is the old page's, gone stale under our hands).
    click_through(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    row = d.find_element(By.CSS_SELECTOR, "table.marks tbody tr")
    assert "启炉" in row.text and f"案件 #{case_id}" in row.text and "不参与判定" in row.text
    browser.screenshot("marks")
    browser.get(f"/cases/{case_id}")
    assert d.find_element(By.ID, "exceeded-hours").text == "2"
    assert d.find_elements(By.CSS_SELECTOR, "#chart .wide svg rect.band")


def test_alerts_page(browser, web):
    from datetime import datetime, timedelta, timezone

    from alerts.cases.schema import alerts as alerts_table

    case_id = open_case(web.ctx.engine)
    now = datetime.now(timezone.utc)
    with web.ctx.engine.begin() as conn:
        conn.execute(alerts_table.insert().values(
            fingerprint="9f2c", rule="stack_exceedance", alertname="StackExceedance",
            labels={"outlet": "TS-GAS-01", "pollutant": "so2", "team": "inspectors", "severity": "critical"},
            annotations={"summary": "TS-GAS-01 SO2 折算均值 70.5 mg/m³ 超过限值 50"}, state="firing",
            fired_at=now - timedelta(hours=1), value=70.5, threshold=50.0, case_id=case_id, updated_at=now))
    login(browser, web, "zhao", "viewer", "/alerts")
    link = browser.driver.find_element(By.CSS_SELECTOR, f'#firing a[href="/cases/{case_id}"]')
    browser.screenshot("alerts")
    click_through(browser.driver, link)
    assert browser.driver.current_url.endswith(f"/cases/{case_id}")


def test_disclosure_lists_a_closed_penalised_case_and_not_an_open_one(browser, web):
    closed = open_case(web.ctx.engine, outlet="TS-GAS-01")
    close_with_penalty(web.ctx.engine, closed)
    open_case(web.ctx.engine, outlet="TS-COAL-02")
    browser.get("/disclosure")
    cards = browser.driver.find_elements(By.CSS_SELECTOR, "article.disclosed")
    assert len(cards) == 1
    text = cards[0].text
    assert ENTERPRISE in text and PERMIT in text and "限产" in text
    assert "TS-COAL-02" not in browser.driver.page_source and "张检查" not in browser.driver.page_source
    browser.screenshot("disclosure")
