"""Benchmark: the alerts service.

Run: .venv/bin/python bench/alerts.py [--outlets 10000] [--stations 2000] [--alerts 200] [--rate 20] [--seconds 20]

1. Latency, end to end: an exceeded hour's derived record published on
   aq/v1/derived/stack/{outlet} (real Mosquitto) -> `AlertsService` (evaluation, case opened
   in the SQLite case database, minute evidence queried from the real InfluxDB, commit, ack)
   -> Alertmanager (real) accepting the alert. Measured at a small HTTP relay in front of
   Alertmanager: the time its 200 came back for the POST carrying that outlet's alert.
   `--alerts` records, one new outlet each, at `--rate` per second. Target: p99 < 1 s.
2. Rule evaluations per second with `--outlets` outlets (3 pollutants each) and `--stations`
   stations (hourly AQI): one hour of records through `AlertEngine`, committed in batches
   as the service commits a backlog (SQLite, synchronous FULL), for at most `--seconds`;
   and the rules + lifecycle alone (no database), for comparison.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
# This file is named alerts.py: drop its own folder from the path so `import alerts` finds
# the package, and put the repository root first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import servers  # noqa: E402

from alerts.cases.db import engine_for_url, migrate  # noqa: E402
from alerts.engine import AlertEngine  # noqa: E402
from alerts.lifecycle import Period, replay  # noqa: E402
from alerts.rules import judge_aqi_hour, judge_stack_hour, load_rules  # noqa: E402
from alerts.service import MAX_BATCH  # noqa: E402
from aqpipe.config import load_config  # noqa: E402
from aqpipe.registry import Registry  # noqa: E402

CST = timezone(timedelta(hours=8))


def write_registry(d: Path, outlets: int, stations: int) -> None:
    d.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(outlets):
        lines.append(f'[[outlet]]\nid = "B{i:05d}-DA001"\nenterprise = "企业{i:05d}"\npermit = "P{i:05d}"\n'
                     f'boiler = "new"\nfuel = "{"gas" if i % 2 else "coal"}"\nlimits = {{ so2 = 50, nox = 50, pm = 10 }}\n')
    (d / "outlets.toml").write_text("\n".join(lines), encoding="utf-8")
    (d / "stations.toml").write_text("\n".join(f'[[station]]\nid = "S{i:04d}"\nname = "站点{i:04d}"\n'
                                               for i in range(stations)), encoding="utf-8")


def stack_record(outlet: str, pollutant: str, hour_end: datetime, exceeded: bool) -> dict:
    corr = 62.0 if exceeded else 31.0
    return {"outlet": outlet, "pollutant": pollutant, "time": hour_end.astimezone(CST).isoformat(), "avg": corr * 0.7,
            "avg_o2corr": corr, "limit": 50.0, "limit_source": "permit", "exceeded": exceeded, "valid_minutes": 60,
            "not_running_minutes": 0}


class Relay:
    """Forwards POST /api/v2/alerts to Alertmanager; notes when each outlet's alert was accepted."""

    def __init__(self, upstream: str) -> None:
        self.accepted: dict[str, float] = {}
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = urllib.request.Request(upstream + self.path, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=10) as r:
                    status = r.status
                done = time.perf_counter()
                if status == 200:
                    for a in json.loads(body):
                        if "endsAt" not in a:
                            relay.accepted.setdefault(a["labels"].get("outlet", ""), done)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def latency(tmp: Path, args) -> None:
    from alerts.service import AlertsService

    started = []
    try:
        mq = servers.Server("mosquitto", servers.free_port(), tmp / "mosquitto").start()
        started.append(mq)
        influx = servers.Server("influxdb", servers.free_port(), tmp / "influxdb").start()
        started.append(influx)
        am = servers.Server("alertmanager", servers.free_port(), tmp / "alertmanager").start()
        started.append(am)
        relay = Relay(am.url)
        # the database ingest would have created (the service reads minute evidence from it)
        urllib.request.urlopen(urllib.request.Request(f"{influx.url}/query?q=CREATE+DATABASE+aq", method="POST"),
                               timeout=10).close()
        cfg = load_config(None, {"AQPIPE_MQTT__PORT": str(mq.port), "AQPIPE_INFLUX__URL": influx.url,
                                 "AQPIPE_DATA_DIR": str(tmp / "data"), "AQPIPE_METRICS__PORT": "0",
                                 "AQPIPE_REGISTRY_DIR": str(tmp / "registry"),
                                 "AQPIPE_ALERTS__ALERTMANAGER_URL": relay.url})
        service = AlertsService(cfg)
        service.start()
        assert service.connected.wait(10), "alerts service did not subscribe"
        pub = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        pub.connect("127.0.0.1", mq.port)
        pub.loop_start()
        hour_end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        sent: dict[str, float] = {}
        for i in range(args.alerts):
            outlet = f"B{i:05d}-DA001"
            payload = json.dumps(stack_record(outlet, "so2", hour_end, True))
            sent[outlet] = time.perf_counter()
            pub.publish(f"aq/v1/derived/stack/{outlet}", payload, qos=1)
            time.sleep(1.0 / args.rate)  # paced: latency of each record, not of a queue
        deadline = time.monotonic() + 60
        while len(relay.accepted) < args.alerts and time.monotonic() < deadline:
            time.sleep(0.05)
        lat = np.array([relay.accepted[o] - t for o, t in sent.items() if o in relay.accepted]) * 1000
        if not len(lat):
            raise SystemExit("no alert reached Alertmanager within 60 s: see the service's log above")
        pub.disconnect()
        pub.loop_stop()
        service.stop()
        print(f"latency derived record -> Alertmanager accepted: n={len(lat)}/{args.alerts} at {args.rate}/s  "
              f"p50={np.percentile(lat, 50):.0f} ms  p99={np.percentile(lat, 99):.0f} ms  max={lat.max():.0f} ms  "
              f"(target p99 < 1000 ms: {'met' if np.percentile(lat, 99) < 1000 else 'NOT met'})")
    finally:
        for s in reversed(started):
            s.stop()


def evaluations(tmp: Path, args) -> None:
    rules = load_rules()
    registry = Registry.load(tmp / "registry")
    rng = random.Random(1)
    hour_end = datetime(2026, 11, 24, 2, tzinfo=timezone.utc)
    records = [("stack", stack_record(o, p, hour_end, rng.random() < 0.01))
               for o in registry.outlets for p in ("so2", "nox", "pm")]
    records += [("aqi", {"station": s, "standard": "cn-2026", "period": "hour", "time": hour_end.isoformat(),
                         "aqi": (a := rng.randint(20, 320)), "category": 1 + sum(a > b for b in (50, 100, 150, 200, 300))})
                for s in registry.stations]
    rng.shuffle(records)

    # rules and lifecycle alone
    stack_rule, aqi_rule = rules.by_name("stack_exceedance"), rules.by_name("aqi_hourly_severe")
    t0 = time.perf_counter()
    for kind, rec in records:
        j = judge_stack_hour(stack_rule, rec) if kind == "stack" else judge_aqi_hour(aqi_rule, rec)
        replay({hour_end: Period(j.verdict, j.value, j.threshold)})
    pure = len(records) / (time.perf_counter() - t0)

    db = engine_for_url(f"sqlite:///{tmp / 'eval.sqlite'}")
    migrate(db)
    engine = AlertEngine(rules, registry, "http://127.0.0.1:9120/cases/{case_id}")  # no InfluxDB: no minute evidence
    now = datetime.now(timezone.utc)
    done = evals = 0
    t0 = time.perf_counter()
    for k in range(0, len(records), MAX_BATCH):  # as the service commits a backlog: one transaction per batch
        with db.begin() as conn:
            for kind, rec in records[k:k + MAX_BATCH]:
                eff = engine.stack_record(conn, rec, now) if kind == "stack" else engine.aqi_record(conn, rec, now)
                evals += eff.evaluations
                done += 1
        if time.perf_counter() - t0 > args.seconds:
            break
    elapsed = time.perf_counter() - t0
    print(f"rule evaluations, {len(registry.outlets)} outlets x 3 pollutants + {len(registry.stations)} stations "
          f"= {len(records)} records/hour:")
    print(f"  through AlertEngine, SQLite, one transaction per {MAX_BATCH} records (the service's batching): {evals / elapsed:,.0f} evaluations/s "
          f"({done} of {len(records)} records in {elapsed:.1f} s; one hour of the fleet takes "
          f"{len(records) / (done / elapsed):.0f} s)")
    print(f"  rules + lifecycle alone (no database): {pure:,.0f} evaluations/s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outlets", type=int, default=10000)
    p.add_argument("--stations", type=int, default=2000)
    p.add_argument("--alerts", type=int, default=200, help="exceeded records for the latency run")
    p.add_argument("--rate", type=float, default=5.0, help="records per second in the latency run")
    p.add_argument("--seconds", type=float, default=20.0, help="longest time for the database evaluation run")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="aqpipe-bench-alerts-") as d:
        tmp = Path(d)
        write_registry(tmp / "registry", args.outlets, args.stations)
        latency(tmp, args)
        evaluations(tmp, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
