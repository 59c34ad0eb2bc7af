"""JSON payloads: table-driven over tests/data/json (good/*.json expected lines, bad/cases.jsonl reasons)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aqpipe.decode import MessageDecoder
from aqpipe.errors import RejectedReading
from aqpipe.reading import to_line
from aqpipe.registry import Registry
from aqpipe.validate import Validator

DATA = Path(__file__).resolve().parent.parent / "data" / "json"
GOOD = sorted((DATA / "good").glob("*.json"))
BAD = [json.loads(line) for line in (DATA / "bad" / "cases.jsonl").read_text().splitlines() if line.strip()]
NOW_NS = 1795500300 * 10**9 + 60 * 10**9  # a minute after the examples' time


def decoder() -> MessageDecoder:
    return MessageDecoder("aq/v1", Registry.empty(), Validator(), 256 * 1024)


def _payload(case: dict) -> bytes:
    if "payload_hex" in case:
        return bytes.fromhex(case["payload_hex"])
    p = case["payload"]
    return (p if isinstance(p, str) else json.dumps(p)).encode("utf-8")


@pytest.mark.parametrize("path", GOOD, ids=[p.stem for p in GOOD])
def test_good_payload_decodes_to_the_expected_line_protocol(path):
    case = json.loads(path.read_text())
    lines = [to_line(r) for r in decoder().decode(case["topic"], _payload(case), NOW_NS)]
    assert len(lines) == len(case["expected"])
    for got, want in zip(lines, case["expected"]):
        # floats from unit conversion may differ in the last digit: compare field by field
        g_head, g_fields, g_time = got.rsplit(" ", 2)
        w_head, w_fields, w_time = want.rsplit(" ", 2)
        assert (g_head, g_time) == (w_head, w_time)
        g = dict(f.split("=", 1) for f in g_fields.split(","))
        w = dict(f.split("=", 1) for f in w_fields.split(","))
        assert g.keys() == w.keys()
        for k in w:
            if w[k].startswith('"'):
                assert g[k] == w[k]
            else:
                assert float(g[k]) == pytest.approx(float(w[k]), rel=1e-12)


@pytest.mark.parametrize("case", BAD, ids=[c["name"] for c in BAD])
def test_bad_payload_is_rejected_with_its_reason(case):
    with pytest.raises(RejectedReading) as e:
        decoder().decode(case["topic"], _payload(case), NOW_NS)
    assert e.value.reason.value == case["reason"]
    assert e.value.detail


def test_reading_from_the_future_beyond_tolerance_is_rejected_but_skew_within_it_is_not():
    d = decoder()
    msg = lambda t: json.dumps({"station": "S1", "time": t, "values": {"pm25": 1}}).encode()  # noqa: E731
    now_s = NOW_NS // 10**9
    assert d.decode("aq/v1/ambient/S1", msg(now_s + 299), NOW_NS)
    with pytest.raises(RejectedReading) as e:
        d.decode("aq/v1/ambient/S1", msg(now_s + 301), NOW_NS)
    assert e.value.reason.value == "future"


def test_small_negative_concentration_is_sensor_noise_and_kept():
    r = decoder().decode("aq/v1/ambient/S1", b'{"station": "S1", "time": 1795500300, "values": {"so2": -2.0, "temp": -12.5}}', NOW_NS)
    assert r[0].values == {"so2": -2.0, "temp": -12.5}


def test_negative_wind_speed_is_rejected():
    with pytest.raises(RejectedReading) as e:
        decoder().decode("aq/v1/ambient/S1", b'{"station": "S1", "time": 1795500300, "values": {"ws": -0.1}}', NOW_NS)
    assert e.value.reason.value == "negative"


def test_payload_over_the_size_limit_is_rejected_before_parsing():
    with pytest.raises(RejectedReading) as e:
        MessageDecoder("aq/v1", Registry.empty(), Validator(), 1024).decode("aq/v1/ambient/S1", b" " * 2000, NOW_NS)
    assert e.value.reason.value == "oversize"


@pytest.mark.parametrize("topic", ["aq/v1/derived/aqi/S1", "aq/v2/ambient/S1", "aq/v1/ambient/", "aq/v1/ambient/a/b"])
def test_message_on_a_topic_that_is_not_a_device_topic_is_rejected(topic):
    with pytest.raises(RejectedReading) as e:
        decoder().decode(topic, b"{}", NOW_NS)
    assert e.value.reason.value == "unknown_topic"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decoding_arbitrary_bytes_raises_only_rejected_reading(payload):
    try:
        decoder().decode("aq/v1/ambient/S1", payload, NOW_NS)
    except RejectedReading:
        pass


json_values = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["station", "time", "values", "flags", "units", "readings", "interval_s", "status"]),
                       json_values, max_size=6))
def test_decoding_arbitrary_json_objects_raises_only_rejected_reading(doc):
    try:
        decoder().decode("aq/v1/ambient/S1", json.dumps(doc).encode(), NOW_NS)
    except RejectedReading:
        pass
