"""HJ 212 throughput: frames/s decoded for a typical 10-pollutant minute frame, vs the
target, and frames/s through the TCP gateway into MQTT.

Run: .venv/bin/python bench/hj212.py              (about 40 s)
     .venv/bin/python bench/hj212.py --decode-only  (about 15 s)

Measures `decode` (UTF-8 check, split, length, CRC, parse, map to readings) on
  - typical: coal-boiler minute frame (CN 2051), 10 codes, Avg + Flag, ZsAvg for
    the 4 pollutants (~500 bytes, 24 values) - what loggers usually send;
  - full: the same 10 codes with every suffix (Min/Avg/Max, Zs*, Cou; ~1 KB, 64 values),
  - 2025 encrypted: the typical frame as an HJ 212-2025 logger sends it, CP SM4-encrypted
    ({0xNN,...} form, ~2.3 KB on the wire), decrypted with the logger's key from the
    registry's secrets, target ENCRYPTED_TARGET; printed with its ratio to the plain
    2017 typical frame measured in the same run;
and, as a baseline in the same run, the bit-by-bit CRC loop of the standard alone
on the typical frame's data segment. Each figure is the best of 30 short samples
(1,000 calls each, CPU time), the cases interleaved: the machine is shared and noisy.

Gateway (best of GATEWAY_REPEATS): a fresh Mosquitto (scripts/servers.py, free port,
temp dir), `aqpipe hj212-gateway` as its own process, CLIENTS TCP clients each
sending FRAMES_PER_CLIENT typical frames with Flag=5 (reply wanted) as fast as the
gateway takes them, and a bare paho subscriber on aq/v1/hj212/# (QoS 0 there; the
gateway's own publishes are QoS 1). Rate = frames arrived at the subscriber / time
from the first byte sent to the last frame arrived; the 9014 replies (each sent
only after its PUBACK) are counted too. Everything runs on this machine, load
generator included: on a small or busy box the figure is a floor and varies.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import servers  # noqa: E402  (scripts/servers.py)

from aqpipe.decoders.hj212 import build_encrypted_frame, build_frame, crc16_hj212, crc16_hj212_bitwise, decode  # noqa: E402
from aqpipe.hj212_secrets import Hj212Secrets  # noqa: E402
from aqpipe.registry import Outlet, Registry  # noqa: E402

TARGET = 20_000  # frames per second
ENCRYPTED_TARGET = 15_000  # HJ 212-2025 frames per second, decoded and decrypted
MN = "91320500MA1X2Y3Z4W000001"
MN_2025 = "91320500MA1X2Y3Z4W002025"
KEY = bytes(range(16))
PW = "123456"
REGISTRY = Registry([], [Outlet(id="320500-0001-DA001", mn=MN),
                         Outlet(id="320500-0002-DA001", mn=MN_2025, hj212_version="2025", hj212_encrypt=True)],
                    Hj212Secrets({MN_2025: KEY}, {MN: PW}))
POLLUTANTS = [("a21026", 28.4, 41.2), ("a21002", 36.1, 52.7), ("a34013", 3.2, 4.7), ("a21005", 12.0, 17.5)]
OTHERS = [("a19001", 12.3), ("a01012", 128.5), ("a01013", -0.35), ("a01011", 11.2), ("a01014", 8.6), ("a00000", 65432.1)]
HEAD = f"QN=20261124140500123;ST=31;CN=2051;PW=123456;MN={MN};Flag=5;CP=&&DataTime=20261124140500;"


def typical() -> bytes:
    groups = [f"{c}-Avg={a},{c}-ZsAvg={z},{c}-Flag=N" for c, a, z in POLLUTANTS]
    groups += [f"{c}-Avg={a},{c}-Flag=N" for c, a in OTHERS]
    return build_frame(HEAD + ";".join(groups) + "&&").encode()


def full() -> bytes:
    groups = [
        f"{c}-Min={a - 3},{c}-Avg={a},{c}-Max={a + 4},{c}-ZsMin={z - 4},{c}-ZsAvg={z},{c}-ZsMax={z + 6},{c}-Cou=1.85,{c}-Flag=N"
        for c, a, z in POLLUTANTS
    ]
    groups += [f"{c}-Min={a},{c}-Avg={a},{c}-Max={a},{c}-Flag=N" for c, a in OTHERS]
    return build_frame(HEAD + ";".join(groups) + "&&").encode()


def encrypted_2025() -> bytes:
    """The typical frame from a 2025 logger: Flag=9, CP SM4-encrypted, CRC over the plain segment."""
    seg = typical().decode()[6:-6].replace(f"MN={MN};Flag=5", f"MN={MN_2025};Flag=9")
    return build_encrypted_frame(seg, KEY).encode()


def rate(fn, number: int, repeat: int = 5) -> float:
    """Calls per second of this process's CPU time, best of `repeat`: on a shared machine
    wall time would also count the time other jobs held the cores."""
    return number / min(timeit.repeat(fn, number=number, repeat=repeat, timer=time.process_time))


CLIENTS = 8
FRAMES_PER_CLIENT = 2_500
GATEWAY_REPEATS = 3  # fresh broker and gateway each time; the best run is reported


def gateway_rate(clients: int = CLIENTS, per_client: int = FRAMES_PER_CLIENT) -> tuple[float, int, int, float]:
    """(frames/s into MQTT, frames arrived, replies received, seconds)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    total = clients * per_client
    with tempfile.TemporaryDirectory() as tmp:
        broker = servers.Server("mosquitto", servers.free_port(), Path(tmp) / "mosquitto").start()
        gw_port = servers.free_port()
        registry = Path(tmp) / "registry"  # the gateway lets through registered MNs with their PW only
        registry.mkdir()
        (registry / "outlets.toml").write_text(f'hj212_secrets_file = "secrets.toml"\n'
                                               f'[[outlet]]\nid = "320500-0001-DA001"\nmn = "{MN}"\n')
        (registry / "secrets.toml").write_text(f'[mn."{MN}"]\npw = "{PW}"\n')
        (registry / "secrets.toml").chmod(0o600)
        env = {**os.environ, "AQPIPE_MQTT__PORT": str(broker.port), "AQPIPE_HJ212_GATEWAY__METRICS_PORT": "0",
               "AQPIPE_HJ212_GATEWAY__CLIENT_ID": "bench-gateway", "AQPIPE_CONFIG": os.devnull,
               "AQPIPE_REGISTRY_DIR": str(registry)}
        gateway = subprocess.Popen([sys.executable, "-m", "aqpipe.cli", "hj212-gateway", "--log-level", os.environ.get("BENCH_LOG", "WARNING"),
                                    "--listen", f"127.0.0.1:{gw_port}"], cwd=ROOT, env=env)
        arrived = 0
        done = threading.Event()
        last = [0.0]

        def on_message(client, userdata, msg):
            nonlocal arrived
            arrived += 1
            if arrived == total:
                last[0] = time.perf_counter()
                done.set()

        sub = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        sub.on_message = on_message
        subscribed = threading.Event()
        sub.on_subscribe = lambda *a: subscribed.set()
        sub.connect("127.0.0.1", broker.port)
        sub.subscribe("aq/v1/hj212/#", qos=0)  # QoS 0: the bench measures the gateway, not its own acks
        sub.loop_start()
        try:
            subscribed.wait(10)
            socks = []
            deadline = time.monotonic() + 15
            while len(socks) < clients:
                try:
                    socks.append(socket.create_connection(("127.0.0.1", gw_port), timeout=60))
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            replies = [0] * clients
            frames = [[] for _ in range(clients)]
            body = typical().decode()[6:-6].split(";", 1)[1]  # the data segment after QN
            for i in range(clients):  # distinct QN per frame, as loggers send them
                for k in range(per_client):
                    seg = f"QN=2026112414{i:02d}{k:05d};" + body
                    frames[i].append(build_frame(seg).encode())

            def send(i: int) -> None:
                s = socks[i]
                data = b"".join(frames[i])
                reader = threading.Thread(target=read_replies, args=(i,))
                reader.start()
                s.sendall(data)
                reader.join()

            def read_replies(i: int) -> None:
                s, n = socks[i], 0
                while n < per_client:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    n += chunk.count(b"\r\n")
                replies[i] = n

            threads = [threading.Thread(target=send, args=(i,)) for i in range(clients)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            if not done.wait(300):
                raise RuntimeError(f"only {arrived} of {total} frames arrived")
            for t in threads:
                t.join(60)
            seconds = last[0] - start
            for s in socks:
                s.close()
            return total / seconds, arrived, sum(replies), seconds
        finally:
            sub.loop_stop()
            sub.disconnect()
            gateway.terminate()
            gateway.wait(30)
            broker.stop()


def main() -> None:
    results = {}
    cases = (("typical", typical(), MN), ("full", full(), MN), ("2025 enc", encrypted_2025(), MN_2025))
    best: dict[str, float] = {}
    # Interleaved rounds, so that a burst of load hits every case alike; many short
    # samples rather than a few long ones: this VM's speed swings by 1.5-2x from one
    # minute (even one second) to the next, and the best short sample is the figure
    # that does not depend on what the neighbours do.
    for _ in range(10):
        for name, payload, mn in cases:
            assert len(decode(payload, mn, REGISTRY)) == 1
            per_s = rate(lambda: decode(payload, mn, REGISTRY), 1_000, repeat=3)
            best[name] = max(best.get(name, 0.0), per_s)
            results[name] = (len(payload), best[name])
    segment = typical()[6:-6]
    fast_crc = rate(lambda: crc16_hj212(segment), 50_000)
    slow_crc = rate(lambda: crc16_hj212_bitwise(segment), 300, repeat=3)

    for name, (size, per_s) in results.items():
        target = ENCRYPTED_TARGET if name == "2025 enc" else TARGET
        print(f"decode {name:8s} {size:5d} B  {per_s:10,.0f} frames/s  {per_s / target:5.2f}x target ({target:,}/s)")
    print(f"2025 encrypted / 2017 plain typical: {results['2025 enc'][1] / results['typical'][1]:.2f} "
          "(same content; SM4 decryption and the 5x longer cipher-text form)")
    print(f"CRC only, folded table   {len(segment):5d} B  {fast_crc:10,.0f} /s")
    print(f"CRC only, bit by bit     {len(segment):5d} B  {slow_crc:10,.0f} /s  (folded is {fast_crc / slow_crc:,.0f}x faster;"
          f" bit-by-bit alone allows {slow_crc / TARGET:.2f}x target)")
    if "--decode-only" in sys.argv:
        return
    per_s, arrived, replies, seconds = max(gateway_rate() for _ in range(GATEWAY_REPEATS))
    print(f"gateway  typical  {len(typical()):5d} B  {per_s:10,.0f} frames/s  TCP -> gateway -> Mosquitto -> subscriber "
          f"({CLIENTS} clients, {arrived:,} frames in {seconds:.1f} s, {replies:,} replies 9014 after PUBACK)")


if __name__ == "__main__":
    main()
