"""``"permanent": true``: mountpoints saved to janus.plugin.streaming.jcfg survive a restart."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from fanout.config.jcfg import load, parse
from fanout.config.loader import DEFAULT_FOLDER
from fanout.plugins.streaming.config import mountpoints_from_file, parse_mountpoint
from fanout.plugins.streaming.management import mountpoint_from_create
from fanout.plugins.streaming.persistence import PersistenceError, forget_mountpoint, save_mountpoint

from tests.support.janus_client import JanusHttpClient
from tests.support.server import FanoutProcess, rtp_mountpoint, write_config

CREATE = {
    "request": "create",
    "type": "rtp",
    "id": 42,
    "name": "saved",
    "description": "saved \"quoted\" mountpoint",
    "secret": "s",
    "permanent": True,
    "media": [
        {"type": "audio", "mid": "a", "port": 0, "pt": 111, "codec": "opus"},
        {"type": "video", "mid": "v", "label": "camera", "port": 0, "pt": 96, "codec": "h264"},
    ],
}


def test_saved_mountpoints_read_back_the_same(tmp_path: Path) -> None:
    configs = mountpoints_from_file(load(DEFAULT_FOLDER / "janus.plugin.streaming.jcfg"))
    path = tmp_path / "janus.plugin.streaming.jcfg"
    for config in configs:
        save_mountpoint(path, config)
    assert mountpoints_from_file(load(path)) == configs

    assert forget_mountpoint(path, configs[0].id)
    assert not forget_mountpoint(path, configs[0].id)
    assert mountpoints_from_file(load(path)) == configs[1:]


def test_data_streams_are_saved_in_both_forms(tmp_path: Path) -> None:
    path = tmp_path / "janus.plugin.streaming.jcfg"
    legacy_group = parse('type = "rtp"\nid = 15\ndata = true\ndataport = 5008\ndatatype = "binary"\ndatabuffermsg = true\n')
    legacy, _ = parse_mountpoint("data-only", legacy_group)
    media_group = parse(
        'type = "rtp"\nid = 16\nmedia = (\n'
        '{ type = "data", mid = "d", label = "subtitles", port = 0, iface = "127.0.0.1" },\n'
        '{ type = "video", mid = "v", port = 0, pt = 96, codec = "vp8" }\n)\n'
    )
    multistream, _ = parse_mountpoint("subtitled", media_group)
    save_mountpoint(path, legacy)
    save_mountpoint(path, multistream)
    assert mountpoints_from_file(load(path)) == [legacy, multistream]
    text = path.read_text()
    assert 'datatype = "binary"' in text and "buffermsg = true" in text


def test_saving_replaces_the_mountpoint_of_the_same_id(tmp_path: Path) -> None:
    path = tmp_path / "janus.plugin.streaming.jcfg"
    group = parse('type = "rtp"\nid = 3\naudio = true\naudioport = 0\naudiopt = 111\naudiocodec = "opus"\n')
    config, _ = parse_mountpoint("first-name", group)
    save_mountpoint(path, config)
    renamed, _ = parse_mountpoint("second-name", group)
    save_mountpoint(path, renamed)
    [saved] = mountpoints_from_file(load(path))
    assert saved.name == "second-name"


# What could end a .jcfg string, start a comment, a group or an include, or be read back
# as something else: each must come back from the file exactly as it went in.
NASTY_TEXT = (
    'a "quoted" \\ backslash \\" \\x41 \\n literal; } { ) ( = : , # comment // comment /* comment */ '
    '@include "/etc/passwd"\r\nsecond line\ttab \x00 \x01 \x1b[31m \x7f \x85 \u2028 ü ☃ 🎥 \x00'
)  # fmt: skip


def test_nasty_strings_come_back_from_the_file_as_they_went_in(tmp_path: Path) -> None:
    path = tmp_path / "janus.plugin.streaming.jcfg"
    media = [
        {"type": "audio", "mid": "!#$%&'*+-.^_`{|}~", "label": 'l"\\}{;#', "msid": "s~ t*", "port": 0, "pt": 111,
         "codec": "opus", "fmtp": 'minptime=10;x="}\\;#/* ☃'},
        {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"},
    ]  # fmt: skip
    body = {"type": "rtp", "id": 9, "name": "nasty", "media": media}
    body |= {"description": NASTY_TEXT, "metadata": NASTY_TEXT, "secret": 's"\\}', "pin": "p\\x00"}
    config = mountpoint_from_create(body, set())
    save_mountpoint(path, config)
    assert mountpoints_from_file(load(path)) == [config]
    save_mountpoint(path, dataclasses.replace(config, description=NASTY_TEXT[::-1]))
    [saved] = mountpoints_from_file(load(path))
    assert saved.description == NASTY_TEXT[::-1] and saved.metadata == NASTY_TEXT


def test_what_the_file_cannot_hold_is_never_half_written(tmp_path: Path) -> None:
    path = tmp_path / "janus.plugin.streaming.jcfg"
    group = parse('type = "rtp"\nid = 3\naudio = true\naudioport = 0\naudiopt = 111\naudiocodec = "opus"\n')
    config, _ = parse_mountpoint("kept", group)
    save_mountpoint(path, config)
    before = path.read_bytes()
    with pytest.raises(PersistenceError, match="cannot write"):
        save_mountpoint(path, dataclasses.replace(config, id=4, name="other", description="lone \ud800 surrogate"))
    assert path.read_bytes() == before
    assert sorted(item.name for item in tmp_path.iterdir()) == ["janus.plugin.streaming.jcfg"]


def test_the_file_is_written_in_utf8_whatever_the_locale(tmp_path: Path) -> None:
    """load() reads UTF-8: a file written in the locale's encoding (ASCII under LC_ALL=C
    without Python's UTF-8 mode) would not be saved, or not be read back at the next start."""
    path = tmp_path / "janus.plugin.streaming.jcfg"
    save = (
        "import sys; from pathlib import Path; from fanout.config.jcfg import parse; "
        "from fanout.plugins.streaming.config import parse_mountpoint; "
        "from fanout.plugins.streaming.persistence import save_mountpoint; "
        "group = parse('type = \"rtp\"\\nid = 5\\ndescription = \"caf\\\\xc3\\\\xa9\"\\n"
        "audio = true\\naudioport = 0\\naudiopt = 111\\naudiocodec = \"opus\"\\n'); "
        "save_mountpoint(Path(sys.argv[1]), parse_mountpoint('cafe', group)[0])"
    )
    environment = os.environ | {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    subprocess.run([sys.executable, "-c", save, str(path)], env=environment, check=True)
    [saved] = mountpoints_from_file(load(path))
    assert saved.description == "caf\xc3\xa9"


async def test_created_edited_and_destroyed_permanently_through_the_api(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    addresses = write_config(folder, rtp_mountpoint(2, 0, 0))
    streaming_file = folder / "janus.plugin.streaming.jcfg"

    async def session() -> tuple[aiohttp.ClientSession, JanusHttpClient, int]:
        http = aiohttp.ClientSession()
        client = JanusHttpClient(http, addresses.janus_url)
        await client.create()
        return http, client, await client.attach()

    with FanoutProcess(folder):
        http, janus, handle = await session()
        try:
            created = (await janus.message(handle, CREATE))["plugindata"]["data"]
            assert created["created"] == "saved" and created["permanent"] is True
            edited = await janus.message(
                handle, {"request": "edit", "id": 42, "secret": "s", "new_description": "edited", "permanent": True}
            )
            assert edited["plugindata"]["data"] == {"streaming": "edited", "id": 42, "permanent": True}
        finally:
            await janus.close()
            await http.close()
    assert "saved: {" in streaming_file.read_text()

    with FanoutProcess(folder):
        http, janus, handle = await session()
        try:
            info = (await janus.message(handle, {"request": "info", "id": 42, "secret": "s"}))["plugindata"]["data"]
            assert info["info"]["description"] == "edited"
            assert [(m["mid"], m["label"], m["codec"]) for m in info["info"]["media"]] == [
                ("a", "audio", "opus"),
                ("v", "camera", "h264"),
            ]
            destroyed = await janus.message(handle, {"request": "destroy", "id": 42, "secret": "s", "permanent": True})
            assert destroyed["plugindata"]["data"] == {"streaming": "destroyed", "destroyed": 42}
        finally:
            await janus.close()
            await http.close()
    assert "saved" not in streaming_file.read_text()
    assert [config.id for config in mountpoints_from_file(load(streaming_file))] == [2]



def test_source_options_are_saved(tmp_path: Path) -> None:
    group = parse(
        'type = "rtp"\nid = 4\ncollision = 500\nsrtpsuite = 80\nsrtpcrypto = "WbTBosdVUZqEb6Htqhn+m3z7wUh4RJVR8nE15GbN"\n'
        'media = ({type = "video", mid = "v", port = 0, pt = 96, codec = "h264", skew = true,'
        ' h264sps = "Z0IAKeKQCgDLYC3AQEBpB4kRUA==,aM48gA=="})\n'
    )
    config, _ = parse_mountpoint("options", group)
    path = tmp_path / "janus.plugin.streaming.jcfg"
    save_mountpoint(path, config)


def test_playoutdelay_ext_is_saved(tmp_path: Path) -> None:
    path = tmp_path / "janus.plugin.streaming.jcfg"
    group = parse(
        'type = "rtp"\nid = 4\nplayoutdelay_ext = true\nvideo = true\nvideoport = 0\nvideopt = 96\nvideocodec = "vp8"\n'
    )
    config, _ = parse_mountpoint("delayed", group)
    save_mountpoint(path, config)
    assert "playoutdelay_ext = true" in path.read_text()
    assert mountpoints_from_file(load(path)) == [config]


def test_simulcast_is_saved(tmp_path: Path) -> None:
    path = tmp_path / "janus.plugin.streaming.jcfg"
    group = parse(
        'type = "rtp"\nid = 4\nvideo = true\nvideoport = 5004\nvideopt = 96\nvideocodec = "vp8"\n'
        "videosimulcast = true\nvideoport2 = 5006\nvideoport3 = 5008\n"
    )
    config, _ = parse_mountpoint("simulcast", group)
    save_mountpoint(path, config)
    assert mountpoints_from_file(load(path)) == [config]


def test_vp9_svc_is_saved(tmp_path: Path) -> None:
    path = tmp_path / "janus.plugin.streaming.jcfg"
    group = parse('type = "rtp"\nid = 4\nvideo = true\nvideoport = 5004\nvideopt = 96\nvideocodec = "vp9"\nvideosvc = true\n')
    config, _ = parse_mountpoint("svc", group)
    save_mountpoint(path, config)
    assert mountpoints_from_file(load(path)) == [config] and config.streams[0].svc


async def test_a_full_disk_refuses_the_permanent_mountpoint_and_keeps_the_file_whole(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    addresses = write_config(folder, rtp_mountpoint(2, 0, 0))
    streaming_file = folder / "janus.plugin.streaming.jcfg"
    before = streaming_file.read_text()
    with FanoutProcess(folder):
        async with aiohttp.ClientSession() as http:
            janus = JanusHttpClient(http, addresses.janus_url)
            await janus.create()
            try:
                handle = await janus.attach()
                (folder / ".janus.plugin.streaming.jcfg.saving").symlink_to("/dev/full")  # every write: ENOSPC
                refused = (await janus.message(handle, CREATE))["plugindata"]["data"]
                assert refused["error_code"] == 456 and "No space left on device" in refused["error"], refused
                assert streaming_file.read_text() == before
                listed = (await janus.message(handle, {"request": "list"}))["plugindata"]["data"]["list"]
                assert [entry["id"] for entry in listed] == [2]  # not half made: nothing runs that the file lacks
                # Room again (fanout removed what it could not write): the same request is saved.
                created = (await janus.message(handle, CREATE))["plugindata"]["data"]
                assert created["created"] == "saved" and created["permanent"] is True
            finally:
                await janus.close()
    assert "saved: {" in streaming_file.read_text() and "rtp-2: {" in streaming_file.read_text()
