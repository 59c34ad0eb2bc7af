"""Browser fixtures: Debian's chromium driven by Selenium through Debian's chromium-driver,
and `aqpipe web` served by real uvicorn on a free loopback port.

The driver and the browser come from the same Debian source package, so their versions
always match; nothing is downloaded (Selenium Manager is bypassed by giving the driver's
path). A browser that cannot start fails the test, never skips it.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from alerts.web.context import WebContext
from alerts.web.service import WebService
from aqpipe.config import load_config

ROOT = Path(__file__).resolve().parents[2]
# Where the pages' screenshots go: a temporary folder, so a test run leaves the work tree
# clean; `make screenshots` sets AQPIPE_SCREENSHOTS=docs/screenshots to refresh the README's.
SCREENSHOTS = Path(os.environ.get("AQPIPE_SCREENSHOTS") or tempfile.mkdtemp(prefix="aqpipe-screenshots-"))


@pytest.fixture(scope="session", autouse=True)
def _screenshots_folder() -> Iterator[None]:
    """The temporary screenshots folder goes with the session (each run left one in /tmp)."""
    yield
    if not os.environ.get("AQPIPE_SCREENSHOTS"):
        shutil.rmtree(SCREENSHOTS, ignore_errors=True)
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--lang=zh-CN"]


class Browser:
    """A Chromium window with the helpers the tests need (screenshots of whole pages)."""

    def __init__(self, base_url: str, width: int = 1200, height: int = 900, mobile: bool = False) -> None:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        self._profile = tempfile.TemporaryDirectory(prefix="aqpipe-chromium-")
        options.add_argument(f"--user-data-dir={self._profile.name}")
        options.add_argument(f"--window-size={width},{height}")
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        if mobile:  # headless windows are at least 500 px wide: emulate the phone's viewport instead
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": True})
        self.base_url = base_url
        self.width = width

    def get(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def screenshot(self, name: str) -> Path:
        """The whole page (not only the window) as SCREENSHOTS/NAME.png."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics["cssContentSize"]
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
        path = SCREENSHOTS / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        self.driver.quit()
        self._profile.cleanup()


def click_through(driver, element) -> None:
    """Click what submits a form or follows a link, and return once the answer page has
    replaced this one and finished loading: reading the page before that would read the
    old one. The old page is marked on its window object, which a new page does not have
    (no element reference is kept: Chromium answers for a node of a page being replaced
    with errors other than a stale reference)."""
    driver.execute_script("window.__aqpipeOldPage = true")
    element.click()

    def replaced(d) -> bool:
        try:
            return bool(d.execute_script("return document.readyState === 'complete' && !window.__aqpipeOldPage"))
        except WebDriverException:  # between the two pages
            return False

    WebDriverWait(driver, 10).until(replaced)


def login(b, web, name: str, role: str, next_path: str, url: str | None = None) -> None:
    """Open `url` (default: this server's `next_path`) logged out, log in on the form it
    leads to, and land back on it."""
    password = web.ctx.users.add_user(name, role)
    b.driver.get(url or web.url + next_path)  # not logged in: the desk sends the browser to the login form
    assert "/login?next=" in b.driver.current_url
    b.driver.find_element(By.NAME, "username").send_keys(name)
    b.driver.find_element(By.NAME, "password").send_keys(password)
    click_through(b.driver, b.driver.find_element(By.ID, "login"))
    assert b.driver.current_url.endswith(next_path)


def timeline_states(b) -> list[str]:
    return [e.get_attribute("data-to") for e in b.driver.find_elements(By.CSS_SELECTOR, "#timeline li.event-transition")]


def submit(b, to_state: str, **fields: str) -> None:
    form = b.driver.find_element(By.ID, f"to-{to_state}")
    for name, value in fields.items():
        field = form.find_element(By.NAME, name)
        if field.get_attribute("type") == "date":  # typed the way a user's date picker fills it
            b.driver.execute_script("arguments[0].value = arguments[1]", field, value)
        else:
            field.send_keys(value)
    click_through(b.driver, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))


@pytest.fixture
def web_env(env) -> dict[str, str]:
    """The environment of this test's `aqpipe web` (a test module may extend it)."""
    import servers

    port = servers.free_port()
    # case_url (what an alert links to) points at this test's server, as make run's points at 9120
    return {**env, "AQPIPE_WEB__PORT": str(port),
            "AQPIPE_ALERTS__CASE_URL_TEMPLATE": f"http://127.0.0.1:{port}/cases/{{case_id}}"}


@pytest.fixture
def web_config(web_env, influx):
    return load_config(None, web_env)


@pytest.fixture
def web(web_config) -> Iterator[WebService]:
    """`aqpipe web` on real uvicorn, in this process (so tests can use its users file)."""
    service = WebService(web_config, WebContext.from_config(web_config))
    service.start()
    yield service
    service.stop()


@pytest.fixture
def browser(web) -> Iterator[Browser]:
    b = Browser(web.url)
    yield b
    b.close()


@pytest.fixture
def phone(web) -> Iterator[Browser]:
    """A phone-sized window (390 px wide, like most phones in portrait)."""
    b = Browser(web.url, width=390, height=844, mobile=True)
    yield b
    b.close()
