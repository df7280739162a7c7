"""Media through the cluster: the origin (127.0.0.2, the built-in test source, no viewers of its own)
and two edges (127.0.0.3, 127.0.0.4). A Janus API viewer (aiortc) watches on an edge and decodes what
the edge's relay mountpoint pulls from the origin; placement then prefers the edge that already relays
it; a WHEP player (aiortc) posting to the origin follows the 307 to that edge and decodes there."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import aioice.ice
import pytest

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.cluster import ClusterNodeProcess, RedisServer, wait_until, write_node_config
from tests.support.janus_client import janus_session
from tests.support.server import DEMO_MOUNTPOINT
from tests.whep.test_whep import WhepPlayer

NODES = ("origin", "edge-a", "edge-b")


@pytest.fixture
def loopback_only_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, ClusterNodeProcess]]:
    redis = RedisServer().start()
    nodes: dict[str, ClusterNodeProcess] = {}
    try:
        for name, address in zip(NODES, ("127.0.0.2", "127.0.0.3", "127.0.0.4"), strict=True):
            origin = name == "origin"
            ports = write_node_config(tmp_path / name, name=name, address=address, redis_url=redis.url,
                                      mountpoints=DEMO_MOUNTPOINT if origin else "", accept_viewers=not origin)  # fmt: skip
            nodes[name] = ClusterNodeProcess(tmp_path / name, ports, name).start()
        for name in ("edge-a", "edge-b"):
            wait_until(lambda name=name: "served here through a relay" in nodes[name].output, timeout=10,  # type: ignore[misc]
                       what=f"{name} makes its relay mountpoint")  # fmt: skip
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()
        redis.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.usefixtures("loopback_only_ice")
async def test_a_viewer_on_an_edge_decodes_the_origins_stream_and_whep_follows_to_that_edge(
    cluster: dict[str, ClusterNodeProcess], http: aiohttp.ClientSession
) -> None:
    edge_a = cluster["edge-a"]
    listed = edge_a.streaming({"request": "list"})["list"]
    assert [(entry["id"], entry["description"]) for entry in listed] == [(1, "test pattern")]

    async with janus_session(edge_a.ports.janus_url) as client:
        viewer = AiortcViewer(client)
        try:
            await viewer.watch(1)
            media = await viewer.wait_for_frames(video=30, audio=30, timeout=30)
            assert media.video_sizes == {(640, 360)}

            # edge-a now serves mountpoint 1: placement prefers it, wherever it is asked (each node
            # reads the others' records from Redis as they refresh them: edge-b may see it a moment later)
            def relaying() -> bool:
                status, placement = cluster["origin"].placement("1")
                return status == 200 and placement["node"] == "edge-a" and placement["reason"] == "relaying"

            wait_until(relaying, timeout=10, what="the origin places viewers on the relaying edge")
            wait_until(lambda: cluster["edge-b"].placement("1")[1]["node"] == "edge-a", timeout=10,
                       what="edge-b places viewers on the relaying edge too")  # fmt: skip

            player = WhepPlayer(http, f"{cluster['origin'].ports.public_url}/whep/endpoint/1")
            try:
                reply = await player.play()
                assert reply.status == 201, await reply.text()
                assert reply.history[0].status == 307
                assert str(reply.url) == f"{edge_a.ports.public_url}/whep/endpoint/1?placed=1"
                await player.frames(video=30, audio=30)
                assert edge_a.streaming({"request": "info", "id": 1})["info"]["viewers"] == 2
            finally:
                await player.pc.close()
        finally:
            await viewer.close()


@pytest.mark.usefixtures("loopback_only_ice")
async def test_an_origin_restarted_resumes_and_the_edges_viewer_keeps_its_peerconnection(
    cluster: dict[str, ClusterNodeProcess],
) -> None:
    origin, edge_a = cluster["origin"], cluster["edge-a"]
    async with janus_session(edge_a.ports.janus_url) as client:
        viewer = AiortcViewer(client)
        try:
            await viewer.watch(1)
            await viewer.wait_for_frames(video=30, audio=30, timeout=30)
            origin.kill()
            restarted = ClusterNodeProcess(origin.folder, origin.ports, "origin").start()  # same folder, same ports
            cluster["origin"] = restarted  # the fixture stops it
            frames = viewer.media.video_frames
            await viewer.wait_for_frames(video=frames + 60, audio=0, timeout=30)
            assert viewer.pc.connectionState == "connected"
            assert "its relay here closes" not in edge_a.output  # the same description: the relay mountpoint stayed
            assert edge_a.streaming({"request": "info", "id": 1})["info"]["viewers"] == 1
        finally:
            await viewer.close()
