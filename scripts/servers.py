#!/usr/bin/env python3
"""Start and stop the real servers aqpipe talks to, on loopback, with their own config
and data under one directory: Mosquitto, InfluxDB 1.x, Alertmanager, VictoriaMetrics
(an independent implementation of InfluxDB's /api/v2/write, for the v2 write path),
Prometheus and PostgreSQL (run as the `postgres` user: it refuses root).

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
    "prometheus": ["/usr/bin/prometheus", "prometheus"],
    "postgresql": [str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), reverse=True)] + ["postgres"],
}
DEFAULT_PORTS = {"mosquitto": 1883, "influxdb": 8086, "alertmanager": 9093, "victoriametrics": 8428,
                 "prometheus": 9090, "postgresql": 5432}
DEBIAN_PACKAGE = {"mosquitto": "mosquitto", "influxdb": "influxdb", "alertmanager": "prometheus-alertmanager",
                  "victoriametrics": "victoria-metrics", "prometheus": "prometheus", "postgresql": "postgresql"}
PG_USER = "postgres"  # the account Debian's postgresql package creates; PostgreSQL refuses to run as root


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


def mosquitto_conf(d: Path, port: int, auth: tuple[Path, Path] | None = None,
                   tls: tuple[Path, Path] | None = None) -> str:
    # Manual acks wait for durability, so the broker must allow a large in-flight window
    # and keep a deep queue for persistent sessions while a consumer is down.
    # `user`: Mosquitto started as root otherwise drops to the mosquitto user, which
    # cannot write our data dir; persistence would then fail silently (sessions lost).
    user = "root" if os.geteuid() == 0 else ""
    return f"""\
{"user " + user if user else ""}
listener {port} 127.0.0.1
{f"certfile {tls[0]}{chr(10)}keyfile {tls[1]}" if tls else ""}
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


def prometheus_conf() -> str:
    return """\
global:
  scrape_interval: 15s
scrape_configs: []
"""


def _as_postgres() -> dict:
    """subprocess arguments that run a command as the postgres user when we are root."""
    if os.geteuid() != 0:
        return {}
    import pwd

    pw = pwd.getpwnam(PG_USER)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [],
            "env": {**os.environ, "HOME": pw.pw_dir}}


def _postgres_datadir(d: Path) -> Path:
    """initdb once (as postgres) and return the data directory; trust auth on loopback.

    As root, the data lives in a directory of its own owned by postgres (recorded in
    d/pgdata.path), because d may sit in a tree postgres cannot enter (pytest's and
    mkdtemp's directories are 0700 root)."""
    record = d / "pgdata.path"
    if record.exists() and (Path(record.read_text().strip()) / "PG_VERSION").exists():
        return Path(record.read_text().strip())
    if os.geteuid() == 0:
        import pwd
        import tempfile

        pw = pwd.getpwnam(PG_USER)
        data = Path(tempfile.mkdtemp(prefix="aqpipe-postgresql-"))
        os.chown(data, pw.pw_uid, pw.pw_gid)
    else:
        data = d / "data"
        data.mkdir(parents=True, exist_ok=True)
    initdb = Path(binary("postgresql")).with_name("initdb")
    done = subprocess.run([str(initdb), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                           "--locale=C.UTF-8", "--no-sync"], capture_output=True, text=True, **_as_postgres())
    if done.returncode != 0:
        raise ServerError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
    record.write_text(str(data))
    return data


@dataclass
class Server:
    name: str
    port: int
    directory: Path
    pid: int | None = None
    auth: tuple[Path, Path] | None = None  # mosquitto: (password file, ACL file)
    tls: tuple[Path, Path] | None = None  # mosquitto: (certificate chain, key): TLS on its listener
    config_file: Path | None = None  # alertmanager / prometheus: use this config instead of the minimal one

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        exe = binary(self.name)
        if self.name == "mosquitto":
            (d / "mosquitto.conf").write_text(mosquitto_conf(d, self.port, self.auth, self.tls))
            return [exe, "-c", str(d / "mosquitto.conf")]
        if self.name == "influxdb":
            (d / "influxdb.conf").write_text(influxdb_conf(d, self.port))
            return [exe, "-config", str(d / "influxdb.conf")]
        if self.name == "alertmanager":
            config = self.config_file or d / "alertmanager.yml"
            if self.config_file is None:
                config.write_text(alertmanager_conf())
            return [exe, f"--config.file={config}", f"--storage.path={d}/data",
                    f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
                    "--log.level=warn"]
        if self.name == "victoriametrics":
            return [exe, f"-storageDataPath={d}/data", f"-httpListenAddr=127.0.0.1:{self.port}",
                    "-loggerLevel=ERROR", "-search.latencyOffset=0s", "-retentionPeriod=100y"]
        if self.name == "prometheus":
            config = self.config_file or d / "prometheus.yml"
            if self.config_file is None:
                config.write_text(prometheus_conf())
            return [exe, f"--config.file={config}", f"--storage.tsdb.path={d}/data",
                    f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle", "--log.level=warn"]
        if self.name == "postgresql":
            data = _postgres_datadir(d)
            return [exe, "-D", str(data), "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                    "-c", f"unix_socket_directories={data}", "-c", "fsync=off", "-c", "max_connections=200"]
        raise ServerError(f"unknown server {self.name}")

    @property
    def database_url(self) -> str:
        """postgresql: a SQLAlchemy URL for the superuser's database (trust auth on loopback)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 30.0) -> "Server":
        cmd = self.command()
        log = open(self.directory / f"{self.name}.out", "ab")
        as_user = _as_postgres() if self.name == "postgresql" else {}
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **as_user)
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
        if self.name == "postgresql":
            isready = Path(binary("postgresql")).with_name("pg_isready")
            return subprocess.run([str(isready), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                                  capture_output=True).returncode == 0
        path = {"influxdb": "/ping", "alertmanager": "/-/ready", "victoriametrics": "/health",
                "prometheus": "/-/ready"}[self.name]
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
