"""VP9 temporal layers through the engine, from a real encoder: libvpx (through PyAV) encodes
a moving picture in three temporal layers (0, 2, 1, 2 repeating), each frame sent as RTP
with an RFC 9628 payload descriptor carrying its layer (TID), TL0PICIDX and a 15-bit picture
ID. (GStreamer 1.22's rtpvp9pay writes no layer indices, and its vp9enc's layer properties
cannot be set from gst-launch, so the packets are made here.) A viewer capped at layer 0 gets
every fourth picture, one capped at 1 every second, and what each gets decodes to the very
pictures the whole stream decodes to: the encoder's base layers refer to no frame left out.
(Encoded without temporal layers, the same check fails from the second picture on.)
Spatial layers are checked with synthetic pictures: no encoder here makes them."""

from __future__ import annotations

import fractions
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

import av
import numpy as np
import pytest

from .test_engine import GCM, RtpPacket, ViewerSocket, source_stream, wait_until
from .test_keyframe_cache import Rig, rig  # noqa: F401 (the fixture)

if TYPE_CHECKING:
    from fanout._engine import ViewerStream

FRAMES = 48
LAYERS = (0, 2, 1, 2)  # the layer of each frame, repeating (libvpx's three-layer mode 3)
TS_PARAMETERS = (
    "ts_number_layers=3:ts_target_bitrate=150,225,300:ts_rate_decimator=4,2,1:ts_periodicity=4:"
    "ts_layer_id=0,2,1,2:ts_layering_mode=3"
)
MAX_PAYLOAD = 300  # small, so that most frames span several packets
DESCRIPTOR_LEN = 5  # the first byte, a 15-bit picture ID, the layer indices, TL0PICIDX
VIDEO_SSRC = 0x0A0A0A0A
SOURCE_SSRC = 0x5EED
FIRST_PICTURE_ID = 0x7FF0  # wraps within the stream


def encode() -> list[bytes]:
    codec = av.CodecContext.create("libvpx-vp9", "w")
    codec.width, codec.height, codec.pix_fmt = 320, 180, "yuv420p"
    codec.time_base = fractions.Fraction(1, 30)
    codec.framerate = fractions.Fraction(30)
    codec.bit_rate = 300_000
    codec.options = {"deadline": "realtime", "cpu-used": "8", "g": "1000", "lag-in-frames": "0",
                     "error-resilient": "1", "ts-parameters": TS_PARAMETERS}
    gradient = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (180, 1))
    frames: list[bytes] = []
    for index in range(FRAMES):
        picture = np.stack([gradient, gradient.T[:180, :180].repeat(2, axis=1)[:, :320], gradient[::-1]], axis=2)
        picture[:, (index * 6) % 300 : (index * 6) % 300 + 20] = 255
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        frames.extend(bytes(packet) for packet in codec.encode(frame))
    frames.extend(bytes(packet) for packet in codec.encode(None))
    assert len(frames) == FRAMES, f"libvpx gave {len(frames)} frames for {FRAMES}"
    return frames


def vp9_rtp(frame: bytes, index: int, sequence: int) -> list[bytes]:
    """RFC 9628 packets of frame ``index``: I (15-bit picture ID), P but for the first
    frame (the keyframe), L, B and E; TID, U on base-layer pictures (a conservative
    marking: no later picture refers past one), SID 0; TL0PICIDX."""
    layer = LAYERS[index % len(LAYERS)]
    picture_id = (FIRST_PICTURE_ID + index) & 0x7FFF
    tl0 = index // len(LAYERS)
    chunks = [frame[i : i + MAX_PAYLOAD] for i in range(0, len(frame), MAX_PAYLOAD)]
    packets = []
    for n, chunk in enumerate(chunks):
        first = 0xA0 | (0x40 if index > 0 else 0) | (0x08 if n == 0 else 0) | (0x04 if n == len(chunks) - 1 else 0)
        descriptor = bytes([first, 0x80 | picture_id >> 8, picture_id & 0xFF, layer << 5 | (0x10 if layer == 0 else 0),
                            tl0 & 0xFF])
        marker = 0x80 if n == len(chunks) - 1 else 0
        header = struct.pack("!BBHII", 0x80, marker | 96, (sequence + n) & 0xFFFF, 3000 * index, SOURCE_SSRC)
        packets.append(header + descriptor + chunk)
    return packets


def decode(frames: list[bytes]) -> list[np.ndarray]:
    decoder = av.CodecContext.create("libvpx-vp9", "r")
    pictures: list[np.ndarray] = []
    for frame in frames:
        pictures.extend(picture.to_ndarray(format="yuv420p") for picture in decoder.decode(av.Packet(frame)))
    return pictures


class Encoded:
    def __init__(self) -> None:
        self.frames = encode()
        self.packets: list[list[bytes]] = []
        sequence = 1000
        for index, frame in enumerate(self.frames):
            self.packets.append(vp9_rtp(frame, index, sequence))
            sequence += len(self.packets[-1])
        self.pictures = decode(self.frames)
        assert len(self.pictures) == FRAMES


@pytest.fixture(scope="module")
def encoded() -> Iterator[Encoded]:
    yield Encoded()


def capped_viewer(rig: Rig, viewer_id: int, layer: int | None) -> ViewerSocket:
    viewer = ViewerSocket(rig.engine, viewer_id, 1, GCM, [{"index": 0, "ssrc": VIDEO_SSRC, "payload_type": 96}])
    if layer is not None:
        rig.engine.set_stream_temporal_layer(viewer_id, 0, layer)
    viewer.took_commands(rig.engine)
    return viewer


def pictures_of(packets: list[RtpPacket]) -> list[tuple[int, list[RtpPacket]]]:
    """The packets grouped into pictures by timestamp, in order of arrival: (timestamp, packets)."""
    pictures: list[tuple[int, list[RtpPacket]]] = []
    for packet in packets:
        if not pictures or pictures[-1][0] != packet.timestamp:
            pictures.append((packet.timestamp, []))
        pictures[-1][1].append(packet)
    return pictures


def test_a_capped_viewer_gets_whole_lower_layers_that_decode_to_the_streams_own_pictures(
    rig: Rig, encoded: Encoded
) -> None:
    port = rig.engine.add_mountpoint(1, [source_stream("video", "vp9", 90000)])[0]
    viewers = {layer: capped_viewer(rig, 10 + i, layer) for i, layer in enumerate([0, 1, None])}
    for packets in encoded.packets:
        rig.send(port, *packets)

    every = len(LAYERS)
    for layer, step in [(0, every), (1, every // 2), (None, 1)]:
        expected = [i for i in range(FRAMES) if i % step == 0]
        expected_packets = sum(len(encoded.packets[i]) for i in expected)
        received = viewers[layer].wait_rtp(expected_packets)
        assert len(received) == expected_packets, f"layer {layer}: more than its pictures"
        assert [p.sequence - received[0].sequence & 0xFFFF for p in received] == list(range(expected_packets)), (
            "no gaps in the viewer's sequence"
        )
        pictures = pictures_of(received)
        first_timestamp = pictures[0][0]
        indexes = [(timestamp - first_timestamp & 0xFFFFFFFF) // 3000 for timestamp, _ in pictures]
        assert indexes == expected, f"layer {layer}: the pictures of its layers, in order"
        descriptors = [packets[0].payload[:DESCRIPTOR_LEN] for _, packets in pictures]
        assert {d[3] >> 5 for d in descriptors} == {LAYERS[i % every] for i in expected}
        picture_ids = [int.from_bytes(d[1:3], "big") & 0x7FFF for d in descriptors]
        assert [(pid - picture_ids[0]) & 0x7FFF for pid in picture_ids] == expected, (
            "picture IDs keep their places in the group of pictures"
        )
        tl0s = [d[4] for d, i in zip(descriptors, expected, strict=True) if i % every == 0]
        assert tl0s == list(range(tl0s[0], tl0s[0] + len(tl0s))), "TL0PICIDX goes on by one"
        for _, picture_packets in pictures:
            assert picture_packets[0].payload[0] & 0x08 and picture_packets[-1].payload[0] & 0x04, "whole frames: B first, E last"
            assert picture_packets[-1].marker
        frames = [b"".join(p.payload[DESCRIPTOR_LEN:] for p in packets) for _, packets in pictures]
        decoded = decode(frames)
        assert len(decoded) == len(expected), f"layer {layer}: every picture received decodes"
        for index, picture in zip(expected, decoded, strict=True):
            assert np.array_equal(picture, encoded.pictures[index]), f"layer {layer}: picture {index} as in the stream"


def test_the_stream_counts_the_bytes_of_each_temporal_layer(rig: Rig, encoded: Encoded) -> None:
    port = rig.engine.add_mountpoint(1, [source_stream("video", "vp9", 90000)])[0]
    for packets in encoded.packets:
        rig.send(port, *packets)
    expected = [0, 0, 0, 0]
    for index, packets in enumerate(encoded.packets):
        expected[LAYERS[index % len(LAYERS)]] += sum(len(packet) for packet in packets)
    wait_until(lambda: rig.engine.mountpoint_stats(1).streams[0].temporal_layer_bytes == expected)


def test_a_viewer_raised_mid_stream_gets_every_layer_from_a_switching_point_on(
    rig: Rig, encoded: Encoded
) -> None:
    port = rig.engine.add_mountpoint(1, [source_stream("video", "vp9", 90000)])[0]
    viewer = capped_viewer(rig, 20, 0)
    half = FRAMES // 2 + 1  # the command comes after a layer-2 picture: the next switching point is picture 28
    for packets in encoded.packets[:half]:
        rig.send(port, *packets)
    before = sum(len(encoded.packets[i]) for i in range(0, half, len(LAYERS)))
    viewer.wait_rtp(before)
    rig.engine.set_stream_temporal_layer(20, 0, None)
    viewer.took_commands(rig.engine)
    for packets in encoded.packets[half:]:
        rig.send(port, *packets)

    expected = [i for i in range(FRAMES) if i % len(LAYERS) == 0 or i >= 28]
    received = viewer.wait_rtp(sum(len(encoded.packets[i]) for i in expected))
    pictures = pictures_of(received)
    first_timestamp = pictures[0][0]
    assert [(timestamp - first_timestamp & 0xFFFFFFFF) // 3000 for timestamp, _ in pictures] == expected
    decoded = decode([b"".join(p.payload[DESCRIPTOR_LEN:] for p in packets) for _, packets in pictures])
    assert len(decoded) == len(expected)
    for index, picture in zip(expected, decoded, strict=True):
        assert np.array_equal(picture, encoded.pictures[index]), f"picture {index} as in the stream"


def svc_picture(number: int, sequence: int, *, keyframe: bool) -> list[bytes]:
    """A synthetic VP9 picture in two spatial layers, two packets each (no encoder at hand
    makes spatial layers): I, L, B on each layer's first packet, E on its last; P on every
    frame of a delta picture (the upper layer predicted from its own earlier frame), on
    neither of a keyframe's; SID in the layer indices. The source marks the picture's end on
    the upper layer's last packet."""
    packets: list[bytes] = []
    for spatial_layer in (0, 1):
        for part in (0, 1):
            first = 0xA0 | (0 if keyframe else 0x40) | (0x08 if part == 0 else 0) | (0x04 if part == 1 else 0)
            descriptor = bytes([first, 0x80 | number >> 8 & 0x7F, number & 0xFF, 0x10 | spatial_layer << 1 | spatial_layer,
                                number & 0xFF])  # fmt: skip
            marker = 0x80 if (spatial_layer, part) == (1, 1) else 0
            header = struct.pack("!BBHII", 0x80, marker | 96, sequence + len(packets), 3000 * number, SOURCE_SSRC)
            packets.append(header + descriptor + bytes([spatial_layer, part]) * 50)
    return packets


def test_spatial_layers_above_the_cap_are_left_out_and_come_back_at_a_keyframe(rig: Rig) -> None:
    port = rig.engine.add_mountpoint(1, [source_stream("video", "vp9", 90000)])[0]
    viewer = ViewerSocket(rig.engine, 30, 1, GCM, [{"index": 0, "ssrc": VIDEO_SSRC, "payload_type": 96}])
    rig.engine.set_stream_spatial_layer(30, 0, 0)
    viewer.took_commands(rig.engine)
    for number in range(4):
        rig.send(port, *svc_picture(number, 100 + 4 * number, keyframe=number == 0))
    capped = viewer.wait_rtp(8)[:]
    assert [(p.payload[3] >> 1) & 0x07 for p in capped] == [0] * 8, "the base spatial layer alone"
    assert [p.marker for p in capped] == [False, True] * 4, "its last packet ends each picture"
    assert [p.sequence - capped[0].sequence & 0xFFFF for p in capped] == list(range(8))

    rig.engine.set_stream_spatial_layer(30, 0, None)
    viewer.took_commands(rig.engine)
    for number in range(4, 7):
        rig.send(port, *svc_picture(number, 100 + 4 * number, keyframe=number == 6))
    received = viewer.wait_rtp(8 + 2 + 2 + 4)
    later = [((p.timestamp - capped[0].timestamp & 0xFFFFFFFF) // 3000, (p.payload[3] >> 1) & 0x07, p.marker)
             for p in received[8:]]  # fmt: skip
    assert later == [(4, 0, False), (4, 0, True), (5, 0, False), (5, 0, True),
                     (6, 0, False), (6, 0, False), (6, 1, False), (6, 1, True)], (
        "the upper layer only from the keyframe on, which it ends as the source marked it"
    )  # fmt: skip
    assert [p.sequence - capped[0].sequence & 0xFFFF for p in received] == list(range(16))
    rig.engine.add_mountpoint(2, [source_stream("video", "vp8", 90000)])
    ViewerSocket(rig.engine, 31, 2, GCM, [{"index": 0, "ssrc": VIDEO_SSRC, "payload_type": 96}])
    for layer in (0, None):
        with pytest.raises(ValueError, match="not VP9"):
            rig.engine.set_stream_spatial_layer(31, 0, layer)
    with pytest.raises(ValueError, match="spatial layer"):
        rig.engine.set_stream_spatial_layer(30, 0, 8)


def test_layer_caps_given_with_the_subscription_hold_from_the_first_packet_of_the_keyframe_cache(rig: Rig) -> None:
    """A viewer moved to a mountpoint with its spatial layer pinned gets the cached keyframe's base
    layer alone: a cap set after the subscription could come after the burst's first packets."""
    rig.engine.add_mountpoint(1, [source_stream("video", "vp9", 90000)])
    port = rig.engine.add_mountpoint(2, [source_stream("video", "vp9", 90000)])[0]
    rig.send(port, *svc_picture(0, 100, keyframe=True), *svc_picture(1, 104, keyframe=False))
    rig.cached(2, 8)
    viewer = ViewerSocket(rig.engine, 32, 1, GCM, [{"index": 0, "ssrc": VIDEO_SSRC, "payload_type": 96}])

    rig.engine.subscribe(32, 2, [{"index": 0, "ssrc": VIDEO_SSRC, "payload_type": 96, "spatial_layer": 0}])
    rig.send(port, *svc_picture(2, 108, keyframe=False))

    received = viewer.wait_rtp(6)
    assert [(p.payload[3] >> 1) & 0x07 for p in received] == [0] * 6, "the base spatial layer alone"
    assert [p.marker for p in received] == [False, True] * 3, "its last packet ends each picture"
    assert [p.sequence - received[0].sequence & 0xFFFF for p in received] == list(range(6))


def test_a_subscription_with_layers_its_codec_lacks_is_refused_and_changes_nothing(rig: Rig) -> None:
    rig.engine.add_mountpoint(1, [source_stream("video", "vp8", 90000)])
    rig.engine.add_mountpoint(2, [source_stream("video", "h264", 90000)])
    rig.engine.add_peer(33, ("127.0.0.1", 9), GCM, bytes(28), bytes(28))
    taking: list[ViewerStream] = [{"index": 0, "ssrc": VIDEO_SSRC, "payload_type": 96}]

    with pytest.raises(ValueError, match="not VP9"):
        rig.engine.subscribe(33, 1, [{**taking[0], "spatial_layer": 0}])
    with pytest.raises(ValueError, match="temporal layer must be in 0..=3, got 4"):
        rig.engine.subscribe(33, 1, [{**taking[0], "temporal_layer": 4}])
    with pytest.raises(ValueError, match="not VP8, VP9 or AV1"):
        rig.engine.subscribe(33, 2, [{**taking[0], "temporal_layer": 0}])
    assert rig.engine.peer_stats(33).worker is None
    rig.engine.subscribe(33, 1, [{**taking[0], "temporal_layer": 1}])
    assert rig.engine.peer_stats(33).worker is not None
