"""Placement: the least loaded node that already serves the mountpoint, else the least loaded."""

import dataclasses

from fanout.cluster.placement import LEAST_LOADED, RELAYING, place
from fanout.cluster.records import NodeLoad, NodeRecord


def node(name: str, load: float, *, watched: tuple[str, ...] = (), accept_viewers: bool = True) -> NodeRecord:
    return NodeRecord(
        name=name,
        public_url=f"http://{name}:8088",
        janus_url=f"http://{name}:8088/janus",
        websocket_url=None,
        relay_address="127.0.0.1",
        webrtc_address="127.0.0.1:10000",
        accept_viewers=accept_viewers,
        max_load=0.8,
        load=NodeLoad(viewers=0, sent_gbps=0.0, worker_busy=load, load=load),
        watched=watched,
    )


def chosen(nodes: list[NodeRecord], asked: str = "a") -> tuple[str, str] | None:
    placement = place(nodes, "1", asked)
    return None if placement is None else (placement.node.name, placement.reason)


def test_the_least_loaded_node_when_none_serves_the_mountpoint() -> None:
    assert chosen([node("a", 0.5), node("b", 0.2), node("c", 0.3)]) == ("b", LEAST_LOADED)


def test_a_node_that_already_relays_the_mountpoint_wins_over_a_less_loaded_one() -> None:
    assert chosen([node("a", 0.5), node("b", 0.2), node("c", 0.6, watched=("1",))]) == ("c", RELAYING)
    assert chosen([node("b", 0.4, watched=("1",)), node("c", 0.3, watched=("1",))]) == ("c", RELAYING)


def test_a_node_over_max_load_is_never_chosen() -> None:
    assert chosen([node("a", 0.5), node("b", 0.8, watched=("1",))]) == ("a", LEAST_LOADED)
    assert chosen([node("a", 0.9), node("b", 0.95)]) is None


def test_a_node_that_takes_no_viewers_is_never_chosen() -> None:
    origin = node("origin", 0.0, watched=("1",), accept_viewers=False)
    assert chosen([origin, node("edge", 0.7)]) == ("edge", LEAST_LOADED)
    assert chosen([origin]) is None


def test_on_equal_load_the_node_asked_keeps_the_viewer_then_names_decide() -> None:
    nodes = [node("a", 0.25), node("b", 0.25), node("c", 0.25)]
    assert chosen(nodes, asked="b") == ("b", LEAST_LOADED)
    assert chosen(nodes, asked="elsewhere") == ("a", LEAST_LOADED)


def test_load_is_compared_to_each_nodes_own_max_load() -> None:
    big = dataclasses.replace(node("big", 0.85), max_load=0.95)
    assert chosen([node("a", 0.9), big]) == ("big", LEAST_LOADED)


def loaded(name: str, load: float, viewers: int, **options: object) -> NodeRecord:
    record = node(name, load, **options)  # type: ignore[arg-type]
    return dataclasses.replace(record, load=dataclasses.replace(record.load, viewers=viewers))


def test_viewers_placed_since_the_last_heartbeat_count_at_the_nodes_load_per_viewer() -> None:
    nodes = [loaded("a", 0.2, 100), loaded("b", 0.3, 100)]  # 0.002 per viewer on a
    assert place(nodes, "1", "x", {"a": 49}).node.name == "a"  # type: ignore[union-attr]  # 0.298
    assert place(nodes, "1", "x", {"a": 51}).node.name == "b"  # type: ignore[union-attr]  # 0.302
    assert place(nodes, "1", "x", {"a": 300, "b": 250}) is None  # 0.8 and 1.05: both full


def test_a_node_with_no_viewers_yet_has_no_load_per_viewer_to_add() -> None:
    assert place([loaded("a", 0.0, 0)], "1", "x", {"a": 1000}).node.name == "a"  # type: ignore[union-attr]
