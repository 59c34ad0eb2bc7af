"""HJ 212-2017 and HJ 212-2025 frames (and HJ/T 212-2005 pollutant codes) to readings. Pure: no I/O.

The two versions are decoded side by side: the version is in `Flag` (bits 2-7: 0 =
HJ/T 212-2005, 1 = 2017, 2 = 2025) and the registry may pin a logger to one. A 2025
frame may carry an SM4-encrypted CP (`hj212_crypto`), decrypted with the logger's key
from the registry's secrets file; `RF=1` marks back-filled data, stored like any other.

Public entry point for the ingest service: `decode(payload, topic_mn, registry)`.
The pieces it is made of (`split_frames`, `parse_frame`, `frame_to_readings`) are
public too, for the CLI, the simulator and the TCP gateway, as are `build_frame`,
`build_encrypted_frame`, `reply_frame` and `reply_9014`.

Every failure is a `RejectedReading` (HJ 212 structure problems are its subclass
`Hj212Error`, with a `kind`), so the caller dead-letters the raw payload and loses
nothing. The access password (PW) never appears in a repr, an error, or output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Mapping

from aqpipe import dataflags
from aqpipe.decoders import hj212_crypto
from aqpipe.decoders.hj212_metrics import BACKFILLED, NOT_STORED
from aqpipe.errors import Reason, RejectedReading
from aqpipe.reading import Reading
from aqpipe.registry import Registry

# --------------------------------------------------------------------------- tables

BEIJING = timezone(timedelta(hours=8))  # HJ 212 times are Beijing time, no DST
EPOCH = _EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Data upload commands -> the suffix that carries the main value.
DATA_COMMANDS: dict[str, str] = {
    "2011": "Rtd",  # real-time data
    "2051": "Avg",  # minute data
    "2061": "Avg",  # hourly data
    "2031": "Avg",  # daily data
}

# Suffix -> field-name ending, per command. A suffix not listed for a command
# rejects the frame (syntax): better a visible dead letter than a silent drop.
_REALTIME_SUFFIXES = {"Rtd": "", "ZsRtd": "_zs"}
_INTERVAL_SUFFIXES = {
    "Avg": "", "Min": "_min", "Max": "_max",
    "ZsAvg": "_zs", "ZsMin": "_zs_min", "ZsMax": "_zs_max",
    "Cou": "_cou",
}
SUFFIX_FIELDS: dict[str, dict[str, str]] = {
    "2011": _REALTIME_SUFFIXES,
    "2051": _INTERVAL_SUFFIXES,
    "2061": _INTERVAL_SUFFIXES,
    "2031": _INTERVAL_SUFFIXES,
}
assert SUFFIX_FIELDS.keys() == DATA_COMMANDS.keys()
# Suffixes whose value must be a number; any other suffix (Flag, EFlag,
# SampleTime, and those of non-data commands such as SB1-RS or i12001-Info) is
# kept as text, exactly as on the wire.
NUMERIC_SUFFIXES = frozenset(_REALTIME_SUFFIXES) | frozenset(_INTERVAL_SUFFIXES)
# Read but not stored: EFlag is the vendor's equipment status code (no common
# meaning across vendors, and the data flag already says whether the value is
# usable); SampleTime is the water-sampler's sampling time, meaningless for the
# continuous gas/dust analysers and ambient monitors this pipeline stores.
IGNORED_SUFFIXES = _IGNORED_SUFFIXES = frozenset({"EFlag", "SampleTime"})

# Data flags: the table is aqpipe.dataflags (letter -> meaning, valid or not). A letter
# not in it (HJ 212-2025 may have added some) is kept and stored as sent, never fatal;
# the aggregator counts it as invalid by the same table.
DATA_FLAGS = frozenset(dataflags.DATA_FLAGS)

# Protocol version in Flag bits 2-7 (HJ 212-2025 6.3.3; the same layout in 2017).
FLAG_VERSIONS: dict[int, str] = {0: "2005", 1: "2017", 2: "2025"}
VERSION_FLAG_BITS: dict[str, int] = {v: k << 2 for k, v in FLAG_VERSIONS.items()}

# System codes (ST). `stored`: whether data commands of that system become readings;
# power-use (44) and production-condition (45) frames carry d2xxxx/d3xxxx/p99xxx codes
# (currents, condition marks such as Rtd=St), not pollutant concentrations: they are
# counted in aqpipe_hj212_not_stored_total{cn,st} and not stored (no measurement for them).
SYSTEM_CODES: dict[str, tuple[str, bool]] = {
    "21": ("surface water quality", True),
    "22": ("ambient air quality", True),
    "23": ("regional environmental noise", True),
    "27": ("VOCs (HJ 212-2025)", True),
    "31": ("air pollution source", True),
    "32": ("surface-water pollution source", True),
    "44": ("power-use monitoring (HJ 212-2025)", False),
    "45": ("key production conditions (HJ 212-2025)", False),
    "91": ("system interaction", True),
}

# Commands that are not stored as readings, on purpose, each counted in
# aqpipe_hj212_not_stored_total{cn} (ingest/README-hj212.md says why): HJ 212-2025
# 2062 standard-sample checks (a QA record of the analyser, not an emission), 3020
# site-equipment information (text), 2111 furnace-temperature 5-minute means (codes
# not in our table, and no measurement for them yet), 2013 raw VOC spectra, 2041
# equipment running time. Any other command without a table row is also not stored
# and counted the same way.
NOT_STORED_COMMANDS: dict[str, str] = {
    "2062": "standard-sample check (HJ 212-2025)",
    "3020": "site equipment information (HJ 212-2025)",
    "2111": "furnace temperature 5-minute mean (HJ 212-2025)",
    "2013": "raw monitoring data, VOC spectra (HJ 212-2025)",
    "2041": "equipment running time",
    "9015": "heartbeat (HJ 212-2025)",
}

# Pollutant code -> aqpipe field (DESIGN.md names). 2017 codes (HJ 524 based),
# then HJ/T 212-2005 codes that older loggers still send, as aliases.
POLLUTANT_FIELDS: dict[str, str] = {
    # flue gas (CEMS) and ambient pollutants, 2017
    "a21026": "so2",
    "a21002": "nox",
    "a21003": "no",
    "a21004": "no2",
    "a21005": "co",
    "a34013": "pm",
    "a34002": "pm10",
    "a34004": "pm25",
    "a05024": "o3",
    "a19001": "o2",
    "a01011": "velocity",
    "a01012": "temp",
    "a01013": "pressure",
    "a01014": "humidity",
    "a00000": "flow",
    # ambient meteorology, 2017 (HJ 212-2017 appendix; what ambient stations send
    # beside the pollutants: without these, every such frame would be rejected)
    "a01001": "temp",
    "a01002": "rh",
    "a01006": "pa",
    "a01007": "ws",
    "a01008": "wd",
    # HJ/T 212-2005 aliases
    "01": "pm",
    "02": "so2",
    "03": "nox",
    "S01": "o2",
    "S02": "velocity",
    "S03": "temp",
    "S05": "humidity",
    "S08": "pressure",
    "B02": "flow",
}

# Derived once from the two tables above: CN -> code -> suffix -> field name,
# e.g. _FIELD_NAMES["2051"]["a21026"]["ZsAvg"] == "so2_zs".
_FIELD_NAMES: dict[str, dict[str, dict[str, str]]] = {
    cn: {code: {sfx: name + end for sfx, end in suffixes.items()} for code, name in POLLUTANT_FIELDS.items()}
    for cn, suffixes in SUFFIX_FIELDS.items()
}

def is_data_flag(value: object) -> bool:
    """A known data-flag letter, or an unknown one of the right shape (kept, counted invalid):
    HJ 212-2025 may add letters, and a new letter must never make a frame fatal."""
    return value in DATA_FLAGS or dataflags.is_flag(str(value))


def field_names(frame: FrameHead) -> dict[str, dict[str, str]] | None:
    """code -> suffix -> stored field name for a data frame; None if the frame is not
    stored (a command that uploads no data, or a system code kept out of storage)."""
    if not SYSTEM_CODES.get(frame.st, ("", True))[1]:
        return None
    return _FIELD_NAMES.get(frame.cn)


# Header fields of the data segment, before CP. Anything else is a syntax error.
_HEADER_KEYS = frozenset({"QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO", "RF"})
_MAX_MN = 24  # characters, HJ 212-2017 6.3.2

# A number as HJ 212 writes it. float() alone would also take " 1", "1_0" and
# non-ASCII digits; nan/inf are let through on purpose so that the shared
# validator rejects them with the right reason (not_finite), not "syntax".
_NUMBER = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?i:nan|inf|infinity)"
)
# Where a frame starts inside a line (concatenated frames).
_FRAME_START = re.compile(r"##(?=[0-9]{4})")
# Characters of a CP made only of codes, numbers and separators (see _parse_cp).
_PLAIN_CHARS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.,;=&+-"


def _is_plain(cp: str) -> bool:
    return cp.isascii() and not cp.encode("ascii").translate(None, _PLAIN_CHARS)

_PW_VALUE = re.compile(r"PW=([^;&\r\n]*)")

Kind = Literal["framing", "length", "crc", "syntax", "decrypt"]
_KIND_REASON: dict[str, Reason] = {
    "framing": Reason.HJ212_FRAMING,
    "length": Reason.HJ212_LENGTH,
    "crc": Reason.HJ212_CRC,
    "syntax": Reason.HJ212_SYNTAX,
    "decrypt": Reason.HJ212_DECRYPT,
}


class Hj212Error(RejectedReading):
    """A frame that is not valid HJ 212; `kind` is framing, length, crc, syntax or decrypt."""

    def __init__(self, kind: Kind, detail: str) -> None:
        super().__init__(_KIND_REASON[kind], detail)
        self.kind: Kind = kind


# --------------------------------------------------------------------------- CRC

def _crc_byte(register: int) -> int:
    """Eight shift/XOR rounds of the HJ 212 CRC on one register value."""
    for _ in range(8):
        register = (register >> 1) ^ 0xA001 if register & 1 else register >> 1
    return register


def crc16_hj212_bitwise(data: bytes) -> int:
    """The CRC exactly as the standard defines it, bit by bit. Slow: tests and bench only."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ byte
        crc = _crc_byte(crc)
    return crc


# Why a table and a fold instead of a loop over bytes:
# each step is crc' = T[(crc >> 8) ^ byte], where T[i] = eight rounds on i (the
# usual reflected 0xA001 table). `crc >> 8` drops the low byte, so the state that
# matters is the high byte h, and h' = H[h ^ byte] with H[i] = T[i] >> 8. T and H
# are linear over GF(2) (shift and XOR only), so h' = H[h] ^ H[byte], and
# unrolled over a message b_0..b_{n-1}:
#     crc = T[ H^(n-1)(0xFF) ^ XOR_k H^(n-1-k)(b_k) ].
# H has order 8 (H^8 = identity, checked at import), so H^d depends only on
# d mod 8: XOR together all bytes whose distance from the end has the same
# residue (one fold of the message as a big integer: eight 8-byte lanes), map
# each lane byte through its table, and XOR. Linear in C speed, not per byte in
# Python: ~30x faster than a table-driven byte loop on a 400-byte frame.
_T = [_crc_byte(i) for i in range(256)]
_H = [t >> 8 for t in _T]


def _h_power(j: int, x: int) -> int:
    for _ in range(j):
        x = _H[x]
    return x


if any(_h_power(8, x) != x for x in range(256)):  # pragma: no cover - a broken table
    raise AssertionError("HJ 212 CRC: H^8 is not the identity; the fold is invalid")

# _LANE[j][x] = T[H^j(x)]: the contribution of lane j (distance d = j mod 8).
_LANE = [[_T[_h_power(j, x)] for x in range(256)] for j in range(8)]
# _INIT[m] = T[H^m(0xFF)]: the initial register's contribution, m = (n-1) mod 8.
_INIT = [_T[_h_power(m, 0xFF)] for m in range(8)]
_L0, _L1, _L2, _L3, _L4, _L5, _L6, _L7 = _LANE


def crc16_hj212(data: bytes) -> int:
    """HJ 212 CRC of `data` (the data segment): init 0xFFFF, shift-then-XOR, poly 0xA001."""
    n = len(data)
    if n == 0:
        return 0xFFFF
    x = int.from_bytes(data, "big")  # byte k sits at bit 8*(n-1-k): lane (n-1-k) % 8
    width = 64
    while width < 8 * n:
        width <<= 1
    while width > 64:  # fold halves: bit offsets keep their residue mod 64
        width >>= 1
        x = (x >> width) ^ (x & ((1 << width) - 1))
    return (
        _INIT[(n - 1) & 7]
        ^ _L0[x & 0xFF] ^ _L1[(x >> 8) & 0xFF] ^ _L2[(x >> 16) & 0xFF] ^ _L3[(x >> 24) & 0xFF]
        ^ _L4[(x >> 32) & 0xFF] ^ _L5[(x >> 40) & 0xFF] ^ _L6[(x >> 48) & 0xFF] ^ _L7[x >> 56]
    )


# --------------------------------------------------------------------------- frame

@dataclass(slots=True, kw_only=True)
class FrameHead:
    """A checked frame's header: everything but what its CP holds."""

    qn: str | None  # request number, echoed in replies; absent in many 2005 frames
    st: str
    cn: str
    pw: str | None = field(repr=False)  # secret: kept for the reply, never shown
    mn: str
    flag: int | None
    pnum: int | None
    pno: int | None
    rf: bool = False  # RF=1: a back-filled (补传) packet (HJ 212-2025)
    encrypted: bool = False  # the CP came SM4-encrypted and was decrypted

    @property
    def version(self) -> str | None:
        """"2005", "2017", "2025" from Flag bits 2-7; None without Flag or for an unknown version."""
        return FLAG_VERSIONS.get(self.flag >> 2) if self.flag is not None else None


@dataclass(slots=True, kw_only=True)
class Frame(FrameHead):
    """One parsed frame: header fields, CP values exactly as on the wire, other CP keys."""

    data_time: datetime | None  # Beijing time (UTC+8)
    values: dict[str, dict[str, float | str]]  # {"a21026": {"Avg": 45.1, "Flag": "N"}}
    extra: dict[str, str]  # other CP keys, e.g. {"RtdInterval": "30"}


def _bad(kind: Kind, detail: str) -> Hj212Error:
    return Hj212Error(kind, detail)


def parse_frame(text: str | bytes, keys: Mapping[str, bytes] | None = None) -> Frame:
    """Parse and check one frame: `##`, length, CRC, structure. The trailing CRLF is optional.

    `keys` (SM4 key by MN) decrypts HJ 212-2025 frames whose CP is encrypted; such a
    frame without a key for its MN, or that does not decrypt, is a `decrypt` error.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise _bad("framing", f"frame is not UTF-8 (byte {e.start})") from None
    try:
        head, cp = _parse(text, keys)
        return _frame(head, cp)
    except Hj212Error as e:
        raise _scrubbed(e, text) from None


def _scrubbed(e: Hj212Error, text: str) -> Hj212Error:
    """Belt and braces: whatever a detail quotes, the password never goes out."""
    for secret in _PW_VALUE.findall(text):
        if secret:
            e.detail = e.detail.replace(secret, "***")
    e.args = (f"{e.reason.value}: {e.detail}",)
    return e


# A frame's header fields, checked, as keywords of FrameHead and Frame.
HeadFields = dict[str, Any]


def _frame(head: HeadFields, cp: str) -> Frame:
    values, extra, data_time = _parse_cp(cp)
    return Frame(**head, data_time=data_time, values=values, extra=extra)


def _parse(text: str, keys: Mapping[str, bytes] | None) -> tuple[HeadFields, str]:
    """Framing, length, CRC (of the decrypted segment for a 2025 encrypted CP) and header:
    the header fields and the plain CP text, which _parse_cp then reads."""
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if not text.startswith("##"):
        raise _bad("framing", "frame does not start with '##'")
    if len(text) < 10:
        raise _bad("framing", f"frame is {len(text)} characters, shorter than '##', length and CRC")
    length_field = text[2:6]
    if not (length_field.isascii() and length_field.isdigit()):
        raise _bad("framing", "length field is not 4 decimal digits")
    crc_field = text[-4:]
    try:
        if not (crc_field.isascii() and crc_field.isalnum()):  # int() would take "+1_f"
            raise ValueError
        received = int(crc_field, 16)
    except ValueError:
        raise _bad("framing", "CRC field is not 4 hex digits") from None
    data = text[6:-4]
    try:
        raw = data.encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates in a str: never came from bytes
        raise _bad("framing", f"data segment is not encodable as UTF-8 (character {e.start})") from None
    cp_at = data.find("CP=&&{0x")
    if cp_at >= 0:
        return _parse_encrypted(data, raw, cp_at, int(length_field), received, keys)
    if len(raw) != int(length_field):
        raise _bad("length", f"length field says {int(length_field)} bytes, data segment has {len(raw)}")
    computed = crc16_hj212(raw)
    if computed != received:
        raise _bad("crc", f"CRC field is {crc_field.upper()}, data segment gives {computed:04X}")
    return _parse_segment(data)


def _parse_encrypted(data: str, raw: bytes, cp_at: int, length: int, received: int,
                     keys: Mapping[str, bytes] | None) -> tuple[HeadFields, str]:
    """An HJ 212-2025 frame with an SM4-encrypted CP: decrypt, then check length and CRC.

    The CRC covers the *plain* data segment (appendix A.2: CRC first, then encrypt).
    The length field: table 2 says the data segment's length, but the appendix's
    encrypted examples give the plain segment's length (0295 for 1128 characters
    sent), so either is accepted; the CRC still checks every byte.
    """
    if not data.endswith("&&"):
        raise _bad("syntax", "CP is not closed by '&&' at the end of the data segment")
    header = _parse_header(data[:cp_at])
    mn = header.get("MN", "")
    key = keys.get(mn) if keys is not None and mn else None
    if key is None:
        raise _bad("decrypt", f"CP is SM4-encrypted and no key is configured for MN {mn!r} "
                              "(hj212_secrets_file of the registry)")
    try:
        cp = hj212_crypto.decrypt_cp(data[cp_at + 5 : -2], key)
    except hj212_crypto.CipherTextError as e:
        raise _bad("decrypt", str(e)) from None
    plain = data[: cp_at + 5] + cp + "&&"
    plain_raw = plain.encode("utf-8")
    if length not in (len(raw), len(plain_raw)):
        raise _bad("length", f"length field says {length} bytes, data segment has {len(raw)} "
                             f"({len(plain_raw)} decrypted)")
    if crc16_hj212(plain_raw) != received:
        # Line noise would have failed elsewhere first in most cases; a wrong key is the usual cause.
        raise _bad("decrypt", "CRC of the decrypted data segment does not match: wrong SM4 key "
                              "for this logger, or a corrupted frame")
    # The header was parsed above; it is the same text before CP=&& (only the CP was encrypted).
    head, cp = _parse_segment(plain, header if data.find("CP=&&") == cp_at else None)
    head["encrypted"] = True
    return head, cp


def _parse_segment(data: str, header: dict[str, str] | None = None) -> tuple[HeadFields, str]:
    cp_at = data.find("CP=&&")
    if cp_at < 0 or (cp_at > 0 and data[cp_at - 1] != ";"):
        raise _bad("syntax", "no 'CP=&&' field")
    if len(data) < cp_at + 7 or not data.endswith("&&"):
        raise _bad("syntax", "CP is not closed by '&&' at the end of the data segment")
    if header is None:
        header = _parse_header(data[:cp_at])

    try:
        st, cn, mn = header["ST"], header["CN"], header["MN"]
    except KeyError as e:
        raise _bad("syntax", f"header has no {e.args[0]} field") from None
    if not (st.isascii() and st.isdigit()):
        raise _bad("syntax", "ST is not a number")
    if not (len(cn) == 4 and cn.isascii() and cn.isdigit()):
        raise _bad("syntax", "CN is not 4 digits")
    if not 0 < len(mn) <= _MAX_MN:
        raise _bad("syntax", f"MN is {len(mn)} characters, expected 1 to {_MAX_MN}")

    rf = header.get("RF")
    if rf is not None and rf != "1":
        raise _bad("syntax", "RF is not 1 (HJ 212-2025 defines only RF=1, absent otherwise)")
    head: HeadFields = {
        "qn": header.get("QN"), "st": st, "cn": cn, "pw": header.get("PW"), "mn": mn,
        "flag": _opt_int(header, "Flag"), "pnum": _opt_int(header, "PNUM"), "pno": _opt_int(header, "PNO"),
        "rf": rf == "1",
    }
    return head, data[cp_at + 5 : -2]


CpFields = tuple[dict[str, dict[str, float | str]], dict[str, str], datetime | None]


def _parse_cp(cp: str) -> CpFields:
    """`DataTime`, `code-Suffix=value` items and other keys of the CP field (between the `&&`)."""
    values: dict[str, dict[str, float | str]] = {}
    extra: dict[str, str] = {}
    data_time: datetime | None = None
    if not cp:
        return values, extra, data_time
    # When the CP holds only the characters numbers, codes and separators are
    # made of, float() accepts exactly what _NUMBER does (no spaces, underscores
    # or non-ASCII digits can be there), so the per-value regex is skipped.
    plain = _is_plain(cp)
    numeric = NUMERIC_SUFFIXES
    last_code = ""
    group: dict[str, float | str] = {}
    for item in cp.replace(",", ";").split(";"):
        if not item:
            continue  # tolerate a trailing or doubled separator
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise _bad("syntax", f"CP item {_quote(item)} is not KEY=VALUE")
        code, dash, suffix = key.partition("-")
        if dash:
            if not code or not suffix:
                raise _bad("syntax", f"CP key {_quote(key)} is not code-Suffix")
            if code != last_code:  # items of one code come together: skip the lookup
                group = values.get(code)
                if group is None:
                    group = values[code] = {}
                last_code = code
            if suffix in group:
                raise _bad("syntax", f"CP key {_quote(key)} appears twice")
            if suffix not in numeric:
                group[suffix] = value
                continue
            if plain or _NUMBER.fullmatch(value):
                try:
                    group[suffix] = float(value)
                    continue
                except ValueError:
                    pass
            raise _bad("syntax", f"{_quote(key)} value {_quote(value)} is not a number")
        elif key == "DataTime":
            if data_time is not None:
                raise _bad("syntax", "DataTime appears twice")
            data_time = _parse_time(value)
        else:
            if key in extra:
                raise _bad("syntax", f"CP key {_quote(key)} appears twice")
            extra[key] = value
    return values, extra, data_time


def _parse_header(head: str) -> dict[str, str]:
    header: dict[str, str] = {}
    for position, item in enumerate(head.split(";"), 1):
        if not item:
            continue
        key, eq, value = item.partition("=")
        # Name the key, never echo the item: it may be the password.
        if not eq:
            raise _bad("syntax", f"header field #{position} is not KEY=VALUE")
        if key not in _HEADER_KEYS:
            raise _bad("syntax", f"unknown header field {_quote(key)}")
        if key in header:
            raise _bad("syntax", f"header field {key} appears twice")
        header[key] = value
    return header


def _opt_int(header: dict[str, str], key: str) -> int | None:
    value = header.get(key)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 6):
        raise _bad("syntax", f"{key} is not a number")
    return int(value)


def _parse_time(value: str) -> datetime:
    """`yyyyMMddHHmmss`, Beijing time. Some loggers append milliseconds (17 digits): accepted."""
    if not (value.isascii() and value.isdigit() and len(value) in (14, 17)):
        raise _bad("syntax", f"DataTime {_quote(value)} is not yyyyMMddHHmmss")
    try:
        return datetime(
            int(value[0:4]), int(value[4:6]), int(value[6:8]),
            int(value[8:10]), int(value[10:12]), int(value[12:14]),
            int(value[14:17] or 0) * 1000,
            tzinfo=BEIJING,
        )
    except ValueError:
        raise _bad("syntax", f"DataTime {_quote(value)} is not a valid date and time") from None


def _quote(s: str, limit: int = 40) -> str:
    return repr(s if len(s) <= limit else s[:limit] + "…")


# --------------------------------------------------------------------------- messages

def split_frames(payload: str) -> list[str]:
    """Frames of one MQTT message: one per line (CRLF or LF), or concatenated on a line.

    Blank lines are skipped. Text before the first `##` of a line comes back as a
    piece of its own, so that parsing it fails (framing) instead of hiding it.
    A frame is cut where the next `##` + four digits starts; HJ 212 data
    segments never contain `#`.
    """
    if payload.startswith("##") and payload.find("#", 2) < 0:
        # The usual message: one frame, maybe a line end. Same result as below.
        # (One "#", not "##": a one-character find is a memchr, a two-character one
        # walks the text in Python's string search, ~10x slower on a 2 KB 2025 frame.)
        line = payload[:-1] if payload.endswith("\n") else payload
        if line.endswith("\r"):
            line = line[:-1]
        if "\n" not in line:
            return [line]
    frames: list[str] = []
    for line in payload.split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        if not line.strip():
            continue
        starts = [m.start() for m in _FRAME_START.finditer(line)]
        if not starts or starts[0] != 0:
            starts.insert(0, 0)
        starts.append(len(line))
        frames.extend(line[a:b] for a, b in zip(starts, starts[1:]))
    return frames


# HJ 212 stamps interval data with the interval's START (hourly data with DataTime
# 08:00:00 covers 08:00-09:00); aqpipe stores a reading at the interval's END
# (DESIGN.md), so the aggregator puts it in the hour it belongs to. Seconds to add
# per data command; None: the logger's minute-data interval, from the registry.
INTERVAL_S_BY_CN: dict[str, int | None] = {"2011": 0, "2051": None, "2061": 3600, "2031": 86400}


def frame_to_readings(frame: Frame, registry: Registry, topic_mn: str | None) -> list[Reading]:
    """Readings of a data frame (CN 2011, 2051, 2061, 2031); other commands give [].

    The whole frame is rejected on any unknown pollutant code or suffix: it then
    goes to the dead letters with its raw payload, and nothing is half-stored.
    """
    target = _target(frame, registry, topic_mn)
    if target is None:
        return []
    if frame.data_time is None:
        raise Hj212Error("syntax", f"data command CN={frame.cn} has no DataTime")
    names_of = _FIELD_NAMES[frame.cn]

    values: dict[str, float] = {}
    flags: dict[str, str] = {}
    for code, group in frame.values.items():
        names = names_of.get(code)
        if names is None:
            raise RejectedReading(Reason.UNKNOWN_POLLUTANT, f"pollutant code {_quote(code)} is not known")
        for suffix, value in group.items():
            name = names.get(suffix)
            if name is not None:
                values[name] = value  # type: ignore[assignment]  # numeric suffixes hold floats
            elif suffix == "Flag":
                if value != "N":  # "N" (normal) is most of them: no lookup
                    if not is_data_flag(value):
                        raise Hj212Error("syntax", f"{code}-Flag {_quote(str(value))} is not a data flag")
                    # Unknown letters too: stored as sent, invalid in rollups.
                    flags[POLLUTANT_FIELDS[code]] = value  # type: ignore[assignment]
            elif suffix not in _IGNORED_SUFFIXES:
                raise Hj212Error("syntax", f"suffix {_quote(suffix)} is not expected in CN={frame.cn}")
    return _readings(frame, registry, target, frame.data_time, values, flags)


def _target(head: FrameHead, registry: Registry, topic_mn: str | None) -> tuple[str, dict[str, str]] | None:
    """Where a frame's readings go (measurement, identity tags), after the checks that need
    no CP; None for a frame that is valid but not stored (not a data command, or a
    system kept out of storage)."""
    if topic_mn is not None and head.mn != topic_mn:
        # Checked for every command: a device never speaks for another one.
        raise RejectedReading(
            Reason.IDENTITY_MISMATCH, f"frame MN {head.mn!r} does not match topic MN {topic_mn!r}"
        )
    check_policy(head, registry)
    if field_names(head) is None:
        return None
    device = registry.by_mn(head.mn)
    if device is None:
        raise RejectedReading(Reason.UNKNOWN_MN, f"MN {head.mn!r} is not in the station or outlet registry")
    return device


def _readings(head: FrameHead, registry: Registry, target: tuple[str, dict[str, str]], data_time: datetime,
              values: dict[str, float], flags: dict[str, str]) -> list[Reading]:
    if not values and not flags:
        return []
    interval_s = INTERVAL_S_BY_CN[head.cn]
    if interval_s is None:
        interval_s = registry.minute_data_s(head.mn)
    measurement, identity = target
    return [Reading(measurement, identity, epoch_ns(data_time) + interval_s * 1_000_000_000, values, flags)]


# The usual data frame, read straight from its CP text (_direct_readings): per data
# command, "code-Suffix" -> stored field name; "code-Flag" -> the field it flags;
# "code-EFlag" and the other keys read but not stored.
_DIRECT_VALUES: dict[str, dict[str, str]] = {
    cn: {f"{code}-{suffix}": name for code, names in by_code.items() for suffix, name in names.items()}
    for cn, by_code in _FIELD_NAMES.items()
}
_DIRECT_FLAGS: dict[str, str] = {f"{code}-Flag": name for code, name in POLLUTANT_FIELDS.items()}
_DIRECT_IGNORED = frozenset(f"{code}-{suffix}" for code in POLLUTANT_FIELDS for suffix in _IGNORED_SUFFIXES)
# Every stored suffix is one _parse_cp converts to float, so float() here matches it.
assert all(set(suffixes) <= NUMERIC_SUFFIXES for suffixes in SUFFIX_FIELDS.values())
_SEMICOLON_TO_COMMA = bytes.maketrans(b";", b",")
_NOT_SEPARATORS = bytes(c for c in range(256) if c not in b";,=")
# "=" ends a key, "," (or ";") a value; enough for the longest CP (9999 bytes).
_KEY_VALUE_SEPARATORS = b"=," * 5000


def _direct_readings(head: FrameHead, cp: str, registry: Registry, topic_mn: str | None) -> list[Reading] | None:
    """The readings of the usual data frame, straight from its CP text; None for any
    other frame, which then goes the general way (_parse_cp, then frame_to_readings).

    The usual frame: a data command of a stored system whose CP is `DataTime=...`, then
    only keys of known code-Suffix pairs, each once, a number where a number belongs,
    data flags, plain ASCII. For it the result is exactly the general way's, readings or
    error (tests/unit/test_hj212_direct.py compares the two on generated frames), without
    the code -> suffix -> value dicts, which took a third of a frame's decode time.
    """
    names = _DIRECT_VALUES.get(head.cn)
    if names is None or field_names(head) is None or not _is_plain(cp):
        return None
    separators = cp.encode("ascii").translate(_SEMICOLON_TO_COMMA, _NOT_SEPARATORS)
    n = len(separators)
    # "=,=,...=": every item is KEY=VALUE with one "=", and no item is empty.
    if not n % 2 or separators != _KEY_VALUE_SEPARATORS[:n]:
        return None
    parts = cp.replace(",", "=").replace(";", "=").split("=")
    if parts[0] != "DataTime":
        return None
    keys = parts[2::2]
    if len(set(keys)) != len(keys):
        return None  # a repeated key: the general way names it
    values: dict[str, float] = {}
    flags: dict[str, str] = {}
    for key, value in zip(keys, parts[3::2]):
        name = names.get(key)
        if name is not None:
            if name in values:
                # Two codes for one field (a 2017 code and its 2005 alias): which value
                # wins depends on the general way's grouping by code, so leave it that.
                return None
            try:
                values[name] = float(value)
            except ValueError:
                return None
        elif key in _DIRECT_FLAGS:
            if value != "N":
                name = _DIRECT_FLAGS[key]
                if name in flags or not is_data_flag(value):
                    return None
                flags[name] = value
        elif key not in _DIRECT_IGNORED:
            return None
    # The CP is valid: from here on, the general way's checks in its order.
    data_time = _parse_time(parts[1])
    target = _target(head, registry, topic_mn)
    if target is None:  # pragma: no cover - field_names(head) was checked above
        return None
    return _readings(head, registry, target, data_time, values, flags)


_EPOCH_ORDINAL = _EPOCH.toordinal()


def epoch_ns(t: datetime) -> int:
    """Nanoseconds since 1970-01-01 UTC of an aware datetime, exact.

    Integer arithmetic on the fields: `(t - EPOCH) // timedelta(microseconds=1)` builds
    three timedelta objects and costs ~3x more, on every frame's hot path.
    """
    offset = t.utcoffset()
    if offset is None:
        raise ValueError("epoch_ns needs an aware datetime")
    seconds = ((t.toordinal() - _EPOCH_ORDINAL) * 86400 + t.hour * 3600 + t.minute * 60 + t.second
               - offset.days * 86400 - offset.seconds)
    return seconds * 1_000_000_000 + (t.microsecond - offset.microseconds) * 1000


def check_policy(frame: FrameHead, registry: Registry) -> None:
    """The registry's version pin and encryption policy for this logger (unknown MNs pass here)."""
    logger = registry.hj212_logger(frame.mn)
    if logger is None:
        return
    if logger.version is not None and frame.version is not None and frame.version != logger.version:
        raise Hj212Error("syntax", f"logger is registered as HJ 212-{logger.version} (hj212_version) but its "
                                   f"Flag={frame.flag} says {frame.version}")
    if (logger.encrypt and not frame.encrypted and not logger.allow_plaintext
            and hj212_crypto.cn_is_encrypted(frame.cn) and frame.cn not in _REPLY_CNS):
        raise RejectedReading(Reason.HJ212_PLAINTEXT,
                              f"logger is registered to encrypt (hj212_encrypt) but sent CN={frame.cn} in plain "
                              "text; set hj212_allow_plaintext while it migrates")


_REPLY_CNS = frozenset({"9011", "9012", "9013", "9014"})


def decode(payload: bytes, topic_mn: str, registry: Registry) -> list[Reading]:
    """All readings of one `aq/v1/hj212/{mn}` message; any bad frame rejects the whole message.

    Frames that are valid but not stored (commands and systems without a measurement)
    are counted in aqpipe_hj212_not_stored_total; RF=1 frames in aqpipe_hj212_backfilled_total.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RejectedReading(Reason.NOT_UTF8, f"payload is not UTF-8 (byte {e.start})") from None
    pieces = split_frames(text)
    if not pieces:
        raise Hj212Error("framing", "message holds no frame")
    readings: list[Reading] = []
    backfilled = 0
    not_stored: list[FrameHead] = []
    keys = registry.hj212_keys
    for piece in pieces:
        try:
            fields, cp = _parse(piece, keys)
            head = FrameHead(**fields)
            got = _direct_readings(head, cp, registry, topic_mn)
            if got is None:
                got = frame_to_readings(_frame(fields, cp), registry, topic_mn)
        except Hj212Error as e:
            raise _scrubbed(e, piece) from None
        if got:
            readings.extend(got)
            backfilled += head.rf
        elif head.cn not in _REPLY_CNS:
            not_stored.append(head)
    # Counted only once the whole message decoded (a rejected message counts as a dead letter).
    if backfilled:
        BACKFILLED.inc(backfilled)
    for frame in not_stored:
        # Labels from the tables only, so a device cannot grow the series count at will.
        cn = frame.cn if frame.cn in NOT_STORED_COMMANDS or frame.cn in DATA_COMMANDS else "other"
        NOT_STORED.labels(cn, frame.st if frame.st in SYSTEM_CODES else "other").inc()
    return readings


# --------------------------------------------------------------------------- building

def build_frame(data_segment: str) -> str:
    """`##` + length + data segment + CRC (uppercase) + CRLF."""
    raw = data_segment.encode("utf-8")
    if len(raw) > 9999:
        raise ValueError(f"data segment is {len(raw)} bytes, HJ 212 allows at most 9999")
    return f"##{len(raw):04d}{data_segment}{crc16_hj212(raw):04X}\r\n"


def reply_9014(frame: Frame, version: str | None = None) -> str:
    """The platform's data reply (数据应答) to an upload that asked for one (Flag bit 0)."""
    return reply_frame(frame, "9014", version)


def reply_frame(frame: Frame, cn: str, version: str | None = None, cp: str = "") -> str:
    """A platform reply (9011, 9013, 9014) to `frame`, in the form of the logger's version.

    `version` is the registry's pin for the logger; without one, 2025 when the frame's
    Flag says 2025, else 2017 (a Flag with version bits 0 is read as 2017 here: 2017
    loggers that send Flag=1 exist, so the 2005 form is only for loggers *registered*
    as 2005). HJ 212-2017/2025 form: same QN, PW and MN, ST=91, the reply CN, Flag
    with the same version bits and no reply wanted (4 for 2017, 8 for 2025), CP as
    given (empty for 9013/9014). HJ/T 212-2005 form (QN inside CP): `ST=91;CN=9014;
    PW=…;MN=…;CP=&&QN=…;CN=<the uploaded CN>&&`, no Flag (as a 2005 implementation's
    replies, ingest/README-hj212.md). Loggers match the reply on QN.
    """
    if version is None:
        version = "2025" if frame.version == "2025" else "2017"
    if version == "2005":
        head = ["ST=91", f"CN={cn}"]
        if frame.pw is not None:
            head.append(f"PW={frame.pw}")
        head.append(f"MN={frame.mn}")
        inner = [f"QN={frame.qn}"] if frame.qn is not None else []
        if cn == "9014":
            inner.append(f"CN={frame.cn}")
        if cp:
            inner.append(cp)
        head.append(f"CP=&&{';'.join(inner)}&&")
        return build_frame(";".join(head))
    head = [f"QN={frame.qn}"] if frame.qn is not None else []
    head += ["ST=91", f"CN={cn}"]
    if frame.pw is not None:
        head.append(f"PW={frame.pw}")
    head += [f"MN={frame.mn}", f"Flag={VERSION_FLAG_BITS[version]}", f"CP=&&{cp}&&"]
    return build_frame(";".join(head))


def build_encrypted_frame(data_segment: str, key: bytes, length: Literal["sent", "plain"] = "sent") -> str:
    """An HJ 212-2025 frame with its CP SM4-encrypted: CRC over the plain segment (appendix A.2).

    `length="plain"` writes the plain segment's length, as the appendix's examples do.
    """
    cp_at = data_segment.find("CP=&&")
    if cp_at < 0 or not data_segment.endswith("&&"):
        raise ValueError("data segment has no CP=&&...&&")
    plain_raw = data_segment.encode("utf-8")
    wire = data_segment[: cp_at + 5] + hj212_crypto.encrypt_cp(data_segment[cp_at + 5 : -2], key) + "&&"
    n = len(plain_raw) if length == "plain" else len(wire.encode("utf-8"))
    if n > 9999:
        raise ValueError(f"data segment is {n} bytes, HJ 212 allows at most 9999")
    return f"##{n:04d}{wire}{crc16_hj212(plain_raw):04X}\r\n"
