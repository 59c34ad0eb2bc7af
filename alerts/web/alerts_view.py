"""Alerts as the desk shows them: read from the engine's `alerts` table (no logic of ours)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, select

from alerts.cases.schema import alerts as alerts_table

RECENT_RESOLVED = timedelta(hours=24)


def read_alerts(engine: Engine, now: datetime) -> tuple[list[dict], list[dict]]:
    """Firing alerts, and those resolved within RECENT_RESOLVED (the engine's `alerts` table)."""
    with engine.begin() as conn:
        rows = conn.execute(select(alerts_table).where(
            (alerts_table.c.state == "firing")
            | ((alerts_table.c.state == "resolved") & (alerts_table.c.resolved_at >= now - RECENT_RESOLVED)))
            .order_by(alerts_table.c.fired_at.desc())).all()
    out = [{"fingerprint": r.fingerprint, "rule": r.rule, "alertname": r.alertname, "labels": r.labels,
            "annotations": r.annotations, "state": r.state,
            "active_since": r.active_since.isoformat() if r.active_since else None,
            "fired_at": r.fired_at.isoformat() if r.fired_at else None,
            "resolved_at": r.resolved_at.isoformat() if r.resolved_at else None,
            "value": r.value, "threshold": r.threshold, "case_id": r.case_id} for r in rows]
    return [a for a in out if a["state"] == "firing"], [a for a in out if a["state"] == "resolved"]
