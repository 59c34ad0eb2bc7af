"""The hot path's shortcuts agree with the reading-by-reading path they stand in for:
Rows.lines() with to_line, Validator.check_rows with Validator.check."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec

from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from aqpipe.decode import MessageDecoder
from aqpipe.decoders import json as json_decoder
from aqpipe.errors import RejectedReading
from aqpipe.pollutants import AMBIENT_FIELDS, FIELDS, STACK_FIELDS
from aqpipe.reading import _PLAIN_NAME, Reading, Rows, to_line
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


def _through_validator(measurement: str, identity: str, env, plain: bool, validator: Validator):
    """What ingest makes of a parsed payload: its line protocol, or the rejection."""
    try:
        if plain:
            rows = json_decoder.plain_rows(measurement, identity, env)
        else:
            rows = json_decoder.rows_of(measurement, identity, env)
        if isinstance(rows, Rows):
            validator.check_rows(rows, NOW_NS)
            return rows.lines(), [(r.time_ns, r.values, r.flags, r.status) for r in rows.readings()]
        for r in rows:
            validator.check(r, NOW_NS)
        return [to_line(r) for r in rows], [(r.time_ns, r.values, r.flags, r.status) for r in rows]
    except RejectedReading as e:
        return e.reason.value, e.detail


@settings(max_examples=1200, deadline=None)
@given(st.data(), st.sampled_from(["ambient", "stack"]), validators)
def test_the_plain_schema_decodes_and_rejects_exactly_as_the_general_path(data, measurement, validator):
    identity = "S1" if measurement == "ambient" else "O1"
    doc = data.draw(payload_docs(measurement, identity))
    text = json.dumps(doc)
    general_env = json_decoder.parse_envelope(text) if _parses(text) else None
    _judged_alike(measurement, identity, text.encode(), general_env, validator)


def _judged_alike(measurement: str, identity: str, payload: bytes, general_env: dict | None, validator: Validator) -> None:
    """Where the plain schema accepts the payload, ingest stores or rejects it exactly as the
    general path does (`general_env`: what parse_envelope made of it, None if it refused)."""
    try:
        plain_env = json_decoder._PLAIN[measurement].decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError):
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
        json_decoder._PLAIN[measurement].decode(json.dumps(doc).encode())


# --- the same, on JSON texts no json.dumps writes: the two parsers must read them alike ---

def _usually(usual: list, odd: list) -> st.SearchStrategy:
    """One of `usual`, or (about once in 60 draws) one of `odd`: the odd ways are not JSON,
    or write a value the plain schema must refuse."""
    return st.sampled_from(usual * max(1, 60 // len(usual)) + odd)


@st.composite
def json_texts(draw: st.DrawFn, value, odd: bool) -> str:
    """`value` as JSON, each token written one of the ways JSON allows: numbers in other
    notations, strings with escapes, keys given twice, whitespace. With `odd`, now and then
    a token is written in a way that is not JSON or not plain (a payload has a hundred
    tokens: one in 60 odd leaves about a fifth of the odd texts without any)."""
    def spaces() -> str:
        return draw(_usually([""] * 4 + [" ", "\n", "\t", "\r\n"], ["\u00a0"] if odd else []))  # not JSON whitespace

    def text(v) -> str:
        return draw(json_texts(v, odd))

    space = spaces()
    if isinstance(value, dict):
        members = [(k, v) for k, v in value.items()]
        if members and draw(st.integers(0, 9)) == 0:  # a key twice: the later one counts, or the text is refused
            k, v = draw(st.sampled_from(members))
            members.insert(draw(st.integers(0, len(members))), (k, draw(st.sampled_from([v, None, 1, "S1", {}, 35.2]))))
        inner = ",".join(f"{text(k)}{spaces()}:{text(v)}" for k, v in members)
        return f"{space}{{{inner}{spaces()}}}"
    if isinstance(value, list):
        return f"{space}[{','.join(text(v) for v in value)}{spaces()}]"
    if isinstance(value, str):
        how = draw(st.sampled_from(["raw"] * 6 + ["u", "U", "first"]))
        out = [f"\\u{ord(ch):04X}" if how == "U" else f"\\u{ord(ch):04x}" if how == "u" or (how == "first" and k == 0)
               or ch < " " else "\\" + ch if ch in '\\"' else ch for k, ch in enumerate(value)]
        fault = draw(_usually([None], ["\\ud800", "\\udc00x", "\\ud83d\\ude00", "\x01", "\\/", "é", "\\u0000"] if odd else []))
        if fault:
            out.insert(draw(st.integers(0, len(out))), fault)
        return f'{space}"{"".join(out)}"'
    if value is True or value is False or value is None:
        return space + json.dumps(value)
    if isinstance(value, (int, float)):
        forms = [json.dumps(value)]
        x = float(value)
        if math.isfinite(x):
            forms += [f"{x:.17g}", f"{x:e}", f"{x:E}".replace("E+", "E"), f"{x:.3f}"]
            if x == int(x) and abs(x) < 1e20:
                forms += [str(int(x)), f"{int(x)}.0", f"{int(x)}.000"]
            if x == 0:
                forms += ["-0", "-0.0", "0e5", "1e-400"]
        weird = ["1e400", "-1e400", "123456789012345678901234567890", "NaN", "Infinity", "01", "1.", ".5", "+1"]
        return space + draw(_usually(forms, weird if odd else []))
    raise TypeError(type(value))


@settings(max_examples=800, deadline=None)
@given(st.data(), st.sampled_from(["ambient", "stack"]), validators)
def test_the_plain_schema_reads_json_texts_as_the_general_path_does(data, measurement, validator):
    identity = "S1" if measurement == "ambient" else "O1"
    text = data.draw(json_texts(data.draw(payload_docs(measurement, identity)), data.draw(st.booleans())))
    if data.draw(st.integers(0, 9)) == 0:
        text = data.draw(st.sampled_from(["\ufeff", " ", "[", "x"])) + text + data.draw(st.sampled_from(["", "\n", "x", "}", "\x00"]))
    payload = text.encode("utf-8", "surrogatepass")
    if data.draw(st.integers(0, 19)) == 0:
        at = data.draw(st.integers(0, len(payload)))
        payload = payload[:at] + data.draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + payload[at:]
    try:
        general_env = json_decoder.parse_envelope(payload.decode("utf-8"))
    except (RejectedReading, UnicodeDecodeError):
        general_env = None
    _judged_alike(measurement, identity, payload, general_env, validator)


def test_the_plain_schema_refuses_what_json_does_not_allow():
    """msgspec and the general path agree on these (the property test finds them only by
    chance): NaN, infinities and numbers out of float range go the general way, which rejects
    them as not finite."""
    decoder = MessageDecoder("aq/v1", Registry.empty(), Validator(), 256 * 1024)
    for number in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400"):
        payload = f'{{"station": "S1", "time": 1795500300, "values": {{"pm25": {number}}}}}'.encode()
        try:
            json_decoder._PLAIN["ambient"].decode(payload)
            raise AssertionError(f"the plain schema accepted {number}")
        except msgspec.DecodeError:
            pass
        try:
            decoder.decode("aq/v1/ambient/S1", payload, NOW_NS)
            raise AssertionError(f"{number} was stored")
        except RejectedReading as e:
            assert e.reason.value == "not_finite", (number, e.reason, e.detail)


def test_every_value_name_is_plain_as_rows_lines_needs():
    """Rows.lines writes names as JSON does and drops the quotes: right only for names
    with nothing to escape in JSON or line protocol (aqpipe/reading.py, Rows)."""
    for measurement, names in FIELDS.items():
        for name in names:
            assert _PLAIN_NAME.fullmatch(name), (measurement, name)


def test_a_name_that_is_not_plain_is_escaped_as_line_protocol_wants():
    reading = Reading("ambient", "S 1", 7, {"a b": 1.0, "x,y": 2.5, "k=v": 1e-7, "pm25": 0.5}, {"a b": "D"}, None)
    assert to_line(reading) == 'ambient,station=S\\ 1 a\\ b=1.0,x\\,y=2.5,k\\=v=1e-7,pm25=0.5,a\\ b_flag="D" 7'
