"""aqpipe.mqtt.BufferedSocket hands paho the byte stream exactly as the kernel delivers it,
over a real socket pair, whatever sizes paho asks for."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aqpipe.mqtt import BufferedSocket


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    b.setblocking(False)
    return a, b


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=8),
       st.lists(st.integers(1, 5000), min_size=1, max_size=50))
def test_reads_return_the_stream_in_order_whatever_the_sizes_asked(chunks, sizes):
    writer, reader = _pair()
    with writer, reader:
        buffered = BufferedSocket(reader)
        sent = b"".join(chunks)
        writer.sendall(sent)
        got = b""
        i = 0
        while len(got) < len(sent):
            size = sizes[i % len(sizes)]
            i += 1
            part = buffered.recv(size)
            assert 0 < len(part) <= size
            got += part
            assert buffered.pending() >= 0
        assert got == sent
        assert buffered.pending() == 0
        with pytest.raises(BlockingIOError):  # nothing buffered, nothing in the kernel: as a plain socket
            buffered.recv(1)


def test_pending_counts_what_is_buffered_so_paho_does_not_wait_in_select():
    writer, reader = _pair()
    with writer, reader:
        buffered = BufferedSocket(reader)
        writer.sendall(b"\x30\x05hello\x30\x02hi")
        assert buffered.recv(1) == b"\x30"  # one kernel read took all 11 bytes
        assert buffered.pending() == 10
        assert buffered.recv(1) == b"\x05" and buffered.recv(5) == b"hello"
        assert buffered.pending() == 4
        assert buffered.recv(100) == b"\x30\x02hi"  # a short read, as recv may give
        assert buffered.pending() == 0


def test_end_of_stream_reads_empty_and_writes_go_through():
    writer, reader = _pair()
    with reader:
        buffered = BufferedSocket(reader)
        assert buffered.fileno() == reader.fileno()
        reader.setblocking(True)
        assert buffered.send(b"ack") == 3
        assert writer.recv(3) == b"ack"
        writer.sendall(b"last")
        writer.close()
        assert buffered.recv(10) == b"last"
        assert buffered.recv(10) == b""
