"""deploy/systemd's aqpipe-alerts and aqpipe-web as systemd starts them: the environment of
their unit files (/var/lib/aqpipe moved under a temporary directory, ports made free, the
test's broker and InfluxDB), two processes on the one SQLite case database the units name,
and the first user created by the command deploy/README.md gives."""

from __future__ import annotations

import json
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
ROOT = Path(__file__).resolve().parent.parent.parent
AQPIPE = str(Path(sys.executable).parent / "aqpipe")


def _status(url: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def _unit(name: str, root: Path) -> tuple[dict[str, str], list[str]]:
    """The unit's Environment= (paths moved under root) and its StateDirectory= entries."""
    env, state = {}, []
    for line in (ROOT / "deploy" / "systemd" / f"aqpipe-{name}.service").read_text().splitlines():
        if line.startswith("Environment="):
            key, value = line.removeprefix("Environment=").split("=", 1)
            env[key] = value.replace("/var/lib/aqpipe", str(root))
        elif line.startswith("StateDirectory="):
            state = line.removeprefix("StateDirectory=").split()
    return env, state


def test_the_alerts_and_web_units_share_one_case_database_and_the_readme_creates_the_first_user(env, tmp_path, unique):
    import servers

    root = tmp_path / "var-lib-aqpipe"
    base = {k: v for k, v in {**os.environ, **env}.items() if k not in ("AQPIPE_DATA_DIR", "AQPIPE_METRICS__PORT")}
    procs, ports = {}, {}
    for name in ("alerts", "web"):
        unit_env, state = _unit(name, root)
        for d in state:  # what systemd does for StateDirectory=
            (root / d.removeprefix("aqpipe/")).mkdir(parents=True, exist_ok=True)
        # /etc/aqpipe is the host's: the test's servers instead. The test broker is open (the
        # accounts are proven in test_broker_acl.py); no Alertmanager is needed here.
        for key in ("AQPIPE_CONFIG", "AQPIPE_MQTT__USERNAME", "AQPIPE_MQTT__PASSWORD_FILE",
                    "AQPIPE_ALERTS__ALERTMANAGER_URL"):
            unit_env.pop(key, None)
        ports[name] = servers.free_port()
        unit_env["AQPIPE_METRICS__PORT"] = str(ports[name])
        if name == "web":
            ports["pages"] = servers.free_port()
            unit_env["AQPIPE_WEB__PORT"] = str(ports["pages"])
            users_file = unit_env["AQPIPE_WEB__USERS_FILE"]
        if name == "alerts":
            unit_env["AQPIPE_ALERTS__CLIENT_ID"] = f"aqpipe-alerts-{unique}"
        log = open(tmp_path / f"{name}.log", "w")  # a file, not a pipe nobody reads while waiting
        procs[name] = (subprocess.Popen([AQPIPE, name], env={**base, **unit_env}, cwd=tmp_path,
                                        stdout=subprocess.DEVNULL, stderr=log), unit_env)
        log.close()
    try:
        # both started at once: both migrate the same file at start (BEGIN IMMEDIATE serialises them)
        for name in ("alerts", "web"):
            wait_until(lambda: _status(f"http://127.0.0.1:{ports[name]}/readyz")[0] == 200
                       or procs[name][0].poll() is not None, timeout=30)
            assert procs[name][0].poll() is None, (tmp_path / f"{name}.log").read_text()
            assert _status(f"http://127.0.0.1:{ports[name]}/readyz") == (200, "ok\n")
        urls = {procs[n][1]["AQPIPE_CASES__DATABASE_URL"] for n in ("alerts", "web")}
        assert urls == {f"sqlite:///{root}/cases/cases.sqlite"}
        assert (root / "cases" / "cases.sqlite").stat().st_size > 0 and not list((root / "web").glob("*.sqlite"))

        # deploy/README.md: the first user, with the unit's users file, nothing else set
        only_users_file = {k: v for k, v in os.environ.items() if not k.startswith("AQPIPE_")}
        made = subprocess.run([AQPIPE, "web", "token", "add", "ci", "--role", "viewer"], cwd=tmp_path, timeout=60,
                              env={**only_users_file, "AQPIPE_WEB__USERS_FILE": users_file}, capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        status, body = _status(f"http://127.0.0.1:{ports['pages']}/api/v1/cases", token)  # reread, no restart
        assert status == 200 and isinstance(json.loads(body), (list, dict)), body
        assert _status(f"http://127.0.0.1:{ports['pages']}/api/v1/cases", "aqp_000000000000_" + "x" * 24)[0] == 401
        assert "aqpipe_web_requests_total" in _status(f"http://127.0.0.1:{ports['web']}/metrics")[1]
        assert "aqpipe_alerts_mqtt_connected 1.0" in _status(f"http://127.0.0.1:{ports['alerts']}/metrics")[1]
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, (proc, _) in procs.items():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            codes[name] = proc.returncode
    assert codes == {"alerts": 0, "web": 0}  # SIGTERM is a clean stop (the units' KillSignal)
