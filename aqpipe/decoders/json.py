"""JSON readings on `aq/v1/ambient/{station}` and `aq/v1/stack/{outlet}` (DESIGN.md, Payloads)."""

from __future__ import annotations

import math
from itertools import chain, compress, repeat
from operator import itemgetter, mul
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import NotRequired, TypedDict

from aqpipe.errors import Reason, RejectedReading
from aqpipe.pollutants import FIELDS, UnitError, conversion_factor
from aqpipe.reading import IDENTITY_TAG, Reading, Rows

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)

# float: pydantic turns JSON integers into floats, so values need no conversion later.
Number = float
Time = str | float | int


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=True)
    time: Time
    interval_s: int | None = Field(None, gt=0)
    values: dict[str, Number | None]
    flags: dict[str, str] = Field(default_factory=dict)
    units: dict[str, str] = Field(default_factory=dict)
    status: Literal["running", "stopped", "startup", "shutdown"] | None = None


class _Envelope(BaseModel):
    """One reading, or a batch under `readings` sharing the envelope's units."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=True)
    station: str | None = None
    outlet: str | None = None
    time: Time | None = None
    interval_s: int | None = Field(None, gt=0)
    values: dict[str, Number | None] | None = None
    flags: dict[str, str] = Field(default_factory=dict)
    units: dict[str, str] = Field(default_factory=dict)
    status: Literal["running", "stopped", "startup", "shutdown"] | None = None
    readings: list[_Item] | None = None


Status = Literal["running", "stopped", "startup", "shutdown"]
Interval = Annotated[int | None, Field(gt=0)]


# The same schema as _Item / _Envelope, as TypedDicts: pydantic-core validates JSON into
# plain dicts about a third faster than into model instances. Every payload the plain
# schema (`_PLAIN`, below) refuses is parsed with these; only one they refuse too is
# parsed again with the models, which raise
# the error a dead letter reports (the two accept the same payloads: tests/unit/test_rows.py).
@with_config(ConfigDict(extra="forbid", allow_inf_nan=True))
class _ItemDict(TypedDict):
    time: Time
    interval_s: NotRequired[Interval]
    values: dict[str, Number | None]
    flags: NotRequired[dict[str, str]]
    units: NotRequired[dict[str, str]]
    status: NotRequired[Status | None]


@with_config(ConfigDict(extra="forbid", allow_inf_nan=True))
class _EnvelopeDict(TypedDict):
    station: NotRequired[str | None]
    outlet: NotRequired[str | None]
    time: NotRequired[Time | None]
    interval_s: NotRequired[Interval]
    values: NotRequired[dict[str, Number | None] | None]
    flags: NotRequired[dict[str, str]]
    units: NotRequired[dict[str, str]]
    status: NotRequired[Status | None]
    readings: NotRequired[list[_ItemDict] | None]


_FAST = TypeAdapter(_EnvelopeDict)
_TIME, _VALUES = itemgetter("time"), itemgetter("values")
_NONE: dict[str, str] = {}  # read only: the flags or units of a payload that gives none


def _plain_decoder(measurement: str) -> msgspec.json.Decoder:
    """The plain payloads of one measurement, as a msgspec schema: `_EnvelopeDict` narrowed to
    what needs nothing dropped, converted or checked for finiteness (known value names,
    numbers only: no nulls, no NaN or infinity, which msgspec refuses as "out of range"; no
    units; no other identity key; `status` only on stack). msgspec parses and checks it in C,
    about twice as fast as pydantic-core (bench/README.md, "Ingest hot path"), into structs
    whose absent optional keys are None. A payload it refuses goes the general way
    (`parse_envelope`), which rejects or decodes it exactly as if this schema did not exist:
    tests/unit/test_rows.py holds the two ways to that, on payloads and on raw JSON texts."""
    values = dict[Literal[tuple(FIELDS[measurement])], float]  # type: ignore[misc]
    interval = Annotated[int, msgspec.Meta(gt=0)] | None
    no_units = Annotated[dict[str, str], msgspec.Meta(max_length=0)]
    status = [("status", Status | None, None)] if measurement == "stack" else []
    name = f"_Plain{measurement.title()}"
    # A default of None on a field whose type has no None: absent is allowed, null is refused.
    item = msgspec.defstruct(f"{name}Item", [
        ("time", Time), ("values", values), ("interval_s", interval, None), ("flags", dict[str, str], None),
        ("units", no_units, None), *status], forbid_unknown_fields=True, kw_only=True)
    envelope = msgspec.defstruct(name, [
        (IDENTITY_TAG[measurement], str), ("time", Time | None, None), ("interval_s", interval, None),
        ("values", values, None), ("flags", dict[str, str], None), ("units", no_units, None), *status,
        ("readings", list[item], None)], forbid_unknown_fields=True, kw_only=True)  # type: ignore[valid-type]
    return msgspec.json.Decoder(envelope)


_PLAIN = {measurement: _plain_decoder(measurement) for measurement in FIELDS}


def parse_envelope(text: str) -> dict[str, Any]:
    """The payload as validated dicts (absent optional keys absent); RejectedReading for
    a payload that is not JSON or not the schema, with the models' description of why."""
    try:
        return _FAST.validate_json(text)
    except ValidationError:
        pass
    try:
        # pydantic-core parses and validates in one pass: no intermediate Python dicts.
        return _Envelope.model_validate_json(text).model_dump()
    except ValidationError as e:
        errors = e.errors()
        if errors and errors[0]["type"] == "json_invalid":
            raise RejectedReading(Reason.NOT_JSON, errors[0]["msg"]) from None
        raise RejectedReading(Reason.SCHEMA, _describe(e)) from None


def decode(measurement: str, identity: str, payload: bytes) -> list[Reading]:
    """Decode one MQTT payload into readings; raises RejectedReading for the whole message."""
    decoded = decode_rows(measurement, identity, payload)
    return decoded.readings() if isinstance(decoded, Rows) else decoded


def decode_rows(measurement: str, identity: str, payload: bytes) -> Rows | list[Reading]:
    """`decode`, without building `Reading` objects in the common case (known value names,
    no nulls, no units: nothing to drop or convert), where the payload's own dicts become
    the rows; raises the same RejectedReading, for the same first fault, as `decode`."""
    try:
        env = _PLAIN[measurement].decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError):
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RejectedReading(Reason.NOT_UTF8, f"byte {e.start}: {e.reason}") from None
        return rows_of(measurement, identity, parse_envelope(text))
    return plain_rows(measurement, identity, env)


def plain_rows(measurement: str, identity: str, env: Any) -> Rows:
    """The readings of a payload the plain schema (`_PLAIN`) accepted: `rows_of`, with the
    checks that schema did already (known names, finite numbers, no units, one identity
    key, no ambient status) left out."""
    claimed = getattr(env, IDENTITY_TAG[measurement])
    if claimed != identity:
        _mismatch(measurement, identity, claimed)
    items = env.readings
    if items is not None:
        if env.values is not None or env.time is not None:
            raise RejectedReading(Reason.SCHEMA, _BATCH_AND_SINGLE)
        if not items:
            raise RejectedReading(Reason.SCHEMA, _EMPTY_BATCH)
        statuses = [None] * len(items) if measurement == "ambient" else [i.status for i in items]
        return _batch(measurement, identity, [i.time for i in items], [i.values for i in items],
                      [i.flags for i in items], statuses, finite=True)
    values, when = env.values, env.time
    if values is None or when is None:
        raise RejectedReading(Reason.SCHEMA, _NO_READING)
    status = env.status if measurement == "stack" else None
    return Rows(measurement, identity, [parse_time(when)], [values], [_flags(env.flags or _NONE, values)], [status], True)


_BATCH_AND_SINGLE = "a batch has 'readings' and no top-level 'time'/'values'"
_EMPTY_BATCH = "'readings' is empty"
_NO_READING = "a reading needs 'time' and 'values' (or a 'readings' list)"


def _mismatch(measurement: str, identity: str, claimed: str) -> None:
    id_key = IDENTITY_TAG[measurement]
    raise RejectedReading(Reason.IDENTITY_MISMATCH, f"payload {id_key} {claimed!r} on the topic of {identity!r}")


def rows_of(measurement: str, identity: str, env: dict[str, Any]) -> Rows | list[Reading]:
    """The readings of a payload the general schema (`parse_envelope`) accepted."""
    get = env.get

    id_key = IDENTITY_TAG[measurement]
    other_key = "outlet" if id_key == "station" else "station"
    claimed = get(id_key)
    if get(other_key) is not None:
        raise RejectedReading(Reason.SCHEMA, f"'{other_key}' payload on a {measurement} topic")
    if claimed is None:
        raise RejectedReading(Reason.SCHEMA, f"missing '{id_key}'")
    if claimed != identity:
        _mismatch(measurement, identity, claimed)
    items = get("readings")
    if measurement == "ambient" and (get("status") is not None or any([i.get("status") for i in items or ()])):
        raise RejectedReading(Reason.SCHEMA, "'status' is for stack outlets")

    known = FIELDS[measurement]
    env_units = get("units") or _NONE
    if items is not None:
        if get("values") is not None or get("time") is not None:
            raise RejectedReading(Reason.SCHEMA, _BATCH_AND_SINGLE)
        if not items:
            raise RejectedReading(Reason.SCHEMA, _EMPTY_BATCH)
        values = list(map(_VALUES, items))
        # All plain after all (the plain schema's checks, over the whole batch at once, in C).
        if (not env_units and not any([i.get("units") for i in items])
                and known.keys() >= set(chain.from_iterable(values))
                and None not in chain.from_iterable(map(dict.values, values))):
            return _batch(measurement, identity, list(map(_TIME, items)), values,
                          list(map(dict.get, items, repeat("flags"))), list(map(dict.get, items, repeat("status"))),
                          finite=False)
        return [_reading(measurement, identity, i["time"], i["values"], i.get("flags") or _NONE, i.get("status"),
                         {**env_units, **(i.get("units") or _NONE)}) for i in items]
    values, when = get("values"), get("time")
    if values is None or when is None:
        raise RejectedReading(Reason.SCHEMA, _NO_READING)
    flags = get("flags") or _NONE
    if not env_units and _plain(known, values):
        return Rows(measurement, identity, [parse_time(when)], [values], [_flags(flags, values)], [get("status")])
    return [_reading(measurement, identity, when, values, flags, get("status"), env_units)]


def _batch(measurement: str, identity: str, raw_times: list[Any], values: list[dict[str, float]],
           item_flags: list[dict[str, str] | None], statuses: list[str | None], finite: bool) -> Rows:
    """A batch of plain readings as Rows; raises the first fault as `_reading` would find it,
    reading by reading, time then flags."""
    n = len(raw_times)
    try:
        times = _times(raw_times)
    except RejectedReading:
        for when, f, v in zip(raw_times, item_flags, values):
            parse_time(when)
            _flags(f or _NONE, v)
        raise
    flags = [_NONE] * n
    for k in compress(range(n), item_flags):  # times are good: the first fault is in the flags
        flags[k] = _flags(item_flags[k], values[k])  # type: ignore[arg-type]
    return Rows(measurement, identity, times, values, flags, statuses, finite)


def _plain(known: dict[str, str], values: dict[str, float | None]) -> bool:
    """Stored as sent: known names, no nulls. Finite and range checks are the Validator's,
    which every decoded reading passes through."""
    return known.keys() >= values.keys() and None not in values.values()


def _reading(measurement: str, identity: str, time: Time, item_values: dict[str, float | None], item_flags: dict[str, str],
             status: str | None, units: dict[str, str]) -> Reading:
    """One reading of a message that is not all plain: per reading, as the plain ones are
    not checked for finite values here (the Validator does) and the others are."""
    known = FIELDS[measurement]
    if not units and _plain(known, item_values):
        return Reading(measurement, identity, parse_time(time), item_values, _flags(item_flags, item_values), status)  # type: ignore[arg-type]
    values = {}
    for name, value in item_values.items():
        if name not in known:
            raise RejectedReading(Reason.UNKNOWN_POLLUTANT, f"{name!r} is not a {measurement} value (known: {', '.join(known)})")
        if value is None:  # an explicit null: not measured this interval
            continue
        if not math.isfinite(value):
            raise RejectedReading(Reason.NOT_FINITE, f"{name} is {value}")
        if name in units:
            try:
                value *= conversion_factor(measurement, name, units[name])
            except UnitError as e:
                raise RejectedReading(Reason.UNKNOWN_UNIT, str(e)) from None
        values[name] = value
    for name in units:
        if name not in known:
            raise RejectedReading(Reason.UNKNOWN_POLLUTANT, f"unit given for unknown value {name!r}")
    return Reading(measurement, identity, parse_time(time), values, _flags(item_flags, item_values), status)


def _flags(flags: dict[str, str], values: dict[str, float | None]) -> dict[str, str]:
    if not flags:
        return {}
    out = {}
    for name, flag in flags.items():
        if name not in values:
            raise RejectedReading(Reason.SCHEMA, f"flag for {name!r}, which has no value")
        if flag != "N":
            out[name] = flag
    return out


_NS = 1_000_000_000


def _times(times: list[Any]) -> list[int]:
    """`parse_time` of each, in order (so the first bad one raises); epoch seconds in C."""
    kinds = set(map(type, times))
    if kinds == {int}:
        return list(map(mul, times, repeat(_NS)))
    if kinds == {str}:  # ISO texts, most of them seen already (the same minutes from every station)
        known = list(map(_iso_ns.get, times))
        if None not in known:
            return known  # type: ignore[return-value]
    return list(map(parse_time, times))


_ISO_MAX = 100_000
_iso_ns: dict[str, int] = {}  # ISO text -> epoch ns: stations report the same minutes


def parse_time(value: Any) -> int:
    """ISO 8601 with offset, or epoch seconds, to UTC epoch nanoseconds."""
    if type(value) is int:
        return value * _NS
    if type(value) is str:
        ns = _iso_ns.get(value)
        if ns is None:
            ns = _parse_iso(value)
            if len(_iso_ns) >= _ISO_MAX:
                _iso_ns.clear()
            _iso_ns[value] = ns
        return ns
    if isinstance(value, bool):
        raise RejectedReading(Reason.SCHEMA, "time must be ISO 8601 or epoch seconds")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise RejectedReading(Reason.NOT_FINITE, f"time is {value}")
        if isinstance(value, int):
            return value * _NS
        return round(value * 1e6) * 1000
    return _parse_iso(value)


def _parse_iso(value: str) -> int:
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise RejectedReading(Reason.SCHEMA, f"time {value!r} is not ISO 8601") from None
    if dt.tzinfo is None:
        raise RejectedReading(Reason.NO_TIMEZONE, f"time {value!r} has no UTC offset (ambiguous)")
    return ((dt - _EPOCH) // _US) * 1000


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    more = e.error_count() - 3
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
