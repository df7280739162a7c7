"""The load bench's transport feedback: what it writes, the engine reads as written; its
socket filter samples the engine's own packets; an engine takes the feedback and estimates."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest
from fanout_bench.load.feedback import (
    MAX_STATUS_COUNT,
    MESSAGE_PACKETS,
    SAMPLE_EVERY,
    FeedbackWriter,
    build_transport_feedback,
    transport_sequence,
)
from fanout_bench.load.viewer import SO_ATTACH_FILTER, SampledRtpFilter

from fanout._engine import Engine, bench_read_transport_feedback
from tests.engine.test_engine import Rig, rtp, udp_socket, wait_until

EXTENSION_ID = 3


def read(packet: bytes) -> list[tuple[int, int | None]]:
    """Each packet's (sequence number, arrival) as the engine reads the one message in ``packet``."""
    (message,) = bench_read_transport_feedback(packet)
    return message[2]


def read_all(messages: list[bytes]) -> list[tuple[int, int | None]]:
    return [packet for message in messages for packet in read(message)]


def test_the_engine_reads_every_packet_as_written() -> None:
    arrivals: list[int | None] = [64_000 * 5 + 1_000, None, None, 330_000, 330_250, *[400_000 + 1_000 * i for i in range(9)]]
    arrivals += [None] * 8 + [250_000]  # a long run lost, then one that arrived late (out of order: two bytes)
    packet = build_transport_feedback(
        sender_ssrc=1, media_ssrc=0x11223344, base_sequence=65_530, arrivals_micros=arrivals, feedback_count=7
    )
    (message,) = bench_read_transport_feedback(packet)
    assert message[:2] == (0x11223344, 7)
    seen = message[2]
    assert [sequence for sequence, _ in seen] == [(65_530 + i) % 65_536 for i in range(len(arrivals))], "wraps"
    assert [at for _, at in seen] == arrivals, "250 us multiples arrive exactly"
    assert len(packet) % 4 == 0


def test_a_message_reports_at_most_a_run_length_chunk() -> None:
    packet = build_transport_feedback(
        sender_ssrc=1, media_ssrc=2, base_sequence=0, arrivals_micros=[1_000] * MAX_STATUS_COUNT, feedback_count=0
    )
    assert len(read(packet)) == MAX_STATUS_COUNT
    with pytest.raises(ValueError, match="1 to 8191 packets"):
        build_transport_feedback(sender_ssrc=1, media_ssrc=2, base_sequence=0, arrivals_micros=[], feedback_count=0)


def test_the_writer_reports_every_packet_between_samples_interpolated() -> None:
    writer = FeedbackWriter(sender_ssrc=1, media_ssrc=2)
    assert writer.messages() == [], "nothing seen yet"
    writer.received(65_504, 10_000)
    writer.received(0, 42_000)  # 32 packets on, past the wrap
    first = read_all(writer.messages())
    assert [sequence for sequence, _ in first] == [(65_504 + i) % 65_536 for i in range(33)]
    assert first[0][1] == 10_000 and first[-1][1] == 42_000
    assert first[16][1] == 26_000, "halfway between the samples"
    writer.received(32, 74_000)
    writer.received(16, 60_000)  # sampled out of order: sorted
    writer.received(0, 42_000)  # reported already
    second = read_all(writer.messages())
    assert [sequence for sequence, _ in second] == list(range(1, 33)), "from the packet after the last reported"
    assert second[15][1] == 60_000 and second[-1][1] == 74_000
    assert writer.written == 2 and writer.packets_reported == 33 + 32


def test_after_a_jump_the_writer_reports_the_latest_packets_it_can() -> None:
    writer = FeedbackWriter(sender_ssrc=1, media_ssrc=2)
    writer.received(100, 0)
    writer.messages()
    for sequence in (20_000, 39_000, 40_000):  # more than a message holds since the last one reported
        writer.received(sequence, sequence * 1_000)
    seen = read_all(writer.messages())
    assert len(seen) == 1_001 and seen[0] == (39_000, 39_000_000) and seen[-1] == (40_000, 40_000_000)
    writer.received(40_032, 41_000_000)
    assert [sequence for sequence, _ in read_all(writer.messages())] == list(range(40_001, 40_033))


def test_a_long_gap_is_reported_in_messages_that_fit_a_datagram() -> None:
    writer = FeedbackWriter(sender_ssrc=1, media_ssrc=2)
    writer.received(0, 0)
    writer.received(2_500, 2_500_000)
    messages = writer.messages()
    assert len(messages) == 3 and max(len(message) for message in messages) < 1_200
    assert [len(read(message)) for message in messages] == [MESSAGE_PACKETS, MESSAGE_PACKETS, 501]
    assert [sequence for sequence, _ in read_all(messages)] == list(range(2_501))
    counts = [bench_read_transport_feedback(message)[0][1] for message in messages]
    assert counts == [0, 1, 2], "each message numbered"


def test_transport_sequence_finds_its_element_among_others() -> None:
    header = struct.pack("!BBHII", 0x91, 96, 1, 2, 3) + struct.pack("!I", 0xAABBCCDD)  # one CSRC
    elements = bytes([0x52, 0x06, 0x40, 0xC8]) + bytes([0, EXTENSION_ID << 4 | 1, 0x12, 0x34])  # playout delay, padding
    packet = header + b"\xbe\xde\x00\x02" + elements + b"payload"
    assert transport_sequence(packet, EXTENSION_ID) == 0x1234
    assert transport_sequence(packet, 4) is None
    assert transport_sequence(packet[:20], EXTENSION_ID) is None, "cut short"
    assert transport_sequence(struct.pack("!BBHII", 0x80, 96, 1, 2, 3) + b"payload", EXTENSION_ID) is None


@pytest.fixture
def rig() -> Iterator[Rig]:
    webrtc, source = udp_socket(), udp_socket()
    engine = Engine(webrtc.fileno(), max_send_delay_ms=10_000)
    yield Rig(engine, webrtc, source)
    engine.close()
    webrtc.close()
    source.close()


def test_a_cheap_viewers_samples_of_the_engines_packets_give_it_an_estimate(rig: Rig) -> None:
    """The filter keeps the engine's packets numbered a multiple of 32 (cut short) and RTCP;
    the feedback written from those samples is read by the engine and gives an estimate."""
    port = rig.mountpoint(1)
    viewer = rig.viewer(7, 1)
    rig.engine.set_transport_cc(7, EXTENSION_ID)
    sampling = SampledRtpFilter(EXTENSION_ID)
    viewer.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, sampling.program)
    viewer.sock.setblocking(False)
    writer = FeedbackWriter(sender_ssrc=0x0BADCAFE, media_ssrc=0x11223344)
    samples: list[tuple[int, int]] = []

    def sampled(count: int) -> bool:
        while True:
            try:
                data = viewer.sock.recv(2048)
            except BlockingIOError:
                return len(samples) >= count
            assert len(data) == SampledRtpFilter.SAMPLE_BYTES, "cut to the header"
            sequence = transport_sequence(data, EXTENSION_ID)
            assert sequence is not None
            samples.append((sequence, time.monotonic_ns() // 1000))
            writer.received(*samples[-1])

    for index in range(3 * SAMPLE_EVERY):
        rig.send(port, rtp(100 + index, 960 * index, b"opus" * 20))
    wait_until(lambda: rig.engine.peer_stats(7).packets == 3 * SAMPLE_EVERY)
    wait_until(lambda: sampled(3))  # three multiples in any 96 numbers in a row
    assert all(sequence % SAMPLE_EVERY == 0 for sequence, _ in samples), samples
    assert [b[0] - a[0] for a, b in zip(samples, samples[1:])] == [SAMPLE_EVERY] * 2, "the ones between dropped"

    (message,) = writer.messages()
    assert len(read(message)) == 2 * SAMPLE_EVERY + 1
    rig.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(message))
    wait_until(lambda: rig.engine.peer_stats(7).transport_feedbacks == 1)
    estimate = rig.engine.peer_stats(7).estimate
    assert estimate is not None and estimate > 0
