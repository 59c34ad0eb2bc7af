"""Fault-injection harness: a numbered feed, an ingest process to kill, and the audit.

Each reading carries its sequence number as its value and as its time offset, so the
audit can say for every number whether InfluxDB holds it. Whether one was written twice
cannot be read from the stored rows (a point with the same time is overwritten): the
audit counts the points InfluxDB received instead (SHOW STATS), or ingest's own count.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.deadletter import DeadLetterStore
from aqpipe.influx import InfluxQL, QueryError

AQPIPE = str(Path(sys.executable).parent / "aqpipe")
T0 = (int(time.time()) - 3 * 86400) // 60 * 60  # three days ago: in retention, all times distinct


def reading(station: str, seq: int) -> bytes:
    return json.dumps({"station": station, "time": T0 + seq, "values": {"pm25": float(seq)}}).encode()


class Feed:
    """Publishes readings 0..n-1 at QoS 1 from a thread, at least once each: a publish
    that the broker has not acknowledged (it restarted, say) is sent again."""

    def __init__(self, port: int, station: str, n: int, rate: float, malformed_every: int = 0) -> None:
        self.port, self.station, self.n, self.rate = port, station, n, rate
        self.malformed_every = malformed_every
        self.published = 0
        self.malformed: set[bytes] = set()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Feed":
        self._thread.start()
        return self

    def wait(self, timeout: float) -> None:
        assert self.done.wait(timeout), f"feed did not finish: {self.published}/{self.n} published"

    def _client(self) -> paho.Client:
        c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"feed-{self.station}", protocol=paho.MQTTv5)
        c.max_inflight_messages_set(200)
        c.reconnect_delay_set(0.2, 1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        c.connect("127.0.0.1", self.port, clean_start=True, properties=props)
        c.loop_start()
        return c

    def _run(self) -> None:
        client = self._client()
        topic = f"aq/v1/ambient/{self.station}"
        chunk = 100
        started = time.monotonic()
        for lo in range(0, self.n, chunk):
            batch = []
            for seq in range(lo, min(lo + chunk, self.n)):
                batch.append(reading(self.station, seq))
                if self.malformed_every and seq % self.malformed_every == 0:
                    bad = f'{{"station": "{self.station}", "seq": {seq}, broken'.encode()
                    self.malformed.add(bad)
                    batch.append(bad)
            pending = batch
            while pending:
                infos = [(p, client.publish(topic, p, qos=1)) for p in pending]
                pending = []
                for payload, info in infos:
                    try:
                        info.wait_for_publish(5)
                        ok = info.is_published()
                    except (RuntimeError, ValueError):
                        ok = False
                    if not ok:
                        pending.append(payload)
                if pending:
                    time.sleep(0.3)
            self.published = min(lo + chunk, self.n)
            ahead = self.published / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        client.disconnect()
        client.loop_stop()
        self.done.set()


class IngestProcess:
    """`aqpipe ingest` as a real process, to be killed and restarted."""

    started: list["IngestProcess"] = []  # every process of the test, killed at teardown if still alive

    @classmethod
    def kill_leftovers(cls) -> None:
        for p in cls.started:
            if p.proc is not None and p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(10)
        cls.started.clear()

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = {**os.environ, **env}
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "IngestProcess":
        self.proc = subprocess.Popen([AQPIPE, "ingest"], env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"), start_new_session=True)
        IngestProcess.started.append(self)
        return self

    def kill(self) -> bool:
        """SIGKILL; True if the process was alive and died of it (the kill happened)."""
        assert self.proc is not None
        alive = self.proc.poll() is None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return alive and self.proc.returncode == -signal.SIGKILL

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@dataclass
class Audit:
    published: int
    stored: int
    missing: list[int] = field(default_factory=list)
    deadlettered: int = 0
    # Points InfluxDB received since it started, overwrites included (None: not asked).
    # Stored rows cannot show a reading written twice (same time: overwritten); this can.
    written: int | None = None

    @property
    def rewrites(self) -> int | None:
        """Readings written more than once (redeliveries after a kill or a broker restart)."""
        return None if self.written is None else self.written - self.stored

    def line(self, name: str) -> str:
        return (f"[{name}] published={self.published} stored={self.stored} missing={len(self.missing)} "
                f"written={self.written} dead-lettered={self.deadlettered}")


def points_received(influx: InfluxQL) -> int:
    """Points InfluxDB accepted since it started (SHOW STATS, write.pointReq), each write of a
    point counted, although a point written twice is stored once."""
    return int(sum(r.get("pointReq") or 0 for r in influx.rows("SHOW STATS FOR 'write'")))


def written_by_ingest(log: Path) -> int:
    """Readings an ingest process says it wrote (its `event=stopped ... written=N` lines, summed)."""
    return sum(int(m) for m in re.findall(r"event=stopped received=\d+ written=(\d+)", log.read_text(errors="replace")))


def audit(influx: InfluxQL, station: str, n: int, data_dirs: list[Path]) -> Audit:
    try:
        rows = influx.rows(f"SELECT pm25 FROM ambient WHERE station = '{station}'")
    except QueryError:  # the database is not there (yet): nothing stored
        rows = []
    seen: dict[int, int] = {}
    for r in rows:
        seq = int(r["pm25"])
        assert r["time"] == (T0 + seq) * 10**9, f"reading {seq} stored at the wrong time"
        seen[seq] = seen.get(seq, 0) + 1
    assert all(c == 1 for c in seen.values())  # one point per time: InfluxDB overwrites
    letters = {letter.id for d in data_dirs for letter in DeadLetterStore(d / "deadletter").pending()}
    try:
        written = points_received(influx)
    except QueryError:
        written = None
    return Audit(published=n, stored=len(seen), missing=[i for i in range(n) if i not in seen],
                 deadlettered=len(letters), written=written)
