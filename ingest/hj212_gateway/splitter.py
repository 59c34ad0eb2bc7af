"""Frames out of a TCP byte stream (`FrameSplitter`), and the MN a frame names as a topic level."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from aqpipe.decoders.hj212 import Frame, Hj212Error, parse_frame
from aqpipe.errors import Reason

_MARK = re.compile(rb"##[0-9]{4}")  # where a frame can start
_LINE_END = b"\r\n"
_HEADER = 6  # "##" + 4-digit length
_OVERHEAD = 10  # header + 4-hex CRC (CRLF not counted)
# An MN becomes a topic level: nothing that MQTT gives a meaning, nothing invisible.
TOPIC_SAFE_MN = re.compile(r"[0-9A-Za-z_.\-]{1,24}")
_MN_FIELD = re.compile(rb"(?:^|;)MN=([^;&]*)")


def mn_of(raw: bytes) -> str | None:
    """The MN of a frame that does not parse, if it names a usable one."""
    m = _MN_FIELD.search(raw[6:])  # after "##dddd"
    if m is None:
        return None
    mn = m.group(1).decode("ascii", "replace")
    return mn if TOPIC_SAFE_MN.fullmatch(mn) else None


@dataclass(slots=True)
class Accepted:
    frame: Frame
    raw: bytes  # the frame as received, CRLF-terminated


@dataclass(slots=True)
class Rejected:
    reason: Reason
    detail: str  # never holds the password (parse_frame scrubs it)
    size: int
    # A frame-shaped piece (starts with ##dddd) that fails length, CRC or structure: it is
    # forwarded, unanswered, for ingest to dead-letter with its reason (kept, inspectable).
    raw: bytes | None = None


class FrameSplitter:
    """Frames out of a TCP byte stream, with a bounded buffer.

    `feed(data)` returns the frames completed by `data`, valid (`Accepted`) or not
    (`Rejected`, with the decoder's reason). A frame is cut at the end its length
    field gives when the CRC checks there (the CRLF is then optional); otherwise at
    the first CRLF or the next `##dddd`, whichever comes first, and the piece is
    reported with its precise reason (length, crc, framing). Bytes outside frames
    are skipped and counted in `garbage_bytes`. Never more than `max_frame_bytes`
    plus one read is buffered: a length field above the limit is refused at once,
    and a frame without an end within the limit is dropped.
    """

    def __init__(self, max_frame_bytes: int, keys: Mapping[str, bytes] | None = None) -> None:
        self.max_frame_bytes = max_frame_bytes
        # SM4 keys by MN: an HJ 212-2025 encrypted frame's CRC covers its plain text,
        # so checking it needs the key (and its length field may give the plain length,
        # which is why the cut falls back to the CRLF below).
        self.keys = keys
        self.garbage_bytes = 0
        self.high_water = 0  # largest buffer seen, for tests and curiosity
        self._buf = bytearray()
        self._exact_tried = False  # the frame at the buffer start was parsed at its stated length

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Accepted | Rejected]:
        buf = self._buf
        buf += data
        self.high_water = max(self.high_water, len(buf))
        out: list[Accepted | Rejected] = []
        pos = 0
        try:
            while True:
                pos = self._resync(buf, pos)
                if len(buf) - pos < _HEADER:
                    break
                taken = self._take(buf, pos, out)
                if taken == 0:
                    break
                pos += taken
                self._exact_tried = False
        finally:
            del buf[:pos]
        return out

    def _resync(self, buf: bytearray, pos: int) -> int:
        """Move `pos` to the next `##dddd` (or as close as the data allows), counting garbage."""
        end = len(buf)
        while pos < end:
            c = buf[pos]
            if c == 0x0D or c == 0x0A:  # line ends between frames are not garbage
                pos += 1
                continue
            m = _MARK.search(buf, pos)
            if m is not None:
                self.garbage_bytes += m.start() - pos
                return m.start()
            # No full mark: keep a tail that could still become one ("#", "##", "##01"...).
            keep = pos
            for k in range(max(pos, end - 5), end):
                if buf[k] == 0x23 and all(0x30 <= b <= 0x39 for b in buf[k + 2 : end]) and (
                    k + 1 >= end or buf[k + 1] == 0x23
                ):
                    keep = k
                    break
            else:
                keep = end
            self.garbage_bytes += keep - pos
            return keep
        return pos

    def _take(self, buf: bytearray, pos: int, out: list[Accepted | Rejected]) -> int:
        """Bytes consumed by the frame starting at `pos` (0: wait for more)."""
        length = int(buf[pos + 2 : pos + 6])
        n = length + _OVERHEAD
        if n + len(_LINE_END) > self.max_frame_bytes:
            out.append(Rejected(Reason.OVERSIZE, f"length field {length} makes a frame larger than "
                                                 f"max_frame_bytes {self.max_frame_bytes}", _HEADER))
            return 2  # drop "##": what follows is skipped as garbage up to the next frame
        avail = len(buf) - pos
        if avail >= n and not self._exact_tried:
            self._exact_tried = True
            try:
                frame = parse_frame(bytes(buf[pos : pos + n]), self.keys)
            except Hj212Error as e:
                if e.kind == "syntax":  # length and CRC check: the boundary is certain
                    out.append(Rejected(e.reason, e.detail, n, raw=bytes(buf[pos : pos + n]) + _LINE_END))
                    return n
            else:
                out.append(Accepted(frame, bytes(buf[pos : pos + n]) + _LINE_END))
                return n
        # The stated length does not end a valid frame: cut at the first line end or next mark.
        crlf = buf.find(_LINE_END, pos + _HEADER)
        mark = _MARK.search(buf, pos + 2)
        ends = [e for e in (crlf + 2 if crlf >= 0 else -1, mark.start() if mark else -1) if e > 0]
        if ends:
            end = min(ends)
            piece = bytes(buf[pos:end])
            try:
                out.append(Accepted(parse_frame(piece, self.keys), piece.rstrip(b"\r\n") + _LINE_END))
            except Hj212Error as e:
                # Kept for the dead letters like any bad input (HJ 212 issue: length, CRC and
                # structure faults are dead-lettered with their reason); never answered.
                raw = piece.rstrip(b"\r\n") + _LINE_END if e.kind in ("length", "crc", "syntax", "decrypt") else None
                out.append(Rejected(e.reason, e.detail, len(piece), raw=raw))
            return end - pos
        if avail >= self.max_frame_bytes:
            out.append(Rejected(Reason.HJ212_FRAMING, f"no frame end (CRLF or next '##') within "
                                                      f"max_frame_bytes {self.max_frame_bytes}", avail))
            return 2
        return 0
