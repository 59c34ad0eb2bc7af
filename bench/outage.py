#!/usr/bin/env python3
"""Ingest while InfluxDB is down (spooling) and the drain after it returns, with peak RSS.

Three phases over the same feed (50-reading JSON batches, queued by the broker for
ingest's persistent session before it starts, so the consumer is measured):
  normal    InfluxDB up: readings/s written;
  spooling  InfluxDB stopped: readings/s fsynced to the spool and acknowledged;
  draining  InfluxDB started again: readings/s moved from the spool into InfluxDB.
`aqpipe ingest` runs as its own process; its peak RSS (VmHWM) is read from /proc.
Targets: spooling >= 80% of normal, draining >= normal, peak RSS < 300 MB.

    .venv/bin/python bench/outage.py [--readings 200000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import servers  # noqa: E402
from feed import batch_messages, publish, register_session  # noqa: E402

AQPIPE = str(Path(sys.executable).parent / "aqpipe")


def counter(port: int, name: str) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_for(port: int, name: str, target: float, timeout: float = 600) -> float:
    started = time.perf_counter()
    while counter(port, name) < target:
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"timed out waiting for {name} >= {target}")
        time.sleep(0.02)
    return time.perf_counter() - started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readings", type=int, default=200000)
    args = p.parse_args()
    n = args.readings // 50 * 50
    with tempfile.TemporaryDirectory(prefix="aqpipe-outage-") as tmp:
        d = Path(tmp)
        mq = servers.Server("mosquitto", servers.free_port(), d / "mosquitto").start()
        ix = servers.Server("influxdb", servers.free_port(), d / "influxdb").start()
        mport = servers.free_port()
        env = {**os.environ, "AQPIPE_MQTT__PORT": str(mq.port), "AQPIPE_INFLUX__URL": ix.url,
               "AQPIPE_DATA_DIR": str(d / "data"), "AQPIPE_METRICS__PORT": str(mport),
               "AQPIPE_MQTT__CLIENT_ID": "bench-outage", "AQPIPE_INFLUX__RETRY_MAX_BACKOFF_S": "0.5"}
        proc = None
        try:
            register_session(mq.port, "bench-outage")
            publish(mq.port, batch_messages(n, 50, "normal"))
            proc = subprocess.Popen([AQPIPE, "ingest", "--log-level", "WARNING"], env=env)
            normal = n / wait_for(mport, "aqpipe_written_readings_total", n)
            print(f"normal:   {normal:10,.0f} readings/s written", flush=True)

            ix.stop()
            proc.send_signal(15)
            proc.wait(60)
            publish(mq.port, batch_messages(n, 50, "outage"))
            proc = subprocess.Popen([AQPIPE, "ingest", "--log-level", "WARNING"], env=env)
            spooling = n / wait_for(mport, "aqpipe_spooled_readings_total", n)
            spool_bytes = counter(mport, "aqpipe_spool_bytes")
            print(f"spooling: {spooling:10,.0f} readings/s = {spooling / normal:5.0%} of normal (target >= 80%); "
                  f"spool {spool_bytes / 1e6:.1f} MB", flush=True)

            ix.start()
            draining = n / wait_for(mport, "aqpipe_spool_drained_readings_total", n)
            print(f"draining: {draining:10,.0f} readings/s = {draining / normal:5.0%} of normal (target >= 100%)", flush=True)
            print(f"peak RSS of aqpipe ingest: {peak_rss_mb(proc.pid):.0f} MB (target < 300 MB)", flush=True)
        finally:
            if proc is not None and proc.poll() is None:
                proc.send_signal(15)
                proc.wait(60)
            mq.stop()
            ix.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
