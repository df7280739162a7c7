"""The cluster's HTTP side, served by the HTTP transport next to the Janus API.

``GET /cluster/placement?mountpoint=<id>[&avoid=<node>,...]`` -> 200 and JSON
naming the node a new viewer should use (its Janus API over HTTP and
WebSocket, its WHEP endpoint), never one of ``avoid`` (the nodes a viewer just
lost, still in the view until their TTL runs out); 400 without a mountpoint,
404 for a mountpoint the cluster does not have, 503 when every node is full. WHEP: a ``POST`` to a node that is not the
best choice answers 307 to the chosen node's WHEP endpoint (RFC 9725 clients
follow it); the URL carries ``placed=1`` so that the chosen node serves the
viewer rather than placing it again.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fanout.cluster.node import ClusterNode
from fanout.cluster.placement import Placement

PLACEMENT_PATH = "/cluster/placement"
PLACED_QUERY = "placed"
RETRY_AFTER_SECONDS = "2"


class ClusterRoutes:
    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    def routes(self) -> list[web.RouteDef]:
        return [web.get(PLACEMENT_PATH, self._placement)]

    async def _placement(self, request: web.Request) -> web.Response:
        mountpoint = request.query.get("mountpoint", "")
        if not mountpoint:
            return _json(400, {"error": "missing mountpoint (GET /cluster/placement?mountpoint=<id>)"})
        if not self.node.knows(mountpoint):
            return _json(404, {"error": f"no mountpoint {mountpoint} in the cluster"})
        avoid = frozenset(name for name in request.query.get("avoid", "").split(",") if name)
        placement = self.node.place(mountpoint, avoid)
        if placement is None:
            return _json(503, {"error": "every node of the cluster is full"}, retry=True)
        return _json(200, placement_json(placement, mountpoint, asked=self.node.name))

    def whep_redirect(self, request: web.Request, mountpoint: str) -> web.Response | None:
        """What a WHEP POST to this node gets instead of a resource here: a 307 to the chosen node,
        a 503 when every node is full; None: this node serves it."""
        if request.query.get(PLACED_QUERY) or not self.node.knows(mountpoint):
            return None
        placement = self.node.place(mountpoint)
        if placement is None:
            return web.Response(status=503, text="every node of the cluster is full\n", headers={"Retry-After": RETRY_AFTER_SECONDS})
        if placement.node.name == self.node.name:
            return None
        return web.Response(status=307, headers={"Location": whep_url(placement, mountpoint), "Access-Control-Expose-Headers": "Location"})


def whep_url(placement: Placement, mountpoint: str) -> str:
    return f"{placement.node.public_url}/whep/endpoint/{mountpoint}?{PLACED_QUERY}=1"


def placement_json(placement: Placement, mountpoint: str, *, asked: str) -> dict[str, Any]:
    node = placement.node
    return {
        "mountpoint": mountpoint,
        "node": node.name,
        "reason": placement.reason,
        "local": node.name == asked,
        "janus_url": node.janus_url,
        "websocket_url": node.websocket_url,
        "whep_url": whep_url(placement, mountpoint),
        "load": node.load.load,
    }


def _json(status: int, body: dict[str, Any], *, retry: bool = False) -> web.Response:
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if retry else None
    return web.json_response(body, status=status, headers=headers)
