"""InfluxDB `alert_events` (DESIGN.md): one point per state change, for Grafana annotations.

Tags `rule`, `severity`, `outlet` or `station`; fields `state`, `value`, `threshold`,
`case_id`, `summary`, `fingerprint`. The point's time is the event's data time (the hour
that fired or resolved it), so a change delivered twice overwrites itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from alerts.notify import DeliveryError, Notification
from aqpipe.influx import WriteError, Writer

NS = 1_000_000_000


def _tag(v: str) -> str:
    return v.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _str(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def event_line(n: Notification) -> str:
    tags = {"rule": n.rule, "severity": n.labels.get("severity", "")}
    for key in ("outlet", "station", "pollutant"):
        if n.labels.get(key):
            tags[key] = n.labels[key]
    fields = {"state": _str(n.state), "summary": _str(n.annotations.get("summary", "")),
              "fingerprint": _str(n.fingerprint), "alertname": _str(n.labels.get("alertname", ""))}
    if n.value is not None:
        fields["value"] = repr(float(n.value))
    if n.threshold is not None:
        fields["threshold"] = repr(float(n.threshold))
    if n.case_id is not None:
        fields["case_id"] = f"{int(n.case_id)}i"
    t = int(n.event_time.timestamp() * NS)
    return (f"alert_events,{','.join(f'{k}={_tag(v)}' for k, v in sorted(tags.items()) if v)} "
            f"{','.join(f'{k}={v}' for k, v in fields.items())} {t}")


class InfluxNotifier:
    channel = "influx"

    def __init__(self, writer: Writer) -> None:
        self.writer = writer

    def send(self, batch: Sequence[Notification]) -> None:
        try:
            self.writer.write([event_line(n) for n in batch])
        except WriteError as e:
            raise DeliveryError(self.channel, str(e), retryable=e.retryable, retry_after=e.retry_after) from e

    def close(self) -> None:
        self.writer.close()
