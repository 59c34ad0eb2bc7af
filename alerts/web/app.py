"""The FastAPI application of `aqpipe web`: wiring only (routes live in `routes_*.py`).

Every answer carries a strict Content-Security-Policy (no script at all, styles and
images from this server only): the pages work without JavaScript and load nothing
from the internet. Requests are logged by method, path and status, never with their
headers, query string or body, so a token or password cannot reach the log.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from alerts.web import metrics
from alerts.web.context import WebContext
from alerts.web.render import render
from alerts.web.security import LoginRequired, login_url

log = logging.getLogger("aqpipe.web")
HERE = Path(__file__).resolve().parent

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path.endswith(".json")


def create_app(ctx: WebContext) -> FastAPI:
    from alerts.web import routes_api, routes_cases, routes_login, routes_public

    # No Swagger UI page: FastAPI's loads its scripts from a CDN, and nothing here comes from
    # the internet. The OpenAPI description is served for tools that render it locally.
    app = FastAPI(title="aqpipe web", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.ctx = ctx
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(routes_public.router)
    app.include_router(routes_login.router)
    app.include_router(routes_api.router)
    app.include_router(routes_cases.router)

    @app.middleware("http")
    async def _log_and_harden(request: Request, call_next):
        started = time.perf_counter()
        request.state.user = None
        response: Response = await call_next(request)
        elapsed = time.perf_counter() - started
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        ctx.counters.requests += 1
        metrics.REQUESTS.labels(request.method, str(response.status_code)).inc()
        metrics.LATENCY.observe(elapsed)
        if not request.url.path.startswith(("/static/", "/healthz")):
            log.info("event=http method=%s path=%s status=%d ms=%.1f user=%s", request.method,
                     request.url.path, response.status_code, elapsed * 1000, request.state.user or "-")
        return response

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, exc: LoginRequired):
        return RedirectResponse(login_url(exc.next_path), status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":  # no such route: say so in the page's language
            detail = "页面不存在 (not found)"
        if _wants_json(request):
            return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)
        return render(request, "error.html", {"status": exc.status_code, "detail": detail},
                      status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]
        if _wants_json(request):
            return JSONResponse({"detail": errors}, status_code=422)
        text = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return render(request, "error.html", {"status": 422, "detail": f"请求有误 (invalid request): {text}"},
                      status_code=422)

    return app
