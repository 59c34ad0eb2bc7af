"""Checks every reading passes before it is stored, whatever format it came in."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from itertools import chain
from operator import ge

from aqpipe import dataflags
from aqpipe.errors import Reason, RejectedReading
from aqpipe.pollutants import FIELDS, NEGATIVE_NOISE, NON_NEGATIVE
from aqpipe.reading import Reading, Rows

NS = 1_000_000_000
# HJ 212 data flags (aqpipe.dataflags). A letter not in the table is kept (HJ 212-2025
# may have added some; the aggregator counts it invalid); a value not shaped like a flag
# is a schema error.
FLAGS = frozenset(dataflags.DATA_FLAGS)


class Validator:
    """Time window and physical-range checks, shared by the JSON and HJ 212 decoders."""

    def __init__(self, future_tolerance_s: float = 300, retention_days: float = 400,
                 negative_noise: Mapping[str, float] | None = None) -> None:
        self.future_ns = int(future_tolerance_s * NS)
        self.retention_ns = int(retention_days * 86400 * NS)
        # Canonical unit -> how far below zero a concentration may read (ingest.negative_noise*).
        self.negative_noise = dict(NEGATIVE_NOISE if negative_noise is None else negative_noise)
        self._bounds: dict[str, _Bounds] = {}  # measurement -> value name -> lower bound

    def check(self, reading: Reading, now_ns: int) -> None:
        self._check(reading.measurement, reading.time_ns, reading.values, reading.flags, now_ns)

    def check_rows(self, rows: Rows, now_ns: int) -> None:
        """`check` for every reading of a message, in order, with the same first rejection;
        done in bulk first (one pass over all times, values and flags, in C), and reading by
        reading only if that finds something to reject."""
        times, values = rows.times, rows.values
        if len(times) == 1:  # one reading: nothing to gain from the bulk pass
            self._check(rows.measurement, times[0], values[0], rows.flags[0], now_ns)
            return
        if (min(times) >= now_ns - self.retention_ns and max(times) <= now_ns + self.future_ns and all(values)
                and (rows.finite or math.isfinite(sum(map(sum, map(dict.values, values)))))
                and (min(map(min, map(dict.values, values))) >= 0 or self._above_bounds(rows.measurement, values))
                and (not any(rows.flags) or FLAGS.issuperset([f for flags in rows.flags for f in flags.values()]))):
            return
        for t, v, f in zip(times, values, rows.flags):
            self._check(rows.measurement, t, v, f, now_ns)

    def _above_bounds(self, measurement: str, values: list[dict[str, float]]) -> bool:
        """No value below its lower bound (`_check_values` would let every one pass), checked
        in one pass: a message with negative values that may be negative (temperatures,
        concentrations within sensor noise) stays on the bulk path. Values known finite."""
        bounds = self._bounds.get(measurement)
        if bounds is None:
            bounds = self._bounds[measurement] = _Bounds(self._lower_bound, measurement)
        return all(map(ge, chain.from_iterable(map(dict.values, values)),
                       map(bounds.__getitem__, chain.from_iterable(values))))

    def _lower_bound(self, measurement: str, name: str) -> float:
        """The least value of `name` that `_check_values` accepts."""
        base = _base_name(name)
        noise = self.negative_noise.get(FIELDS[measurement].get(base, ""))
        if base in NON_NEGATIVE:
            return 0.0
        return -noise if noise is not None else -math.inf

    def _check(self, measurement: str, time_ns: int, values: dict[str, float], flags: dict[str, str], now_ns: int) -> None:
        if time_ns > now_ns + self.future_ns:
            ahead = (time_ns - now_ns) / NS
            raise RejectedReading(Reason.FUTURE, f"time is {ahead:.0f} s in the future (tolerance {self.future_ns // NS} s)")
        if time_ns < now_ns - self.retention_ns:
            days = (now_ns - time_ns) / NS / 86400
            raise RejectedReading(Reason.TOO_OLD, f"time is {days:.0f} days old (retention {self.retention_ns // NS // 86400} days)")
        if not values:
            raise RejectedReading(Reason.SCHEMA, "no values")
        numbers = values.values()
        # Checked in bulk first: a finite sum proves every value finite.
        if not (math.isfinite(sum(numbers)) and (min(numbers) >= 0 or self._above_bounds(measurement, [values]))):
            self._check_values(measurement, values)
        if flags and not FLAGS.issuperset(flags.values()):
            for name, flag in flags.items():
                if not dataflags.is_flag(flag):
                    raise RejectedReading(Reason.SCHEMA, f"flag {flag!r} of {name} is not shaped like an HJ 212 "
                                                         f"data flag (a letter such as {''.join(sorted(FLAGS))})")

    def _check_values(self, measurement: str, values: dict[str, float]) -> None:
        units = FIELDS[measurement]
        for name, value in values.items():
            if not math.isfinite(value):
                raise RejectedReading(Reason.NOT_FINITE, f"{name} is {value}")
            if value < 0:
                base = _base_name(name)
                noise = self.negative_noise.get(units.get(base, ""))
                if noise is not None and value < -noise:
                    raise RejectedReading(Reason.NEGATIVE, f"{name} = {value} is below -{noise} (sensor noise)")
                if base in NON_NEGATIVE:
                    raise RejectedReading(Reason.NEGATIVE, f"{name} = {value} cannot be negative")


class _Bounds(dict[str, float]):
    """Value name -> its lower bound, for one measurement, filled as names are met."""

    def __init__(self, bound: Callable[[str, str], float], measurement: str) -> None:
        super().__init__()
        self._bound, self._measurement = bound, measurement

    def __missing__(self, name: str) -> float:
        value = self[name] = self._bound(self._measurement, name)
        return value


def _base_name(field: str) -> str:
    """`so2_zs_max` -> `so2`: derived HJ 212 fields share their pollutant's unit."""
    return field.split("_", 1)[0]
