"""Viewers on ICE-TCP through the engine's Python API: framing (RFC 4571), the
control plane's frames in order with the media, a reader that stops (its drops
counted, it is reported lost after the stall timeout, and nobody else on its
worker notices), a connection the viewer closes, and the calls' checks. Real
sockets on loopback; libsrtp decrypts what the viewers receive."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from pylibsrtp import Policy, Session

from fanout._engine import Engine, TcpConnectionLost
from fanout.webrtc.tcp import FrameReader

from .test_engine import GCM, LIBSRTP_PROFILES, RtpPacket, rtp, source_stream, udp_socket, wait_until
from .test_workers import Fanout, payload

if TYPE_CHECKING:
    from fanout._engine import SrtpProfile, ViewerStream

STALL_MS = 1000


class TcpViewer:
    """A viewer's end of an ICE-TCP connection (the engine gets the server's end) and its libsrtp sessions."""

    def __init__(self, engine: Engine, viewer_id: int, mountpoint_id: int | None, *, receive_buffer: int = 0,
                 profile: SrtpProfile = GCM, ssrc: int = 0x11223344) -> None:
        libsrtp_profile, key_length = LIBSRTP_PROFILES[profile]
        listener = socket.create_server(("127.0.0.1", 0))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer:  # before connecting: the window is set from it
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.connect(listener.getsockname())
        self.server_end, _ = listener.accept()
        listener.close()
        if receive_buffer:
            self.server_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, receive_buffer)
        self.server_end.setblocking(False)
        self.engine_key = os.urandom(key_length)
        self.viewer_key = os.urandom(key_length)
        engine.add_peer(viewer_id, self.sock.getsockname(), profile, self.engine_key, self.viewer_key,
                        tcp_socket_fd=self.server_end.fileno(), tcp_stall_ms=STALL_MS)
        self.server_end.close()  # the engine keeps its duplicate
        if mountpoint_id is not None:
            streams: list[ViewerStream] = [{"index": 0, "ssrc": ssrc, "payload_type": 111}]
            engine.subscribe(viewer_id, mountpoint_id, streams)
        self.inbound = Session(Policy(key=self.engine_key, ssrc_type=Policy.SSRC_ANY_INBOUND,
                                      srtp_profile=libsrtp_profile))
        self.reader = FrameReader()
        self.frames: list[bytes] = []
        self.rtp: list[RtpPacket] = []

    def drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if not data:
                return
            for frame in self.reader.feed(data):
                self.frames.append(frame)
                if 128 <= frame[0] <= 191 and not 192 <= frame[1] <= 223:
                    self.rtp.append(RtpPacket.parse(self.inbound.unprotect(frame)))

    def wait_rtp(self, count: int) -> list[RtpPacket]:
        self.wait_frames(lambda: len(self.rtp) >= count)
        return self.rtp

    def wait_frames(self, condition: Callable[[], bool]) -> None:
        def met() -> bool:
            self.drain()
            return condition()

        wait_until(met)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def one_worker() -> Iterator[Fanout]:
    fanout = Fanout(cores=[0], pin=False)
    yield fanout
    fanout.close()


def lost_events(engine: Engine, seen: list[TcpConnectionLost]) -> list[TcpConnectionLost]:
    seen += [event for event in engine.drain_events() if isinstance(event, TcpConnectionLost)]
    return seen


def test_a_tcp_viewer_gets_each_packet_as_one_frame_in_order(one_worker: Fanout) -> None:
    viewer = TcpViewer(one_worker.engine, 7, 1)
    payloads = [payload(i, 100 + 10 * i) for i in range(40)]
    one_worker.send(*(rtp(100 + i, 960 * i, p) for i, p in enumerate(payloads)))
    received = viewer.wait_rtp(40)
    assert [p.payload for p in received] == payloads
    assert [p.sequence - received[0].sequence for p in received] == list(range(40))
    assert one_worker.engine.send_tcp_frame(7, b"\x01\x01stun-ish") is True
    one_worker.send(rtp(140, 960 * 40, b"after"))
    viewer.wait_frames(lambda: len(viewer.rtp) == 41)
    control = [frame for frame in viewer.frames if frame.startswith(b"\x01\x01")]
    assert control == [b"\x01\x01stun-ish"]
    assert viewer.frames.index(control[0]) < len(viewer.frames) - 1, "in order: before the packet sent after it"
    stats = one_worker.engine.peer_stats(7)
    assert (stats.packets, stats.dropped) == (41, 0)
    viewer.close()


def test_rtcp_goes_over_the_connection_subscribed_or_not(one_worker: Fanout) -> None:
    engine = one_worker.engine
    viewer = TcpViewer(engine, 8, None)
    receiver_report = bytes([0x80, 201, 0, 1, 0, 0, 0, 1])
    engine.send_rtcp(8, receiver_report)
    viewer.wait_frames(lambda: len(viewer.frames) == 1)
    assert viewer.inbound.unprotect_rtcp(viewer.frames[0]) == receiver_report
    viewer.close()


def test_a_reader_that_stops_drops_its_own_packets_is_reported_and_holds_nobody_up(one_worker: Fanout) -> None:
    """One worker serves a UDP viewer, a TCP viewer that reads and one that stopped
    reading (small buffers): the two readers get every packet while the stuck one's
    queue fills, its drops are counted and it is reported lost after the stall timeout."""
    engine = one_worker.engine
    udp = one_worker.viewer(1)
    reading = TcpViewer(engine, 2, 1)
    stuck = TcpViewer(engine, 3, 1, receive_buffer=16 << 10)
    sent = 0
    for _ in range(12):  # 1.2 MiB in all: past the stuck one's 512 KiB queue and its buffers
        one_worker.send(*(rtp(sent + i, 960 * (sent + i), payload(sent + i, 1000)) for i in range(100)))
        sent += 100
        udp.wait_rtp(sent)
        reading.wait_rtp(sent)
    assert [p.payload for p in reading.rtp] == [payload(i, 1000) for i in range(sent)]
    wait_until(lambda: engine.peer_stats(3).dropped > 0)
    stuck_stats = engine.peer_stats(3)
    assert stuck_stats.packets + stuck_stats.dropped == sent
    assert engine.peer_stats(1).dropped == engine.peer_stats(2).dropped == 0
    seen: list[TcpConnectionLost] = []
    wait_until(lambda: bool(lost_events(engine, seen)))
    assert seen == [TcpConnectionLost(3, "stalled")]
    one_worker.send(rtp(sent, 960 * sent, payload(sent, 1000)))  # the others go on
    reading.wait_rtp(sent + 1)
    udp.wait_rtp(sent + 1)
    for viewer in (reading, stuck):
        viewer.close()


def test_a_connection_the_viewer_closed_is_reported_broken(one_worker: Fanout) -> None:
    engine = one_worker.engine
    viewer = TcpViewer(engine, 4, 1)
    viewer.close()
    seen: list[TcpConnectionLost] = []
    sent = 0

    def reported() -> bool:
        nonlocal sent
        one_worker.send(rtp(sent, 960 * sent, payload(sent, 200)))
        sent += 1
        return bool(lost_events(engine, seen))

    wait_until(reported)
    assert seen == [TcpConnectionLost(4, "broken")]


def test_tcp_calls_are_checked(one_worker: Fanout) -> None:
    engine = one_worker.engine
    key = os.urandom(28)
    datagram = udp_socket()
    with pytest.raises(ValueError, match="connected TCP socket"):
        engine.add_peer(9, ("127.0.0.1", 5000), GCM, key, key, tcp_socket_fd=datagram.fileno())
    listener = socket.create_server(("127.0.0.1", 0))
    with pytest.raises(ValueError, match="connected TCP socket"):
        engine.add_peer(9, ("127.0.0.1", 5000), GCM, key, key, tcp_socket_fd=listener.fileno())
    with pytest.raises(ValueError, match="tcp_stall_ms"):
        engine.add_peer(9, ("127.0.0.1", 5000), GCM, key, key, tcp_stall_ms=0)
    engine.add_peer(9, ("127.0.0.1", 5000), GCM, key, key)
    with pytest.raises(ValueError, match="no TCP connection"):
        engine.send_tcp_frame(9, b"x")
    viewer = TcpViewer(engine, 10, None)
    for bad in (b"", bytes(65536)):
        with pytest.raises(ValueError, match="frame holds"):
            engine.send_tcp_frame(10, bad)
    with pytest.raises(KeyError):
        engine.send_tcp_frame(11, b"x")
    datagram.close()
    listener.close()
    viewer.close()


def test_a_viewer_moves_from_udp_to_tcp_and_back(one_worker: Fanout) -> None:
    engine = one_worker.engine
    udp = one_worker.viewer(5)
    one_worker.send(rtp(0, 0, b"first"))
    udp.wait_rtp(1)
    tcp = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(tcp.getsockname())
    server_end, _ = tcp.accept()
    engine.set_peer_address(5, client.getsockname(), tcp_socket_fd=server_end.fileno())
    one_worker.send(rtp(1, 960, b"second"))
    reader = FrameReader()
    client.settimeout(5)
    frames: list[bytes] = []
    while not frames:
        frames = [f for f in reader.feed(client.recv(4096)) if not 192 <= f[1] <= 223]
    assert RtpPacket.parse(udp.inbound.unprotect(frames[0])).payload == b"second"
    engine.set_peer_address(5, udp.sock.getsockname())
    one_worker.send(rtp(2, 1920, b"third"))
    assert udp.wait_rtp(2)[1].payload == b"third"
    for sock in (tcp, client, server_end):
        sock.close()
