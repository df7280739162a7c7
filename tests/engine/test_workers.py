"""The engine's fast path through its Python API: several workers, send
modes, UDP GSO and its fallback, NACK retransmission and the counters. Real
sockets on loopback; libsrtp (pylibsrtp) decrypts what the viewers receive.
No assertion depends on timing."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from fanout._engine import Engine

from .test_engine import (
    COUNTED_SEND_DELAY_MS,
    CM,
    GCM,
    RtpPacket,
    ViewerSocket,
    rtp,
    source_stream,
    udp_socket,
    wait_until,
)

if TYPE_CHECKING:
    from fanout._engine import SendMode, SrtpProfile, ViewerStream

SO_NO_CHECK = 11  # linux/socket.h; Python's socket module lacks it


class Fanout:
    """An engine with one audio mountpoint and a source socket."""

    def __init__(self, **options: object) -> None:
        self.webrtc = udp_socket()
        self.source = udp_socket()
        options.setdefault("max_send_delay_ms", COUNTED_SEND_DELAY_MS)  # every packet is counted, however loaded the machine
        self.engine = Engine(self.webrtc.fileno(), **options)  # type: ignore[arg-type]
        self.port = self.engine.add_mountpoint(1, [source_stream()])[0]

    def viewer(self, viewer_id: int, profile: SrtpProfile = GCM, ssrc: int = 0x11223344) -> ViewerSocket:
        streams: list[ViewerStream] = [{"index": 0, "ssrc": ssrc, "payload_type": 111}]
        viewer = ViewerSocket(self.engine, viewer_id, 1, profile, streams)
        viewer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        return viewer

    def send(self, *packets: bytes) -> None:
        for packet in packets:
            self.source.sendto(packet, ("127.0.0.1", self.port))

    def close(self) -> None:
        self.engine.close()
        self.webrtc.close()
        self.source.close()


@pytest.fixture
def two_workers() -> Iterator[Fanout]:
    fanout = Fanout(cores=[0, 1], pin=False)
    yield fanout
    fanout.close()


def payload(i: int, size: int = 1200) -> bytes:
    return struct.pack("!I", i) + bytes([i & 0xFF]) * (size - 4)


def test_viewers_are_spread_over_the_workers_and_each_gets_every_packet(two_workers: Fanout) -> None:
    viewers = [two_workers.viewer(i, GCM if i % 2 else CM, ssrc=0x1000 + i) for i in range(6)]
    workers = two_workers.engine.worker_stats()
    assert [w.viewers for w in workers] == [3, 3]
    assert [w.core for w in workers] == [None, None], "not pinned"
    workers_of_peers = [two_workers.engine.peer_stats(i).worker for i in range(6)]
    assert sorted(w for w in workers_of_peers if w is not None) == [0, 0, 0, 1, 1, 1]
    payloads = [payload(i) for i in range(200)]
    two_workers.send(*(rtp(i, 960 * i, p) for i, p in enumerate(payloads)))

    for i, viewer in enumerate(viewers):
        packets = viewer.wait_rtp(200)
        assert [p.payload for p in packets] == payloads
        assert {p.ssrc for p in packets} == {0x1000 + i}
        assert [(p.sequence - packets[0].sequence) & 0xFFFF for p in packets] == list(range(200))

    wait_until(lambda: two_workers.engine.mountpoint_stats(1).sent_packets == 6 * 200)
    stats = two_workers.engine.mountpoint_stats(1)
    assert stats.sent_bytes == sum(two_workers.engine.peer_stats(i).bytes for i in range(6))
    assert (stats.dropped, stats.send_errors, stats.retransmissions) == (0, 0, 0)
    workers = two_workers.engine.worker_stats()
    assert sum(w.source_packets for w in workers) == 2 * 200, "each worker takes each packet once"
    assert all(w.busy_ns > 0 and w.overruns == 0 and w.dropped_late == 0 for w in workers)
    assert all(0 < w.messages <= 3 * 200 for w in workers)


def test_a_worker_without_viewers_stops_receiving_and_can_start_again(two_workers: Fanout) -> None:
    first, second = two_workers.viewer(1), two_workers.viewer(2)
    two_workers.send(rtp(1, 0, b"both"))
    first.wait_rtp(1)
    second.wait_rtp(1)
    two_workers.engine.remove_peer(1)
    two_workers.send(rtp(2, 960, b"second only"))
    assert [p.payload for p in second.wait_rtp(2)] == [b"both", b"second only"]
    third = two_workers.viewer(3)
    assert two_workers.engine.peer_stats(3).worker != two_workers.engine.peer_stats(2).worker
    two_workers.send(rtp(3, 1920, b"again"))
    assert [p.payload for p in third.wait_rtp(1)] == [b"again"]
    assert [p.payload for p in second.wait_rtp(3)][-1] == b"again"
    first.drain()
    assert [p.payload for p in first.rtp] == [b"both"]


@pytest.mark.parametrize("send_mode", ["gso", "sendmmsg", "sendto"])
def test_every_send_mode_delivers_a_burst_in_order(send_mode: SendMode) -> None:
    fanout = Fanout(cores=[0], pin=False, send_mode=send_mode)
    try:
        viewers = [fanout.viewer(i, ssrc=0x2000 + i) for i in range(3)]
        # Video-like: frames of equal-size packets and a shorter last one, plus small packets between.
        sizes = [1200] * 59 + [300] + [100] + [1200] * 130 + [17]
        payloads = [payload(i, size) for i, size in enumerate(sizes)]
        fanout.send(*(rtp(i, 3000 * (i // 60), p) for i, p in enumerate(payloads)))
        for viewer in viewers:
            assert [p.payload for p in viewer.wait_rtp(len(sizes))] == payloads
        wait_until(lambda: fanout.engine.mountpoint_stats(1).sent_packets == 3 * len(sizes))
        assert fanout.engine.peer_stats(0).gso_refused == 0
    finally:
        fanout.close()


def test_cores_pin_and_send_mode_are_checked() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as webrtc:
        with pytest.raises(ValueError, match="at least one"):
            Engine(webrtc.fileno(), cores=[])
        with pytest.raises(ValueError, match="twice"):
            Engine(webrtc.fileno(), cores=[0, 0])
        with pytest.raises(ValueError, match="may run on"):
            Engine(webrtc.fileno(), cores=[1000])
        with pytest.raises(ValueError, match="send_mode"):
            Engine(webrtc.fileno(), send_mode="carrier pigeon")  # type: ignore[arg-type]
        for delay in (0, 10_001):
            with pytest.raises(ValueError, match="max_send_delay_ms must be between 1 and 10000"):
                Engine(webrtc.fileno(), max_send_delay_ms=delay)
        with pytest.raises(OverflowError):
            Engine(webrtc.fileno(), max_send_delay_ms=-1)
        engine = Engine(webrtc.fileno(), cores=[1000, 1001], pin=False)
        assert [w.core for w in engine.worker_stats()] == [None, None]
        engine.close()
        engine = Engine(webrtc.fileno(), cores=[0])
        assert [w.core for w in engine.worker_stats()] == [0]
        engine.close()


def nack(sender_ssrc: int, media_ssrc: int, lost: list[int]) -> bytes:
    """A Generic NACK (RFC 4585 6.2.1), one FCI per lost sequence number."""
    fci = b"".join(struct.pack("!HH", sequence & 0xFFFF, 0) for sequence in lost)
    return struct.pack("!BBHII", 0x81, 205, 2 + len(fci) // 4, sender_ssrc, media_ssrc) + fci


def receive_raw(viewer: ViewerSocket, count: int) -> list[bytes]:
    viewer.sock.settimeout(5)
    datagrams: list[bytes] = []
    while len(datagrams) < count:
        data = viewer.sock.recv(4096)
        if not 192 <= data[1] <= 223:  # skip sender reports
            datagrams.append(data)
    return datagrams


@pytest.mark.parametrize("profile", [GCM, CM])
def test_nacks_are_answered_with_the_original_packets(two_workers: Fanout, profile: SrtpProfile) -> None:
    viewer = two_workers.viewer(7, profile, ssrc=0x5151)
    payloads = [payload(i, 200 + i) for i in range(30)]
    two_workers.send(*(rtp(100 + i, 960 * i, p) for i, p in enumerate(payloads)))
    datagrams = receive_raw(viewer, 30)
    lost = {3, 4, 17}
    received = {}
    for i, data in enumerate(datagrams):
        if i not in lost:  # the viewer never saw these: libsrtp has not either
            received[i] = RtpPacket.parse(viewer.inbound.unprotect(data))
    first = received[0].sequence
    report = nack(0xABC, 0x5151, [first + i for i in sorted(lost)]) + nack(0xABC, 0x999, [first])

    seen = two_workers.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(report))

    assert (seen.nacks, seen.retransmitted, seen.keyframe_requests, seen.other) == (4, 3, 0, 0), "0x999 is not its"
    resent = [RtpPacket.parse(viewer.inbound.unprotect(data)) for data in receive_raw(viewer, 3)]
    assert [(p.sequence - first) & 0xFFFF for p in resent] == sorted(lost)
    assert [p.payload for p in resent] == [payloads[i] for i in sorted(lost)]
    assert [p.timestamp - received[0].timestamp for p in resent] == [960 * i for i in sorted(lost)]
    wait_until(lambda: two_workers.engine.peer_stats(7).retransmissions == 3)
    stats = two_workers.engine.peer_stats(7)
    assert (stats.packets, stats.nacked, stats.retransmissions, stats.nacks_unanswered) == (30, 3, 3, 0)
    assert two_workers.engine.mountpoint_stats(1).retransmissions == 3


def test_nacks_for_packets_never_sent_or_forgotten_are_ignored(two_workers: Fanout) -> None:
    viewer = two_workers.viewer(7, ssrc=0x5151)
    two_workers.send(*(rtp(i, 960 * i, payload(i, 100)) for i in range(5)))
    first = viewer.wait_rtp(5)[0].sequence
    report = nack(1, 0x5151, [first + 5, first + 6, first - 1, first + 40000])
    two_workers.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(report))
    two_workers.engine.send_rtcp(7, struct.pack("!BBHI", 0x81, 203, 1, 0x5151))  # queued behind the NACK
    viewer.wait_rtcp(1)
    viewer.drain()
    assert len(viewer.rtp) == 5
    stats = two_workers.engine.peer_stats(7)
    assert (stats.retransmissions, stats.nacked, stats.nacks_unanswered) == (0, 4, 4)


def test_a_socket_that_refuses_gso_falls_back_to_single_datagrams() -> None:
    fanout = Fanout(cores=[0], pin=False)
    try:
        # Without UDP checksums the kernel refuses GSO sends (EINVAL); the engine shares this socket.
        fanout.webrtc.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
        viewer = fanout.viewer(7, ssrc=0x5151)
        payloads = [payload(i, 500) for i in range(12)]
        fanout.send(*(rtp(i, 960 * i, p) for i, p in enumerate(payloads)))
        datagrams = receive_raw(viewer, 12)
        first = RtpPacket.parse(viewer.inbound.unprotect(datagrams[0])).sequence
        for data in datagrams[1:3]:
            viewer.inbound.unprotect(data)
        # A NACK for nine equal-size packets: the worker merges their retransmissions into one GSO message.
        fanout.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(nack(1, 0x5151, [first + i for i in range(3, 12)])))
        resent = [RtpPacket.parse(viewer.inbound.unprotect(data)) for data in receive_raw(viewer, 9)]
        assert [p.payload for p in resent] == payloads[3:]
        wait_until(lambda: fanout.engine.peer_stats(7).gso_refused == 1)
        stats = fanout.engine.peer_stats(7)
        assert (stats.dropped, stats.send_errors) == (0, 0)
        # Later runs to this viewer go as single datagrams; nothing is refused again.
        more = [payload(i, 500) for i in range(12, 40)]
        fanout.send(*(rtp(i, 960 * i, p) for i, p in zip(range(12, 40), more)))
        assert [RtpPacket.parse(viewer.inbound.unprotect(d)).payload for d in receive_raw(viewer, 28)] == more
        assert fanout.engine.peer_stats(7).gso_refused == 1
    finally:
        fanout.close()
