"""``list`` and ``info`` of the Streaming plugin show the cluster's mountpoints ingested elsewhere
(before a relay mountpoint exists here, or when none can be made): merged after the local ones, with
their origin, private ones only with the admin key, never a duplicate of a local id, never secrets."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from fanout._engine import Engine
from fanout.config.jcfg import Group, parse
from fanout.core.plugin import PluginHandle, PluginSuccess
from fanout.plugins.streaming.config import MountpointConfig, StreamingSettings, parse_mountpoint
from fanout.plugins.streaming.plugin import StreamingPlugin

from tests.plugins.streaming.test_engine_events import RecordingHandle

MOUNTPOINTS = """
local-one: { type = "rtp"; id = 1; description = "local"; media = ({ type = "video"; mid = "v"; port = 0; pt = 96; codec = "vp8" }) }
remote-one: { type = "rtp"; id = 1; description = "remote, same id"; media = ({ type = "video"; mid = "v"; port = 0; pt = 96; codec = "vp8" }) }
remote-two: {
	type = "rtp"; id = 2; description = "the match"; metadata = "m"; secret = "s"; pin = "p"
	media = ({ type = "audio"; mid = "a"; port = 5002; pt = 111; codec = "opus" }, { type = "video"; mid = "v"; port = 5004; pt = 100; codec = "h264" })
}
hidden: { type = "rtp"; id = 3; description = "private"; is_private = true; media = ({ type = "audio"; mid = "a"; port = 0; pt = 111; codec = "opus" }) }
"""


def config(name: str) -> MountpointConfig:
    group = parse(MOUNTPOINTS)[name]
    assert isinstance(group, Group)
    return parse_mountpoint(name, group)[0]


@pytest.fixture
async def plugin() -> AsyncIterator[StreamingPlugin]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    engine = Engine(sock.fileno())
    streaming = StreamingPlugin(engine, [config("local-one")], StreamingSettings(admin_key="admin"))
    await streaming.start()
    remote = {c.id: (c, "origin") for c in (config("remote-one"), config("remote-two"), config("hidden"))}
    streaming.remote_mountpoints = lambda: remote
    yield streaming
    await streaming.stop()
    engine.close()
    sock.close()


async def ask(plugin: StreamingPlugin, body: dict[str, Any]) -> dict[str, Any]:
    handle = cast(PluginHandle, RecordingHandle(id=7))
    plugin.create_session(handle)
    try:
        result = await plugin.handle_message(handle, "t", body, None)
    finally:
        plugin.destroy_session(handle)
    assert isinstance(result, PluginSuccess)
    return result.data


async def test_list_shows_local_then_remote_mountpoints_local_winning(plugin: StreamingPlugin) -> None:
    listed = (await ask(plugin, {"request": "list"}))["list"]
    assert [(entry["id"], entry["description"], entry.get("origin")) for entry in listed] == [
        (1, "local", None),
        (2, "the match", "origin"),
    ]
    assert listed[1] == {
        "id": 2, "type": "live", "description": "the match", "metadata": "m", "enabled": True, "origin": "origin",
        "media": [
            {"mid": "a", "type": "audio", "label": "audio", "age_ms": None},
            {"mid": "v", "type": "video", "label": "video", "age_ms": None},
        ],
    }  # fmt: skip
    with_private = (await ask(plugin, {"request": "list", "admin_key": "admin"}))["list"]
    assert [entry["id"] for entry in with_private] == [1, 2, 3]


async def test_info_of_a_remote_mountpoint_has_its_streams_and_not_its_secrets(plugin: StreamingPlugin) -> None:
    info = (await ask(plugin, {"request": "info", "id": 2, "secret": "s"}))["info"]
    assert info["origin"] == "origin" and info["description"] == "the match"
    assert [(media["mid"], media["codec"], media["pt"]) for media in info["media"]] == [("a", "opus", 111), ("v", "h264", 100)]
    assert not {"secret", "pin", "port", "name"} & set(info) and all("port" not in media for media in info["media"])
    assert (await ask(plugin, {"request": "info", "id": 1}))["info"]["description"] == "local"
    assert (await ask(plugin, {"request": "info", "id": 9}))["error_code"] == 455
    assert (await ask(plugin, {"request": "info"}))["error_code"] == 453  # still the plain error


async def test_standalone_the_plugin_lists_only_its_own(plugin: StreamingPlugin) -> None:
    plugin.remote_mountpoints = dict
    assert [entry["id"] for entry in (await ask(plugin, {"request": "list"}))["list"]] == [1]
