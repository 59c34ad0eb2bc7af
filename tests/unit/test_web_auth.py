"""alerts/web: the users file (hashed secrets), session cookies, CSRF and the login throttle."""

from __future__ import annotations

import stat

import pytest

from alerts.web.sessions import SessionCodec, SessionKeyError, load_or_create_key
from alerts.web.throttle import LoginThrottle
from alerts.web.users import PERMISSIONS, UserError, UsersFile, UsersFileError, hash_secret, verify_secret


def test_a_hash_verifies_its_secret_only_and_is_salted():
    h1, h2 = hash_secret("correct horse"), hash_secret("correct horse")
    assert h1 != h2 and h1.startswith("scrypt$")
    assert verify_secret("correct horse", h1) and verify_secret("correct horse", h2)
    assert not verify_secret("correct horsE", h1)
    assert not verify_secret("x", "plaintext-password")


def test_users_file_stores_hashes_only_and_is_private(tmp_path):
    users = UsersFile(tmp_path / "users.toml")
    password = users.add_user("wang", "inspector")
    token = users.add_token("board", "viewer")
    text = (tmp_path / "users.toml").read_text()
    assert password not in text and token not in text and token.split("_")[-1] not in text
    assert stat.S_IMODE((tmp_path / "users.toml").stat().st_mode) == 0o600
    assert users.check_password("wang", password).role == "inspector"
    assert users.check_password("wang", password + "x") is None
    assert users.check_password("nobody", password) is None
    principal = users.check_token(token)
    assert principal.name == "board" and principal.role == "viewer" and principal.via == "token"
    assert users.check_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert users.check_token("not-a-token") is None


def test_a_removed_token_or_user_stops_working_at_once(tmp_path):
    path = tmp_path / "users.toml"
    users = UsersFile(path)
    token = users.add_token("bot", "operator")
    users.add_user("li", "viewer", "a-long-password")
    assert users.check_token(token) is not None  # now cached
    other = UsersFile(path)  # the CLI, another process
    other.remove_token(UsersFile.token_id(token))
    other.remove_user("li")
    assert users.check_token(token) is None
    assert users.principal_of("li") is None


def test_roles_and_permissions_are_the_issues():
    assert PERMISSIONS["transition"] == {"inspector"}
    assert PERMISSIONS["mark"] == {"operator"}
    assert PERMISSIONS["read"] == {"inspector", "operator", "viewer"}


@pytest.mark.parametrize("name, role, password, message", [
    ("wang", "admin", None, "unknown role"),
    ("bad name", "viewer", None, "user name"),
    ("li", "viewer", "short", "too short"),
])
def test_bad_user_commands_are_refused_with_a_reason(tmp_path, name, role, password, message):
    with pytest.raises(UserError, match=message):
        UsersFile(tmp_path / "u.toml").add_user(name, role, password)


def test_a_plaintext_password_in_the_file_is_refused_with_the_entry_named(tmp_path):
    path = tmp_path / "u.toml"
    path.write_text('[users.zhang]\nrole = "inspector"\npassword = "hunter2hunter2"\n')
    with pytest.raises(UsersFileError, match=r"\[users.zhang\].*scrypt hash"):
        UsersFile(path).users()


def test_session_cookie_round_trips_and_rejects_forgery_and_expiry(tmp_path):
    codec = SessionCodec(load_or_create_key(tmp_path / "key"), ttl_s=60)
    s = codec.new("wang", now=1000)
    value = codec.encode(s)
    assert codec.decode(value, now=1001) == s
    assert codec.decode(value, now=1061) is None  # expired
    body, sig = value.rsplit(".", 1)
    forged = codec.encode(codec.new("admin", now=1000)).rsplit(".", 1)[0] + "." + sig
    assert codec.decode(forged, now=1001) is None
    other = SessionCodec(b"k" * 32, ttl_s=60)
    assert other.decode(value, now=1001) is None  # another key
    assert codec.decode("garbage", now=1001) is None and codec.decode(None) is None


def test_csrf_token_is_bound_to_the_session(tmp_path):
    codec = SessionCodec(load_or_create_key(tmp_path / "key"), ttl_s=60)
    a, b = codec.new(None), codec.new(None)
    assert codec.csrf_ok(a, codec.csrf_token(a))
    assert not codec.csrf_ok(a, codec.csrf_token(b))
    assert not codec.csrf_ok(a, "") and not codec.csrf_ok(None, codec.csrf_token(a))


def test_session_key_is_created_once_and_private(tmp_path):
    k1 = load_or_create_key(tmp_path / "key")
    assert load_or_create_key(tmp_path / "key") == k1 and len(k1) == 32
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600
    (tmp_path / "short").write_bytes(b"x")
    with pytest.raises(SessionKeyError):
        load_or_create_key(tmp_path / "short")


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_throttle_per_username_and_per_address():
    clock = _Clock()
    th = LoginThrottle(max_failures=3, window_s=60, clock=clock)
    for _ in range(3):
        assert th.retry_after("user:wang", "10.0.0.1") is None
        th.failed("user:wang", "10.0.0.1")
    assert th.retry_after("user:wang", "10.0.0.9") == pytest.approx(60)  # the account, from anywhere
    assert th.retry_after("user:li", "10.0.0.1") == pytest.approx(60)  # the address, for any account
    assert th.retry_after("user:li", "10.0.0.2") is None
    clock.t = 60.5
    assert th.retry_after("user:wang", "10.0.0.1") is None  # the window passed


def test_a_success_clears_the_usernames_failures_but_not_the_addresses():
    th = LoginThrottle(max_failures=2, window_s=60, clock=_Clock())
    th.failed("user:wang", "a")
    th.failed("user:li", "a")
    th.succeeded("user:wang")
    assert th.retry_after("user:wang", "b") is None
    assert th.retry_after("user:x", "a") is not None
