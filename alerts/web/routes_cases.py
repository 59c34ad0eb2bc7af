"""The inspectors' case desk (login required) and the public disclosure page.

Every page reads, and every form writes, through the case store's functions
(alerts/cases/store.py, marks.py) in one transaction per request; the workflow's
allowed transitions and their fields come from alerts/cases/workflow.py. This module
only turns forms into those calls and their results into pages.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from alerts.cases import workflow
from alerts.cases.errors import CaseError, CaseNotFound, MarkError, MarkNotFound, TransitionRefused
from alerts.cases.marks import MARK_TYPES, add_mark, list_marks, mark_history, remove_mark
from alerts.cases.store import export_case, get_case, list_cases
from alerts.web.alerts_view import RECENT_RESOLVED, read_alerts
from alerts.web.charts import case_chart_svg
from alerts.web.disclosure import is_disclosed, public_case
from aqpipe.hj633 import POLLUTANT_NAMES
from alerts.web.render import render
from alerts.web.security import check_csrf, ctx, page_auth, require_user
from alerts.web.svgchart import CHINA_TZ

router = APIRouter(include_in_schema=False)
DEADLINE_LABELS = {"reinspection": "复查到期", "enterprise_report": "企业报告到期"}
# The desk's words for the workflow's fields and for audit actions (workflow.py keeps the
# English help; these are what an inspector reads beside the field code).
FIELD_LABELS = {"reason": "不予立案理由", "finding": "核实结论", "case_number": "立案编号", "doc_number": "决定书文号",
                "fine": "罚款金额（元）", "result": "复查结果", "outcome": "结案结论", "measures": "措施",
                "discharge_stopped": "已限产或停产，排放已停止（不按日连续处罚）"}
DATE_LABELS = {"filing date": "立案日期", "date the order was served": "送达日期", "re-inspection day": "复查日期",
               "date the new order was served": "新的责令改正送达日期", "closing date": "结案日期"}
CHOICE_LABELS = {"corrected": "已改正", "continuing": "违法行为继续", "refused": "拒绝、阻挠复查"}
ACTION_LABELS = {"opened": "登记待核实", "transition": "流转", "hour_added": "新增超标小时",
                 "hour_revised": "小时数据重算", "hour_withdrawn": "小时撤出证据", "hour_reinstated": "小时恢复",
                 "hour_marked": "小时被标记", "hour_unmarked": "小时标记撤销",
                 "enterprise_report_received": "收到企业报告"}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _local_time(value: str, name: str) -> datetime | None:
    """A `datetime-local` form value, read as China time."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=CHINA_TZ)
    except ValueError:
        raise MarkError(f"{name}: {value!r} is not a date and time") from None


# -- /cases ------------------------------------------------------------------------------
@router.get("/cases")
def cases_page(request: Request, status: str = "", enterprise: str = "", outlet: str = "",
               pollutant: str = "") -> Response:
    require_user(request)
    c = ctx(request)
    filters = {"status": status or None, "enterprise": enterprise or None, "outlet": outlet or None,
               "pollutant": pollutant or None}
    try:
        with c.engine.begin() as conn:
            views = list_cases(conn, c.url_template, **filters)
    except CaseError as e:
        raise HTTPException(400, str(e)) from None
    rows = []
    for v in views:
        j = v.to_json()
        pending = sorted((d for d in v.deadlines if not d["met_at"] and not d["cancelled_at"]),
                         key=lambda d: (not d["overdue"], d["due"]))
        rows.append({"case": j, "deadlines": pending})
    return render(request, "cases.html", {
        "rows": rows, "filters": {k: v or "" for k, v in filters.items()}, "states": workflow.STATES,
        "deadline_labels": DEADLINE_LABELS})


# -- /cases/{id} -------------------------------------------------------------------------
def _case_page(request: Request, case_id: int, error: str = "", status_code: int = 200,
               form: dict | None = None) -> Response:
    auth = require_user(request)
    c = ctx(request)
    try:
        with c.engine.begin() as conn:
            view = get_case(conn, case_id, c.url_template)
    except CaseNotFound:
        raise HTTPException(404, f"案件 {case_id} 不存在 (no case {case_id})") from None
    j = view.to_json(minutes=True)
    transitions = [t for t in workflow.TRANSITIONS if t.from_state == view.status and t.to_state in view.allowed_next]
    can_move = auth.user is not None and auth.user.may("transition")
    pollutant = POLLUTANT_NAMES.get(view.pollutant, view.pollutant)
    exceeded = [h["avg_o2corr"] for h in j["hours"] if h["exceeded"] and h["avg_o2corr"] is not None]
    return render(request, "case.html", {
        "worst": max(exceeded) if exceeded else None,
        "case": j, "view": view, "chart": case_chart_svg(j, view.marks, pollutant),
        # the same chart drawn for a phone's width, so its labels stay legible there
        "chart_narrow": case_chart_svg(j, view.marks, pollutant, width=380, height=240), "pollutant": pollutant,
        "transitions": transitions if can_move else [], "can_move": can_move, "states": workflow.STATES,
        "fields": workflow.FIELDS, "measure_kinds": workflow.MEASURE_KINDS, "error": error, "form": form or {},
        "deadline_labels": DEADLINE_LABELS, "action_labels": ACTION_LABELS, "field_labels": FIELD_LABELS,
        "choice_labels": CHOICE_LABELS, "date_labels": DATE_LABELS, "today": date.today().isoformat(),
    }, status_code=status_code)


@router.get("/cases/{case_id}")
def case_page(request: Request, case_id: int) -> Response:
    return _case_page(request, case_id)


@router.post("/cases/{case_id}/transition")
async def case_transition(request: Request, case_id: int) -> Response:
    from alerts.cases.store import transition

    auth = require_user(request)  # a login first (else: to the login page) ...
    form = await request.form()
    check_csrf(request, auth, _field(form, "csrf"))
    if not auth.user.may("transition"):  # ... then the role: a viewer's forged POST is refused
        raise HTTPException(403, f"角色 {auth.user.role} 不能流转案件 (only an inspector may move a case)")
    c = ctx(request)
    to_state = _field(form, "to_state")
    fields: dict[str, Any] = {}
    for name, spec in workflow.FIELDS.items():
        if spec.kind == "measures":
            kind = _field(form, "measure_kind")
            if kind:
                fields["measures"] = [{
                    "kind": kind, "start": _field(form, "measure_start") or None,
                    "end": _field(form, "measure_end") or None,
                    "doc_number": _field(form, "measure_doc_number") or None,
                    "description": _field(form, "measure_description"),
                    "amount": _field(form, "measure_amount") or None}]
        elif spec.kind == "bool":
            if form.get(f"f_{name}"):
                fields[name] = True
        elif _field(form, f"f_{name}"):
            fields[name] = _field(form, f"f_{name}")
    refs = [r.strip() for r in _field(form, "refs").replace(",", "\n").splitlines() if r.strip()]
    try:
        when = date.fromisoformat(_field(form, "date")) if _field(form, "date") else None
        with c.engine.begin() as conn:
            transition(conn, case_id, to_state, by=auth.user.name, note=_field(form, "note"), date=when,
                       fields=fields, refs=refs, at=_now(), policy=c.policy, url_template=c.url_template)
    except CaseNotFound:
        raise HTTPException(404, f"案件 {case_id} 不存在 (no case {case_id})") from None
    except TransitionRefused as e:
        return _case_page(request, case_id, error=str(e), status_code=409, form=dict(form))
    except (ValueError, CaseError) as e:
        return _case_page(request, case_id, error=str(e), status_code=400, form=dict(form))
    return RedirectResponse(f"/cases/{case_id}#timeline", status_code=303)


@router.get("/cases/{case_id}/export.{fmt}")
def case_export(request: Request, case_id: int, fmt: str) -> Response:
    require_user(request)
    if fmt not in ("csv", "json"):
        raise HTTPException(404, "export as .csv or .json")
    c = ctx(request)
    try:
        with c.engine.begin() as conn:
            body = export_case(conn, case_id, fmt, c.url_template)  # type: ignore[arg-type]
    except CaseNotFound:
        raise HTTPException(404, f"案件 {case_id} 不存在 (no case {case_id})") from None
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    return PlainTextResponse(body, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="case-{case_id}.{fmt}"'})


# -- /marks ------------------------------------------------------------------------------
def _marks_page(request: Request, outlet: str = "", error: str = "", status_code: int = 200,
                form: dict | None = None) -> Response:
    auth = require_user(request)
    c = ctx(request)
    with c.engine.begin() as conn:
        marks = list_marks(conn, outlet=outlet or None, include_removed=True)
        effects = {m.id: mark_history(conn, m.id) for m in marks}
    return render(request, "marks.html", {
        "marks": marks, "effects": effects, "outlet": outlet, "mark_types": MARK_TYPES,
        "can_mark": auth.user is not None and auth.user.may("mark"), "error": error, "form": form or {},
        "outlets": sorted(c.registry.outlets), "pollutants": ["so2", "nox", "pm", "co", "hg"],
    }, status_code=status_code)


@router.get("/marks")
def marks_page(request: Request, outlet: str = "") -> Response:
    return _marks_page(request, outlet)


@router.post("/marks")
async def marks_add(request: Request) -> Response:
    auth = require_user(request)
    form = await request.form()
    check_csrf(request, auth, _field(form, "csrf"))
    if not auth.user.may("mark"):
        raise HTTPException(403, f"角色 {auth.user.role} 不能录入标记 (only an operator enters marks)")
    c = ctx(request)
    try:
        start = _local_time(_field(form, "start"), "start")
        if start is None:
            raise MarkError("start: a mark needs its start")
        with c.engine.begin() as conn:
            add_mark(conn, outlet=_field(form, "outlet"), pollutant=_field(form, "pollutant") or None,
                     type=_field(form, "type"), start=start, end=_local_time(_field(form, "end"), "end"),
                     reason=_field(form, "reason"), by=auth.user.name, at=_now(),
                     evidence_ref=_field(form, "evidence_ref") or None,
                     fault_cap=c.policy.fault_mark_hours_per_year)
    except MarkError as e:
        return _marks_page(request, error=str(e), status_code=400, form=dict(form))
    return RedirectResponse("/marks", status_code=303)


@router.post("/marks/{mark_id}/remove")
async def marks_remove(request: Request, mark_id: int) -> Response:
    auth = require_user(request)
    form = await request.form()
    check_csrf(request, auth, _field(form, "csrf"))
    if not auth.user.may("mark"):
        raise HTTPException(403, f"角色 {auth.user.role} 不能撤销标记 (only an operator removes marks)")
    c = ctx(request)
    try:
        with c.engine.begin() as conn:
            remove_mark(conn, mark_id, by=auth.user.name, reason=_field(form, "reason"), at=_now(),
                        fault_cap=c.policy.fault_mark_hours_per_year)
    except MarkNotFound:
        raise HTTPException(404, f"标记 {mark_id} 不存在 (no mark {mark_id})") from None
    except MarkError as e:
        return _marks_page(request, error=str(e), status_code=400)
    return RedirectResponse("/marks", status_code=303)


# -- /alerts -----------------------------------------------------------------------------
@router.get("/alerts")
def alerts_page(request: Request) -> Response:
    require_user(request)
    firing, resolved = read_alerts(ctx(request).engine, _now())
    return render(request, "alerts.html", {"firing": firing, "resolved": resolved,
                                           "recent_hours": int(RECENT_RESOLVED.total_seconds() // 3600)})


# -- /disclosure (public) ------------------------------------------------------------------
@router.get("/disclosure")
def disclosure_page(request: Request) -> Response:
    c = ctx(request)
    with c.engine.begin() as conn:
        closed = list_cases(conn, c.url_template, status="closed")
    shown = [public_case(v) for v in closed if is_disclosed(v)]
    request.state.auth = page_auth(request)
    return render(request, "disclosure.html", {"cases": shown})
