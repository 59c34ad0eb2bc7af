"""A decoded reading, the unit every decoder produces and the writer stores.

Kept as a plain slotted dataclass (not a pydantic model): pydantic validates the
payload once at the edge, and after that a reading is trusted data on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain, compress, repeat
from operator import mod

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
def _template(series_key: str, names: tuple[str, ...], flag_names: tuple[str, ...], status: str | None) -> str:
    """`stack,outlet=O1 so2=%s,nox=%s,so2_flag="%s",status="running" %d`: one point as one
    %-format, its literal parts built as `to_line` builds them."""
    fields = ",".join([f"{name}=%s" for name in _escape_pct(names)])
    if flag_names:
        fields += "," + ",".join([f'{name}_flag="%s"' for name in _escape_pct(flag_names)])
    if status is not None:
        fields += f',status="{_escape_str(status)}"'.replace("%", "%%")
    return f"{series_key.replace('%', '%%')}{fields} %d"


def _escape_pct(names: tuple[str, ...]) -> list[str]:
    return [name.replace("%", "%%") for name in names]


_TEXT_MAX = 200_000


class _FloatText(dict[float, str]):
    """`repr` of floats, remembered: float repr (shortest round-trip digits) is most of the
    cost of a line, and readings repeat values (a few decimals in a physical range), so a
    dict lookup replaces most of them. Zeros are not kept (0.0 == -0.0 as keys, and their
    texts differ), nor NaN (never equal to itself); the dict is emptied when full."""

    def __missing__(self, value: float) -> str:
        text = repr(value)
        if value != 0 and value == value:
            if len(self) >= _TEXT_MAX:
                self.clear()
            self[value] = text
        return text


class _FlagText(dict[str, str]):
    """A flag as the text of a line-protocol string field (`_escape_str`), remembered:
    flags are a few letters."""

    def __missing__(self, flag: str) -> str:
        if len(self) >= _TEXT_MAX:
            self.clear()
        text = self[flag] = _escape_str(flag)
        return text


_float_text = _FloatText()
_flag_text = _FlagText()


class Rows:
    """A message's readings as parallel columns, before (and mostly instead of) `Reading`
    objects: ingest needs only their line protocol, built here straight from the decoded
    payload; `readings()` builds the objects for the consumers that want them."""

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
        """Exactly `[to_line(r) for r in self.readings()]`, without the objects. Each point is
        one %-format of a template cached per (field names, flag names, status), with each
        value's `repr` (as in to_line) mostly looked up. The readings of a batch usually share
        their field names and status: then the whole message is formatted by one chain of
        C iterators, no Python code per reading, and only points with flags are formatted
        again, alone. The values are floats (as the JSON decoder makes them): an int would
        take the text of an equal float."""
        times, values, statuses = self.times, self.values, self.statuses
        if not times:
            return []
        key = _series_key(self.measurement, self.identity)
        n = len(times)
        if n == 1 and not self.flags[0]:  # most messages: one reading (_line, inlined)
            v = values[0]
            return [_template(key, tuple(v), (), statuses[0]) % (*map(_float_text.__getitem__, v.values()), times[0])]
        names = tuple(values[0])
        if statuses.count(statuses[0]) == n and list(map(tuple, values)).count(names) == n:
            template = _template(key, names, (), statuses[0])
            texts = map(_float_text.__getitem__, chain.from_iterable(map(dict.values, values)))
            # zip takes len(names) texts, then the time, per point: one point's arguments.
            out = list(map(mod, repeat(template, n), zip(*[texts] * len(names), times)))
            flags = self.flags
            if any(flags):  # a few points carry flags too: those are formatted again, with them
                for i in compress(range(n), flags):
                    out[i] = self._line(key, i)
            return out
        return [self._line(key, i) for i in range(n)]

    def _line(self, key: str, i: int) -> str:
        """Point i, alone."""
        v, f, t = self.values[i], self.flags[i], self.times[i]
        if f:
            return (_template(key, tuple(v), tuple(f), self.statuses[i])
                    % (*map(_float_text.__getitem__, v.values()), *map(_flag_text.__getitem__, f.values()), t))
        return _template(key, tuple(v), (), self.statuses[i]) % (*map(_float_text.__getitem__, v.values()), t)
