"""Alertmanager through its v2 API: `POST /api/v2/alerts`.

Firing alerts carry no `endsAt` and are re-posted every `alerts.resend_s` (the service's
resend loop), which must stay under Alertmanager's `resolve_timeout`, so Alertmanager
keeps them active; a resolution posts the same labels with `endsAt` set.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import urllib3

from alerts.notify import DeliveryError, Notification


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def am_alert(n: Notification) -> dict[str, Any]:
    """The v2 API's postableAlert for one notification."""
    alert: dict[str, Any] = {"labels": n.labels, "annotations": n.annotations, "startsAt": _iso(n.starts_at)}
    if n.generator_url:
        alert["generatorURL"] = n.generator_url
    if n.state == "resolved":
        alert["endsAt"] = _iso(n.ends_at or n.starts_at)
    return alert


class AlertmanagerNotifier:
    channel = "alertmanager"

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.http = urllib3.PoolManager(num_pools=1, maxsize=2, retries=False,
                                        timeout=urllib3.Timeout(connect=3.0, read=timeout_s))

    def send(self, batch: Sequence[Notification]) -> None:
        body = json.dumps([am_alert(n) for n in batch], ensure_ascii=False).encode("utf-8")
        try:
            r = self.http.request("POST", self.url, body=body, headers={"Content-Type": "application/json"})
        except urllib3.exceptions.HTTPError as e:
            raise DeliveryError(self.channel, f"unreachable: {e}") from e
        if r.status >= 300:
            detail = f"HTTP {r.status}: {r.data[:300].decode('utf-8', 'replace')}"
            raise DeliveryError(self.channel, detail, retryable=r.status >= 500 or r.status == 429)

    def close(self) -> None:
        self.http.clear()
