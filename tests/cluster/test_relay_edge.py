"""The edge's side of the relay against a real origin (engine, plugin, endpoint, routes):
when it asks, what it attaches, how it follows viewers, lingers, and survives an origin
that forgets it or cannot be reached. The edge's engine is a recording fake here; the
process tests (test_relay_processes.py) run the real one."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fanout._engine import Engine
from fanout.cluster.relay import RelayEdge, relay_config
from fanout.cluster.sealed import Sealer
from fanout.plugins.streaming.config import MountpointConfigError, RelaySource, parse_mountpoint
from fanout.plugins.streaming.mountpoint import Mountpoint
from fanout.plugins.streaming.plugin import StreamingPlugin

from tests.cluster.test_relay_origin import MOUNTPOINT, SECRET, Origin, origin  # noqa: F401 (the fixture)
from tests.cluster.nodes import relay_mountpoint
from tests.support.ports import free_ports
from tests.support.server import FanoutProcess, write_config


@dataclass
class RecordingEngine:
    """What the edge asks of its engine's publisher link."""

    attached: list[dict[str, Any]] = field(default_factory=list)
    detached: list[int] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def attach_publisher(self, mountpoint_id: int, socket_fd: int, srtp_profile: str, local_master_key: bytes,
                         remote_master_key: bytes, routes: list[dict[str, Any]]) -> None:  # fmt: skip
        self.attached.append({"mountpoint": mountpoint_id, "profile": srtp_profile, "local": local_master_key,
                              "remote": remote_master_key, "routes": routes})  # fmt: skip
        self.calls.append("attach")

    def detach_publisher(self, mountpoint_id: int) -> None:
        self.detached.append(mountpoint_id)
        self.calls.append("detach")


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.02)


def edge_mountpoint(origin_url: str) -> Mountpoint:
    config, _ = parse_mountpoint("m", MOUNTPOINT)
    return Mountpoint(relay_config(config, RelaySource(origin_node="origin", origin_url=origin_url)), 9, [], 0.0)


def relay_edge(engine: RecordingEngine, *, linger: float = 0.2) -> RelayEdge:
    return RelayEdge(engine, Sealer(SECRET), node_name="edge-1", relay_address="127.0.0.1", linger=linger)  # type: ignore[arg-type]


async def test_the_first_viewer_pulls_the_relay_and_the_last_one_lets_it_go_after_the_linger(origin: Origin) -> None:
    engine = RecordingEngine()
    edge = relay_edge(engine)
    mountpoint = edge_mountpoint(origin.url)
    edge.opened(mountpoint)
    assert origin.relays() == 0  # no viewer: nothing pulled
    mountpoint.add_viewer(1)
    await until(lambda: len(engine.attached) == 1)
    assert origin.relays() == 1
    (attached,) = engine.attached
    assert attached["mountpoint"] == 9 and attached["profile"] == "AEAD_AES_128_GCM"
    assert [route["index"] for route in attached["routes"]] == [0, 1, 1 + 65536, 1 + 2 * 65536]
    assert len({route["ssrc"] for route in attached["routes"]}) == 4

    mountpoint.add_viewer(2)
    mountpoint.remove_viewer(1)
    mountpoint.remove_viewer(2)
    mountpoint.add_viewer(3)  # back within the linger: the relay stays
    await asyncio.sleep(0.4)
    assert origin.relays() == 1 and engine.detached == []
    mountpoint.remove_viewer(3)
    await until(lambda: origin.relays() == 0)
    assert engine.detached == [9] and origin.relay.counts["torn_down"] == 1
    await edge.stop()


async def test_an_origin_that_forgets_the_relay_is_asked_again_with_new_keys(origin: Origin) -> None:
    engine = RecordingEngine()
    edge = relay_edge(engine)
    mountpoint = edge_mountpoint(origin.url)
    edge.opened(mountpoint)
    mountpoint.add_viewer(1)
    await until(lambda: len(engine.attached) == 1)
    origin.relay.close()  # as a restarted origin: it knows no relay
    await until(lambda: len(engine.attached) == 2)
    first, second = engine.attached
    assert engine.detached == [9], "detached while it asked again: the new keys' packets wait in the socket"
    assert first["local"] != second["local"] and first["routes"] == second["routes"]
    assert origin.relays() == 1
    edge.closed(mountpoint)
    await edge.stop()
    assert origin.relays() == 0


async def test_an_unreachable_origin_is_asked_again_until_it_answers(origin: Origin) -> None:
    engine = RecordingEngine()
    edge = relay_edge(engine)
    mountpoint = edge_mountpoint(f"http://127.0.0.1:{free_ports(1)[0]}")
    edge.opened(mountpoint)
    mountpoint.add_viewer(1)
    pull = edge.pulls[mountpoint.id]
    await until(lambda: pull.requests >= 3)
    assert engine.attached == []
    await edge.stop()


async def test_an_edge_with_another_secret_is_refused_and_attaches_nothing(origin: Origin) -> None:
    engine = RecordingEngine()
    edge = RelayEdge(engine, Sealer("another secret entirely"), node_name="edge-1", relay_address="127.0.0.1",  # type: ignore[arg-type]
                     linger=0.2)  # fmt: skip
    mountpoint = edge_mountpoint(origin.url)
    edge.opened(mountpoint)
    mountpoint.add_viewer(1)
    await until(lambda: origin.relay.sealer.refusals["unauthentic"] >= 2)
    assert engine.attached == [] and origin.relays() == 0
    await edge.stop()


async def test_a_viewer_right_after_the_linger_gets_a_new_relay_attached_after_the_old_one_let_go(origin: Origin) -> None:
    engine = RecordingEngine()
    edge = relay_edge(engine, linger=0.05)
    mountpoint = edge_mountpoint(origin.url)
    edge.opened(mountpoint)
    mountpoint.add_viewer(1)
    await until(lambda: len(engine.attached) == 1)
    pull = edge.pulls[mountpoint.id]
    mountpoint.remove_viewer(1)
    await until(lambda: pull.task is None)  # the linger is over: the relay is being torn down
    mountpoint.add_viewer(2)
    await until(lambda: len(engine.attached) == 2 and origin.relays() == 1 and origin.relay.counts["torn_down"] == 1)
    assert engine.calls == ["attach", "detach", "attach"]
    await edge.stop()


def test_a_relay_mountpoint_on_a_node_without_the_cluster_secret_is_refused(tmp_path: Path) -> None:
    """Without janus.jcfg's cluster group the edge has no secret to ask an origin with."""
    folder = tmp_path / "config"
    write_config(folder, relay_mountpoint("http://127.0.0.2:8088"))
    with pytest.raises(RuntimeError) as failed:
        FanoutProcess(folder).start()
    assert "relay mountpoint(s) 1 need janus.jcfg's cluster group" in str(failed.value)


async def test_creating_a_relay_mountpoint_without_the_cluster_secret_says_why() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as webrtc:
        webrtc.bind(("127.0.0.1", 0))
        engine = Engine(webrtc.fileno())
        try:
            plugin = StreamingPlugin(engine, [])
            config, _ = parse_mountpoint("m", MOUNTPOINT)
            relay = relay_config(config, RelaySource(origin_node="origin", origin_url="http://127.0.0.2:8088"))
            with pytest.raises(MountpointConfigError, match="cluster group"):
                plugin.add_mountpoint(relay)
            assert plugin.mountpoints == {}
        finally:
            engine.close()
