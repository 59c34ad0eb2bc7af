"""Signed session cookies and the CSRF token bound to them.

A session is a small JSON document (session id, user name or none, expiry) signed with
HMAC-SHA256 under a key kept in a file (created 0600 on first start): stateless, so it
survives a restart of `aqpipe web` and works across several instances sharing the key.
The user's role is not in the cookie; it is looked up in the users file on every
request, so removing a user or changing a role takes effect at once.

Every browser gets a session id before it logs in (the login form itself carries a CSRF
token) and a new one when it logs in (no session fixation). The CSRF token of a form
is HMAC(key, "csrf" + session id): a page from another site cannot know it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

COOKIE = "aqpipe_session"
_KEY_BYTES = 32


class SessionKeyError(OSError):
    """The session key file cannot be read or created (names the file)."""


def load_or_create_key(path: Path) -> bytes:
    """The signing key in `path`, created (random, mode 0600) when the file does not exist."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(_KEY_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another instance created it first: use theirs
            return load_or_create_key(path)
        except OSError as e:
            raise SessionKeyError(f"cannot create the session key file {path}: {e.strerror}") from e
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        return key
    except OSError as e:
        raise SessionKeyError(f"cannot read the session key file {path}: {e.strerror}") from e
    if len(key) < 16:
        raise SessionKeyError(f"session key file {path} holds {len(key)} bytes; delete it to have a new one made")
    return key


@dataclass(frozen=True)
class Session:
    sid: str
    user: str | None
    expires: int  # epoch seconds


class SessionCodec:
    def __init__(self, key: bytes, ttl_s: int) -> None:
        self._key = key
        self.ttl_s = ttl_s

    def new(self, user: str | None, now: float | None = None) -> Session:
        return Session(secrets.token_urlsafe(18), user, int((now or time.time()) + self.ttl_s))

    def encode(self, session: Session) -> str:
        body = _b64(json.dumps({"sid": session.sid, "u": session.user, "exp": session.expires},
                               separators=(",", ":")).encode())
        return body + "." + _b64(self._sign(body.encode()))

    def decode(self, value: str | None, now: float | None = None) -> Session | None:
        """The session in a cookie value, or None when absent, forged, malformed or expired."""
        if not value or "." not in value:
            return None
        body, sig = value.rsplit(".", 1)
        try:
            if not hmac.compare_digest(_unb64(sig), self._sign(body.encode())):
                return None
            doc = json.loads(_unb64(body))
            session = Session(str(doc["sid"]), doc["u"] if doc["u"] is None else str(doc["u"]), int(doc["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > (now or time.time()) else None

    def csrf_token(self, session: Session) -> str:
        return hmac.new(self._key, b"csrf:" + session.sid.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session | None, token: str | None) -> bool:
        return bool(session and token) and hmac.compare_digest(self.csrf_token(session), token)  # type: ignore[arg-type]

    def _sign(self, data: bytes) -> bytes:
        return hmac.new(self._key, b"session:" + data, hashlib.sha256).digest()


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
