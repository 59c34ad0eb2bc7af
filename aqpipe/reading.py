"""A decoded reading, the unit every decoder produces and the writer stores.

Kept as a plain slotted dataclass (not a pydantic model): pydantic validates the
payload once at the edge, and after that a reading is trusted data on the hot path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import compress

import msgspec

# Measurement -> identity tag key (DESIGN.md, InfluxDB schema).
IDENTITY_TAG = {"ambient": "station", "stack": "outlet"}


@dataclass(slots=True)
class Reading:
    measurement: str  # "ambient" | "stack"
    identity: str  # station id or outlet id: the only tag
    time_ns: int  # end of the averaging interval, UTC epoch nanoseconds
    values: dict[str, float]
    flags: dict[str, str] = field(default_factory=dict)  # value name -> HJ 212 letter, only when not "N"
    status: str | None = None  # stack plant status (running, stopped, startup, shutdown)


def _escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _escape_str(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


# A field key is escaped as a tag is: commas, equals signs and spaces.
_escape_key = _escape_tag


@lru_cache(maxsize=65536)
def _series_key(measurement: str, identity: str) -> str:
    return f"{measurement},{IDENTITY_TAG[measurement]}={_escape_tag(identity)} "


# Floats are written as msgspec's JSON encoder writes them: the shortest text that reads
# back as the same float (the digits of Python's repr; exponents as `1e-7`, `1e16`), which
# InfluxDB and VictoriaMetrics read as the same float64 (tests/integration/test_float_texts.py).
# It formats a float in about a third of repr's time with no cache to miss, and a whole
# message in one call (Rows.lines).
_encode = msgspec.json.Encoder().encode
_JSON_TO_FIELDS = bytes.maketrans(b":", b"=")  # and the quotes deleted: {"so2":12.5} -> {so2=12.5}
# Value names JSON writes as they are and line protocol takes unescaped: every name in
# pollutants.FIELDS and the names the HJ 212 decoder derives from them (so2_zs, so2_max).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]+")


class _NameIsPlain(dict[str, bool]):
    """Value name -> whether it is a plain name, remembered (names are few)."""

    def __missing__(self, name: str) -> bool:
        if len(self) >= 65536:
            self.clear()
        plain = self[name] = _PLAIN_NAME.fullmatch(name) is not None
        return plain


_name_is_plain = _NameIsPlain()


def _fields(values: dict[str, float]) -> str:
    """`so2=12.5,o2=9.1`: a reading's values as line-protocol fields."""
    if all(map(_name_is_plain.__getitem__, values)):
        return _encode(values)[1:-1].translate(_JSON_TO_FIELDS, b'"').decode()
    return ",".join([f"{_escape_key(name)}={_encode(value).decode()}" for name, value in values.items()])


def _extras(flags: dict[str, str], status: str | None) -> str:
    """The string fields after the values: `,so2_flag="D",status="running"`."""
    out = "".join([f',{_escape_key(name)}_flag="{_escape_str(flag)}"' for name, flag in flags.items()])
    if status is not None:
        out += f',status="{_escape_str(status)}"'
    return out


def to_line(reading: Reading) -> str:
    """Format one reading as a line-protocol point: floats as JSON writes them (above),
    flags and status as string fields."""
    return (f"{_series_key(reading.measurement, reading.identity)}{_fields(reading.values)}"
            f"{_extras(reading.flags, reading.status)} {reading.time_ns}")


@lru_cache(maxsize=1024)
def _status_field(status: str | None) -> str | None:
    """`,status="running"` ("" for none); None for a status `Rows.lines` cannot put in its
    JSON text safely (the decoders accept four statuses, all plain words)."""
    if status is None:
        return ""
    return _extras({}, status) if _PLAIN_NAME.fullmatch(status) else None


class Rows:
    """A message's readings as parallel columns, before (and mostly instead of) `Reading`
    objects: ingest needs only their line protocol, built here straight from the decoded
    payload; `readings()` builds the objects for the consumers that want them.

    The value names are names of `pollutants.FIELDS[measurement]`: the JSON decoder makes
    Rows only of readings whose names it checked (its plain schema, or `rows_of`)."""

    __slots__ = ("measurement", "identity", "times", "values", "flags", "statuses", "finite")

    def __init__(self, measurement: str, identity: str, times: list[int], values: list[dict[str, float]],
                 flags: list[dict[str, str]], statuses: list[str | None], finite: bool = False) -> None:
        self.measurement = measurement
        self.identity = identity
        self.times = times  # UTC epoch ns
        self.values = values
        self.flags = flags  # per reading: value name -> flag, only when not "N"
        self.statuses = statuses
        self.finite = finite  # every value is known to be finite (the decoder's schema said so)

    def __len__(self) -> int:
        return len(self.times)

    def readings(self) -> list[Reading]:
        m, i = self.measurement, self.identity
        # dict(f): a reading's flags are its own (rows may share one empty dict).
        return [Reading(m, i, t, v, dict(f), s) for t, v, f, s in zip(self.times, self.values, self.flags, self.statuses)]

    def lines(self) -> list[str]:
        """Exactly `[to_line(r) for r in self.readings()]`, without the objects. When the
        readings share their status, the message's values and times are encoded as one
        JSON text, `[[{"so2":12.5,"o2":9.1},1795500000000000000],[{...`, which a few C
        passes turn into the points: quotes deleted, `:` -> `=`, `},` -> the status field
        and a space, split at `],[{`. Names are plain (class docstring) and values are
        numbers, so those marks occur nowhere else. Points with flags are then formatted
        again, alone."""
        times, statuses = self.times, self.statuses
        n = len(times)
        if not n:
            return []
        key = _series_key(self.measurement, self.identity)
        status = _status_field(statuses[0])
        if status is None or statuses.count(statuses[0]) != n:
            return [self._line(key, i) for i in range(n)]
        text = _encode(list(zip(self.values, times)))[3:-2].translate(_JSON_TO_FIELDS, b'"').decode()
        out = list(map(key.__add__, text.replace("},", status + " ").split("],[{")))
        flags = self.flags
        if any(flags):  # a few points carry flags too: those are formatted again, with them
            for i in compress(range(n), flags):
                out[i] = self._line(key, i)
        return out

    def _line(self, key: str, i: int) -> str:
        """Point i, alone."""
        return f"{key}{_fields(self.values[i])}{_extras(self.flags[i], self.statuses[i])} {self.times[i]}"
