"""``port = 0`` in a mountpoint: a free port of the Streaming plugin's ``rtp_port_range``
(janus.plugin.streaming.jcfg, ``general``), as Janus's Streaming plugin documents it, and a
clear error when the range has no free port left."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from fanout._engine import Engine
from fanout.config.jcfg import ConfigError, parse
from fanout.plugins.streaming.config import parse_mountpoint, streaming_settings_from_file
from fanout.plugins.streaming.mountpoint import Mountpoint
from fanout.plugins.streaming.port_range import PortRange

from tests.support.server import FanoutProcess, ServerAddresses, write_config


def two_free_ports() -> int:
    """A port P such that P and P + 1 are both free for UDP on loopback right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first:
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port


def test_picks_go_round_the_range_past_taken_ports() -> None:
    low = two_free_ports()
    ports = PortRange(low, low + 1)
    assert [ports.pick("127.0.0.1"), ports.pick("127.0.0.1")] == [low, low + 1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", low))
        assert [ports.pick("127.0.0.1"), ports.pick("127.0.0.1")] == [low + 1, low + 1]
    assert ports.pick("127.0.0.1") == low


def test_a_range_without_a_free_port_is_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"no free port in rtp_port_range {port}-{port}"):
            PortRange(port, port).pick("127.0.0.1")


def test_the_range_is_read_from_the_general_group() -> None:
    assert streaming_settings_from_file(parse("general: {}", "s.jcfg")).rtp_port_range == (10000, 60000)
    settings = streaming_settings_from_file(parse('general: { rtp_port_range = "30010-30000" }', "s.jcfg"))
    assert settings.rtp_port_range == (30000, 30010), "either order, as Janus"
    with pytest.raises(ConfigError, match="'rtp_port_range' must be a range of port numbers"):
        streaming_settings_from_file(parse('general: { rtp_port_range = "30000" }', "s.jcfg"))


@pytest.fixture(scope="module")
def server_and_range(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerAddresses, int]]:
    folder = tmp_path_factory.mktemp("config")
    addresses = write_config(folder, "")
    low = two_free_ports()
    (folder / "janus.plugin.streaming.jcfg").write_text(f'general: {{\n\trtp_port_range = "{low}-{low + 1}"\n}}\n')
    with FanoutProcess(folder):
        yield addresses, low


async def test_created_mountpoints_take_ports_of_the_range(server_and_range: tuple[ServerAddresses, int]) -> None:
    server, low = server_and_range
    media = [
        {"type": "audio", "mid": "a", "port": 0, "pt": 111, "codec": "opus"},
        {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"},
    ]
    async with aiohttp.ClientSession() as http:

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with http.post(server.janus_url + path, data=json.dumps({"transaction": "t", **body})) as response:
                return await response.json(content_type=None)  # type: ignore[no-any-return]

        session = (await post("", {"janus": "create"}))["data"]["id"]
        handle = (await post(f"/{session}", {"janus": "attach", "plugin": "janus.plugin.streaming"}))["data"]["id"]

        async def create(mountpoint_id: int) -> dict[str, Any]:
            body = {"request": "create", "type": "rtp", "id": mountpoint_id, "media": media}
            return (await post(f"/{session}/{handle}", {"janus": "message", "body": body}))["plugindata"]["data"]  # type: ignore[no-any-return]

        created = await create(7)
        assert [port["port"] for port in created["stream"]["ports"]] == [low, low + 1]
        refused = await create(8)
        assert refused["error_code"] == 456
        assert f"no free port in rtp_port_range {low}-{low + 1}" in refused["error"]


class RacedPortRange(PortRange):
    """Another process binds the first port this range hands out, after the pick and before the
    engine binds it (as another server picking from the same range would)."""

    def __init__(self, low: int, high: int) -> None:
        super().__init__(low, high)
        self.rival: socket.socket | None = None

    def pick(self, host: str) -> int:
        port = super().pick(host)
        if self.rival is None:
            self.rival = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.rival.bind((host, port))
        return port


def test_a_picked_port_another_process_binds_first_is_picked_again() -> None:
    low = two_free_ports()
    ports = RacedPortRange(low, low + 1)
    config, _ = parse_mountpoint("raced", {"type": "rtp", "id": 1, "video": True, "videoport": 0, "videopt": 96,
                                           "videocodec": "vp8"})  # fmt: skip
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as webrtc:
        webrtc.bind(("127.0.0.1", 0))
        engine = Engine(webrtc.fileno(), cores=[0], pin=False)
        try:
            mountpoint = Mountpoint.open(engine, config, 1, lambda _: None, ports)
            assert mountpoint.ports == [low + 1]
        finally:
            engine.close()
            assert ports.rival is not None
            ports.rival.close()
