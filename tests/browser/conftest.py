"""Browser fixtures: Debian's chromium driven by Selenium through Debian's chromium-driver,
and `aqpipe web` served by real uvicorn on a free loopback port.

The driver and the browser come from the same Debian source package, so their versions
always match; nothing is downloaded (Selenium Manager is bypassed by giving the driver's
path). A browser that cannot start fails the test, never skips it.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from alerts.web.context import WebContext
from alerts.web.service import WebService
from aqpipe.config import load_config

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
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
        """The whole page (not only the window) as docs/screenshots/NAME.png."""
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


@pytest.fixture
def web_config(env, influx):
    import servers

    port = servers.free_port()
    # case_url (what an alert links to) points at this test's server, as make run's points at 9120
    return load_config(None, {**env, "AQPIPE_WEB__PORT": str(port),
                              "AQPIPE_ALERTS__CASE_URL_TEMPLATE": f"http://127.0.0.1:{port}/cases/{{case_id}}"})


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
