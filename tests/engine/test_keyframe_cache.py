"""Instant start and what rides on it: the keyframe cache (a viewer added,
resumed or switched mid-GOP gets the cached pictures first, then live), the
per-stream send switch, a move to another mountpoint (subscribe again), and the source's RTCP port (keyframe
requests). A fake source driven from Python; viewers decrypt with libsrtp.
No timing assertions."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from fanout._engine import Engine

from .test_engine import (
    COUNTED_SEND_DELAY_MS,
    GCM,
    VP8_CONTINUATION,
    VP8_DELTA,
    VP8_KEYFRAME,
    RtpPacket,
    ViewerSocket,
    rtp,
    udp_socket,
    wait_until,
)
from .test_workers import nack, receive_raw

if TYPE_CHECKING:
    from fanout._engine import SourceStream, ViewerStream

VIDEO_SSRC = 0x0A0A0A0A
AUDIO_SSRC = 0x0B0B0B0B
# With a cache smaller than the burst's first credit the pictures' timestamps
# are compressed by the most, 100: 3000 ticks apart become 30.
MAX_COMPRESSION = 100
PLI = 1
RTCP_PSFB = 206


def video(index: int = 0, rtcp_port: int | None = None) -> SourceStream:
    return {"index": index, "kind": "video", "codec": "vp8", "clock_rate": 90000, "host": "127.0.0.1", "port": 0,
            "rtcp_port": rtcp_port}


def audio(index: int = 1) -> SourceStream:
    return {"index": index, "kind": "audio", "codec": "opus", "clock_rate": 48000, "host": "127.0.0.1", "port": 0}


def streams(video_pt: int = 96, audio: bool = False) -> list[ViewerStream]:
    taken: list[ViewerStream] = [{"index": 0, "ssrc": VIDEO_SSRC, "payload_type": video_pt}]
    if audio:
        taken.append({"index": 1, "ssrc": AUDIO_SSRC, "payload_type": 111})
    return taken


def gop(first_sequence: int, first_timestamp: int, frames: int) -> list[bytes]:
    """A keyframe of two packets, then one-packet delta frames, 3000 ticks apart."""
    packets = [rtp(first_sequence, first_timestamp, VP8_KEYFRAME),
               rtp(first_sequence + 1, first_timestamp, VP8_CONTINUATION, marker=True)]
    for frame in range(1, frames):
        packets.append(rtp(first_sequence + 1 + frame, first_timestamp + 3000 * frame, VP8_DELTA, marker=True))
    return packets


@dataclass
class Rig:
    engine: Engine
    webrtc: socket.socket
    source: socket.socket

    def send(self, port: int, *packets: bytes) -> None:
        for packet in packets:
            self.source.sendto(packet, ("127.0.0.1", port))

    def cached(self, mountpoint_id: int, packets: int, index: int = 0) -> None:
        """Waits until the stream's cache holds ``packets`` packets."""

        def holds() -> bool:
            cache = self.engine.mountpoint_stats(mountpoint_id).streams[index].keyframe_cache
            return cache is not None and cache.packets == packets

        wait_until(holds)

    def viewer(self, viewer_id: int, mountpoint_id: int, taken: list[ViewerStream]) -> ViewerSocket:
        return ViewerSocket(self.engine, viewer_id, mountpoint_id, GCM, taken)


@pytest.fixture
def rig() -> Iterator[Rig]:
    webrtc = udp_socket()
    source = udp_socket()
    engine = Engine(webrtc.fileno(), max_send_delay_ms=COUNTED_SEND_DELAY_MS)
    yield Rig(engine, webrtc, source)
    engine.close()
    webrtc.close()
    source.close()


def video_of(viewer: ViewerSocket) -> list[RtpPacket]:
    return [packet for packet in viewer.rtp if packet.ssrc == VIDEO_SSRC]


def wait_video(viewer: ViewerSocket, count: int) -> list[RtpPacket]:
    def enough() -> bool:
        viewer.drain()
        return len(video_of(viewer)) >= count

    wait_until(enough)
    return video_of(viewer)


def test_a_viewer_added_mid_gop_gets_the_cached_pictures_then_live(rig: Rig) -> None:
    port = rig.engine.add_mountpoint(1, [video()])[0]
    rig.send(port, rtp(1, 0, VP8_DELTA, marker=True), *gop(2, 3000, 3))  # a delta before the keyframe is not kept
    rig.cached(1, 4)
    viewer = rig.viewer(7, 1, streams())

    cached = viewer.wait_rtp(4)[:]
    rig.send(port, rtp(6, 12000, VP8_DELTA, marker=True), rtp(7, 15000, VP8_DELTA, marker=True))
    packets = viewer.wait_rtp(6)

    assert [p.payload for p in packets] == [VP8_KEYFRAME, VP8_CONTINUATION, VP8_DELTA, VP8_DELTA, VP8_DELTA,
                                            VP8_DELTA]
    assert [p.sequence - packets[0].sequence & 0xFFFF for p in packets] == [0, 1, 2, 3, 4, 5]
    assert {p.ssrc for p in packets} == {VIDEO_SSRC}
    assert {p.payload_type for p in packets} == {96}
    # The newest cached picture is "now"; the older ones come closer to it; live
    # pictures then keep the source's spacing.
    now = cached[-1].timestamp
    assert [now - p.timestamp & 0xFFFFFFFF for p in cached] == [6000 // MAX_COMPRESSION] * 2 + [
        3000 // MAX_COMPRESSION, 0]
    assert [p.timestamp - now & 0xFFFFFFFF for p in packets[4:]] == [3000, 6000]
    cache = rig.engine.mountpoint_stats(1).streams[0].keyframe_cache
    assert cache is not None
    assert (cache.keyframe, cache.packets, cache.overflows) == (True, 6, 0)
    assert cache.bytes == sum(len(p) for p in gop(2, 3000, 3)) + 2 * (12 + len(VP8_DELTA))


def test_a_nack_for_a_cached_picture_is_answered_though_this_worker_never_got_it_live(rig: Rig) -> None:
    """The viewer's worker subscribed when the viewer came: the cached GOP reached it only through
    the cache, and a packet of the burst lost on the way must still be sent again."""
    port = rig.engine.add_mountpoint(1, [video()])[0]
    rig.send(port, *gop(2, 3000, 3))
    rig.cached(1, 4)
    viewer = rig.viewer(7, 1, streams())
    burst = receive_raw(viewer, 4)
    second = RtpPacket.parse(viewer.inbound.unprotect(burst[1]))  # the keyframe's first packet "lost"

    seen = rig.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(nack(0xABC, VIDEO_SSRC, [second.sequence - 1])))

    assert (seen.nacks, seen.retransmitted) == (1, 1)
    (resent,) = (RtpPacket.parse(viewer.inbound.unprotect(data)) for data in receive_raw(viewer, 1))
    assert (resent.sequence, resent.timestamp, resent.payload) == (second.sequence - 1, second.timestamp, VP8_KEYFRAME)


def test_late_copies_of_cached_packets_are_not_sent_twice(rig: Rig) -> None:
    port = rig.engine.add_mountpoint(1, [video()])[0]
    rig.send(port, *gop(100, 0, 2))
    rig.cached(1, 3)
    viewer = rig.viewer(7, 1, streams())
    viewer.wait_rtp(3)
    rig.send(port, rtp(101, 0, VP8_CONTINUATION, marker=True), rtp(103, 6000, VP8_DELTA, marker=True))

    packets = viewer.wait_rtp(4)

    assert [p.sequence - packets[0].sequence & 0xFFFF for p in packets] == [0, 1, 2, 3]
    assert not viewer.pending()


def test_without_a_cached_keyframe_video_waits_for_the_next(rig: Rig) -> None:
    port = rig.engine.add_mountpoint(1, [video()])[0]
    rig.send(port, rtp(1, 0, VP8_DELTA, marker=True))
    wait_until(lambda: rig.engine.mountpoint_stats(1).packets == 1)
    cache = rig.engine.mountpoint_stats(1).streams[0].keyframe_cache
    assert cache is not None and (cache.keyframe, cache.packets, cache.bytes, cache.overflows) == (False, 0, 0, 0)
    viewer = rig.viewer(7, 1, streams())
    rig.send(port, rtp(2, 3000, VP8_DELTA, marker=True), *gop(3, 6000, 2))

    packets = viewer.wait_rtp(3)

    assert [p.payload for p in packets] == [VP8_KEYFRAME, VP8_CONTINUATION, VP8_DELTA]
    assert [p.sequence - packets[0].sequence & 0xFFFF for p in packets] == [0, 1, 2]
    # 3000 apart when the viewer's worker took it before the keyframe came;
    # closer if the keyframe reached the cache first (then it is a burst).
    assert 0 < packets[2].timestamp - packets[0].timestamp & 0xFFFFFFFF <= 3000


def test_the_cache_lets_go_of_a_gop_past_its_bounds(rig: Rig) -> None:
    port = rig.engine.add_mountpoint(1, [video()])[0]
    packets = gop(0, 0, 8192)  # 8193 packets: one more than the cache keeps
    for start in range(0, len(packets), 256):
        rig.send(port, *packets[start:start + 256])
        received = min(start + 256, len(packets))
        wait_until(lambda received=received: rig.engine.mountpoint_stats(1).packets >= received)  # type: ignore[misc]

    cache = rig.engine.mountpoint_stats(1).streams[0].keyframe_cache

    assert cache is not None and (cache.keyframe, cache.packets, cache.bytes, cache.overflows) == (False, 0, 0, 1)


def test_per_stream_pause_and_resume(rig: Rig) -> None:
    video_port, audio_port = rig.engine.add_mountpoint(1, [video(), audio()])
    rig.send(video_port, *gop(10, 0, 1))
    rig.cached(1, 2)
    viewer = rig.viewer(7, 1, streams(audio=True))
    wait_video(viewer, 2)
    rig.engine.set_stream_paused(7, 0, True)
    rig.send(video_port, rtp(12, 3000, VP8_DELTA, marker=True))
    rig.send(audio_port, rtp(1, 0, b"audio", ssrc=AUDIO_SSRC))
    def audio_arrived() -> bool:
        viewer.drain()
        return any(p.ssrc == AUDIO_SSRC for p in viewer.rtp)

    wait_until(audio_arrived)
    assert len(video_of(viewer)) == 2, "video paused, audio not"
    assert rig.engine.peer_stats(7).paused is False

    rig.engine.set_stream_paused(7, 0, False)
    resumed = wait_video(viewer, 5)  # the cached keyframe (2 packets) and delta again

    assert [p.payload for p in resumed] == [VP8_KEYFRAME, VP8_CONTINUATION, VP8_KEYFRAME, VP8_CONTINUATION,
                                            VP8_DELTA]
    assert [p.sequence - resumed[0].sequence & 0xFFFF for p in resumed] == [0, 1, 2, 3, 4]
    assert (resumed[2].timestamp - resumed[1].timestamp) & 0xFFFFFFFF < 2**31, "time goes forward"
    with pytest.raises(ValueError):
        rig.engine.set_stream_paused(7, 5, True)
    with pytest.raises(KeyError):
        rig.engine.set_stream_paused(8, 0, True)


def test_switch_keeps_ssrc_sequence_and_timestamps_and_rewrites_the_payload_type(rig: Rig) -> None:
    port_a = rig.engine.add_mountpoint(1, [video()])[0]
    port_b = rig.engine.add_mountpoint(2, [video()])[0]
    rig.send(port_a, *gop(1000, 90000, 2))
    rig.send(port_b, *gop(50000, 7, 3))  # another source: other numbering
    rig.cached(1, 3)
    rig.cached(2, 4)
    viewer = rig.viewer(7, 1, streams(video_pt=96))
    before = viewer.wait_rtp(3)[:]

    rig.engine.subscribe(7, 2, streams(video_pt=100))
    after = viewer.wait_rtp(7)[3:]
    rig.send(port_b, rtp(50004, 9007, VP8_DELTA, marker=True))
    after = viewer.wait_rtp(8)[3:]

    assert [p.payload for p in after] == [VP8_KEYFRAME, VP8_CONTINUATION, VP8_DELTA, VP8_DELTA, VP8_DELTA]
    assert {p.ssrc for p in before + after} == {VIDEO_SSRC}
    assert {p.payload_type for p in after} == {100}
    assert [p.sequence - before[0].sequence & 0xFFFF for p in before + after] == list(range(8))
    forward = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in zip(before + after, (before + after)[1:])]
    assert all(step < 2**31 for step in forward), "timestamps never go back"
    assert after[-1].timestamp - after[-2].timestamp & 0xFFFFFFFF == 3000
    stats = (rig.engine.mountpoint_stats(1).viewers, rig.engine.mountpoint_stats(2).viewers)
    assert stats == (0, 1)
    rig.send(port_a, rtp(1003, 96000, VP8_DELTA, marker=True))
    rig.send(port_b, rtp(50005, 12007, VP8_DELTA, marker=True))
    assert [p.payload_type for p in viewer.wait_rtp(9)[8:]] == [100], "only the new mountpoint's packets"
    with pytest.raises(KeyError):
        rig.engine.subscribe(7, 3, streams())
    with pytest.raises(ValueError):
        rig.engine.subscribe(7, 1, [{"index": 4, "ssrc": 1, "payload_type": 96}])


@dataclass
class Source:
    """A source with its RTP socket and, at the next port up, its RTCP socket."""

    rtp: socket.socket
    rtcp: socket.socket

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


def source_pair() -> Source:
    for _ in range(50):
        rtp_socket = udp_socket()
        rtcp_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtcp_socket.bind(("127.0.0.1", rtp_socket.getsockname()[1] + 1))
        except OSError:
            rtp_socket.close()
            rtcp_socket.close()
            continue
        rtcp_socket.settimeout(5)
        return Source(rtp_socket, rtcp_socket)
    raise AssertionError("no two adjacent free ports")


def keyframe_requests(sock: socket.socket) -> list[int]:
    """The media SSRCs of the PLIs waiting on ``sock`` (each after an empty RR)."""
    asked: list[int] = []
    while True:
        try:
            data = sock.recv(1500, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return asked
        assert data[:2] == bytes([0x80, 201]), "a compound packet starts with a receiver report"
        first, kind, _, _, media_ssrc = struct.unpack("!BBHII", data[8:20])
        assert (first & 0x1F, kind) == (PLI, RTCP_PSFB)
        asked.append(media_ssrc)


def pli(media_ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80 | PLI, RTCP_PSFB, 2, 0x5151, media_ssrc)


def test_plis_go_to_the_rtp_source_port_plus_one_then_to_where_rtcp_came_from(rig: Rig) -> None:
    source = source_pair()
    port = rig.engine.add_mountpoint(1, [video(rtcp_port=0)])[0]
    rtcp_port = rig.engine.mountpoint_stats(1).streams[0].rtcp_port
    assert rtcp_port is not None and rtcp_port != port
    source.rtp.sendto(rtp(1, 0, VP8_KEYFRAME, marker=True), ("127.0.0.1", port))
    rig.cached(1, 1)
    viewer = rig.viewer(7, 1, streams())
    viewer.wait_rtp(1)

    reports = [rig.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(pli(VIDEO_SSRC))),
               rig.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(pli(VIDEO_SSRC))),  # within a second: not sent
               rig.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(pli(0x999)))]  # not the viewer's: ignored
    assert [(report.keyframe_requests, report.plis_forwarded) for report in reports] == [(1, 1), (1, 0), (1, 0)]
    wait_until(lambda: rig.engine.mountpoint_stats(1).streams[0].plis_forwarded == 1)
    source.rtcp.settimeout(5)
    source.rtcp.setblocking(True)
    first = source.rtcp.recv(1500)
    assert struct.unpack("!I", first[16:20])[0] == 0xDEADBEEF, "about the source's own SSRC"
    assert keyframe_requests(source.rtcp) == [], "rate limited"

    # A sender report from elsewhere: later requests go where RTCP came from.
    reporter = udp_socket()
    report = struct.pack("!BBHIIIIII", 0x80, 200, 6, 0xDEADBEEF, 0xE0000001, 0x80000000, 90000, 1, 100)
    reporter.sendto(report, ("127.0.0.1", rtcp_port))
    wait_until(lambda: rig.engine.mountpoint_stats(1).streams[0].sender_report is not None)
    stream = rig.engine.mountpoint_stats(1).streams[0]
    assert stream.rtcp_packets == 1
    assert stream.sender_report is not None
    assert (stream.sender_report.ntp_time, stream.sender_report.rtp_timestamp) == (
        0xE0000001_80000000, 90000)
    reporter.close()
    source.close()


def test_each_simulcast_layer_hears_the_keyframe_requests_for_it_on_the_shared_port(rig: Rig) -> None:
    """An encoder sends each layer from a port of its own and hears RTCP for it at the port
    plus one (GStreamer's rtpbin, a session per layer): a move to the upper layer asks that
    layer's session for a keyframe, naming its SSRC, from the stream's one RTCP port."""
    lower, upper = source_pair(), source_pair()
    high = 1 << 16  # substream 1's index, as the Streaming plugin numbers them
    sharing: SourceStream = {**video(index=high), "rtcp_port": None, "shares_rtcp_port_of": 0}
    low_port, high_port = rig.engine.add_mountpoint(1, [video(rtcp_port=0), sharing])
    stats = rig.engine.mountpoint_stats(1).streams
    assert stats[1].rtcp_port == stats[0].rtcp_port is not None
    lower.rtp.sendto(rtp(1, 0, VP8_KEYFRAME, ssrc=0x1000, marker=True), ("127.0.0.1", low_port))
    upper.rtp.sendto(rtp(1, 0, VP8_DELTA, ssrc=0x1001, marker=True), ("127.0.0.1", high_port))
    wait_until(lambda: [stream.packets for stream in rig.engine.mountpoint_stats(1).streams] == [1, 1])
    viewer = rig.viewer(7, 1, streams())
    viewer.wait_rtp(1)

    rig.engine.set_stream_source(7, 0, high)

    request = upper.rtcp.recv(1500)  # within the source pair's timeout
    lower.rtcp.setblocking(True)  # keyframe_requests reads without waiting
    assert struct.unpack("!I", request[16:20])[0] == 0x1001, "about the upper layer's SSRC"
    assert keyframe_requests(lower.rtcp) == [], "the lower layer's encoder is not asked"
    assert [stream.keyframe_requests for stream in rig.engine.mountpoint_stats(1).streams] == [0, 1]
    with pytest.raises(ValueError, match="cannot share stream 0's RTCP port"):
        rig.engine.add_mountpoint(2, [video(), {**video(index=high), "shares_rtcp_port_of": 0}])
    lower.close()
    upper.close()


def test_bitrate_estimates_go_to_the_source_like_keyframe_requests(rig: Rig) -> None:
    source = source_pair()
    port = rig.engine.add_mountpoint(1, [video(rtcp_port=0), audio()])[0]
    assert rig.engine.send_source_remb(1, 0, 1_500_000) is False, "the source has not shown where it is"
    source.rtp.sendto(rtp(1, 0, VP8_KEYFRAME, marker=True), ("127.0.0.1", port))
    rig.cached(1, 1)

    assert rig.engine.send_source_remb(1, 0, 1_500_000) is True
    packet = source.rtcp.recv(1500)
    assert packet[:2] == bytes([0x80, 201]), "an empty receiver report first"
    assert packet[8:10] == bytes([0x80 | 15, 206]) and packet[20:24] == b"REMB"
    count, exponent, mantissa = packet[24], packet[25] >> 2, int.from_bytes(packet[25:28], "big") & 0x3FFFF
    assert (count, mantissa << exponent) == (1, 1_500_000 >> exponent << exponent)
    assert struct.unpack("!I", packet[28:32])[0] == 0xDEADBEEF, "about the source's own SSRC"
    assert rig.engine.mountpoint_stats(1).streams[0].rembs_sent == 1
    with pytest.raises(ValueError, match="no RTCP port"):
        rig.engine.send_source_remb(1, 1, 1000)
    with pytest.raises(ValueError, match="no stream 5"):
        rig.engine.send_source_remb(1, 5, 1000)
    with pytest.raises(KeyError):
        rig.engine.send_source_remb(2, 0, 1000)
    source.close()


def test_a_viewer_starting_without_a_cached_keyframe_asks_the_source_for_one(rig: Rig) -> None:
    source = source_pair()
    port = rig.engine.add_mountpoint(1, [video(rtcp_port=0)])[0]
    source.rtp.sendto(rtp(1, 0, VP8_DELTA, marker=True), ("127.0.0.1", port))
    wait_until(lambda: rig.engine.mountpoint_stats(1).packets == 1)

    rig.viewer(7, 1, streams())
    source.rtcp.setblocking(True)
    request = source.rtcp.recv(1500)

    assert struct.unpack("!I", request[16:20])[0] == 0xDEADBEEF
    stats = rig.engine.mountpoint_stats(1).streams[0]
    assert (stats.keyframe_requests, stats.plis_forwarded) == (1, 0)
    rig.viewer(8, 1, streams())  # within a second of the first: not asked again
    assert rig.engine.mountpoint_stats(1).streams[0].keyframe_requests == 1
    source.close()
