"""Transport-wide congestion control through a real engine: the viewer's packets carry
a transport-wide sequence number, its transport feedback (RTPFB FMT 15) gives it a
bandwidth estimate, reported in PeerStats and as a BandwidthEstimate event."""

from __future__ import annotations

import socket
import struct

import pytest

from fanout._engine import BandwidthEstimate
from tests.engine.test_engine import Rig, ViewerSocket, rtp, wait_until

EXTENSION_ID = 3


def receive_with_transport_sequences(viewer: ViewerSocket, count: int) -> list[tuple[int, bytes]]:
    """The RTP packets the viewer got, as (transport-wide sequence number, payload), once it got
    ``count`` (all that came by then: 0 reads what is there)."""
    packets: list[tuple[int, bytes]] = []

    def enough() -> bool:
        while True:
            try:
                data = viewer.sock.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return len(packets) >= count
            if 192 <= data[1] <= 223:
                continue
            plain = viewer.inbound.unprotect(data)
            assert plain[0] & 0x10, "a header extension"
            profile, words = struct.unpack("!HH", plain[12:16])
            assert (profile, words) == (0xBEDE, 1)
            assert plain[16] == (EXTENSION_ID << 4) | 1, "the transport-wide sequence element, two bytes"
            packets.append((struct.unpack("!H", plain[17:19])[0], plain[20:]))

    wait_until(enough)
    return packets


def receive_transport_sequences(viewer: ViewerSocket, count: int) -> list[int]:
    """The transport-wide sequence numbers of the next ``count`` RTP packets the viewer gets."""
    return [number for number, _ in receive_with_transport_sequences(viewer, count)]


def transport_feedback(base: int, arrivals_ms: list[float], reference_64ms: int = 0) -> bytes:
    """RTPFB FMT 15: every packet from ``base`` received, at these milliseconds after the
    reference time (in units of 64 ms): deltas of a quarter millisecond, in one byte up to
    63.75 ms, else in two (signed)."""
    quarters = [round(at * 4) for at in arrivals_ms]
    deltas = [now - last for last, now in zip([0, *quarters], quarters)]
    chunks = b""
    for start in range(0, len(deltas), 7):
        chunk = 0xC000
        for position, delta in enumerate(deltas[start : start + 7]):
            symbol = 1 if 0 <= delta <= 255 else 2  # received: small delta, or large or negative
            chunk |= symbol << (12 - 2 * position)
        chunks += struct.pack("!H", chunk)
    encoded = b"".join(bytes([delta]) if 0 <= delta <= 255 else struct.pack("!h", delta) for delta in deltas)
    body = struct.pack("!IIHHI", 0x0BADCAFE, 0x11223344, base, len(deltas), reference_64ms << 8) + chunks + encoded
    body += bytes(-len(body) % 4)
    return struct.pack("!BBH", 0x80 | 15, 205, len(body) // 4) + body


def remb(bitrate: int, ssrc: int) -> bytes:
    """A REMB (draft-alvestrand-rmcat-remb) about ``ssrc``: 18-bit mantissa, 6-bit exponent."""
    exponent = max(0, bitrate.bit_length() - 18)
    mantissa = bitrate >> exponent
    return struct.pack("!BBHII4sBBH", 0x8F, 206, 5, 1, 0, b"REMB", 1, (exponent << 2) | (mantissa >> 16),
                       mantissa & 0xFFFF) + struct.pack("!I", ssrc)  # fmt: skip


def test_packets_carry_transport_sequence_numbers_and_feedback_gives_an_estimate(rig: Rig) -> None:
    port = rig.mountpoint(1)
    viewer = rig.viewer(7, 1)
    rig.engine.set_transport_cc(7, EXTENSION_ID)
    assert rig.engine.peer_stats(7).estimate is None, "no feedback yet"
    rig.send(port, *(rtp(100 + i, 960 * i, b"opus" * 20) for i in range(10)))
    numbers = receive_transport_sequences(viewer, 10)
    assert numbers == list(range(numbers[0], numbers[0] + 10))

    rig.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(transport_feedback(numbers[0], [60 * i for i in range(10)])))

    wait_until(lambda: rig.engine.peer_stats(7).transport_feedbacks == 1)
    estimate = rig.engine.peer_stats(7).estimate
    assert estimate is not None and estimate > 0
    events = rig.engine.drain_events()
    # Neither over-use nor loss: the link was not seen to limit the rate.
    assert BandwidthEstimate(peer_id=7, bitrate=estimate, link_limited=False, probed=False) in events


def test_the_bytes_in_flight_are_those_the_feedback_has_not_told_of(rig: Rig) -> None:
    port = rig.mountpoint(1)
    viewer = rig.viewer(7, 1)
    rig.engine.set_transport_cc(7, EXTENSION_ID)
    rig.send(port, *(rtp(100 + i, 960 * i, b"opus" * 20) for i in range(10)))
    numbers = receive_transport_sequences(viewer, 10)
    assert rig.engine.peer_stats(7).bytes_in_flight is None, "no feedback yet"

    rig.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(transport_feedback(numbers[0], [20 * i for i in range(6)])))

    wait_until(lambda: rig.engine.peer_stats(7).transport_feedbacks == 1)
    # The last 4 packets: 12 bytes of header, 8 of the transport-wide sequence extension, 80 of
    # payload and GCM's 16-byte tag each.
    assert rig.engine.peer_stats(7).bytes_in_flight == 4 * (12 + 8 + 80 + 16)


def test_remb_caps_the_estimate_of_a_viewer_without_transport_feedback(rig: Rig) -> None:
    rig.mountpoint(1)
    viewer = rig.viewer(7, 1)
    rig.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(remb(200_000, 0x11223344)))
    wait_until(lambda: rig.engine.peer_stats(7).estimate == 200_000)
    # A REMB is the viewer's own estimate of what its link carries.
    assert BandwidthEstimate(peer_id=7, bitrate=200_000, link_limited=True, probed=False) in rig.engine.drain_events()


def test_set_transport_cc_refuses_bad_ids_and_unsubscribed_peers(rig: Rig) -> None:
    rig.mountpoint(1)
    rig.viewer(7, 1)
    for bad in (0, 15, -1):
        with pytest.raises(ValueError, match="transport-cc extension id"):
            rig.engine.set_transport_cc(7, bad)
    with pytest.raises(KeyError):
        rig.engine.set_transport_cc(8, EXTENSION_ID)
    ViewerSocket(rig.engine, 9, None, "AEAD_AES_128_GCM", [])
    with pytest.raises(ValueError):
        rig.engine.set_transport_cc(9, EXTENSION_ID)
    rig.engine.set_transport_cc(7, None)
