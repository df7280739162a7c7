"""VP8 temporal layers with a real encoder and a real viewer: libvpx (through PyAV) encodes
a moving picture in three temporal layers (0, 2, 1, 2 repeating, at 30 fps), sent as RTP
whose payload descriptors carry each frame's layer (TID) to substream 2 of a simulcast
mountpoint. An aiortc viewer that configures ``temporal: 0`` decodes every fourth picture
(the RTP timestamps of what it decodes step by four frames), without loss; ``temporal: 2``
brings every picture back."""

from __future__ import annotations

import asyncio
import fractions
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient
from tests.support.ports import free_ports
from tests.support.server import FanoutProcess, ServerAddresses, write_config

pytestmark = pytest.mark.usefixtures("loopback_only_ice")

FPS = 30
LAYERS = (0, 2, 1, 2)  # the layer of each frame, repeating (libvpx's three-layer mode 3)
TS_PARAMETERS = (
    "ts_number_layers=3:ts_target_bitrate=150,225,300:ts_rate_decimator=4,2,1:ts_periodicity=4:"
    "ts_layer_id=0,2,1,2:ts_layering_mode=3"
)
MAX_PAYLOAD = 1100


def vp8_rtp(frame: bytes, *, sequence: int, timestamp: int, picture_id: int, tl0: int, layer: int) -> list[bytes]:
    """RFC 7741 packets of one frame: X; I (15-bit picture ID), L (TL0PICIDX), T (TID)."""
    chunks = [frame[i : i + MAX_PAYLOAD] for i in range(0, len(frame), MAX_PAYLOAD)]
    packets = []
    for n, chunk in enumerate(chunks):
        descriptor = bytes([0x80 | (0x10 if n == 0 else 0), 0xE0, 0x80 | picture_id >> 8 & 0x7F, picture_id & 0xFF,
                            tl0 & 0xFF, layer << 6])
        marker = 0x80 if n == len(chunks) - 1 else 0
        header = struct.pack("!BBHII", 0x80, marker | 96, (sequence + n) & 0xFFFF, timestamp, 0x5EED)
        packets.append(header + descriptor + chunk)
    return packets


class LayeredSource:
    """A thread that encodes and sends the layered stream until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height, codec.pix_fmt = 320, 180, "yuv420p"
        codec.time_base = fractions.Fraction(1, FPS)
        codec.framerate = FPS
        codec.bit_rate = 300_000
        codec.options = {"deadline": "realtime", "cpu-used": "8", "g": str(FPS), "ts-parameters": TS_PARAMETERS}
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sequence, picture_id, tl0 = random.randrange(65536), random.randrange(32768), 0
        started = time.monotonic()
        index = 0
        while not self.stop.is_set():
            picture = np.zeros((180, 320, 3), np.uint8)
            picture[:, (index * 4) % 320 : (index * 4) % 320 + 16] = 255
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            layer = LAYERS[index % len(LAYERS)]
            if layer == 0 and index > 0:
                tl0 += 1
            for packet in codec.encode(frame):
                for datagram in vp8_rtp(bytes(packet), sequence=sequence, timestamp=index * 3000,
                                        picture_id=picture_id, tl0=tl0, layer=layer):
                    sock.sendto(datagram, ("127.0.0.1", self.port))
                    sequence += 1
                picture_id = (picture_id + 1) & 0x7FFF
            index += 1
            time.sleep(max(0.0, started + index / FPS - time.monotonic()))
        sock.close()

    def __enter__(self) -> LayeredSource:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerAddresses]:
    ports = free_ports(3)
    mountpoint = f"""
layered: {{
	type = "rtp"
	id = 5
	description = "temporal layers"
	video = true
	videoport = {ports[0]}
	videoport2 = {ports[1]}
	videoport3 = {ports[2]}
	videosimulcast = true
	videopt = 96
	videocodec = "vp8"
}}
"""
    addresses = write_config(tmp_path / "config", mountpoint)
    with FanoutProcess(tmp_path / "config"), LayeredSource(ports[2]):
        yield addresses


async def configure(viewer: AiortcViewer, body: dict[str, Any]) -> list[dict[str, Any]]:
    assert (await viewer.client.message(viewer.handle_id, {"request": "configure", **body}))["janus"] == "ack"
    return [(await viewer.plugin_event())["plugindata"]["data"] for _ in range(2)]


async def frame_steps_after(viewer: AiortcViewer, frames: int) -> list[int]:
    """The steps between the RTP timestamps of the next ``frames`` + 1 decoded pictures, in
    source frame intervals (3000 ticks): 1 when every picture comes, 4 for layer 0 alone."""
    first = len(viewer.media.video_timestamps)
    deadline = time.monotonic() + 30
    while len(viewer.media.video_timestamps) < first + frames + 1:
        assert time.monotonic() < deadline, f"{len(viewer.media.video_timestamps) - first} of {frames + 1} pictures"
        await asyncio.sleep(0.05)
    timestamps = viewer.media.video_timestamps[first : first + frames + 1]
    return [((later - earlier) & 0xFFFFFFFF) // 3000 for earlier, later in zip(timestamps, timestamps[1:])]


async def packets_lost(viewer: AiortcViewer) -> int:
    stats = await viewer.pc.getReceivers()[0].getStats()
    return sum(report.packetsLost for report in stats.values() if report.type == "inbound-rtp")


async def test_temporal_layer_zero_gives_every_fourth_picture_without_loss(janus: JanusHttpClient) -> None:
    viewer = AiortcViewer(janus)
    try:
        await viewer.watch(5)
        assert (await viewer.plugin_event())["plugindata"]["data"]["result"] == {"mid": "v", "substream": 2}
        await viewer.wait_for_frames(video=30, audio=0)
        assert set(await frame_steps_after(viewer, 12)) == {1}, "every picture, before the configure"

        events = await configure(viewer, {"mid": "v", "temporal": 0})
        assert [event["result"] for event in events] == [{"event": "configured"}, {"mid": "v", "temporal": 0}]
        steps = await frame_steps_after(viewer, 12 + 4)
        # The pictures already on their way when the configure took effect, then layer 0 only.
        assert set(steps[4:]) == {len(LAYERS)}, steps

        await configure(viewer, {"streams": [{"mid": "v", "temporal": 2}]})
        steps = await frame_steps_after(viewer, 12 + 4)
        assert set(steps[4:]) == {1}, steps

        assert await packets_lost(viewer) == 0
    finally:
        await viewer.close()
