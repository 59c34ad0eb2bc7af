"""The hot path's shortcuts agree with the reading-by-reading path they stand in for:
Rows.lines() with to_line, Validator.check_rows with Validator.check."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hypothesis import event, given, settings
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
CONFIGS = [{}, {"negative_noise": {"ug/m3": 0.0, "mg/m3": 10.0}}, {"future_tolerance_s": 0, "retention_days": 1}]
validators = st.sampled_from([Validator(**c) for c in CONFIGS])


class ValueByValue(Validator):
    """The reference: every negative value judged alone by `_check_values`, the rule as written."""

    def _above_bounds(self, measurement: str, values: list[dict[str, float]]) -> bool:
        return False
flag_letters = st.sampled_from(["D", "M", "K", "x", "1", "Dd", 'a"b', "\\"])


@st.composite
def rows(draw: st.DrawFn) -> Rows:
    measurement = draw(st.sampled_from(["ambient", "stack"]))
    names = NAMES[measurement]
    n = draw(st.integers(1, 6))
    shared = draw(st.lists(st.sampled_from(names), unique=True, max_size=4))  # most rows share their names
    alike = draw(st.booleans())  # all share names and status (Rows.lines formats those in one go), flags or not
    flagged = draw(st.sampled_from([0, 1, 4]))  # no flags, a few, many
    values, flags = [], []
    for _ in range(n):
        keys = shared if alike or draw(st.booleans()) else draw(
            st.permutations(shared) | st.lists(st.sampled_from(names), unique=True, max_size=4))
        v = {k: draw(floats) for k in keys}
        values.append(v)
        flags.append({k: draw(flag_letters) for k in v if flagged and draw(st.integers(0, flagged)) == 0})
    status = st.sampled_from([None, "running", "stopped", "a=%s\"\\"]) if measurement == "stack" else st.none()
    statuses = [draw(status)] * n if alike else [draw(status) for _ in range(n)]
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
@given(rows(), st.data())
def test_checking_rows_in_bulk_rejects_like_checking_each_reading(r, data):
    config = data.draw(st.sampled_from(CONFIGS))
    v, reference = Validator(**config), ValueByValue(**config)
    # The decoder's plain schema vouches for finite values; the bulk check then skips that test.
    r.finite = all(math.isfinite(x) for values in r.values for x in values.values()) and data.draw(st.booleans())
    one_by_one = _outcome(lambda: [reference.check(x, NOW_NS) for x in r.readings()])
    assert _outcome(lambda: v.check_rows(r, NOW_NS)) == one_by_one
    assert _outcome(lambda: [v.check(x, NOW_NS) for x in r.readings()]) == one_by_one


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


# --- the plain schema (decoders/json.py, _PLAIN) against the general path it stands in for ---

GOOD_TIMES = ["2026-11-24T14:05:00+08:00", "2026-11-24T06:05:00Z", "2026-11-24 14:05:00.5+08:00"]
BAD_TIMES = ["2026-11-24T14:05:00", "yesterday", "", True, None, float("nan"), 10**12]
tame = st.sampled_from([0.0, 35.2, 61, 8, 1012.5, 0.6, 1e-7, 2**53 + 1, 12345678.9]) | st.floats(0, 1000) | st.floats(-20, 0)
wild = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**20, 10**20) | st.just(-0.0)
good_flag = st.sampled_from(["N", "C", "D", "M"])
bad_flag = st.sampled_from(["x", "1", "Dd", 'a"b', "\\", ""])
# Each item, and the envelope, is plain unless it draws one fault (most draw none): what
# the plain schema refuses and the general path has to judge, or what both accept and the
# Validator then rejects.
ITEM_FAULTS = [None] * 60 + ["bad_time", "old_time", "future_time", "no_time", "no_values", "unknown_name", "null",
                             "wild", "bad_flag", "flag_without_value", "interval", "units", "empty_units", "status",
                             "extra", "no_values_at_all"]
ENVELOPE_FAULTS = [None] * 20 + ["no_identity", "other_identity", "wrong_identity", "both_identities", "top_level_time",
                                 "empty_readings", "status", "units", "extra"]


@st.composite
def payload_docs(draw: st.DrawFn, measurement: str, identity: str) -> dict:
    """Payloads near the plain case, and each way of leaving it."""
    names = NAMES[measurement]
    now_s = NOW_NS // 10**9

    def item() -> dict:
        fault = draw(st.sampled_from(ITEM_FAULTS))
        times = {"bad_time": st.sampled_from(BAD_TIMES), "old_time": st.integers(now_s - 500 * 86400, now_s - 400 * 86400 - 1),
                 "future_time": st.integers(now_s + 301, now_s + 10**6)}
        time = times[fault] if fault in times else st.one_of(
            st.integers(now_s - 300 * 86400, now_s), st.sampled_from(GOOD_TIMES), st.floats(now_s - 86400, now_s))
        doc: dict = {} if fault == "no_time" else {"time": draw(time)}
        keys = draw(st.lists(st.sampled_from(names), unique=True, min_size=1, max_size=6))
        values = {k: draw(tame) for k in keys}
        if fault == "unknown_name":
            values["bogus"] = 1.0
        elif fault in ("null", "wild"):
            values[draw(st.sampled_from(keys))] = None if fault == "null" else draw(wild)
        elif fault == "no_values_at_all":
            values = {}
        if fault != "no_values":
            doc["values"] = values
        if draw(st.integers(0, 3)) == 0 or fault in ("bad_flag", "flag_without_value"):
            flags = {k: draw(good_flag) for k in draw(st.lists(st.sampled_from(keys), unique=True, max_size=3))}
            if fault == "bad_flag":
                flags[draw(st.sampled_from(keys))] = draw(bad_flag)
            elif fault == "flag_without_value":
                flags[draw(st.sampled_from(["bogus"] + names))] = "C"
            doc["flags"] = flags
        if draw(st.integers(0, 5)) == 0:
            doc["interval_s"] = 60
        extra = {"interval": ("interval_s", draw(st.sampled_from([None, 0, 1.5]))),
                 "units": ("units", draw(st.sampled_from([{"so2": "ppb"}, {"so2": "mg/m3"}, {"bogus": "ppb"}, {"so2": "x"}]))),
                 "empty_units": ("units", {}), "status": ("status", draw(st.sampled_from(["running", None, "bogus"]))),
                 "extra": ("extra", 1)}.get(fault)
        if extra:
            doc[extra[0]] = extra[1]
        if measurement == "stack" and draw(st.integers(0, 2)) == 0:
            doc["status"] = draw(st.sampled_from(["running", "stopped"]))
        return doc

    fault = draw(st.sampled_from(ENVELOPE_FAULTS))
    id_key, other = ("station", "outlet") if measurement == "ambient" else ("outlet", "station")
    env: dict = {id_key: {"no_identity": None, "wrong_identity": "other"}.get(fault, identity)}
    if fault == "no_identity" and draw(st.booleans()):
        del env[id_key]
    if fault in ("other_identity", "both_identities"):
        env[other] = draw(st.sampled_from(["S1", None]))
        if fault == "other_identity":
            del env[id_key]
    if draw(st.booleans()):
        env["readings"] = [] if fault == "empty_readings" else [item() for _ in range(draw(st.integers(1, 6)))]
        if fault == "top_level_time":
            env["time"] = now_s
    else:
        env.update(item())
    extra = {"status": ("status", draw(st.sampled_from(["running", None]))),
             "units": ("units", draw(st.sampled_from([{}, {"so2": "ppb"}]))), "extra": ("extra", 1)}.get(fault)
    if extra:
        env[extra[0]] = extra[1]
    return env


def _through_validator(measurement: str, identity: str, env: dict, plain: bool, validator: Validator):
    """What ingest makes of a parsed payload: its line protocol, or the rejection."""
    try:
        rows = json_decoder.rows_of(measurement, identity, env, plain)
        if isinstance(rows, Rows):
            validator.check_rows(rows, NOW_NS)
            return rows.lines(), [(r.time_ns, r.values, r.flags, r.status) for r in rows.readings()]
        for r in rows:
            validator.check(r, NOW_NS)
        return [to_line(r) for r in rows], [(r.time_ns, r.values, r.flags, r.status) for r in rows]
    except RejectedReading as e:
        return e.reason.value, e.detail


@settings(max_examples=2000, deadline=None)
@given(st.data(), st.sampled_from(["ambient", "stack"]), validators)
def test_the_plain_schema_decodes_and_rejects_exactly_as_the_general_path(data, measurement, validator):
    identity = "S1" if measurement == "ambient" else "O1"
    doc = data.draw(payload_docs(measurement, identity))
    text = json.dumps(doc)
    general_env = json_decoder.parse_envelope(text) if _parses(text) else None
    try:
        plain_env = json_decoder._PLAIN[measurement].validate_json(text)
    except ValidationError:
        event("plain schema refused")
        return  # refused: the general path alone decides, as before
    assert general_env is not None, "the plain schema accepted what the general one refuses"
    outcome = _through_validator(measurement, identity, plain_env, True, validator)
    event(f"plain schema accepted: {'rejected ' + outcome[0] if isinstance(outcome[0], str) else 'stored'}")
    assert outcome == _through_validator(measurement, identity, general_env, False, validator)


def _parses(text: str) -> bool:
    try:
        json_decoder.parse_envelope(text)
        return True
    except RejectedReading:
        return False


def test_the_plain_schema_takes_the_common_payloads():
    """Else the fast path would be dead code: the shapes of DESIGN.md and the benchmark feed."""
    single = {"station": "S1", "time": "2026-11-24T14:05:00+08:00", "interval_s": 60,
              "values": {"pm25": 35.2, "pm10": 61, "temp": -12.3}, "flags": {"pm25": "C"}}
    batch = {"station": "S1", "readings": [{"time": 1795500000 + k, "values": {"pm25": 35.2, "so2": 8.0}} for k in range(3)]}
    stack = {"outlet": "O1", "time": 1795500000, "status": "running", "values": {"so2": 12.5, "o2": 9.1}}
    for measurement, doc in (("ambient", single), ("ambient", batch), ("stack", stack)):
        json_decoder._PLAIN[measurement].validate_json(json.dumps(doc))
