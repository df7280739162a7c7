"""The engine reading the WebRTC socket itself (``read_webrtc_socket``): viewers' RTCP is
acted on in the engine, the rest handed to the control plane, with real sockets and libsrtp."""

from __future__ import annotations

import select
import struct

from fanout._engine import ViewerRtcp
from tests.engine.test_congestion import EXTENSION_ID, receive_transport_sequences, transport_feedback
from tests.engine.test_engine import WAIT_SECONDS, Rig, RtpPacket, rtp, udp_socket, wait_until

STUN_BINDING_REQUEST = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, b"transaction1")


def receiver_report(ssrc: int = 0x11223344, fraction_lost: int = 10) -> bytes:
    return struct.pack("!BBHI", 0x81, 201, 7, 0x0BADCAFE) + struct.pack("!IIIIII", ssrc, fraction_lost << 24, 0x10064, 5, 0, 0)


def generic_nack(ssrc: int, sequence: int) -> bytes:
    return struct.pack("!BBHIIHH", 0x81, 205, 3, 0x0BADCAFE, ssrc, sequence, 0)


def viewer_rtcp_events(rig: Rig) -> list[ViewerRtcp]:
    return [event for event in rig.engine.drain_events() if isinstance(event, ViewerRtcp)]


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_a_viewers_transport_feedback_stays_in_the_engine_and_its_receiver_report_reaches_the_control_plane(
    rig: Rig,
) -> None:
    port = rig.mountpoint(1)
    viewer = rig.viewer(7, 1)
    rig.engine.set_transport_cc(7, EXTENSION_ID)
    rig.send(port, *(rtp(100 + i, 960 * i, b"opus" * 20) for i in range(10)))
    numbers = receive_transport_sequences(viewer, 10)
    ready = rig.engine.read_webrtc_socket()
    assert rig.engine.read_webrtc_socket() == ready
    server = rig.webrtc.getsockname()

    viewer.sock.sendto(viewer.outbound.protect_rtcp(transport_feedback(numbers[0], [60 * i for i in range(10)])), server)
    wait_until(lambda: rig.engine.peer_stats(7).transport_feedbacks == 1)
    assert viewer_rtcp_events(rig) == [], "transport feedback alone does not wake the control plane"

    viewer.sock.sendto(viewer.outbound.protect_rtcp(receiver_report()), server)
    events: list[ViewerRtcp] = []
    wait_until(lambda: bool(events.extend(viewer_rtcp_events(rig)) or events))
    (event,) = events
    assert event.peer_id == 7
    (block,) = event.report.receiver_reports
    assert (block.ssrc, block.fraction_lost) == (0x11223344, 10)
    assert event.report.other == 1, "the transport feedback before it, counted"
    assert not readable(ready) and rig.engine.take_webrtc_datagrams() == []
    stats = rig.engine.webrtc_socket_stats()
    assert (stats.rtcp_read, stats.rtcp_refused, stats.forwarded, stats.dropped) == (2, 0, 0, 0)


def test_a_viewers_nack_read_on_the_socket_is_answered(rig: Rig) -> None:
    port = rig.mountpoint(1)
    viewer = rig.viewer(7, 1)
    rig.send(port, rtp(100, 0, b"first"), rtp(101, 960, b"second"))
    viewer.sock.settimeout(WAIT_SECONDS)
    first = RtpPacket.parse(viewer.inbound.unprotect(viewer.sock.recv(2048)))
    viewer.sock.recv(2048)  # the second, "lost" on the way: libsrtp never saw it
    rig.engine.read_webrtc_socket()

    nack = generic_nack(first.ssrc, (first.sequence + 1) & 0xFFFF)
    viewer.sock.sendto(viewer.outbound.protect_rtcp(nack), rig.webrtc.getsockname())

    again = RtpPacket.parse(viewer.inbound.unprotect(viewer.sock.recv(2048)))
    assert (again.sequence, again.payload) == ((first.sequence + 1) & 0xFFFF, b"second")
    events: list[ViewerRtcp] = []
    wait_until(lambda: bool(events.extend(viewer_rtcp_events(rig)) or events))
    assert (events[0].report.nacks, events[0].report.retransmitted) == (1, 1)


def test_stun_dtls_and_strangers_rtcp_go_to_the_control_plane_in_order_and_forged_rtcp_is_refused(rig: Rig) -> None:
    rig.mountpoint(1)
    viewer = rig.viewer(7, 1)
    ready = rig.engine.read_webrtc_socket()
    server = rig.webrtc.getsockname()
    stranger = udp_socket()
    dtls_client_hello = bytes([22, 0xFE, 0xFD]) + bytes(10)
    forged = bytearray(viewer.outbound.protect_rtcp(receiver_report()))
    forged[9] ^= 0x01

    viewer.sock.sendto(STUN_BINDING_REQUEST, server)
    stranger.sendto(viewer.outbound.protect_rtcp(receiver_report()), server)  # another address: not the viewer's
    viewer.sock.sendto(bytes(forged), server)
    viewer.sock.sendto(dtls_client_hello, server)

    wait_until(lambda: rig.engine.webrtc_socket_stats().datagrams == 4)
    assert readable(ready)
    taken = rig.engine.take_webrtc_datagrams()
    viewer_address, stranger_address = viewer.sock.getsockname(), stranger.getsockname()
    assert [(data[:3], address) for data, address in taken] == [
        (STUN_BINDING_REQUEST[:3], viewer_address),
        (taken[1][0][:3], stranger_address),
        (dtls_client_hello[:3], viewer_address),
    ]
    assert not readable(ready)
    stats = rig.engine.webrtc_socket_stats()
    assert (stats.rtcp_read, stats.rtcp_refused, stats.forwarded) == (0, 1, 3)
    assert viewer_rtcp_events(rig) == []
    stranger.close()


def test_after_an_address_change_the_viewers_rtcp_is_known_by_its_new_address(rig: Rig) -> None:
    rig.mountpoint(1)
    viewer = rig.viewer(7, 1)
    rig.engine.read_webrtc_socket()
    server = rig.webrtc.getsockname()
    old = viewer.sock
    viewer.sock = udp_socket()
    rig.engine.set_peer_address(7, viewer.sock.getsockname())

    old.sendto(viewer.outbound.protect_rtcp(receiver_report(fraction_lost=1)), server)
    viewer.sock.sendto(viewer.outbound.protect_rtcp(receiver_report(fraction_lost=2)), server)

    events: list[ViewerRtcp] = []
    wait_until(lambda: bool(events.extend(viewer_rtcp_events(rig)) or events))
    assert [event.report.receiver_reports[0].fraction_lost for event in events] == [2]
    taken: list[tuple[bytes, tuple[str, int]]] = []
    wait_until(lambda: bool(taken.extend(rig.engine.take_webrtc_datagrams()) or taken))
    assert [address for _, address in taken] == [old.getsockname()]
    rig.engine.remove_peer(7)
    viewer.sock.sendto(viewer.outbound.protect_rtcp(receiver_report()), server)
    wait_until(lambda: bool(taken.extend(rig.engine.take_webrtc_datagrams()) or len(taken) > 1))
    assert taken[1][1] == viewer.sock.getsockname(), "a removed peer's RTCP goes to the control plane"
    old.close()


def test_a_closed_engine_stops_reading(rig: Rig) -> None:
    ready = rig.engine.read_webrtc_socket()
    rig.engine.close()
    probe = udp_socket()
    probe.sendto(STUN_BINDING_REQUEST, rig.webrtc.getsockname())
    rig.webrtc.setblocking(True)
    rig.webrtc.settimeout(20)
    data, _ = rig.webrtc.recvfrom(2048)  # still there for another reader: the engine's thread is gone
    assert data == STUN_BINDING_REQUEST
    assert rig.engine.take_webrtc_datagrams() == [] and not readable(ready)
    probe.close()
