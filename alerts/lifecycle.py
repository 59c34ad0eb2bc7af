"""The Prometheus alert lifecycle as pure functions: inactive -> pending -> firing -> resolved.

An alert series is one rule and one set of labels (its fingerprint). Its verdicts are
kept per period (an hour, a day, a check) in `alert_hours`; the state is *derived* by
replaying them in time order (`replay`), so a redelivered record (the same verdict again)
derives the same state, a recomputed hour (a verdict replaced) derives the corrected one,
and a restart (verdicts and state read back from the database) derives what it had.
`advance` compares the derived episode with the stored state and says whether to notify.

Not-judged periods are skipped: they neither count towards `for` nor towards resolution,
and they do not break a run of exceeded or compliant periods.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

State = Literal["inactive", "pending", "firing", "resolved"]
Notify = Literal["firing", "resolved"]


def fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """Stable id of an alert series: SHA-256 of the rule and its sorted labels (16 hex digits).

    Stable across processes and versions (no Python hash()), so it can key the database,
    the MQTT topic aq/v1/alerts/{fingerprint} and the webhook's idempotency key.
    """
    doc = json.dumps({"rule": rule, "labels": dict(sorted(labels.items()))}, ensure_ascii=False,
                     separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(doc.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Period:
    """One judged period of a series: its verdict and the numbers behind it."""

    verdict: Literal["exceeded", "compliant", "not_judged"]
    value: float | None = None
    threshold: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class Episode:
    """What the verdicts say now: the state and when the current episode began, fired, ended."""

    state: State
    active_since: datetime | None = None  # first exceeded period of the episode
    fired_at: datetime | None = None  # the period that made it fire
    resolved_at: datetime | None = None  # the period that resolved it
    value: float | None = None  # the latest judged value (exceeded while firing)
    threshold: float | None = None


def replay(periods: Mapping[datetime, Period], for_n: int = 1, resolve_after: int = 1) -> Episode:
    """Derive the current episode from every period's verdict, oldest first.

    Fires once `for_n` consecutive judged periods exceeded (pending before that); resolves
    once `resolve_after` consecutive judged periods complied. A pending series that sees a
    compliant period goes back to inactive, as in Prometheus.
    """
    ep = Episode("inactive")
    bad = good = 0
    for t in sorted(periods):
        p = periods[t]
        if p.verdict == "not_judged":
            continue
        if p.verdict == "exceeded":
            bad, good = bad + 1, 0
            if ep.state in ("inactive", "resolved"):
                ep = Episode("pending", active_since=t)
            ep = replace(ep, value=p.value, threshold=p.threshold)
            if ep.state == "pending" and bad >= for_n:
                ep = replace(ep, state="firing", fired_at=t)
        else:
            good, bad = good + 1, 0
            if ep.state == "pending":
                ep = Episode("inactive", value=p.value, threshold=p.threshold)
            elif ep.state == "firing":
                ep = replace(ep, value=p.value, threshold=p.threshold)
                if good >= resolve_after:
                    ep = replace(ep, state="resolved", resolved_at=t)
            else:
                ep = replace(ep, value=p.value, threshold=p.threshold)
    return ep


@dataclass(frozen=True)
class AlertState:
    """The stored state of one alert series (a row of the `alerts` table)."""

    fingerprint: str
    rule: str
    alertname: str
    labels: dict[str, str]
    annotations: dict[str, str]
    state: State = "inactive"
    active_since: datetime | None = None
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    last_sent_at: datetime | None = None  # None: a change not yet delivered to every channel
    value: float | None = None
    threshold: float | None = None
    case_id: int | None = None
    updated_at: datetime | None = None


def advance(stored: AlertState, episode: Episode, now: datetime) -> tuple[AlertState, Notify | None]:
    """The new stored state and what to notify, given the episode the verdicts derive.

    Notifies `firing` when an episode starts firing that was not notified yet, `resolved`
    when a notified episode ends (or ended, between two looks, before it was notified:
    then the resolution carries both times). The same episode again notifies nothing.
    """
    was_firing = stored.state == "firing"
    new = replace(stored, state=episode.state, active_since=episode.active_since, fired_at=episode.fired_at,
                  resolved_at=episode.resolved_at, value=episode.value, threshold=episode.threshold,
                  updated_at=now)
    notify: Notify | None = None
    if episode.state == "firing":
        if not was_firing:
            notify = "firing"
        else:
            # still firing: keep the notified start (Alertmanager knows it by it)
            new = replace(new, fired_at=stored.fired_at or episode.fired_at,
                          active_since=stored.active_since or episode.active_since)
    elif was_firing:
        notify = "resolved"
        if episode.state != "resolved":
            # a recomputed period took away what made it fire: it ends now
            new = replace(new, state="resolved", fired_at=stored.fired_at, active_since=stored.active_since,
                          resolved_at=now)
    elif episode.state == "resolved" and episode.fired_at is not None and episode.fired_at != stored.fired_at:
        notify = "resolved"  # fired and resolved between two looks (e.g. several hours at once)
    elif episode.state == "inactive" and stored.state == "resolved":
        new = replace(stored, updated_at=now)  # stays resolved: nothing new happened
    if notify is not None:
        new = replace(new, last_sent_at=None)
    return new, notify


def changed_verdicts(before: Mapping[datetime, Period], after: Mapping[datetime, Period]) -> dict[datetime, tuple[str | None, str]]:
    """Periods whose verdict is new or different: {time: (old verdict or None, new verdict)}."""
    return {t: (before[t].verdict if t in before else None, p.verdict)
            for t, p in after.items() if t not in before or before[t].verdict != p.verdict}
