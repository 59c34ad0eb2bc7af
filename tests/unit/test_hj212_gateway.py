"""The gateway's pure parts: cutting frames out of a TCP stream, and which reply a frame gets."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pathlib import Path

from aqpipe.config import load_config
from aqpipe.decoders.hj212 import build_encrypted_frame, build_frame, parse_frame
from aqpipe.registry import Registry
from ingest.hj212_gateway import Accepted, FrameSplitter, Rejected, gateway_config, reply_for, split_listen
from ingest.hj212_gateway.access import Access, pw_of
from ingest.hj212_gateway.replies import refusal_reply

REGISTRY = Registry.load(Path(__file__).resolve().parents[1] / "data" / "hj212" / "registry")

MN = "91320500MA1X2Y3Z4W000001"


def frame(cn: str = "2051", flag: int = 5, mn: str = MN, qn: str = "20261124140500123") -> bytes:
    return build_frame(f"QN={qn};ST=31;CN={cn};PW=s3cret;MN={mn};Flag={flag};"
                       f"CP=&&DataTime=20261124140500;a21026-Avg=28.4,a21026-Flag=N&&").encode()


def bad_crc(f: bytes) -> bytes:
    crc = f[-6:-2]
    return f[:-6] + (b"0000" if crc != b"0000" else b"FFFF") + b"\r\n"


def outcome(events) -> list[str]:
    return [f"ok:{e.frame.qn}" if isinstance(e, Accepted) else f"bad:{e.reason.value}" for e in events]


def feed_in(splitter: FrameSplitter, data: bytes, cuts: list[int]) -> list:
    events, last = [], 0
    for cut in sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]:
        events += splitter.feed(data[last:cut])
        last = cut
    return events


def test_one_frame_in_one_read_is_accepted_as_received():
    f = frame()
    [event] = FrameSplitter(10011).feed(f)
    assert isinstance(event, Accepted) and event.raw == f and event.frame.mn == MN


def test_a_frame_sent_byte_by_byte_comes_out_once_and_whole():
    f = frame()
    s = FrameSplitter(10011)
    events = [e for i in range(len(f)) for e in s.feed(f[i : i + 1])]
    assert outcome(events) == ["ok:20261124140500123"] and events[0].raw == f
    assert s.buffered == 0 and s.garbage_bytes == 0


def test_several_frames_in_one_read_with_garbage_between_are_all_found():
    data = b"\x00\xffnoise" + frame(qn="1") + b"AT+CSQ\r\n" + frame(qn="2") + frame(qn="3") + b"#"
    s = FrameSplitter(10011)
    assert outcome(s.feed(data)) == ["ok:1", "ok:2", "ok:3"]
    assert s.garbage_bytes == len(b"\x00\xffnoise") + len(b"AT+CSQ\r\n")
    assert s.buffered == 1  # a lone '#' may start the next frame


def test_a_frame_without_crlf_is_accepted_and_published_with_one():
    f = frame().rstrip(b"\r\n")
    [event] = FrameSplitter(10011).feed(f)
    assert isinstance(event, Accepted) and event.raw == f + b"\r\n"


def test_bad_crc_is_rejected_and_the_next_frame_still_comes_through():
    s = FrameSplitter(10011)
    assert outcome(s.feed(bad_crc(frame(qn="1")) + frame(qn="2"))) == ["bad:hj212_crc", "ok:2"]


def test_a_lying_length_is_rejected_as_length_and_the_stream_resyncs():
    f = frame(qn="1")
    lying = f[:2] + b"%04d" % (int(f[2:6]) + 3) + f[6:]
    s = FrameSplitter(10011)
    assert outcome(s.feed(lying + frame(qn="2"))) == ["bad:hj212_length", "ok:2"]
    short = f[:2] + b"%04d" % (int(f[2:6]) - 3) + f[6:]
    assert outcome(s.feed(short + frame(qn="3"))) == ["bad:hj212_length", "ok:3"]


def test_a_truncated_frame_followed_by_a_good_one_loses_only_itself():
    s = FrameSplitter(10011)
    # cut mid-segment, so what stands where the CRC should be is not hex: framing
    assert outcome(s.feed(frame(qn="1")[:50] + frame(qn="2"))) == ["bad:hj212_framing", "ok:2"]


def test_a_frame_with_bad_structure_is_rejected_as_syntax():
    seg = f"QN=1;ST=31;CN=2051;MN={MN};Flag=5;XX=1;CP=&&&&"
    assert outcome(FrameSplitter(10011).feed(build_frame(seg).encode())) == ["bad:hj212_syntax"]


def test_an_oversize_length_field_is_refused_at_once_without_buffering():
    s = FrameSplitter(2048)
    events = s.feed(b"##9999" + b"x" * 100)
    assert outcome(events) == ["bad:oversize"]
    for _ in range(200):  # 2 MB of body that will never be buffered
        assert s.feed(b"y" * 10_000) == []
        assert s.buffered <= 5
    assert outcome(s.feed(frame(qn="after"))) == ["ok:after"]


def test_endless_bytes_after_a_frame_start_are_bounded_by_max_frame_bytes():
    s = FrameSplitter(4096)
    events = s.feed(b"##4000QN=1;")
    for _ in range(100):
        events += s.feed(b"z" * 1000)
        assert s.buffered <= 4096 + 1000
    assert outcome(events) == ["bad:hj212_framing"]
    assert s.high_water <= 4096 + 1000


def test_garbage_alone_never_accumulates():
    s = FrameSplitter(10011)
    for _ in range(100):
        assert s.feed(b"#a" * 5000) == []
        assert s.buffered <= 5
    assert s.garbage_bytes >= 100 * 10000 - 5


good_or_bad = st.sampled_from(["good", "crc", "junk", "truncated"])


@settings(max_examples=150, deadline=None)
@given(kinds=st.lists(good_or_bad, min_size=1, max_size=6), cuts=st.lists(st.integers(0, 3000), max_size=40))
def test_how_the_stream_is_cut_into_reads_never_changes_what_comes_out(kinds, cuts):
    parts, expected = [], []
    for i, kind in enumerate(kinds):
        f = frame(qn=str(i))
        if kind == "good":
            parts.append(f)
            expected.append(f"ok:{i}")
        elif kind == "crc":
            parts.append(bad_crc(f))
            expected.append("bad:hj212_crc")
        elif kind == "junk":
            parts.append(b"\x00junk##xx\r\n")
        else:
            parts.append(f[:40])
            expected.append("bad:hj212_framing")
    data = b"".join(parts) + frame(qn="end")
    expected.append("ok:end")
    assert outcome(feed_in(FrameSplitter(10011), data, cuts)) == expected


@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=20))
def test_arbitrary_bytes_never_raise_and_stay_bounded(data, cuts):
    s = FrameSplitter(512)
    for event in feed_in(s, data, cuts):
        assert isinstance(event, (Accepted, Rejected))
    assert s.buffered <= 512 + 3000


@pytest.mark.parametrize("cn, flag, reply_cn", [
    ("2051", 5, "9014"), ("2011", 5, "9014"), ("2061", 5, "9014"), ("2031", 5, "9014"), ("3020", 5, "9014"),
    ("1013", 5, "9013"),
    ("2051", 4, None), ("9014", 5, None), ("9012", 5, None), ("1062", 5, None), ("2051", 1, "9014"),
])
def test_reply_follows_the_flag_and_the_command(cn, flag, reply_cn):
    f = parse_frame(frame(cn=cn, flag=flag))
    reply = reply_for(f)
    if reply_cn is None:
        assert reply is None
        return
    r = parse_frame(reply)
    assert (r.cn, r.st, r.qn, r.mn, r.flag, r.pw) == (reply_cn, "91", f.qn, f.mn, 4, f.pw)
    assert reply.endswith("\r\n")


def test_listen_address_and_options_override_the_config():
    assert split_listen("0.0.0.0:9212") == ("0.0.0.0", 9212)
    assert split_listen("[::1]:9212") == ("::1", 9212)
    cfg = load_config(None, {"AQPIPE_HJ212_GATEWAY__IDLE_TIMEOUT_S": "60"})
    args = argparse.Namespace(listen="127.0.0.1:0", max_connections=3, idle_timeout=None, max_frame_bytes=None)
    g = gateway_config(cfg, args)
    assert (g.listen, g.max_connections, g.idle_timeout_s, g.max_frame_bytes) == ("127.0.0.1:0", 3, 60.0, 10011)


@pytest.mark.parametrize("mn, pw, check_pw, refusal", [
    ("91320500MA1X2Y3Z4W000001", "T0pS3cret", True, None),
    ("91320500MA1X2Y3Z4W000001", "T0pS3cre", True, "auth"),  # a prefix of the right PW
    ("91320500MA1X2Y3Z4W000001", "T0pS3cretX", True, "auth"),
    ("91320500MA1X2Y3Z4W000001", None, True, "auth"),  # no PW field
    ("88888880000001", "anything", True, "auth"),  # registered, but no PW in the secrets file: fail closed
    ("88888880000001", "anything", False, None),  # check_pw off: the MN is enough
    ("91320500MA1X2Y3Z4W000001", "wrong", False, None),
    ("NOT0REGISTERED0000000001", "T0pS3cret", True, "unknown_mn"),
    ("NOT0REGISTERED0000000001", "T0pS3cret", False, "unknown_mn"),
])
def test_only_registered_loggers_with_their_pw_may_talk(mn, pw, check_pw, refusal):
    assert Access(REGISTRY, check_pw).check(mn, pw) == refusal


def test_the_pw_of_a_frame_that_does_not_parse_is_found_for_the_access_check():
    assert pw_of(b"##0040QN=1;ST=31;CN=2051;PW=abc;MN=X;CP=&&x&&") == "abc"
    assert pw_of(b"##0040QN=1;ST=31;CN=2051;MN=X;CP=&&x&&") is None


def test_a_2025_logger_gets_its_replies_with_the_2025_version_bits():
    f = parse_frame(frame(flag=9))  # 2025, reply wanted
    r = parse_frame(reply_for(f))
    assert (r.cn, r.flag, r.version, r.qn, r.pw) == ("9014", 8, "2025", f.qn, f.pw)


def test_the_9015_heartbeat_is_answered_with_9013_when_it_asks():
    assert parse_frame(reply_for(parse_frame(frame(cn="9015", flag=9)))).cn == "9013"
    assert reply_for(parse_frame(frame(cn="9015", flag=8))) is None


def test_a_logger_registered_as_2005_gets_the_qn_inside_cp():
    f = parse_frame(frame(flag=1))
    reply = reply_for(f, "2005")
    assert reply.startswith("##") and ";Flag=" not in reply
    r = parse_frame(reply)
    assert (r.cn, r.qn, r.extra) == ("9014", None, {"QN": f.qn, "CN": "2051"})
    # Flag=1 without a 2005 registration is answered in the 2017 form (2017 loggers send Flag=1 too)
    assert parse_frame(reply_for(f)).flag == 4


def test_a_refused_logger_may_get_9011_with_the_pw_error_code_and_its_own_pw_only():
    f = parse_frame(frame(flag=9))
    r = parse_frame(refusal_reply(f, "auth"))
    assert (r.cn, r.extra, r.pw, r.flag) == ("9011", {"QnRtn": "3"}, "s3cret", 8)
    assert parse_frame(refusal_reply(f, "unknown_mn")).extra == {"QnRtn": "4"}


def test_an_encrypted_frame_whose_length_is_the_plain_length_is_still_cut_and_accepted():
    key = REGISTRY.hj212_keys["620503202500000000000006"]
    seg = ("QN=20261124090000001;ST=31;CN=2061;PW=606060;MN=620503202500000000000006;Flag=9;"
           "CP=&&DataTime=20261124080000;a21026-Avg=31.5,a21026-Flag=N;a19001-Avg=12.6,a19001-Flag=N&&")
    plain_len = build_encrypted_frame(seg, key, length="plain").encode()
    sent_len = build_encrypted_frame(seg, key).encode()
    s = FrameSplitter(10011, REGISTRY.hj212_keys)
    events = feed_in(s, b"noise" + plain_len + sent_len + frame(qn="after"), [7, 40, 300, 301])
    assert outcome(events) == ["ok:20261124090000001", "ok:20261124090000001", "ok:after"]
    assert all(e.frame.encrypted for e in events[:2])
    assert events[0].raw == plain_len  # published as received, still encrypted
    # Without the key the frame is refused as undecryptable and kept for the dead letters.
    (event,) = FrameSplitter(10011).feed(sent_len)
    assert isinstance(event, Rejected) and event.reason.value == "hj212_decrypt" and event.raw == sent_len
