"""The dead-letter store: every rejected message, durable, listable and replayable.

Append-only JSON lines under `data_dir/deadletter/`: `YYYY-MM-DD.jsonl` for letters
(one file a day, named by arrival date) and `replayed.jsonl` for the ids replayed
since. Nothing is rewritten in place, so the service can append while an operator
lists or replays. A letter's id is a hash of its topic and payload: a message the
broker redelivers is the same letter, listed once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ingest.durable import append_durably, make_dir

REPLAYED = "replayed.jsonl"
# What a letter's payload is. MESSAGE: the MQTT payload as received; replay decodes it again.
# LINE_PROTOCOL: InfluxDB points (one a line) that InfluxDB refused while the spool drained,
# where the message they came from is no longer at hand; replay writes them as they are.
MESSAGE = "message"
LINE_PROTOCOL = "line_protocol"


@dataclass(slots=True)
class DeadLetter:
    topic: str
    payload: bytes
    reason: str
    detail: str
    received: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
    lines: list[str] = field(default_factory=list)  # write_rejected: the points InfluxDB refused
    format: str = MESSAGE  # MESSAGE or LINE_PROTOCOL: how replay turns the payload into points

    @property
    def id(self) -> str:
        return letter_id(self.topic, self.payload)

    def to_json(self) -> str:
        doc = {"id": self.id, "received": self.received, "topic": self.topic, "reason": self.reason,
               "detail": self.detail, "format": self.format}
        try:
            doc["payload"] = self.payload.decode("utf-8")
        except UnicodeDecodeError:
            doc["payload_b64"] = base64.b64encode(self.payload).decode("ascii")
        if self.lines:
            doc["lines"] = self.lines
        return json.dumps(doc, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "DeadLetter":
        doc = json.loads(text)
        payload = base64.b64decode(doc["payload_b64"]) if "payload_b64" in doc else doc["payload"].encode("utf-8")
        return cls(doc["topic"], payload, doc["reason"], doc["detail"], doc["received"], doc.get("lines", []),
                   doc.get("format", MESSAGE))


def letter_id(topic: str, payload: bytes) -> str:
    return hashlib.sha256(topic.encode("utf-8") + b"\0" + payload).hexdigest()[:16]


class DeadLetterStore:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def append(self, letters: list[DeadLetter]) -> None:
        """Append and fsync; returns only when the letters are on disk."""
        if not letters:
            return
        make_dir(self.directory)
        day = time.strftime("%Y-%m-%d", time.gmtime())
        data = "".join(letter.to_json() + "\n" for letter in letters).encode("utf-8")
        append_durably(self.directory / f"{day}.jsonl", data)

    def mark_replayed(self, ids: list[str]) -> None:
        if not ids:
            return
        make_dir(self.directory)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        data = "".join(json.dumps({"id": i, "replayed": now}) + "\n" for i in ids).encode()
        append_durably(self.directory / REPLAYED, data)

    def pending(self) -> list[DeadLetter]:
        """Letters not yet replayed, one per id (the latest copy), oldest first."""
        done = self._replayed_ids()
        latest: dict[str, DeadLetter] = {}
        for letter in self._all():
            if letter.id not in done:
                latest.pop(letter.id, None)
                latest[letter.id] = letter
        return list(latest.values())

    def _all(self) -> Iterator[DeadLetter]:
        if not self.directory.exists():
            return
        for path in sorted(self.directory.glob("????-??-??.jsonl")):
            with path.open(encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        # A torn last line (crash mid-append) is skipped, not fatal.
                        try:
                            yield DeadLetter.from_json(line)
                        except (ValueError, KeyError):
                            continue

    def _replayed_ids(self) -> set[str]:
        path = self.directory / REPLAYED
        if not path.exists():
            return set()
        ids = set()
        with path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    ids.add(json.loads(line)["id"])
                except (ValueError, KeyError):
                    continue
        return ids


def summary(letters: list[DeadLetter]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for letter in letters:
        counts[letter.reason] = counts.get(letter.reason, 0) + 1
    return counts

