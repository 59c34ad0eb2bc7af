"""Checks every reading passes before it is stored, whatever format it came in."""

from __future__ import annotations

import math
from collections.abc import Mapping

from aqpipe import dataflags
from aqpipe.errors import Reason, RejectedReading
from aqpipe.pollutants import FIELDS, NEGATIVE_NOISE, NON_NEGATIVE
from aqpipe.reading import Reading

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

    def check(self, reading: Reading, now_ns: int) -> None:
        if reading.time_ns > now_ns + self.future_ns:
            ahead = (reading.time_ns - now_ns) / NS
            raise RejectedReading(Reason.FUTURE, f"time is {ahead:.0f} s in the future (tolerance {self.future_ns // NS} s)")
        if reading.time_ns < now_ns - self.retention_ns:
            days = (now_ns - reading.time_ns) / NS / 86400
            raise RejectedReading(Reason.TOO_OLD, f"time is {days:.0f} days old (retention {self.retention_ns // NS // 86400} days)")
        if not reading.values:
            raise RejectedReading(Reason.SCHEMA, "no values")
        values = reading.values.values()
        # Checked in bulk first: a finite sum proves every value finite.
        if not (math.isfinite(sum(values)) and min(values) >= 0):
            self._check_values(reading)
        if reading.flags and not FLAGS.issuperset(reading.flags.values()):
            for name, flag in reading.flags.items():
                if not dataflags.is_flag(flag):
                    raise RejectedReading(Reason.SCHEMA, f"flag {flag!r} of {name} is not shaped like an HJ 212 "
                                                         f"data flag (a letter such as {''.join(sorted(FLAGS))})")

    def _check_values(self, reading: Reading) -> None:
        units = FIELDS[reading.measurement]
        for name, value in reading.values.items():
            if not math.isfinite(value):
                raise RejectedReading(Reason.NOT_FINITE, f"{name} is {value}")
            if value < 0:
                base = _base_name(name)
                noise = self.negative_noise.get(units.get(base, ""))
                if noise is not None and value < -noise:
                    raise RejectedReading(Reason.NEGATIVE, f"{name} = {value} is below -{noise} (sensor noise)")
                if base in NON_NEGATIVE:
                    raise RejectedReading(Reason.NEGATIVE, f"{name} = {value} cannot be negative")


def _base_name(field: str) -> str:
    """`so2_zs_max` -> `so2`: derived HJ 212 fields share their pollutant's unit."""
    return field.split("_", 1)[0]
