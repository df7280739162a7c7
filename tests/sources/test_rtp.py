import pytest

from fanout.sources.rtp import RtpError, RtpPacket, RtpStream, split_evenly

# V=2, M=1, PT=96, seq=0x1234, ts=0xdeadbeef, SSRC=0x01020304, payload "abc"
MARKED_VP8 = bytes.fromhex("80e01234deadbeef01020304") + b"abc"


def test_parse_fixed_header() -> None:
    packet = RtpPacket.parse(MARKED_VP8)
    assert packet == RtpPacket(
        payload_type=96, sequence_number=0x1234, timestamp=0xDEADBEEF, ssrc=0x01020304, payload=b"abc", marker=True
    )
    assert bytes(packet) == MARKED_VP8


def test_marker_clear() -> None:
    data = bytes.fromhex("806f0001000003c0cafebabe") + b"\x01"
    packet = RtpPacket.parse(data)
    assert (packet.marker, packet.payload_type, packet.timestamp) == (False, 111, 960)
    assert bytes(packet) == data


def test_csrcs_and_header_extension_round_trip() -> None:
    packet = RtpPacket(96, 7, 8, 9, b"payload", csrcs=(1, 2), extension_profile=0xBEDE, extension=b"\x10\xff\x00\x00")
    data = bytes(packet)
    assert data[0] == 0x80 | 0x10 | 2
    assert len(data) == 12 + 8 + 4 + 4 + 7
    assert RtpPacket.parse(data) == packet


def test_padding_is_removed() -> None:
    data = bytearray(bytes(RtpPacket(96, 1, 2, 3, b"xyz")) + b"\x00\x00\x03")
    data[0] |= 0x20
    assert RtpPacket.parse(bytes(data)).payload == b"xyz"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes.fromhex("80e01234deadbeef010203"),  # short header
        bytes.fromhex("40e01234deadbeef01020304"),  # version 1
        bytes.fromhex("82e01234deadbeef01020304") + b"\x00" * 4,  # two CSRCs, one present
        bytes.fromhex("90e01234deadbeef01020304") + bytes.fromhex("bede0002") + b"\x00" * 4,  # truncated extension
        bytes.fromhex("a0e01234deadbeef01020304") + b"\x00",  # zero padding count
    ],
)
def test_malformed_packets_are_rejected(data: bytes) -> None:
    with pytest.raises(RtpError):
        RtpPacket.parse(data)


def test_field_ranges_are_checked() -> None:
    with pytest.raises(ValueError):
        RtpPacket(128, 0, 0, 0, b"")
    with pytest.raises(ValueError):
        RtpPacket(96, 1 << 16, 0, 0, b"")


def test_stream_numbers_packets_and_marks_the_last_of_a_frame() -> None:
    stream = RtpStream(96, ssrc=0xAABBCCDD, first_sequence_number=0xFFFE, timestamp_offset=0xFFFFFF00)
    frame = [RtpPacket.parse(data) for data in stream.packetize([b"a", b"b", b"c"], 0x100, marker_on_last=True)]
    assert [packet.sequence_number for packet in frame] == [0xFFFE, 0xFFFF, 0]
    assert [packet.marker for packet in frame] == [False, False, True]
    assert {packet.timestamp for packet in frame} == {0}  # offset + media time wraps at 32 bits
    assert {packet.ssrc for packet in frame} == {0xAABBCCDD}
    assert [packet.payload for packet in frame] == [b"a", b"b", b"c"]
    (audio,) = stream.packetize([b"opus"], 0x200, marker_on_last=False)
    assert RtpPacket.parse(audio).sequence_number == 1
    assert not RtpPacket.parse(audio).marker


def test_streams_start_at_random_points() -> None:
    streams = [RtpStream(96) for _ in range(4)]
    assert len({stream.ssrc for stream in streams}) == 4
    assert len({(stream.next_sequence_number, stream.timestamp_offset) for stream in streams}) == 4


@pytest.mark.parametrize("size", [0, 1, 99, 100, 101, 1000, 12345])
def test_split_evenly(size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    pieces = split_evenly(data, 100)
    assert b"".join(pieces) == data
    assert all(len(piece) <= 100 for piece in pieces)
    assert len(pieces) == max(1, -(-size // 100))
    assert max(map(len, pieces)) - min(map(len, pieces)) <= 1
