"""A node's life in the cluster, in-process against a real redis-server: relay mountpoints follow the
origin's descriptions, survive Redis restarting empty, take an edit in place, and go a TTL after their
description. The plugin and the engine are stand-ins (what ClusterNode reads and calls of them)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from fanout.cluster.node import ClusterNode
from fanout.config.jcfg import Group, parse
from fanout.config.settings import ClusterSettings
from fanout.plugins.streaming.config import MountpointConfig, MountpointId, StreamingSettings, parse_mountpoint

from tests.support.cluster import RedisServer

MOUNTPOINT = """
town-hall: {
	type = "rtp"
	id = 1
	description = "town hall"
	media = ({ type = "video", mid = "v", port = 0, pt = 96, codec = "vp8" })
}
"""
TTL = 0.6


@dataclass
class FakeMountpoint:
    config: MountpointConfig
    engine_id: int = 1
    viewers: set[int] = field(default_factory=set)


class FakePlugin:
    def __init__(self, configs: list[MountpointConfig] = []) -> None:
        self.settings = StreamingSettings()
        self.mountpoints: dict[MountpointId, FakeMountpoint] = {config.id: FakeMountpoint(config) for config in configs}
        self.removed: list[MountpointId] = []
        self.remote_mountpoints: Any = dict

    def add_mountpoint(self, config: MountpointConfig) -> FakeMountpoint:
        self.mountpoints[config.id] = FakeMountpoint(config)
        return self.mountpoints[config.id]

    def remove_mountpoint(self, mountpoint_id: MountpointId) -> None:
        del self.mountpoints[mountpoint_id]
        self.removed.append(mountpoint_id)


@dataclass
class FakeWorker:
    viewers: int = 0
    busy_ns: int = 0


class FakeEngine:
    def worker_stats(self) -> list[FakeWorker]:
        return [FakeWorker()]

    def mountpoint_stats(self, engine_id: int) -> Any:
        raise KeyError(engine_id)


def town_hall(**changes: Any) -> MountpointConfig:
    group = parse(MOUNTPOINT)["town-hall"]
    assert isinstance(group, Group)
    config, _ = parse_mountpoint("town-hall", group)
    return dataclasses.replace(config, **changes)


def node(redis: RedisServer, name: str, plugin: FakePlugin) -> ClusterNode:
    settings = ClusterSettings(
        redis_url=redis.url, secret="a-cluster-secret-for-tests", node_name=name, relay_address="127.0.0.1",
        public_url=f"http://{name}:8088", heartbeat_interval=0.2, node_ttl=TTL,
    )  # fmt: skip
    return ClusterNode(settings, cast(Any, plugin), cast(Any, FakeEngine()), janus_url=f"http://{name}:8088/janus", webrtc_port=10000)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
async def origin_and_edge(redis: RedisServer) -> AsyncIterator[tuple[ClusterNode, ClusterNode, FakePlugin, FakePlugin]]:
    origin_plugin, edge_plugin = FakePlugin([town_hall()]), FakePlugin()
    origin, edge = node(redis, "origin", origin_plugin), node(redis, "edge", edge_plugin)
    yield origin, edge, origin_plugin, edge_plugin
    for cluster_node in (origin, edge):
        await cluster_node.stop()


async def test_a_remote_mountpoint_becomes_a_relay_mountpoint_with_its_origin(origin_and_edge: Any) -> None:
    origin, edge, _, edge_plugin = origin_and_edge
    await origin.heartbeat()
    await edge.heartbeat()
    relay = edge_plugin.mountpoints[1].config
    assert relay.relay is not None
    assert (relay.relay.origin_node, relay.relay.origin_url, relay.relay.origin_webrtc_address) == (
        "origin", "http://origin:8088", "127.0.0.1:10000",
    )  # fmt: skip
    assert relay.streams == town_hall().streams and relay.description == "town hall"
    # the origin does not describe it back, nor make a relay of its own mountpoint
    await origin.heartbeat()
    assert list(origin.view.mountpoints.values())[0].origin == "origin" and origin.relays == {}


async def test_redis_restarting_empty_keeps_the_relay_and_its_viewers(redis: RedisServer, origin_and_edge: Any) -> None:
    origin, edge, _, edge_plugin = origin_and_edge
    await origin.heartbeat()
    await edge.heartbeat()
    redis.stop()
    await edge.heartbeat()
    assert edge.health.up is False
    redis.start()
    await edge.heartbeat()  # before the origin writes itself again: the description is missing
    assert 1 in edge_plugin.mountpoints and edge_plugin.removed == []
    await origin.heartbeat()
    await edge.heartbeat()
    assert 1 in edge_plugin.mountpoints and edge_plugin.removed == []


async def test_an_edit_on_the_origin_reaches_the_relay_in_place(origin_and_edge: Any) -> None:
    origin, edge, origin_plugin, edge_plugin = origin_and_edge
    await origin.heartbeat()
    await edge.heartbeat()
    relay = edge_plugin.mountpoints[1]
    origin_plugin.mountpoints[1].config = town_hall(description="town hall, live")
    await origin.heartbeat()
    await edge.heartbeat()
    assert edge_plugin.mountpoints[1] is relay and relay.config.description == "town hall, live"
    assert edge_plugin.removed == []


async def test_a_relay_goes_a_ttl_after_its_description(origin_and_edge: Any) -> None:
    origin, edge, origin_plugin, edge_plugin = origin_and_edge
    await origin.heartbeat()
    await edge.heartbeat()
    del origin_plugin.mountpoints[1]  # destroyed on the origin: its key is deleted at the next heartbeat
    await origin.heartbeat()
    await edge.heartbeat()
    assert 1 in edge_plugin.mountpoints  # not before a TTL
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while 1 in edge_plugin.mountpoints and loop.time() < deadline:
        await edge.heartbeat()
        await asyncio.sleep(0.05)
    assert edge_plugin.removed == [1]
    assert edge.remote_mountpoints() == {}


async def test_a_local_mountpoint_with_the_same_id_wins(redis: RedisServer, origin_and_edge: Any) -> None:
    origin, _, _, _ = origin_and_edge
    local = FakePlugin([town_hall(description="the edge's own")])
    edge = node(redis, "edge-2", local)
    try:
        await origin.heartbeat()
        await edge.heartbeat()
        assert local.mountpoints[1].config.relay is None and local.mountpoints[1].config.description == "the edge's own"
        assert edge.relays == {}
    finally:
        await edge.stop()


async def test_two_processes_with_one_node_name_are_told(redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    first, second = node(redis, "edge", FakePlugin()), node(redis, "edge", FakePlugin())
    try:
        await first.heartbeat()
        await second.heartbeat()  # as a restarted node would: not yet a reason to complain
        assert "another node" not in caplog.text
        await first.heartbeat()
        await second.heartbeat()
        assert "another node writes its record under this node's name edge" in caplog.text
    finally:
        await first.stop()
        await second.stop()
