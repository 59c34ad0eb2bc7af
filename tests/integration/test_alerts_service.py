"""The alerts service's delivery guarantee: a derived record is acknowledged only after its
effect is committed to the case database, so one whose commit failed (PostgreSQL down) is
redelivered to the next session and takes effect once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

import servers
from alerts.cases import store
from alerts.engine import load_alerts
from aqpipe.config import Config, load_config
from tests.alerting import alertmanager_to
from tests.helpers import http_get, service_starter, wait_until

pytestmark = pytest.mark.integration
OUTLET = "91620503MA002-DA001"  # deploy/config: gas boiler, permit NOx 50


def record(hour_end: datetime) -> dict:
    return {"outlet": OUTLET, "pollutant": "nox", "time": hour_end.isoformat(), "avg": 60.0, "avg_o2corr": 75.0,
            "limit": 50.0, "limit_source": "permit", "exceeded": True, "valid_minutes": 60, "not_running_minutes": 0}


@pytest.fixture
def own_postgresql(tmp_path) -> Iterator[servers.Server]:
    """A PostgreSQL of this test's own: the test stops and restarts it."""
    server = servers.Server("postgresql", servers.free_port(), tmp_path / "pg").start()
    yield server
    server.stop()



def test_a_record_whose_commit_failed_is_redelivered_and_takes_effect_once(
        env, unique, own_postgresql, publisher, receiver, tmp_path, influx):
    from alerts.service import AlertsService

    am = alertmanager_to(receiver, tmp_path / "am")
    try:
        cfg: Config = load_config(None, {**env, "AQPIPE_ALERTS__CLIENT_ID": f"aqpipe-alerts-{unique}",
                                         "AQPIPE_ALERTS__ALERTMANAGER_URL": am.url,
                                         "AQPIPE_CASES__DATABASE_URL": own_postgresql.database_url.replace(
                                             "postgresql+psycopg://", "postgresql://")})
        gen = service_starter(AlertsService, cfg)
        start = next(gen)
        service = start()
        hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        own_postgresql.stop()
        publisher(f"aq/v1/derived/stack/{OUTLET}", record(hour))
        wait_until(lambda: service.received == 1)
        assert service.processed == 0  # not committed: not acknowledged
        service.stop()  # the worker gives up; the message stays unacknowledged in our session

        own_postgresql.start()
        service = start()  # same client id: the broker redelivers
        wait_until(lambda: service.processed == 1, timeout=30)
        alerts = wait_until(lambda: [a for a in json.loads(http_get(f"{am.url}/api/v2/alerts"))
                                     if a["labels"].get("outlet") == OUTLET])
        with service.db.connect() as conn:
            cases = store.list_cases(conn, cfg.alerts.case_url_template)
            states = [a.state for a in load_alerts(conn)]
        assert len(alerts) == 1 and states == ["firing"] and len(cases) == 1
        assert alerts[0]["annotations"]["case_url"] == cases[0].url
        assert [h["exceeded"] for h in cases[0].to_json()["hours"]] == [True]
        assert service.ready() == (True, "ok")
        line = wait_until(lambda: (ln := service.status_line()) and "outbox=0" in ln and ln)
        assert "processed=1 " in line and "firing=1 " in line and "mqtt=up" in line and "alertmanager=on" in line
        for _ in gen:
            pass
    finally:
        am.stop()


def test_after_the_broker_lost_its_session_the_service_replays_the_stored_rollups(
        env, unique, publisher, influx, config, tmp_path):
    """A record published while the service was down and without a session never reaches it
    over MQTT; the aggregator stored it in InfluxDB, and the service catches up from there."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from alerts.service import AlertsService
    from aqpipe.influx import make_writer

    cfg = load_config(None, {**env, "AQPIPE_ALERTS__CLIENT_ID": f"aqpipe-alerts-{unique}"})
    gen = service_starter(AlertsService, cfg)
    start = next(gen)
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    service = start()
    compliant = {**record(hour), "avg_o2corr": 30.0, "exceeded": False}
    publisher(f"aq/v1/derived/stack/{OUTLET}", compliant)
    wait_until(lambda: service.processed == 1)
    service.stop()
    # the broker forgets the session (as after an expiry): connect once with a clean start
    wipe = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5,
                       client_id=cfg.alerts.client_id)
    wipe.connect("127.0.0.1", cfg.mqtt.port, clean_start=True)
    wipe.disconnect()
    # the aggregator's next hour: stored in InfluxDB and published while nobody listened for us
    later = hour + timedelta(hours=1)
    make_writer(cfg.influx).write([
        f"stack_hourly,outlet={OUTLET},pollutant=nox avg=60.0,avg_o2corr=75.0,limit=50.0,limit_source=\"permit\","
        f"exceeded=true,valid_minutes=60i {int(later.timestamp()) * 10**9}"])
    publisher(f"aq/v1/derived/stack/{OUTLET}", record(later))

    service = start()
    wait_until(lambda: service.cases_touched, timeout=30)
    with service.db.connect() as conn:
        alerts = load_alerts(conn)
        cases = store.list_cases(conn, cfg.alerts.case_url_template)
    assert [(a.state, a.fired_at) for a in alerts] == [("firing", later)]
    assert len(cases) == 1 and [h["hour_end"] for h in cases[0].to_json()["hours"]] == [later.isoformat()]
    for _ in gen:
        pass


def test_a_record_that_is_not_what_the_aggregator_publishes_is_rejected_alone(env, unique, influx):
    from alerts.service import AlertsService

    cfg = load_config(None, {**env, "AQPIPE_ALERTS__CLIENT_ID": f"aqpipe-alerts-{unique}"})
    service = AlertsService(cfg)  # not started: handle() is what the worker calls
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    bad = {k: v for k, v in record(hour).items() if k != "outlet"}
    effects = service.handle([(f"aq/v1/derived/stack/{OUTLET}", json.dumps(bad).encode()),
                              (f"aq/v1/derived/stack/{OUTLET}", b"{not json"),
                              (f"aq/v1/derived/stack/{OUTLET}", json.dumps(record(hour)).encode()),
                              ("aq/v1/derived/aqi/620503-001", json.dumps({"station": "620503-001", "time": "yesterday"}).encode())])
    assert service.rejected == 3 and [a.state for a in effects.changed] == ["firing"] and len(effects.cases) == 1
    service.db.dispose()
