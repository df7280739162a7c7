"""The engine's events through its Python API, with real sockets: each event is
waited for on ``event_fd()`` (select with a deadline) and taken with
``drain_events()``, as the asyncio loop does."""

from __future__ import annotations

import ctypes
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from fanout._engine import (
    Engine,
    KeyframeFromCache,
    SendQueueOverflow,
    SourceResumed,
    SourceSilent,
    SubstreamMoved,
)
from fanout.engine_events import EngineEvent
from tests.engine.test_engine import COUNTED_SEND_DELAY_MS, VP8_DELTA, VP8_KEYFRAME, WAIT_SECONDS, Rig, ViewerSocket, rtp, source_stream
from tests.engine.test_simulcast import HIGH, LOW, simulcast, vp8
from tests.support.netns import NetworkNamespace, loopback_namespace


CLONE_NEWNET = 0x40000000


class Events:
    """What the engine reported, read from its event fd as events come."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seen: list[EngineEvent] = []

    def readable(self, timeout: float = 0.0) -> bool:
        ready, _, _ = select.select([self.engine.event_fd()], [], [], timeout)
        return bool(ready)

    def wait_for(self, wanted: Callable[[EngineEvent], bool]) -> EngineEvent:
        """The first event (since the last one taken) that ``wanted`` accepts; the
        events before it are kept in ``seen``."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            for position, event in enumerate(self.seen):
                if wanted(event):
                    del self.seen[position]
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no such event in time; seen: {self.seen}")
            if self.readable(remaining):
                self.seen.extend(self.engine.drain_events())


def test_the_fd_is_readable_while_events_wait_and_draining_empties_it(rig: Rig) -> None:
    events = Events(rig.engine)
    port = rig.mountpoint(1)
    assert not events.readable()
    assert rig.engine.drain_events() == []
    rig.send(port, rtp(1, 0, b"audio"))
    assert events.readable(WAIT_SECONDS)
    assert rig.engine.drain_events() == [SourceResumed(mountpoint_id=1, index=0)]
    assert not events.readable(), "drained"
    assert rig.engine.events_dropped() == 0


def test_the_first_packet_of_a_source_is_reported_as_it_sending(rig: Rig) -> None:
    events = Events(rig.engine)
    port = rig.mountpoint(1)
    rig.send(port, rtp(1, 0, b"audio"))
    assert events.wait_for(lambda event: isinstance(event, SourceResumed)) == SourceResumed(mountpoint_id=1, index=0)
    rig.send(port, rtp(2, 960, b"audio"))
    rig.send(port, rtp(3, 1920, b"audio"))
    assert not events.readable(0.2) and events.seen == [], "one event per change, not per packet"


def test_a_source_that_stops_is_reported_silent_then_resumed(rig: Rig) -> None:
    events = Events(rig.engine)
    stream = source_stream(index=3) | {"silence_ms": 100}
    (port,) = rig.engine.add_mountpoint(1, [stream])
    rig.send(port, rtp(1, 0, b"audio"))
    events.wait_for(lambda event: isinstance(event, SourceResumed))
    silent = events.wait_for(lambda event: isinstance(event, SourceSilent))
    assert isinstance(silent, SourceSilent)
    assert (silent.mountpoint_id, silent.index) == (1, 3)
    assert 100 <= silent.silent_ms < 1000, "reported after its threshold, without a packet to wake the engine"
    rig.send(port, rtp(2, 960, b"audio"))
    assert events.wait_for(lambda event: isinstance(event, SourceResumed)) == SourceResumed(mountpoint_id=1, index=3)


def test_set_source_silence_applies_to_a_stream_sending_now(rig: Rig) -> None:
    events = Events(rig.engine)
    port = rig.mountpoint(1)  # the default threshold: a second
    rig.send(port, rtp(1, 0, b"audio"))
    events.wait_for(lambda event: isinstance(event, SourceResumed))
    rig.engine.set_source_silence(1, 0, 60)
    silent = events.wait_for(lambda event: isinstance(event, SourceSilent))
    assert isinstance(silent, SourceSilent) and 60 <= silent.silent_ms < 1000


def test_bad_silence_thresholds_are_refused(rig: Rig) -> None:
    rig.mountpoint(1)
    with pytest.raises(ValueError, match="silence_ms must be in 1..=3600000, got 0"):
        rig.engine.set_source_silence(1, 0, 0)
    with pytest.raises(ValueError, match="has no stream 5"):
        rig.engine.set_source_silence(1, 5, 100)
    with pytest.raises(KeyError):
        rig.engine.set_source_silence(2, 0, 100)
    with pytest.raises(ValueError, match="silence_ms must be in"):
        rig.engine.add_mountpoint(3, [source_stream() | {"silence_ms": -1}])


def test_a_move_is_reported_when_it_takes_effect_at_the_keyframe(rig: Rig) -> None:
    events = Events(rig.engine)
    low_port, high_port, viewer = simulcast(rig)
    rig.send(low_port, rtp(10, 1000, vp8(100, keyframe=True), ssrc=1, marker=True))
    viewer.wait_rtp(1)
    rig.engine.set_stream_source(7, LOW, HIGH)
    rig.send(high_port, rtp(500, 77000, vp8(9000, keyframe=False), ssrc=2, marker=True))
    rig.send(low_port, rtp(11, 4000, vp8(101, keyframe=False), ssrc=1, marker=True))
    viewer.wait_rtp(2)
    assert not any(isinstance(event, SubstreamMoved) for event in rig.engine.drain_events()), "no keyframe yet"
    rig.send(high_port, rtp(501, 80000, vp8(9001, keyframe=True), ssrc=2, marker=True))
    moved = events.wait_for(lambda event: isinstance(event, SubstreamMoved))
    assert moved == SubstreamMoved(peer_id=7, index=LOW, source_index=HIGH)


def test_a_viewer_joining_mid_gop_is_reported_starting_from_the_cache(rig: Rig) -> None:
    events = Events(rig.engine)
    (port,) = rig.engine.add_mountpoint(1, [source_stream("video", "vp8", 90000)])
    first = ViewerSocket(rig.engine, 8, 1, "AEAD_AES_128_GCM", [{"index": 0, "ssrc": 5, "payload_type": 96}])
    rig.send(port, rtp(1, 0, VP8_KEYFRAME), rtp(2, 3000, VP8_DELTA), rtp(3, 6000, VP8_DELTA))
    first.wait_rtp(3)
    second = ViewerSocket(rig.engine, 9, 1, "AEAD_AES_128_GCM", [{"index": 0, "ssrc": 6, "payload_type": 96}])
    # The first viewer may be reported too: its worker can take its subscription after the
    # keyframe reached the cache.
    started = events.wait_for(lambda event: isinstance(event, KeyframeFromCache) and event.peer_id == 9)
    assert started == KeyframeFromCache(peer_id=9, index=0, packets=3)
    assert len(second.wait_rtp(3)) == 3


def test_draining_after_close_gives_nothing() -> None:
    webrtc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    webrtc.bind(("127.0.0.1", 0))
    engine = Engine(webrtc.fileno(), cores=[0], pin=False, max_send_delay_ms=COUNTED_SEND_DELAY_MS)
    (port,) = engine.add_mountpoint(1, [source_stream()])
    webrtc.sendto(rtp(1, 0, b"audio"), ("127.0.0.1", port))
    select.select([engine.event_fd()], [], [], WAIT_SECONDS)
    engine.close()
    assert engine.drain_events() == []
    webrtc.close()


# --- SendQueueOverflow: a WebRTC socket whose packets cannot leave ---------------


def socket_in(namespace: NetworkNamespace) -> socket.socket:
    """A UDP socket on 127.0.0.1 in ``namespace`` (made on a thread that enters it)."""
    made: list[socket.socket] = []

    def make() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{namespace.name}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        made.append(sock)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    return made[0]


@pytest.fixture
def slow_loopback() -> Iterator[NetworkNamespace]:
    """A namespace whose loopback sends 8 kbit/s: packets wait in its queue,
    charged to the sending socket's buffer."""
    with loopback_namespace() as namespace:
        subprocess.run(
            ["tc", "-n", namespace.name, "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "8kbit", "burst", "1600",
             "limit", "1000000"],
            check=True,
        )  # fmt: skip
        yield namespace


def test_a_viewer_whose_packets_cannot_be_sent_is_reported(slow_loopback: NetworkNamespace) -> None:
    webrtc = socket_in(slow_loopback)
    sink = socket_in(slow_loopback)
    source = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    engine = Engine(webrtc.fileno(), cores=[0], pin=False, max_send_delay_ms=COUNTED_SEND_DELAY_MS)
    try:
        # The engine asked for a large send buffer; the smallest there is fills in two packets.
        webrtc.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
        events = Events(engine)
        (port,) = engine.add_mountpoint(1, [source_stream()])
        key = bytes(28)
        stream = {"index": 0, "ssrc": 5, "payload_type": 111}
        engine.add_peer(4, sink.getsockname(), "AEAD_AES_128_GCM", key, key)
        engine.subscribe(4, 1, [stream])  # type: ignore[list-item]
        for sequence in range(20):
            source.sendto(rtp(sequence, sequence * 960, bytes(1000)), ("127.0.0.1", port))
        overflow = events.wait_for(lambda event: isinstance(event, SendQueueOverflow))
        assert isinstance(overflow, SendQueueOverflow)
        assert overflow.peer_id == 4 and overflow.dropped >= 1
        assert engine.peer_stats(4).dropped >= overflow.dropped
    finally:
        engine.close()
        for sock in (webrtc, sink, source):
            sock.close()
