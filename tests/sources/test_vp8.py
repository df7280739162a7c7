import time

import av
import pytest

from fanout.sources.encoders import Vp8Encoder
from fanout.sources.pattern import TestPattern
from fanout.sources.rtp import RtpPacket, RtpStream
from fanout.sources.vp8 import (
    Vp8Depacketizer,
    Vp8Error,
    Vp8Frame,
    Vp8Packetizer,
    Vp8PayloadDescriptor,
    is_keyframe,
)

KEYFRAME = b"\x50\x42\x00\x9d\x01\x2a" + bytes(range(256)) * 40  # frame tag P bit clear
INTERFRAME = b"\x51\x42\x00" + bytes(range(256)) * 3


def packets_of(frames: list[bytes], packetizer: Vp8Packetizer | None = None) -> list[RtpPacket]:
    packetizer = packetizer or Vp8Packetizer(first_picture_id=0x7FFE)
    stream = RtpStream(96, first_sequence_number=0xFFF0)
    packets = []
    for number, frame in enumerate(frames):
        packets += stream.packetize(packetizer.packetize(frame), number * 3000, marker_on_last=True)
    return [RtpPacket.parse(data) for data in packets]


def reassemble(packets: list[RtpPacket]) -> tuple[list[Vp8Frame], Vp8Depacketizer]:
    depacketizer = Vp8Depacketizer()
    frames = [frame for packet in packets if (frame := depacketizer.push(packet))]
    return frames, depacketizer


def test_first_payload_descriptor_has_s_bit_partition_0_and_a_15_bit_picture_id() -> None:
    first, second, *_ = Vp8Packetizer(first_picture_id=0x1234).packetize(KEYFRAME)
    # X=1 S=1 PID=0 | I=1 | M=1 and picture ID 0x1234
    assert first[:4] == bytes([0x90, 0x80, 0x80 | 0x12, 0x34])
    assert second[:4] == bytes([0x80, 0x80, 0x80 | 0x12, 0x34])
    assert first[4:7] == KEYFRAME[:3]


@pytest.mark.parametrize("size", [1, 3, 1196, 1197, 2392, 2393, 5000, 100_000])
def test_round_trip_of_frames_of_any_size(size: int) -> None:
    frame = (INTERFRAME * (size // len(INTERFRAME) + 1))[:size]
    packets = packets_of([KEYFRAME, frame, frame])
    assert all(len(packet.payload) <= 1200 for packet in packets)
    assert len(bytes(packets[-1])) <= 1212
    frames, depacketizer = reassemble(packets)
    assert [f.data for f in frames] == [KEYFRAME, frame, frame]
    assert [f.keyframe for f in frames] == [True, False, False]
    assert [f.timestamp - frames[0].timestamp for f in frames] == [0, 3000, 6000]
    assert depacketizer.frames_dropped == 0


def test_marker_bit_on_the_last_packet_of_each_frame_only() -> None:
    packets = packets_of([KEYFRAME, INTERFRAME, KEYFRAME])
    starts = [Vp8PayloadDescriptor.parse(packet.payload)[0].start_of_partition for packet in packets]
    markers = [packet.marker for packet in packets]
    assert len(packets) == 9 + 1 + 9
    assert markers == [False] * 8 + [True] + [True] + [False] * 8 + [True]
    assert starts == [True] + [False] * 8 + [True] + [True] + [False] * 8


def test_payload_sizes_are_balanced() -> None:
    sizes = [len(payload) for payload in Vp8Packetizer().packetize(bytes(1196 * 2 + 10))]
    assert sizes == [4 + 801, 4 + 801, 4 + 800]


def test_picture_id_counts_up_and_wraps_at_15_bits() -> None:
    frames, _ = reassemble(packets_of([KEYFRAME, INTERFRAME, INTERFRAME, INTERFRAME]))
    assert [frame.picture_id for frame in frames] == [0x7FFE, 0x7FFF, 0, 1]


def test_a_lost_packet_drops_that_frame_only() -> None:
    packets = packets_of([KEYFRAME, KEYFRAME, INTERFRAME])
    del packets[12]
    frames, depacketizer = reassemble(packets)
    assert [frame.data for frame in frames] == [KEYFRAME, INTERFRAME]
    assert depacketizer.frames_dropped == 1


def test_a_lost_first_packet_drops_that_frame() -> None:
    packets = packets_of([KEYFRAME, KEYFRAME])
    del packets[9]
    frames, _ = reassemble(packets)
    assert [frame.picture_id for frame in frames] == [0x7FFE]


def test_descriptor_with_every_optional_field() -> None:
    # X N S PID=2 | I L T K | M=0 picture ID 0x55 | TL0PICIDX 7 | TID=2 Y=1 KEYIDX=5
    data = bytes([0xB2, 0xF0, 0x55, 0x07, 0xA5])
    descriptor, length = Vp8PayloadDescriptor.parse(data + b"vp8")
    assert length == 5
    assert descriptor == Vp8PayloadDescriptor(
        start_of_partition=True,
        partition_index=2,
        non_reference=True,
        picture_id=0x55,
        picture_id_bits=7,
        tl0_picture_index=7,
        temporal_layer=2,
        layer_sync=True,
        key_index=5,
    )
    assert bytes(descriptor) == data


def test_minimal_descriptor() -> None:
    descriptor, length = Vp8PayloadDescriptor.parse(b"\x10\x9d")
    assert (length, descriptor) == (1, Vp8PayloadDescriptor(start_of_partition=True))
    assert bytes(descriptor) == b"\x10"


@pytest.mark.parametrize("data", [b"", b"\x80", b"\x80\x80", b"\x80\x80\x80", b"\x80\x40", b"\x80\x20"])
def test_truncated_descriptors_are_rejected(data: bytes) -> None:
    with pytest.raises(Vp8Error):
        Vp8PayloadDescriptor.parse(data)


def test_keyframe_flag_follows_the_frame_tag() -> None:
    assert is_keyframe(KEYFRAME)
    assert not is_keyframe(INTERFRAME)
    assert not is_keyframe(b"")


def test_encoded_frames_survive_the_round_trip_and_decode() -> None:
    pattern = TestPattern(640, 360)
    encoder = Vp8Encoder(640, 360, fps=30, bitrate=1_000_000)
    encoded = []
    for number in range(10):
        encoded += encoder.encode(pattern.render(number, time.time()), number, keyframe=number == 0)
    frames, _ = reassemble(packets_of(encoded))
    assert [frame.data for frame in frames] == encoded
    assert frames[0].keyframe and len(frames[0].data) > 1200
    decoder = av.CodecContext.create("vp8", "r")
    pictures = [picture for frame in frames for picture in decoder.decode(av.Packet(frame.data))]
    assert [(picture.width, picture.height) for picture in pictures] == [(640, 360)] * 10
