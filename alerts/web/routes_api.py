"""The JSON API (`/api/v1/...`): bearer tokens only, roles from the users file.

Every call goes through the case store's functions (alerts/cases/store.py, marks.py),
one transaction per request; this module holds no case logic of its own. Errors:
401 without a valid token, 403 for a role that may not, 404 for a missing case or
mark, 409 for a transition the workflow refuses (with `from`, `to` and `allowed`),
422 for malformed input.
"""

from __future__ import annotations

from datetime import date as Date
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from alerts.cases.errors import CaseError, CaseNotFound, MarkError, MarkNotFound, TransitionRefused
from alerts.cases.marks import add_mark, get_mark, list_marks, mark_history, remove_mark
from alerts.cases.store import export_case, get_case, list_cases, transition
from alerts.web.alerts_view import read_alerts
from alerts.web.security import api_principal, api_require, ctx
from alerts.web.users import PERMISSIONS

router = APIRouter(prefix="/api/v1", tags=["api"])


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(t: datetime | None, name: str) -> datetime | None:
    if t is not None and (t.tzinfo is None or t.utcoffset() is None):
        raise HTTPException(422, f"{name}: give a time with an offset (e.g. 2026-11-28T08:00:00+08:00)")
    return t


@router.get("/me", summary="Who the bearer token belongs to, and what it may do")
def me(request: Request) -> dict:
    p = api_principal(request)
    return {"name": p.name, "role": p.role, "may": [a for a, roles in PERMISSIONS.items() if p.role in roles]}


@router.get("/cases", summary="Cases, overdue first (filters: status, enterprise, outlet, pollutant)")
def api_cases(request: Request, status: str | None = None, enterprise: str | None = None, outlet: str | None = None,
              pollutant: str | None = None) -> list[dict]:
    api_require(request, "read")
    c = ctx(request)
    try:
        with c.engine.begin() as conn:
            return [v.to_json() for v in list_cases(conn, c.url_template, status=status, enterprise=enterprise,
                                                    outlet=outlet, pollutant=pollutant)]
    except CaseError as e:
        raise HTTPException(422, str(e)) from None


@router.get("/cases/{case_id}", summary="One case (minute data with ?minutes=true)")
def api_case(request: Request, case_id: int, minutes: bool = False) -> dict:
    api_require(request, "read")
    c = ctx(request)
    try:
        with c.engine.begin() as conn:
            return get_case(conn, case_id, c.url_template).to_json(minutes=minutes)
    except CaseNotFound as e:
        raise HTTPException(404, str(e)) from None


class TransitionIn(BaseModel):
    to: str = Field(description="the state to move to (open, verified, dismissed, filed, ordered, reinspected, closed)")
    note: str = ""
    date: Date | None = Field(None, description="the China date the act happened, where the transition takes one")
    fields: dict[str, Any] = Field(default_factory=dict, description="what the transition requires (workflow.FIELDS)")
    refs: list[str] = Field(default_factory=list, description="references to documents")


@router.post("/cases/{case_id}/transition", summary="Move a case (inspector only); the actor is the token's holder")
def api_transition(request: Request, case_id: int, body: TransitionIn) -> Response:
    p = api_require(request, "transition")
    c = ctx(request)
    try:
        with c.engine.begin() as conn:
            view = transition(conn, case_id, body.to, by=p.name, note=body.note, date=body.date, fields=body.fields,
                              refs=body.refs, at=_now(), policy=c.policy, url_template=c.url_template)
    except CaseNotFound as e:
        raise HTTPException(404, str(e)) from None
    except TransitionRefused as e:
        return JSONResponse({"detail": str(e), "from": e.from_state, "to": e.to_state, "allowed": e.allowed},
                            status_code=409)
    except (CaseError, ValueError) as e:
        raise HTTPException(422, str(e)) from None
    return JSONResponse(view.to_json())


@router.get("/cases/{case_id}/export", summary="The case as evidence: JSON (everything) or CSV (one row per hour)")
def api_export(request: Request, case_id: int, format: Literal["json", "csv"] = "json") -> Response:
    api_require(request, "read")
    c = ctx(request)
    try:
        with c.engine.begin() as conn:
            body = export_case(conn, case_id, format, c.url_template)
    except CaseNotFound as e:
        raise HTTPException(404, str(e)) from None
    return PlainTextResponse(body, media_type="text/csv; charset=utf-8" if format == "csv" else "application/json")


@router.get("/marks", summary="Marks, newest first (filters: outlet, pollutant, start, end, include_removed)")
def api_marks(request: Request, outlet: str | None = None, pollutant: str | None = None,
              start: datetime | None = None, end: datetime | None = None, include_removed: bool = False) -> list[dict]:
    api_require(request, "read")
    with ctx(request).engine.begin() as conn:
        return [m.to_json() for m in list_marks(conn, outlet=outlet, pollutant=pollutant, start=_aware(start, "start"),
                                                end=_aware(end, "end"), include_removed=include_removed)]


@router.get("/marks/{mark_id}", summary="One mark and its audit history (with the hours it changed)")
def api_mark(request: Request, mark_id: int) -> dict:
    api_require(request, "read")
    try:
        with ctx(request).engine.begin() as conn:
            return {**get_mark(conn, mark_id).to_json(), "history": mark_history(conn, mark_id)}
    except MarkNotFound as e:
        raise HTTPException(404, str(e)) from None


class MarkIn(BaseModel):
    outlet: str
    pollutant: str | None = Field(None, description="none: all pollutants of the outlet")
    type: str = Field(description="mark type key or its Chinese label (停运, 故障, 校准 ...)")
    start: datetime
    end: datetime | None = None
    reason: str
    evidence_ref: str | None = None


@router.post("/marks", status_code=201, summary="Add a mark (operator only); re-evaluates the hours it covers")
def api_mark_add(request: Request, body: MarkIn) -> dict:
    p = api_require(request, "mark")
    try:
        with ctx(request).engine.begin() as conn:
            mark = add_mark(conn, outlet=body.outlet, pollutant=body.pollutant, type=body.type,
                            start=_aware(body.start, "start"), end=_aware(body.end, "end"), reason=body.reason,
                            by=p.name, at=_now(), evidence_ref=body.evidence_ref,
                            fault_cap=ctx(request).policy.fault_mark_hours_per_year)
            return {**mark.to_json(), "history": mark_history(conn, mark.id)}
    except MarkError as e:
        raise HTTPException(422, str(e)) from None


class RemoveIn(BaseModel):
    reason: str


@router.post("/marks/{mark_id}/remove", summary="Withdraw a mark (operator only; soft, audited)")
def api_mark_remove(request: Request, mark_id: int, body: RemoveIn) -> dict:
    p = api_require(request, "mark")
    try:
        with ctx(request).engine.begin() as conn:
            return remove_mark(conn, mark_id, by=p.name, reason=body.reason, at=_now(),
                               fault_cap=ctx(request).policy.fault_mark_hours_per_year).to_json()
    except MarkNotFound as e:
        raise HTTPException(404, str(e)) from None
    except MarkError as e:
        raise HTTPException(422, str(e)) from None


@router.get("/alerts", summary="Alerts firing, and those resolved in the last 24 hours")
def api_alerts(request: Request) -> dict:
    api_require(request, "read")
    firing, resolved = read_alerts(ctx(request).engine, _now())
    return {"firing": firing, "resolved": resolved}
