"""Alembic environment: run by `alerts.cases.db.migrate`, which passes the connection in
`config.attributes["connection"]` (no alembic.ini, no URL in a file)."""

from __future__ import annotations

from alembic import context

from alerts.cases.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through alerts.cases.db.migrate(engine), not the alembic CLI")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite",
                  compare_type=True)
with context.begin_transaction():
    context.run_migrations()
