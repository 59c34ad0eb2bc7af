"""What the aggregator waits for: per reading time, which rollup fields InfluxDB must hold.

Counting reading *times* is not enough. InfluxDB 1.x makes a point's fields visible one
by one (each field is its own series in the cache), so a query running while ingest
writes can see a reading's pm25 and not yet its so2; and HJ 212 multi-packet uploads
send one DataTime in several frames, each with some pollutants. A time being present
says nothing about its other fields. So each seen reading time carries a bit mask of
the fields it brings, and an hour is ready only when every bit is found.

Only fields a rollup reads are tracked (values, their `_flag`, stack `status`); a
reading with none of them (meteorology only) is not waited for.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from aggregator.keys import HOUR, InputKey
from aggregator.source import AMBIENT_FIELDS, NS, STACK_FIELDS, Series

# Bit i of a mask is TRACKED[kind][i]. Append only: masks are kept in the journal.
TRACKED: dict[str, tuple[str, ...]] = {
    "ambient": AMBIENT_FIELDS + tuple(f"{n}_flag" for n in AMBIENT_FIELDS),
    "stack": STACK_FIELDS + tuple(f"{n}_flag" for n in STACK_FIELDS) + ("status",),
}
_BIT = {kind: {name: 1 << i for i, name in enumerate(names)} for kind, names in TRACKED.items()}

Marks = dict[int, int]  # ns offset of a reading time into its hour -> mask of fields seen


@lru_cache(maxsize=4096)  # a station sends the same few field sets over and over
def mask_of(kind: str, fields: frozenset[str]) -> int:
    """Mask of the tracked fields among `fields` (0: nothing a rollup reads)."""
    bits = _BIT[kind]
    mask = 0
    for name in fields:
        mask |= bits.get(name, 0)
    return mask


def present(series: Series, kind: str) -> dict[InputKey, Marks]:
    """The tracked fields InfluxDB holds, per identity and hour, per reading time."""
    names = TRACKED[kind]
    mask = np.zeros(len(series), dtype=np.int64)
    for i, name in enumerate(names):
        if name.endswith("_flag"):
            have = series.flags[name[:-5]] != ""
        elif name == "status":
            have = series.status != "" if len(series.status) else np.zeros(len(series), bool)
        else:
            have = np.isfinite(series.values[name])
        mask |= np.where(have, 1 << i, 0)
    hour = -((-series.time_ns) // (HOUR * NS)) * HOUR
    offset = series.time_ns - (hour - HOUR) * NS
    out: dict[InputKey, Marks] = {}
    for i, h, off, m in zip(series.index.tolist(), hour.tolist(), offset.tolist(), mask.tolist()):
        marks = out.setdefault(InputKey(kind, series.identities[i], h), {})
        marks[off] = marks.get(off, 0) | m
    return out


def split(seen: Marks, found: Marks) -> tuple[Marks, Marks]:
    """(found, missing) parts of `seen` marks given what InfluxDB holds.

    A mask of 0 (a journal written before masks existed) asks only for the time.
    """
    got: Marks = {}
    missing: Marks = {}
    for off, want in seen.items():
        have = found.get(off)
        if have is None:
            missing[off] = want
            continue
        if want == 0:
            got[off] = 0
            continue
        if want & have:
            got[off] = want & have
        if want & ~have:
            missing[off] = want & ~have
    return got, missing


def count(marks: Marks) -> int:
    """How many (time, field) pairs `marks` holds (a bare time counts one)."""
    return sum(max(1, m.bit_count()) for m in marks.values())
