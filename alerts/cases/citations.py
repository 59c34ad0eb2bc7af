"""Legal citations, versioned by date (citations.toml), chosen by the date of the violation.

The Ecological Environment Code replaces the 2014 Environmental Protection Law during 2026,
so the article a case cites depends on when the violation happened, never on today and
never on a literal in the code. The file says which rows are of medium confidence.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

CITATIONS_FILE = Path(__file__).with_name("citations.toml")


class CitationError(ValueError):
    """A citations file that is not valid: names the row and the problem."""


@dataclass(frozen=True)
class Citation:
    topic: str
    law: str
    article: str
    effective_from: date
    effective_to: date | None  # inclusive; None: still in force
    confidence: str

    def covers(self, day: date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day <= self.effective_to)

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "law": self.law, "article": self.article,
                "effective_from": self.effective_from.isoformat(),
                "effective_to": self.effective_to.isoformat() if self.effective_to else None,
                "confidence": self.confidence}


def load(path: Path = CITATIONS_FILE) -> list[Citation]:
    """Read and check a citations file: known keys, dates, no two rows of a topic overlapping."""
    with open(path, "rb") as f:
        rows = tomllib.load(f).get("citation", [])
    out = []
    for i, row in enumerate(rows, 1):
        where = f"{path.name} citation #{i}"
        unknown = set(row) - {"topic", "law", "article", "effective_from", "effective_to", "confidence"}
        if unknown:
            raise CitationError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        for key in ("topic", "law", "article", "effective_from"):
            if key not in row:
                raise CitationError(f"{where}: missing {key}")
        start, end = row["effective_from"], row.get("effective_to")
        if not isinstance(start, date) or (end is not None and not isinstance(end, date)):
            raise CitationError(f"{where}: effective_from/effective_to must be TOML dates (2015-01-01)")
        if end is not None and end < start:
            raise CitationError(f"{where}: effective_to {end} is before effective_from {start}")
        out.append(Citation(row["topic"], row["law"], row["article"], start, end, row.get("confidence", "high")))
    for a in out:
        for b in out:
            if a is not b and a.topic == b.topic and a.effective_from <= b.effective_from and a.covers(b.effective_from):
                raise CitationError(f"{path.name}: two {a.topic} rows in force on {b.effective_from}: "
                                    f"{a.law} {a.article} and {b.law} {b.article}")
    return out


@lru_cache(maxsize=1)
def _default() -> tuple[Citation, ...]:
    return tuple(load())


def cite(topic: str, violation_day: date, table: list[Citation] | None = None) -> Citation | None:
    """The citation of `topic` in force on the day of the violation (China date), or None."""
    for c in (table if table is not None else _default()):
        if c.topic == topic and c.covers(violation_day):
            return c
    return None


def topics(table: list[Citation] | None = None) -> list[str]:
    return sorted({c.topic for c in (table if table is not None else _default())})
