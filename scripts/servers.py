#!/usr/bin/env python3
"""Start and stop the real servers aqpipe talks to, on loopback, with their own config
and data under one directory: Mosquitto, InfluxDB 1.x, Alertmanager, VictoriaMetrics
(an independent implementation of InfluxDB's /api/v2/write, for the v2 write path).

Used by `make run` (default ports) and by the test suite (free ports, temp dirs).
Standard library only: it runs before the virtualenv exists.

    python3 scripts/servers.py up --dir run            # all, default ports
    python3 scripts/servers.py up --dir run mosquitto influxdb --mqtt-port 1884
    python3 scripts/servers.py down --dir run
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BINARIES = {
    "mosquitto": ["/usr/sbin/mosquitto", "mosquitto"],
    "influxdb": ["/usr/bin/influxd", "influxd"],
    "alertmanager": ["/usr/bin/prometheus-alertmanager", "alertmanager"],
    "victoriametrics": ["/usr/bin/victoria-metrics", "victoria-metrics"],
}
DEFAULT_PORTS = {"mosquitto": 1883, "influxdb": 8086, "alertmanager": 9093, "victoriametrics": 8428}
DEBIAN_PACKAGE = {"mosquitto": "mosquitto", "influxdb": "influxdb", "alertmanager": "prometheus-alertmanager",
                  "victoriametrics": "victoria-metrics"}


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(name: str) -> str:
    for candidate in BINARIES[name]:
        path = shutil.which(candidate) or (candidate if os.path.exists(candidate) else None)
        if path:
            return path
    raise ServerError(f"{name} is not installed: apt-get install {DEBIAN_PACKAGE[name]} (or run `make deps`)")


def mosquitto_conf(d: Path, port: int, auth: tuple[Path, Path] | None = None) -> str:
    # Manual acks wait for durability, so the broker must allow a large in-flight window
    # and keep a deep queue for persistent sessions while a consumer is down.
    # `user`: Mosquitto started as root otherwise drops to the mosquitto user, which
    # cannot write our data dir; persistence would then fail silently (sessions lost).
    user = "root" if os.geteuid() == 0 else ""
    return f"""\
{"user " + user if user else ""}
listener {port} 127.0.0.1
{f"allow_anonymous false{chr(10)}password_file {auth[0]}{chr(10)}acl_file {auth[1]}" if auth else "allow_anonymous true"}
persistence true
persistence_location {d}/
autosave_interval 1
max_inflight_messages 0
max_queued_messages 2000000
max_queued_bytes 0
max_keepalive 120
log_dest file {d}/mosquitto.log
log_type error
log_type warning
log_type notice
"""


def influxdb_conf(d: Path, port: int) -> str:
    return f"""\
reporting-disabled = true
bind-address = "127.0.0.1:{free_port()}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
  trace-logging-enabled = false
[coordinator]
[retention]
  enabled = true
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  max-body-size = 0
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"""


def alertmanager_conf() -> str:
    return """\
route:
  receiver: default
  group_by: [alertname, station, outlet]
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 4h
receivers:
  - name: default
"""


@dataclass
class Server:
    name: str
    port: int
    directory: Path
    pid: int | None = None
    auth: tuple[Path, Path] | None = None  # mosquitto: (password file, ACL file)
    config_file: Path | None = None  # alertmanager: use this routing config instead of the minimal one

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        exe = binary(self.name)
        if self.name == "mosquitto":
            (d / "mosquitto.conf").write_text(mosquitto_conf(d, self.port, self.auth))
            return [exe, "-c", str(d / "mosquitto.conf")]
        if self.name == "influxdb":
            (d / "influxdb.conf").write_text(influxdb_conf(d, self.port))
            return [exe, "-config", str(d / "influxdb.conf")]
        if self.name == "alertmanager":
            config = self.config_file or d / "alertmanager.yml"
            if self.config_file is None:
                config.write_text(alertmanager_conf())
            return [exe, f"--config.file={config}", f"--storage.path={d}/data",
                    f"--web.listen-address=127.0.0.1:{self.port}", f"--cluster.listen-address=",
                    "--log.level=warn"]
        if self.name == "victoriametrics":
            return [exe, f"-storageDataPath={d}/data", f"-httpListenAddr=127.0.0.1:{self.port}",
                    "-loggerLevel=ERROR", "-search.latencyOffset=0s", "-retentionPeriod=100y"]
        raise ServerError(f"unknown server {self.name}")

    def start(self, timeout: float = 30.0) -> "Server":
        cmd = self.command()
        log = open(self.directory / f"{self.name}.out", "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = proc.pid
        (self.directory / f"{self.name}.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServerError(f"{self.name} exited with {proc.returncode}; see {self.directory}/{self.name}.out")
            if self.ready():
                return self
            time.sleep(0.1)
        raise ServerError(f"{self.name} did not become ready on port {self.port} within {timeout:.0f} s")

    def ready(self) -> bool:
        if self.name == "mosquitto":
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False
        path = {"influxdb": "/ping", "alertmanager": "/-/ready", "victoriametrics": "/health"}[self.name]
        try:
            with urllib.request.urlopen(self.url + path, timeout=1) as r:
                return r.status < 300
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        pid = self.pid or _read_pid(self.directory / f"{self.name}.pid")
        if pid is None:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                waited, _ = os.waitpid(pid, os.WNOHANG)
                if waited == pid:
                    break
            except ChildProcessError:  # not our child (started by another process): poll
                if not _alive(pid):
                    break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pid = None

    def restart(self) -> "Server":
        self.stop()
        return self.start()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("servers", nargs="*", default=["mosquitto", "influxdb"], help="default: mosquitto influxdb")
    p.add_argument("--dir", default="run", help="config, data, logs and pid files go here (default ./run)")
    for name, port in DEFAULT_PORTS.items():
        p.add_argument(f"--{name}-port", type=int, default=port)
    args = p.parse_intermixed_args(argv)
    root = Path(args.dir).resolve()
    for name in args.servers:
        if name not in DEFAULT_PORTS:
            p.error(f"unknown server {name!r}; choose from {', '.join(DEFAULT_PORTS)}")
        server = Server(name, getattr(args, f"{name}_port"), root / name)
        if args.action == "up":
            if server.ready():
                print(f"{name}: already answering on 127.0.0.1:{server.port}")
                continue
            try:
                server.start()
            except ServerError as e:
                print(f"{name}: FAILED: {e}", file=sys.stderr)
                return 1
            print(f"{name}: up on 127.0.0.1:{server.port} (pid {server.pid}, files in {server.directory})")
        elif args.action == "down":
            server.stop()
            print(f"{name}: stopped")
        else:
            print(f"{name}: {'up' if server.ready() else 'down'} on 127.0.0.1:{server.port}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
