"""Admission control end to end: with ``max_viewers = 2``, the third viewer is refused (Janus API:
error 470 with ``retry_after``; WHEP: 503 with Retry-After), counted in /metrics, and once a viewer
leaves a new one is admitted and decodes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient, janus_session
from tests.support.ports import free_ports
from tests.support.server import DEMO_MOUNTPOINT, FanoutProcess, ServerAddresses, write_config

pytestmark = pytest.mark.usefixtures("loopback_only_ice")

REASON = "Too many viewers on this node (2 of max_viewers 2); try again later"
REFUSAL = {"streaming": "event", "error_code": 470, "error": REASON, "retry_after": 5}


@pytest.fixture
def limited_server(tmp_path: Path) -> Iterator[tuple[ServerAddresses, str]]:
    addresses = write_config(tmp_path, DEMO_MOUNTPOINT)
    (metrics_port,) = free_ports(1)
    path = tmp_path / "janus.jcfg"
    path.write_text(path.read_text().replace("fanout: {\n", f"fanout: {{\n\tmax_viewers = 2\n\tmetrics_port = {metrics_port}\n", 1))
    with FanoutProcess(tmp_path):
        yield addresses, f"http://127.0.0.1:{metrics_port}/metrics"


async def refused_count(http: aiohttp.ClientSession, metrics_url: str) -> float:
    async with http.get(metrics_url) as reply:
        for line in (await reply.text()).splitlines():
            if line.startswith('fanout_viewers_refused_total{limit="max_viewers"}'):
                return float(line.split()[-1])
    raise AssertionError("fanout_viewers_refused_total is not in /metrics")


async def whep_offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def test_the_viewer_past_max_viewers_is_refused_until_one_leaves(limited_server: tuple[ServerAddresses, str]) -> None:
    addresses, metrics_url = limited_server
    async with janus_session(addresses.janus_url) as janus, aiohttp.ClientSession() as http:
        first, second = AiortcViewer(janus), AiortcViewer(janus)
        third = AiortcViewer(janus)
        whep_pc, offer = await whep_offer()
        try:
            await first.watch(1)
            await second.watch(1)
            await second.wait_for_frames(video=5, audio=5)

            third.handle_id = await janus.attach()
            ack = await janus.message(third.handle_id, {"request": "watch", "id": 1})
            assert ack["janus"] == "ack", ack
            refusal = await third.plugin_event()
            assert refusal["plugindata"]["data"] == REFUSAL
            assert "jsep" not in refusal

            whep_url = f"http://127.0.0.1:{addresses.http_port}/whep/endpoint/1"
            async with http.post(whep_url, data=offer, headers={"Content-Type": "application/sdp"}) as reply:
                assert reply.status == 503
                assert reply.headers["Retry-After"] == "5"
                assert await reply.text() == REASON + "\n"
            assert await refused_count(http, metrics_url) == 2

            await first.close()
            await janus.handle_request(first.handle_id, "detach")
            await third.watch(1)  # the same handle, refused before, is admitted now
            await third.wait_for_frames(video=5, audio=5)
        finally:
            for viewer in (first, second, third):
                await viewer.close()
            await whep_pc.close()


async def test_without_limits_nobody_is_refused(janus_http: JanusHttpClient) -> None:
    viewers = [AiortcViewer(janus_http) for _ in range(3)]
    try:
        for viewer in viewers:
            await viewer.watch(1)
        await viewers[-1].wait_for_frames(video=5, audio=5)
    finally:
        for viewer in viewers:
            await viewer.close()
