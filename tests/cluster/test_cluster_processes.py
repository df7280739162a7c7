"""A real cluster: redis-server, an origin (127.0.0.2) and two edges (127.0.0.3, 127.0.0.4), each a
``fanout serve`` process. They find each other in Redis, list each other's mountpoints, place viewers,
survive Redis going away, lose a killed node within one TTL, and ignore a node with another secret."""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cluster import (
    HEARTBEAT_INTERVAL,
    NODE_TTL,
    ClusterNodeProcess,
    RedisServer,
    wait_until,
    write_node_config,
)

MOUNTPOINT = """
town-hall: {
	type = "rtp"
	id = 1
	description = "town hall"
	media = (
		{ type = "audio", mid = "a", port = 0, pt = 111, codec = "opus" },
		{ type = "video", mid = "v", port = 0, pt = 96, codec = "vp8" }
	)
}
"""
ALL = ["edge-a", "edge-b", "origin"]
# A node gone without a word leaves the others' view when its keys expire (one TTL), seen at
# their next heartbeat; a generous margin for a loaded machine.
LEAVE_DEADLINE = NODE_TTL + HEARTBEAT_INTERVAL + 2.0


@dataclass
class Cluster:
    redis: RedisServer
    origin: ClusterNodeProcess
    edge_a: ClusterNodeProcess
    edge_b: ClusterNodeProcess

    @property
    def nodes(self) -> list[ClusterNodeProcess]:
        return [self.origin, self.edge_a, self.edge_b]


def start_node(tmp_path: Path, redis: RedisServer, name: str, address: str, **options: object) -> ClusterNodeProcess:
    ports = write_node_config(tmp_path / name, name=name, address=address, redis_url=redis.url, **options)  # type: ignore[arg-type]
    return ClusterNodeProcess(tmp_path / name, ports, name).start()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    redis = RedisServer().start()
    started: list[ClusterNodeProcess] = []
    try:
        started.append(start_node(tmp_path, redis, "origin", "127.0.0.2", mountpoints=MOUNTPOINT, accept_viewers=False))
        started.append(start_node(tmp_path, redis, "edge-a", "127.0.0.3"))
        started.append(start_node(tmp_path, redis, "edge-b", "127.0.0.4"))
        found = Cluster(redis, *started)
        for node in found.nodes:
            wait_until(lambda node=node: node.node_names() == ALL, timeout=10, what=f"{node.name} sees every node")  # type: ignore[misc]
        yield found
    finally:
        for node in started:
            node.stop()
        redis.stop()


def test_every_node_sees_every_node_with_its_addresses_and_load(cluster: Cluster) -> None:
    reply = cluster.edge_a.cluster_nodes()
    assert reply["cluster"] == "fanout" and reply["registry_up"] is True
    nodes = {node["name"]: node for node in reply["nodes"]}
    assert reply["nodes"][0]["name"] == "edge-a" and nodes["edge-a"]["self"] is True
    origin = nodes["origin"]
    assert origin["public_url"] == cluster.origin.ports.public_url
    assert origin["janus_url"] == cluster.origin.ports.janus_url
    assert origin["websocket_url"] == f"ws://127.0.0.2:{cluster.origin.ports.ws}"
    assert origin["webrtc_address"] == f"127.0.0.2:{cluster.origin.ports.webrtc}"
    assert origin["accept_viewers"] is False
    assert set(origin["load"]) == {"viewers", "sent_gbps", "worker_busy", "load"}
    assert 0 <= origin["load"]["load"] <= 1


def test_an_edge_lists_and_describes_the_origins_mountpoint(cluster: Cluster) -> None:
    def listed() -> list[dict[str, object]]:
        return [entry for entry in cluster.edge_b.streaming({"request": "list"})["list"] if entry["id"] == 1]

    entries = wait_until(listed, timeout=10, what="mountpoint 1 in edge-b's list")
    assert len(entries) == 1 and entries[0]["description"] == "town hall"
    assert [media["mid"] for media in entries[0]["media"]] == ["a", "v"]  # type: ignore[attr-defined]
    info = cluster.edge_b.streaming({"request": "info", "id": 1})["info"]
    assert info["description"] == "town hall"
    assert [(media["codec"], media["pt"]) for media in info["media"]] == [("opus", 111), ("vp8", 96)]
    assert cluster.edge_b.streaming({"request": "info", "id": 2})["error_code"] == 455  # no such mountpoint


def test_placement_sends_viewers_to_an_edge_and_whep_answers_307_there(cluster: Cluster) -> None:
    status, placement = cluster.origin.placement("1")  # the origin takes no viewers
    assert status == 200, placement
    chosen = {"edge-a": cluster.edge_a, "edge-b": cluster.edge_b}[placement["node"]]
    assert placement["janus_url"] == chosen.ports.janus_url
    assert placement["websocket_url"] == f"ws://{chosen.ports.address}:{chosen.ports.ws}"
    assert placement["whep_url"] == f"{chosen.ports.public_url}/whep/endpoint/1?placed=1"
    assert placement["local"] is False
    # a viewer that just lost a node asks placement to leave it out (it stays in the view for a TTL)
    other = "edge-b" if placement["node"] == "edge-a" else "edge-a"
    assert cluster.origin.placement(f"1&avoid={placement['node']}")[1]["node"] == other
    assert cluster.origin.placement("1&avoid=edge-a,edge-b")[0] == 503
    assert cluster.origin.placement("2") == (404, {"error": "no mountpoint 2 in the cluster"})
    assert cluster.origin.placement("")[0] == 400

    request = urllib.request.Request(
        f"{cluster.origin.ports.public_url}/whep/endpoint/1", data=b"v=0\r\n", headers={"Content-Type": "application/sdp"}
    )
    opener = urllib.request.build_opener(NoRedirect())
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(request, timeout=5)
    assert redirect.value.code == 307
    assert redirect.value.headers["Location"] == placement["whep_url"]

    metrics = cluster.origin.metrics()
    assert re.search(rf'fanout_cluster_placements_total{{chosen="{placement["node"]}",node="origin",reason="least_loaded"}} [1-9]', metrics), metrics
    assert 'fanout_cluster_placement_refusals_total{node="origin",reason="full"} 1.0' in metrics
    assert 'fanout_cluster_nodes{node="origin"} 3.0' in metrics
    assert 'fanout_sessions{node="origin"}' in metrics  # every metric carries the node's name


def test_a_node_asked_keeps_the_viewer_when_it_is_the_best_choice(cluster: Cluster) -> None:
    status, placement = cluster.edge_a.placement("1")
    # both edges idle: equal load, the node asked wins unless the other already serves the mountpoint
    assert status == 200 and placement["node"] == "edge-a" and placement["local"] is True


def test_a_killed_edge_leaves_placement_within_one_ttl(cluster: Cluster) -> None:
    cluster.edge_b.kill()
    killed_at = time.monotonic()
    wait_until(lambda: cluster.origin.node_names() == ["edge-a", "origin"], timeout=LEAVE_DEADLINE, what="edge-b gone")
    gone_after = time.monotonic() - killed_at
    assert gone_after <= LEAVE_DEADLINE
    for _ in range(5):
        assert cluster.origin.placement("1")[1]["node"] == "edge-a"
    assert not [key for key in cluster.redis.keys() if "edge-b" in key]  # its keys expired


def test_a_stopped_node_leaves_at_once(cluster: Cluster) -> None:
    cluster.edge_b.stop()  # SIGTERM: it removes its keys
    assert not [key for key in cluster.redis.keys() if "edge-b" in key]


def test_redis_gone_nodes_keep_serving_and_the_cluster_heals_when_it_returns(cluster: Cluster) -> None:
    cluster.redis.stop()
    wait_until(lambda: "registry_up" in cluster.edge_a.cluster_nodes() and not cluster.edge_a.cluster_nodes()["registry_up"],
               timeout=10, what="edge-a sees Redis down")  # fmt: skip
    # served locally: the node asked places the viewer on itself, the Janus API answers
    status, placement = cluster.edge_a.placement("1")
    assert (status, placement["node"], placement["reason"]) == (200, "edge-a", "registry_down")
    assert [entry["id"] for entry in cluster.edge_a.streaming({"request": "list"})["list"]] == [1]
    metrics = cluster.edge_a.metrics()
    assert 'fanout_cluster_registry_up{node="edge-a"} 0.0' in metrics
    assert re.search(r'fanout_cluster_registry_failures_total\{error="[A-Za-z]+",node="edge-a"\} [1-9]', metrics), metrics
    wait_until(lambda: "fails (" in cluster.edge_a.output, timeout=5, what="the log line")
    failures_logged = cluster.edge_a.output.count("cluster: the registry at")

    cluster.redis.start()  # empty: every node writes itself again at its next heartbeat
    for node in cluster.nodes:
        wait_until(lambda node=node: node.node_names() == ALL and node.cluster_nodes()["registry_up"], timeout=10,  # type: ignore[misc]
                   what=f"{node.name} sees the whole cluster again")  # fmt: skip
    assert "the registry at redis://127.0.0.1" in cluster.edge_a.output and "answers again" in cluster.edge_a.output
    assert cluster.edge_a.output.count("cluster: the registry at") == failures_logged + 1  # one line per change
    assert cluster.edge_a.placement("1")[1]["reason"] != "registry_down"


def test_a_node_with_another_secret_is_not_part_of_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    intruder = start_node(tmp_path, cluster.redis, "intruder", "127.0.0.5", secret="not-the-cluster-secret")
    try:
        wait_until(lambda: "ignoring fanout:fanout:node:intruder" in cluster.edge_a.output, timeout=10, what="refusal logged")
        assert cluster.edge_a.node_names() == ALL
        assert intruder.node_names() == ["intruder"]  # and it trusts none of theirs
        assert re.search(r'fanout_cluster_records_refused_total\{node="edge-a",reason="forged"\} [1-9]', cluster.edge_a.metrics())
        for _ in range(5):
            assert cluster.edge_a.placement("1")[1]["node"] != "intruder"
    finally:
        intruder.stop()


def test_a_forged_mountpoint_record_is_ignored(cluster: Cluster) -> None:
    cluster.redis.set("fanout:fanout:mountpoint:origin:9", '{"body": "{}", "mac": "00"}')
    cluster.redis.set("fanout:fanout:node:garbage", "{not json")
    wait_until(lambda: "ignoring fanout:fanout:mountpoint:origin:9" in cluster.edge_a.output, timeout=10, what="refusal logged")
    wait_until(lambda: "ignoring fanout:fanout:node:garbage" in cluster.edge_a.output, timeout=10, what="refusal logged")
    assert cluster.edge_a.node_names() == ALL
    assert [entry["id"] for entry in cluster.edge_a.streaming({"request": "list"})["list"]] == [1]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_a_redis_that_answers_garbage_is_logged_and_the_node_serves_alone(tmp_path: Path) -> None:
    garbage = GarbageServer()
    redis = RedisServer(port=garbage.port)  # not started: the garbage server holds the port
    try:
        node = start_node(tmp_path, redis, "alone", "127.0.0.3", mountpoints=MOUNTPOINT)
        try:
            wait_until(lambda: "fails (" in node.output, timeout=10, what="the registry failure logged")
            assert node.output.count("cluster: the registry at") == 1
            assert [entry["id"] for entry in node.streaming({"request": "list"})["list"]] == [1]
            assert node.placement("1")[1]["reason"] == "registry_down"
        finally:
            node.stop()
    finally:
        garbage.close()


class GarbageServer:
    """A TCP server on a free loopback port that answers anything with bytes that are not RESP."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            with connection:
                try:
                    connection.recv(4096)
                    connection.sendall(b"HTTP/1.1 200 OK\r\n\r\n\x00\xff garbage\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self.socket.close()
