"""Small helpers for tests: polling, metrics text, HTTP."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from aqpipe.config import Config


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05):
    """Poll until predicate() is truthy; return its value or fail with the last one."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value: {value!r})")


def metric_value(text: str, name: str, labels: str = "") -> float:
    needle = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(needle + " "):
            return float(line.split()[-1])
    return 0.0


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def stack_minutes(outlet: str, hour_end: int, values: dict[str, float], flag: str | None = None,
                  status: str = "running") -> dict:
    """The 60 minute readings of one hour (hour_end - 1 h, hour_end] of an outlet, as a data
    logger publishes them on aq/v1/stack/{outlet}: the same `values` every minute."""
    readings = []
    for m in range(1, 61):
        r: dict = {"time": hour_end - 3600 + m * 60, "values": dict(values), "status": status}
        if flag:
            r["flags"] = {name: flag for name in values}
        readings.append(r)
    return {"outlet": outlet, "readings": readings}


def service_starter(factory: Callable[[Config], object], default: Config) -> Iterator[Callable[..., object]]:
    """Yield start(cfg=None): starts a service (ingest, aggregator) on the test servers and
    waits until it has subscribed; every service started is stopped at teardown."""
    started: list = []

    def start(cfg: Config | None = None):
        service = factory(cfg or default)
        service.start()
        assert service.connected.wait(10), f"{type(service).__name__} did not subscribe on the test Mosquitto"
        started.append(service)
        return service

    yield start
    for service in started:
        if service._accepting:
            service.stop()


def spooled_while_influxdb_down(config: Config, publish: Callable[[], int]) -> None:
    """Run an ingest whose InfluxDB is down (nothing listens at its URL) while `publish()`
    publishes; it returns how many readings it sent. They end in the spool of
    config.data_dir, acknowledged; the ingest is stopped."""
    import socket

    from ingest.service import IngestService

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = config.model_copy(deep=True)
    down.influx.url = f"http://127.0.0.1:{port}"
    down.influx.create_database = False
    service = IngestService(down)
    service.start()
    try:
        assert service.connected.wait(10), "ingest did not subscribe on the test Mosquitto"
        n = publish()
        wait_until(lambda: service.batcher.spooled == n and service.inflight == 0)
    finally:
        service.stop()


def self_signed(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files in `directory`), made
    with `cryptography`: clients verify it with the certificate itself as the CA."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{common_name}.crt", directory / f"{common_name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path
