"""HJ 212 decoder: table-driven over tests/data/hj212/{good,bad}/<case>/, plus properties."""

from __future__ import annotations

import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aqpipe.decoders import hj212_cli
from aqpipe.decoders.hj212 import (
    POLLUTANT_FIELDS,
    Frame,
    Hj212Error,
    build_frame,
    crc16_hj212,
    crc16_hj212_bitwise,
    decode,
    frame_to_readings,
    parse_frame,
    reply_9014,
    split_frames,
)
from aqpipe.errors import Reason, RejectedReading
from aqpipe.registry import Registry

DATA = Path(__file__).resolve().parents[1] / "data" / "hj212"
REGISTRY = Registry.load(DATA / "registry")
GOOD = sorted(p for p in (DATA / "good").iterdir() if p.is_dir())
BAD = sorted(p for p in (DATA / "bad").iterdir() if p.is_dir())

STANDARD_EXAMPLE = (
    "##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;"
    "Flag=5;CP=&&RtdInterval=30&&1C80"
)
BOILER_MN = "91320500MA1X2Y3Z4W000001"
SECRET = "T0pS3cret"
MINUTE_SEGMENT = (
    f"QN=20261124140500123;ST=31;CN=2051;PW={SECRET};MN={BOILER_MN};Flag=5;"
    "CP=&&DataTime=20261124140500;a21026-Avg=28.4,a21026-ZsAvg=41.2,a21026-Flag=N;a19001-Avg=12.3,a19001-Flag=N&&"
)


_OPTIONAL_FRAME_KEYS = ("version", "rf", "encrypted")  # compared when an expectation names them


def _frame_dict(frame: Frame, want: dict) -> dict:
    got = {
        "qn": frame.qn, "st": frame.st, "cn": frame.cn, "mn": frame.mn, "flag": frame.flag,
        "pnum": frame.pnum, "pno": frame.pno,
        "data_time": frame.data_time.isoformat() if frame.data_time else None,
        "values": frame.values, "extra": frame.extra,
    }
    got.update({k: getattr(frame, k) for k in _OPTIONAL_FRAME_KEYS if k in want})
    return got


def _time_ns(iso_utc: str) -> int:
    return int(datetime.strptime(iso_utc, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()) * 10**9


# --------------------------------------------------------------------------- CRC

def test_crc_of_the_standards_example_is_1C80():
    data = STANDARD_EXAMPLE[6:-4].encode()
    assert len(data) == 101
    assert crc16_hj212(data) == crc16_hj212_bitwise(data) == 0x1C80


def test_crc_is_not_modbus():
    # CRC-16/MODBUS of the same bytes differs: the HJ 212 variant shifts before XOR.
    crc = 0xFFFF
    for byte in STANDARD_EXAMPLE[6:-4].encode():
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    assert crc != 0x1C80


def test_crc_of_empty_data_is_the_initial_register():
    assert crc16_hj212(b"") == crc16_hj212_bitwise(b"") == 0xFFFF


@pytest.mark.parametrize("length", list(range(0, 70)) + [127, 128, 129, 511, 512, 513, 1029, 9999])
def test_fast_crc_matches_the_bit_by_bit_definition_at_every_length(length):
    data = bytes((i * 131 + length * 7) & 0xFF for i in range(length))
    assert crc16_hj212(data) == crc16_hj212_bitwise(data)


@given(st.binary(max_size=2000))
def test_fast_crc_matches_the_bit_by_bit_definition_on_any_bytes(data):
    assert crc16_hj212(data) == crc16_hj212_bitwise(data)


# --------------------------------------------------------------------------- examples

@pytest.mark.parametrize("case", GOOD, ids=[p.name for p in GOOD])
def test_good_example_decodes_to_its_expected_frames_and_readings(case):
    payload = (case / "input.txt").read_bytes()
    expected = json.loads((case / "expected.json").read_text())
    frames = [parse_frame(piece, REGISTRY.hj212_keys) for piece in split_frames(payload.decode())]
    assert [_frame_dict(f, w) for f, w in zip(frames, expected["frames"])] == expected["frames"]
    assert len(frames) == len(expected["frames"])
    if expected["topic"] is None:
        assert expected["readings"] == []
        assert all(frame_to_readings(f, REGISTRY, None) == [] for f in frames)
        return
    readings = decode(payload, expected["topic"], REGISTRY)
    assert len(readings) == len(expected["readings"])
    for got, want in zip(readings, expected["readings"]):
        assert got.measurement == want["measurement"]
        assert got.identity == want["identity"]
        assert got.time_ns == _time_ns(want["time"])
        assert got.values == want["values"]
        assert got.flags == want["flags"]
        assert got.status is None


@pytest.mark.parametrize("case", BAD, ids=[p.name for p in BAD])
def test_bad_example_is_rejected_with_its_expected_reason(case):
    payload = (case / "input.txt").read_bytes()
    expected = json.loads((case / "expected.json").read_text())
    with pytest.raises(RejectedReading) as caught:
        decode(payload, expected["topic"], REGISTRY)
    assert caught.value.reason == Reason(expected["reason"])
    if "kind" in expected:
        assert isinstance(caught.value, Hj212Error)
        assert caught.value.kind == expected["kind"]
    assert SECRET not in str(caught.value)


def test_every_example_folder_has_an_input_and_an_expectation():
    for case in GOOD + BAD:
        assert (case / "input.txt").is_file() and (case / "expected.json").is_file(), case


# --------------------------------------------------------------------------- behaviour

def test_frame_repr_and_str_never_show_the_password():
    frame = parse_frame(build_frame(MINUTE_SEGMENT))
    assert frame.pw == SECRET
    assert SECRET not in repr(frame) and SECRET not in str(frame)


def test_error_details_never_show_the_password_even_when_quoting_the_frame():
    # A garbled CP item that happens to hold the password: the error quotes the item.
    seg = f"ST=31;CN=2051;PW={SECRET};MN={BOILER_MN};CP=&&DataTime=20261124140500;x{SECRET}y&&"
    with pytest.raises(Hj212Error) as caught:
        parse_frame(build_frame(seg))
    assert caught.value.kind == "syntax"
    assert "***" in caught.value.detail
    assert SECRET not in caught.value.detail and SECRET not in str(caught.value)


def test_data_time_is_beijing_time_and_reading_time_is_the_end_of_the_interval_in_utc_epoch_ns():
    frame = parse_frame(build_frame(MINUTE_SEGMENT))
    assert frame.data_time == datetime(2026, 11, 24, 6, 5, tzinfo=timezone.utc)
    assert frame.data_time.utcoffset().total_seconds() == 8 * 3600
    (reading,) = frame_to_readings(frame, REGISTRY, BOILER_MN)
    # minute data (2051) stamped 14:05 covers 14:05-14:06 Beijing time: stored at its end
    assert reading.time_ns == _time_ns("2026-11-24T06:06:00Z")


def test_crlf_is_optional_and_crc_case_is_ignored():
    assert parse_frame(STANDARD_EXAMPLE) == parse_frame(STANDARD_EXAMPLE + "\r\n")
    assert parse_frame(STANDARD_EXAMPLE[:-4] + "1c80").extra == {"RtdInterval": "30"}


def test_length_counts_utf8_bytes_not_characters():
    seg = f"ST=31;CN=3020;MN={BOILER_MN};CP=&&i12001-Info=烟道&&"
    framed = build_frame(seg)
    assert int(framed[2:6]) == len(seg.encode()) == len(seg) + 4
    assert parse_frame(framed).values == {"i12001": {"Info": "烟道"}}
    # the same frame with the length in characters is a length error
    with pytest.raises(Hj212Error) as caught:
        parse_frame(f"##{len(seg):04d}" + framed[6:])
    assert caught.value.kind == "length"


def test_non_data_commands_give_no_readings():
    frame = parse_frame(STANDARD_EXAMPLE)
    assert frame.cn == "1062"
    assert frame_to_readings(frame, Registry.empty(), None) == []


def test_frame_for_another_device_than_its_topic_is_rejected_as_spoofing():
    frame = parse_frame(build_frame(MINUTE_SEGMENT))
    with pytest.raises(RejectedReading) as caught:
        frame_to_readings(frame, REGISTRY, "62050300100001AQ")
    assert caught.value.reason is Reason.IDENTITY_MISMATCH


def test_unknown_pollutant_rejects_the_whole_frame():
    frame = parse_frame(build_frame(MINUTE_SEGMENT.replace("a19001", "a99999")))
    with pytest.raises(RejectedReading) as caught:
        frame_to_readings(frame, REGISTRY, BOILER_MN)
    assert caught.value.reason is Reason.UNKNOWN_POLLUTANT


def test_eflag_and_sample_time_are_read_but_not_stored():
    seg = MINUTE_SEGMENT.replace("a21026-Flag=N", "a21026-Flag=N,a21026-EFlag=A01,a21026-SampleTime=20261124140000")
    frame = parse_frame(build_frame(seg))
    assert frame.values["a21026"]["EFlag"] == "A01"
    (reading,) = frame_to_readings(frame, REGISTRY, BOILER_MN)
    assert reading.values == {"so2": 28.4, "so2_zs": 41.2, "o2": 12.3}
    assert reading.flags == {}


def test_not_a_number_values_pass_through_for_the_shared_validator():
    frame = parse_frame(build_frame(MINUTE_SEGMENT.replace("a21026-Avg=28.4", "a21026-Avg=NaN")))
    (reading,) = frame_to_readings(frame, REGISTRY, BOILER_MN)
    assert math.isnan(reading.values["so2"])


@pytest.mark.parametrize("value", ["1_0", " 1", "1 ", "١٢", "0x10", "", "1e", "--1"])
def test_numbers_must_be_written_as_plain_decimals(value):
    with pytest.raises(Hj212Error) as caught:
        parse_frame(build_frame(MINUTE_SEGMENT.replace("a21026-Avg=28.4", f"a21026-Avg={value}")))
    assert caught.value.kind == "syntax"


def test_every_code_in_the_table_maps_to_a_field_name():
    assert all(name.isidentifier() and name.islower() for name in POLLUTANT_FIELDS.values())
    for old, new in {"01": "a34013", "02": "a21026", "03": "a21002", "S01": "a19001", "S02": "a01011",
                     "S03": "a01012", "S05": "a01014", "S08": "a01013", "B02": "a00000"}.items():
        assert POLLUTANT_FIELDS[old] == POLLUTANT_FIELDS[new], old


def test_split_frames_handles_crlf_lf_and_concatenated_frames_and_skips_blank_lines():
    a, b = build_frame(MINUTE_SEGMENT), build_frame(MINUTE_SEGMENT.replace("28.4", "29.0"))
    want = [a.rstrip("\r\n"), b.rstrip("\r\n")]
    assert split_frames(a + b) == want
    assert split_frames(a.rstrip("\r\n") + "\n\n" + b) == want
    assert split_frames(a.rstrip("\r\n") + b.rstrip("\r\n")) == want
    assert split_frames("\r\n") == []


def test_text_before_a_frame_is_not_silently_dropped():
    assert split_frames("junk" + STANDARD_EXAMPLE) == ["junk", STANDARD_EXAMPLE]
    with pytest.raises(Hj212Error):
        decode(("junk" + STANDARD_EXAMPLE).encode(), "010000A8900016F000169DC0", REGISTRY)


def test_reply_9014_echoes_qn_pw_and_mn_and_is_a_valid_frame():
    frame = parse_frame(build_frame(MINUTE_SEGMENT))
    reply = reply_9014(frame)
    assert reply == build_frame(
        f"QN=20261124140500123;ST=91;CN=9014;PW={SECRET};MN={BOILER_MN};Flag=4;CP=&&&&"
    )
    parsed = parse_frame(reply)
    assert (parsed.qn, parsed.st, parsed.cn, parsed.flag) == ("20261124140500123", "91", "9014", 4)
    assert parsed.values == {} and parsed.extra == {}


def test_reply_to_the_standards_example():
    assert reply_9014(parse_frame(STANDARD_EXAMPLE)) == (
        "##0087QN=20160801085857223;ST=91;CN=9014;PW=100000;MN=010000A8900016F000169DC0;Flag=4;CP=&&&&71C0\r\n"
    )


def test_build_frame_refuses_an_oversize_segment():
    with pytest.raises(ValueError):
        build_frame("x" * 10000)


# --------------------------------------------------------------------------- properties

_codes = st.sampled_from(sorted(POLLUTANT_FIELDS))
_numbers = st.floats(min_value=-1e6, max_value=1e7, allow_nan=False).map(lambda x: round(x, 3))
_flags = st.sampled_from("NFMSDCTB")


@st.composite
def data_segments(draw) -> tuple[str, dict]:
    cn = draw(st.sampled_from(["2011", "2051", "2061", "2031"]))
    main = "Rtd" if cn == "2011" else "Avg"
    codes = draw(st.lists(_codes, min_size=0, max_size=12, unique=True))
    values = {}
    groups = []
    for code in codes:
        v, flag = draw(_numbers), draw(_flags)
        values[code] = {main: v, "Flag": flag}
        groups.append(f"{code}-{main}={v},{code}-Flag={flag}")
    mn = draw(st.text("0123456789ABCDEF", min_size=1, max_size=24))
    # Letters in no field name, hex digit, edit or repr word (Frame, None, False): a password
    # found in repr(frame) can only be a leak. (Lowercase once spelled "pnum".)
    pw = draw(st.text("GHJKLPRUVWXY", min_size=0, max_size=12))
    t = draw(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31))).replace(microsecond=0)
    cp = ";".join([f"DataTime={t:%Y%m%d%H%M%S}", *groups])
    seg = f"QN={t:%Y%m%d%H%M%S}000;ST=31;CN={cn};PW={pw};MN={mn};Flag=5;CP=&&{cp}&&"
    return seg, {"cn": cn, "mn": mn, "pw": pw, "values": values, "time": t}


@given(data_segments())
def test_build_frame_then_parse_frame_gives_back_what_was_sent(case):
    seg, want = case
    frame = parse_frame(build_frame(seg))
    assert (frame.cn, frame.mn, frame.pw, frame.values) == (want["cn"], want["mn"], want["pw"], want["values"])
    assert frame.data_time.replace(tzinfo=None) == want["time"]


@given(st.binary(max_size=600))
def test_decoding_any_bytes_raises_only_rejected_reading(payload):
    try:
        decode(payload, BOILER_MN, REGISTRY)
    except RejectedReading:
        pass
    try:
        parse_frame(payload)
    except Hj212Error:
        pass


@given(st.text(max_size=600))
def test_parsing_any_text_raises_only_hj212_error(text):
    try:
        parse_frame(text)
    except Hj212Error:
        pass
    try:
        decode(text.encode("utf-8", "surrogatepass"), BOILER_MN, REGISTRY)
    except RejectedReading:
        pass


@given(
    data_segments(),
    st.lists(st.tuples(st.integers(0, 2000), st.sampled_from(["delete", "insert", "replace"]),
                       st.sampled_from(list("#;,=&-.0123456789aAZ\r\n \x00é"))), min_size=1, max_size=4),
    st.booleans(),
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_mutated_valid_frames_raise_only_rejected_reading_and_never_leak_the_password(case, edits, refit):
    seg, want = case
    text = build_frame(seg)
    for position, op, char in edits:
        body = text[6:-6] if refit else text
        i = position % (len(body) + 1)
        if op == "delete":
            body = body[:i] + body[i + 1 :]
        elif op == "insert":
            body = body[:i] + char + body[i:]
        else:
            body = body[:i] + char + body[i + 1 :]
        # refit: keep length and CRC right, so the mutation reaches the syntax checks
        text = build_frame(body) if refit and len(body.encode()) <= 9999 else (body if not refit else text)
    try:
        decode(text.encode(), want["mn"], REGISTRY)
    except RejectedReading as e:
        if len(want["pw"]) >= 4:
            assert want["pw"] not in str(e)
    try:
        frame = parse_frame(text)
    except Hj212Error:
        return
    if frame.pw and len(frame.pw) >= 4:
        assert frame.pw not in repr(frame)


# --------------------------------------------------------------------------- CLI

def _cli(stdin: bytes) -> tuple[int, list[dict]]:
    out = io.StringIO()
    status = hj212_cli.decode_lines(io.BytesIO(stdin), out)
    return status, [json.loads(line) for line in out.getvalue().splitlines()]


def test_cli_prints_one_json_line_per_non_empty_input_line():
    good = build_frame(MINUTE_SEGMENT)
    bad = good[:-6] + "0000\r\n"
    status, records = _cli((good + "\r\n" + bad + "garbage\n").encode())
    assert status == 1
    assert [r["ok"] for r in records] == [True, False, False]
    assert [r.get("error") for r in records] == [None, "crc", "framing"]
    assert records[0] == {
        "ok": True, "version": "2017", "qn": "20261124140500123", "st": "31", "st_name": "air pollution source",
        "cn": "2051", "mn": BOILER_MN, "flag": 5, "rf": False, "encrypted": False,
        "data_time": "2026-11-24T14:05:00+08:00",
        "values": {"a21026": {"Avg": 28.4, "ZsAvg": 41.2, "Flag": "N"}, "a19001": {"Avg": 12.3, "Flag": "N"}},
        "fields": {"a21026": "so2", "a19001": "o2"},
    }


def test_cli_never_prints_the_password():
    status, records = _cli(build_frame(MINUTE_SEGMENT).encode())
    assert status == 0 and SECRET not in json.dumps(records)


def test_cli_reads_a_file_through_the_aqpipe_style_parser(tmp_path, capsys):
    path = tmp_path / "frames.txt"
    path.write_text(STANDARD_EXAMPLE + "\r\n")
    assert hj212_cli.main(["hj212", "decode", str(path)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert record["ok"] and record["cn"] == "1062" and record["data_time"] is None


def test_cli_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        hj212_cli.main(["hj212", "decode", "--help"])
    assert "example:" in capsys.readouterr().out


# --------------------------------------------------------------------------- HJ 212-2025

def _counter(metric, *labels) -> float:
    return (metric.labels(*labels) if labels else metric)._value.get()


def test_back_filled_frames_are_stored_like_any_reading_and_counted():
    from aqpipe.decoders.hj212_metrics import BACKFILLED

    payload = (DATA / "good" / "2025_sm4_backfilled_rf1_hourly" / "input.txt").read_bytes()
    before = _counter(BACKFILLED)
    (reading,) = decode(payload, "620503202500000000000006", REGISTRY)
    assert _counter(BACKFILLED) == before + 1
    # An ordinary reading with its (old) time: nothing marks it apart, so the aggregator's
    # late-data path (a reading for an hour already rolled up) treats it like any late one.
    assert reading.values == {"so2": 31.5, "so2_zs": 44.0, "o2": 12.6} and reading.status is None


@pytest.mark.parametrize("case, cn, st_code", [
    ("2025_heartbeat_9015", "9015", "91"), ("2025_power_use_st44_is_not_stored", "2011", "44"),
])
def test_frames_given_no_reading_on_purpose_are_counted_not_silently_dropped(case, cn, st_code):
    from aqpipe.decoders.hj212_metrics import NOT_STORED

    payload = (DATA / "good" / case / "input.txt").read_bytes()
    before = _counter(NOT_STORED, cn, st_code)
    assert decode(payload, "620503202500000000000005", REGISTRY) == []
    assert _counter(NOT_STORED, cn, st_code) == before + 1


def test_unknown_flag_letters_pass_the_validator_and_garbage_does_not():
    from aqpipe.reading import Reading
    from aqpipe.validate import Validator

    now = 1_800_000_000 * 10**9
    Validator().check(Reading("stack", "x", now, {"so2": 1.0}, {"so2": "K"}), now)
    with pytest.raises(RejectedReading) as caught:
        Validator().check(Reading("stack", "x", now, {"so2": 1.0}, {"so2": "K 1"}), now)
    assert caught.value.reason is Reason.SCHEMA
    seg = MINUTE_SEGMENT.replace("a21026-Flag=N", "a21026-Flag=*")
    with pytest.raises(Hj212Error):
        frame_to_readings(parse_frame(build_frame(seg)), REGISTRY, BOILER_MN)


_ENCRYPTED = (DATA / "good" / "2025_sm4_backfilled_rf1_hourly" / "input.txt").read_bytes()


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, len(_ENCRYPTED)), st.sampled_from(["delete", "insert", "replace"]),
                          st.sampled_from([b"{", b"}", b",", b"0", b"x", b"Z", b"&", b";", b"#", b"\xff", b"\r\n"])),
                min_size=1, max_size=4))
def test_a_damaged_encrypted_frame_is_rejected_only_with_the_decoders_error(edits):
    payload = bytearray(_ENCRYPTED)
    for at, how, byte in edits:
        at = min(at, len(payload))
        if how == "delete":
            del payload[at : at + 1]
        elif how == "insert":
            payload[at:at] = byte
        else:
            payload[at : at + 1] = byte
    try:
        decode(bytes(payload), "620503202500000000000006", REGISTRY)
    except RejectedReading:
        pass
