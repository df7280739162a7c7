"""WHEP in a cluster: a player POSTs to a node that takes no viewers, follows the 307 to the node that
placement chose, and decodes the stream there (aiohttp follows a 307 with the same method and body,
as RFC 9725 asks of WHEP players)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import aioice.ice
import pytest

from tests.support.cluster import ClusterNodeProcess, RedisServer, wait_until, write_node_config
from tests.support.server import DEMO_MOUNTPOINT
from tests.whep.test_whep import WhepPlayer


@pytest.fixture
def loopback_only_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[ClusterNodeProcess, ClusterNodeProcess]]:
    """``serving`` ingests mountpoint 1 (the test source) and takes viewers; ``front`` takes none."""
    redis = RedisServer().start()
    started: list[ClusterNodeProcess] = []
    try:
        for name, address, mountpoints, accept in (
            ("serving", "127.0.0.2", DEMO_MOUNTPOINT, True),
            ("front", "127.0.0.3", "", False),
        ):
            ports = write_node_config(tmp_path / name, name=name, address=address, redis_url=redis.url,
                                      mountpoints=mountpoints, accept_viewers=accept)  # fmt: skip
            started.append(ClusterNodeProcess(tmp_path / name, ports, name).start())
        serving, front = started
        wait_until(lambda: front.node_names() == ["front", "serving"], timeout=10, what="front sees serving")
        yield serving, front
    finally:
        for node in started:
            node.stop()
        redis.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.usefixtures("loopback_only_ice")
async def test_a_whep_player_follows_the_307_and_decodes_on_the_chosen_node(
    two_nodes: tuple[ClusterNodeProcess, ClusterNodeProcess], http: aiohttp.ClientSession
) -> None:
    serving, front = two_nodes
    player = WhepPlayer(http, f"{front.ports.public_url}/whep/endpoint/1")
    try:
        reply = await player.play()
        assert reply.status == 201, await reply.text()
        assert [str(step.url) for step in reply.history] == [f"{front.ports.public_url}/whep/endpoint/1"]
        assert reply.history[0].status == 307
        assert str(reply.url) == f"{serving.ports.public_url}/whep/endpoint/1?placed=1"
        assert player.location is not None and player.location.startswith("/whep/resource/")
        await player.frames(video=30, audio=30)
        assert player.media.video_sizes == {(640, 360)}
        info = serving.streaming({"request": "info", "id": 1})["info"]
        assert info["viewers"] == 1
    finally:
        await player.pc.close()
