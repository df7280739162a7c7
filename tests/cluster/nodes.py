"""Cluster nodes for end-to-end tests: real fanout processes, each on its own 127.0.0.x,
configured by hand (no Redis): an origin with a mountpoint, edges with relay mountpoints."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp

from tests.support.ports import free_ports
from tests.support.server import TEST_MAX_SEND_DELAY_MS

SECRET = "the cluster secret of these tests"
ORIGIN_IP = "127.0.0.2"
EDGE_IP = "127.0.0.3"

ORIGIN_MOUNTPOINT = """
match: {
	type = "rtp"
	id = 1
	description = "the match"
	testsource = true
	media = (
		{ type = "audio", mid = "a", port = 0, pt = 111, codec = "opus" },
		{ type = "video", mid = "v", port = 0, pt = 96, codec = "vp8" }
	)
}
"""


def relay_mountpoint(origin_url: str, mountpoint_id: int = 1, origin_mountpoint: int = 1) -> str:
    """An edge's relay mountpoint of the origin's ORIGIN_MOUNTPOINT, as README shows it."""
    return f"""
match-relay: {{
	type = "relay"
	id = {mountpoint_id}
	description = "the match, relayed"
	relay_url = "{origin_url}"
	relay_id = {origin_mountpoint}
	relay_node = "origin"
	media = (
		{{ type = "audio", mid = "a", pt = 111, codec = "opus" }},
		{{ type = "video", mid = "v", pt = 96, codec = "vp8" }}
	)
}}
"""


@dataclass(frozen=True)
class Node:
    name: str
    ip: str
    folder: Path
    http_port: int
    webrtc_port: int
    metrics_port: int

    @property
    def janus_url(self) -> str:
        return f"http://{self.ip}:{self.http_port}/janus"

    @property
    def control_url(self) -> str:
        return f"http://{self.ip}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.ip}:{self.metrics_port}/metrics"


def write_node(
    folder: Path, name: str, ip: str, mountpoints: str, *, secret: str = SECRET, relay_linger: float = 2.0
) -> Node:
    """A node's configuration folder: HTTP, WebRTC and metrics on ``ip``, the cluster group
    with ``secret`` and no Redis."""
    http_port, webrtc_port, metrics_port = free_ports(3)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "janus.jcfg").write_text(
        f"""general: {{ session_timeout = 60 }}
nat: {{ nat_1_1_mapping = "{ip}" }}
fanout: {{
	webrtc_port = {webrtc_port}
	webrtc_interface = "{ip}"
	metrics_port = {metrics_port}
	metrics_interface = "{ip}"
	engine_cores = "0"
	engine_pin = false
	max_send_delay_ms = {TEST_MAX_SEND_DELAY_MS}
}}
cluster: {{
	secret = "{secret}"
	node_name = "{name}"
	relay_address = "{ip}"
	relay_linger = {relay_linger}
}}
"""
    )
    (folder / "janus.transport.http.jcfg").write_text(
        f'general: {{ http = true\n ip = "{ip}"\n port = {http_port}\n base_path = "/janus" }}\n'
    )
    (folder / "janus.transport.websockets.jcfg").write_text("general: { ws = false }\n")
    (folder / "janus.plugin.streaming.jcfg").write_text("general: {\n}\n" + mountpoints)
    return Node(name, ip, folder, http_port, webrtc_port, metrics_port)


async def metric(node: Node, name: str, labels: str = "") -> float | None:
    """One sample of the node's /metrics (``labels``: e.g. 'mountpoint="1"'); None if absent."""
    async with aiohttp.ClientSession() as http, http.get(node.metrics_url) as response:
        text = await response.text()
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)"
    found = re.search("^" + pattern + "$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], timeout: float = 20.0, what: str = "the condition"
) -> T:
    """``probe()``'s first value that ``accept`` takes, asked again until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s (last: {value!r})")
        await asyncio.sleep(0.1)
