"""Fixtures: the real servers (started by scripts/servers.py on free loopback ports)
and helpers to publish and read back. A server that cannot start fails the tests that
need it; nothing is skipped."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, settings
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import servers  # noqa: E402  (scripts/servers.py)

from aqpipe.config import Config, load_config  # noqa: E402
from aqpipe.influx import InfluxQL  # noqa: E402
from tests.helpers import service_starter  # noqa: E402

_counter = itertools.count()

# Property tests check what the code computes, on pure functions: given its example, a
# run cannot differ, except for Hypothesis' wall-clock checks (a 200 ms deadline per
# example, the too_slow health check), which measure how busy the shared 2-core machine
# is (a round trip takes ~0.2 ms; a stalled process fails it under load). Speed is
# measured in bench/. HYPOTHESIS_PROFILE=thorough runs 20 times more examples.
settings.register_profile("aqpipe", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", settings.get_profile("aqpipe"), max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "aqpipe"))


def _start(name: str, tmp_path_factory) -> Iterator[servers.Server]:
    server = servers.Server(name, servers.free_port(), tmp_path_factory.mktemp(name))
    server.start()  # raises ServerError (a test failure) when it cannot start
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory) -> Iterator[servers.Server]:
    yield from _start("mosquitto", tmp_path_factory)


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory) -> Iterator[servers.Server]:
    yield from _start("influxdb", tmp_path_factory)


@pytest.fixture(scope="session")
def victoriametrics(tmp_path_factory) -> Iterator[servers.Server]:
    yield from _start("victoriametrics", tmp_path_factory)


@pytest.fixture(scope="session")
def postgresql(tmp_path_factory) -> Iterator[servers.Server]:
    yield from _start("postgresql", tmp_path_factory)
    # As root the cluster lives outside the test's directory (servers._postgres_datadir):
    # remove it, or every session leaves ~100 MB in /tmp.
    for record in tmp_path_factory.getbasetemp().glob("postgresql*/pgdata.path"):
        shutil.rmtree(record.read_text().strip(), ignore_errors=True)


@pytest.fixture
def postgresql_url(postgresql, unique) -> str:
    """A fresh, empty database on the session's PostgreSQL, as a SQLAlchemy URL."""
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=postgresql.port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{unique}"')
    return postgresql.database_url.rsplit("/", 1)[0] + f"/{unique}"


@pytest.fixture(params=["sqlite", "postgresql"])
def case_engine(request, tmp_path):
    """A migrated case database, once on an SQLite file and once on real PostgreSQL."""
    from alerts.cases.db import engine_for_url, migrate

    url = (f"sqlite:///{tmp_path / 'cases.sqlite'}" if request.param == "sqlite"
           else request.getfixturevalue("postgresql_url"))
    engine = engine_for_url(url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def unique() -> str:
    """A short name no other test uses: databases, client ids, station ids."""
    return f"t{next(_counter)}x{int(time.time() * 1000) % 100000}"


@pytest.fixture
def env(mosquitto, influxdb, tmp_path, unique) -> dict[str, str]:
    """Environment for an aqpipe pointed at the test servers, with its own database."""
    return {
        "AQPIPE_MQTT__PORT": str(mosquitto.port),
        "AQPIPE_MQTT__CLIENT_ID": f"aqpipe-ingest-{unique}",
        "AQPIPE_INFLUX__URL": influxdb.url,
        "AQPIPE_INFLUX__DATABASE": f"db_{unique}",
        "AQPIPE_INFLUX__FLUSH_INTERVAL_S": "0.05",
        "AQPIPE_DATA_DIR": str(tmp_path / "data"),
        "AQPIPE_METRICS__PORT": "0",
        "AQPIPE_REGISTRY_DIR": str(ROOT / "deploy" / "config"),
    }


@pytest.fixture
def config(env) -> Config:
    return load_config(None, env)


@pytest.fixture
def influx(config) -> InfluxQL:
    q = InfluxQL.from_config(config.influx)
    q.execute(f'CREATE DATABASE "{config.influx.database}"')
    return q


@pytest.fixture
def publisher(mosquitto) -> Iterator[Callable[..., None]]:
    """publish(topic, payload, qos=1): returns once the broker has acknowledged it."""
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()

    def publish(topic: str, payload: bytes | str | dict, qos: int = 1) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        client.publish(topic, payload, qos=qos).wait_for_publish(10)

    yield publish
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def ingest(config) -> Iterator[Callable[..., object]]:
    from ingest.service import IngestService

    yield from service_starter(IngestService, config)
