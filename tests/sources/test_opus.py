import pytest

from fanout.sources.opus import OPUS_CLOCK_RATE, OpusPacketizer, depacketize


def test_one_opus_packet_is_one_payload() -> None:
    packet = b"\xfc" + bytes(200)
    assert OpusPacketizer().packetize(packet) == [packet]
    assert depacketize(packet) == packet
    assert OPUS_CLOCK_RATE == 48_000


def test_an_opus_packet_too_big_for_a_payload_is_refused() -> None:
    with pytest.raises(ValueError):
        OpusPacketizer(max_payload_size=100).packetize(bytes(101))
