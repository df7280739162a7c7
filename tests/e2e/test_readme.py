"""What the README promises, tried as a user would: ``fanout serve`` with the embedded
default serves the demo page and the test source, and every encoder command line in the
README feeds its mountpoint with media a real WebRTC client decodes. The server advertises
the machine's own addresses here (not 127.0.0.1), as it would for a user."""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.encoders import running
from tests.support.janus_client import JanusHttpClient, janus_session
from tests.support.server import FanoutProcess

# fanout's default ports and the README's mountpoint ports: run alone (scripts/test runs these
# after the others), not beside servers that take ports from the default rtp_port_range.
pytestmark = pytest.mark.alone

README = Path(__file__).parents[2] / "README.md"
DEFAULT_PAGE = "http://localhost:8088/"
MOUNTPOINT_OF_VIDEO_PORT = {5004: 2, 5008: 3}


def readme_encoder_commands() -> list[str]:
    """The ffmpeg and gst-launch command lines of the README's ``sh`` blocks."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.DOTALL)
    commands = [line for block in blocks for line in block.splitlines() if line.startswith(("ffmpeg ", "gst-launch-1.0 "))]
    assert len(commands) == 4, commands
    return commands


def video_port_of(command: str) -> int:
    ports = [int(port) for port in re.findall(r"(?::|port=)(\d{4})\b", command)]
    return next(port for port in ports if port in MOUNTPOINT_OF_VIDEO_PORT)


@pytest.fixture(scope="module")
def default_server() -> Iterator[FanoutProcess]:
    """``fanout serve`` without --config: the embedded default, on its default ports."""
    with FanoutProcess(None) as server:
        yield server


@pytest.fixture
async def janus(default_server: FanoutProcess) -> AsyncIterator[JanusHttpClient]:
    async with janus_session("http://127.0.0.1:8088/janus") as client:
        yield client


async def test_the_default_serves_the_demo_page_and_the_test_source(
    default_server: FanoutProcess, janus: JanusHttpClient
) -> None:
    assert DEFAULT_PAGE in default_server.output
    for path, expected in [("/", "janus.js"), ("/janus.js", "Janus.init"), ("/adapter.js", "adapter")]:
        async with janus.http.get(f"http://127.0.0.1:8088{path}") as response:
            assert response.status == 200, path
            assert expected in await response.text()
    handle = await janus.attach()
    listed = await janus.message(handle, {"request": "list"})
    assert [entry["id"] for entry in listed["plugindata"]["data"]["list"]] == [1, 2, 3]
    saved = {"request": "create", "type": "rtp", "permanent": True, "audio": True, "audioport": 0, "audiopt": 111, "audiocodec": "opus"}
    assert (await janus.message(handle, saved))["plugindata"]["data"] == {
        "streaming": "event",
        "error_code": 456,
        "error": "Can't save the stream: fanout runs its embedded default configuration; "
        "start it with --config DIR to save mountpoints",
    }

    viewer = AiortcViewer(janus)
    try:
        await viewer.watch(1)
        media = await viewer.wait_for_frames(video=30, audio=30)
        assert media.video_sizes == {(640, 360)}
    finally:
        await viewer.close()


@pytest.mark.parametrize("command", readme_encoder_commands(), ids=lambda c: c.split()[0] + "-" + str(video_port_of(c)))
async def test_each_readme_encoder_command_feeds_its_mountpoint(janus: JanusHttpClient, command: str) -> None:
    mountpoint_id = MOUNTPOINT_OF_VIDEO_PORT[video_port_of(command)]
    encoder = shlex.split(command)
    with running(encoder, stdout=subprocess.DEVNULL):
        viewer = AiortcViewer(janus)
        try:
            await viewer.watch(mountpoint_id)
            media = await viewer.wait_for_frames(video=30, audio=30)
            assert media.video_sizes == {(640, 360)}
            assert media.audio_sample_rates == {48000}
        finally:
            await viewer.close()
