"""Who a request acts as, and the checks pages and the API apply.

- Pages: the signed session cookie (`sessions.py`); a page that needs a login answers
  303 to `/login?next=...`; a form POST must carry the session's CSRF token.
- JSON API: `Authorization: Bearer aqp_...` only (no cookies, so no CSRF to forge).
- Roles are checked against `users.PERMISSIONS`: a missing permission is 403.
A token or password is never logged: requests are logged by method, path and status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from fastapi import HTTPException, Request

from alerts.web.sessions import COOKIE, Session
from alerts.web.users import Action, Principal

if TYPE_CHECKING:
    from alerts.web.context import WebContext


class LoginRequired(Exception):
    """Raised by a page that needs a user: the app answers 303 to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass(frozen=True)
class PageAuth:
    session: Session | None
    user: Principal | None
    csrf: str | None


def ctx(request: Request) -> "WebContext":
    return request.app.state.ctx


def page_auth(request: Request) -> PageAuth:
    """The browser's session and its user (None when not logged in or the user was removed)."""
    c = ctx(request)
    session = c.codec.decode(request.cookies.get(COOKIE))
    if session is None:
        return PageAuth(None, None, None)
    user = c.users.principal_of(session.user) if session.user else None
    request.state.user = user.name if user else None
    return PageAuth(session, user, c.codec.csrf_token(session))


def require_user(request: Request, action: Action = "read") -> PageAuth:
    auth = page_auth(request)
    if auth.user is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(path)
    if not auth.user.may(action):
        raise HTTPException(403, f"角色 {auth.user.role} 无权执行此操作 (role may not: {action})")
    return auth


def check_csrf(request: Request, auth: PageAuth, token: str | None) -> None:
    """A form POST without this browser session's CSRF token is refused (403)."""
    if not ctx(request).codec.csrf_ok(auth.session, token):
        raise HTTPException(403, "表单已失效或来源不明，请刷新页面后重试 (CSRF token missing or wrong)")


def api_principal(request: Request) -> Principal:
    """The bearer token's holder; 401 without a valid token."""
    c = ctx(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    address = request.client.host if request.client else "?"
    key = f"token:{c.users.token_id(token) or '?'}"
    wait = c.throttle.retry_after(key, address)
    if wait is not None:  # a client guessing tokens is slowed down like one guessing passwords
        raise HTTPException(429, "too many requests with a wrong token", headers={"Retry-After": str(int(wait) + 1)})
    principal = c.users.check_token(token) if scheme.lower() == "bearer" and token else None
    if principal is None:
        if token:
            c.throttle.failed(key, address)
        raise HTTPException(401, "a valid API token is required: Authorization: Bearer aqp_...",
                            headers={"WWW-Authenticate": 'Bearer realm="aqpipe"'})
    request.state.user = principal.name
    return principal


def api_require(request: Request, action: Action) -> Principal:
    principal = api_principal(request)
    if not principal.may(action):
        raise HTTPException(403, f"role {principal.role!r} may not {action}")
    return principal


def login_url(next_path: str) -> str:
    return "/login?next=" + quote(next_path, safe="/")


def safe_next(value: str | None, default: str) -> str:
    """Only a local path may be a redirect target after login (no open redirect)."""
    if (value and value.startswith("/") and not value.startswith("//") and "\\" not in value
            and value.isprintable() and " " not in value):  # browsers drop tabs: "/\t/x" would be "//x"
        return value
    return default
