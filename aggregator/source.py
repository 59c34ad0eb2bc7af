"""Raw readings back out of InfluxDB (InfluxQL), as flat numpy arrays.

InfluxDB is the source of truth: the aggregator never computes from what it saw on MQTT,
only from what ingest stored, so a redelivered or late reading changes a rollup exactly
as much as it changed the stored data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from aggregator.keys import DAY, HOUR, InputKey
from aqpipe.influx import InfluxQL, PartialResultError
from aqpipe.reading import IDENTITY_TAG

# Fields the rollups read (canonical units: µg/m³, CO mg/m³; stack mg/m³, Hg µg/m³, O2 %).
AMBIENT_FIELDS = ("pm25", "pm10", "so2", "no2", "co", "o3")
STACK_POLLUTANTS = ("so2", "nox", "pm", "co", "hg")
STACK_FIELDS = STACK_POLLUTANTS + ("o2",)
# Per query: bounded so a response stays small whatever InfluxDB's max-row-limit.
_IDS_PER_QUERY = 10
_SPAN_PER_QUERY_S = 2 * DAY
NS = 1_000_000_000


@dataclass
class Series:
    """Readings of one measurement: one row per stored point, rows of an identity in time order."""

    identities: list[str]
    index: NDArray[np.int64]  # row -> position in `identities`
    time_ns: NDArray[np.int64]
    values: dict[str, NDArray[np.float64]]  # field -> value (NaN: absent)
    flags: dict[str, NDArray[np.object_]]  # field -> HJ 212 flag ("" when none, i.e. N)
    status: NDArray[np.object_] = field(default_factory=lambda: np.array([], dtype=object))  # stack plant status

    def __len__(self) -> int:
        return len(self.time_ns)

    def times_by_hour(self, kind: str) -> dict[InputKey, set[int]]:
        """Reading times present, as `seen` offsets (ns into the hour), per identity and hour."""
        out: dict[InputKey, set[int]] = {}
        hour = -((-self.time_ns) // (HOUR * NS)) * HOUR
        offset = self.time_ns - (hour - HOUR) * NS
        for i, h, off in zip(self.index.tolist(), hour.tolist(), offset.tolist()):
            out.setdefault(InputKey(kind, self.identities[i], h), set()).add(off)
        return out


def _quote(identity: str) -> str:
    return "'" + identity.replace("\\", "\\\\").replace("'", "\\'") + "'"


def identities(q: InfluxQL, measurement: str) -> list[str]:
    """Every identity (station / outlet) that has data in `measurement`."""
    tag = IDENTITY_TAG[measurement]
    rows = q.rows(f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "{tag}"')
    return sorted({r["value"] for r in rows if "value" in r})


def _paged(q: InfluxQL, head: str, tail: str, start_s: int, end_s: int) -> list[dict]:
    """Rows with time in (start_s, end_s]; a span InfluxDB answers only partially (its
    max-row-limit) is asked again in halves, down to an hour, never computed from a cut."""
    try:
        return q.rows(f"{head}time > {start_s * NS} AND time <= {end_s * NS}{tail}")
    except PartialResultError:
        if end_s - start_s <= HOUR:
            raise
    mid = start_s + max(HOUR, (end_s - start_s) // 2 // HOUR * HOUR)
    return _paged(q, head, tail, start_s, mid) + _paged(q, head, tail, mid, end_s)


def fetch(q: InfluxQL, measurement: str, ids: list[str] | None, start_s: int, end_s: int) -> Series:
    """Readings with time in (start_s, end_s] for `ids` (None: every identity found)."""
    tag = IDENTITY_TAG[measurement]
    names = AMBIENT_FIELDS if measurement == "ambient" else STACK_FIELDS
    cols = ", ".join([f'"{n}"' for n in names] + [f'"{n}_flag"' for n in names]
                     + (['"status"'] if measurement == "stack" else []))
    chunks: list[list[str] | None] = (
        [None] if ids is None else [ids[k:k + _IDS_PER_QUERY] for k in range(0, len(ids), _IDS_PER_QUERY)])
    rows: list[dict] = []
    for chunk in chunks:
        where_id = "" if chunk is None else "(" + " OR ".join(f'"{tag}" = {_quote(i)}' for i in chunk) + ") AND "
        t = start_s
        while t < end_s:
            t_end = min(end_s, t + _SPAN_PER_QUERY_S)
            rows.extend(_paged(q, f'SELECT {cols} FROM "{measurement}" WHERE {where_id}', f' GROUP BY "{tag}"', t, t_end))
            t = t_end
    found = sorted({r[tag] for r in rows}) if ids is None else list(ids)
    pos = {name: k for k, name in enumerate(found)}
    rows = [r for r in rows if r.get(tag) in pos]
    rows.sort(key=lambda r: (pos[r[tag]], r["time"]))
    values = {n: np.array([np.nan if r.get(n) is None else float(r[n]) for r in rows], dtype=np.float64)
              for n in names}
    flags = {n: np.array([r.get(f"{n}_flag") or "" for r in rows], dtype=object) for n in names}
    status = np.array([r.get("status") or "" for r in rows], dtype=object)
    return Series(found, np.array([pos[r[tag]] for r in rows], dtype=np.int64),
                  np.array([int(r["time"]) for r in rows], dtype=np.int64), values, flags, status)
