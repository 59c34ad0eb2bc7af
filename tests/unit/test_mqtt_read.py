"""aqpipe's paho client reads the broker's packets as paho does: the same messages, in the
same order, the same answers queued, whatever the packets and wherever the kernel's
reads cut the stream. aqpipe's client takes a packet the buffer holds whole in one
slice and handles the buffered packets in one `loop_read` (aqpipe/mqtt.py); stock paho,
reading its socket unbuffered, is the reference."""

from __future__ import annotations

import socket
import struct

import paho.mqtt.client as paho
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from aqpipe import mqtt


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 128 if n else byte)
        if not n:
            return bytes(out)


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    """One packet a subscriber receives: PUBLISH (QoS 0-2, with or without properties, of
    sizes whose remaining length takes 1 to 3 bytes), PUBACK, PINGRESP; now and then a
    malformed PINGRESP (with a body), which ends the connection."""
    kind = draw(st.sampled_from(["publish"] * 12 + ["puback", "puback", "pingresp", "pingresp", "bad pingresp"]))
    if kind == "pingresp":
        return b"\xd0\x00"
    if kind == "bad pingresp":
        return b"\xd0\x01\x00"
    if kind == "puback":
        return b"\x40\x02" + struct.pack("!H", draw(st.integers(1, 65535)))
    qos = draw(st.sampled_from([0, 1, 1, 2]))
    topic = draw(st.sampled_from([b"aq/v1/ambient/S1", "aq/v1/stack/排口".encode(), b"a"]))
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", draw(st.integers(1, 65535))) if qos else b"")
    body += draw(st.sampled_from([b"\x00", b"\x00", b"\x02\x01\x01"]))  # no properties, or a payload format indicator
    size = draw(st.sampled_from([0, 1, 100, 127, 128, 3000, 16384]))
    body += bytes([draw(st.integers(0, 255))]) * size
    command = 0x30 | (draw(st.booleans()) << 3) | (qos << 1) | draw(st.booleans())
    return bytes([command]) + _length(len(body)) + body


def _read(client_class: type, chunks: list[bytes], packet_count: int, manual_ack: bool) -> tuple:
    """Feed `chunks` through a real socket pair, each after the last was read; what the
    client made of the stream: the messages on_message got, what it queued to send, and
    the error that ended the connection, if one did."""
    writer, reader = socket.socketpair()
    reader.setblocking(False)
    client = client_class(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, manual_ack=manual_ack)
    got: list[paho.MQTTMessage] = []
    client.on_message = lambda c, u, m: got.append(m)
    client._sock = mqtt.BufferedSocket(reader) if client_class is mqtt._Client else reader
    error = None
    with writer, reader:
        for chunk in chunks:
            writer.sendall(chunk)
            for _ in range(packet_count + 2):  # stock paho reads one packet a call
                rc = client.loop_read()
                if rc != paho.MQTTErrorCode.MQTT_ERR_SUCCESS:
                    error = rc
                    break
            if error is not None:
                break
        assert error is not None or client._in_packet["command"] == 0, "a packet left half read"
    messages = [(m.mid, m._topic, m.payload, m.qos, m.dup, m.retain, m.properties.json() if m.properties else None)
                for m in got]
    queued = [(p["command"], bytes(p["packet"]), p["qos"], p["mid"]) for p in client._out_packet]
    return messages, queued, error


@settings(max_examples=300, deadline=None)
@given(st.lists(packets(), min_size=1, max_size=12), st.lists(st.integers(1, 40000), min_size=1, max_size=10),
       st.booleans())
def test_the_stream_is_read_as_paho_reads_it_wherever_it_is_cut(stream, cuts, manual_ack):
    data = b"".join(stream)
    chunks, at = [], 0
    for cut in cuts:  # the stream in pieces: packets cut anywhere, header bytes included
        chunks.append(data[at:at + cut])
        at += cut
    chunks.append(data[at:])
    # No piece larger than the socket pair holds: a piece is sent whole before it is read.
    chunks = [c[i:i + 50000] for c in chunks for i in range(0, len(c), 50000)]
    ours = _read(mqtt._Client, chunks, len(stream), manual_ack)
    assert ours == _read(paho.Client, chunks, len(stream), manual_ack)
    if ours[2] is None:  # every PUBLISH at QoS 0 or 1 delivered (QoS 2 waits for the broker's PUBREL)
        assert len(ours[0]) == sum(1 for p in stream if p[0] >> 4 == 3 and (p[0] >> 1) & 3 < 2)
    else:
        assert ours[2] == paho.MQTTErrorCode.MQTT_ERR_PROTOCOL and b"\xd0\x01\x00" in stream


def test_buffered_packets_are_handled_in_one_loop_read():
    """The point of the fast path: paho's loop would make a round (select, writes,
    keepalive) per packet; here one loop_read takes all the buffered ones."""
    writer, reader = socket.socketpair()
    reader.setblocking(False)
    client = mqtt._Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, manual_ack=True)
    got: list[int] = []
    client.on_message = lambda c, u, m: got.append(m.mid)
    client._sock = mqtt.BufferedSocket(reader)
    body = struct.pack("!H", 1) + b"t"
    with writer, reader:
        writer.sendall(b"".join(b"\x32" + _length(len(body) + 3) + body + struct.pack("!H", mid) + b"\x00" for mid in range(1, 51)))
        assert client.loop_read() == paho.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == list(range(1, 51))


def test_a_whole_packet_is_taken_only_when_all_of_it_is_buffered():
    writer, reader = socket.socketpair()
    reader.setblocking(False)
    with writer, reader:
        buffered = mqtt.BufferedSocket(reader)
        writer.sendall(b"\xd0\x00" + b"\x30\x83\x01" + b"x" * 100)  # PINGRESP, then a PUBLISH of 131 bytes cut at 100
        assert buffered.recv(1) == b"\xd0" and buffered.recv(1) == b"\x00"  # paho reads the PINGRESP
        assert buffered.whole_packet() is None and buffered.buffered() == 103  # the cut one: nothing taken
        writer.sendall(b"y" * 31 + b"\xd0\x00")
        assert [buffered.recv(1) for _ in range(3)] == [b"\x30", b"\x83", b"\x01"]  # paho's reads, as before
        assert buffered.recv(131) == b"x" * 100 and buffered.recv(31) == b"y" * 31
        assert buffered.whole_packet() == (0xD0, 0, b"") and buffered.buffered() == 0
