"""Probing a viewer's link through a real engine (egress::probe): with a probe goal above its
estimate, the engine sends padding-only packets on the viewer's video stream, numbered
transport-wide and in the stream's sequence; the viewer's transport feedback about them raises
the estimate to what the link carried, reported at once as a BandwidthEstimate with ``probed``."""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

import pytest

from fanout._engine import BandwidthEstimate
from tests.engine.test_congestion import EXTENSION_ID, transport_feedback
from tests.engine.test_engine import Rig, ViewerSocket, rtp, source_stream, wait_until
from tests.engine.test_simulcast import vp8

GOAL = 2_000_000
FRAME_SECONDS = 1 / 30


@dataclass
class Received:
    """What a viewer that numbers its feedback like Chromium got: per RTP packet, its
    sequence number, whether it was padding only, its transport-wide number and arrival."""

    sequences: list[int] = field(default_factory=list)
    padding: list[bool] = field(default_factory=list)
    arrivals: dict[int, float] = field(default_factory=dict)  # transport-wide number: ms since the first
    reported: int = 0  # transport-wide numbers fed back so far (from the first)
    first: int | None = None
    start: float = field(default_factory=time.monotonic)

    def read(self, viewer: ViewerSocket) -> None:
        while True:
            try:
                data = viewer.sock.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if 192 <= data[1] <= 223:
                continue
            arrival = (time.monotonic() - self.start) * 1000
            plain = viewer.inbound.unprotect(data)
            assert plain[0] & 0x10 and struct.unpack("!H", plain[12:14])[0] == 0xBEDE
            assert plain[16] == (EXTENSION_ID << 4) | 1
            number = struct.unpack("!H", plain[17:19])[0]
            self.sequences.append(struct.unpack("!H", plain[2:4])[0])
            padded = bool(plain[0] & 0x20)
            if padded:
                assert len(plain) - 20 == plain[-1], "nothing but padding after the header extension"
                assert not plain[1] & 0x80, "no marker"
            self.padding.append(padded)
            self.first = number if self.first is None else self.first
            self.arrivals[number] = arrival

    def feedback(self, viewer: ViewerSocket, rig: Rig) -> None:
        """Transport feedback about every packet received since the last (none lost)."""
        assert self.first is not None
        base = self.first + self.reported
        new = [self.arrivals[number] for number in range(base, self.first + len(self.arrivals))]
        if new:
            reference = int(new[0] // 64)
            packet = transport_feedback(base, [arrival - reference * 64 for arrival in new], reference)
            rig.engine.receive_rtcp(viewer.viewer_id, viewer.outbound.protect_rtcp(packet))
            self.reported += len(new)


def test_a_probe_pads_up_to_its_goal_and_the_estimate_rises_to_what_the_link_carried(rig: Rig) -> None:
    port = rig.engine.add_mountpoint(1, [source_stream("video", "vp8", 90000)])[0]
    viewer = ViewerSocket(rig.engine, 7, 1, "AEAD_AES_128_GCM", [{"index": 0, "ssrc": 0x1234, "payload_type": 96}])
    rig.engine.set_transport_cc(7, EXTENSION_ID)
    rig.engine.set_probe_goal(7, GOAL)
    received = Received()
    probed: list[BandwidthEstimate] = []
    picture = 0

    def frame_then_feedback() -> bool:
        # A source at 30 frames a second (a keyframe first), a viewer that feeds back what came.
        nonlocal picture
        rig.send(port, rtp(100 + picture, 3000 * picture, vp8(picture, keyframe=picture == 0) + b"v" * 600,
                           ssrc=1, marker=True))  # fmt: skip
        picture += 1
        time.sleep(FRAME_SECONDS)
        received.read(viewer)
        if received.first is not None:
            received.feedback(viewer, rig)
        probed.extend(event for event in rig.engine.drain_events() if isinstance(event, BandwidthEstimate) and event.probed)
        return bool(probed)

    wait_until(frame_then_feedback)

    assert any(received.padding), "padding-only packets"
    assert probed[0].bitrate >= GOAL * 0.9, probed
    first = received.sequences[0]
    assert received.sequences == [(first + i) & 0xFFFF for i in range(len(received.sequences))], "no gap"
    stats = rig.engine.peer_stats(7)
    assert stats.estimate is not None and stats.estimate >= GOAL * 0.9
    assert (stats.probes, stats.probes_carried) == (1, 1)


def test_set_probe_goal_refuses_unknown_and_unsubscribed_peers_and_negative_rates(rig: Rig) -> None:
    rig.engine.add_mountpoint(1, [source_stream("video", "vp8", 90000)])
    ViewerSocket(rig.engine, 7, 1, "AEAD_AES_128_GCM", [{"index": 0, "ssrc": 0x1234, "payload_type": 96}])
    with pytest.raises(KeyError):
        rig.engine.set_probe_goal(8, GOAL)
    ViewerSocket(rig.engine, 9, None, "AEAD_AES_128_GCM", [])
    with pytest.raises(ValueError):
        rig.engine.set_probe_goal(9, GOAL)
    with pytest.raises(OverflowError):
        rig.engine.set_probe_goal(7, -1)
    rig.engine.set_probe_goal(7, GOAL)
    rig.engine.set_probe_goal(7, None)
