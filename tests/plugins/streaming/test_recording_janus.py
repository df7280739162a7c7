"""The ``recording`` request against Debian's Janus 1.1.2 and fanout side by side: the same
requests, in the same order, on the same mountpoints, get the same reply JSON (start, stop,
and every error: Janus's order of checks, its texts and codes)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fanout.config.jcfg import ConfigError, parse
from fanout.plugins.streaming.config import streaming_settings_from_file

from tests.admin import janus_config
from tests.support.janus_client import JanusHttpClient, janus_session
from tests.support.ports import free_ports
from tests.support.server import FanoutProcess, rtp_mountpoint, write_config

pytestmark = pytest.mark.skipif(shutil.which("janus") is None, reason="Debian's janus is not installed")

SECRET = "s3cret"
# Mountpoint 1 (audio + video, no secret) is in both servers' configuration; 5 and 6 are made here.
SETUP = [
    {"request": "create", "type": "rtp", "id": 5, "secret": SECRET, "media": [
        {"type": "video", "mid": "v1", "port": 0, "pt": 96, "codec": "vp8"},
        {"type": "video", "mid": "v2", "port": 0, "pt": 97, "codec": "vp8"},
        {"type": "audio", "mid": "a1", "port": 0, "pt": 111, "codec": "opus"},
    ]},
]  # fmt: skip
# TMP is each server's own folder; a file name may name one that does not exist yet.
CASES: list[dict[str, Any]] = [
    {"request": "recording"},
    {"request": "recording", "id": 999},
    {"request": "recording", "id": 1, "action": True},
    {"request": "recording", "action": "pause"},
    {"request": "recording", "action": "stop", "video": True},
    {"request": "recording", "id": 999, "action": "stop", "video": True},
    {"request": "recording", "id": "1", "action": "start", "audio": "TMP/x"},
    {"request": "recording", "id": 1, "action": "start"},
    {"request": "recording", "id": 1, "action": "stop"},
    {"request": "recording", "id": 1, "action": "start", "audio": 3},
    {"request": "recording", "id": 1, "action": "stop", "audio": "x"},
    {"request": "recording", "id": 1, "action": "start", "audio": "TMP/new/folder/a", "video": "TMP/v"},
    {"request": "recording", "id": 1, "action": "start", "audio": "TMP/a2"},
    {"request": "recording", "id": 1, "action": "stop", "audio": True},
    {"request": "recording", "id": 1, "action": "start", "audio": "TMP/a3", "video": "TMP/v3"},
    {"request": "recording", "id": 1, "action": "stop", "audio": True, "video": True, "data": True},
    {"request": "recording", "id": 1, "action": "stop", "video": True},
    {"request": "recording", "id": 1, "action": "stop", "video": False},
    {"request": "recording", "id": 1, "action": "start", "data": "TMP/d"},
    {"request": "recording", "id": 1, "action": "start", "video": "TMP/k"},
    {"request": "disable", "id": 1, "stop_recording": False},
    {"request": "recording", "id": 1, "action": "start", "video": "TMP/k2"},
    {"request": "enable", "id": 1},
    # (A disable that stops a running recording crashes Janus 1.1.2: fanout's is tested alone below.)
    {"request": "recording", "id": 1, "action": "stop", "video": True},
    {"request": "recording", "id": 1, "action": "start", "video": "/proc/no/such/folder/v"},
    {"request": "recording", "id": 5, "action": "start", "video": "TMP/q", "secret": "wrong"},
    {"request": "recording", "id": 5, "action": "start", "video": "TMP/q"},
    {"request": "recording", "id": 5, "action": "start", "video": "TMP/q", "secret": 3},
    {"request": "recording", "id": 5, "action": "start", "audio": 3, "secret": "wrong"},
    {"request": "recording", "id": 5, "action": "start", "media": "v1", "secret": SECRET},
    {"request": "recording", "id": 5, "action": "start", "media": [{"mid": "v1", "filename": "/proc/no/x"}], "secret": SECRET},
    {"request": "recording", "id": 5, "action": "start", "media": [{"mid": "v1", "filename": "TMP/m1"}], "secret": SECRET},
    {"request": "recording", "id": 5, "action": "start", "media": [{"mid": "v1", "filename": "TMP/m2"}], "secret": SECRET},
    {"request": "recording", "id": 5, "action": "start", "video": "TMP/m3", "secret": SECRET},
    {"request": "recording", "id": 5, "action": "start", "media": [{"mid": "zz", "filename": "TMP/z"}, {"mid": "a1"},
                                                                   3, {"mid": 3}], "secret": SECRET},  # fmt: skip
    {"request": "recording", "id": 5, "action": "start", "media": [], "secret": SECRET},
    {"request": "recording", "id": 5, "action": "stop", "media": [{"mid": "v1"}], "secret": SECRET},
    {"request": "recording", "id": 5, "action": "start", "media": [{"mid": "a1", "filename": "TMP/a1"}],
     "audio": "TMP/ignored", "secret": SECRET},  # fmt: skip
    {"request": "recording", "id": 5, "action": "start", "audio": "TMP/a1b", "secret": SECRET},
    {"request": "recording", "id": 5, "action": "stop", "media": 3, "secret": SECRET},
    {"request": "recording", "id": 5, "action": "stop", "media": [{"mid": "a1"}, {}], "secret": SECRET},
    {"request": "disable", "id": 5, "stop_recording": "x", "secret": "wrong"},
    {"request": "disable", "id": 5, "stop_recording": "x", "secret": SECRET},
    {"request": "recording", "id": 6, "action": "start", "audio": "TMP/l", "secret": "wrong"},
    {"request": "recording", "id": 6, "action": "pause"},
    {"request": "recording", "id": 6, "action": "stop", "audio": True},
]
# The .mjr files each server has made by the end (a recording's file is made when it starts).
MADE = {"new/folder/a.mjr", "v.mjr", "m1.mjr", "a1.mjr", "k.mjr"}
# Janus also starts a3's audio, then answers that video is recording already; fanout starts
# nothing of a request it refuses.
MADE_ONLY_BY_JANUS = {"a3.mjr"}


def in_folder(body: dict[str, Any], folder: Path) -> dict[str, Any]:
    return json.loads(json.dumps(body).replace("TMP", str(folder)))  # type: ignore[no-any-return]


async def replies(url: str, folder: Path, live_body: dict[str, Any]) -> list[Any]:
    async with janus_session(url) as janus:
        handle = await janus.attach()
        for body in [*SETUP, live_body]:
            created = await janus.message(handle, body)
            assert created["plugindata"]["data"]["streaming"] == "created", created
        answers = []
        for body in CASES:
            reply = await janus.message(handle, in_folder(body, folder))
            answers.append(reply["plugindata"]["data"] if reply["janus"] == "success" else reply)
        return answers


@pytest.fixture(scope="module")
def janus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, dict[str, Any]]]:
    """Debian's Janus on free ports, with its own folder and an a-law file to play live."""
    folder = tmp_path_factory.mktemp("janus")
    alaw = folder / "music.alaw"
    alaw.write_bytes(bytes(8000))
    ports = free_ports(6)
    with pytest.MonkeyPatch.context() as patch:
        for name, port in zip(("HTTP_PORT", "WS_PORT", "ADMIN_PORT", "ADMIN_WS_PORT", "AUDIO_PORT", "VIDEO_PORT"), ports):
            patch.setattr(janus_config, name, port)
        patch.setattr(janus_config, "STREAMING_CONFIG", janus_config.STREAMING_CONFIG.replace("36002", str(ports[4])).replace("36004", str(ports[5])))
        janus_config.make_config(folder / "config", admin_secret=None)
        with janus_config.Janus(folder / "config"):
            live = {"request": "create", "type": "live", "id": 6, "secret": SECRET, "filename": str(alaw), "audio": True, "video": False}
            yield f"http://127.0.0.1:{ports[0]}/janus", folder, live


@pytest.fixture(scope="module")
def fanout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, dict[str, Any]]]:
    folder = tmp_path_factory.mktemp("fanout")
    wav = folder / "music.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=2", str(wav)], check=True)
    audio_port, video_port = free_ports(2)
    addresses = write_config(folder / "config", rtp_mountpoint(1, audio_port, video_port))
    with FanoutProcess(folder / "config"):
        live = {"request": "create", "type": "live", "id": 6, "secret": SECRET, "filename": str(wav), "audio": True, "video": False}
        yield addresses.janus_url, folder, live


async def test_recording_replies_are_janus_1_1_2s(
    janus: tuple[str, Path, dict[str, Any]], fanout: tuple[str, Path, dict[str, Any]]
) -> None:
    expected = await replies(*janus)
    got = await replies(*fanout)
    for body, janus_reply, fanout_reply in zip(CASES, expected, got, strict=True):
        assert fanout_reply == janus_reply, body
    for (_, folder, _), made in ((janus, MADE | MADE_ONLY_BY_JANUS), (fanout, MADE)):
        assert {str(path.relative_to(folder)) for path in folder.rglob("*.mjr")} == made, folder


async def test_disable_stops_the_recordings_unless_told_not_to(fanout: tuple[str, Path, dict[str, Any]]) -> None:
    url, folder, _ = fanout
    async with janus_session(url) as janus:
        handle = await janus.attach()

        async def request(body: dict[str, Any]) -> Any:
            return (await janus.message(handle, body))["plugindata"]["data"]

        start = {"request": "recording", "id": 1, "action": "start", "video": str(folder / "kept")}
        assert await request(start) == {"streaming": "ok"}
        assert await request({"request": "disable", "id": 1, "stop_recording": False}) == {"streaming": "ok"}
        assert (await request(start))["error"] == "Recording started for this stream"
        assert await request({"request": "disable", "id": 1}) == {"streaming": "ok"}
        assert await request(start) == {"streaming": "ok"}, "the disable stopped the recording"
        assert await request({"request": "recording", "id": 1, "action": "stop", "video": True}) == {"streaming": "ok"}
        assert await request({"request": "enable", "id": 1}) == {"streaming": "ok"}


def test_rec_dir_is_a_folder_in_the_general_group() -> None:
    assert streaming_settings_from_file(parse("general: {}", "s.jcfg")).rec_dir is None
    settings = streaming_settings_from_file(parse('general: { rec_dir = "/var/lib/fanout/recordings" }', "s.jcfg"))
    assert settings.rec_dir == Path("/var/lib/fanout/recordings")
    with pytest.raises(ConfigError, match="s.jcfg:1: 'rec_dir' must be a folder's path"):
        streaming_settings_from_file(parse("general: { rec_dir = 3 }", "s.jcfg"))
