"""Notification channels behind one small interface, with retries in one place.

Each channel (`alertmanager`, `webhook`, `mqtt`, `influx`) is a `Notifier`: `send(batch)`
delivers a batch of `Notification`s or raises `DeliveryError` saying whether trying again
can help. `deliver` is the one retry stage every channel goes through: exponential
backoff (honouring a server's Retry-After), `aqpipe_alert_notifications_total{channel,result}`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from alerts.metrics import NOTIFICATIONS

log = logging.getLogger("aqpipe.alerts")


@dataclass(frozen=True)
class Notification:
    """One alert state change (or a firing alert re-sent) as every channel sees it."""

    fingerprint: str
    rule: str
    state: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None = None  # set on resolve
    value: float | None = None
    threshold: float | None = None
    case_id: int | None = None
    generator_url: str = ""

    @property
    def idempotency_key(self) -> str:
        """The same change always has the same key, so a receiver can drop a retried delivery."""
        return f"{self.fingerprint}-{self.state}-{int(self.starts_at.timestamp())}"

    @property
    def event_time(self) -> datetime:
        return self.ends_at if self.state == "resolved" and self.ends_at else self.starts_at

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "rule": self.rule, "status": self.state,
                "labels": self.labels, "annotations": self.annotations,
                "startsAt": self.starts_at.isoformat(), "endsAt": self.ends_at.isoformat() if self.ends_at else None,
                "value": self.value, "threshold": self.threshold, "case_id": self.case_id,
                "idempotency_key": self.idempotency_key}


class DeliveryError(Exception):
    """A channel could not take a batch. `retryable`: the channel is down or busy, the
    notification is fine; otherwise the channel refused it (bad request) and retrying
    the same body cannot help."""

    def __init__(self, channel: str, detail: str, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(f"{channel}: {detail}")
        self.channel = channel
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after


class Notifier(Protocol):
    channel: str

    def send(self, batch: Sequence[Notification]) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before attempt `attempt + 1` (attempt counts from 1)."""
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return max(base, min(retry_after or 0.0, self.max_backoff_s))


@dataclass
class Delivery:
    """The retry stage: `deliver(notifier, batch)` for every channel alike."""

    policy: RetryPolicy = field(default_factory=RetryPolicy)
    stop: threading.Event = field(default_factory=threading.Event)  # set: give up waiting between retries

    def deliver(self, notifier: Notifier, batch: Sequence[Notification]) -> bool:
        """Send with retries; True when the channel took the batch. Never raises."""
        if not batch:
            return True
        for attempt in range(1, self.policy.attempts + 1):
            try:
                notifier.send(batch)
            except DeliveryError as e:
                last = attempt == self.policy.attempts or not e.retryable
                NOTIFICATIONS.labels(notifier.channel, "failed" if last else "retried").inc(len(batch))
                log.warning("event=notify_%s channel=%s alerts=%d attempt=%d detail=%r", "failed" if last else "retry",
                            notifier.channel, len(batch), attempt, e.detail[:200])
                if last or self.stop.wait(self.policy.delay(attempt, e.retry_after)):
                    return False
                continue
            NOTIFICATIONS.labels(notifier.channel, "sent").inc(len(batch))
            return True
        return False
