"""The case desk, the JSON API and the disclosure page without a browser: TestClient
against the app on a real case database (SQLite file), cases made by the store."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from alerts.cases import store
from alerts.cases.marks import list_marks
from alerts.cases.schema import alerts as alerts_table
from alerts.web.app import create_app
from alerts.web.context import WebContext
from aqpipe.config import load_config

pytestmark = pytest.mark.integration
UTC = timezone.utc
ENTERPRISE = "麦积区示例燃气供热站"
PERMIT = "91620503MA002XXXXX001P"


def stack_hour(hour_end: datetime, avg_o2corr: float, *, outlet: str = "TS-GAS-01", pollutant: str = "so2",
               exceeded: bool = True) -> store.StackHour:
    """One hour with its 60 minutes of evidence; minutes 10-14 carry a data-logger flag."""
    minutes = [{"time": (hour_end - timedelta(minutes=59 - i)).isoformat(),
                "value": round(avg_o2corr * 0.62 + (i % 7) - 3, 1), "o2": 9.0,
                "flag": "D" if 10 <= i < 15 else "N"} for i in range(60)]
    return store.StackHour(outlet=outlet, enterprise=ENTERPRISE, permit=PERMIT, pollutant=pollutant, limit=50.0,
                           limit_source="permit", reference_o2=3.5, hour_end=hour_end, avg=avg_o2corr * 0.62,
                           avg_o2corr=avg_o2corr, o2=9.0, valid_minutes=60, exceeded=exceeded, minutes=minutes)


def open_case(engine, outlet: str = "TS-GAS-01", hours: int = 3, last_end: datetime | None = None) -> int:
    """A case as the engine would open it: `hours` consecutive exceeded hours ending at last_end."""
    last_end = last_end or datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    ids = set()
    with engine.begin() as conn:
        for k in range(hours):
            end = last_end - timedelta(hours=hours - 1 - k)
            ids.add(store.record_exceeded_hour(conn, stack_hour(end, 62.5 + 4 * k, outlet=outlet),
                                               end + timedelta(minutes=2)))
    assert len(ids) == 1
    return ids.pop()


def close_with_penalty(engine, case_id: int, by: str = "张检查", note: str = "内部备注：现场检查") -> None:
    """verified -> filed -> ordered (with a fine) -> reinspected (corrected) -> closed with a production limit."""
    today = datetime.now(UTC).astimezone(timezone(timedelta(hours=8))).date()
    steps = [("verified", {}, None), ("filed", {"case_number": f"麦环罚〔2026〕{case_id}号"}, None),
             ("ordered", {"doc_number": f"麦环改〔2026〕{case_id}号", "fine": 100000}, today),
             ("reinspected", {"result": "corrected"}, today),
             ("closed", {"outcome": "已整改，罚款已缴纳", "measures": [
                 {"kind": "production_limit", "start": today.isoformat(), "doc_number": f"麦环限〔2026〕{case_id}号",
                  "description": "限产 50%"}]}, today)]
    for to, fields, when in steps:
        with engine.begin() as conn:
            store.transition(conn, case_id, to, by, note=note, date=when, fields=fields, at=datetime.now(UTC))


@pytest.fixture(params=["sqlite", "postgresql"])
def ctx(request, env) -> Iterator[WebContext]:
    """The app's context on the default SQLite file, and on a real PostgreSQL (a bureau's deployment)."""
    if request.param == "postgresql":
        env = {**env, "AQPIPE_CASES__DATABASE_URL": request.getfixturevalue("postgresql_url")}
    c = WebContext.from_config(load_config(None, env))
    yield c
    c.engine.dispose()


@pytest.fixture
def client(ctx):
    with TestClient(create_app(ctx), follow_redirects=False) as c:
        yield c


def marks_of(conn) -> list:
    return list_marks(conn, include_removed=True)


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def login_as(client: TestClient, ctx: WebContext, name: str, role: str) -> str:
    """Log in (a new user of that role); returns the session's CSRF token."""
    password = ctx.users.add_user(name, role)
    page = client.get("/login")
    r = client.post("/login", data={"username": name, "password": password, "csrf": _csrf(page.text)})
    assert r.status_code == 303
    return _csrf(client.get("/account").text)


def bearer(ctx: WebContext, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ctx.users.add_token(f'{role}-bot', role)}"}


# -- pages ------------------------------------------------------------------------------------
def test_a_case_page_without_login_redirects_to_the_login(client, ctx):
    case_id = open_case(ctx.engine)
    r = client.get(f"/cases/{case_id}")
    assert r.status_code == 303 and r.headers["location"] == f"/login?next=/cases/{case_id}"
    assert client.get("/cases").status_code == 303 and client.get("/marks").status_code == 303


def test_a_case_that_does_not_exist_is_404(client, ctx):
    login_as(client, ctx, "wang", "inspector")
    r = client.get("/cases/999999")
    assert r.status_code == 404 and "案件 999999 不存在" in r.text
    assert client.get("/cases/999999/export.csv").status_code == 404


def test_the_case_page_shows_facts_hours_chart_and_only_the_allowed_transitions(client, ctx):
    case_id = open_case(ctx.engine, hours=3)
    login_as(client, ctx, "wang", "inspector")
    html = client.get(f"/cases/{case_id}").text
    assert ENTERPRISE in html and PERMIT in html and 'id="exceeded-hours">3<' in html
    assert html.count('class="verdict-exceeded"') == 3
    assert '<b id="worst">70.5</b>' in html and "超出 41%" in html  # (70.5 - 50) / 50
    chart = html[html.index('<div class="casechart wide">'):html.index("</svg>", html.index('<div class="casechart wide">'))]
    assert 'class="hline"' in chart and chart.count('class="step"') == 3 and chart.count('class="marker"') == 15
    assert 'id="to-verified"' in html and 'id="to-dismissed"' in html and 'id="to-filed"' not in html
    assert f'href="/cases/{case_id}/export.csv"' in html


def test_the_case_page_shows_the_hours_not_judged_and_the_law_that_applies(client, ctx):
    from alerts.cases.schema import alert_hours

    last = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    case_id = open_case(ctx.engine, hours=1, last_end=last - timedelta(hours=2))
    gap = last - timedelta(hours=1)  # the boiler was stopped: the engine did not judge this hour
    with ctx.engine.begin() as conn:
        assert store.record_exceeded_hour(conn, stack_hour(last, 66.0), last) == case_id
        now = datetime.now(UTC)
        conn.execute(alerts_table.insert().values(
            fingerprint="fp-nj", rule="stack_exceedance", alertname="StackExceedance", labels={}, annotations={},
            state="firing", fired_at=now, case_id=case_id, updated_at=now))
        conn.execute(alert_hours.insert().values(fingerprint="fp-nj", hour_end=gap,
                                                 verdict="not_judged", reason="停炉 (status stopped)"))
        view = store.get_case(conn, case_id).to_json()
    login_as(client, ctx, "zhao", "viewer")
    html = client.get(f"/cases/{case_id}").text
    assert [h["reason"] for h in view["not_judged_hours"]] == ["停炉 (status stopped)"]
    assert "not_judged_hours" in html and "停炉 (status stopped)" in html
    chart = html[html.index('<div class="casechart wide">'):html.index("</svg>", html.index('<div class="casechart wide">'))]
    assert "未判定：停炉 (status stopped)" in chart and chart.count('class="step"') == 2
    for c in view["citations"]:
        assert c["law"] in html


def test_a_viewer_sees_no_transition_form_and_a_forged_post_is_refused(client, ctx):
    case_id = open_case(ctx.engine)
    csrf = login_as(client, ctx, "zhao", "viewer")
    html = client.get(f"/cases/{case_id}").text
    assert 'action="/cases/' not in html and 'id="no-actions"' in html
    r = client.post(f"/cases/{case_id}/transition", data={"csrf": csrf, "to_state": "verified"})
    assert r.status_code == 403
    r = client.post("/marks", data={"csrf": csrf, "outlet": "TS-GAS-01", "type": "stopped",
                                    "start": "2026-11-28T08:00", "reason": "forged"})
    assert r.status_code == 403
    with ctx.engine.begin() as conn:
        assert store.get_case(conn, case_id).status == "open"
        assert marks_of(conn) == []


def test_a_transition_without_csrf_is_refused(client, ctx):
    case_id = open_case(ctx.engine)
    login_as(client, ctx, "wang", "inspector")
    assert client.post(f"/cases/{case_id}/transition", data={"to_state": "verified"}).status_code == 403
    assert client.post(f"/cases/{case_id}/transition", data={"to_state": "verified", "csrf": "f" * 64}
                       ).status_code == 403
    with ctx.engine.begin() as conn:
        assert store.get_case(conn, case_id).status == "open"


def test_inspector_moves_a_case_and_each_step_is_in_the_timeline(client, ctx):
    case_id = open_case(ctx.engine)
    csrf = login_as(client, ctx, "wang", "inspector")
    today = date.today().isoformat()
    for to, extra in (("verified", {"f_finding": "工艺超标"}), ("filed", {"f_case_number": "麦环罚〔2026〕7号"}),
                      ("ordered", {"date": today, "f_doc_number": "麦环改〔2026〕7号"})):
        r = client.post(f"/cases/{case_id}/transition", data={"csrf": csrf, "to_state": to, "note": f"步骤 {to}",
                                                               **extra})
        assert r.status_code == 303, r.text
    html = client.get(f"/cases/{case_id}").text
    timeline = html[html.index('id="timeline"'):]
    for to in ("verified", "filed", "ordered"):
        assert f'data-to="{to}"' in timeline and f"步骤 {to}" in timeline
    with ctx.engine.begin() as conn:
        view = store.get_case(conn, case_id)
    assert view.status == "ordered" and view.case_number == "麦环罚〔2026〕7号"
    assert [h["by"] for h in view.history if h["action"] == "transition"] == ["wang"] * 3


def test_a_refused_transition_says_why(client, ctx):
    case_id = open_case(ctx.engine)
    csrf = login_as(client, ctx, "wang", "inspector")
    r = client.post(f"/cases/{case_id}/transition", data={"csrf": csrf, "to_state": "closed"})
    assert r.status_code == 409 and "open -&gt; closed" in r.text and "verified, dismissed" in r.text


def test_html_in_a_note_or_a_mark_reason_is_escaped(client, ctx):
    case_id = open_case(ctx.engine)
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    with ctx.engine.begin() as conn:
        store.transition(conn, case_id, "verified", "wang", note=evil, at=datetime.now(UTC))
    csrf = login_as(client, ctx, "li", "operator")
    with ctx.engine.begin() as conn:
        first_hour = store.get_case(conn, case_id).hours[0]["hour_end"]
    start = datetime.fromisoformat(first_hour).astimezone(timezone(timedelta(hours=8))) - timedelta(minutes=30)
    r = client.post("/marks", data={"csrf": csrf, "outlet": "TS-GAS-01", "pollutant": "so2", "type": "fault",
                                    "start": start.strftime("%Y-%m-%dT%H:%M"), "end": "", "reason": evil})
    assert r.status_code == 303, r.text
    for page in (f"/cases/{case_id}", "/marks"):
        html = client.get(page).text
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def test_an_operators_mark_takes_hours_out_of_judgement_and_shows_its_effect(client, ctx):
    case_id = open_case(ctx.engine, hours=3)
    csrf = login_as(client, ctx, "li", "operator")
    with ctx.engine.begin() as conn:
        hours = store.get_case(conn, case_id).hours
    start = datetime.fromisoformat(hours[0]["hour_end"]).astimezone(timezone(timedelta(hours=8))) - timedelta(hours=1)
    end = start + timedelta(hours=1)
    r = client.post("/marks", data={"csrf": csrf, "outlet": "TS-GAS-01", "pollutant": "so2", "type": "startup",
                                    "start": start.strftime("%Y-%m-%dT%H:%M"), "end": end.strftime("%Y-%m-%dT%H:%M"),
                                    "reason": "启炉", "evidence_ref": "DCS 截图"})
    assert r.status_code == 303, r.text
    marks_html = client.get("/marks").text
    assert f'<a href="/cases/{case_id}">案件 #{case_id}</a>' in marks_html and "不参与判定" in marks_html
    case_html = client.get(f"/cases/{case_id}").text
    assert 'class="verdict-marked"' in case_html and 'id="exceeded-hours">2<' in case_html
    assert 'class="band"' in case_html  # the marked interval on the chart
    # an operator may not move a case
    assert client.post(f"/cases/{case_id}/transition", data={"csrf": csrf, "to_state": "verified"}).status_code == 403


def test_cases_list_filters_and_puts_overdue_first(client, ctx):
    a = open_case(ctx.engine, outlet="TS-GAS-01")
    b = open_case(ctx.engine, outlet="TS-COAL-02", last_end=datetime.now(UTC).replace(minute=0, second=0,
                                                                                         microsecond=0)
                  - timedelta(days=5))
    login_as(client, ctx, "wang", "inspector")
    html = client.get("/cases").text
    assert html.index(f'data-case="{b}"') < html.index(f'data-case="{a}"')  # b's report is overdue
    assert "企业报告到期" in html and "已逾期" in html
    only = client.get("/cases", params={"outlet": "TS-GAS-01"}).text
    assert f'data-case="{a}"' in only and f'data-case="{b}"' not in only


def test_alerts_page_lists_firing_and_recently_resolved_with_case_links(client, ctx):
    case_id = open_case(ctx.engine)
    now = datetime.now(UTC)
    with ctx.engine.begin() as conn:
        for fp, state, resolved in (("f1", "firing", None), ("f2", "resolved", now - timedelta(hours=1)),
                                    ("f3", "resolved", now - timedelta(days=3))):
            conn.execute(alerts_table.insert().values(
                fingerprint=fp, rule="stack_exceedance", alertname="StackExceedance",
                labels={"outlet": "TS-GAS-01", "pollutant": "so2", "team": "inspectors"},
                annotations={"summary": f"SO2 超标 {fp}"}, state=state, fired_at=now - timedelta(hours=2),
                resolved_at=resolved, value=62.5, threshold=50.0, case_id=case_id, updated_at=now))
    login_as(client, ctx, "zhao", "viewer")
    html = client.get("/alerts").text
    assert 'data-fingerprint="f1"' in html and 'data-fingerprint="f2"' in html and 'data-fingerprint="f3"' not in html
    assert f'href="/cases/{case_id}"' in html


def test_disclosure_lists_closed_penalised_cases_and_nothing_internal(client, ctx):
    closed = open_case(ctx.engine, outlet="TS-GAS-01")
    close_with_penalty(ctx.engine, closed, by="张检查", note="内部备注：现场检查")
    still_open = open_case(ctx.engine, outlet="TS-COAL-02")
    with ctx.engine.begin() as conn:
        open_view = store.get_case(conn, still_open)
        minute_value = str(store.get_case(conn, closed).hours[0]["minutes"][0]["value"])
    html = client.get("/disclosure").text  # public: no login
    assert html.count('class="card disclosed"') == 1
    assert ENTERPRISE in html and PERMIT in html and "限产" in html and f"麦环限〔2026〕{closed}号" in html
    assert "超过排放限值" in html and "共 3 小时超标" in html
    assert "张检查" not in html and "内部备注" not in html and "TS-GAS-01" not in html
    assert f"麦环罚〔2026〕{closed}号" not in html  # the internal filing number is not a published decision
    assert f">{minute_value}<" not in html and "minutes" not in html
    assert open_view.status == "open"


# -- JSON API ------------------------------------------------------------------------------------
def test_api_reads_cases_with_any_role_and_only_an_inspector_moves_them(client, ctx):
    case_id = open_case(ctx.engine)
    viewer, operator, inspector = bearer(ctx, "viewer"), bearer(ctx, "operator"), bearer(ctx, "inspector")
    assert client.get("/api/v1/cases").status_code == 401
    listed = client.get("/api/v1/cases", headers=viewer).json()
    assert [c["id"] for c in listed] == [case_id] and listed[0]["exceeded_hours"] == 3
    one = client.get(f"/api/v1/cases/{case_id}", headers=viewer).json()
    assert one["url"] == f"http://127.0.0.1:9120/cases/{case_id}" and "minutes" not in one["hours"][0]
    assert len(client.get(f"/api/v1/cases/{case_id}?minutes=true", headers=viewer).json()["hours"][0]["minutes"]) == 60
    assert client.get("/api/v1/cases/424242", headers=viewer).status_code == 404
    body = {"to": "verified", "note": "核实"}
    assert client.post(f"/api/v1/cases/{case_id}/transition", json=body, headers=viewer).status_code == 403
    assert client.post(f"/api/v1/cases/{case_id}/transition", json=body, headers=operator).status_code == 403
    r = client.post(f"/api/v1/cases/{case_id}/transition", json=body, headers=inspector)
    assert r.status_code == 200 and r.json()["status"] == "verified"
    assert r.json()["history"][-1]["by"] == "inspector-bot"
    refused = client.post(f"/api/v1/cases/{case_id}/transition", json={"to": "closed"}, headers=inspector)
    assert refused.status_code == 409 and refused.json()["allowed"] == ["filed", "dismissed"]
    csv_text = client.get(f"/api/v1/cases/{case_id}/export?format=csv", headers=viewer).text
    assert csv_text.splitlines()[0].startswith("case_id,") and len(csv_text.splitlines()) == 4
    assert client.get(f"/api/v1/cases/{case_id}/export?format=json", headers=viewer).json()["id"] == case_id


def test_api_marks_only_an_operator_adds_or_removes(client, ctx):
    case_id = open_case(ctx.engine)
    operator, inspector = bearer(ctx, "operator"), bearer(ctx, "inspector")
    with ctx.engine.begin() as conn:
        first_end = datetime.fromisoformat(store.get_case(conn, case_id).hours[0]["hour_end"])
    mark = {"outlet": "TS-GAS-01", "pollutant": "so2", "type": "停炉", "start": (first_end - timedelta(hours=1))
            .isoformat(), "end": first_end.isoformat(), "reason": "停炉检修"}
    assert client.post("/api/v1/marks", json=mark, headers=inspector).status_code == 403
    r = client.post("/api/v1/marks", json=mark, headers=operator)
    assert r.status_code == 201 and r.json()["type"] == "shutdown"
    mark_id = r.json()["id"]
    assert r.json()["history"][0]["data"]["hours"][0]["case_id"] == case_id
    assert client.get(f"/api/v1/cases/{case_id}", headers=operator).json()["exceeded_hours"] == 2
    assert [m["id"] for m in client.get("/api/v1/marks", headers=inspector).json()] == [mark_id]
    naive = {**mark, "start": "2026-11-28T08:00:00"}
    assert client.post("/api/v1/marks", json=naive, headers=operator).status_code == 422
    assert client.post(f"/api/v1/marks/{mark_id}/remove", json={"reason": "录错"}, headers=operator).status_code == 200
    assert client.get(f"/api/v1/cases/{case_id}", headers=operator).json()["exceeded_hours"] == 3
    assert client.post("/api/v1/marks/9999/remove", json={"reason": "x"}, headers=operator).status_code == 404


def test_api_alerts(client, ctx):
    now = datetime.now(UTC)
    with ctx.engine.begin() as conn:
        conn.execute(alerts_table.insert().values(
            fingerprint="abc", rule="stack_exceedance", alertname="StackExceedance", labels={"outlet": "TS-GAS-01"},
            annotations={}, state="firing", fired_at=now, updated_at=now))
    doc = client.get("/api/v1/alerts", headers=bearer(ctx, "viewer")).json()
    assert [a["fingerprint"] for a in doc["firing"]] == ["abc"] and doc["resolved"] == []
