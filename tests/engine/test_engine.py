"""The engine through its Python API, with real sockets: a source sends RTP to
a mountpoint's port, viewers are local UDP sockets, and libsrtp (pylibsrtp)
decrypts what they receive."""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from pylibsrtp import Error as SrtpError
from pylibsrtp import Policy, Session

from fanout._engine import Engine

if TYPE_CHECKING:
    from fanout._engine import MediaKind, SourceStream, SrtpProfile, ViewerStream

GCM: SrtpProfile = "AEAD_AES_128_GCM"
CM: SrtpProfile = "AES_CM_128_HMAC_SHA1_80"
LIBSRTP_PROFILES = {
    GCM: (Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
    CM: (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
}
SOURCE_SSRC = 0xDEADBEEF
WAIT_SECONDS = 20.0  # generous: a loaded two-core machine is slow, and a wait ends as soon as its condition holds
# Engines of tests that count every packet: a worker on a loaded machine may fall behind by more than the
# default bound (100 ms), whose drops (dropped_late) have tests of their own.
COUNTED_SEND_DELAY_MS = 10_000

VP8_KEYFRAME = bytes([0x10, 0x50, 0x01, 0x02])  # S=1, partition 0, P=0
VP8_DELTA = bytes([0x10, 0x51, 0x03, 0x04])  # S=1, partition 0, P=1
VP8_CONTINUATION = bytes([0x00, 0x05, 0x06])


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def attributes(stats: object) -> object:
    """A stats object's attributes (nested ones too) as a dict, to compare whole."""
    if isinstance(stats, list):
        return [attributes(item) for item in stats]
    if stats is None or isinstance(stats, (int, bool)):
        return stats
    return {name: attributes(getattr(stats, name)) for name in dir(stats) if not name.startswith("_")}


def rtp(sequence: int, timestamp: int, payload: bytes, *, ssrc: int = SOURCE_SSRC, payload_type: int = 96,
        marker: bool = False) -> bytes:
    second = (0x80 if marker else 0) | payload_type
    return struct.pack("!BBHII", 0x80, second, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc) + payload


@dataclass(frozen=True)
class RtpPacket:
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        first, second, sequence, timestamp, ssrc = struct.unpack("!BBHII", data[:12])
        assert first == 0x80, "the engine sends version 2, no padding, no extension, no CSRC"
        return cls(bool(second & 0x80), second & 0x7F, sequence, timestamp, ssrc, data[12:])


def source_stream(kind: MediaKind = "audio", codec: str = "opus", clock_rate: int = 48000, port: int = 0,
                  index: int = 0) -> SourceStream:
    return {"index": index, "kind": kind, "codec": codec, "clock_rate": clock_rate, "host": "127.0.0.1", "port": port}


def udp_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


class ViewerSocket:
    """A viewer's UDP socket and its libsrtp sessions: an engine peer, subscribed to
    ``mountpoint_id`` unless that is None."""

    def __init__(self, engine: Engine, viewer_id: int, mountpoint_id: int | None, profile: SrtpProfile,
                 streams: list[ViewerStream]) -> None:
        libsrtp_profile, key_length = LIBSRTP_PROFILES[profile]
        self.viewer_id = viewer_id
        self.sock = udp_socket()
        self.engine_key = os.urandom(key_length)
        self.viewer_key = os.urandom(key_length)
        engine.add_peer(viewer_id, self.sock.getsockname(), profile, self.engine_key, self.viewer_key)
        if mountpoint_id is not None:
            engine.subscribe(viewer_id, mountpoint_id, streams)
        self.inbound = Session(Policy(key=self.engine_key, ssrc_type=Policy.SSRC_ANY_INBOUND,
                                      srtp_profile=libsrtp_profile))
        self.outbound = Session(Policy(key=self.viewer_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                                       srtp_profile=libsrtp_profile))
        self.rtp: list[RtpPacket] = []
        self.rtcp: list[bytes] = []

    def drain(self) -> None:
        """Reads and decrypts every datagram waiting on the socket."""
        while True:
            try:
                data = self.sock.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if 192 <= data[1] <= 223:
                self.rtcp.append(self.inbound.unprotect_rtcp(data))
            else:
                self.rtp.append(RtpPacket.parse(self.inbound.unprotect(data)))

    def wait_rtp(self, count: int) -> list[RtpPacket]:
        def enough() -> bool:
            self.drain()
            return len(self.rtp) >= count

        wait_until(enough)
        return self.rtp

    def wait_rtcp(self, count: int) -> list[bytes]:
        def enough() -> bool:
            self.drain()
            return len(self.rtcp) >= count

        wait_until(enough)
        return self.rtcp

    def took_commands(self, engine: Engine) -> None:
        """Returns once the viewer's worker has run every command sent to it before: a receiver
        report of an SSRC of its own, sent to the viewer through the same queue, has arrived."""
        barrier = struct.pack("!BBHI", 0x80, 201, 1, int.from_bytes(os.urandom(4), "big"))
        engine.send_rtcp(self.viewer_id, barrier)

        def arrived() -> bool:
            self.drain()
            return barrier in self.rtcp

        wait_until(arrived)

    def pending(self) -> bool:
        try:
            self.sock.recv(4096, socket.MSG_DONTWAIT | socket.MSG_PEEK)
        except BlockingIOError:
            return False
        return True


@dataclass
class Rig:
    engine: Engine
    webrtc: socket.socket
    source: socket.socket

    def mountpoint(self, mountpoint_id: int, kind: MediaKind = "audio", codec: str = "opus",
                   clock_rate: int = 48000) -> int:
        return self.engine.add_mountpoint(mountpoint_id, [source_stream(kind, codec, clock_rate)])[0]

    def viewer(self, viewer_id: int, mountpoint_id: int, profile: SrtpProfile = GCM, ssrc: int = 0x11223344,
               payload_type: int = 111) -> ViewerSocket:
        streams: list[ViewerStream] = [{"index": 0, "ssrc": ssrc, "payload_type": payload_type}]
        return ViewerSocket(self.engine, viewer_id, mountpoint_id, profile, streams)

    def send(self, port: int, *packets: bytes) -> None:
        for packet in packets:
            self.source.sendto(packet, ("127.0.0.1", port))


@pytest.mark.parametrize("profile", [GCM, CM])
def test_a_viewer_receives_rewritten_srtp(rig: Rig, profile: SrtpProfile) -> None:
    port = rig.mountpoint(1)
    viewer = rig.viewer(7, 1, profile, ssrc=0x11223344, payload_type=111)
    payloads = [bytes([i]) * (20 + i) for i in range(5)]
    rig.send(port, *(rtp(1000 + i, 48000 + 960 * i, payloads[i], marker=i == 0) for i in range(5)))

    packets = viewer.wait_rtp(5)

    assert [p.ssrc for p in packets] == [0x11223344] * 5
    assert [p.payload_type for p in packets] == [111] * 5
    assert [p.payload for p in packets] == payloads
    assert [p.marker for p in packets] == [True, False, False, False, False]
    first = packets[0]
    assert [p.sequence for p in packets] == [(first.sequence + i) & 0xFFFF for i in range(5)]
    assert [p.timestamp for p in packets] == [(first.timestamp + 960 * i) & 0xFFFFFFFF for i in range(5)]
    wait_until(lambda: rig.engine.peer_stats(7).packets == 5)
    stats = rig.engine.peer_stats(7)
    overhead = 16 if profile == GCM else 10
    assert (stats.packets, stats.bytes) == (5, sum(12 + len(p) + overhead for p in payloads))
    assert (stats.retransmissions, stats.nacked, stats.gso_refused, stats.dropped, stats.send_errors) == (0, 0, 0, 0, 0)
    assert stats.dropped_late == 0
    assert (stats.paused, stats.source_switches) == (False, 0)


def test_mountpoint_stats_count_packets_and_garbage(rig: Rig) -> None:
    port = rig.mountpoint(1)
    assert attributes(rig.engine.mountpoint_stats(1)) == {
        "packets": 0, "bytes": 0, "malformed": 0, "viewers": 0,
        "streams": [{"index": 0, "port": port, "packets": 0, "bytes": 0, "malformed": 0, "overruns": 0,
                     "last_packet_age_ms": None, "rtcp_port": None, "rtcp_packets": 0, "plis_forwarded": 0,
                     "keyframe_requests": 0, "rembs_sent": 0, "sender_report": None, "keyframe_cache": None, "undecryptable": 0,
                     "collisions": 0, "wrong_payload_type": 0, "parameter_sets_inserted": 0, "skew_dropped": 0,
                     "lost": 0, "skew_ms": 0, "temporal_layer_bytes": [0, 0, 0, 0],
                     "spatial_layer_bytes": [0, 0, 0, 0]}],
        "sent_packets": 0, "sent_bytes": 0, "retransmissions": 0, "dropped": 0, "dropped_late": 0, "send_errors": 0,
    }
    viewer = rig.viewer(7, 1)
    good = [rtp(10, 0, b"first"), rtp(11, 960, b"second")]
    garbage = [b"", b"hello world, not rtp", bytes([0x40]) + bytes(20), rtp(12, 0, b"")[:11],
               bytes([0x8F]) + bytes(15), bytes([0xA0]) + bytes(10) + bytes([200])]
    rig.send(port, good[0], *garbage, good[1])

    packets = viewer.wait_rtp(2)

    assert [p.payload for p in packets] == [b"first", b"second"]
    wait_until(lambda: rig.engine.mountpoint_stats(1).malformed == len(garbage))
    stats = rig.engine.mountpoint_stats(1)
    assert (stats.packets, stats.bytes, stats.viewers) == (2, sum(map(len, good)), 1)
    age = stats.streams[0].last_packet_age_ms
    assert age is not None and age >= 0


def test_video_starts_at_a_vp8_keyframe(rig: Rig) -> None:
    port = rig.mountpoint(1, "video", "vp8", 90000)
    viewer = rig.viewer(7, 1, payload_type=96)
    rig.send(port, rtp(1, 0, VP8_DELTA), rtp(2, 0, VP8_CONTINUATION, marker=True),
             rtp(3, 3000, VP8_KEYFRAME), rtp(4, 3000, VP8_CONTINUATION, marker=True),
             rtp(5, 6000, VP8_DELTA, marker=True))

    packets = viewer.wait_rtp(3)

    assert [p.payload for p in packets] == [VP8_KEYFRAME, VP8_CONTINUATION, VP8_DELTA]
    assert [p.sequence - packets[0].sequence & 0xFFFF for p in packets] == [0, 1, 2]
    # 3000 if the viewer started live; less if the packets reached the keyframe
    # cache before the viewer's worker took it (a burst: see test_keyframe_cache.py).
    assert 0 < packets[2].timestamp - packets[0].timestamp <= 3000


def test_video_starts_at_an_h264_idr(rig: Rig) -> None:
    port = rig.mountpoint(1, "video", "h264", 90000)
    viewer = rig.viewer(7, 1, payload_type=102)
    non_idr = bytes([0x41, 0x9A, 0x00])
    fu_a_idr_start = bytes([0x7C, 0x85, 0x88, 0x80])
    fu_a_idr_end = bytes([0x7C, 0x45, 0x11])
    rig.send(port, rtp(1, 0, non_idr, marker=True), rtp(2, 3000, fu_a_idr_start), rtp(3, 3000, fu_a_idr_end, marker=True))

    packets = viewer.wait_rtp(2)

    assert [p.payload for p in packets] == [fu_a_idr_start, fu_a_idr_end]


def test_pause_then_resume_continues_the_sequence(rig: Rig) -> None:
    port = rig.mountpoint(1)
    viewer = rig.viewer(7, 1)
    rig.send(port, rtp(1, 0, b"a"), rtp(2, 960, b"b"))
    before = viewer.wait_rtp(2)[:]

    rig.engine.set_paused(7, True)
    assert rig.engine.peer_stats(7).paused is True
    rig.send(port, rtp(3, 1920, b"paused"), rtp(4, 2880, b"paused"))
    wait_until(lambda: rig.engine.mountpoint_stats(1).packets == 4)
    # The worker has taken them (while paused) before it is told to resume.
    wait_until(lambda: sum(worker.source_packets for worker in rig.engine.worker_stats()) == 4)
    rig.engine.set_paused(7, False)
    rig.send(port, rtp(5, 3840, b"c"), rtp(6, 4800, b"d"))

    packets = viewer.wait_rtp(4)

    assert [p.payload for p in packets] == [b"a", b"b", b"c", b"d"]
    assert [p.sequence - before[0].sequence & 0xFFFF for p in packets] == [0, 1, 2, 3]
    assert rig.engine.peer_stats(7).paused is False


def test_resumed_video_starts_again_from_the_cached_keyframe(rig: Rig) -> None:
    port = rig.mountpoint(1, "video", "vp8", 90000)
    viewer = rig.viewer(7, 1, payload_type=96)
    rig.send(port, rtp(1, 0, VP8_KEYFRAME, marker=True))
    viewer.wait_rtp(1)
    rig.engine.set_paused(7, True)
    rig.engine.set_paused(7, False)
    viewer.wait_rtp(2)
    rig.send(port, rtp(2, 3000, VP8_DELTA, marker=True), rtp(3, 6000, VP8_KEYFRAME, marker=True))

    packets = viewer.wait_rtp(4)

    assert [p.payload for p in packets] == [VP8_KEYFRAME, VP8_KEYFRAME, VP8_DELTA, VP8_KEYFRAME]
    assert [p.sequence - packets[0].sequence & 0xFFFF for p in packets] == [0, 1, 2, 3]


def test_a_source_restart_keeps_the_viewers_stream_continuous(rig: Rig) -> None:
    port = rig.mountpoint(1)
    viewer = rig.viewer(7, 1)
    rig.send(port, rtp(100, 5000, b"a"), rtp(101, 5960, b"b"),
             rtp(40000, 1, b"c", ssrc=0x1234), rtp(40001, 961, b"d", ssrc=0x1234))

    packets = viewer.wait_rtp(4)

    assert [p.sequence - packets[0].sequence & 0xFFFF for p in packets] == [0, 1, 2, 3]
    assert {p.ssrc for p in packets} == {0x11223344}
    assert packets[3].timestamp - packets[2].timestamp == 960
    assert packets[2].timestamp - packets[1].timestamp & 0xFFFFFFFF < 48000 * 10


def test_two_viewers_decrypt_only_their_own_and_survive_each_others_removal(rig: Rig) -> None:
    port = rig.mountpoint(1)
    alice = rig.viewer(1, 1, GCM, ssrc=0xA11CE)
    bob = rig.viewer(2, 1, CM, ssrc=0xB0B)
    rig.send(port, rtp(1, 0, b"hello"))

    assert [p.payload for p in alice.wait_rtp(1)] == [b"hello"]
    assert [p.payload for p in bob.wait_rtp(1)] == [b"hello"]
    assert (alice.rtp[0].ssrc, bob.rtp[0].ssrc) == (0xA11CE, 0xB0B)

    rig.engine.remove_peer(1)
    rig.send(port, rtp(2, 960, b"again"))

    assert [p.payload for p in bob.wait_rtp(2)] == [b"hello", b"again"]
    alice.drain()
    assert [p.payload for p in alice.rtp] == [b"hello"]
    assert rig.engine.mountpoint_stats(1).viewers == 1
    with pytest.raises(KeyError):
        rig.engine.peer_stats(1)


def test_a_viewer_cannot_decrypt_another_viewers_packets(rig: Rig) -> None:
    port = rig.mountpoint(1)
    alice = rig.viewer(1, 1, GCM)
    bob = rig.viewer(2, 1, GCM)
    rig.send(port, rtp(1, 0, b"secret"))
    wait_until(bob.pending)
    bobs_packet = bob.sock.recv(4096)
    with pytest.raises(SrtpError):
        alice.inbound.unprotect(bobs_packet)


def test_set_peer_address_moves_the_stream(rig: Rig) -> None:
    port = rig.mountpoint(1)
    viewer = rig.viewer(7, 1)
    rig.send(port, rtp(1, 0, b"old place"))
    viewer.wait_rtp(1)
    moved = udp_socket()
    rig.engine.set_peer_address(7, ("localhost", moved.getsockname()[1]))
    viewer.sock, old = moved, viewer.sock
    rig.send(port, rtp(2, 960, b"new place"))

    assert [p.payload for p in viewer.wait_rtp(2)] == [b"old place", b"new place"]
    viewer.sock = old
    viewer.drain()
    assert len(viewer.rtp) == 2, "nothing more went to the old address"
    old.close()


def test_sender_reports_arrive_and_describe_what_was_sent(rig: Rig) -> None:
    port = rig.mountpoint(1)
    viewer = rig.viewer(7, 1, CM, ssrc=0x5151)
    payloads = [b"x" * 10, b"y" * 20, b"z" * 30]
    rig.send(port, *(rtp(i, 960 * i, payload) for i, payload in enumerate(payloads)))
    packets = viewer.wait_rtp(3)

    report = viewer.wait_rtcp(1)[0]

    header, ssrc, _ntp, rtp_timestamp, packet_count, octet_count = struct.unpack("!IIQIII", report[:28])
    assert header == 0x80C80006
    assert (ssrc, packet_count, octet_count) == (0x5151, 3, 60)
    assert (rtp_timestamp - packets[-1].timestamp) & 0xFFFFFFFF < 48000 * 10
    sdes = report[28:]
    assert sdes == struct.pack("!BBHIBB", 0x81, 202, 4, 0x5151, 1, 6) + b"fanout" + bytes(4)
    wait_until(lambda: rig.engine.peer_stats(7).rtcp_packets >= 1)


def test_receive_rtcp_accepts_the_viewers_srtcp_only_and_reports_what_it_carried(rig: Rig) -> None:
    rig.mountpoint(1)
    viewer = rig.viewer(7, 1, GCM)
    # RR: 10/256 lost, 3 in all (signed 24 bits), highest 0x10064, jitter 5, LSR, DLSR; then SDES and a REMB.
    receiver_report = struct.pack("!BBHI", 0x81, 201, 7, 0x0BADCAFE) + struct.pack(
        "!IIIIII", 0x11223344, (10 << 24) | 3, 0x10064, 5, 0xAABBCCDD, 0x10000)
    sdes = struct.pack("!BBHIBB2x", 0x81, 202, 2, 0x0BADCAFE, 0, 0)
    remb = struct.pack("!BBHII4sBBH", 0x8F, 206, 5, 0x0BADCAFE, 0, b"REMB", 1, (3 << 2) | 0x1, 0x2345) + struct.pack(
        "!I", 0x11223344)
    protected = viewer.outbound.protect_rtcp(receiver_report + sdes + remb)

    report = rig.engine.receive_rtcp(7, protected)

    (block,) = report.receiver_reports
    assert (block.ssrc, block.fraction_lost, block.packets_lost, block.highest_sequence) == (0x11223344, 10, 3, 0x10064)
    assert (block.jitter, block.last_sr, block.delay_since_last_sr) == (5, 0xAABBCCDD, 0x10000)
    assert report.remb is not None and (report.remb.bitrate, report.remb.ssrcs) == (0x12345 << 3, [0x11223344])
    assert (report.nacks, report.retransmitted, report.keyframe_requests, report.plis_forwarded, report.other) == (
        0, 0, 0, 0, 1), "the SDES"
    with pytest.raises(ValueError, match="replay"):
        rig.engine.receive_rtcp(7, protected)
    tampered = bytearray(viewer.outbound.protect_rtcp(receiver_report))
    tampered[9] ^= 0x01
    with pytest.raises(ValueError, match="authentication"):
        rig.engine.receive_rtcp(7, bytes(tampered))
    with pytest.raises(ValueError):
        rig.engine.receive_rtcp(7, b"\x80\xc9")
    with pytest.raises(ValueError, match="not an RTCP"):
        rig.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(receiver_report + b"\x80\xc9\x00\x05"))
    with pytest.raises(KeyError):
        rig.engine.receive_rtcp(8, protected)


def test_receive_rtcp_with_aes_cm(rig: Rig) -> None:
    rig.mountpoint(1)
    viewer = rig.viewer(7, 1, CM)
    pli = struct.pack("!BBHII", 0x81, 206, 2, 0x0BADCAFE, 0x11223344)
    report = rig.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(pli))
    assert (report.keyframe_requests, report.plis_forwarded, report.other) == (1, 0, 0), "no source RTCP port"


@pytest.mark.parametrize("profile", [GCM, CM])
def test_send_rtcp_reaches_the_viewer_protected(rig: Rig, profile: SrtpProfile) -> None:
    rig.mountpoint(1)
    viewer = rig.viewer(7, 1, profile)
    bye = struct.pack("!BBHI", 0x81, 203, 1, 0x11223344)

    rig.engine.send_rtcp(7, bye)

    assert viewer.wait_rtcp(1) == [bye]
    with pytest.raises(ValueError):
        rig.engine.send_rtcp(7, b"not rtcp")
    with pytest.raises(KeyError):
        rig.engine.send_rtcp(8, bye)


def test_bad_mountpoints_are_refused_whole(rig: Rig) -> None:
    rig.mountpoint(1)
    with pytest.raises(ValueError, match="already exists"):
        rig.mountpoint(1)
    with pytest.raises(ValueError, match="kind"):
        rig.mountpoint(2, kind="subtitles")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clock rate"):
        rig.mountpoint(2, clock_rate=0)
    taken = udp_socket()
    taken_port = taken.getsockname()[1]
    streams = [source_stream(), source_stream("video", "vp8", 90000, port=taken_port, index=1)]
    with pytest.raises(OSError) as raised:
        rig.engine.add_mountpoint(2, streams)
    assert raised.value.errno == errno.EADDRINUSE
    with pytest.raises(KeyError):
        rig.engine.mountpoint_stats(2)
    with pytest.raises(ValueError, match="twice"):
        rig.engine.add_mountpoint(2, [streams[0], streams[0]])
    taken.close()
    assert rig.engine.add_mountpoint(2, streams)[1] == taken_port


def test_bad_viewers_are_refused(rig: Rig) -> None:
    rig.mountpoint(1)
    address = ("127.0.0.1", 9)
    streams: list[ViewerStream] = [{"index": 0, "ssrc": 1, "payload_type": 111}]
    key = bytes(28)
    with pytest.raises(ValueError, match="profile"):
        rig.engine.add_peer(7, address, "NULL_NULL", key, key)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="28 bytes"):
        rig.engine.add_peer(7, address, GCM, bytes(30), key)
    with pytest.raises(ValueError, match="30 bytes"):
        rig.engine.add_peer(7, address, CM, bytes(30), key)
    with pytest.raises(ValueError, match="port"):
        rig.engine.add_peer(7, ("127.0.0.1", 0), GCM, key, key)
    with pytest.raises(ValueError, match="port"):
        rig.engine.add_peer(7, ("127.0.0.1", 1 << 16), GCM, key, key)
    with pytest.raises(ValueError, match="cannot send"):
        rig.engine.add_peer(7, ("::1", 9), GCM, key, key)
    with pytest.raises(KeyError):
        rig.engine.subscribe(7, 1, streams)  # no such peer yet
    rig.engine.add_peer(7, address, GCM, key, key)
    with pytest.raises(ValueError, match="already exists"):
        rig.engine.add_peer(7, address, GCM, key, key)
    with pytest.raises(KeyError):
        rig.engine.subscribe(7, 2, streams)
    with pytest.raises(ValueError, match="no stream 3"):
        rig.engine.subscribe(7, 1, [{"index": 3, "ssrc": 1, "payload_type": 111}])
    with pytest.raises(ValueError, match="payload type"):
        rig.engine.subscribe(7, 1, [{"index": 0, "ssrc": 1, "payload_type": 128}])
    with pytest.raises(ValueError, match="ssrc"):
        rig.engine.subscribe(7, 1, [{"index": 0, "ssrc": 1 << 32, "payload_type": 1}])
    with pytest.raises(ValueError, match="not subscribed"):
        rig.engine.set_stream_paused(7, 0, True)
    rig.engine.subscribe(7, 1, streams)
    for call in (lambda: rig.engine.peer_stats(8), lambda: rig.engine.set_paused(8, True),
                 lambda: rig.engine.set_peer_address(8, address), lambda: rig.engine.mountpoint_stats(2)):
        with pytest.raises(KeyError):
            call()
    rig.engine.remove_peer(8)
    rig.engine.unsubscribe(8)
    rig.engine.remove_mountpoint(2)


def test_engine_needs_a_udp_socket() -> None:
    with pytest.raises(OSError) as raised:
        Engine(-1)
    assert raised.value.errno == errno.EBADF
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, pytest.raises(ValueError, match="UDP"):
        Engine(tcp.fileno())


def test_remove_mountpoint_frees_its_port_and_ends_its_subscriptions(rig: Rig) -> None:
    port = rig.mountpoint(1)
    viewer = rig.viewer(7, 1)
    rig.engine.remove_mountpoint(1)
    assert rig.engine.peer_stats(7).worker is None, "the peer stays, unsubscribed"
    with pytest.raises(KeyError):
        rig.engine.mountpoint_stats(1)
    assert rig.engine.add_mountpoint(1, [source_stream(port=port)]) == [port]
    rig.engine.subscribe(7, 1, [{"index": 0, "ssrc": 0x11223344, "payload_type": 111}])
    rig.send(port, rtp(1, 0, b"again"))
    assert [p.payload for p in viewer.wait_rtp(1)] == [b"again"]


def test_a_peer_without_a_subscription_gets_rtcp_but_no_media(rig: Rig) -> None:
    port = rig.mountpoint(1)
    viewer = ViewerSocket(rig.engine, 7, None, GCM, [])
    bye = struct.pack("!BBHI", 0x81, 203, 1, 0x11223344)
    receiver_report = struct.pack("!BBHI", 0x80, 201, 1, 0x0BADCAFE)

    rig.engine.send_rtcp(7, bye)
    assert viewer.wait_rtcp(1) == [bye]
    assert rig.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(receiver_report)).receiver_reports == []
    rig.send(port, rtp(1, 0, b"not for it"))
    wait_until(lambda: rig.engine.mountpoint_stats(1).packets == 1)
    rig.engine.subscribe(7, 1, [{"index": 0, "ssrc": 0x11223344, "payload_type": 111}])
    rig.send(port, rtp(2, 960, b"now"))
    assert [p.payload for p in viewer.wait_rtp(1)] == [b"now"]
    viewer.wait_rtcp(2)  # a sender report from its worker, numbered after the BYE
    rig.engine.unsubscribe(7)
    assert rig.engine.mountpoint_stats(1).viewers == 0
    rig.send(port, rtp(3, 1920, b"gone"))
    wait_until(lambda: rig.engine.mountpoint_stats(1).packets == 3)
    rig.engine.send_rtcp(7, bye)  # the SRTCP index goes on: libsrtp's replay check passes
    assert viewer.wait_rtcp(3)[-1] == bye
    viewer.drain()
    assert [p.payload for p in viewer.rtp] == [b"now"]
    assert rig.engine.peer_stats(7).rtcp_packets >= 3


def test_close_is_idempotent_and_final() -> None:
    webrtc = udp_socket()
    engine = Engine(webrtc.fileno())
    port = engine.add_mountpoint(1, [source_stream()])[0]
    engine.close()
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.mountpoint_stats(1)
    rebind = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rebind.bind(("127.0.0.1", port))
    rebind.close()
    # The engine sent from a duplicate: the control plane's socket still works.
    webrtc.sendto(b"ping", webrtc.getsockname())
    assert webrtc.recv(16) == b"ping"
    webrtc.close()


def test_data_streams_are_counted_but_not_forwarded(rig: Rig) -> None:
    audio_port, data_port = rig.engine.add_mountpoint(1, [source_stream(), source_stream("data", "text", 1000, index=1)])
    streams: list[ViewerStream] = [{"index": 0, "ssrc": 1, "payload_type": 111},
                                   {"index": 1, "ssrc": 2, "payload_type": 112}]
    viewer = ViewerSocket(rig.engine, 7, 1, GCM, streams)
    rig.send(data_port, b"plain text, not RTP")
    wait_until(lambda: rig.engine.mountpoint_stats(1).streams[1].packets == 1)
    rig.send(audio_port, rtp(1, 0, b"audio"))

    assert [p.payload for p in viewer.wait_rtp(1)] == [b"audio"]
    viewer.drain()
    assert len(viewer.rtp) == 1
    assert rig.engine.mountpoint_stats(1).malformed == 0
