"""live and ondemand mountpoints without an engine: their definitions, how they are saved,
and the player process's life (started, its errors reported, started again, stopped)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fanout.plugins.streaming import file_source, persistence
from fanout.plugins.streaming.config import MountpointConfigError, parse_mountpoint
from fanout.plugins.streaming.file_source import FilePlayer, checked_file
from fanout.sources.filesource import FileSourceError


def group(**overrides: Any) -> dict[str, Any]:
    return {"type": "live", "id": 5, "filename": "/media/movie.mp4", "audio": True, "video": True} | overrides


def test_a_live_file_offers_opus_and_h264_by_default() -> None:
    config, unsupported = parse_mountpoint("movie", group(threads=2))
    assert unsupported == ["movie.threads"]
    assert config.file is not None and (config.file.filename, config.file.kind) == ("/media/movie.mp4", "live")
    audio, video = config.streams
    assert (audio.mid, audio.codec.name, audio.payload_type, audio.host, audio.port) == ("a", "opus", 111, "127.0.0.1", 0)
    assert (video.mid, video.codec.name, video.payload_type) == ("v", "h264", 96)


def test_ondemand_with_vp8_and_its_own_payload_types_is_saved_as_written() -> None:
    written = group(type="ondemand", audio=False, videocodec="vp8", videopt=100)
    config, _ = parse_mountpoint("movie", written)
    assert config.file is not None and config.file.ondemand
    assert [(s.kind, s.codec.name, s.payload_type) for s in config.streams] == [("video", "vp8", 100)]
    saved = persistence.mountpoint_settings(config)
    assert saved == {"type": "ondemand", "id": 5, "description": "movie", "filename": "/media/movie.mp4",
                     "video": True, "videopt": 100, "videocodec": "vp8"}  # fmt: skip
    assert parse_mountpoint("movie", saved)[0] == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"filename": None}, "mountpoint 'm': missing 'filename'"),
        ({"audio": False, "video": False}, "mountpoint 'm': no audio or video have to be streamed"),
        ({"audiocodec": "pcmu"}, "mountpoint 'm': 'audiocodec' of a file mountpoint must be opus, not pcmu"),
        ({"videocodec": "av1"}, "mountpoint 'm': 'videocodec' of a file mountpoint must be h264 or vp8, not av1"),
        ({"filename": "a\nb"}, "mountpoint 'm': 'filename' must not contain control characters"),
    ],
)
def test_bad_file_mountpoints_are_refused_with_the_key(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(MountpointConfigError) as raised:
        parse_mountpoint("m", group(**overrides))
    assert str(raised.value).startswith(message)


def make_mp4(path: Path, *, audio: bool) -> Path:
    command = ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10"]
    if audio:
        command += ["-f", "lavfi", "-i", "sine", "-c:a", "aac"]
    subprocess.run([*command, "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


async def test_the_file_is_checked_for_each_stream_the_mountpoint_takes(tmp_path: Path) -> None:
    movie = make_mp4(tmp_path / "silent.mp4", audio=False)
    config, _ = parse_mountpoint("m", group(filename=str(movie), audio=False))
    probe = await checked_file(config)
    assert (probe.video_codec, probe.audio_codec) == ("h264", None)
    with_audio, _ = parse_mountpoint("m", group(filename=str(movie)))
    with pytest.raises(FileSourceError, match="silent.mp4: no audio stream"):
        await checked_file(with_audio)


async def test_a_player_that_fails_is_reported_and_started_again_until_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = tmp_path / "gone-bad.mp4"  # a file that was good when the mountpoint was made
    garbage.write_bytes(b"\0" * 1000)
    monkeypatch.setattr(file_source, "FILE_RESTART_DELAY", 0.05)
    config, _ = parse_mountpoint("m", group(filename=str(garbage)))
    reasons: list[str] = []
    player = FilePlayer(config, [40000, 40002], reasons.append)
    with caplog.at_level(logging.ERROR, logger="fanout.plugins.streaming.file_source"):
        player.start()

        async def two_failures() -> None:
            while len(reasons) < 2:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(two_failures(), 30)
        player.stop()
        await player.stopped()
    assert reasons[0].startswith(f"{garbage}: not a media file fanout can read"), reasons
    assert player.starts >= 2 and player.process is None
    assert f"mountpoint 5: playing {garbage} stopped: {reasons[0]}; trying again" in caplog.text


async def test_stopping_a_player_ends_its_process(tmp_path: Path) -> None:
    movie = make_mp4(tmp_path / "movie.mp4", audio=True)
    config, _ = parse_mountpoint("m", group(filename=str(movie)))
    player = FilePlayer(config, [40000, 40002], lambda reason: pytest.fail(reason))
    player.start()

    async def running() -> asyncio.subprocess.Process:
        while player.process is None:
            await asyncio.sleep(0.02)
        return player.process

    process = await asyncio.wait_for(running(), 10)
    player.stop()
    await player.stopped()
    assert process.returncode in (0, -15), "ended by SIGTERM (before or after it set its handler)"
