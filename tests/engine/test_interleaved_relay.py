"""The engine's InterleavedRelay: RTSP interleaved frames (RFC 2326 section 10.12) sent on to
UDP ports without Python per packet."""

from __future__ import annotations

import socket

import pytest
from fanout._engine import InterleavedRelay
from fanout.sources.rtsp.messages import InterleavedFrame


def test_frames_go_to_their_channels_port_from_the_given_socket() -> None:
    rtp_port, rtcp_port, sender = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3))
    for sock in (rtp_port, rtcp_port, sender):
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
    relay = InterleavedRelay([
        (0, sender.fileno(), ("127.0.0.1", rtp_port.getsockname()[1])),
        (1, sender.fileno(), ("127.0.0.1", rtcp_port.getsockname()[1])),
    ])  # fmt: skip
    buffer = bytearray(b"junk" + bytes(InterleavedFrame(0, b"rtp")) + bytes(InterleavedFrame(9, b"?")))
    buffer += bytes(InterleavedFrame(1, b"sr")) + b"RTSP/1.0 200 OK\r\n"
    end = relay.relay(buffer, 4)
    assert buffer[end:] == b"RTSP/1.0 200 OK\r\n"
    assert rtp_port.recvfrom(100) == (b"rtp", sender.getsockname())
    assert rtcp_port.recv(100) == b"sr"
    assert (relay.relayed, relay.unknown, relay.dropped) == (2, 1, 0)
    assert relay.relay(bytearray(b"$\x00\x00\x05ab"), 0) == 0  # still coming
    with pytest.raises(ValueError, match="an interleaved frame of 1985 bytes on channel 0 \\(at most 1984"):
        relay.relay(bytearray(b"$\x00\x07\xc1"), 0)
    for sock in (rtp_port, rtcp_port, sender):
        sock.close()


def test_bad_routes_are_refused() -> None:
    with pytest.raises(ValueError, match='invalid address "nowhere"'):
        InterleavedRelay([(0, 0, ("nowhere", 5000))])
    with pytest.raises(ValueError, match="channel"):
        InterleavedRelay([(256, 0, ("127.0.0.1", 5000))])
    with pytest.raises(OSError):
        InterleavedRelay([(0, 987654, ("127.0.0.1", 5000))])  # not an open descriptor
