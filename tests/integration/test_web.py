"""aqpipe web without a browser: FastAPI's TestClient against the app on a real InfluxDB."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from alerts.web.app import create_app
from alerts.web.context import WebContext
from alerts.web.sessions import COOKIE
from aqpipe.config import load_config
from aqpipe.influx import make_writer

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)
# (station, aqi, category, primary) at the latest hour; the stations are deploy/config's.
LATEST = [("620503-001", 42, 1, ""), ("620503-002", 87, 2, "pm10"), ("620503-003", 230, 5, "pm25,pm10")]


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * 10**9


def write_aqi(config, latest_end: datetime) -> None:
    """24 hours of cn-2026 points per station, the last one as in LATEST; plus a cn-2012
    point at the latest hour of the first station (as `cn_standards = "both"` writes)."""
    lines = []
    for k, (station, aqi, cat, primary) in enumerate(LATEST):
        for h in range(24):
            t = latest_end - HOUR * (23 - h)
            a, c, p = (aqi, cat, primary) if h == 23 else (20 + h + k, 1, "")
            lines.append(f'aqi_hourly,standard=cn-2026,station={station} aqi={a}i,category={c}i,primary="{p}",'
                         f"iaqi_pm25={a}i,conc_pm25={a / 2} {_ns(t)}")
    lines.append(f'aqi_hourly,standard=cn-2012,station=620503-001 aqi=55i,category=2i,primary="pm25" {_ns(latest_end)}')
    # a US point must never show on the Chinese page
    lines.append(f'aqi_hourly,standard=us,station=620503-001 aqi=99i,category=2i,primary="pm25" {_ns(latest_end)}')
    make_writer(config.influx).write(lines)


@pytest.fixture
def web_config(env, tmp_path):
    return load_config(None, {**env, "AQPIPE_WEB__LOGIN_MAX_FAILURES": "3"})


@pytest.fixture
def ctx(web_config, influx) -> WebContext:
    return WebContext.from_config(web_config)


@pytest.fixture
def client(ctx):
    with TestClient(create_app(ctx), follow_redirects=False) as c:
        yield c


@pytest.fixture
def latest_end() -> datetime:
    return datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - HOUR


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def login(client: TestClient, username: str, password: str = "", token: str = "", next_path: str = "/account"):
    page = client.get("/login", params={"next": next_path})
    assert page.status_code == 200
    return client.post("/login", data={"username": username, "password": password, "token": token,
                                       "csrf": _csrf(page.text), "next": next_path})


def test_aqi_json_shows_the_numbers_stored_in_aqi_hourly_under_the_standard_in_force(client, web_config, influx,
                                                                                     latest_end):
    write_aqi(web_config, latest_end)
    doc = client.get("/aqi.json").json()
    stored = {r["station"]: r for r in influx.rows(
        "SELECT aqi, category, \"primary\" FROM aqi_hourly WHERE standard = 'cn-2026' GROUP BY station "
        "ORDER BY time DESC LIMIT 1")}
    shown = {s["station"]: s for s in doc["stations"] if s["aqi"] is not None}
    assert set(shown) == set(stored) == {s for s, *_ in LATEST}
    for station, row in stored.items():
        s = shown[station]
        assert (s["aqi"], s["category"]["level"]) == (row["aqi"], row["category"])
        assert s["primary"] == [p for p in row["primary"].split(",") if p]
        assert s["standard"] == "cn-2026"  # not the cn-2012 or us point of the same hour
        assert datetime.fromisoformat(s["time"]) == latest_end
        assert len(s["last_24h"]) == 24 and s["last_24h"][-1]["aqi"] == row["aqi"]
    assert shown["620503-003"]["category"]["colour"] == "#99004c"
    assert shown["620503-003"]["category"]["advice"].startswith("儿童、老年人和心脏病、肺病患者应停留在室内")
    summary = {c["level"]: c for c in doc["summary"]}
    assert summary[1]["count"] == 1 and summary[2]["count"] == 1 and summary[5]["count"] == 1
    assert summary[5]["share"] == pytest.approx(1 / 3, abs=1e-3)
    # registry stations without data are listed, without numbers
    assert any(s["aqi"] is None for s in doc["stations"])


def test_aqi_page_renders_each_station_in_its_category_colour(client, web_config, latest_end):
    write_aqi(web_config, latest_end)
    r = client.get("/aqi")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    block = html[html.index('id="station-620503-003"'):]
    block = block[:block.index("</article>")]
    assert 'class="aqi cat5"' in block and 'data-field="aqi">230<' in block
    assert "重度污染" in block and "PM2.5, PM10" in block and "<svg" in block
    assert "首要污染物 <code>primary</code>" in html  # Chinese label with the field code beside it
    css = client.get("/categories.css").text
    assert ".cat5{background:#99004c;color:#ffffff}" in css
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # nothing from the internet
    assert "script-src" not in r.headers["content-security-policy"] and "default-src 'none'" in r.headers[
        "content-security-policy"]


def test_a_malformed_point_shows_that_station_without_data_and_the_rest_as_usual(client, web_config, latest_end,
                                                                                caplog):
    write_aqi(web_config, latest_end)
    # category 9 does not exist in HJ 633: a writer's bug, not something to paint
    make_writer(web_config.influx).write([f'aqi_hourly,standard=cn-2026,station=620503-004 aqi=80i,category=9i,'
                                          f'primary="pm10" {_ns(latest_end)}'])
    r = client.get("/aqi.json")
    assert r.status_code == 200
    shown = {s["station"]: s for s in r.json()["stations"]}
    assert shown["620503-004"]["aqi"] is None and shown["620503-003"]["aqi"] == 230
    assert "event=aqi_point_invalid" in caplog.text and "620503-004" in caplog.text


def test_aqi_page_says_so_when_influxdb_is_unreachable(env, tmp_path):
    cfg = load_config(None, {**env, "AQPIPE_INFLUX__URL": "http://127.0.0.1:1"})
    with TestClient(create_app(WebContext.from_config(cfg))) as c:
        r = c.get("/aqi")
        assert r.status_code == 503 and "InfluxDB" in r.text
        assert c.get("/aqi.json").status_code == 503


def test_a_page_that_needs_a_login_redirects_to_the_login_with_next(client):
    r = client.get("/account")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/account"


def test_login_with_password_sets_a_hardened_session_cookie(client, ctx):
    password = ctx.users.add_user("wang", "inspector")
    r = login(client, "wang", password)
    assert r.status_code == 303 and r.headers["location"] == "/account"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    page = client.get("/account")
    assert page.status_code == 200 and 'id="role">inspector<' in page.text


def test_cookie_is_secure_when_configured(env, influx):
    cfg = load_config(None, {**env, "AQPIPE_WEB__COOKIE_SECURE": "true"})
    ctx = WebContext.from_config(cfg)
    password = ctx.users.add_user("wang", "inspector")
    with TestClient(create_app(ctx), base_url="https://testserver", follow_redirects=False) as c:
        r = login(c, "wang", password)
        assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]


def test_login_with_an_api_token(client, ctx):
    token = ctx.users.add_token("duty-board", "viewer")
    assert login(client, "", token=token).status_code == 303
    assert 'id="who">duty-board<' in client.get("/account").text


def test_login_form_without_csrf_is_refused(client, ctx):
    password = ctx.users.add_user("wang", "inspector")
    client.get("/login")
    r = client.post("/login", data={"username": "wang", "password": password})
    assert r.status_code == 403 and COOKIE not in r.headers.get("set-cookie", "")
    r = client.post("/login", data={"username": "wang", "password": password, "csrf": "0" * 64})
    assert r.status_code == 403


def test_a_forged_session_cookie_is_not_a_login(client, ctx):
    ctx.users.add_user("wang", "inspector", "a-long-password")
    forged = ctx.codec.encode(ctx.codec.new("wang")).rsplit(".", 1)[0] + ".AAAA"
    client.cookies.set(COOKIE, forged)
    assert client.get("/account").status_code == 303


def test_failed_logins_are_throttled_per_username(client, ctx):
    password = ctx.users.add_user("wang", "inspector")
    for _ in range(3):
        assert login(client, "wang", "wrong-password").status_code == 401
    r = login(client, "wang", password)  # even the right password waits now
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert "登录失败次数过多" in r.text


def test_failed_logins_are_throttled_per_client_address(client, ctx):
    password = ctx.users.add_user("li", "viewer")
    for name in ("a1", "a2", "a3"):  # one client guessing several accounts
        assert login(client, name, "guess-guess").status_code == 401
    assert login(client, "li", password).status_code == 429


def test_neither_password_nor_token_reaches_the_log(client, ctx, caplog):
    caplog.set_level(logging.DEBUG)
    password = ctx.users.add_user("wang", "inspector")
    token = ctx.users.add_token("bot", "viewer")
    login(client, "wang", "wrong-" + password)
    login(client, "wang", password)
    client.cookies.clear()
    login(client, "", token=token + "x")
    client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    text = caplog.text
    assert "event=login_failed who=user:wang" in text and "event=login who=wang" in text
    assert password not in text and token not in text and token.split("_")[-1] not in text


def test_api_needs_a_bearer_token(client, ctx):
    token = ctx.users.add_token("bot", "operator")
    assert client.get("/api/v1/me").status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer aqp_000000000000_nope-nope-nope-nope-nope"}
                      ).status_code == 401
    r = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json() == {"name": "bot", "role": "operator", "may": ["read", "mark"]}


def test_logout_needs_csrf_and_ends_the_session(client, ctx):
    password = ctx.users.add_user("wang", "inspector")
    login(client, "wang", password)
    page = client.get("/account")
    assert client.post("/logout", data={}).status_code == 403
    r = client.post("/logout", data={"csrf": _csrf(page.text)})
    assert r.status_code == 303
    client.cookies.clear()
    for k, v in r.cookies.items():
        client.cookies.set(k, v)
    assert client.get("/account").status_code == 303


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\t/evil.example", "/\\evil"])
def test_login_redirect_stays_on_this_site(client, ctx, target):
    password = ctx.users.add_user("wang", "inspector")
    r = login(client, "wang", password, next_path=target)
    assert r.headers["location"] == "/account"


def test_wrong_api_tokens_are_throttled_per_client(client, ctx):
    token = ctx.users.add_token("bot", "viewer")
    for _ in range(3):
        r = client.get("/api/v1/me", headers={"Authorization": "Bearer aqp_000000000000_guessguessguessguessguess"})
        assert r.status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 429


def test_api_is_described_by_openapi_and_no_page_loads_from_a_cdn(client):
    doc = client.get("/api/openapi.json").json()
    assert "/api/v1/cases/{case_id}/transition" in doc["paths"]
    assert client.get("/api/docs").status_code == 404  # FastAPI's Swagger page would load scripts from a CDN


def test_an_unknown_page_is_404(client):
    r = client.get("/no-such-page")
    assert r.status_code == 404 and "页面不存在" in r.text
