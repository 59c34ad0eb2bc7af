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
