"""Keyframes of codecs the engine cannot be fed synthetically with confidence, found in
what a real encoder and packetizer send: GStreamer's x265enc and rtph265pay (RFC 7798).
A viewer that joins mid-GOP starts at the next IDR; one that joins later starts at the
cached one. Payloads are compared byte for byte with what the encoder sent."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
from typing import TYPE_CHECKING

import pytest

from .test_engine import GCM, ViewerSocket, udp_socket, wait_until
from .test_keyframe_cache import Rig, rig  # noqa: F401 (the fixture)

if TYPE_CHECKING:
    from fanout._engine import SourceStream, ViewerStream

KEYFRAME_INTERVAL = 10
FRAMES = 25
VIDEO_SSRC = 0x0A0A0A0A

pytestmark = pytest.mark.skipif(shutil.which("gst-launch-1.0") is None, reason="GStreamer is installed by scripts/setup")


def h265_rtp_from_gstreamer() -> list[list[bytes]]:
    """FRAMES frames of x265 (an IDR every KEYFRAME_INTERVAL frames, no B-frames, no
    scene cuts), packetized by rtph265pay with parameter sets before each IDR: the
    packets of each frame, in order."""
    sink = udp_socket()
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    port = sink.getsockname()[1]
    pipeline = (
        f"videotestsrc num-buffers={FRAMES} pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! "
        f"x265enc speed-preset=ultrafast tune=zerolatency "
        f"option-string=keyint={KEYFRAME_INTERVAL}:min-keyint={KEYFRAME_INTERVAL}:scenecut=0:open-gop=0:bframes=0 ! "
        f"rtph265pay config-interval=-1 pt=96 mtu=1200 ! udpsink host=127.0.0.1 port={port} sync=false"
    )
    subprocess.run(["gst-launch-1.0", "-q", *pipeline.split()], check=True, capture_output=True, timeout=120)
    frames: dict[int, list[bytes]] = {}
    order: list[int] = []
    sink.setblocking(False)
    while True:
        try:
            datagram = sink.recv(2048)
        except BlockingIOError:
            break
        timestamp = struct.unpack_from("!I", datagram, 4)[0]
        if timestamp not in frames:
            frames[timestamp] = []
            order.append(timestamp)
        frames[timestamp].append(datagram)
    sink.close()
    assert len(order) == FRAMES, f"GStreamer sent {len(order)} frames, not {FRAMES}"
    return [frames[timestamp] for timestamp in order]


def payload(datagram: bytes) -> bytes:
    return datagram[12:]  # rtph265pay writes no CSRC and no header extension


@pytest.fixture(scope="module")
def encoded() -> list[list[bytes]]:
    return h265_rtp_from_gstreamer()


def test_an_h265_viewer_joining_mid_gop_starts_at_the_next_idr_then_at_the_cached_one(
    rig: Rig, encoded: list[list[bytes]]
) -> None:
    stream: SourceStream = {"index": 0, "kind": "video", "codec": "h265", "clock_rate": 90000, "host": "127.0.0.1", "port": 0}
    port = rig.engine.add_mountpoint(1, [stream])[0]
    taken: list[ViewerStream] = [{"index": 0, "ssrc": VIDEO_SSRC, "payload_type": 96}]
    first = ViewerSocket(rig.engine, 1, 1, GCM, taken)
    # The middle of the first GOP, until the worker has taken it: the worker has then taken the viewer,
    # which waits for the next IDR (none cached yet). Sent at once with the rest, a busy machine's
    # receiver may cache a later IDR before the worker wakes for the viewer, which starts from that one.
    mid_gop = [packet for frame in encoded[1:KEYFRAME_INTERVAL] for packet in frame]
    rig.send(port, *mid_gop)
    wait_until(lambda: sum(worker.source_packets for worker in rig.engine.worker_stats()) == len(mid_gop))
    from_second_idr = [packet for frame in encoded[KEYFRAME_INTERVAL:] for packet in frame]
    rig.send(port, *from_second_idr)
    wait_until(lambda: rig.engine.mountpoint_stats(1).packets == len(mid_gop) + len(from_second_idr))

    received = first.wait_rtp(len(from_second_idr))
    assert [packet.payload for packet in received] == [payload(packet) for packet in from_second_idr]

    late = ViewerSocket(rig.engine, 2, 1, GCM, taken)
    from_last_idr = [packet for frame in encoded[2 * KEYFRAME_INTERVAL :] for packet in frame]
    burst = late.wait_rtp(len(from_last_idr))
    assert [packet.payload for packet in burst] == [payload(packet) for packet in from_last_idr]
