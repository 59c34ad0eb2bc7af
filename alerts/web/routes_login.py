"""Login, logout and the account page.

A login takes a username and password, or an API token, from the users file. Failed
attempts are counted per username (or token id) and per client address; past the
limit the form answers 429 without checking the password. Neither the password nor
the token is ever logged: a failed login is logged with the username or the token's
public id only.
"""

from __future__ import annotations

import logging
import math

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from alerts.web import metrics
from alerts.web.render import render
from alerts.web.security import PageAuth, check_csrf, ctx, page_auth, require_user, safe_next
from alerts.web.sessions import COOKIE, Session
from alerts.web.users import PERMISSIONS, UsersFile

log = logging.getLogger("aqpipe.web")
router = APIRouter(include_in_schema=False)
HOME = "/account"  # where a login without `next` lands


def _set_session(request: Request, response: Response, session: Session) -> None:
    c = ctx(request)
    response.set_cookie(COOKIE, c.codec.encode(session), max_age=c.codec.ttl_s, path="/", httponly=True,
                        samesite="strict", secure=c.cfg.web.cookie_secure)


def _form(request: Request, auth: PageAuth, next_path: str, error: str = "", status: int = 200,
          username: str = "", headers: dict[str, str] | None = None) -> Response:
    request.state.auth = auth
    return render(request, "login.html", {"next": next_path, "error": error, "username": username},
                  status_code=status, headers=headers)


@router.get("/login")
def login_page(request: Request, next: str = HOME) -> Response:
    auth = page_auth(request)
    next_path = safe_next(next, HOME)
    if auth.user is not None:
        return RedirectResponse(next_path, status_code=303)
    if auth.session is None:  # the form's CSRF token needs a session: an anonymous one
        session = ctx(request).codec.new(None)
        auth = PageAuth(session, None, ctx(request).codec.csrf_token(session))
        response = _form(request, auth, next_path)
        _set_session(request, response, session)
        return response
    return _form(request, auth, next_path)


@router.post("/login")
async def login(request: Request) -> Response:
    c = ctx(request)
    form = await request.form()
    auth = page_auth(request)
    check_csrf(request, auth, _field(form, "csrf"))
    next_path = safe_next(_field(form, "next"), HOME)
    username = _field(form, "username").strip()
    password = _field(form, "password")
    token = _field(form, "token").strip()
    key = f"token:{UsersFile.token_id(token) or '?'}" if token else f"user:{username}"
    address = request.client.host if request.client else "?"

    wait = c.throttle.retry_after(key, address)
    if wait is not None:
        c.counters.logins_throttled += 1
        metrics.LOGINS.labels("throttled").inc()
        log.warning("event=login_throttled who=%s addr=%s retry_after_s=%d", key, address, math.ceil(wait))
        return _form(request, auth, next_path, f"登录失败次数过多，请 {math.ceil(wait)} 秒后再试 (too many failed logins)",
                     status=429, username=username, headers={"Retry-After": str(math.ceil(wait))})

    principal = c.users.check_token(token) if token else (
        c.users.check_password(username, password) if username and password else None)
    if principal is None:
        c.throttle.failed(key, address)
        c.counters.logins_failed += 1
        metrics.LOGINS.labels("failed").inc()
        log.warning("event=login_failed who=%s addr=%s", key, address)
        return _form(request, auth, next_path, "用户名或密码（或令牌）不正确 (login failed)", status=401,
                     username=username)

    c.throttle.succeeded(key)
    c.counters.logins_ok += 1
    metrics.LOGINS.labels("ok").inc()
    subject = key if token else principal.name
    log.info("event=login who=%s role=%s addr=%s", subject, principal.role, address)
    response = RedirectResponse(next_path, status_code=303)
    _set_session(request, response, c.codec.new(subject))  # a new session id: no fixation
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    auth = page_auth(request)
    check_csrf(request, auth, _field(form, "csrf"))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=ctx(request).cfg.web.cookie_secure)
    return response


@router.get("/account")
def account(request: Request) -> Response:
    auth = require_user(request)
    allowed = [action for action, roles in PERMISSIONS.items() if auth.user and auth.user.role in roles]
    return render(request, "account.html", {"allowed": allowed})


def _field(form, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""
