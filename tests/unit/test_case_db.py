"""Which database the case store opens for a configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.cases.db import database_url
from aqpipe.config import load_config
from aqpipe.errors import ConfigError


def test_the_default_is_an_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    cfg = load_config(None, {"AQPIPE_DATA_DIR": str(tmp_path / "d")})
    assert database_url(cfg) == f"sqlite:///{(tmp_path / 'd' / 'cases.sqlite').resolve()}"


@pytest.mark.parametrize("given, used", [
    ("postgresql://aqpipe@db:5432/cases", "postgresql+psycopg://aqpipe@db:5432/cases"),
    ("postgres://aqpipe@db/cases", "postgresql+psycopg://aqpipe@db/cases"),
    ("postgresql+psycopg://aqpipe@db/cases", "postgresql+psycopg://aqpipe@db/cases"),
    ("sqlite:////var/lib/aqpipe/cases.sqlite", "sqlite:////var/lib/aqpipe/cases.sqlite"),
])
def test_postgresql_urls_go_through_psycopg_3(given: str, used: str) -> None:
    assert database_url(load_config(None, {"AQPIPE_CASES__DATABASE_URL": given})) == used


def test_an_unsupported_database_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="must be sqlite:///PATH or postgresql://") as e:
        load_config(None, {"AQPIPE_CASES__DATABASE_URL": "mysql://u@h/db"})
    assert e.value.key == "cases.database_url"


def test_the_sqlite_file_is_durable_and_checks_foreign_keys(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from alerts.cases.db import make_engine, migrate

    engine = make_engine(load_config(None, {"AQPIPE_DATA_DIR": str(tmp_path / "fresh" / "dir")}))
    assert migrate(engine) == ["0001_initial"] and migrate(engine) == []
    with engine.connect() as conn:
        pragmas = {p: conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("journal_mode", "synchronous",
                                                                              "foreign_keys")}
    assert pragmas == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1}  # 2 = FULL
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO case_hours (case_id, hour_end, valid_minutes, exceeded, minutes, "
                                 "recorded_at, updated_at) VALUES (42, '2026-03-01', 60, 1, '[]', '2026-03-01', "
                                 "'2026-03-01')")
    engine.dispose()
