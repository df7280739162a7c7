import time
from fractions import Fraction

import av
import pytest

from fanout.sources.h264 import (
    FU_A,
    IDR_SLICE,
    PPS,
    SPS,
    STAP_A,
    H264AccessUnit,
    H264Depacketizer,
    H264Packetizer,
    join_annex_b,
    nal_unit_type,
    split_annex_b,
)
from fanout.sources.pattern import TestPattern
from fanout.sources.rtp import RtpPacket, RtpStream

SPS_NAL = bytes([0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02, 0x80, 0xBF, 0xE5])
PPS_NAL = bytes([0x68, 0xCE, 0x3C, 0x80])
SEI_NAL = bytes([0x06, 0x05, 0x01, 0xAA, 0x80])


def slice_nal(kind: int, size: int) -> bytes:
    body = bytes((index * 7 + 1) % 251 + 1 for index in range(size - 1))
    return bytes([0x60 | kind]) + body


def idr_access_unit(size: int) -> bytes:
    return join_annex_b([SPS_NAL, PPS_NAL, SEI_NAL, slice_nal(IDR_SLICE, size)])


def packets_of(access_units: list[bytes], packetizer: H264Packetizer | None = None) -> list[RtpPacket]:
    packetizer = packetizer or H264Packetizer()
    stream = RtpStream(97, first_sequence_number=0xFFF0)
    packets = []
    for number, access_unit in enumerate(access_units):
        packets += stream.packetize(packetizer.packetize(access_unit), number * 3000, marker_on_last=True)
    return [RtpPacket.parse(data) for data in packets]


def reassemble(packets: list[RtpPacket]) -> tuple[list[H264AccessUnit], H264Depacketizer]:
    depacketizer = H264Depacketizer()
    return [unit for packet in packets if (unit := depacketizer.push(packet))], depacketizer


def test_split_annex_b_with_3_and_4_byte_start_codes() -> None:
    stream = b"\x00\x00\x00\x01" + SPS_NAL + b"\x00\x00\x01" + PPS_NAL + b"\x00\x00\x00\x00\x01" + SEI_NAL
    assert split_annex_b(stream) == [SPS_NAL, PPS_NAL, SEI_NAL]
    assert split_annex_b(join_annex_b([SPS_NAL, PPS_NAL])) == [SPS_NAL, PPS_NAL]
    assert split_annex_b(b"") == []


def test_small_nal_units_go_together_in_a_stap_a() -> None:
    (payload,) = H264Packetizer().packetize(join_annex_b([SPS_NAL, PPS_NAL, SEI_NAL]))
    assert payload[0] == 0x60 | STAP_A  # F=0, highest NRI of the three, type 24
    assert payload[1:] == b"".join(len(nal).to_bytes(2, "big") + nal for nal in [SPS_NAL, PPS_NAL, SEI_NAL])


def test_without_aggregation_each_nal_unit_is_its_own_packet() -> None:
    payloads = H264Packetizer(aggregate=False).packetize(idr_access_unit(500))
    assert payloads == [SPS_NAL, PPS_NAL, SEI_NAL, slice_nal(IDR_SLICE, 500)]


def test_large_nal_unit_is_cut_into_fu_a_fragments() -> None:
    nal = slice_nal(IDR_SLICE, 3000)
    payloads = H264Packetizer().packetize(join_annex_b([nal]))
    assert len(payloads) == 3
    assert all(len(payload) <= 1200 for payload in payloads)
    assert {payload[0] for payload in payloads} == {0x60 | FU_A}  # F and NRI of the NAL unit, type 28
    assert [payload[1] for payload in payloads] == [0x80 | IDR_SLICE, IDR_SLICE, 0x40 | IDR_SLICE]  # S, -, E
    assert nal[:1] + b"".join(payload[2:] for payload in payloads) == nal


def test_access_unit_of_parameter_sets_and_a_big_slice() -> None:
    payloads = H264Packetizer().packetize(idr_access_unit(5000))
    assert [nal_unit_type(payload) for payload in payloads] == [STAP_A] + [FU_A] * 5


@pytest.mark.parametrize("size", [1, 2, 100, 1197, 1200, 1201, 2398, 2399, 50_000])
def test_round_trip_of_access_units_of_any_size(size: int) -> None:
    idr = idr_access_unit(size)
    non_idr = join_annex_b([slice_nal(1, size), slice_nal(1, 10)])
    for packetizer in [H264Packetizer(), H264Packetizer(aggregate=False)]:
        packets = packets_of([idr, non_idr, idr], packetizer)
        assert all(len(packet.payload) <= 1200 for packet in packets)
        assert [packet.marker for packet in packets].count(True) == 3
        assert all(packet.marker == (packet is packets[-1] or packet.timestamp != after.timestamp)
                   for packet, after in zip(packets, packets[1:] + packets[-1:]))  # fmt: skip
        units, depacketizer = reassemble(packets)
        assert [unit.annex_b for unit in units] == [idr, non_idr, idr]
        assert [unit.keyframe for unit in units] == [True, False, True]
        assert [unit.timestamp - units[0].timestamp for unit in units] == [0, 3000, 6000]
        assert depacketizer.access_units_dropped == 0


def test_a_lost_fragment_drops_that_access_unit_only() -> None:
    packets = packets_of([idr_access_unit(5000), idr_access_unit(5000), idr_access_unit(100)])
    del packets[8]  # a middle FU-A of the second access unit
    units, depacketizer = reassemble(packets)
    assert [unit.timestamp - units[0].timestamp for unit in units] == [0, 6000]
    assert depacketizer.access_units_dropped == 1


def test_a_lost_marker_packet_drops_that_access_unit_only() -> None:
    packets = packets_of([idr_access_unit(5000), idr_access_unit(5000), idr_access_unit(100)])
    del packets[5]  # last FU-A, with the marker, of the first access unit
    units, depacketizer = reassemble(packets)
    assert [unit.timestamp - packets[0].timestamp for unit in units] == [3000, 6000]
    assert depacketizer.access_units_dropped == 1


def test_a_lost_first_packet_drops_that_access_unit() -> None:
    packets = packets_of([idr_access_unit(100), idr_access_unit(5000), idr_access_unit(100)])
    del packets[1]  # the STAP-A with SPS and PPS of the second
    units, _ = reassemble(packets)
    assert [unit.timestamp - units[0].timestamp for unit in units] == [0, 6000]


def test_encoded_pictures_survive_the_round_trip_and_decode() -> None:
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 640, 360, "yuv420p"
    encoder.time_base = Fraction(1, 30)
    encoder.options = {"preset": "ultrafast", "tune": "zerolatency"}
    pattern = TestPattern(640, 360)
    access_units = []
    for number in range(10):
        frame = av.VideoFrame.from_ndarray(pattern.render(number, time.time()), format="yuv420p")
        frame.pts = number
        access_units += [bytes(packet) for packet in encoder.encode(frame)]
    assert {SPS, PPS, IDR_SLICE} <= {nal_unit_type(nal) for nal in split_annex_b(access_units[0])}
    units, _ = reassemble(packets_of(access_units))
    assert [split_annex_b(unit.annex_b) for unit in units] == [split_annex_b(unit) for unit in access_units]
    decoder = av.CodecContext.create("h264", "r")
    pictures = [picture for unit in units for picture in decoder.decode(av.Packet(unit.annex_b))]
    pictures += decoder.decode(None)
    assert [(picture.width, picture.height) for picture in pictures] == [(640, 360)] * 10


def test_two_lost_packets_across_access_units_drop_both() -> None:
    packets = packets_of([idr_access_unit(5000), idr_access_unit(5000), idr_access_unit(100)])
    del packets[5:7]  # the marker packet of the first and the STAP-A of the second
    units, depacketizer = reassemble(packets)
    assert [unit.timestamp - packets[0].timestamp for unit in units] == [6000]
    assert depacketizer.access_units_dropped == 2


def test_payload_types_outside_mode_1_drop_the_access_unit() -> None:
    depacketizer = H264Depacketizer()
    assert depacketizer.push(RtpPacket(97, 1, 0, 1, bytes([0x60 | 29, 0x85, 0]), marker=True)) is None  # FU-B
    assert depacketizer.access_units_dropped == 1
    unit = depacketizer.push(RtpPacket(97, 2, 3000, 1, SPS_NAL, marker=True))
    assert unit is not None and unit.nal_units == (SPS_NAL,)
