"""Users and API tokens of `aqpipe web`, kept in one TOML file, stored hashed.

Passwords and tokens are hashed with scrypt (stdlib `hashlib.scrypt`, a random salt
each); the file never holds a secret in clear, and the command that creates a token or
a password prints it once. Roles and what each may do are data (`PERMISSIONS`): only
`inspector` moves a case, `operator` enters marks, every role reads.

File layout (edited by `aqpipe web user|token ...`; safe to read, keep it 0600):

    [users.alice]
    role = "inspector"
    password = "scrypt$16384$8$1$<salt>$<hash>"
    created = "2026-11-28T02:00:00+00:00"

    [tokens.3f9a0c1b2d4e]
    name = "duty-dashboard"
    role = "viewer"
    hash = "scrypt$16384$8$1$<salt>$<hash>"
    created = "..."

A token reads `aqp_<id>_<secret>`: the id finds its entry without trying every hash.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from aqpipe.config import Config

Role = Literal["inspector", "operator", "viewer"]
ROLES: tuple[Role, ...] = ("inspector", "operator", "viewer")
Action = Literal["read", "mark", "transition"]
# Who may do what (issue 9/10): data, so a bureau's different split is a table edit.
PERMISSIONS: dict[Action, frozenset[str]] = {
    "read": frozenset({"inspector", "operator", "viewer"}),
    "mark": frozenset({"operator"}),
    "transition": frozenset({"inspector"}),
}

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TOKEN_RE = re.compile(r"^aqp_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")
MIN_PASSWORD = 10

# scrypt cost: n=2^14, r=8, p=1 (16 MiB, tens of ms): the interactive-login setting of
# the scrypt paper; verified tokens are cached in memory so an API client pays it once.
_N, _R, _P = 2**14, 8, 1
_MAXMEM = 64 * 1024 * 1024


def users_path(cfg: Config) -> Path:
    """`web.users_file`, else DATA_DIR/web-users.toml."""
    return cfg.web.users_file or cfg.data_dir / "web-users.toml"


class UsersFileError(ValueError):
    """The users file cannot be read or does not have the documented shape (names the entry)."""


class UserError(ValueError):
    """A user or token command that cannot be done (unknown name, bad role, weak password)."""


def hash_secret(secret: str) -> str:
    """`scrypt$n$r$p$salt$hash` (base64): what the file stores instead of the secret."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM, dklen=32)
    return "$".join(["scrypt", str(_N), str(_R), str(_P), _b64(salt), _b64(digest)])


def verify_secret(secret: str, encoded: str) -> bool:
    """True when `secret` hashes to `encoded` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        want = _unb64(digest)
        got = hashlib.scrypt(secret.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=_MAXMEM, dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the user does not exist, so the answer takes as long
    as for a wrong password (no user enumeration by timing)."""
    return hash_secret(secrets.token_urlsafe(16))


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password_hash: str
    created: str = ""


@dataclass(frozen=True)
class Token:
    id: str
    name: str
    role: Role
    hash: str
    created: str = ""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a user (by password) or a token's holder."""

    name: str
    role: Role
    via: Literal["password", "token"]

    def may(self, action: Action) -> bool:
        return self.role in PERMISSIONS[action]


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _check_role(role: str) -> Role:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


def _check_name(name: str, what: str) -> str:
    if not NAME_RE.match(name):
        raise UserError(f"{what} {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


class UsersFile:
    """The users/tokens file: read (re-read when it changes on disk), edited atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, User] = {}
        self._tokens: dict[str, Token] = {}
        self._token_cache: dict[bytes, Principal] = {}  # sha256(token) -> principal, cleared on change

    # -- reading ------------------------------------------------------------------------
    def _refresh(self) -> None:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp is not None and stamp == self._stamp:
                return
            users, tokens = self._parse() if stamp is not None else ({}, {})
            self._users, self._tokens, self._stamp = users, tokens, stamp
            self._token_cache.clear()

    def _parse(self) -> tuple[dict[str, User], dict[str, Token]]:
        try:
            with open(self.path, "rb") as f:
                doc = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise UsersFileError(f"{self.path}: not valid TOML: {e}") from e
        except OSError as e:
            raise UsersFileError(f"{self.path}: cannot read: {e.strerror}") from e
        users: dict[str, User] = {}
        for name, entry in doc.get("users", {}).items():
            where = f"{self.path}: [users.{name}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("password"), str):
                raise UsersFileError(f"{where}: needs role and password (a hash)")
            if entry.get("role") not in ROLES:
                raise UsersFileError(f"{where}: role {entry.get('role')!r} is not one of {', '.join(ROLES)}")
            if not entry["password"].startswith("scrypt$"):
                raise UsersFileError(f"{where}: password must be a scrypt hash (use `aqpipe web user add`), "
                                     "never the password itself")
            users[name] = User(name, entry["role"], entry["password"], str(entry.get("created", "")))
        tokens: dict[str, Token] = {}
        for tid, entry in doc.get("tokens", {}).items():
            where = f"{self.path}: [tokens.{tid}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("hash"), str) or entry.get("role") not in ROLES:
                raise UsersFileError(f"{where}: needs name, role ({', '.join(ROLES)}) and hash")
            tokens[tid] = Token(tid, str(entry.get("name", tid)), entry["role"], entry["hash"],
                                str(entry.get("created", "")))
        return users, tokens

    def users(self) -> list[User]:
        self._refresh()
        return sorted(self._users.values(), key=lambda u: u.name)

    def tokens(self) -> list[Token]:
        self._refresh()
        return sorted(self._tokens.values(), key=lambda t: t.name)

    def principal_of(self, subject: str) -> Principal | None:
        """Who a session's subject (a user name, or `token:<id>` after a token login) is now.

        A session re-checks it on every request: a removed user or token, or a changed
        role, takes effect at once.
        """
        self._refresh()
        if subject.startswith("token:"):
            token = self._tokens.get(subject[6:])
            return Principal(token.name, token.role, "token") if token else None
        user = self._users.get(subject)
        return Principal(user.name, user.role, "password") if user else None

    # -- authentication -----------------------------------------------------------------
    def check_password(self, name: str, password: str) -> Principal | None:
        self._refresh()
        user = self._users.get(name)
        ok = verify_secret(password, user.password_hash if user else _dummy_hash())
        return Principal(user.name, user.role, "password") if (ok and user) else None

    def check_token(self, token: str) -> Principal | None:
        self._refresh()
        key = hashlib.sha256(token.encode()).digest()
        cached = self._token_cache.get(key)
        if cached is not None:
            return cached
        m = TOKEN_RE.match(token)
        entry = self._tokens.get(m.group(1)) if m else None
        if entry is None:  # no scrypt for a malformed token or an unknown id: the ids are not secret
            return None
        if not verify_secret(m.group(2), entry.hash):
            return None
        principal = Principal(entry.name, entry.role, "token")
        with self._lock:
            self._token_cache[key] = principal
        return principal

    @staticmethod
    def token_id(token: str) -> str | None:
        """The public id part of a token (for rate limiting and logs), never the secret."""
        m = TOKEN_RE.match(token)
        return m.group(1) if m else None

    # -- editing ------------------------------------------------------------------------
    def add_user(self, name: str, role: str, password: str | None = None, replace: bool = False) -> str:
        """Add (or with `replace`, reset) a user; returns the password (generated when None)."""
        _check_name(name, "user name")
        role = _check_role(role)
        if password is None:
            password = secrets.token_urlsafe(12)
        elif len(password) < MIN_PASSWORD:
            raise UserError(f"password too short: at least {MIN_PASSWORD} characters")
        with self._editing() as (users, tokens):
            if name in users and not replace:
                raise UserError(f"user {name!r} exists (use `aqpipe web user passwd` or remove it first)")
            users[name] = User(name, role, hash_secret(password), _now())
        return password

    def set_password(self, name: str, password: str | None = None) -> str:
        with self._editing() as (users, tokens):
            if name not in users:
                raise UserError(f"no user {name!r}")
            user = users[name]
            if password is None:
                password = secrets.token_urlsafe(12)
            elif len(password) < MIN_PASSWORD:
                raise UserError(f"password too short: at least {MIN_PASSWORD} characters")
            users[name] = User(name, user.role, hash_secret(password), user.created)
        return password

    def remove_user(self, name: str) -> None:
        with self._editing() as (users, tokens):
            if users.pop(name, None) is None:
                raise UserError(f"no user {name!r}")

    def add_token(self, name: str, role: str) -> str:
        """A new token for `name` with `role`; returns it (shown once, stored hashed)."""
        _check_name(name, "token name")
        role = _check_role(role)
        tid = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        with self._editing() as (users, tokens):
            tokens[tid] = Token(tid, name, role, hash_secret(secret), _now())
        return f"aqp_{tid}_{secret}"

    def remove_token(self, tid: str) -> None:
        with self._editing() as (users, tokens):
            if tokens.pop(tid, None) is None:
                raise UserError(f"no token with id {tid!r} (see `aqpipe web token list`)")

    @contextmanager
    def _editing(self) -> Iterator[tuple[dict[str, User], dict[str, Token]]]:
        """Read-modify-write under a lock file; the new file replaces the old atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            users, tokens = self._parse() if self.path.exists() else ({}, {})
            yield users, tokens
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(_render(users, tokens))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        self._stamp = None  # re-read on next use


def _q(s: str) -> str:
    """A TOML basic string (JSON's escapes are a subset of TOML's)."""
    return json.dumps(s, ensure_ascii=False)


def _render(users: dict[str, User], tokens: dict[str, Token]) -> str:
    lines = ["# aqpipe web: users and API tokens. Hashes only (scrypt); edit with `aqpipe web user|token`.",
             "# Roles: inspector (moves cases), operator (enters marks), viewer (reads).", ""]
    for u in sorted(users.values(), key=lambda u: u.name):
        lines += [f"[users.{u.name}]", f"role = {_q(u.role)}", f"password = {_q(u.password_hash)}",
                  f"created = {_q(u.created)}", ""]
    for t in sorted(tokens.values(), key=lambda t: t.id):
        lines += [f"[tokens.{t.id}]", f"name = {_q(t.name)}", f"role = {_q(t.role)}", f"hash = {_q(t.hash)}",
                  f"created = {_q(t.created)}", ""]
    return "\n".join(lines)
