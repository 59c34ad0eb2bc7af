"""aqpipe configuration: one TOML file, every key overridable by environment.

`AQPIPE_MQTT__PORT=1884` overrides `[mqtt] port`; top-level keys are `AQPIPE_DATA_DIR`.
Secrets (`mqtt.password`, `influx.token`) come only from the environment or from a
file named by `*_file`; a secret written into the TOML itself is refused, so it never
ends up in a repository or a log.
"""

from __future__ import annotations

import os
import tomllib
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from aqpipe.errors import ConfigError

ENV_PREFIX = "AQPIPE_"
CONFIG_ENV = "AQPIPE_CONFIG"
SECRET_KEYS = {("mqtt", "password"), ("influx", "token")}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class MqttConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    tls_ca: Path | None = None
    client_id: str = "aqpipe-ingest"
    # $share group; empty = a plain subscription. Several ingest instances with the same
    # group split the stream between them.
    shared_group: str = ""
    topic_prefix: str = "aq/v1"
    keepalive_s: int = Field(30, ge=5)
    # How long the broker keeps our session (and queues for us) while we are down.
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0)
    # Messages the broker may send before we ack: acks wait for durability, so the
    # window must cover a whole batch plus the write latency.
    receive_maximum: int = Field(20000, ge=1, le=65535)

    def secret(self) -> str | None:
        return _read_secret(self.password, self.password_file, "mqtt.password_file")


class InfluxConfig(_Section):
    url: str = "http://127.0.0.1:8086"
    api: Literal["v1", "v2"] = "v1"
    database: str = "aq"
    retention_policy: str = ""
    org: str = ""
    bucket: str = ""
    token: SecretStr | None = None
    token_file: Path | None = None
    username: str | None = None  # v1 basic auth
    timeout_s: float = Field(10.0, gt=0)
    batch_size: int = Field(5000, ge=1)  # readings per write
    # Requests a large batch is written as, at once, parted by series: InfluxDB uses
    # several cores for concurrent writes (ingest/batcher.py). 1 = one request per batch.
    write_concurrency: int = Field(2, ge=1, le=16)
    flush_interval_s: float = Field(0.2, gt=0)  # longest a reading waits for its batch
    retry_max_backoff_s: float = Field(30.0, gt=0)
    create_database: bool = True  # v1: CREATE DATABASE at start (1.x only; harmless if it exists)

    @model_validator(mode="after")
    def _v2_needs_bucket(self) -> "InfluxConfig":
        if self.api == "v2" and not self.bucket:
            raise ValueError("influx.api = 'v2' needs influx.bucket (and influx.org, influx.token)")
        return self

    def secret(self) -> str | None:
        return _read_secret(self.token, self.token_file, "influx.token_file")


class MetricsConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)  # 0 = off


class IngestConfig(_Section):
    max_payload_bytes: int = Field(256 * 1024, ge=1024)
    future_tolerance_s: float = Field(300, ge=0)  # clock skew allowed on device times
    retention_days: float = Field(400, gt=0)  # older readings are rejected (too_old)
    # Sensors report small negatives around zero; below -noise the reading is rejected
    # (aqpipe/validate.py). Concentrations in ug/m3 (ambient PM, SO2, NO2, O3) ...
    negative_noise: float = Field(5.0, ge=0)
    # ... and in mg/m3 (ambient CO, every stack concentration).
    negative_noise_mg: float = Field(0.5, ge=0)
    status_interval_s: float = Field(5.0, gt=0)  # how often the service logs its counters


class ThreadsConfig(_Section):
    """[threads]: supervision of every service's long-lived threads (aqpipe/supervision.py)."""

    # A thread whose heartbeat is older than this is "stalled": /readyz answers 503 and names it.
    # Longer than any legitimate silence: a write or query timeout, a retry backoff.
    stall_after_s: float = Field(120.0, gt=0)
    # A thread that fails more than max_restarts times within restart_window_s is given up:
    # the process exits with status 70 and systemd starts it again.
    max_restarts: int = Field(5, ge=0)
    restart_window_s: float = Field(300.0, gt=0)


class SpoolConfig(_Section):
    enabled: bool = True
    # Disk for batches InfluxDB cannot take yet. Size it for the longest outage to ride
    # out: readings/s x ~250 bytes x seconds (20 stations at 1/min: ~7 MB a day).
    max_bytes: int = Field(1024**3, ge=1024)


class AggregatorConfig(_Section):
    """`aqpipe aggregate`: AQI and stack rollups (aggregator/README.md)."""

    client_id: str = "aqpipe-aggregator"  # its own persistent MQTT session, apart from ingest's
    settle_s: float = Field(60.0, ge=0)  # wait after an hour (or day) ends before computing it
    lateness_hours: float = Field(48.0, gt=0)  # readings older than this no longer trigger a recompute
    # How long to wait for ingest to store readings the aggregator has seen before computing
    # without them (they may have been dead-lettered).
    max_wait_s: float = Field(600.0, ge=0)
    # After that the rollup is written with complete=false and InfluxDB is asked again this
    # often until the missing readings land (then it is recomputed) or lateness_hours pass.
    recheck_s: float = Field(60.0, gt=0)
    tick_s: float = Field(1.0, gt=0)  # scheduler period
    cn_standards: Literal["in_force", "both"] = "in_force"  # "both": cn-2012 and cn-2026 side by side
    cn_2026_effective: date = date(2026, 3, 1)  # GB 3095-2026 / HJ 633-2026 in force (China date)
    us: bool = True  # also write the US EPA AQI (standard=us)
    publish_derived: bool = True  # publish records on aq/v1/derived/...
    stack_o2_mode: Literal["hourly", "minute"] = "hourly"  # aggregator/stack.py
    status_interval_s: float = Field(5.0, gt=0)  # how often the aggregator logs its status line


class Hj212GatewayConfig(_Section):
    """`aqpipe hj212-gateway`: HJ 212 data loggers over TCP -> MQTT (ingest/README-hj212.md)."""

    # HOST:PORT to listen on. Loopback by default; 0.0.0.0:9212 to take loggers from the network.
    listen: str = Field("127.0.0.1:9212", pattern=r"^(\[[0-9A-Fa-f:.]+\]|[^:\s]+):[0-9]{1,5}$")
    client_id: str = "aqpipe-hj212-gateway"  # its own MQTT client id, apart from ingest's
    max_connections: int = Field(1000, ge=1)
    idle_timeout_s: float = Field(300.0, gt=0)  # no byte for this long: the connection is closed
    # Whole frame incl. ## + length + CRC + CRLF; the standard's largest is 10011 (data 9999).
    max_frame_bytes: int = Field(10011, ge=64, le=10011)
    window: int = Field(64, ge=1)  # frames of one connection awaiting the broker's PUBACK
    max_pending: int = Field(10000, ge=1, le=60000)  # all connections: publishes not yet acked
    drain_timeout_s: float = Field(10.0, ge=0)  # at SIGTERM: wait this long for PUBACKs and replies
    metrics_port: int = Field(9109, ge=0, le=65535)  # /metrics on metrics.host; 0 = off
    # Access control (ingest/README-hj212.md): MN in the registry and PW as in its secrets file.
    check_pw: bool = True  # false: any registered MN may talk, whatever its PW (migration only)
    max_auth_failures: int = Field(3, ge=1)  # refused frames (auth, unknown_mn) before the connection is closed
    auth_reply: Literal["none", "9011"] = "none"  # refusal answer: none, or 9011 QnRtn=3/4 (HJ 212-2017 table)
    # TLS on the listener, for loggers that support it (both or neither).
    tls_cert: Path | None = None  # PEM certificate chain
    tls_key: Path | None = None  # PEM private key (keep it 0600)

    @model_validator(mode="after")
    def _tls_pair(self) -> "Hj212GatewayConfig":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("hj212_gateway.tls_cert and tls_key go together: set both or neither")
        return self


class AlertsConfig(_Section):
    """[alerts]: the exceedance-alert service (alerts/README.md)."""

    client_id: str = "aqpipe-alerts"  # its own persistent MQTT session
    alertmanager_url: str | None = None  # e.g. http://127.0.0.1:9093; none = the Alertmanager channel is off
    case_url_template: str = "http://127.0.0.1:9120/cases/{case_id}"
    rules_file: Path | None = None  # default: the shipped alerts/rules.toml
    # Firing alerts are re-posted this often; keep it well under Alertmanager's resolve_timeout.
    resend_s: float = Field(60.0, gt=0)
    webhook_url: str | None = None  # generic signed webhook; none = off
    webhook_secret_file: Path | None = None  # HMAC-SHA256 key of X-Aqpipe-Signature
    mqtt_publish: bool = True  # aq/v1/alerts/{fingerprint}, retained while firing
    influx_events: bool = True  # alert_events points in InfluxDB
    notify_attempts: int = Field(5, ge=1)  # per channel and notification, with exponential backoff
    notify_backoff_s: float = Field(0.5, gt=0)  # first retry delay; doubles, capped at 30 s
    notify_timeout_s: float = Field(5.0, gt=0)
    dq_interval_s: float = Field(60.0, gt=0)  # timer rules (deadlines, silence, stuck, valid rate) run this often
    # After the broker lost our session: replay the aggregator's stored rollups of this many hours.
    catch_up_hours: float = Field(48.0, ge=0)


class CasesConfig(_Section):
    """[cases]: the enforcement-case database shared by `aqpipe alerts` and `aqpipe web`."""

    database_url: str | None = None  # default: sqlite file DATA_DIR/cases.sqlite; postgresql://... for a bureau
    reinspection_days: int = Field(30, ge=1)  # re-inspection due this many days after an order is served (MEP Order 28)
    enterprise_report_hours: float = Field(48.0, gt=0)  # the enterprise's exceedance report is due this long after a case opens
    # fault (故障) marks exempt at most this many hours per outlet and China year; unset: not
    # enforced. No figure in our sources: set it from the industry marking rule.
    fault_mark_hours_per_year: int | None = Field(None, ge=0)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str | None) -> str | None:
        if url and not url.startswith(("sqlite:///", "postgresql://", "postgres://", "postgresql+psycopg://")):
            raise ValueError("must be sqlite:///PATH or postgresql://USER@HOST[:PORT]/DB (PostgreSQL through "
                             f"psycopg 3), got {url.split('://')[0]}://...")
        return url


class WebConfig(_Section):
    """[web]: `aqpipe web`, the inspectors' case desk, the JSON API and the public pages."""

    host: str = "127.0.0.1"
    port: int = Field(9120, ge=1, le=65535)
    users_file: Path | None = None  # users and API tokens, hashed (alerts/web/README.md); default DATA_DIR/web-users.toml
    session_key_file: Path | None = None  # signs session cookies; default DATA_DIR/web-session.key, created 0600
    cookie_secure: bool = False  # true when served over https (behind a TLS proxy): cookies get Secure
    session_ttl_s: int = Field(8 * 3600, ge=60)
    login_max_failures: int = Field(5, ge=1)  # per username and per client address, within login_window_s
    login_window_s: int = Field(900, ge=1)
    trusted_proxies: str = ""  # e.g. "127.0.0.1": take the client address from their X-Forwarded-For


class Config(_Section):
    data_dir: Path = Path("./data")
    registry_dir: Path | None = None  # stations.toml / outlets.toml; default: beside the config file
    mqtt: MqttConfig = MqttConfig()
    influx: InfluxConfig = InfluxConfig()
    metrics: MetricsConfig = MetricsConfig()
    ingest: IngestConfig = IngestConfig()
    spool: SpoolConfig = SpoolConfig()
    threads: ThreadsConfig = ThreadsConfig()
    aggregator: AggregatorConfig = AggregatorConfig()
    hj212_gateway: Hj212GatewayConfig = Hj212GatewayConfig()
    alerts: AlertsConfig = AlertsConfig()
    cases: CasesConfig = CasesConfig()
    web: WebConfig = WebConfig()
    source: Path | None = None  # the file this was read from, if any

    @property
    def deadletter_dir(self) -> Path:
        return self.data_dir / "deadletter"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def registry_path(self) -> Path:
        if self.registry_dir is not None:
            return self.registry_dir
        return self.source.parent if self.source is not None else Path(".")


def _read_secret(value: SecretStr | None, path: Path | None, key: str) -> str | None:
    if value is not None:
        return value.get_secret_value()
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(key, f"cannot read secret file {path}: {e.strerror}") from e


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """`AQPIPE_A__B=v` -> {"a": {"b": "v"}}; pydantic converts the strings to the field types."""
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(name, "conflicts with another variable of the same prefix")
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_path(explicit: str | os.PathLike | None, environ: dict[str, str] | None = None) -> Path | None:
    """The config file to read: `--config`, else $AQPIPE_CONFIG, else ./aqpipe.toml if present."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    default = Path("aqpipe.toml")
    return default if default.exists() else None


def load_config(path: str | os.PathLike | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read, merge with the environment and validate. Raises ConfigError naming the key."""
    env = dict(os.environ if environ is None else environ)
    file = resolve_path(path, env)
    data: dict[str, Any] = {}
    if file is not None:
        try:
            with open(file, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError as e:
            raise ConfigError("--config", f"no such file: {file}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(str(file), f"not valid TOML: {e}") from e
        for section, key in SECRET_KEYS:
            if key in data.get(section, {}):
                env_name = f"{ENV_PREFIX}{section.upper()}__{key.upper()}"
                raise ConfigError(
                    f"{section}.{key}",
                    f"secrets are not read from the config file; set {env_name} or {section}.{key}_file",
                )
    merged = _merge(data, _env_overrides(env))
    if file is not None:
        merged["source"] = str(file)
    try:
        return Config.model_validate(merged)
    except ValidationError as e:
        raise config_error_from(e) from e


def config_error_from(e: ValidationError) -> ConfigError:
    lines = []
    first_key = ""
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"])
        first_key = first_key or key
        env_name = ENV_PREFIX + "__".join(str(p).upper() for p in err["loc"])
        got = err.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{key}: {err['msg']}{got_text} [environment: {env_name}]")
    return ConfigError(first_key, "\n".join(lines))
