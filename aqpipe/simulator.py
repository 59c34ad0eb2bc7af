"""`aqpipe simulate`: a realistic station feed for demos, dashboards and soak runs.

About twenty ambient stations with diurnal patterns (PM2.5 peaking morning and
evening with the traffic, O3 in the afternoon sun, NO2 opposite to O3), weather,
two stack outlets publishing JSON and one data logger sending HJ 212-2017 minute
frames, calibration flags at the top of some hours, and a small share of malformed
messages that ingest must dead-letter. The JSON outlets exceed their permit limits at
their load peaks a few hours a day, and the coal outlet from 2 h before the start to 1 h
after, so the alerts service fires (and opens a case) within minutes of `make run`. Station ids and the logger's MN match the
registry in deploy/config/.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from aqpipe.cliutil import AddCommon, load_or_exit, wait_for_signal
from aqpipe.decoders.hj212 import build_frame
from aqpipe.mqtt import make_client

log = logging.getLogger("aqpipe.simulate")
CST = timezone(timedelta(hours=8))

STATION_PREFIX = "620503"  # a district code; station ids look like 620503-001
# JSON outlets (CEMS that speak MQTT) and one data logger that speaks HJ 212-2017
# (MN as in deploy/config/outlets.toml), sending minute data (CN 2051) once a minute.
OUTLETS = [("91620503MA001-DA001", "coal"), ("91620503MA002-DA001", "gas")]
HJ212_OUTLET_MN = "91620503MA00300000000001"
HJ212_CODES = {"so2": "a21026", "nox": "a21002", "pm": "a34013", "o2": "a19001", "temp": "a01012",
               "flow": "a00000", "velocity": "a01011", "humidity": "a01014", "pressure": "a01013"}
REF_O2_COAL = 9.0


def hj212_minute_frame(mn: str, minute_start: datetime, rng: random.Random) -> str:
    """A 2051 minute-data frame as a coal-boiler data logger sends it: Avg/Min/Max,
    converted (Zs) values for the pollutants, a data flag per code."""
    v = stack_values("coal", minute_start, rng)
    t = minute_start.astimezone(CST)
    factor = (21 - REF_O2_COAL) / (21 - v["o2"])
    groups = []
    for name, code in HJ212_CODES.items():
        value = v[name]
        items = [f"{code}-Avg={value}"]
        if name in ("so2", "nox", "pm"):
            items += [f"{code}-Min={round(value * 0.9, 1)}", f"{code}-Max={round(value * 1.1, 1)}",
                      f"{code}-ZsAvg={round(value * factor, 1)}"]
        items.append(f"{code}-Flag=N")
        groups.append(",".join(items))
    segment = (f"QN={t.strftime('%Y%m%d%H%M%S')}000;ST=31;CN=2051;PW=123456;MN={mn};Flag=4;"
               f"CP=&&DataTime={t.strftime('%Y%m%d%H%M%S')};{';'.join(groups)}&&")
    return build_frame(segment)


@dataclass
class Station:
    id: str
    base_pm25: float  # typical level: urban stations dirtier than the background site
    base_o3: float
    seed: float


def stations(n: int) -> list[Station]:
    rng = random.Random(42)
    return [Station(f"{STATION_PREFIX}-{i:03d}", rng.uniform(20, 55), rng.uniform(50, 90), rng.uniform(0, 6.28))
            for i in range(1, n + 1)]


def ambient_values(st: Station, t: datetime, rng: random.Random) -> dict[str, float]:
    h = t.astimezone(CST).hour + t.minute / 60
    traffic = 1 + 0.35 * math.exp(-((h - 8) ** 2) / 4) + 0.45 * math.exp(-((h - 19.5) ** 2) / 6)
    sun = max(0.0, math.sin((h - 6) / 14 * math.pi))  # 06:00..20:00
    day_wave = 1 + 0.25 * math.sin(t.timestamp() / 86400 * 2 * math.pi / 5 + st.seed)  # multi-day episodes
    pm25 = max(1.0, st.base_pm25 * traffic * day_wave * rng.lognormvariate(0, 0.12))
    o3 = max(2.0, st.base_o3 * (0.35 + 1.5 * sun) * rng.lognormvariate(0, 0.1))
    no2 = max(2.0, 45 * traffic * (1.2 - 0.6 * sun) * rng.lognormvariate(0, 0.15))
    return {
        "pm25": round(pm25, 1), "pm10": round(pm25 * rng.uniform(1.5, 1.9), 1),
        "so2": round(max(1.0, 8 * traffic * rng.lognormvariate(0, 0.2)), 1), "no2": round(no2, 1),
        "co": round(max(0.1, 0.5 * traffic * rng.lognormvariate(0, 0.15)), 2), "o3": round(o3, 1),
        "temp": round(8 + 8 * sun + rng.gauss(0, 0.3), 1), "rh": round(min(100, max(5, 60 - 25 * sun + rng.gauss(0, 2))), 1),
        "ws": round(abs(2 + 2 * sun + rng.gauss(0, 0.5)), 1), "wd": round((270 + 40 * math.sin(h / 3) + rng.gauss(0, 10)) % 360),
        "pa": round(1012 + rng.gauss(0, 0.5), 1),
    }


# Load peaks (China local hours) when the JSON outlets exceed their permit limits, so the
# alerts service has something to say every day: the coal outlet's SO2 (permit 35 mg/m³)
# at the morning and evening peaks, the gas outlet's NOx (permit 50 mg/m³) an hour later.
SURGE_HOURS = {"coal": (7, 19), "gas": (8, 20)}
SURGE_FACTOR = {"coal": ("so2", 1.9), "gas": ("nox", 1.6)}
# The coal outlet also exceeds from 2 h before the simulator starts to 1 h after, so a
# newcomer running `make run` sees a firing alert and its case within minutes.
STARTUP_SURGE = (timedelta(hours=-2), timedelta(hours=1))


def surging(fuel: str, t: datetime, started: datetime | None = None) -> bool:
    """Whether an outlet of this fuel runs over its limit at `t` (see SURGE_HOURS)."""
    if t.astimezone(CST).hour in SURGE_HOURS[fuel]:
        return True
    return fuel == "coal" and started is not None and started + STARTUP_SURGE[0] <= t < started + STARTUP_SURGE[1]


def stack_values(fuel: str, t: datetime, rng: random.Random, surge: bool = False) -> dict[str, float]:
    o2 = rng.uniform(7.5, 10.5) if fuel == "coal" else rng.uniform(3.0, 5.0)
    so2 = (28 if fuel == "coal" else 4) * rng.lognormvariate(0, 0.2)
    nox = (42 if fuel == "coal" else 45) * rng.lognormvariate(0, 0.15)
    if surge:
        name, factor = SURGE_FACTOR[fuel]
        so2, nox = (so2 * factor, nox) if name == "so2" else (so2, nox * factor)
    return {"so2": round(so2, 1), "nox": round(nox, 1), "pm": round(6 * rng.lognormvariate(0, 0.2), 1), "o2": round(o2, 2),
            "temp": round(rng.uniform(95, 130), 1), "flow": round(rng.uniform(90000, 110000)), "velocity": round(rng.uniform(11, 14), 1),
            "humidity": round(rng.uniform(8, 12), 1), "pressure": round(rng.uniform(100.8, 101.5), 2)}


# Each malformed kind is a message ingest must dead-letter with the named reason.
MALFORMED: list[tuple[str, Callable[[str, datetime], tuple[str, bytes]]]] = [
    ("not_json", lambda sid, t: (f"aq/v1/ambient/{sid}", b'{"station": "' + sid.encode() + b'", "time": ')),
    ("identity_mismatch", lambda sid, t: (f"aq/v1/ambient/{sid}", json.dumps(
        {"station": "999999-999", "time": t.isoformat(), "values": {"pm25": 10}}).encode())),
    ("unknown_pollutant", lambda sid, t: (f"aq/v1/ambient/{sid}", json.dumps(
        {"station": sid, "time": t.isoformat(), "values": {"pm2.5": 10}}).encode())),
    ("no_timezone", lambda sid, t: (f"aq/v1/ambient/{sid}", json.dumps(
        {"station": sid, "time": t.replace(tzinfo=None).isoformat(), "values": {"pm25": 10}}).encode())),
    ("negative", lambda sid, t: (f"aq/v1/ambient/{sid}", json.dumps(
        {"station": sid, "time": t.isoformat(), "values": {"pm25": -40.0}}).encode())),
]


def ambient_message(st: Station, t: datetime, interval_s: int, rng: random.Random) -> dict:
    msg = {"station": st.id, "time": t.astimezone(CST).isoformat(), "interval_s": interval_s,
           "values": ambient_values(st, t, rng)}
    # Zero/span checks run at the top of some hours: the O3 analyser reports C for a few minutes.
    if t.minute < 5 and (int(t.timestamp() // 3600) + int(st.id[-3:])) % 7 == 0:
        msg["flags"] = {"o3": "C"}
    return msg


def register(sub: argparse._SubParsersAction, add_common: AddCommon) -> None:
    p = sub.add_parser("simulate", help="publish a realistic station feed over MQTT",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--stations", type=int, default=20, help="ambient stations (default 20)")
    p.add_argument("--interval", type=float, default=60, help="seconds between readings of a station (default 60)")
    p.add_argument("--backfill-hours", type=float, default=0, help="first publish this many hours of history, in batches")
    p.add_argument("--malformed", type=float, default=0.01, help="share of malformed messages (default 0.01)")
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--seed", type=int, default=None, help="random seed (repeatable feeds)")
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    cfg = load_or_exit(args.config)
    stop = wait_for_signal()
    rng = random.Random(args.seed)
    sts = stations(args.stations)
    client = make_client(cfg.mqtt, client_id=f"aqpipe-simulator-{rng.randrange(1 << 30)}")
    client.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=30)
    client.loop_start()
    interval = max(1, int(args.interval))
    pending = []

    def publish(topic: str, payload: bytes) -> None:
        pending.append(client.publish(topic, payload, qos=1))
        if len(pending) >= 500:
            _drain(pending)

    counts = {"readings": 0, "malformed": 0}
    now = datetime.now(timezone.utc)
    if args.backfill_hours > 0:
        start = now - timedelta(hours=args.backfill_hours)
        log.info("event=backfill hours=%s stations=%d", args.backfill_hours, len(sts))
        for st in sts:
            t = start
            while t < now and not stop.is_set():
                batch = []
                for _ in range(50):
                    if t >= now:
                        break
                    item = ambient_message(st, t, 60, rng)
                    del item["station"]
                    batch.append(item)
                    t += timedelta(seconds=60)
                publish(f"aq/v1/ambient/{st.id}", json.dumps({"station": st.id, "readings": batch}).encode())
                counts["readings"] += len(batch)
        for outlet, fuel in OUTLETS:
            t = start
            while t < now and not stop.is_set():
                batch = []
                for _ in range(60):
                    if t >= now:
                        break
                    batch.append({"time": t.astimezone(CST).isoformat(), "interval_s": 60,
                                  "values": stack_values(fuel, t, rng, surging(fuel, t, now)), "status": "running"})
                    t += timedelta(seconds=60)
                publish(f"aq/v1/stack/{outlet}", json.dumps({"outlet": outlet, "readings": batch}).encode())
                counts["readings"] += len(batch)
        _drain(pending)
        log.info("event=backfill_done readings=%d", counts["readings"])

    started = time.monotonic()
    tick = 0
    last_minute = None
    while not stop.is_set():
        t = datetime.fromtimestamp(int(time.time()) // interval * interval, timezone.utc)
        for st in sts:
            publish(f"aq/v1/ambient/{st.id}", json.dumps(ambient_message(st, t, interval, rng)).encode())
            counts["readings"] += 1
            if rng.random() < args.malformed:
                reason, make = rng.choice(MALFORMED)
                publish(*make(st.id, t))
                counts["malformed"] += 1
        for outlet, fuel in OUTLETS:
            msg = {"outlet": outlet, "time": t.astimezone(CST).isoformat(), "interval_s": interval,
                   "values": stack_values(fuel, t, rng, surging(fuel, t, now)), "status": "running"}
            publish(f"aq/v1/stack/{outlet}", json.dumps(msg).encode())
            counts["readings"] += 1
        minute = t.replace(second=0) - timedelta(minutes=1)  # the minute just completed
        if minute != last_minute:
            publish(f"aq/v1/hj212/{HJ212_OUTLET_MN}", hj212_minute_frame(HJ212_OUTLET_MN, minute, rng).encode())
            counts["readings"] += 1
            last_minute = minute
        _drain(pending)
        tick += 1
        log.info("event=published tick=%d time=%s readings_total=%d malformed_total=%d",
                 tick, t.isoformat(), counts["readings"], counts["malformed"])
        if args.duration and time.monotonic() - started >= args.duration:
            break
        stop.wait(interval - (time.time() % interval))
    _drain(pending)
    client.disconnect()
    client.loop_stop()
    return 0


def _drain(pending: list) -> None:
    for info in pending:
        info.wait_for_publish(timeout=30)
    pending.clear()
