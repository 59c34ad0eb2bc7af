"""Logging in to the case desk in a real browser."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from tests.browser.conftest import click_through

pytestmark = pytest.mark.integration


def _login(b, username: str, password: str) -> None:
    for name, value in (("username", username), ("password", password)):
        field = b.driver.find_element(By.NAME, name)
        field.clear()  # the form keeps the username after a failed attempt
        field.send_keys(value)
    click_through(b.driver, b.driver.find_element(By.ID, "login"))


def test_inspector_logs_in_sees_the_account_and_logs_out(browser, web):
    password = web.ctx.users.add_user("wang", "inspector")
    browser.get("/account")  # needs a login: the browser lands on the form, next=/account
    assert browser.driver.current_url.endswith("/login?next=/account")
    browser.screenshot("login")
    _login(browser, "wang", "wrong password")
    assert "用户名或密码" in browser.driver.find_element(By.CSS_SELECTOR, ".flash.error").text
    _login(browser, "wang", password)
    assert browser.driver.current_url.endswith("/account")
    assert browser.driver.find_element(By.ID, "role").text == "inspector"
    cookie = browser.driver.get_cookie("aqpipe_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert browser.driver.execute_script("return document.cookie") == ""  # not readable by scripts
    click_through(browser.driver, browser.driver.find_element(By.ID, "logout"))
    assert "/login" in browser.driver.current_url
    browser.get("/account")
    assert "/login" in browser.driver.current_url
