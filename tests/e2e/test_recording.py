"""Recording a mountpoint fed by ffmpeg to Janus .mjr files, written by the engine:
Janus's janus-pp-rec converts them and ffprobe reads the result; a full disk or a vanished
directory stops the recording and nothing else. (The replies: test_recording_janus.py.)"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.encoders import ffmpeg_vp8_opus, running
from tests.support.janus_client import JanusHttpClient, janus_session
from tests.support.server import FanoutProcess, ServerAddresses, write_config

pytestmark = [
    pytest.mark.usefixtures("loopback_only_ice"),
    pytest.mark.skipif(shutil.which("janus-pp-rec") is None, reason="janus-pp-rec (janus-tools) is not installed"),
]


async def request(janus: JanusHttpClient, body: dict[str, Any]) -> dict[str, Any]:
    handle = await janus.attach()
    reply = await janus.message(handle, body)
    assert reply["janus"] == "success", reply
    return reply["plugindata"]["data"]  # type: ignore[no-any-return]


async def ffmpeg_mountpoint(janus: JanusHttpClient, mountpoint_id: int) -> tuple[int, int]:
    created = await request(janus, {
        "request": "create", "type": "rtp", "id": mountpoint_id, "secret": "s3cret",
        "audio": True, "audioport": 0, "audiopt": 111, "audiocodec": "opus",
        "video": True, "videoport": 0, "videopt": 96, "videocodec": "vp8",
    })  # fmt: skip
    assert created["streaming"] == "created", created
    return created["stream"]["audio_port"], created["stream"]["video_port"]


async def logged(server: FanoutProcess, line: str, timeout: float = 20.0) -> None:
    async def written() -> None:
        while line not in server.output:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(written(), timeout)


def probe(path: Path) -> dict[str, Any]:
    output = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height:format=duration", "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(output)  # type: ignore[no-any-return]


def convert(recording: Path, target: Path) -> dict[str, Any]:
    subprocess.run(["janus-pp-rec", str(recording), str(target)], check=True, capture_output=True)
    return probe(target)


async def test_a_recording_converts_to_playable_files_of_the_expected_length(
    janus_http: JanusHttpClient, tmp_path: Path
) -> None:
    audio_port, video_port = await ffmpeg_mountpoint(janus_http, 81)
    viewer = AiortcViewer(janus_http)
    with running(ffmpeg_vp8_opus("127.0.0.1", audio_port, video_port)):
        try:
            await viewer.watch(81)
            await viewer.wait_for_frames(video=10, audio=10)
            start = {"request": "recording", "action": "start", "id": 81, "secret": "s3cret",
                     "audio": str(tmp_path / "rec-audio"), "video": str(tmp_path / "rec-video.mjr")}  # fmt: skip
            assert await request(janus_http, start) == {"streaming": "ok"}
            again = await request(janus_http, start)  # Janus 1.1.2's words (test_recording_janus.py)
            assert (again["error_code"], again["error"]) == (452, "Recording started for this stream")
            frames = viewer.media.video_frames
            await viewer.wait_for_frames(video=frames + 90, audio=0)  # 3 s at 30 fps
            stop = {"request": "recording", "action": "stop", "id": 81, "secret": "s3cret", "audio": True, "video": True}
            assert await request(janus_http, stop) == {"streaming": "ok"}
            await viewer.wait_for_frames(video=viewer.media.video_frames + 10, audio=0)  # viewers go on
        finally:
            await viewer.close()
    video = convert(tmp_path / "rec-video.mjr", tmp_path / "video.webm")
    assert video["streams"] == [{"codec_name": "vp8", "width": 640, "height": 360}], video
    assert 2.5 <= float(video["format"]["duration"]) <= 10, video
    audio = convert(tmp_path / "rec-audio.mjr", tmp_path / "audio.opus")
    assert audio["streams"] == [{"codec_name": "opus"}], audio
    assert 2.5 <= float(audio["format"]["duration"]) <= 10, audio


async def test_a_vanished_directory_stops_the_recording_and_nothing_else(tmp_path: Path) -> None:
    """``rec_dir`` takes the relative file names; its folders are made as needed."""
    rec_dir = tmp_path / "recordings"
    addresses = write_config(tmp_path / "config", "")
    (tmp_path / "config" / "janus.plugin.streaming.jcfg").write_text(f'general: {{\n\trec_dir = "{rec_dir}"\n}}\n')
    with FanoutProcess(tmp_path / "config") as server:
        async with janus_session(addresses.janus_url) as janus:
            audio_port, video_port = await ffmpeg_mountpoint(janus, 84)
            viewer = AiortcViewer(janus)
            with running(ffmpeg_vp8_opus("127.0.0.1", audio_port, video_port)):
                try:
                    await viewer.watch(84)
                    await viewer.wait_for_frames(video=10, audio=10)
                    start = {"request": "recording", "action": "start", "id": 84, "secret": "s3cret", "video": "cam/video"}
                    assert await request(janus, start) == {"streaming": "ok"}
                    recording = rec_dir / "cam" / "video.mjr"
                    assert recording.exists()
                    shutil.rmtree(rec_dir / "cam")
                    reason = "the file was removed (its directory vanished)"
                    await logged(server, f"mountpoint 84: recording to {recording} stopped: {reason}")
                    await viewer.wait_for_frames(video=viewer.media.video_frames + 30, audio=0)
                    assert await request(janus, start) == {"streaming": "ok"}  # the folder made again
                    assert recording.exists()
                finally:
                    await viewer.close()


async def test_a_full_disk_stops_the_recording_and_nothing_else(
    janus_http: JanusHttpClient, demo_server: tuple[ServerAddresses, FanoutProcess], tmp_path: Path
) -> None:
    audio_port, video_port = await ffmpeg_mountpoint(janus_http, 83)
    full = tmp_path / "full.mjr"
    full.symlink_to("/dev/full")  # every write: ENOSPC
    viewer = AiortcViewer(janus_http)
    _, server = demo_server
    with running(ffmpeg_vp8_opus("127.0.0.1", audio_port, video_port)):
        try:
            await viewer.watch(83)
            await viewer.wait_for_frames(video=10, audio=10)
            start = {"request": "recording", "action": "start", "id": 83, "secret": "s3cret", "video": str(full)}
            assert await request(janus_http, start) == {"streaming": "ok"}
            await logged(server, f"mountpoint 83: recording to {full} stopped: No space left on device")
            await viewer.wait_for_frames(video=viewer.media.video_frames + 30, audio=0)
            # Stopped: it may start again (elsewhere).
            start["video"] = str(tmp_path / "elsewhere.mjr")
            assert await request(janus_http, start) == {"streaming": "ok"}
        finally:
            await viewer.close()
