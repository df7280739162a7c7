"""configure (which streams a viewer gets) and switch (another mountpoint, same PeerConnection)
with a real aiortc viewer: what it decodes changes, and nothing is renegotiated."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fanout.sources import testsource
from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient
from tests.support.ports import free_ports
from tests.support.server import DEMO_MOUNTPOINT, FanoutProcess, ServerAddresses, rtp_mountpoint, write_config

pytestmark = pytest.mark.usefixtures("loopback_only_ice")

AUDIO_ONLY = """
audio-only: {
	type = "rtp"
	id = 3
	audio = true
	audioport = 0
	audiopt = 111
	audiocodec = "opus"
}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerAddresses]:
    """Mountpoint 1: the 640x360 test source; 2: a 320x180 one; 3: audio only."""
    audio_port, video_port = free_ports(2)
    addresses = write_config(tmp_path / "config", DEMO_MOUNTPOINT + rtp_mountpoint(2, audio_port, video_port) + AUDIO_ONLY)
    small = testsource.testsource_command("127.0.0.1", video_port=video_port, audio_port=audio_port, width=320, height=180)
    source = subprocess.Popen(small)
    try:
        with FanoutProcess(tmp_path / "config"):
            yield addresses
    finally:
        source.terminate()
        source.wait(5)


async def request(viewer: AiortcViewer, body: dict[str, Any]) -> dict[str, Any]:
    ack = await viewer.client.message(viewer.handle_id, body)
    assert ack["janus"] == "ack", ack
    event = await viewer.plugin_event()
    assert "jsep" not in event  # nothing to renegotiate
    return event["plugindata"]["data"]  # type: ignore[no-any-return]


async def test_configure_stops_and_restarts_video_while_audio_goes_on(janus: JanusHttpClient) -> None:
    viewer = AiortcViewer(janus)
    try:
        await viewer.watch(1)
        await viewer.wait_for_frames(video=10, audio=10)

        configured = await request(viewer, {"request": "configure", "streams": [{"mid": "v", "send": False}]})
        assert configured == {"streaming": "event", "result": {"event": "configured"}}
        await viewer.wait_until_video_stops()
        video = viewer.media.video_frames
        await viewer.wait_for_frames(video=0, audio=viewer.media.audio_frames + 40)
        assert viewer.media.video_frames == video, "video came back while audio went on"

        assert (await request(viewer, {"request": "configure", "video": True}))["result"] == {"event": "configured"}
        await viewer.wait_for_frames(video=viewer.media.video_frames + 30, audio=0, timeout=10)
    finally:
        await viewer.close()


async def test_switch_moves_the_viewer_to_another_mountpoint_without_renegotiation(janus: JanusHttpClient) -> None:
    viewer = AiortcViewer(janus)
    try:
        await viewer.watch(1)
        await viewer.wait_for_frames(video=10, audio=10)
        assert viewer.media.video_sizes == {(640, 360)}

        switched = await request(viewer, {"request": "switch", "id": 2})
        assert switched == {"streaming": "event", "result": {"switched": "ok", "id": 2}}
        frames = viewer.media.video_frames
        await viewer.wait_for_frames(video=frames + 45, audio=0, timeout=10)
        assert (320, 180) in viewer.media.video_sizes

        wrong = await request(viewer, {"request": "switch", "id": 3})
        assert wrong == {
            "streaming": "event",
            "error_code": 458,
            "error": "Can't switch: mountpoint 3 has no vp8 stream for mid 'v'",
        }
        missing = await request(viewer, {"request": "switch", "id": 9})
        assert missing["error_code"] == 455
    finally:
        await viewer.close()


async def test_switch_and_configure_need_a_mountpoint(janus: JanusHttpClient) -> None:
    handle = await janus.attach()
    for body in ({"request": "switch", "id": 2}, {"request": "configure", "video": False}):
        assert (await janus.message(handle, body))["janus"] == "ack"
        event = await janus.plugin_event(handle)
        assert event["plugindata"]["data"]["error_code"] == 460, event
