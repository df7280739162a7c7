"""Simulcast and temporal layers through the engine's Python API, with real sockets:
three source streams carry encodings of one video, a viewer's stream moves between
them at a keyframe, and what the viewer decrypts is continuous."""

from __future__ import annotations

import time

import pytest

from fanout._engine import KeyframeFromCache

from tests.engine.test_engine import (
    VP8_DELTA,
    VP8_KEYFRAME,
    Rig,
    RtpPacket,
    ViewerSocket,
    rtp,
    source_stream,
    wait_until,
)
from tests.engine.test_congestion import (
    EXTENSION_ID,
    receive_transport_sequences,
    receive_with_transport_sequences,
    remb,
    transport_feedback,
)
from tests.engine.test_workers import nack, receive_raw

LOW, HIGH = 0, 1 << 16  # the source indexes of substream 0 and 1, as the Streaming plugin numbers them


def vp8(picture_id: int, *, keyframe: bool, tl0: int = 0, temporal_layer: int = 0) -> bytes:
    """A one-packet VP8 frame: X, I (15-bit picture id), L, T, then the frame header's P bit."""
    return bytes([0x90, 0xE0, 0x80 | picture_id >> 8, picture_id & 0xFF, tl0, temporal_layer << 6,
                  0x00 if keyframe else 0x01])


def set_temporal_layer(rig: Rig, viewer: ViewerSocket, layer: int) -> None:
    """Caps the viewer's stream 0 and waits until its worker took the command (it goes
    through a channel, and packets sent at once could overtake it)."""
    rig.engine.set_stream_temporal_layer(viewer.viewer_id, 0, layer)
    viewer.took_commands(rig.engine)


def simulcast(rig: Rig) -> tuple[int, int, ViewerSocket]:
    streams = [source_stream("video", "vp8", 90000, index=LOW), source_stream("video", "vp8", 90000, index=HIGH)]
    low, high = rig.engine.add_mountpoint(1, streams)
    viewer = ViewerSocket(rig.engine, 7, 1, "AEAD_AES_128_GCM", [{"index": LOW, "ssrc": 0x1234, "payload_type": 96}])
    return low, high, viewer


def assert_follows_on(packets: list[RtpPacket], *, first_picture_id: int) -> None:
    """One SSRC, consecutive sequence numbers and picture IDs across a move (VP8 from ``vp8``)."""
    first = packets[0].sequence
    assert [p.sequence for p in packets] == [(first + i) & 0xFFFF for i in range(len(packets))]
    assert {p.ssrc for p in packets} == {0x1234}
    picture_ids = [int.from_bytes(p.payload[2:4], "big") & 0x7FFF for p in packets]
    assert picture_ids == list(range(first_picture_id, first_picture_id + len(packets))), "pictures follow on"


def test_a_viewer_moves_to_another_encoding_at_its_next_keyframe(rig: Rig) -> None:
    low_port, high_port, viewer = simulcast(rig)
    rig.send(low_port, rtp(10, 1000, vp8(100, keyframe=True), ssrc=1, marker=True))
    rig.send(low_port, rtp(11, 4000, vp8(101, keyframe=False), ssrc=1, marker=True))
    viewer.wait_rtp(2)

    rig.engine.set_stream_source(7, LOW, HIGH)
    rig.send(high_port, rtp(500, 77000, vp8(9000, keyframe=False), ssrc=2, marker=True))
    rig.send(low_port, rtp(12, 7000, vp8(102, keyframe=False), ssrc=1, marker=True))
    viewer.wait_rtp(3)
    assert rig.engine.peer_stats(7).source_switches == 0, "no keyframe of the new encoding yet"
    time.sleep(0.05)
    rig.send(high_port, rtp(501, 80000, vp8(9001, keyframe=True, tl0=40), ssrc=2, marker=True))
    rig.send(low_port, rtp(13, 10000, vp8(103, keyframe=False), ssrc=1, marker=True))
    rig.send(high_port, rtp(502, 83000, vp8(9002, keyframe=False, tl0=41), ssrc=2, marker=True))
    packets = viewer.wait_rtp(5)
    wait_until(lambda: rig.engine.peer_stats(7).source_switches == 1)

    assert_follows_on(packets, first_picture_id=100)
    assert packets[3].payload[6] == 0x00, "the move happens at the keyframe"
    gap = (packets[3].timestamp - packets[2].timestamp) & 0xFFFFFFFF
    assert 3000 < gap < 90000, "the timestamp advances by the time that passed"
    assert packets[4].timestamp - packets[3].timestamp == 3000, "then at the new encoding's pace"
    time.sleep(0.05)
    viewer.drain()
    assert len(viewer.rtp) == 5, "nothing more of the old encoding"


def test_a_move_at_once_stops_the_old_encoding_and_starts_the_new_from_its_keyframe_cache(rig: Rig) -> None:
    low_port, high_port, viewer = simulcast(rig)
    rig.send(high_port, rtp(500, 77000, vp8(9000, keyframe=True, tl0=40), ssrc=2, marker=True),
             rtp(501, 80000, vp8(9001, keyframe=False, tl0=40), ssrc=2, marker=True))  # fmt: skip
    rig.send(low_port, rtp(10, 1000, vp8(100, keyframe=True), ssrc=1, marker=True))
    viewer.wait_rtp(1)
    # From a first move or temporal cap on, the stream follows its pictures (to renumber the next move's).
    set_temporal_layer(rig, viewer, 2)
    rig.send(low_port, rtp(11, 4000, vp8(101, keyframe=False), ssrc=1, marker=True))
    viewer.wait_rtp(2)
    wait_until(lambda: getattr(rig.engine.mountpoint_stats(1).streams[1].keyframe_cache, "packets", 0) == 2)

    rig.engine.set_stream_source(7, LOW, HIGH, at_once=True)
    wait_until(lambda: rig.engine.peer_stats(7).source_switches == 1)
    viewer.wait_rtp(4)  # the new encoding's cached keyframe and delta, before it sends anything more
    rig.send(low_port, rtp(12, 7000, vp8(102, keyframe=False), ssrc=1, marker=True))
    rig.send(high_port, rtp(502, 83000, vp8(9002, keyframe=False, tl0=40), ssrc=2, marker=True))
    packets = viewer.wait_rtp(5)

    assert_follows_on(packets, first_picture_id=100)
    assert packets[2].payload[6] == 0x00, "the new encoding starts at its cached keyframe"
    time.sleep(0.05)
    viewer.drain()
    assert len(viewer.rtp) == 5, "nothing more of the old encoding"


def test_a_move_at_once_waits_for_the_next_keyframe_if_the_cache_would_take_long_at_the_viewers_pace(
    rig: Rig,
) -> None:
    low_port, high_port, viewer = simulcast(rig)
    rig.engine.set_transport_cc(7, EXTENSION_ID)
    rig.send(low_port, rtp(10, 1000, vp8(100, keyframe=True), ssrc=1, marker=True),
             *(rtp(10 + i, 1000 + 3000 * i, vp8(100 + i, keyframe=False), ssrc=1, marker=True) for i in range(1, 10)))  # fmt: skip
    numbers = receive_transport_sequences(viewer, 10)
    # Half a second of transport feedback measures the viewer's link and a REMB of 200 kbit/s
    # limits it: bursts go at the pacing floor, 400 kbit/s (50 KB a second).
    rig.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(transport_feedback(numbers[0], [60 * i for i in range(10)])))
    rig.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(remb(200_000, 0x1234)))
    wait_until(lambda: rig.engine.peer_stats(7).estimate == 200_000)
    # The new encoding's cache: a keyframe and 19 deltas of 1 KB, 20 KB: 0.4 s at that pace.
    rig.send(high_port, rtp(500, 77000, vp8(9000, keyframe=True) + bytes(1000), ssrc=2, marker=True),
             *(rtp(500 + i, 77000 + 3000 * i, vp8(9000 + i, keyframe=False) + bytes(1000), ssrc=2, marker=True)
               for i in range(1, 20)))  # fmt: skip
    wait_until(lambda: getattr(rig.engine.mountpoint_stats(1).streams[1].keyframe_cache, "packets", 0) == 20)

    rig.engine.set_stream_source(7, LOW, HIGH, at_once=True)
    wait_until(lambda: rig.engine.peer_stats(7).source_switches == 1)
    rig.send(low_port, rtp(20, 31000, vp8(110, keyframe=False), ssrc=1, marker=True))
    rig.send(high_port, rtp(520, 137000, vp8(9020, keyframe=False), ssrc=2, marker=True))
    rig.send(high_port, rtp(521, 140000, vp8(9021, keyframe=True) + b"live", ssrc=2, marker=True))
    ((_, payload),) = receive_with_transport_sequences(viewer, 1)
    assert payload[6] == 0x00 and payload.endswith(b"live"), "the next live keyframe, not the cache"
    time.sleep(0.05)
    assert receive_with_transport_sequences(viewer, 0) == [], "nothing of the old encoding, nothing of the cache"


def measured_link_holding_a_queue(rig: Rig, viewer: ViewerSocket, low_port: int) -> None:
    """Sends the viewer 20 packets of 1 KB of the low encoding; transport feedback tells of the
    first 10 only (half a second of arrivals: the link is measured) and a REMB limits the
    estimate to 200 kbit/s: 10 KB in flight, 0.4 s at that rate, is a queue."""
    rig.engine.set_transport_cc(7, EXTENSION_ID)
    rig.send(low_port, rtp(10, 1000, vp8(100, keyframe=True) + bytes(1000), ssrc=1, marker=True),
             *(rtp(10 + i, 1000 + 3000 * i, vp8(100 + i, keyframe=False) + bytes(1000), ssrc=1, marker=True)
               for i in range(1, 20)))  # fmt: skip
    numbers = receive_transport_sequences(viewer, 20)
    rig.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(transport_feedback(numbers[0], [60 * i for i in range(10)])))
    rig.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(remb(200_000, 0x1234)))
    wait_until(lambda: rig.engine.peer_stats(7).estimate == 200_000)


def test_a_move_at_once_into_a_link_holding_a_queue_waits_for_the_next_keyframe(rig: Rig) -> None:
    """The cached keyframe would go in behind the old encoding's queue and lose packets from its
    tail; by the next live one the queue has drained."""
    low_port, high_port, viewer = simulcast(rig)
    measured_link_holding_a_queue(rig, viewer, low_port)
    rig.send(high_port, rtp(500, 77000, vp8(9000, keyframe=True, tl0=40), ssrc=2, marker=True))
    wait_until(lambda: getattr(rig.engine.mountpoint_stats(1).streams[1].keyframe_cache, "packets", 0) == 1)

    rig.engine.set_stream_source(7, LOW, HIGH, at_once=True)
    wait_until(lambda: rig.engine.peer_stats(7).source_switches == 1)
    rig.send(low_port, rtp(30, 91000, vp8(120, keyframe=False), ssrc=1, marker=True))
    rig.send(high_port, rtp(501, 80000, vp8(9001, keyframe=False, tl0=40), ssrc=2, marker=True))
    rig.send(high_port, rtp(502, 83000, vp8(9002, keyframe=True, tl0=41) + b"live", ssrc=2, marker=True))
    ((_, payload),) = receive_with_transport_sequences(viewer, 1)
    assert payload == vp8(9002, keyframe=True, tl0=41) + b"live", "the next live keyframe, not the cache"
    assert rig.engine.drain_events().count(KeyframeFromCache(peer_id=7, index=LOW, packets=1)) == 0


def test_a_move_at_once_without_a_cached_keyframe_waits_for_the_next(rig: Rig) -> None:
    low_port, high_port, viewer = simulcast(rig)
    rig.send(low_port, rtp(10, 1000, vp8(100, keyframe=True), ssrc=1, marker=True))
    viewer.wait_rtp(1)

    rig.engine.set_stream_source(7, LOW, HIGH, at_once=True)
    rig.send(low_port, rtp(11, 4000, vp8(101, keyframe=False), ssrc=1, marker=True))
    viewer.wait_rtp(2)
    assert rig.engine.peer_stats(7).source_switches == 0, "the old encoding goes on until the new one's keyframe"
    rig.send(high_port, rtp(500, 77000, vp8(9000, keyframe=True, tl0=40), ssrc=2, marker=True))
    packets = viewer.wait_rtp(3)
    wait_until(lambda: rig.engine.peer_stats(7).source_switches == 1)
    assert [int.from_bytes(p.payload[2:4], "big") & 0x7FFF for p in packets] == [100, 101, 102]


def test_a_stream_not_started_moves_at_once(rig: Rig) -> None:
    low_port, high_port, viewer = simulcast(rig)
    rig.engine.set_stream_source(7, LOW, HIGH)
    wait_until(lambda: rig.engine.peer_stats(7).source_switches == 1)
    rig.send(low_port, rtp(1, 0, VP8_KEYFRAME, ssrc=1, marker=True))
    rig.send(high_port, rtp(1, 0, VP8_KEYFRAME, ssrc=2, marker=True), rtp(2, 3000, VP8_DELTA, ssrc=2, marker=True))
    packets = viewer.wait_rtp(2)
    assert [p.payload for p in packets] == [VP8_KEYFRAME, VP8_DELTA]


def test_bad_moves_are_refused(rig: Rig) -> None:
    streams = [source_stream("video", "vp8", 90000, index=0), source_stream("video", "h264", 90000, index=1),
               source_stream("audio", "opus", 48000, index=2)]
    rig.engine.add_mountpoint(1, streams)
    ViewerSocket(rig.engine, 7, 1, "AEAD_AES_128_GCM", [{"index": 0, "ssrc": 1, "payload_type": 96},
                                                        {"index": 2, "ssrc": 2, "payload_type": 111}])
    with pytest.raises(ValueError, match="same kind and codec"):
        rig.engine.set_stream_source(7, 0, 1)
    with pytest.raises(ValueError, match="already takes"):
        rig.engine.set_stream_source(7, 0, 2)
    with pytest.raises(ValueError, match="no stream 5"):
        rig.engine.set_stream_source(7, 5, 0)
    with pytest.raises(KeyError):
        rig.engine.set_stream_source(8, 0, 1)
    with pytest.raises(ValueError, match="not VP8"):
        rig.engine.set_stream_temporal_layer(7, 2, 0)
    with pytest.raises(ValueError, match="temporal layer"):
        rig.engine.set_stream_temporal_layer(7, 0, 4)


def test_temporal_layers_above_the_cap_are_left_out_without_gaps(rig: Rig) -> None:
    port = rig.engine.add_mountpoint(1, [source_stream("video", "vp8", 90000)])[0]
    viewer = ViewerSocket(rig.engine, 7, 1, "AEAD_AES_128_GCM", [{"index": 0, "ssrc": 0x1234, "payload_type": 96}])
    set_temporal_layer(rig, viewer, 0)
    layers = [0, 2, 1, 2, 0, 2, 1, 2, 0]
    for i, layer in enumerate(layers):
        payload = vp8(300 + i, keyframe=i == 0, tl0=i // 4, temporal_layer=layer)
        rig.send(port, rtp(40 + i, 3000 * i, payload, ssrc=1, marker=True))
    packets = viewer.wait_rtp(3)
    time.sleep(0.05)
    viewer.drain()
    assert [p.payload[5] >> 6 for p in viewer.rtp] == [0, 0, 0]
    first = packets[0].sequence
    assert [p.sequence for p in viewer.rtp] == [first, (first + 1) & 0xFFFF, (first + 2) & 0xFFFF]
    assert [p.timestamp - packets[0].timestamp for p in viewer.rtp] == [0, 12000, 24000]



def test_nacks_are_answered_across_temporal_layer_drops(rig: Rig) -> None:
    port = rig.engine.add_mountpoint(1, [source_stream("video", "vp8", 90000)])[0]
    viewer = ViewerSocket(rig.engine, 7, 1, "AEAD_AES_128_GCM", [{"index": 0, "ssrc": 0x1234, "payload_type": 96}])
    set_temporal_layer(rig, viewer, 1)
    layers = [0, 2, 1, 2, 0, 2, 1, 2, 0]  # layers 0 and 1 are sent: source packets 0, 2, 4, 6, 8
    for i, layer in enumerate(layers):
        payload = vp8(300 + i, keyframe=i == 0, tl0=i // 4, temporal_layer=layer)
        rig.send(port, rtp(40 + i, 3000 * i, payload, ssrc=1, marker=True))
    datagrams = receive_raw(viewer, 5)
    lost = {1, 3}  # the viewer never saw these: libsrtp has not either
    received = [RtpPacket.parse(viewer.inbound.unprotect(d)) for i, d in enumerate(datagrams) if i not in lost]
    first = received[0].sequence
    assert [p.sequence - first for p in received] == [0, 2, 4]

    report = nack(0xABC, 0x1234, [first + 1, first + 3])
    rig.engine.receive_rtcp(7, viewer.outbound.protect_rtcp(report))

    resent = [RtpPacket.parse(viewer.inbound.unprotect(data)) for data in receive_raw(viewer, 2)]
    assert [p.sequence - first for p in resent] == [1, 3], "resent under the numbers first sent"
    assert [int.from_bytes(p.payload[2:4], "big") & 0x7FFF for p in resent] == [302, 306], "the right pictures"
