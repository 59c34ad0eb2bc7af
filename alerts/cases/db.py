"""The case database: an SQLAlchemy engine for `cases.database_url`, and its migrations.

SQLite by default (`DATA_DIR/cases.sqlite`), so `make run` needs nothing more; PostgreSQL
(psycopg 3) for a bureau's multi-user deployment. Every state change is one transaction
the caller owns: `with engine.begin() as conn: store.transition(conn, ...)`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url, text

from aqpipe.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any constant: migrate() holds this PostgreSQL advisory lock so that two services starting
# together (aqpipe alerts, aqpipe web) do not both create the tables.
_MIGRATION_LOCK = 0x61717069  # "aqpi"
log = logging.getLogger("aqpipe.cases")


def database_url(cfg: Config) -> str:
    """`cases.database_url`, else the SQLite file in data_dir; postgresql:// gets psycopg 3."""
    url = cfg.cases.database_url
    if not url:
        return f"sqlite:///{(cfg.data_dir / 'cases.sqlite').resolve()}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(cfg: Config) -> Engine:
    """The engine for the configured case database (the SQLite file's directory is created)."""
    return engine_for_url(database_url(cfg))


def engine_for_url(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})
    _sqlite_pragmas(engine)
    return engine


def _sqlite_pragmas(engine: Engine) -> None:
    """WAL and synchronous=FULL (a committed case survives power loss), foreign keys on,
    and BEGIN IMMEDIATE: the write lock is taken at the start of each transaction, so two
    processes (alerts, web) never deadlock upgrading a read lock; the second one waits."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite's is lazy)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(engine: Engine) -> list[str]:
    """Bring the database to the newest migration (alembic upgrade head), in one transaction.
    Returns the revisions applied (none when it was already current)."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)  # its INFO lines ("Context impl ...") would show on every CLI call
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            before = MigrationContext.configure(conn).get_current_revision()
            if before == head:
                return []
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        alembic_log.setLevel(level)
    log.info("event=case_db_migrated from=%s to=%s url=%s", before, head, engine.url.render_as_string(hide_password=True))
    return [head]


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None: not migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
