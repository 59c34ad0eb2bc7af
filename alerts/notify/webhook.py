"""A generic webhook: one JSON POST per notification, signed and with an idempotency key.

Headers: `X-Aqpipe-Signature: sha256=<hex HMAC-SHA256 of the exact body>` with the key read
from `alerts.webhook_secret_file` (never logged), and `Idempotency-Key` (the same change
always has the same key, so a receiver drops a delivery we retried after a lost response).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from pathlib import Path

import urllib3

from alerts.notify import DeliveryError, Notification
from aqpipe.errors import ConfigError

SIGNATURE_HEADER = "X-Aqpipe-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """What a receiver does: constant-time comparison of the signature header."""
    return hmac.compare_digest(sign(secret, body), header or "")


def read_secret(path: Path | None) -> bytes:
    if path is None:
        raise ConfigError("alerts.webhook_secret_file", "alerts.webhook_url is set: the webhook needs a secret file to sign with")
    try:
        secret = path.read_bytes().strip()
    except OSError as e:
        raise ConfigError("alerts.webhook_secret_file", f"cannot read {path}: {e.strerror}") from e
    if len(secret) < 16:
        raise ConfigError("alerts.webhook_secret_file", f"{path} holds fewer than 16 bytes: too weak a key")
    return secret


class WebhookNotifier:
    channel = "webhook"

    def __init__(self, url: str, secret: bytes, timeout_s: float = 5.0) -> None:
        self.url = url
        self._secret = secret
        self.http = urllib3.PoolManager(num_pools=1, maxsize=2, retries=False,
                                        timeout=urllib3.Timeout(connect=3.0, read=timeout_s))

    def send(self, batch: Sequence[Notification]) -> None:
        for n in batch:  # one request per change: one idempotency key per request
            body = json.dumps(n.to_json(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self._secret, body),
                       IDEMPOTENCY_HEADER: n.idempotency_key}
            try:
                r = self.http.request("POST", self.url, body=body, headers=headers)
            except urllib3.exceptions.HTTPError as e:
                raise DeliveryError(self.channel, f"unreachable: {e}") from e
            if r.status >= 300:
                retry_after = r.headers.get("Retry-After")
                raise DeliveryError(self.channel, f"HTTP {r.status}", retryable=r.status >= 500 or r.status == 429,
                                    retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None)

    def close(self) -> None:
        self.http.clear()
