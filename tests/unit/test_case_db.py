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
