"""What a message touches, without decoding it into readings: identity, reading times, fields.

The aggregator needs only this (which hours and fields a message brings) to know what to
recompute and what to wait for in InfluxDB; inside `aqpipe run` ingest decodes the same
message fully, so a second pydantic decode per message doubled the decode CPU. Here JSON
is parsed once by pydantic-core's parser into plain objects and walked; HJ 212 frames go
through the same `parse_frame` as ingest (a single pass; length and CRC checked, so a
corrupt frame touches nothing, as it stores nothing) and skip building readings.

Tolerant on purpose: values are not range-checked and units are not converted (neither
changes which fields a reading has). Fields are named as ingest stores them: the value
name (`so2`, `so2_zs`), `<name>_flag` for a flag other than N, `status`. Anything that
is not a message ingest could store raises `RejectedReading`, and nothing else.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple

import pydantic_core

from aqpipe import topics
from aqpipe.decoders import hj212
from aqpipe.decoders.json import parse_time
from aqpipe.errors import Reason, RejectedReading
from aqpipe.pollutants import FIELDS
from aqpipe.reading import IDENTITY_TAG, Reading
from aqpipe.registry import Registry

_EPOCH_US = timedelta(microseconds=1)
_STATUSES = frozenset({"running", "stopped", "startup", "shutdown"})
_KNOWN = {measurement: frozenset(names) for measurement, names in FIELDS.items()}
_NS = 1_000_000_000


class Touch(NamedTuple):
    """One reading a message carries: where it would be stored and which fields it sets.

    A NamedTuple, not a dataclass: one is made per reading on the aggregator's MQTT thread.
    """

    measurement: str  # ambient | stack
    identity: str  # station or outlet (for HJ 212: from the registry, by MN)
    time_ns: int  # end of the reading's interval, UTC epoch ns (as stored)
    fields: frozenset[str]


def fields_of(reading: Reading) -> frozenset[str]:
    """The stored field names of a decoded reading (what `Touch.fields` names)."""
    names = set(reading.values)
    names.update(f"{name}_flag" for name in reading.flags)
    if reading.status is not None:
        names.add("status")
    return frozenset(names)


def touches(topic: str, payload: bytes, prefix: str, registry: Registry, max_payload_bytes: int) -> list[Touch]:
    """The readings a message on `topic` carries; RejectedReading if ingest could not store it."""
    where = topics.parse(topic, prefix)
    if where is None:
        raise RejectedReading(Reason.UNKNOWN_TOPIC, f"{topic!r} is not {prefix}/(ambient|stack|hj212)/<id>")
    if len(payload) > max_payload_bytes:
        raise RejectedReading(Reason.OVERSIZE, f"{len(payload)} bytes > {max_payload_bytes}")
    try:
        if where.kind == "hj212":
            return hj212_touches(payload, where.identity, registry)
        return json_touches(where.kind, where.identity, payload)
    except RejectedReading:
        raise
    except Exception as e:  # noqa: BLE001 — a shape we did not foresee is still just a bad message
        raise RejectedReading(Reason.SCHEMA, f"unexpected payload shape: {type(e).__name__}: {e}") from None


# --------------------------------------------------------------------------- JSON

def json_touches(measurement: str, identity: str, payload: bytes) -> list[Touch]:
    """Touches of a JSON payload (DESIGN.md, Payloads) on `aq/v1/{measurement}/{identity}`."""
    try:
        doc = pydantic_core.from_json(payload, allow_inf_nan=True)
    except ValueError as e:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as u:
            raise RejectedReading(Reason.NOT_UTF8, f"byte {u.start}: {u.reason}") from None
        raise RejectedReading(Reason.NOT_JSON, str(e)) from None
    if not isinstance(doc, dict):
        raise RejectedReading(Reason.SCHEMA, "payload is not a JSON object")
    id_key = IDENTITY_TAG[measurement]
    other_key = "outlet" if id_key == "station" else "station"
    if doc.get(other_key) is not None:
        raise RejectedReading(Reason.SCHEMA, f"'{other_key}' payload on a {measurement} topic")
    claimed = doc.get(id_key)
    if claimed is None:
        raise RejectedReading(Reason.SCHEMA, f"missing '{id_key}'")
    if claimed != identity:
        raise RejectedReading(Reason.IDENTITY_MISMATCH, f"payload {id_key} {claimed!r} on the topic of {identity!r}")
    known = _KNOWN[measurement]
    items = doc.get("readings")
    if items is None:
        items = [doc]
    elif not isinstance(items, list) or not items:
        raise RejectedReading(Reason.SCHEMA, "'readings' must be a non-empty list")
    elif "values" in doc or "time" in doc:
        raise RejectedReading(Reason.SCHEMA, "a batch has 'readings' and no top-level 'time'/'values'")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise RejectedReading(Reason.SCHEMA, "a reading is not a JSON object")
        values = item.get("values")
        if not isinstance(values, dict) or "time" not in item or item["time"] is None:
            raise RejectedReading(Reason.SCHEMA, "a reading needs 'time' and 'values'")
        if not known.issuperset(values):
            unknown = sorted(set(values) - known)[0]
            raise RejectedReading(Reason.UNKNOWN_POLLUTANT, f"{unknown!r} is not a {measurement} value")
        # Set operations over the dict's keys run in C: this walk is per reading.
        if None in values.values():  # an explicit null: not measured, not stored
            names = frozenset([name for name, value in values.items() if value is not None])
        else:
            names = frozenset(values)
        flags = item.get("flags")
        status = item.get("status")
        if flags or status is not None:
            names = _with_flags_and_status(measurement, names, flags or {}, status)
        t = item["time"]
        out.append(Touch(measurement, identity, t * _NS if type(t) is int else parse_time(t), names))
    return out


def _with_flags_and_status(measurement: str, names: frozenset[str], flags: object, status: object) -> frozenset[str]:
    if not isinstance(flags, dict):
        raise RejectedReading(Reason.SCHEMA, "'flags' is not an object")
    extra = {f"{name}_flag" for name, flag in flags.items() if flag != "N"}
    if status is not None:
        if measurement != "stack" or status not in _STATUSES:
            raise RejectedReading(Reason.SCHEMA, f"status {status!r} is not a stack plant status")
        extra.add("status")
    return names | extra


# --------------------------------------------------------------------------- HJ 212

def hj212_touches(payload: bytes, topic_mn: str, registry: Registry) -> list[Touch]:
    """Touches of the frames of an `aq/v1/hj212/{mn}` message (data commands only)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RejectedReading(Reason.NOT_UTF8, f"payload is not UTF-8 (byte {e.start})") from None
    pieces = hj212.split_frames(text)
    if not pieces:
        raise hj212.Hj212Error("framing", "message holds no frame")
    out = []
    for piece in pieces:
        touch = _frame_touch(hj212.parse_frame(piece, registry.hj212_keys), topic_mn, registry)
        if touch is not None:
            out.append(touch)
    return out


def _frame_touch(frame: hj212.Frame, topic_mn: str, registry: Registry) -> Touch | None:
    if frame.mn != topic_mn:
        raise RejectedReading(Reason.IDENTITY_MISMATCH, f"frame MN {frame.mn!r} does not match topic MN {topic_mn!r}")
    hj212.check_policy(frame, registry)
    names_of = hj212.field_names(frame)
    if names_of is None:
        return None  # not a data upload: no reading
    device = registry.by_mn(frame.mn)
    if device is None:
        raise RejectedReading(Reason.UNKNOWN_MN, f"MN {frame.mn!r} is not in the station or outlet registry")
    if frame.data_time is None:
        raise hj212.Hj212Error("syntax", f"data command CN={frame.cn} has no DataTime")
    names = set()
    for code, group in frame.values.items():
        suffixes = names_of.get(code)
        if suffixes is None:
            raise RejectedReading(Reason.UNKNOWN_POLLUTANT, f"pollutant code {code!r} is not known")
        for suffix, value in group.items():
            name = suffixes.get(suffix)
            if name is not None:
                names.add(name)
            elif suffix == "Flag":
                if not hj212.is_data_flag(value):
                    raise hj212.Hj212Error("syntax", f"{code}-Flag {str(value)[:8]!r} is not a data flag")
                if value != "N":
                    names.add(hj212.POLLUTANT_FIELDS[code] + "_flag")
            elif suffix not in hj212.IGNORED_SUFFIXES:
                raise hj212.Hj212Error("syntax", f"suffix {suffix[:20]!r} is not expected in CN={frame.cn}")
    if not names:
        return None
    interval_s = hj212.INTERVAL_S_BY_CN[frame.cn]
    if interval_s is None:
        interval_s = registry.minute_data_s(frame.mn)
    end = frame.data_time + timedelta(seconds=interval_s)
    time_ns = (end - hj212.EPOCH) // _EPOCH_US * 1000
    return Touch(device[0], device[1], time_ns, frozenset(names))
