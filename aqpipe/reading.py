"""A decoded reading, the unit every decoder produces and the writer stores.

Kept as a plain slotted dataclass (not a pydantic model): pydantic validates the
payload once at the edge, and after that a reading is trusted data on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

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


@lru_cache(maxsize=65536)
def _series_key(measurement: str, identity: str) -> str:
    return f"{measurement},{IDENTITY_TAG[measurement]}={_escape_tag(identity)} "


def to_line(reading: Reading) -> str:
    """Format one reading as a line-protocol point: floats as `repr`, flags as string fields."""
    fields = ",".join([f"{name}={value!r}" for name, value in reading.values.items()])
    if reading.flags:
        fields += "," + ",".join([f'{name}_flag="{_escape_str(flag)}"' for name, flag in reading.flags.items()])
    if reading.status is not None:
        fields += f',status="{_escape_str(reading.status)}"'
    return f"{_series_key(reading.measurement, reading.identity)}{fields} {reading.time_ns}"


@lru_cache(maxsize=65536)
def _template(series_key: str, names: tuple[str, ...], status: str | None) -> str:
    """`stack,outlet=O1 so2=%s,nox=%s,status="running" %d`: one %-format per point."""
    fields = ",".join([f"{name.replace('%', '%%')}=%s" for name in names])
    if status is not None:
        fields += f',status="{_escape_str(status)}"'.replace("%", "%%")
    return f"{series_key.replace('%', '%%')}{fields} %d"


_FLOAT_TEXT_MAX = 200_000


class _FloatText(dict[float, str]):
    """`repr` of floats, remembered: float repr (shortest round-trip digits) is most of the
    cost of a line, and readings repeat values (a few decimals in a physical range), so a
    dict lookup replaces most of them. Zeros are not kept (0.0 == -0.0 as keys, and their
    texts differ), nor NaN (never equal to itself); the dict is emptied when full."""

    def __missing__(self, value: float) -> str:
        text = repr(value)
        if value != 0 and value == value:
            if len(self) >= _FLOAT_TEXT_MAX:
                self.clear()
            self[value] = text
        return text


_float_text = _FloatText()


class Rows:
    """A message's readings as parallel columns, before (and mostly instead of) `Reading`
    objects: ingest needs only their line protocol, built here straight from the decoded
    payload; `readings()` builds the objects for the consumers that want them."""

    __slots__ = ("measurement", "identity", "times", "values", "flags", "statuses")

    def __init__(self, measurement: str, identity: str, times: list[int], values: list[dict[str, float]],
                 flags: list[dict[str, str]], statuses: list[str | None]) -> None:
        self.measurement = measurement
        self.identity = identity
        self.times = times  # UTC epoch ns
        self.values = values
        self.flags = flags  # per reading: value name -> flag, only when not "N"
        self.statuses = statuses

    def __len__(self) -> int:
        return len(self.times)

    def readings(self) -> list[Reading]:
        m, i = self.measurement, self.identity
        # dict(f): a reading's flags are its own (rows may share one empty dict).
        return [Reading(m, i, t, v, dict(f), s) for t, v, f, s in zip(self.times, self.values, self.flags, self.statuses)]

    def lines(self) -> list[str]:
        """Exactly `[to_line(r) for r in self.readings()]`, without the objects. The readings
        of a message usually share their field names, so one %-template per set of names
        formats a whole point in C, with each value's `repr` (as in to_line) mostly looked up.
        The values are floats (as the JSON decoder makes them): an int would take the text
        of an equal float."""
        key = _series_key(self.measurement, self.identity)
        text = _float_text.__getitem__
        out: list[str] = []
        names: tuple[str, ...] | None = None
        template, last_status = "", None
        for t, values, flags, status in zip(self.times, self.values, self.flags, self.statuses):
            if flags:
                out.append(to_line(Reading(self.measurement, self.identity, t, values, flags, status)))
                continue
            if names is None or status != last_status or len(values) != len(names) or tuple(values) != names:
                names, last_status = tuple(values), status
                template = _template(key, names, status)
            out.append(template % (*map(text, values.values()), t))
        return out
