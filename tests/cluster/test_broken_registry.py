"""A registry that is not a working Redis: a peer that answers garbage, well-formed replies of the wrong
kind, an error, half a reply, nothing, or that drops the connection mid-call. Each time the node logs one
clear line, counts the failure by kind (``fanout_cluster_registry_failures``), keeps its mountpoints and
the viewers on them, and places new viewers on itself. Records that a real Redis holds but that are
forged or malformed are ignored, logged once per key and counted by reason. In-process: a fake RESP peer on
loopback (or a real redis-server) and the stand-in plugin and engine of test_node."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from fanout.cluster.node import ClusterNode
from fanout.cluster.placement import REGISTRY_DOWN
from fanout.cluster.records import registry_key, sign

from tests.cluster.test_node import FakePlugin, node, town_hall
from tests.support.cluster import RedisServer

DEADLINE = 10.0


@dataclass(frozen=True)
class Behaviour:
    name: str
    reply: bytes | None  # None: read the request and never answer
    close: bool  # close the connection after replying
    kind: str  # the failure counted


BEHAVIOURS = [
    Behaviour("garbage", b"\x00\xff not RESP at all\r\n", False, "InvalidResponse"),
    Behaviour("an integer to everything", b":1\r\n", False, "UnexpectedReply"),
    Behaviour("an error to everything", b"-ERR unknown command\r\n", False, "ResponseError"),
    Behaviour("half a bulk string, then gone", b"$100\r\nabc", True, "ConnectionError"),
    Behaviour("gone mid-call, without a word", b"", True, "ConnectionError"),
    Behaviour("silence", None, False, "TimeoutError"),
]


class BrokenRedis:
    """A TCP peer on 127.0.0.1 that reads whatever it is sent and answers as ``behaviour`` says."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> RedisServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return RedisServer(port=port)  # not started: its url names this peer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError):  # the node hangs up on garbage
            await self._answer(reader, writer)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            commands = data.count(b"\r\n*") + data.startswith(b"*")  # RESP commands are arrays: one reply each
            self.requests += commands
            if self.behaviour.reply is None:
                continue
            writer.write(self.behaviour.reply * (1 if self.behaviour.close else commands))
            await writer.drain()
            if self.behaviour.close:
                writer.close()
                return

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()


@pytest.fixture(params=BEHAVIOURS, ids=[behaviour.name for behaviour in BEHAVIOURS])
async def broken(request: pytest.FixtureRequest) -> AsyncIterator[tuple[BrokenRedis, ClusterNode, FakePlugin]]:
    peer = BrokenRedis(request.param)
    redis = await peer.start()
    plugin = FakePlugin([town_hall()])
    plugin.mountpoints[town_hall().id].viewers.update({1, 2, 3})
    cluster_node = node(redis, "alone", plugin)
    yield peer, cluster_node, plugin
    await cluster_node.stop()
    await peer.close()


async def wait_for(condition: object, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, f"not seen within {DEADLINE} s: {what}"
        await asyncio.sleep(0.05)


def failures(cluster_node: ClusterNode) -> dict[str, float]:
    family = next(metric for metric in cluster_node.collect() if metric.name == "fanout_cluster_registry_failures")
    return {sample.labels["error"]: sample.value for sample in family.samples if sample.name.endswith("_total")}


async def test_a_broken_registry_is_logged_once_counted_and_the_node_serves_alone(
    broken: tuple[BrokenRedis, ClusterNode, FakePlugin], caplog: pytest.LogCaptureFixture
) -> None:
    peer, cluster_node, plugin = broken
    caplog.set_level(logging.INFO, logger="fanout.cluster")
    await cluster_node.start()
    await wait_for(lambda: failures(cluster_node).get(peer.behaviour.kind, 0) >= 2, f"two {peer.behaviour.kind} counted")
    assert peer.requests >= 1
    lines = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING and record.name.startswith("fanout")]
    assert len(lines) == 1, lines  # one line for the change of state, none per heartbeat
    assert lines[0].startswith(f"cluster: the registry at redis://127.0.0.1:{peer_port(cluster_node)}/0 fails ({peer.behaviour.kind}")
    assert "serving viewers locally" in lines[0]
    assert not [record for record in caplog.records if record.exc_info]  # no traceback: a broken peer is not a bug here
    assert set(failures(cluster_node)) == {peer.behaviour.kind}
    gauge = next(metric for metric in cluster_node.collect() if metric.name == "fanout_cluster_registry_up")
    assert gauge.samples[0].value == 0
    # the node's own mountpoint and its viewers are untouched, and new viewers are placed here
    assert plugin.mountpoints[town_hall().id].viewers == {1, 2, 3} and plugin.removed == []
    placement = cluster_node.place("1")
    assert placement is not None and (placement.node.name, placement.reason) == ("alone", REGISTRY_DOWN)


def peer_port(cluster_node: ClusterNode) -> str:
    return cluster_node.settings.redis_url.rsplit(":", 1)[1].split("/")[0]


async def test_forged_and_malformed_records_are_ignored_logged_once_each_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    redis = RedisServer().start()
    try:
        intruder = sign(registry_key("another secret, not the cluster's"), {"kind": "node", "name": "intruder"})
        redis.set("fanout:fanout:node:intruder", intruder.decode())
        redis.set("fanout:fanout:node:garbage", "{not json")
        redis.set("fanout:fanout:mountpoint:origin:9", '{"body": "{}", "mac": "00"}')
        plugin = FakePlugin([town_hall()])
        cluster_node = node(redis, "edge", plugin)
        caplog.set_level(logging.INFO, logger="fanout.cluster")
        try:
            await cluster_node.start()
            await wait_for(lambda: refused(cluster_node)["forged"] >= 4 and refused(cluster_node)["malformed"] >= 2,
                           "several heartbeats' refusals counted")  # fmt: skip
            assert sorted(cluster_node.view.nodes) == ["edge"] and "9" not in cluster_node.view.mountpoints
            lines = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
            assert sorted(lines) == [  # once per key, however many heartbeats saw it
                "cluster: ignoring fanout:fanout:mountpoint:origin:9 in the registry: its signature does not match this node's cluster secret",
                "cluster: ignoring fanout:fanout:node:garbage in the registry: not JSON",
                "cluster: ignoring fanout:fanout:node:intruder in the registry: its signature does not match this node's cluster secret",
            ]
            assert plugin.removed == [] and cluster_node.health.up
        finally:
            await cluster_node.stop()
    finally:
        redis.stop()


def refused(cluster_node: ClusterNode) -> dict[str, float]:
    family = next(metric for metric in cluster_node.collect() if metric.name == "fanout_cluster_records_refused")
    return {sample.labels["reason"]: sample.value for sample in family.samples if sample.name.endswith("_total")}
