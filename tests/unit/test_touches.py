"""The cheap "touches" pass agrees with the full decoder: same identities, times and fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aqpipe.decode import MessageDecoder
from aqpipe.decoders.hj212 import build_frame
from aqpipe.decoders.touches import Touch, fields_of, touches
from aqpipe.errors import RejectedReading
from aqpipe.pollutants import AMBIENT_FIELDS, STACK_FIELDS
from aqpipe.registry import Registry
from aqpipe.validate import Validator

DATA = Path(__file__).resolve().parent.parent / "data"
JSON_GOOD = sorted((DATA / "json" / "good").glob("*.json"))
JSON_BAD = [json.loads(line) for line in (DATA / "json" / "bad" / "cases.jsonl").read_text().splitlines() if line.strip()]
HJ_GOOD = sorted(p for p in (DATA / "hj212" / "good").iterdir() if p.is_dir())
HJ_BAD = sorted(p for p in (DATA / "hj212" / "bad").iterdir() if p.is_dir())
REGISTRY = Registry.load(DATA / "hj212" / "registry")
NOW_NS = 1795500300 * 10**9 + 60 * 10**9
MAX = 256 * 1024
# Validation of times and values is the decoder's, not the pass's: a lenient validator
# lets the comparison cover every example the decoder can turn into readings.
FULL = MessageDecoder("aq/v1", REGISTRY, Validator(future_tolerance_s=10**9, retention_days=10**5), MAX)


def _full(topic: str, payload: bytes) -> list[Touch]:
    return [Touch(r.measurement, r.identity, r.time_ns, fields_of(r)) for r in FULL.decode(topic, payload, NOW_NS)]


def _cheap(topic: str, payload: bytes) -> list[Touch]:
    return touches(topic, payload, "aq/v1", REGISTRY, MAX)


def _json_payload(case: dict) -> bytes:
    if "payload_hex" in case:
        return bytes.fromhex(case["payload_hex"])
    p = case["payload"]
    return (p if isinstance(p, str) else json.dumps(p)).encode("utf-8")


@pytest.mark.parametrize("path", JSON_GOOD, ids=[p.stem for p in JSON_GOOD])
def test_json_example_touches_what_the_decoder_decodes(path):
    case = json.loads(path.read_text())
    full = _full(case["topic"], _json_payload(case))
    assert full and _cheap(case["topic"], _json_payload(case)) == full


@pytest.mark.parametrize("case", HJ_GOOD, ids=[p.name for p in HJ_GOOD])
def test_hj212_example_touches_what_the_decoder_decodes(case):
    topic = json.loads((case / "expected.json").read_text())["topic"]
    payload = (case / "input.txt").read_bytes()
    topic = f"aq/v1/hj212/{topic or 'none'}"
    try:
        full = _full(topic, payload)
    except RejectedReading as e:  # a non-data frame for another MN: both must reject alike
        with pytest.raises(RejectedReading) as cheap:
            _cheap(topic, payload)
        assert cheap.value.reason == e.reason
        return
    assert _cheap(topic, payload) == full


def test_hj212_multi_packet_frames_sharing_a_data_time_touch_their_own_fields():
    """HJ 212 splits a big upload into packets with one DataTime: each touches only its fields."""
    mn = "91320500MA1X2Y3Z4W000001"
    head = f"QN=20261124140500123;ST=31;CN=2051;PW=x;MN={mn};Flag=5;PNUM=2;PNO=%d;CP=&&DataTime=20261124140500;"
    one = build_frame(head % 1 + "a21026-Avg=28.4,a21026-Flag=N&&").encode()
    two = build_frame(head % 2 + "a19001-Avg=12.3,a19001-Flag=D&&").encode()
    a, b = _cheap(f"aq/v1/hj212/{mn}", one), _cheap(f"aq/v1/hj212/{mn}", two)
    assert a[0].time_ns == b[0].time_ns
    assert (a[0].fields, b[0].fields) == ({"so2"}, {"o2", "o2_flag"})


@pytest.mark.parametrize("case", JSON_BAD, ids=[c["name"] for c in JSON_BAD])
def test_json_bad_example_raises_only_a_typed_error(case):
    """Tolerant (values and units are not checked) but never anything but RejectedReading."""
    try:
        _cheap(case["topic"], _json_payload(case))
    except RejectedReading:
        pass


@pytest.mark.parametrize("case", HJ_BAD, ids=[p.name for p in HJ_BAD])
def test_hj212_bad_example_is_rejected_like_the_decoder_does(case):
    expected = json.loads((case / "expected.json").read_text())
    with pytest.raises(RejectedReading) as e:
        _cheap(f"aq/v1/hj212/{expected['topic']}", (case / "input.txt").read_bytes())
    assert e.value.reason.value == expected["reason"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["ambient/S1", "stack/O1", "hj212/91320500MA1X2Y3Z4W000001"]))
def test_arbitrary_bytes_raise_only_rejected_reading(payload, where):
    try:
        _cheap(f"aq/v1/{where}", payload)
    except RejectedReading:
        pass


json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                           max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["station", "time", "values", "flags", "units", "readings", "status"]),
                       json_values, max_size=6))
def test_arbitrary_json_objects_raise_only_rejected_reading(doc):
    try:
        _cheap("aq/v1/ambient/S1", json.dumps(doc).encode())
    except RejectedReading:
        pass


def _reading(measurement: str):
    names = sorted(AMBIENT_FIELDS if measurement == "ambient" else STACK_FIELDS)
    return st.fixed_dictionaries({
        "time": st.one_of(st.integers(1_700_000_000, 1_800_000_000),
                          st.integers(1_700_000_000, 1_800_000_000).map(lambda t: t + 0.5)),
        "values": st.dictionaries(st.sampled_from(names), st.none() | st.floats(0, 1e4), min_size=1, max_size=5),
    }).flatmap(lambda r: st.fixed_dictionaries({
        **{k: st.just(v) for k, v in r.items()},
        "flags": st.dictionaries(st.sampled_from(sorted(r["values"])), st.sampled_from("NCMDF"), max_size=2),
    }))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["ambient", "stack"]).flatmap(
    lambda m: st.tuples(st.just(m), st.lists(_reading(m), min_size=1, max_size=4),
                        st.sampled_from([None, "running", "stopped"]) if m == "stack" else st.none())))
def test_valid_json_messages_touch_exactly_what_the_decoder_decodes(case):
    measurement, readings, status = case
    key = "station" if measurement == "ambient" else "outlet"
    if status is not None:
        readings = [{**r, "status": status} for r in readings]
    payload = json.dumps({key: "X1", "readings": readings}).encode()
    topic = f"aq/v1/{measurement}/X1"
    try:
        full = _full(topic, payload)
    except RejectedReading:
        return  # e.g. every value null: the decoder rejects (no values); the pass may be lenient
    assert _cheap(topic, payload) == full
