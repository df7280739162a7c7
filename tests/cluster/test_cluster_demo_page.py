"""The demo page in a cluster: opened on a node that takes no viewers, it asks placement and plays the
mountpoint from the chosen node with the real janus.js in Chromium, over HTTP and over WebSocket.
Redis, both nodes and the browser share a loopback-only namespace (127.0.0.2 and 127.0.0.3 are on lo)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.support.browser import chromium_in
from tests.support.cluster import ClusterNodeProcess, RedisServer, wait_until, write_node_config
from tests.support.netns import NetworkNamespace, loopback_namespace
from tests.support.server import DEMO_MOUNTPOINT

WATCH_SECONDS = 3


def placement_in(namespace: NetworkNamespace, url: str) -> dict[str, Any]:
    reply = subprocess.run(namespace.command("curl", "-s", "-f", url), capture_output=True, text=True)
    return json.loads(reply.stdout) if reply.returncode == 0 else {}  # type: ignore[no-any-return]


def test_the_demo_page_plays_from_the_node_placement_chooses(tmp_path: Path) -> None:
    with loopback_namespace() as namespace:
        redis = RedisServer(namespace=namespace).start()
        nodes: list[ClusterNodeProcess] = []
        try:
            for name, address, mountpoints, accept in (
                ("serving", "127.0.0.2", DEMO_MOUNTPOINT, True),
                ("front", "127.0.0.3", "", False),
            ):
                ports = write_node_config(tmp_path / name, name=name, address=address, redis_url=redis.url,
                                          mountpoints=mountpoints, accept_viewers=accept)  # fmt: skip
                nodes.append(ClusterNodeProcess(tmp_path / name, ports, name, namespace).start())
            serving, front = nodes
            placement_url = f"{front.ports.public_url}/cluster/placement?mountpoint=1"
            wait_until(lambda: placement_in(namespace, placement_url).get("node") == "serving", timeout=10,
                       what="front places viewers of mountpoint 1 on serving")  # fmt: skip
            with chromium_in(namespace, tmp_path) as browser:
                errors: list[str] = []
                pages = {}
                for transport in ("http", "ws"):
                    page = browser.new_page()
                    page.on("pageerror", lambda error: errors.append(str(error)))
                    page.goto(f"{front.ports.public_url}/?mountpoint=1&transport={transport}")
                    pages[transport] = page
                for page in pages.values():
                    page.wait_for_function("window.fanoutDemo && window.fanoutDemo.state === 'playing'", timeout=30_000)
                next(iter(pages.values())).wait_for_timeout(WATCH_SECONDS * 1000)
                for transport, page in pages.items():
                    placement = page.evaluate("window.fanoutDemo.placement")
                    assert placement["node"] == "serving" and placement["local"] is False, placement
                    figures = page.evaluate("window.fanoutDemo.stats()")
                    assert figures["frameWidth"] == 640 and figures["framesDecoded"] >= 20 * WATCH_SECONDS, (transport, figures)
                assert errors == [], errors
        finally:
            for cluster_node in nodes:
                cluster_node.stop()
            redis.stop()
