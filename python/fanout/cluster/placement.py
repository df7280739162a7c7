"""Which node a new viewer of a mountpoint is sent to (sans-IO).

The least loaded node that already serves viewers of the mountpoint (its relay
is warm: no extra copy from the origin, a fast first frame), else the least
loaded node. A node that takes no viewers (``accept_viewers = false``) or
whose load is at or over its ``max_load`` is never chosen; when no node is
left, the viewer is refused. On equal load the node asked wins (no redirect),
then names in order, so that every node chooses alike.

Loads are a heartbeat old: the viewers this node placed since then (``pending``)
are added at the node's own load per viewer, so that a burst of joins does not
all land on the node that was least loaded a second ago.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fanout.cluster.records import NodeRecord

RELAYING = "relaying"  # the chosen node already serves the mountpoint
LEAST_LOADED = "least_loaded"  # no node with room serves it yet
REGISTRY_DOWN = "registry_down"  # Redis cannot be read: the node asked serves the viewer itself


@dataclass(frozen=True)
class Placement:
    node: NodeRecord
    reason: str  # RELAYING, LEAST_LOADED or REGISTRY_DOWN


def estimated_load(node: NodeRecord, pending: int = 0) -> float:
    """The node's load with ``pending`` more viewers, at its load per viewer (unknown with none yet)."""
    load = node.load
    return load.load + pending * load.load / load.viewers if load.viewers and pending else load.load


def place(
    nodes: Iterable[NodeRecord], mountpoint: str, asked: str, pending: Mapping[str, int] | None = None
) -> Placement | None:
    """The node for a new viewer of ``mountpoint`` (its id as text), asked of node ``asked``;
    None when every node is full or takes no viewers."""
    pending = pending or {}
    loads = {node.name: estimated_load(node, pending.get(node.name, 0)) for node in nodes if node.accept_viewers}
    candidates = [node for node in nodes if node.name in loads and loads[node.name] < node.max_load]
    if not candidates:
        return None
    relaying = [node for node in candidates if mountpoint in node.watched]
    pool = relaying or candidates
    chosen = min(pool, key=lambda node: (loads[node.name], node.name != asked, node.name))
    return Placement(chosen, RELAYING if relaying else LEAST_LOADED)
