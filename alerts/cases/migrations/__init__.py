"""Alembic migrations of the case database (`alerts.cases.db.migrate` runs them)."""
