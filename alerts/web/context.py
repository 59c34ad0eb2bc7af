"""What the web app's routes share: configuration, users, sessions, clients."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from alerts.cases.db import make_engine, migrate
from alerts.cases.store import CasePolicy
from alerts.web.sessions import SessionCodec, load_or_create_key
from alerts.web.throttle import LoginThrottle
from alerts.web.users import UsersFile, users_path
from aqpipe.config import Config
from aqpipe.influx import InfluxQL
from aqpipe.registry import Registry


def session_key_path(cfg: Config) -> Path:
    return cfg.web.session_key_file or cfg.data_dir / "web-session.key"


@dataclass
class Counters:
    requests: int = 0
    logins_ok: int = 0
    logins_failed: int = 0
    logins_throttled: int = 0


@dataclass
class WebContext:
    cfg: Config
    users: UsersFile
    codec: SessionCodec
    throttle: LoginThrottle
    influx: InfluxQL
    registry: Registry
    engine: Engine
    counters: Counters = field(default_factory=Counters)

    @property
    def url_template(self) -> str:
        return self.cfg.alerts.case_url_template

    @property
    def policy(self) -> CasePolicy:
        return CasePolicy.from_config(self.cfg.cases)

    @classmethod
    def from_config(cls, cfg: Config, registry: Registry | None = None) -> "WebContext":
        """Everything the app needs; brings the case database to the newest migration
        (idempotent, and safe while `aqpipe alerts` starts too)."""
        engine = make_engine(cfg)
        migrate(engine)
        return cls(
            cfg=cfg,
            users=UsersFile(users_path(cfg)),
            codec=SessionCodec(load_or_create_key(session_key_path(cfg)), cfg.web.session_ttl_s),
            throttle=LoginThrottle(cfg.web.login_max_failures, cfg.web.login_window_s),
            influx=InfluxQL.from_config(cfg.influx),
            registry=registry if registry is not None else Registry.load(cfg.registry_path),
            engine=engine,
        )
