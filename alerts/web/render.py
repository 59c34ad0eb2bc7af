"""Jinja2 rendering for the pages: autoescaped templates, China-time filters."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from aqpipe.hj633 import POLLUTANT_NAMES
from alerts.web.security import page_auth
from alerts.web.svgchart import CHINA_TZ

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _cst(t: datetime | str | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A time as China local time (what inspectors and the public read)."""
    if t is None or t == "":
        return "—"
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return t.astimezone(CHINA_TZ).strftime(fmt)


# Autoescape every template: a note or a mark reason typed by a user is text, never markup.
ENV = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True, default_for_string=True),
                  trim_blocks=True, lstrip_blocks=True)
ENV.filters["cst"] = _cst
ENV.filters["pollutant"] = lambda code: POLLUTANT_NAMES.get(code, code)
ENV.filters["svg"] = lambda s: Markup(s)  # only for strings built by svgchart, which escapes its text
ENV.filters["pct"] = lambda x: f"{x:.0%}"


def render(request: Request, template: str, data: dict[str, Any], status_code: int = 200,
           headers: dict[str, str] | None = None) -> HTMLResponse:
    auth = getattr(request.state, "auth", None) or page_auth(request)
    html = ENV.get_template(template).render(request=request, auth=auth, **data)
    return HTMLResponse(html, status_code=status_code, headers=headers)
