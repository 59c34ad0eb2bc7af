"""The topic tree (DESIGN.md, Topics) and what ingest subscribes to."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

# Topic kind -> (measurement or decoder, identity). Only device topics are ingested;
# derived/, alerts/ and status/ belong to the other services.
INGEST_KINDS = ("ambient", "stack", "hj212")


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    kind: str  # ambient | stack | hj212
    identity: str  # station, outlet or MN


def subscriptions(prefix: str, shared_group: str = "") -> list[str]:
    filters = [f"{prefix}/{kind}/+" for kind in INGEST_KINDS]
    if shared_group:
        filters = [f"$share/{shared_group}/{f}" for f in filters]
    return filters


@lru_cache(maxsize=65536)  # a topic per device, on every message
def parse(topic: str, prefix: str) -> DeviceTopic | None:
    """`aq/v1/ambient/620503-001` -> DeviceTopic('ambient', '620503-001'); None if not a device topic."""
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    kind, _, identity = topic[len(head):].partition("/")
    if kind not in INGEST_KINDS or not identity or "/" in identity:
        return None
    return DeviceTopic(kind, identity)
