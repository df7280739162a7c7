"""A simulcast mountpoint with a real source and a real viewer: three VP8 encodings of one
test pattern (320x180, 480x272, 640x360) come in on three ports; an aiortc viewer decodes
the highest by default, ``configure`` with ``substream`` changes the size it decodes, and
it loses nothing on the way."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fanout.sources import testsource
from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient
from tests.support.ports import free_ports
from tests.support.server import FanoutProcess, ServerAddresses, write_config

pytestmark = pytest.mark.usefixtures("loopback_only_ice")

SIZES = [(320, 180), (480, 272), (640, 360)]  # substreams 0, 1, 2
BITRATES = [150_000, 250_000, 400_000]


def simulcast_mountpoint(ports: list[int]) -> str:
    return f"""
simulcast: {{
	type = "rtp"
	id = 4
	description = "three encodings"
	secret = "adminpwd"
	video = true
	videoport = {ports[0]}
	videoport2 = {ports[1]}
	videoport3 = {ports[2]}
	videosimulcast = true
	videopt = 96
	videocodec = "vp8"
}}
"""


@dataclass
class SimulcastSources:
    """The three encoders feeding the mountpoint, one per substream."""

    ports: list[int]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, substream: int) -> None:
        (width, height), bitrate = SIZES[substream], BITRATES[substream]
        command = testsource.testsource_command(
            "127.0.0.1", video_port=self.ports[substream], audio_port=0, width=width, height=height, fps=15,
            keyframe_interval=1.0, bitrate=bitrate,
        )  # fmt: skip
        self.processes[substream] = subprocess.Popen(command)

    def stop(self, substream: int) -> None:
        self.processes[substream].terminate()
        self.processes[substream].wait(5)


@pytest.fixture
def sources() -> Iterator[SimulcastSources]:
    sources = SimulcastSources(free_ports(3))
    sources.processes = [None] * 3  # type: ignore[list-item]
    for substream in range(3):
        sources.start(substream)
    try:
        yield sources
    finally:
        for process in sources.processes:
            process.terminate()
            process.wait(5)


@pytest.fixture
def server(tmp_path: Path, sources: SimulcastSources) -> Iterator[ServerAddresses]:
    addresses = write_config(tmp_path / "config", simulcast_mountpoint(sources.ports))
    with FanoutProcess(tmp_path / "config"):
        yield addresses


async def event_data(viewer: AiortcViewer) -> dict[str, Any]:
    return (await viewer.plugin_event())["plugindata"]["data"]  # type: ignore[no-any-return]


def is_layer_event(data: dict[str, Any]) -> bool:
    return set(data.get("result", {})) == {"mid", "substream"}


async def configured_after_moves(viewer: AiortcViewer, substream: int) -> int:
    """Waits for ``configure``'s event past the moves the server made by itself before it
    (its estimate of the viewer's link: a busy machine starves aiortc's) and returns the
    substream the viewer was on then (``substream`` if no move came)."""
    while is_layer_event(data := await event_data(viewer)):
        substream = data["result"]["substream"]
    assert data == {"streaming": "event", "result": {"event": "configured"}}, data
    return substream


async def moved_to(viewer: AiortcViewer, substream: int) -> None:
    """Events until the one that moves the viewer to ``substream``; only moves come before it."""
    while (data := await event_data(viewer)) != {"streaming": "event", "result": {"mid": "v", "substream": substream}}:
        assert is_layer_event(data), data


async def packets_lost(viewer: AiortcViewer) -> int:
    stats = await viewer.pc.getReceivers()[0].getStats()
    inbound = [report for report in stats.values() if report.type == "inbound-rtp"]
    assert inbound, stats
    return sum(report.packetsLost for report in inbound)


async def sizes_after(viewer: AiortcViewer, frames: int) -> set[tuple[int, int]]:
    viewer.media.video_sizes.clear()
    await viewer.wait_for_frames(video=viewer.media.video_frames + frames, audio=0, timeout=15)
    return set(viewer.media.video_sizes)


async def test_a_viewer_gets_the_substream_it_configures(janus: JanusHttpClient) -> None:
    reply = await janus.message(await janus.attach(), {"request": "info", "id": 4, "secret": "adminpwd"})
    (video,) = reply["plugindata"]["data"]["info"]["media"]
    assert video["videosimulcast"] is True
    assert {"port", "port2", "port3"} <= video.keys()

    viewer = AiortcViewer(janus)
    try:
        await viewer.watch(4)
        assert await event_data(viewer) == {"streaming": "event", "result": {"mid": "v", "substream": 2}}
        assert SIZES[2] in await sizes_after(viewer, 10), "the highest substream by default, as Janus"

        # A pin holds even if an encoder stalls on a busy machine: fallback after 5 s, not 250 ms.
        body = {"request": "configure", "mid": "v", "substream": 0, "fallback": 5_000_000}
        ack = await viewer.client.message(viewer.handle_id, body)
        assert ack["janus"] == "ack", ack
        if await configured_after_moves(viewer, substream=2) != 0:
            await moved_to(viewer, 0)
        await viewer.wait_for_frames(video=viewer.media.video_frames + 5, audio=0, timeout=10)
        assert await sizes_after(viewer, 15) == {SIZES[0]}

        body = {"request": "configure", "streams": [{"mid": "v", "substream": 1, "fallback": 5_000_000}]}
        assert (await viewer.client.message(viewer.handle_id, body))["janus"] == "ack"
        assert (await event_data(viewer))["result"] == {"event": "configured"}
        await moved_to(viewer, 1)
        await viewer.wait_for_frames(video=viewer.media.video_frames + 5, audio=0, timeout=10)
        assert await sizes_after(viewer, 15) == {SIZES[1]}

        assert await packets_lost(viewer) == 0
    finally:
        await viewer.close()


async def test_a_silent_substream_falls_back_to_the_one_below_and_comes_back(
    janus: JanusHttpClient, sources: SimulcastSources
) -> None:
    """Janus's ``fallback``: the requested substream silent for longer than it (250 ms
    by default) gives way to the highest one below that still sends, until it sends again."""
    viewer = AiortcViewer(janus)
    try:
        await viewer.watch(4)
        assert (await event_data(viewer))["result"] == {"mid": "v", "substream": 2}
        assert await sizes_after(viewer, 10) == {SIZES[2]}

        sources.stop(2)
        assert (await event_data(viewer))["result"] == {"mid": "v", "substream": 1}
        await viewer.wait_for_frames(video=viewer.media.video_frames + 5, audio=0, timeout=10)
        assert await sizes_after(viewer, 10) == {SIZES[1]}

        sources.start(2)
        assert (await event_data(viewer))["result"] == {"mid": "v", "substream": 2}
        await viewer.wait_for_frames(video=viewer.media.video_frames + 5, audio=0, timeout=10)
        assert await sizes_after(viewer, 10) == {SIZES[2]}
    finally:
        await viewer.close()
