"""`aqpipe web` as an operator runs it: a real process on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import wait_until

pytestmark = pytest.mark.integration
AQPIPE = str(Path(sys.executable).parent / "aqpipe")


def _free_port() -> int:
    import servers

    return servers.free_port()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def test_user_add_prints_the_password_once_and_stores_only_its_hash(env, tmp_path):
    e = {**os.environ, **env}
    r = subprocess.run([AQPIPE, "web", "user", "add", "wang", "--role", "inspector"], env=e, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    password = r.stdout.strip().removeprefix("password (shown once): ")
    stored = (Path(env["AQPIPE_DATA_DIR"]) / "web-users.toml").read_text()
    assert len(password) >= 12 and password not in stored and "[users.wang]" in stored
    listed = subprocess.run([AQPIPE, "web", "user", "list"], env=e, capture_output=True, text=True, timeout=60)
    assert listed.stdout.startswith("wang\tinspector\t") and password not in listed.stdout
    again = subprocess.run([AQPIPE, "web", "user", "add", "wang", "--role", "viewer"], env=e, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 1 and "exists" in again.stderr
    tok = subprocess.run([AQPIPE, "web", "token", "add", "board", "--role", "viewer"], env=e, capture_output=True,
                         text=True, timeout=60)
    token = tok.stdout.strip()
    assert token.startswith("aqp_") and token not in (Path(env["AQPIPE_DATA_DIR"]) / "web-users.toml").read_text()


def test_web_serves_until_sigterm_and_exits_zero(env, influx):
    port = _free_port()
    e = {**os.environ, **env, "AQPIPE_WEB__PORT": str(port)}
    proc = subprocess.Popen([AQPIPE, "web"], env=e, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _status(f"http://127.0.0.1:{port}/healthz") == 200, timeout=20)
        assert _status(f"http://127.0.0.1:{port}/aqi") == 200
        assert _status(f"http://127.0.0.1:{port}/account") == 200  # followed to the login page
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"event=web_listening url=http://127.0.0.1:{port}" in err and "event=stopping" in err


def test_web_refuses_a_port_in_use_with_exit_2(env):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([AQPIPE, "web"], env={**os.environ, **env, "AQPIPE_WEB__PORT": str(port)},
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "web.port" in r.stderr


def test_web_says_which_key_when_the_case_database_cannot_be_opened(env, tmp_path):
    bad = {**os.environ, **env, "AQPIPE_CASES__DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    r = subprocess.run([AQPIPE, "web"], env=bad, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cases.database_url" in r.stderr and "Traceback" not in r.stderr


def test_web_service_reports_fatal_only_when_uvicorn_ends_unasked(env, influx):
    import servers

    from alerts.web.service import WebService
    from aqpipe.config import load_config

    web = WebService(load_config(None, {**env, "AQPIPE_WEB__PORT": str(servers.free_port())}))
    web.start()
    try:
        assert web.ready()[0] and web.fatal() is None
        assert "requests=0" in web.status_line()
        web._server.force_exit = web._server.should_exit = True  # uvicorn ending as if on its own
        web._thread.join(10)
        web._server.should_exit = False
        assert "ended" in web.fatal() and not web.ready()[0]
    finally:
        web.stop()
    assert web.fatal() is None  # asked to stop: not fatal
