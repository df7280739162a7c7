"""live and ondemand mountpoints: fanout plays a media file made by ffmpeg (H.264 and
AAC in MP4, as a camera or an editor writes it), the H.264 passed through and the AAC
transcoded to Opus, and real aiortc viewers decode both."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient

pytestmark = pytest.mark.usefixtures("loopback_only_ice")

# The picture gets brighter with time (luma 20 at the start, +20 a second), so that a
# viewer's picture tells where in the file it is.
BRIGHTENING_VIDEO = "nullsrc=size=320x240:rate=30,geq=lum='20+20*T':cb=128:cr=128"


def make_mp4(path: Path, *, seconds: float = 8, audio: bool = True, video: str = BRIGHTENING_VIDEO) -> Path:
    command = ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", video]
    if audio:
        command += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-c:a", "aac"]
    command += ["-t", str(seconds), "-c:v", "libx264", "-profile:v", "baseline", "-g", "30", "-pix_fmt", "yuv420p"]
    command += ["-movflags", "+faststart", str(path)]
    subprocess.run(command, check=True)
    return path


async def create(janus: JanusHttpClient, body: dict[str, Any]) -> dict[str, Any]:
    handle = await janus.attach()
    reply = await janus.message(handle, {"request": "create"} | body)
    assert reply["janus"] == "success", reply
    return reply["plugindata"]["data"]  # type: ignore[no-any-return]


async def info(janus: JanusHttpClient, mountpoint_id: int) -> dict[str, Any]:
    handle = await janus.attach()
    reply = await janus.message(handle, {"request": "info", "id": mountpoint_id})
    return reply["plugindata"]["data"]["info"]  # type: ignore[no-any-return]


async def brightness_above(viewer: AiortcViewer, level: float, timeout: float = 20.0) -> float:
    async def bright_enough() -> float:
        while (viewer.media.video_brightness or 0) < level:
            await asyncio.sleep(0.05)
        return viewer.media.video_brightness or 0

    return await asyncio.wait_for(bright_enough(), timeout)


async def test_a_live_mp4_is_decoded_with_its_aac_as_opus(janus_http: JanusHttpClient, tmp_path: Path) -> None:
    movie = make_mp4(tmp_path / "movie.mp4")
    created = await create(
        janus_http, {"type": "live", "id": 51, "filename": str(movie), "audio": True, "video": True}
    )
    assert created["streaming"] == "created", created
    assert created["stream"] == {"id": 51, "type": "live", "description": "mp-51", "is_private": False}
    described = await info(janus_http, 51)
    assert described["type"] == "live" and described["filename"] == str(movie)
    assert [(m["type"], m["codec"]) for m in described["media"]] == [("audio", "opus"), ("video", "h264")]
    viewer = AiortcViewer(janus_http)
    try:
        await viewer.watch(51)
        media = await viewer.wait_for_frames(video=60, audio=60)
        assert media.video_sizes == {(320, 240)}
        assert media.audio_sample_rates == {48000}
    finally:
        await viewer.close()


async def test_a_live_file_loops_and_viewers_share_its_position(janus_http: JanusHttpClient, tmp_path: Path) -> None:
    movie = make_mp4(tmp_path / "short.mp4", seconds=2, audio=False)
    assert (await create(janus_http, {"type": "live", "id": 52, "filename": str(movie), "video": True}))["streaming"] == "created"
    first, second = AiortcViewer(janus_http), AiortcViewer(janus_http)
    try:
        await first.watch(52)
        await brightness_above(first, 45)  # past the first second
        await second.watch(52)
        await second.wait_for_frames(video=5, audio=0)
        # The same moment of the file for both: the brighter second half, or again the start.
        await brightness_above(second, 45)
        frames = first.media.video_frames
        await first.wait_for_frames(video=frames + 90, audio=0)  # 3 s: over the end, from the start again
        assert first.media.video_sizes == {(320, 240)}
    finally:
        await first.close()
        await second.close()


async def test_ondemand_viewers_each_start_at_the_beginning(janus_http: JanusHttpClient, tmp_path: Path) -> None:
    movie = make_mp4(tmp_path / "movie.mp4", seconds=10)
    created = await create(
        janus_http, {"type": "ondemand", "id": 53, "filename": str(movie), "audio": True, "video": True}
    )
    assert created["stream"]["type"] == "on demand", created
    assert (await info(janus_http, 53))["type"] == "on demand"
    early, late = AiortcViewer(janus_http), AiortcViewer(janus_http)
    try:
        await early.watch(53)
        await early.wait_for_frames(video=5, audio=5)
        await brightness_above(early, 100)  # 4 s into the file
        await late.watch(53)
        media = await late.wait_for_frames(video=5, audio=5)
        late_brightness = media.video_brightness
        assert late_brightness is not None and late_brightness < 70, "the late viewer starts at the beginning"
        assert (early.media.video_brightness or 0) > 100, "the early viewer goes on where it was"
    finally:
        await early.close()
        await late.close()


async def test_files_that_cannot_be_played_are_refused_with_the_reason(
    janus_http: JanusHttpClient, tmp_path: Path
) -> None:
    silent_movie = make_mp4(tmp_path / "silent.mp4", seconds=1, audio=False)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a movie\n" * 100)
    whole = make_mp4(tmp_path / "whole.mp4", seconds=2)
    truncated = tmp_path / "truncated.mp4"  # its index (moov) at the end, cut off
    remux = ["ffmpeg", "-loglevel", "error", "-y", "-i", str(whole), "-c", "copy", str(tmp_path / "moov_last.mp4")]
    subprocess.run(remux, check=True)
    moov_last = (tmp_path / "moov_last.mp4").read_bytes()
    truncated.write_bytes(moov_last[: len(moov_last) // 2])
    cases = {
        str(tmp_path / "missing.mp4"): "no such file",
        str(garbage): "not a media file fanout can read",
        str(silent_movie): "no audio stream",
        str(truncated): "not a media file fanout can read",
    }
    for mountpoint_id, (filename, reason) in enumerate(cases.items(), start=60):
        body = {"type": "live", "id": mountpoint_id, "filename": filename, "audio": True, "video": True}
        refused = await create(janus_http, body)
        assert refused["error_code"] == 456, refused
        assert refused["error"].startswith("Error creating 'live' stream: ") and reason in refused["error"], refused
    missing = await create(janus_http, {"type": "ondemand", "id": 70, "audio": True})
    assert (missing["error_code"], missing["error"]) == (453, "Missing mandatory element (filename)")
    nothing = await create(janus_http, {"type": "live", "id": 71, "filename": str(whole)})
    assert nothing["error_code"] == 456, nothing
    # Nothing else disturbed: the demo mountpoint still plays.
    viewer = AiortcViewer(janus_http)
    try:
        await viewer.watch(1)
        await viewer.wait_for_frames(video=10, audio=10)
    finally:
        await viewer.close()
