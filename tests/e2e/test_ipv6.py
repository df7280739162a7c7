"""``media.ipv6 = true``: one dual-stack WebRTC socket serves IPv6 and IPv4 viewers of one mountpoint,
and the Janus API answers on both families."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import aioice.ice
import pytest

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.browser import chromium_in, wait_for_playback
from tests.support.janus_client import JanusHttpClient, janus_session
from tests.support.ports import free_ports
from tests.support.netns import loopback_namespace
from tests.support.server import DEMO_MOUNTPOINT, FanoutProcess, ServerAddresses, write_config

FRAMES = 90


def dual_stack_config(folder: Path, nat_1_1_mapping: str) -> ServerAddresses:
    addresses = write_config(folder, DEMO_MOUNTPOINT, nat_1_1_mapping=nat_1_1_mapping)
    janus = folder / "janus.jcfg"
    text = janus.read_text().replace('webrtc_interface = "127.0.0.1"', 'webrtc_interface = "::"')
    janus.write_text(text + "media: {\n\tipv6 = true\n}\n")
    return addresses


def with_metrics_and_admin(folder: Path) -> tuple[str, str]:
    """/metrics and the Admin API (secret "overlord") on free ports: their URLs."""
    metrics_port, admin_port = free_ports(2)
    janus = folder / "janus.jcfg"
    text = janus.read_text().replace("fanout: {\n", f"fanout: {{\n\tmetrics_port = {metrics_port}\n", 1)
    janus.write_text(text.replace("general: {\n", 'general: {\n\tadmin_secret = "overlord"\n', 1))
    with (folder / "janus.transport.http.jcfg").open("a") as http:
        http.write(f"admin: {{\n\tadmin_http = true\n\tadmin_port = {admin_port}\n}}\n")
    return f"http://127.0.0.1:{metrics_port}/metrics", f"http://[::1]:{admin_port}/admin"


async def watching_viewer(
    monkeypatch: pytest.MonkeyPatch, client: JanusHttpClient, host_address: str
) -> tuple[AiortcViewer, str]:
    """An aiortc viewer of mountpoint 1 whose only host candidate is ``host_address``, decoding: the
    viewer and the server's address it is connected to (the remote candidate of its nominated pair)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [host_address])
    viewer = AiortcViewer(client)
    await viewer.watch(1)
    await viewer.wait_for_frames(video=FRAMES, audio=10, timeout=30)
    ice = viewer.pc.getTransceivers()[0].receiver.transport.transport
    nominated = ice._connection._nominated  # aioice: the nominated pair of each component
    return viewer, nominated[1].remote_candidate.host


async def test_ipv4_and_ipv6_aiortc_viewers_watch_one_mountpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    addresses = dual_stack_config(tmp_path / "config", "127.0.0.1,::1")
    metrics_url, admin_url = with_metrics_and_admin(tmp_path / "config")
    with FanoutProcess(tmp_path / "config") as server:
        async with (
            janus_session(f"http://[::1]:{addresses.http_port}/janus") as ipv6_client,
            janus_session(f"http://127.0.0.1:{addresses.http_port}/janus") as ipv4_client,
        ):
            ipv6, ipv6_remote = await watching_viewer(monkeypatch, ipv6_client, "::1")
            ipv4, ipv4_remote = await watching_viewer(monkeypatch, ipv4_client, "127.0.0.1")
            try:
                before = ipv6.media.video_frames
                await ipv6.wait_for_frames(video=before + 30, audio=10)  # still decoding beside the IPv4 viewer
                async with aiohttp.ClientSession() as http:
                    async with http.get(metrics_url) as response:
                        metrics = await response.text()
                    pairs = {}
                    for client, viewer in ((ipv6_client, ipv6), (ipv4_client, ipv4)):
                        body = {"janus": "handle_info", "transaction": "t", "admin_secret": "overlord"}
                        path = f"/{client.session_id}/{viewer.handle_id}"
                        async with http.post(admin_url + path, data=json.dumps(body)) as reply:
                            ice = (await reply.json(content_type=None))["info"]["webrtc"]["ice"]
                        pairs[viewer is ipv6] = ice
            finally:
                await ipv6.close()
                await ipv4.close()
    assert (ipv6_remote, ipv4_remote) == ("::1", "127.0.0.1")
    for viewer in (ipv6, ipv4):
        assert viewer.media.video_sizes == {(640, 360)}, server.output
    assert "advertising ['127.0.0.1', '::1']" in server.output
    assert pairs[True]["selected-pair"].startswith("::1:") and pairs[True]["selected-family"] == "ipv6", pairs
    assert " <-> ::1:" in pairs[True]["selected-pair"], pairs
    assert pairs[False]["selected-pair"].startswith("127.0.0.1:") and pairs[False]["selected-family"] == "ipv4", pairs
    assert " <-> 127.0.0.1:" in pairs[False]["selected-pair"], pairs  # not ::ffff:127.0.0.1: the dual-stack socket's form
    assert pairs[True]["selected-transport"] == pairs[False]["selected-transport"] == "udp"
    assert 'fanout_peerconnections_by_route{family="ipv4",transport="udp"} 1.0' in metrics, metrics
    assert 'fanout_peerconnections_by_route{family="ipv6",transport="udp"} 1.0' in metrics, metrics


def test_chromium_watches_over_ipv6(tmp_path: Path) -> None:
    """fanout advertises only ::1, so Chromium's pair is IPv6; the page and the API come over [::1] too."""
    addresses = dual_stack_config(tmp_path / "config", "::1")
    with (
        loopback_namespace() as namespace,
        FanoutProcess(tmp_path / "config", namespace),
        chromium_in(namespace, tmp_path) as browser,
    ):
        errors: list[str] = []
        page = browser.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"http://[::1]:{addresses.http_port}/?mountpoint=1&transport=http")
        page.wait_for_function("window.fanoutDemo && window.fanoutDemo.state === 'playing'", timeout=30_000)
        figures = wait_for_playback(page, frames=FRAMES)
        pair = page.evaluate("window.fanoutDemo.selectedPair()")
        assert errors == []
        assert figures["frameWidth"] == 640, figures
        # Chromium gathers no ::1 host candidate; its address shows as peer-reflexive in the server's answers
        assert pair["remote"]["address"] == "::1" and pair["local"]["candidateType"] in ("host", "prflx"), pair
