"""The publisher link (src/ingest/publisher.rs) through the Python API: a
"publisher" is a plain UDP socket connected to the engine's link socket, sending
SRTP made with libsrtp (pylibsrtp) and reading the SRTCP the engine sends back;
viewers are engine peers that decrypt what they receive."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from pylibsrtp import Policy, Session

from fanout._engine import Engine, PublisherDatagram, SourceResumed, SourceSilent
from tests.engine.test_engine import COUNTED_SEND_DELAY_MS, GCM, VP8_CONTINUATION, VP8_DELTA, VP8_KEYFRAME, ViewerSocket, rtp, udp_socket, wait_until

if TYPE_CHECKING:
    from fanout._engine import MediaKind, PublisherRoute, SourceStream, ViewerStream

KEY_LENGTH = 28  # AEAD_AES_128_GCM: 16 + 12
VIDEO_SSRC = 0x1111
AUDIO_SSRC = 0x2222
MID_EXTENSION = 3
RID_EXTENSION = 4


def linked(index: int, kind: MediaKind = "video", codec: str = "vp8", clock_rate: int = 90000) -> SourceStream:
    """A stream without a port: the publisher link feeds it."""
    return {"index": index, "kind": kind, "codec": codec, "clock_rate": clock_rate}


def with_extensions(packet: bytes, extensions: dict[int, bytes]) -> bytes:
    """``packet`` (plain RTP without extensions) with RFC 8285 one-byte header extensions."""
    elements = b"".join(bytes([(ident << 4) | (len(value) - 1)]) + value for ident, value in extensions.items())
    elements += bytes(-len(elements) % 4)
    return bytes([packet[0] | 0x10]) + packet[1:12] + struct.pack("!HH", 0xBEDE, len(elements) // 4) + elements + packet[12:]


def rtcp_parts(compound: bytes) -> list[tuple[int, int, bytes]]:
    """The packets of a compound RTCP packet: (packet type, count or format, whole packet)."""
    parts = []
    while len(compound) >= 4:
        length = 4 * (struct.unpack("!H", compound[2:4])[0] + 1)
        parts.append((compound[1], compound[0] & 0x1F, compound[:length]))
        compound = compound[length:]
    return parts


def nacked(compound: bytes) -> list[tuple[int, int]]:
    """(media SSRC, sequence number) of each packet the Generic NACKs in ``compound`` ask for."""
    lost = []
    for packet_type, fmt, packet in rtcp_parts(compound):
        if (packet_type, fmt) == (205, 1):
            media_ssrc = struct.unpack("!I", packet[8:12])[0]
            for at in range(12, len(packet), 4):
                first, bitmask = struct.unpack("!HH", packet[at:at + 4])
                lost += [(media_ssrc, first)] + [(media_ssrc, (first + bit + 1) & 0xFFFF)
                                                 for bit in range(16) if bitmask >> bit & 1]
    return lost


def feedback(compound: bytes, fmt: int) -> list[bytes]:
    """The payload-specific feedback packets (PT 206) of format ``fmt`` (1: PLI, 15: REMB) in ``compound``."""
    return [packet for packet_type, packet_fmt, packet in rtcp_parts(compound) if (packet_type, packet_fmt) == (206, fmt)]


def report_blocks(compound: bytes) -> list[tuple[int, int, int, int, int, int]]:
    """The receiver report blocks: (ssrc, fraction lost, cumulative lost, highest sequence, jitter, LSR)."""
    blocks = []
    for packet_type, count, packet in rtcp_parts(compound):
        if packet_type == 201:
            for at in range(8, 8 + 24 * count, 24):
                ssrc, loss, highest, jitter, lsr, _ = struct.unpack("!IIIIII", packet[at:at + 24])
                blocks.append((ssrc, loss >> 24, loss & 0xFFFFFF, highest, jitter, lsr))
    return blocks


def sender_report(ssrc: int, ntp_time: int, rtp_timestamp: int) -> bytes:
    return struct.pack("!BBHIQIII", 0x80, 200, 6, ssrc, ntp_time, rtp_timestamp, 10, 1000)


@dataclass
class Publisher:
    """The publisher's side of a link: its socket, its SRTP, and the SRTCP the engine sent it."""

    sock: socket.socket
    engine_key: bytes  # the engine protects its SRTCP with it
    publisher_key: bytes  # the publisher protects its SRTP with it
    outbound: Session
    inbound: Session
    rtcp: list[bytes] = field(default_factory=list)

    def send(self, *packets: bytes) -> None:
        for packet in packets:
            self.sock.send(self.outbound.protect(packet))

    def send_rtcp(self, packet: bytes) -> None:
        self.sock.send(self.outbound.protect_rtcp(packet))

    def drain(self) -> list[bytes]:
        """Every SRTCP packet the engine sent so far, unprotected."""
        while True:
            try:
                data = self.sock.recv(2048, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return self.rtcp
            self.rtcp.append(self.inbound.unprotect_rtcp(data))

    def wait_rtcp(self, found: Callable[[bytes], bool]) -> bytes:
        """The first RTCP packet from the engine (received so far or later) that ``found`` accepts."""
        def any_found() -> bool:
            return any(found(packet) for packet in self.drain())

        wait_until(any_found)
        return next(packet for packet in self.rtcp if found(packet))


@dataclass
class Rig:
    engine: Engine
    webrtc: socket.socket
    publishers: list[Publisher] = field(default_factory=list)

    def attach(self, mountpoint_id: int, routes: list[PublisherRoute], **extension_ids: int) -> Publisher:
        """Attaches a new link to the mountpoint, as WHIP or a relay does: a socket connected to the publisher."""
        publisher_sock = udp_socket()
        link = udp_socket()
        link.connect(publisher_sock.getsockname())
        publisher_sock.connect(link.getsockname())
        engine_key, publisher_key = os.urandom(KEY_LENGTH), os.urandom(KEY_LENGTH)
        self.engine.attach_publisher(mountpoint_id, link.fileno(), GCM, engine_key, publisher_key, routes,
                                     **extension_ids)
        link.close()  # the engine holds its own duplicate
        profile = Policy.SRTP_PROFILE_AEAD_AES_128_GCM
        publisher = Publisher(
            publisher_sock, engine_key, publisher_key,
            Session(Policy(key=publisher_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)),
            Session(Policy(key=engine_key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile)),
        )
        self.publishers.append(publisher)
        return publisher

    def viewer(self, viewer_id: int, mountpoint_id: int, streams: list[ViewerStream]) -> ViewerSocket:
        return ViewerSocket(self.engine, viewer_id, mountpoint_id, GCM, streams)


@pytest.fixture
def rig() -> Iterator[Rig]:
    webrtc = udp_socket()
    engine = Engine(webrtc.fileno(), max_send_delay_ms=COUNTED_SEND_DELAY_MS)
    rig = Rig(engine, webrtc)
    yield rig
    engine.close()
    webrtc.close()
    for publisher in rig.publishers:
        publisher.sock.close()


def video_and_audio(rig: Rig) -> tuple[Publisher, ViewerSocket]:
    """Mountpoint 1: video (stream 0, routed by SSRC) and audio (stream 1, by payload type 111), one viewer."""
    rig.engine.add_mountpoint(1, [linked(0), linked(1, "audio", "opus", 48000)])
    publisher = rig.attach(1, [{"index": 0, "ssrc": VIDEO_SSRC}, {"index": 1, "payload_types": [111]}])
    viewer = rig.viewer(7, 1, [{"index": 0, "ssrc": 0xA, "payload_type": 96},
                               {"index": 1, "ssrc": 0xB, "payload_type": 111}])
    return publisher, viewer


def test_a_publishers_srtp_reaches_a_viewer(rig: Rig) -> None:
    publisher, viewer = video_and_audio(rig)
    publisher.send(rtp(1, 0, VP8_KEYFRAME, ssrc=VIDEO_SSRC), rtp(2, 0, VP8_CONTINUATION, ssrc=VIDEO_SSRC, marker=True),
                   rtp(50, 960, b"opus 1", ssrc=AUDIO_SSRC, payload_type=111),
                   rtp(3, 3000, VP8_DELTA, ssrc=VIDEO_SSRC, marker=True),
                   rtp(51, 1920, b"opus 2", ssrc=AUDIO_SSRC, payload_type=111))

    packets = viewer.wait_rtp(5)

    video = [packet for packet in packets if packet.ssrc == 0xA]
    audio = [packet for packet in packets if packet.ssrc == 0xB]
    assert [packet.payload for packet in video] == [VP8_KEYFRAME, VP8_CONTINUATION, VP8_DELTA]
    assert [packet.payload for packet in audio] == [b"opus 1", b"opus 2"]
    assert [packet.sequence - video[0].sequence & 0xFFFF for packet in video] == [0, 1, 2]
    stats = rig.engine.publisher_stats(1)
    assert stats is not None
    assert (stats.packets, stats.undecryptable, stats.unroutable, stats.malformed) == (5, 0, 0, 0)
    assert stats.ssrcs == [VIDEO_SSRC, AUDIO_SSRC]
    mountpoint = rig.engine.mountpoint_stats(1)
    assert [(stream.port, stream.packets, stream.rtcp_port) for stream in mountpoint.streams] == [(0, 3, None), (0, 2, None)]


def test_routes_by_mid_and_rid_extensions(rig: Rig) -> None:
    rig.engine.add_mountpoint(1, [linked(0, "audio", "opus", 48000), linked(1), linked(2)])
    publisher = rig.attach(1, [{"index": 0, "mid": "0"}, {"index": 1, "mid": "1", "rid": "h"},
                               {"index": 2, "mid": "1", "rid": "l"}],
                           mid_extension_id=MID_EXTENSION, rid_extension_id=RID_EXTENSION)
    viewer = rig.viewer(7, 1, [{"index": 0, "ssrc": 0xA, "payload_type": 111},
                               {"index": 1, "ssrc": 0xB, "payload_type": 96},
                               {"index": 2, "ssrc": 0xC, "payload_type": 96}])
    publisher.send(
        with_extensions(rtp(1, 0, b"audio", ssrc=5, payload_type=111), {MID_EXTENSION: b"0"}),
        with_extensions(rtp(1, 0, VP8_KEYFRAME + b"high", ssrc=6), {MID_EXTENSION: b"1", RID_EXTENSION: b"h"}),
        with_extensions(rtp(1, 0, VP8_KEYFRAME + b"low", ssrc=7), {MID_EXTENSION: b"1", RID_EXTENSION: b"l"}),
        with_extensions(rtp(1, 0, b"who?", ssrc=8), {MID_EXTENSION: b"1"}),  # simulcast: the rid decides
        rtp(2, 960, b"audio again", ssrc=5, payload_type=111),  # the SSRC is known now
        rtp(2, 3000, VP8_DELTA + b"low again", ssrc=7),
    )

    packets = viewer.wait_rtp(5)

    by_ssrc = {ssrc: [packet.payload for packet in packets if packet.ssrc == ssrc] for ssrc in (0xA, 0xB, 0xC)}
    assert by_ssrc == {0xA: [b"audio", b"audio again"], 0xB: [VP8_KEYFRAME + b"high"],
                       0xC: [VP8_KEYFRAME + b"low", VP8_DELTA + b"low again"]}
    wait_until(lambda: (stats := rig.engine.publisher_stats(1)) is not None and stats.unroutable == 1)
    stats = rig.engine.publisher_stats(1)
    assert stats is not None and (stats.packets, stats.ssrcs) == (5, [5, 6, 7])


def test_a_stun_datagram_becomes_a_publisher_datagram_event(rig: Rig) -> None:
    rig.engine.add_mountpoint(1, [linked(0)])
    publisher = rig.attach(1, [{"index": 0, "payload_types": [96]}])
    binding_request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + os.urandom(12)
    publisher.sock.send(binding_request)

    events: list[object] = []

    def drained() -> bool:
        events.extend(rig.engine.drain_events())
        return bool(events)

    wait_until(drained)

    assert events == [PublisherDatagram(1, binding_request)]
    stats = rig.engine.publisher_stats(1)
    assert stats is not None and stats.control_datagrams == 1


def test_link_fed_streams_refuse_port_options_and_bad_attachments(rig: Rig) -> None:
    for option, value in [("rtcp_port", 0), ("interface", "127.0.0.1"), ("srtp_profile", "AES_CM_128_HMAC_SHA1_80")]:
        stream = {**linked(0), option: value, "srtp_master_key": bytes(30)} if option == "srtp_profile" else {
            **linked(0), option: value}
        with pytest.raises(ValueError, match=f"has no port .*{option} is not allowed"):
            rig.engine.add_mountpoint(1, [stream])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="needs a host"):
        rig.engine.add_mountpoint(1, [{**linked(0), "port": 0}])
    rig.engine.add_mountpoint(1, [linked(0), {**linked(1), "host": "127.0.0.1", "port": 0}])
    assert rig.engine.publisher_stats(1) is None
    with pytest.raises(KeyError):
        rig.engine.publisher_stats(2)
    link = udp_socket()
    key = bytes(KEY_LENGTH)
    with pytest.raises(ValueError, match="connected"):
        rig.engine.attach_publisher(1, link.fileno(), GCM, key, key, [{"index": 0, "ssrc": 1}])
    link.connect(("127.0.0.1", 9))
    bad_routes: list[tuple[list[PublisherRoute], str]] = [
        ([], "at least one route"),
        ([{"index": 5, "ssrc": 1}], "no stream 5"),
        ([{"index": 1, "ssrc": 1}], "stream 1 has a port"),
        ([{"index": 0}], "matches nothing"),
        ([{"index": 0, "mid": "0"}], "matches nothing"),
        ([{"index": 0, "rid": "h"}], "rid_extension_id is needed"),
        ([{"index": 0, "payload_types": [128]}], "payload type"),
        ([{"index": 0, "ssrc": 1}, {"index": 0, "ssrc": 1}], "two routes"),
    ]
    for routes, message in bad_routes:
        with pytest.raises(ValueError, match=message):
            rig.engine.attach_publisher(1, link.fileno(), GCM, key, key, routes)
    with pytest.raises(ValueError, match="mid_extension_id"):
        rig.engine.attach_publisher(1, link.fileno(), GCM, key, key, [{"index": 0, "ssrc": 1}], mid_extension_id=15)
    with pytest.raises(ValueError, match="key"):
        rig.engine.attach_publisher(1, link.fileno(), GCM, bytes(30), key, [{"index": 0, "ssrc": 1}])
    with pytest.raises(KeyError):
        rig.engine.attach_publisher(2, link.fileno(), GCM, key, key, [{"index": 0, "ssrc": 1}])
    assert rig.engine.publisher_stats(1) is None, "nothing was attached by the refusals"
    rig.engine.detach_publisher(1)  # no link: ignored
    rig.engine.detach_publisher(99)  # no mountpoint: ignored
    link.close()


def test_a_gap_in_video_is_nacked_and_the_retransmission_recovered_and_forwarded(rig: Rig) -> None:
    publisher, viewer = video_and_audio(rig)
    publisher.send(rtp(1, 0, VP8_KEYFRAME, ssrc=VIDEO_SSRC), rtp(2, 0, VP8_CONTINUATION, ssrc=VIDEO_SSRC, marker=True))
    # The viewer has started (live, or from the keyframe cache: a start from a cache that
    # holds 4 and not 3 would leave 3 out, as any packet older than the burst's last).
    viewer.wait_rtp(2)
    publisher.send(rtp(4, 3000, VP8_CONTINUATION + b"4", ssrc=VIDEO_SSRC, marker=True))

    publisher.wait_rtcp(lambda packet: nacked(packet) == [(VIDEO_SSRC, 3)])
    # Asked again (every 40 ms) while still missing.
    wait_until(lambda: sum(nacked(packet) == [(VIDEO_SSRC, 3)] for packet in publisher.drain()) >= 2)
    publisher.send(rtp(3, 3000, VP8_DELTA + b"3", ssrc=VIDEO_SSRC))

    packets = viewer.wait_rtp(4)

    assert [packet.payload for packet in packets] == [VP8_KEYFRAME, VP8_CONTINUATION, VP8_CONTINUATION + b"4",
                                                      VP8_DELTA + b"3"]
    assert packets[3].sequence == packets[0].sequence + 2 & 0xFFFF, "the retransmission keeps its place"
    stats = rig.engine.publisher_stats(1)
    assert stats is not None
    assert (stats.lost, stats.recovered) == (1, 1)
    assert 2 <= stats.nacks_sent <= 4


def test_audio_gaps_are_not_nacked(rig: Rig) -> None:
    publisher, viewer = video_and_audio(rig)
    publisher.send(*(rtp(sequence, 960 * sequence, b"opus", ssrc=AUDIO_SSRC, payload_type=111) for sequence in (1, 3)))
    viewer.wait_rtp(2)
    publisher.send(rtp(1, 0, VP8_KEYFRAME, ssrc=VIDEO_SSRC), rtp(3, 0, VP8_CONTINUATION, ssrc=VIDEO_SSRC))
    publisher.wait_rtcp(lambda packet: bool(nacked(packet)))
    assert [nack for packet in publisher.drain() for nack in nacked(packet)][0] == (VIDEO_SSRC, 2), "video only"


def test_a_viewer_starting_without_a_keyframe_makes_the_engine_ask_the_publisher(rig: Rig) -> None:
    rig.engine.add_mountpoint(1, [linked(0)])
    publisher = rig.attach(1, [{"index": 0, "ssrc": VIDEO_SSRC}])
    publisher.send(rtp(1, 0, VP8_DELTA, ssrc=VIDEO_SSRC, marker=True))
    wait_until(lambda: rig.engine.mountpoint_stats(1).streams[0].packets == 1)

    viewer = rig.viewer(7, 1, [{"index": 0, "ssrc": 0xA, "payload_type": 96}])

    pli = publisher.wait_rtcp(lambda packet: bool(feedback(packet, 1)))
    assert struct.unpack("!I", feedback(pli, 1)[0][8:12])[0] == VIDEO_SSRC
    assert rig.engine.mountpoint_stats(1).streams[0].keyframe_requests == 1
    publisher.send(rtp(2, 3000, VP8_KEYFRAME, ssrc=VIDEO_SSRC, marker=True))
    assert [packet.payload for packet in viewer.wait_rtp(1)] == [VP8_KEYFRAME]


def test_bitrate_estimates_go_over_the_link_while_one_is_attached(rig: Rig) -> None:
    rig.engine.add_mountpoint(1, [linked(0)])
    assert rig.engine.send_source_remb(1, 0, 1_000_000) is False, "no link yet"
    publisher = rig.attach(1, [{"index": 0, "ssrc": VIDEO_SSRC}])
    publisher.send(rtp(1, 0, VP8_KEYFRAME, ssrc=VIDEO_SSRC, marker=True))
    wait_until(lambda: rig.engine.mountpoint_stats(1).streams[0].packets == 1)

    assert rig.engine.send_source_remb(1, 0, 1_000_000) is True

    remb = feedback(publisher.wait_rtcp(lambda packet: bool(feedback(packet, 15))), 15)[0]
    assert remb[12:16] == b"REMB"
    exponent, mantissa = remb[17] >> 2, (remb[17] & 3) << 16 | remb[18] << 8 | remb[19]
    assert (mantissa << exponent, remb[20:24]) == (1_000_000, struct.pack("!I", VIDEO_SSRC))
    assert rig.engine.mountpoint_stats(1).streams[0].rembs_sent == 1
    rig.engine.detach_publisher(1)
    assert rig.engine.send_source_remb(1, 0, 1_000_000) is False, "the link went"


def test_receiver_reports_go_once_a_second_with_the_publishers_sender_report(rig: Rig) -> None:
    publisher, viewer = video_and_audio(rig)
    publisher.send(rtp(1, 0, VP8_KEYFRAME, ssrc=VIDEO_SSRC), rtp(3, 3000, VP8_DELTA, ssrc=VIDEO_SSRC, marker=True),
                   rtp(1, 960, b"opus", ssrc=AUDIO_SSRC, payload_type=111))
    wait_until(lambda: rig.engine.mountpoint_stats(1).packets == 3)
    ntp_time = 0xE000_0001_8000_0000
    publisher.send_rtcp(sender_report(VIDEO_SSRC, ntp_time, 3000) + sender_report(AUDIO_SSRC, ntp_time, 960))
    wait_until(lambda: all(stream.sender_report is not None for stream in rig.engine.mountpoint_stats(1).streams))

    def a_report_after_the_sender_report(packet: bytes) -> bool:
        return any(block[0] == VIDEO_SSRC and block[5] != 0 for block in report_blocks(packet))

    report = publisher.wait_rtcp(a_report_after_the_sender_report)

    [(ssrc, _, cumulative_lost, highest, _, lsr)] = [b for b in report_blocks(report) if b[0] == VIDEO_SSRC]
    assert (cumulative_lost, highest, lsr) == (1, 3, ntp_time >> 16 & 0xFFFFFFFF)
    stats = rig.engine.publisher_stats(1)
    assert stats is not None and stats.receiver_reports_sent >= 1 and stats.rtcp_packets == 1
    reports = [stream.sender_report for stream in rig.engine.mountpoint_stats(1).streams]
    assert [(report.ntp_time, report.rtp_timestamp) for report in reports if report] == [(ntp_time, 3000),
                                                                                         (ntp_time, 960)]
    assert viewer.wait_rtp(1)


def test_garbage_wrong_keys_replays_and_unroutable_packets_are_counted_and_viewers_undisturbed(rig: Rig) -> None:
    publisher, viewer = video_and_audio(rig)
    intruder = Session(Policy(key=os.urandom(KEY_LENGTH), ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                              srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_128_GCM))
    first = publisher.outbound.protect(rtp(1, 960, b"opus 1", ssrc=AUDIO_SSRC, payload_type=111))
    publisher.sock.send(first)
    short_rtp = bytes([0x80, 111, 0, 1])
    for garbage in [b"", b"\x80", short_rtp, bytes([0x40]) + bytes(20), bytes([0xFF]) * 30, b"hello, not media"]:
        publisher.sock.send(garbage)
    publisher.sock.send(intruder.protect(rtp(2, 1920, b"forged", ssrc=AUDIO_SSRC, payload_type=111)))
    publisher.sock.send(first)  # a replay
    publisher.sock.send(bytes([0x80, 200]) + os.urandom(40))  # "SRTCP" that fails authentication
    publisher.send(rtp(9, 0, b"no route", ssrc=0x3333, payload_type=100))
    publisher.send(rtp(2, 1920, b"opus 2", ssrc=AUDIO_SSRC, payload_type=111))

    packets = viewer.wait_rtp(2)

    assert [packet.payload for packet in packets] == [b"opus 1", b"opus 2"]
    wait_until(lambda: (stats := rig.engine.publisher_stats(1)) is not None and stats.unroutable == 1)
    stats = rig.engine.publisher_stats(1)
    assert stats is not None
    assert (stats.packets, stats.malformed, stats.undecryptable, stats.unroutable) == (2, 6, 3, 1)
    assert (stats.control_datagrams, stats.rtcp_packets) == (0, 0)


def test_a_publisher_that_comes_back_gives_viewers_continuous_numbering(rig: Rig) -> None:
    rig.engine.add_mountpoint(1, [linked(0, "audio", "opus", 48000)])
    routes: list[PublisherRoute] = [{"index": 0, "payload_types": [111]}]
    first = rig.attach(1, routes)
    viewer = rig.viewer(7, 1, [{"index": 0, "ssrc": 0xA, "payload_type": 111}])
    first.send(*(rtp(sequence, 960 * sequence, b"first", ssrc=AUDIO_SSRC, payload_type=111) for sequence in (1, 2)))
    viewer.wait_rtp(2)

    second = rig.attach(1, routes)  # the same SSRC, its numbering starting again: a restart all the same
    second.send(*(rtp(sequence, 960 * sequence, b"second", ssrc=AUDIO_SSRC, payload_type=111) for sequence in (1, 2)))

    packets = viewer.wait_rtp(4)

    assert [packet.payload for packet in packets] == [b"first", b"first", b"second", b"second"]
    assert [packet.sequence - packets[0].sequence & 0xFFFF for packet in packets] == [0, 1, 2, 3]
    assert all(0 < later.timestamp - earlier.timestamp & 0xFFFFFFFF < 2**31
               for earlier, later in zip(packets, packets[1:])), "timestamps go on forward"
    stats = rig.engine.publisher_stats(1)
    assert stats is not None and stats.packets == 2, "the new link's counters"
    refused_by_the_closed_link(first)
    rig.engine.detach_publisher(1)
    assert rig.engine.publisher_stats(1) is None
    refused_by_the_closed_link(second)
    third = rig.attach(1, routes)
    rig.engine.remove_mountpoint(1)
    refused_by_the_closed_link(third)


def test_a_link_attached_after_a_detach_is_a_new_source_even_when_its_numbers_look_near(rig: Rig) -> None:
    """A relay whose origin restarted: the edge detached the old link, then attaches a new one whose
    source has the same SSRC and, by chance, a sequence number not far from the last one."""
    rig.engine.add_mountpoint(1, [linked(0, "audio", "opus", 48000)])
    routes: list[PublisherRoute] = [{"index": 0, "payload_types": [111]}]
    first = rig.attach(1, routes)
    viewer = rig.viewer(7, 1, [{"index": 0, "ssrc": 0xA, "payload_type": 111}])
    first.send(*(rtp(sequence, 960 * sequence, b"first", ssrc=AUDIO_SSRC, payload_type=111) for sequence in (1, 2)))
    viewer.wait_rtp(2)
    rig.engine.detach_publisher(1)

    second = rig.attach(1, routes)
    second.send(*(rtp(sequence, 960 * sequence, b"second", ssrc=AUDIO_SSRC, payload_type=111)
                  for sequence in (2002, 2003)))  # fmt: skip

    packets = viewer.wait_rtp(4)
    assert [packet.sequence - packets[0].sequence & 0xFFFF for packet in packets] == [0, 1, 2, 3]


def refused_by_the_closed_link(publisher: Publisher) -> None:
    """The engine's duplicate of the link socket is closed: a datagram to it draws ICMP port unreachable."""
    def refused() -> bool:
        try:
            publisher.sock.send(b"\x00\x01 anyone?")
            publisher.sock.recv(2048, socket.MSG_DONTWAIT)
        except ConnectionRefusedError:
            return True
        except BlockingIOError:
            pass
        return False

    wait_until(refused)


def test_link_fed_streams_report_silence_and_resumption(rig: Rig) -> None:
    rig.engine.add_mountpoint(1, [{**linked(0, "audio", "opus", 48000), "silence_ms": 100}])
    publisher = rig.attach(1, [{"index": 0, "payload_types": [111]}])
    publisher.send(rtp(1, 0, b"opus", payload_type=111))
    events: list[object] = []

    def silent() -> bool:
        events.extend(rig.engine.drain_events())
        return any(isinstance(event, SourceSilent) for event in events)

    wait_until(silent)
    assert events[0] == SourceResumed(1, 0)
    assert isinstance(events[1], SourceSilent) and events[1].index == 0 and events[1].silent_ms >= 100


def test_stun_and_dtls_past_64_a_second_are_dropped(rig: Rig) -> None:
    rig.engine.add_mountpoint(1, [linked(0)])
    publisher = rig.attach(1, [{"index": 0, "payload_types": [96]}])
    for _ in range(100):
        publisher.sock.send(bytes([22, 254, 253]) + os.urandom(20))

    def all_counted() -> bool:
        stats = rig.engine.publisher_stats(1)
        return stats is not None and stats.control_datagrams + stats.malformed == 100

    wait_until(all_counted)
    stats = rig.engine.publisher_stats(1)
    assert stats is not None and stats.control_datagrams == 64
    events = rig.engine.drain_events()
    assert len(events) == 64 and all(isinstance(event, PublisherDatagram) for event in events)


def test_a_viewers_pli_goes_over_the_link(rig: Rig) -> None:
    rig.engine.add_mountpoint(1, [linked(0)])
    publisher = rig.attach(1, [{"index": 0, "ssrc": VIDEO_SSRC}])
    publisher.send(rtp(1, 0, VP8_KEYFRAME, ssrc=VIDEO_SSRC, marker=True))
    wait_until(lambda: (cache := rig.engine.mountpoint_stats(1).streams[0].keyframe_cache) is not None
               and cache.keyframe)
    viewer = rig.viewer(7, 1, [{"index": 0, "ssrc": 0xA, "payload_type": 96}])
    viewer.wait_rtp(1)

    report = rig.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(struct.pack("!BBHII", 0x81, 206, 2, 0xA, 0xA)))

    assert report.plis_forwarded == 1
    pli = publisher.wait_rtcp(lambda packet: bool(feedback(packet, 1)))
    assert struct.unpack("!I", feedback(pli, 1)[0][8:12])[0] == VIDEO_SSRC
    stream = rig.engine.mountpoint_stats(1).streams[0]
    assert (stream.plis_forwarded, stream.keyframe_requests) == (1, 0)


def test_a_simulcast_move_asks_the_new_layer_for_a_keyframe_over_the_link(rig: Rig) -> None:
    rig.engine.add_mountpoint(1, [linked(0), linked(1)])
    publisher = rig.attach(1, [{"index": 0, "mid": "0", "rid": "h"}, {"index": 1, "mid": "0", "rid": "l"}],
                           mid_extension_id=MID_EXTENSION, rid_extension_id=RID_EXTENSION)
    publisher.send(
        with_extensions(rtp(1, 0, VP8_KEYFRAME, ssrc=6, marker=True), {MID_EXTENSION: b"0", RID_EXTENSION: b"h"}),
        with_extensions(rtp(1, 0, VP8_KEYFRAME, ssrc=7, marker=True), {MID_EXTENSION: b"0", RID_EXTENSION: b"l"}),
    )
    wait_until(lambda: all(stream.keyframe_cache is not None and stream.keyframe_cache.keyframe
                           for stream in rig.engine.mountpoint_stats(1).streams))
    viewer = rig.viewer(7, 1, [{"index": 0, "ssrc": 0xA, "payload_type": 96}])
    viewer.wait_rtp(1)

    rig.engine.set_stream_source(7, 0, 1)

    pli = publisher.wait_rtcp(lambda packet: bool(feedback(packet, 1)))
    assert struct.unpack("!I", feedback(pli, 1)[0][8:12])[0] == 7, "the low layer's SSRC"
    assert [stream.keyframe_requests for stream in rig.engine.mountpoint_stats(1).streams] == [0, 1]
