"""The publisher link (src/ingest/publisher.rs) through the Python API: a
"publisher" is a plain UDP socket connected to the engine's link socket, sending
SRTP made with libsrtp (pylibsrtp) and reading the SRTCP the engine sends back;
viewers are engine peers that decrypt what they receive."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from pylibsrtp import Policy, Session

from fanout._engine import Engine, PublisherDatagram
from tests.engine.test_engine import GCM, VP8_CONTINUATION, VP8_DELTA, VP8_KEYFRAME, ViewerSocket, rtp, udp_socket, wait_until

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
    engine = Engine(webrtc.fileno())
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
