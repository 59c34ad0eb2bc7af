"""The direct way (a usual data frame's readings straight from its CP text) against the
general way (CP parsed into code -> suffix -> value, then frame_to_readings).

`_direct_readings` may decline (None) whatever it likes; when it answers, readings or
error, the answer must be the general way's. Generated CPs stay close to real frames
(known keys, numbers, flags) and then go wrong in the ways frames do.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from aqpipe.decoders import hj212
from aqpipe.decoders.hj212 import (
    IGNORED_SUFFIXES,
    NUMERIC_SUFFIXES,
    POLLUTANT_FIELDS,
    SUFFIX_FIELDS,
    FrameHead,
    build_encrypted_frame,
    decode,
    frame_to_readings,
    parse_frame,
)
from aqpipe.errors import RejectedReading
from aqpipe.registry import Registry

DATA = Path(__file__).resolve().parents[1] / "data" / "hj212"
REGISTRY = Registry.load(DATA / "registry")
BOILER_MN = "91320500MA1X2Y3Z4W000001"
STATION_MN = "62050300100001AQ"
ENCRYPTING_MN = "010000A8900016F000169DC0"
TYPICAL_CP = (
    "DataTime=20261124140500;a21026-Avg=28.4,a21026-ZsAvg=41.2,a21026-Flag=N;"
    "a21002-Avg=36.1,a21002-ZsAvg=52.7,a21002-Flag=N;a19001-Avg=12.3,a19001-Flag=N;"
    "a01012-Avg=128.5,a01012-Flag=N;a01013-Avg=-0.35,a01013-Flag=N"
)


def _head(cn: str = "2051", st_: str = "31", mn: str = BOILER_MN, **kw: Any) -> dict[str, Any]:
    return {"qn": "20261124140500123", "st": st_, "cn": cn, "pw": "123456", "mn": mn,
            "flag": 5, "pnum": None, "pno": None, **kw}


def _outcome(fn) -> Any:
    """Readings as comparable tuples (values sorted, as repr: NaN equals NaN), or the error."""
    try:
        got = fn()
    except RejectedReading as e:
        return ("error", type(e).__name__, e.reason, e.detail)
    if got is None:
        return None
    return [(r.measurement, r.identity, r.time_ns, repr(sorted(r.values.items())), r.flags) for r in got]


def _general(fields: dict[str, Any], cp: str, topic_mn: str | None) -> Any:
    return _outcome(lambda: frame_to_readings(hj212._frame(fields, cp), REGISTRY, topic_mn))


def _direct(fields: dict[str, Any], cp: str, topic_mn: str | None) -> Any:
    return _outcome(lambda: hj212._direct_readings(FrameHead(**fields), cp, REGISTRY, topic_mn))


def test_the_usual_frame_goes_the_direct_way_with_the_general_result():
    fields = _head()
    direct = _direct(fields, TYPICAL_CP, BOILER_MN)
    assert direct is not None, "the usual minute frame fell back to the general way"
    assert direct == _general(fields, TYPICAL_CP, BOILER_MN)
    (reading,) = hj212._direct_readings(FrameHead(**fields), TYPICAL_CP, REGISTRY, BOILER_MN)
    assert reading.values["so2"] == 28.4 and reading.values["so2_zs"] == 41.2 and reading.flags == {}


def test_decode_of_a_typical_encrypted_frame_equals_parse_then_map():
    key = bytes.fromhex("30303030303030303030303030303030")
    seg = f"QN=20261124140500123;ST=31;CN=2051;PW=123456;MN={ENCRYPTING_MN};Flag=9;CP=&&{TYPICAL_CP}&&"
    payload = build_encrypted_frame(seg, key).encode()
    general = frame_to_readings(parse_frame(payload, REGISTRY.hj212_keys), REGISTRY, ENCRYPTING_MN)
    assert [(r.time_ns, r.values, r.flags) for r in decode(payload, ENCRYPTING_MN, REGISTRY)] == \
        [(r.time_ns, r.values, r.flags) for r in general] != []


# --------------------------------------------------------------------------- generated CPs

_codes = st.sampled_from(sorted(POLLUTANT_FIELDS) + ["zz999", "a99999"])
_suffixes = st.sampled_from(sorted(NUMERIC_SUFFIXES | IGNORED_SUFFIXES | {"Flag", "Info", "Xyz", ""}))
_values = st.one_of(
    st.floats(min_value=-1e6, max_value=1e7, allow_nan=False).map(lambda x: repr(round(x, 3))),
    st.sampled_from(["0", "-0.0", "1e5", "1E-3", "+.5", "5.", "nan", "-inf", "Infinity", "", ".", "-", "1_0",
                     " 1", "0x10", "abc", "N", "F", "M", "NN", "?", "1", "x=y", "Ñ", "N&", "1;2"]),
)
_times = st.one_of(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)).map(lambda t: f"{t:%Y%m%d%H%M%S}"),
    st.sampled_from(["20261124140500123", "20261324140500", "2026112414050", "", "abcdefghijklmn"]),
)


@st.composite
def _items(draw) -> str:
    kind = draw(st.sampled_from(["known"] * 6 + ["any", "extra", "datatime", "empty", "bare"]))
    if kind == "known":
        code = draw(st.sampled_from(sorted(POLLUTANT_FIELDS)))
        cn_suffixes = sorted(set().union(*SUFFIX_FIELDS.values()))
        suffix = draw(st.sampled_from(cn_suffixes + ["Flag", "Flag", "EFlag"]))
        value = draw(st.sampled_from(["N", "F", "D", "Q", "NN", "1"])) if suffix == "Flag" else draw(_values)
        return f"{code}-{suffix}={value}"
    if kind == "any":
        return f"{draw(_codes)}-{draw(_suffixes)}={draw(_values)}"
    if kind == "extra":
        return draw(st.sampled_from(["RtdInterval=30", "Info=x", "=5", "a21026=1", "-Avg=1"]))
    if kind == "datatime":
        return f"DataTime={draw(_times)}"
    if kind == "bare":
        return draw(st.sampled_from(["a21026-Avg", "DataTime", "a21026-Avg=1=2"]))
    return ""


@st.composite
def _usual_cps(draw) -> tuple[str, str]:
    """What real loggers send: known keys of the command, each once, numbers, data flags."""
    cn = draw(st.sampled_from(sorted(SUFFIX_FIELDS)))
    # One code per field: a 2017 code and its 2005 alias in one frame is not usual.
    codes = draw(st.lists(st.sampled_from(sorted(POLLUTANT_FIELDS)), max_size=8,
                          unique_by=lambda code: POLLUTANT_FIELDS[code]))
    suffixes = sorted(SUFFIX_FIELDS[cn]) + ["Flag", "EFlag"]
    keys = [(code, suffix) for code in codes
            for suffix in draw(st.lists(st.sampled_from(suffixes), min_size=1, max_size=4, unique=True))]
    items = []
    for code, suffix in keys:
        if suffix == "Flag":
            value = draw(st.sampled_from("NFMSDCTBQ"))
        elif suffix == "EFlag":
            value = draw(st.sampled_from(["A01", "0"]))
        else:
            value = repr(round(draw(st.floats(min_value=-1e6, max_value=1e7, allow_nan=False)), 3))
        items.append(f"{code}-{suffix}={value}")
    separators = draw(st.lists(st.sampled_from([";", ","]), min_size=len(items), max_size=len(items)))
    return cn, "DataTime=20261124140500" + "".join(s + i for s, i in zip(separators, items))


_heads = st.builds(
    _head,
    cn=st.sampled_from(["2011", "2051", "2061", "2031", "2011", "2051", "2062", "1011", "9014"]),
    st_=st.sampled_from(["31", "31", "22", "44", "91"]),
    mn=st.sampled_from([BOILER_MN, BOILER_MN, STATION_MN, ENCRYPTING_MN, "88888880000001", "UNKNOWN0001"]),
    rf=st.booleans(),
    encrypted=st.booleans(),
)


@st.composite
def _cps(draw) -> str:
    """A usual CP with none, one or a few of the things that go wrong in frames."""
    _, cp = draw(_usual_cps())
    items = cp.split(";")
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(items)))
        change = draw(st.sampled_from(["insert", "replace", "repeat", "drop"]))
        if change == "insert":
            items.insert(i, draw(_items()))
        elif change == "replace" and i < len(items):
            items[i] = draw(_items())
        elif change == "repeat" and items:
            items.insert(i, items[i % len(items)])
        elif change == "drop" and i < len(items):
            del items[i]
    return ";".join(items)


@given(_heads, _cps(), st.sampled_from(["frame", "frame", "frame", BOILER_MN, None]))
def test_when_the_direct_way_answers_it_answers_as_the_general_way(fields, cp, topic_mn):
    topic_mn = fields["mn"] if topic_mn == "frame" else topic_mn
    direct = _direct(fields, cp, topic_mn)
    if direct is not None:
        assert direct == _general(fields, cp, topic_mn)


@given(_usual_cps())
def test_what_loggers_send_goes_the_direct_way(case):
    cn, cp = case
    fields = _head(cn=cn)
    direct = _direct(fields, cp, BOILER_MN)
    assert direct is not None, cp
    assert direct == _general(fields, cp, BOILER_MN)


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 12, 31)),
       st.integers(-14 * 60, 14 * 60))
def test_epoch_ns_is_the_exact_timedelta_arithmetic(t, offset_minutes):
    aware = t.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    assert hj212.epoch_ns(aware) == (aware - hj212.EPOCH) // timedelta(microseconds=1) * 1000
