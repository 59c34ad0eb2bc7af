"""The hot path's shortcuts agree with the reading-by-reading path they stand in for:
Rows.lines() with to_line, Validator.check_rows with Validator.check."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from aqpipe.decode import MessageDecoder
from aqpipe.decoders import json as json_decoder
from aqpipe.errors import RejectedReading
from aqpipe.pollutants import AMBIENT_FIELDS, STACK_FIELDS
from aqpipe.reading import Rows, to_line
from aqpipe.registry import Registry
from aqpipe.validate import Validator

NOW_NS = 1795500300 * 10**9
NAMES = {"ambient": sorted(AMBIENT_FIELDS), "stack": sorted(STACK_FIELDS)}
identities = st.text(alphabet="aZ0-_ ,=\\\"%rds", min_size=1, max_size=8)
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e-7, 35.2, -3.0, -300.0, 1e308])
times = st.integers(NOW_NS - 500 * 86400 * 10**9, NOW_NS + 600 * 10**9)
flag_letters = st.sampled_from(["D", "M", "K", "x", "1", "Dd", 'a"b', "\\"])


@st.composite
def rows(draw: st.DrawFn) -> Rows:
    measurement = draw(st.sampled_from(["ambient", "stack"]))
    names = NAMES[measurement]
    n = draw(st.integers(1, 5))
    shared = draw(st.lists(st.sampled_from(names), unique=True, max_size=4))  # most rows share their names
    values, flags = [], []
    for _ in range(n):
        keys = shared if draw(st.booleans()) else draw(st.lists(st.sampled_from(names), unique=True, max_size=4))
        v = {k: draw(floats) for k in keys}
        values.append(v)
        flags.append({k: draw(flag_letters) for k in v if draw(st.integers(0, 4)) == 0})
    statuses = [draw(st.sampled_from([None, "running", "stopped", "a=%s\"\\"])) if measurement == "stack" else None for _ in range(n)]
    return Rows(measurement, draw(identities), [draw(times) for _ in range(n)], values, flags, statuses)


@settings(max_examples=400, deadline=None)
@given(rows())
def test_rows_format_the_lines_to_line_formats(r):
    assert r.lines() == [to_line(x) for x in r.readings()]


def _outcome(check) -> tuple[str, str] | None:
    try:
        check()
    except RejectedReading as e:
        return e.reason.value, e.detail
    return None


@settings(max_examples=600, deadline=None)
@given(rows())
def test_checking_rows_in_bulk_rejects_like_checking_each_reading(r):
    v = Validator()
    one_by_one = _outcome(lambda: [v.check(x, NOW_NS) for x in r.readings()])
    assert _outcome(lambda: v.check_rows(r, NOW_NS)) == one_by_one


def test_ingest_lines_of_every_good_json_example_are_its_readings_lines():
    decoder = MessageDecoder("aq/v1", Registry.empty(), Validator(), 256 * 1024)
    paths = sorted((Path(__file__).resolve().parent.parent / "data" / "json" / "good").glob("*.json"))
    assert paths
    for path in paths:
        case = json.loads(path.read_text())
        payload = json.dumps(case["payload"]).encode() if not isinstance(case["payload"], str) else case["payload"].encode()
        now = 1795500300 * 10**9 + 60 * 10**9
        assert decoder.decode(case["topic"], payload, now).lines == [to_line(r) for r in decoder.decode(case["topic"], payload, now)]


plausible = st.sampled_from([None, {}, {"pm25": 1.5}, {"pm25": None}, {"pm25": "x"}, {"pm25": 1}, {"so2": "D"}, {"pm25": "ug/m3"},
                             1, 0, -1, 2.5, "2026-01-01T00:00:00Z", "S1", "", True, [], "running", "bogus", float("nan")])
VALID = {"station": ["S1", None], "outlet": ["O1", None], "time": [1795500300, 1795500300.5, "2026-01-01T00:00:00+08:00", None],
         "interval_s": [60, None], "values": [{"pm25": 1.5}, {"pm25": None, "so2": 2}, {}, {"x": float("inf")}],
         "flags": [{}, {"pm25": "D"}], "units": [{}, {"so2": "ppb"}], "status": ["running", "startup", None], "extra": []}


def _value(key: str, inner: st.SearchStrategy | None = None) -> st.SearchStrategy:
    good = [st.sampled_from(VALID[key])] if VALID.get(key) else []
    if inner is not None:
        good.append(st.lists(inner, max_size=3) | st.none())
    return st.one_of(*good, plausible) if good else plausible


def _docs(keys: list[str], required: list[str], inner: st.SearchStrategy | None = None) -> st.SearchStrategy:
    strategy = {k: _value(k, inner if k == "readings" else None) for k in keys}
    return st.fixed_dictionaries({k: strategy[k] for k in required},
                                 optional={k: v for k, v in strategy.items() if k not in required})


ITEM_KEYS = ["time", "interval_s", "values", "flags", "units", "status", "extra"]
item = _docs(ITEM_KEYS, ["time", "values"]) | st.sampled_from([None, 1, "x", []])
envelope = _docs(["station", "outlet", "readings"] + ITEM_KEYS, ["station"], item)


@settings(max_examples=1500, deadline=None)
@given(envelope)
def test_the_fast_schema_accepts_exactly_what_the_models_accept_with_the_same_values(doc):
    text = json.dumps(doc)
    try:
        model = json_decoder._Envelope.model_validate_json(text).model_dump(exclude_unset=True)
    except ValidationError:
        model = None
    try:
        fast = json_decoder._FAST.validate_json(text)
    except ValidationError:
        fast = None
    assert json.dumps(fast, sort_keys=True) == json.dumps(model, sort_keys=True)
