"""HJ 212 end to end: frames over MQTT and through the TCP gateway, real Mosquitto in,
real InfluxDB 1.x out (the registry is deploy/config: 4 outlets, one an SM4-encrypting
HJ 212-2025 logger, and 1 station with an MN; the gateway's PWs are a test secrets file)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ingest import hj212_gateway as gw
from aqpipe.config import Hj212GatewayConfig, MqttConfig
from aqpipe.hj212_secrets import load_secrets
from aqpipe.registry import Registry
from ingest.deadletter import DeadLetterStore
from aqpipe.decoders.hj212 import build_encrypted_frame, build_frame, parse_frame
from tests.conftest import ROOT, servers
from tests.helpers import self_signed, wait_until

pytestmark = pytest.mark.integration

CST = timezone(timedelta(hours=8))  # HJ 212 times are Beijing time
# deploy/config/outlets.toml and stations.toml
OUTLETS = {
    "91620503MA00100000000001": "91620503MA001-DA001",
    "91620503MA00200000000001": "91620503MA002-DA001",
    "91620503MA00300000000001": "91620503MA003-DA001",
}
MN1, MN2, MN3 = OUTLETS
MN4, OUTLET4 = "91620503MA00400000000001", "91620503MA004-DA001"  # HJ 212-2025, hj212_encrypt = true
STATION_MN, STATION = "620503000000000000000020", "620503-020"
PW = "Pw-n0t-in-logs"
DEPLOY = ROOT / "deploy" / "config"
KEY4 = load_secrets([DEPLOY / "hj212-secrets.toml"]).keys[MN4]  # the example's dummy key (ingest reads it there)


@pytest.fixture
def registry_dir(tmp_path):
    """deploy/config's registry with a test secrets file: PW for every logger, MN4's SM4 key."""
    d = tmp_path / "registry"
    d.mkdir()
    for name in ("outlets.toml", "stations.toml"):
        shutil.copy(DEPLOY / name, d / name)
    body = "".join(f'[mn."{mn}"]\npw = "{PW}"\n' + (f'key = "{KEY4.hex()}"\n' if mn == MN4 else "")
                   for mn in [*OUTLETS, MN4, STATION_MN])
    (d / "hj212-secrets.toml").write_text(body)
    (d / "hj212-secrets.toml").chmod(0o600)
    return d


def _minute(minutes_ago: int) -> datetime:
    return datetime.now(CST).replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000


def stack_minute(mn: str, t: datetime, so2: float = 28.4, flag: int = 5, qn: str | None = None,
                 pw: str = PW) -> bytes:
    """A coal-boiler minute frame (CN 2051) as CEMS loggers send it: Min/Avg/Max, Zs values, Cou, flags."""
    qn = qn or t.strftime("%Y%m%d%H%M%S") + "123"
    cp = ";".join([
        f"a21026-Min={so2 - 3:.1f},a21026-Avg={so2},a21026-Max={so2 + 4:.1f},a21026-ZsMin=36.7,a21026-ZsAvg=41.2,"
        f"a21026-ZsMax=47.3,a21026-Cou=1.85,a21026-Flag=N",
        "a21002-Min=33.0,a21002-Avg=36.1,a21002-Max=40.3,a21002-ZsAvg=52.7,a21002-Cou=2.36,a21002-Flag=N",
        "a34013-Avg=3.2,a34013-ZsAvg=4.7,a34013-Flag=N",
        "a21005-Avg=12.0,a21005-ZsAvg=17.5,a21005-Flag=M",
        "a19001-Avg=12.3,a19001-Flag=N",
        "a01012-Avg=128.5,a01012-Flag=N",
        "a00000-Avg=65432.1,a00000-Cou=3925926,a00000-Flag=N",
    ])
    seg = (f"QN={qn};ST=31;CN=2051;PW={pw};MN={mn};Flag={flag};"
           f"CP=&&DataTime={t.strftime('%Y%m%d%H%M%S')};{cp}&&")
    return build_frame(seg).encode()


def ambient_realtime(mn: str, t: datetime) -> bytes:
    seg = (f"QN={t.strftime('%Y%m%d%H%M%S')}001;ST=22;CN=2011;PW={PW};MN={mn};Flag=4;"
           f"CP=&&DataTime={t.strftime('%Y%m%d%H%M%S')};a34004-Rtd=35.2,a34004-Flag=N;a34002-Rtd=61,a34002-Flag=N;"
           f"a21026-Rtd=8,a21026-Flag=N;a21004-Rtd=31,a21004-Flag=N;a21005-Rtd=0.6,a21005-Flag=N;"
           f"a05024-Rtd=80,a05024-Flag=C;a01001-Rtd=12.3,a01001-Flag=N;a01002-Rtd=45,a01002-Flag=N&&")
    return build_frame(seg).encode()


def with_bad_crc(frame: bytes) -> bytes:
    crc = frame[-6:-2]
    return frame[:-6] + (b"0000" if crc != b"0000" else b"FFFF") + b"\r\n"


# --------------------------------------------------------------------------- over MQTT

def test_stack_minute_frame_over_mqtt_lands_as_a_stack_reading_with_flags_and_converted_values(ingest, publisher, influx):
    ingest()
    t = _minute(7)
    publisher(f"aq/v1/hj212/{MN1}", stack_minute(MN1, t))
    # Wait for the whole field set: a query racing the first write of a new measurement
    # may see the point before all of its fields are indexed (InfluxDB 1.x).
    rows = wait_until(lambda: (r := influx.rows(f"SELECT * FROM stack WHERE outlet = '{OUTLETS[MN1]}'"))
                      and all(v is not None for v in r[0].values()) and r)
    assert len(rows) == 1
    row = rows[0]
    assert row["time"] == _ns(t + timedelta(minutes=1))  # DataTime (Beijing time) + the minute it covers
    assert (row["so2"], row["so2_min"], row["so2_max"], row["so2_zs"], row["so2_zs_min"], row["so2_zs_max"]) == (
        28.4, 25.4, 32.4, 41.2, 36.7, 47.3)
    assert (row["nox"], row["nox_zs"], row["pm"], row["pm_zs"], row["co"], row["co_zs"]) == (36.1, 52.7, 3.2, 4.7, 12.0, 17.5)
    assert (row["so2_cou"], row["o2"], row["temp"], row["flow"], row["flow_cou"]) == (1.85, 12.3, 128.5, 65432.1, 3925926.0)
    assert row["co_flag"] == "M"  # maintenance: stored with its flag
    assert row.get("so2_flag") is None  # N is not stored


def test_ambient_realtime_frame_over_mqtt_lands_as_an_ambient_reading_of_its_station(ingest, publisher, influx):
    ingest()
    t = _minute(3)
    publisher(f"aq/v1/hj212/{STATION_MN}", ambient_realtime(STATION_MN, t))
    row = wait_until(lambda: (r := influx.rows(f"SELECT * FROM ambient WHERE station = '{STATION}'"))
                     and all(v is not None for v in r[0].values()) and r)[0]
    assert row["time"] == _ns(t)
    assert (row["pm25"], row["pm10"], row["so2"], row["no2"], row["co"], row["o3"], row["temp"], row["rh"]) == (
        35.2, 61.0, 8.0, 31.0, 0.6, 80.0, 12.3, 45.0)
    assert row["o3_flag"] == "C"


def _frame_with(mn: str, t: datetime, **change) -> bytes:
    f = stack_minute(mn, t)
    if "length" in change:
        return f[:2] + b"%04d" % (int(f[2:6]) + change["length"]) + f[6:]
    return f


REJECTIONS = {
    "hj212_framing": lambda mn, t: b"AT+CIPSEND=420\r\n",
    "hj212_length": lambda mn, t: _frame_with(mn, t, length=+2),
    "hj212_crc": lambda mn, t: with_bad_crc(stack_minute(mn, t)),
    "hj212_syntax": lambda mn, t: build_frame(f"QN=1;ST=31;CN=2051;PW={PW};MN={mn};Flag=4;CP=&&DataTime=2026&&").encode(),
    "unknown_mn": lambda mn, t: stack_minute(mn, t),
    "identity_mismatch": lambda mn, t: stack_minute(MN2, t),
    # MN4 is an HJ 212-2025 logger registered to encrypt: plain text, or a key it does not have
    "hj212_plaintext": lambda mn, t: build_frame(minute_2025(mn, t, 25.0, "20261125170000001")).encode(),
    "hj212_decrypt": lambda mn, t: build_encrypted_frame(minute_2025(mn, t, 25.0, "20261125170000002"),
                                                         bytes(16)).encode(),
}


@pytest.mark.parametrize("reason", sorted(REJECTIONS))
def test_each_hj212_rejection_reason_is_dead_lettered_with_its_reason(reason, ingest, publisher, config, unique):
    service = ingest()
    mn = f"X{unique}" if reason == "unknown_mn" else MN4 if reason in ("hj212_plaintext", "hj212_decrypt") else MN1
    payload = REJECTIONS[reason](mn, _minute(4))
    topic = f"aq/v1/hj212/{mn}"
    publisher(topic, payload)
    letters = wait_until(lambda: DeadLetterStore(config.deadletter_dir).pending())
    assert [(d.reason, d.topic, d.payload) for d in letters] == [(reason, topic, payload)]
    assert letters[0].detail and PW not in letters[0].detail
    wait_until(lambda: service.inflight == 0)  # and the message was acknowledged


# --------------------------------------------------------------------------- the gateway

@pytest.fixture
def gateway(mosquitto, unique, registry_dir) -> Iterator:
    """start(**settings) -> a Hj212Gateway on a free port, in a thread, against the test Mosquitto."""
    running = []
    registry = Registry.load(registry_dir)

    def start(mqtt_port: int | None = None, **settings) -> gw.Hj212Gateway:
        cfg = Hj212GatewayConfig(listen="127.0.0.1:0", client_id=f"gw-{unique}-{len(running)}",
                                 drain_timeout_s=3, **settings)
        g = gw.Hj212Gateway(cfg, MqttConfig(port=mqtt_port or mosquitto.port), registry=registry)
        loop, thread = gw.run_in_thread(g)
        running.append((g, loop, thread))
        return g

    yield start
    for g, loop, thread in running:
        if not g.stopping:
            gw.stop_in_thread(g, loop, thread)


def connect(g: gw.Hj212Gateway) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_frame(s: socket.socket, timeout: float = 10) -> bytes:
    """One CRLF-terminated frame from the gateway (b'' if it closed the connection)."""
    s.settimeout(timeout)
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = s.recv(1)
        if not chunk:
            return data
        data += chunk
    return data


def invalid(reason: str) -> float:
    return gw.INVALID.labels(reason)._value.get()


def test_frames_sent_to_the_gateway_by_tcp_clients_end_in_influxdb_and_replies_follow_the_puback(
        ingest, gateway, influx, config):
    ingest()
    g = gateway()
    t1, t2 = _minute(10), _minute(9)
    crc_before = invalid("hj212_crc")

    # One logger sends its frame byte by byte (a slow GPRS link), without asking for a reply.
    slow = connect(g)
    for b in stack_minute(MN1, t1, so2=11.0, flag=4):
        slow.send(bytes([b]))

    # Another sends three frames in one write, with modem noise between them.
    burst = connect(g)
    burst.sendall(b"+++\r\nAT\r\n" + stack_minute(MN2, t1, so2=22.0, flag=4) + b"\x00\xff garbage #"
                  + stack_minute(MN3, t1, so2=33.0, flag=4) + stack_minute(MN1, t2, so2=12.0, flag=4))

    # A third asks for a reply (Flag=5), after a frame with a bad CRC, split across two writes.
    asking = connect(g)
    bad = with_bad_crc(stack_minute(MN2, t2, so2=99.0))
    good = stack_minute(MN2, t2, so2=23.0, qn="20261125120000777")
    asking.sendall(bad + good[:100])
    time.sleep(0.05)
    asking.sendall(good[100:])
    reply = parse_frame(read_frame(asking))
    assert (reply.cn, reply.st, reply.qn, reply.mn, reply.flag) == ("9014", "91", "20261125120000777", MN2, 4)
    assert invalid("hj212_crc") == crc_before + 1  # the bad frame was counted (and dead-lettered, not stored)

    # The connection survived the bad frame and still answers.
    asking.sendall(stack_minute(MN3, t2, so2=34.0, qn="20261125120000888"))
    assert parse_frame(read_frame(asking)).qn == "20261125120000888"

    e1, e2 = _ns(t1 + timedelta(minutes=1)), _ns(t2 + timedelta(minutes=1))  # minute data stored at its end
    expected = {(OUTLETS[MN1], e1): 11.0, (OUTLETS[MN2], e1): 22.0, (OUTLETS[MN3], e1): 33.0,
                (OUTLETS[MN1], e2): 12.0, (OUTLETS[MN2], e2): 23.0, (OUTLETS[MN3], e2): 34.0}
    got = wait_until(lambda: (r := {(row["outlet"], row["time"]): row["so2"]
                                    for row in influx.rows("SELECT so2, co_flag, so2_zs FROM stack GROUP BY outlet")})
                     and len(r) >= len(expected) and r)
    assert got == expected  # 99.0 (bad CRC) never became a reading...
    # ...but is kept as a dead letter (written by ingest's batcher, not before the readings: wait for it)
    letters = wait_until(lambda: DeadLetterStore(config.deadletter_dir).pending())
    assert [(d.reason, d.payload) for d in letters] == [("hj212_crc", bad)]
    row = influx.rows(f"SELECT * FROM stack WHERE outlet = '{OUTLETS[MN2]}' AND time = {e2}")[0]
    assert (row["so2_zs"], row["nox_zs"], row["co_flag"]) == (41.2, 52.7, "M")
    for s in (slow, burst, asking):
        s.close()


def test_an_intact_but_malformed_frame_reaches_the_dead_letters_and_gets_no_reply(ingest, gateway, config):
    """Length and CRC check, the content does not parse: the frame is not data, but it is
    what the logger sent, so it is kept (dead-lettered by ingest) rather than dropped."""
    ingest()
    g = gateway()
    malformed = build_frame(f"QN=20261125120000555;ST=31;CN=2051;PW={PW};MN={MN1};Flag=5;CP=&&DataTime=2026&&").encode()
    s = connect(g)
    s.sendall(malformed)
    letters = wait_until(lambda: DeadLetterStore(config.deadletter_dir).pending())
    assert [(d.reason, d.topic, d.payload) for d in letters] == [("hj212_syntax", f"aq/v1/hj212/{MN1}", malformed)]
    s.settimeout(0.5)
    with pytest.raises(socket.timeout):
        s.recv(100)  # no 9014 for a frame that is not accepted data
    s.close()


def test_no_reply_goes_out_before_the_broker_has_acknowledged_the_frame(gateway, tmp_path):
    port = servers.free_port()
    g = gateway(mqtt_port=port)  # no broker there yet
    s = connect(g)
    s.sendall(stack_minute(MN1, _minute(2), qn="20261125120000999"))
    s.settimeout(1.5)
    with pytest.raises(TimeoutError):
        s.recv(1)  # published, but not acknowledged: no 9014 (the logger keeps its data)
    broker = servers.Server("mosquitto", port, tmp_path / "late-broker")
    broker.start()
    try:
        reply = parse_frame(read_frame(s, timeout=15))  # paho reconnects and resends; PUBACK; then the reply
        assert (reply.cn, reply.qn) == ("9014", "20261125120000999")
    finally:
        s.close()
        broker.stop()


def test_an_idle_client_is_disconnected_after_the_idle_timeout(gateway):
    g = gateway(idle_timeout_s=0.5)
    silent, partial = connect(g), connect(g)
    partial.sendall(stack_minute(MN1, _minute(2))[:30])  # half a frame, then nothing (half-open link)
    started = time.monotonic()
    assert silent.recv(1) == b"" and partial.recv(1) == b""  # closed by the gateway
    assert time.monotonic() - started < 5
    wait_until(lambda: not g.connections)


def test_an_oversize_length_or_endless_bytes_are_refused_without_memory_growth(gateway):
    g = gateway(max_frame_bytes=2048)
    oversize_before, framing_before = invalid("oversize"), invalid("hj212_framing")
    s = connect(g)
    s.sendall(b"##9999")  # claims 9999 bytes, more than max_frame_bytes: refused at once
    s.sendall(b"A" * 2_000_000)
    s.sendall(b"##2000QN=1;")  # within the limit, but never ends
    s.sendall(b"B" * 2_000_000)
    s.sendall(stack_minute(MN1, _minute(2), qn="20261125120000555"))
    assert parse_frame(read_frame(s)).qn == "20261125120000555"  # still served
    [conn] = g.connections
    assert conn.splitter.high_water <= 2048 + 64 * 1024  # one frame plus one read, never the 4 MB
    assert invalid("oversize") == oversize_before + 1
    assert invalid("hj212_framing") == framing_before + 1
    s.close()


def test_a_client_that_never_reads_its_replies_is_dropped_and_frees_its_slot(gateway):
    g = gateway(idle_timeout_s=0.5, window=2)
    s = connect(g)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    before = gw.DISCONNECTS.labels("reply_stalled")._value.get()
    frames = b"".join(stack_minute(MN1, _minute(2), qn=f"2026112512{k:07d}") for k in range(3000))
    try:
        s.settimeout(10)
        s.sendall(frames)  # ~1.5 MB asking for 3000 replies, none of which it reads
    except OSError:
        pass  # the gateway may already have dropped it
    wait_until(lambda: gw.DISCONNECTS.labels("reply_stalled")._value.get() == before + 1, timeout=15)
    wait_until(lambda: not g.connections)
    s.close()


def test_connections_beyond_max_connections_are_refused_and_the_others_are_served(gateway):
    g = gateway(max_connections=2)
    a, b = connect(g), connect(g)
    wait_until(lambda: len(g.connections) == 2)
    c = connect(g)
    c.settimeout(5)
    try:
        assert c.recv(1) == b""
    except ConnectionResetError:
        pass  # refused with a reset: also fine
    a.sendall(stack_minute(MN1, _minute(2), qn="20261125120000111"))
    assert parse_frame(read_frame(a)).qn == "20261125120000111"
    for s in (a, b, c):
        s.close()


def test_sigterm_stops_the_gateway_process_cleanly_after_replying(mosquitto, env, registry_dir):
    port = servers.free_port()
    environ = {**os.environ, **env, "AQPIPE_HJ212_GATEWAY__METRICS_PORT": "0", "AQPIPE_REGISTRY_DIR": str(registry_dir),
               "AQPIPE_HJ212_GATEWAY__CLIENT_ID": f"gw-sigterm-{port}"}
    received = []
    sub = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    sub.on_message = lambda c, u, m: received.append(m.payload)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe(f"aq/v1/hj212/{MN3}", qos=1)
    sub.loop_start()
    proc = subprocess.Popen([sys.executable, "-m", "aqpipe.cli", "hj212-gateway", "--listen", f"127.0.0.1:{port}"],
                            cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        s = wait_until(lambda: _try_connect(port), timeout=15)
        frame = stack_minute(MN3, _minute(2), qn="20261125120000222")
        s.sendall(frame)
        assert parse_frame(read_frame(s)).qn == "20261125120000222"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert s.recv(1) == b""  # the gateway closed the connection on its way out
        stderr = proc.stderr.read().decode()
        assert "event=stopped drained=True" in stderr and PW not in stderr
        wait_until(lambda: received)
        assert received == [frame]  # published as received, CRLF-terminated, exactly once
        s.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.loop_stop()
        sub.disconnect()


def _try_connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return None


# --------------------------------------------------------------------------- HJ 212-2025 and access control

def minute_2025(mn: str, t: datetime, so2: float, qn: str, rf: bool = False, flag: int = 9) -> str:
    return (f"QN={qn};ST=31;CN=2051;PW={PW};MN={mn};Flag={flag};{'RF=1;' if rf else ''}"
            f"CP=&&DataTime={t.strftime('%Y%m%d%H%M%S')};a21026-Avg={so2},a21026-ZsAvg={so2 * 1.5:.1f},"
            f"a21026-Flag=N;a19001-Avg=12.0,a19001-Flag=K&&")


def subscriber(port: int, topic: str = "aq/v1/hj212/#") -> tuple[paho.Client, list[bytes]]:
    got: list[bytes] = []
    subscribed = []
    c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.on_message = lambda cl, u, m: got.append(m.payload)
    c.on_subscribe = lambda *a: subscribed.append(True)
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.subscribe(topic, qos=1)
    wait_until(lambda: subscribed)  # SUBACK: what is published from now on reaches us
    return c, got


def test_2017_and_2025_loggers_side_by_side_through_the_gateway_into_influxdb(ingest, gateway, influx, mosquitto):
    """A 2017 logger and a 2025 logger that encrypts (SM4) and back-fills (RF=1), on real
    TCP clients, through the gateway and Mosquitto into InfluxDB; the 2025 heartbeat is
    answered by the gateway and not published."""
    ingest()
    g = gateway()
    sub, published = subscriber(mosquitto.port)
    t_now, t_old = _minute(3), _minute(60 * 30)  # the back-filled minute is 30 hours old

    old = connect(g)  # HJ 212-2017, plain
    old.sendall(stack_minute(MN1, t_now, so2=17.0, qn="20261125130000001"))
    r = parse_frame(read_frame(old))
    assert (r.cn, r.qn, r.flag) == ("9014", "20261125130000001", 4)

    new = connect(g)  # HJ 212-2025: heartbeat, then encrypted live and back-filled data
    new.sendall(build_frame(f"QN=20261125130000002;ST=91;CN=9015;PW={PW};MN={MN4};Flag=9;CP=&&&&").encode())
    r = parse_frame(read_frame(new))
    assert (r.cn, r.qn, r.flag, r.version) == ("9013", "20261125130000002", 8, "2025")
    live = build_encrypted_frame(minute_2025(MN4, t_now, 25.0, "20261125130000003"), KEY4)
    back = build_encrypted_frame(minute_2025(MN4, t_old, 26.0, "20261125130000004", rf=True), KEY4, length="plain")
    assert "{0x" in live and "a21026" not in live  # really encrypted on the wire
    new.sendall(live.encode() + back.encode())
    assert [parse_frame(read_frame(new)).qn for _ in range(2)] == ["20261125130000003", "20261125130000004"]

    e_now, e_old = _ns(t_now + timedelta(minutes=1)), _ns(t_old + timedelta(minutes=1))
    rows = wait_until(lambda: (r := influx.rows("SELECT so2, so2_zs, o2_flag FROM stack GROUP BY outlet"))
                      and len(r) >= 3 and r)
    got = {(row["outlet"], row["time"]): (row["so2"], row["so2_zs"], row["o2_flag"]) for row in rows}
    assert got == {(OUTLETS[MN1], e_now): (17.0, 41.2, None),
                   (OUTLET4, e_now): (25.0, 37.5, "K"),  # an unknown flag letter is kept
                   (OUTLET4, e_old): (26.0, 39.0, "K")}  # back-filled: stored like any reading
    wait_until(lambda: len(published) >= 3)
    assert sorted(published) == sorted([stack_minute(MN1, t_now, so2=17.0, qn="20261125130000001"),
                                        live.encode(), back.encode()])  # no heartbeat published
    sub.loop_stop()
    sub.disconnect()
    for s in (old, new):
        s.close()


def rejected(reason: str) -> float:
    return gw.REJECTED.labels(reason)._value.get()


def test_a_wrong_pw_or_an_unknown_mn_is_refused_unpublished_and_the_connection_closed_after_n(
        gateway, mosquitto, caplog):
    g = gateway(max_auth_failures=2, auth_reply="9011")
    sub, published = subscriber(mosquitto.port)
    auth0, unknown0 = rejected("auth"), rejected("unknown_mn")
    t = _minute(2)
    wrong_pw = stack_minute(MN2, t, so2=66.0, qn="20261125140000001", pw="Guessed-pw-123")
    unknown = stack_minute("91620503MA00900000000001", t, qn="20261125140000003")
    good = stack_minute(MN2, t, so2=23.0, qn="20261125140000002")
    s = connect(g)
    s.sendall(wrong_pw + good)
    refusal = parse_frame(read_frame(s))  # 9011 QnRtn=3 (PW error), in frame order, then the 9014
    assert (refusal.cn, refusal.qn, refusal.extra) == ("9011", "20261125140000001", {"QnRtn": "3"})
    assert parse_frame(read_frame(s)).qn == "20261125140000002"
    s.sendall(unknown)  # the second refusal: QnRtn=4 (MN error), then the gateway hangs up
    assert parse_frame(read_frame(s)).extra == {"QnRtn": "4"}
    assert read_frame(s) == b""
    assert (rejected("auth"), rejected("unknown_mn")) == (auth0 + 1, unknown0 + 1)
    wait_until(lambda: published)
    assert published == [good]  # the refused frames were never published
    assert "Guessed-pw-123" not in caplog.text and PW not in caplog.text
    sub.loop_stop()
    sub.disconnect()
    s.close()


def test_an_encrypted_2025_frame_from_a_logger_without_its_key_is_dead_lettered_as_hj212_decrypt(
        ingest, gateway, config):
    ingest()
    g = gateway()
    wrong_key = build_encrypted_frame(minute_2025(MN4, _minute(2), 25.0, "20261125150000001"), bytes(16))
    s = connect(g)
    s.sendall(wrong_key.encode())
    letters = wait_until(lambda: DeadLetterStore(config.deadletter_dir).pending())
    assert [(d.reason, d.payload) for d in letters] == [("hj212_decrypt", wrong_key.encode())]
    s.settimeout(0.5)
    with pytest.raises(socket.timeout):
        s.recv(100)  # not data: no 9014, the logger keeps it
    s.close()


def test_the_gateway_speaks_tls_to_loggers_that_support_it(gateway, tmp_path, ingest, influx):
    ingest()
    cert, key = self_signed(tmp_path, "aqpipe-hj212-gateway-test")
    g = gateway(tls_cert=cert, tls_key=key)
    ctx = ssl.create_default_context(cafile=str(cert))  # the client verifies the gateway's certificate
    t = _minute(4)
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            s.sendall(build_encrypted_frame(minute_2025(MN4, t, 31.0, "20261125160000001"), KEY4).encode())
            reply = parse_frame(read_frame(s))
            assert (reply.cn, reply.qn, reply.flag) == ("9014", "20261125160000001", 8)
    rows = wait_until(lambda: influx.rows(f"SELECT so2 FROM stack WHERE outlet = '{OUTLET4}'"))
    assert [(r["time"], r["so2"]) for r in rows] == [(_ns(t + timedelta(minutes=1)), 31.0)]
    # A plain-TCP client gets no service on the TLS port (the handshake fails, nothing is published).
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as plain:
        plain.sendall(stack_minute(MN1, t, qn="20261125160000002"))
        plain.settimeout(10)
        try:
            answer = plain.recv(100)
        except ConnectionResetError:
            answer = b""
        assert b"9014" not in answer  # whatever the TLS layer says (an alert, a close), never a data reply


def test_an_error_in_a_connection_handler_is_logged_counted_and_the_next_logger_is_served(
        gateway, monkeypatch, caplog):
    from aqpipe.supervision import THREAD_ERRORS
    from ingest.hj212_gateway.connection import Connection

    errors = THREAD_ERRORS.labels("hj212-gateway")
    before = errors._value.get()
    original = Connection.run
    failed: list[Connection] = []

    async def fails_once(self: Connection) -> None:
        if not failed:
            failed.append(self)
            raise RuntimeError("injected fault in a connection handler")
        await original(self)

    monkeypatch.setattr(Connection, "run", fails_once)
    g = gateway()
    first = connect(g)
    first.sendall(stack_minute(MN1, _minute(2), qn="20261125120000001"))
    try:  # closed by the gateway (a reset: the frame it sent was never read), not left hanging
        assert read_frame(first) == b""
    except ConnectionResetError:
        pass
    wait_until(lambda: errors._value.get() == before + 1)
    assert any("event=thread_error thread=hj212-gateway" in r.getMessage() and "injected fault" in r.getMessage()
               for r in caplog.records)
    second = connect(g)
    second.sendall(stack_minute(MN1, _minute(2), qn="20261125120000002"))
    reply = parse_frame(read_frame(second))
    assert (reply.cn, reply.qn) == ("9014", "20261125120000002")
    first.close()
    second.close()
