"""Viewers told to relay (``iceTransportPolicy: "relay"``) watch through a real TURN server.

fanout hands out janus.jcfg's ``nat.turn_*`` server with credentials minted from
``nat.turn_secret``, as Debian's coturn checks them (``use-auth-secret``): to janus.js
through the demo page's config.js, to WHEP players as ``Link: rel="ice-server"`` headers.
fanout itself stays ICE-lite: the relay's address is just the viewer's remote candidate.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from tests.support.aiortc_viewer import DecodedMedia
from tests.support.browser import chromium_in, wait_for_playback
from tests.support.netns import NetworkNamespace, loopback_namespace
from tests.support.ports import free_ports
from tests.support.server import DEMO_MOUNTPOINT, FanoutProcess, ServerAddresses, write_config
from tests.support.turn_server import TurnServer, coturn

FRAMES = 150  # 5 s of the 30 fps test pattern (fewer: the keyframe cache burst comes first)
SDP = "application/sdp"


def with_turn(folder: Path, turn: TurnServer, turn_type: str, *, advertise: str | None = None) -> ServerAddresses:
    addresses = write_config(folder, DEMO_MOUNTPOINT, nat_1_1_mapping=None)
    mapping = f'nat_1_1_mapping = "{advertise}"; ' if advertise else ""
    with (folder / "janus.jcfg").open("a") as janus:
        janus.write(
            f'nat: {{ {mapping}turn_server = "{turn.host}"; turn_port = {turn.port}; turn_type = "{turn_type}"; '
            f'turn_secret = "{turn.secret}"; turn_ttl = 600 }}\n'
        )
    return addresses


def with_admin(folder: Path) -> int:
    """The Admin API on a free port (secret "overlord"): its port."""
    (admin_port,) = free_ports(1)
    janus = folder / "janus.jcfg"
    janus.write_text(janus.read_text().replace("general: {\n", 'general: {\n\tadmin_secret = "overlord"\n', 1))
    with (folder / "janus.transport.http.jcfg").open("a") as http:
        http.write(f"admin: {{\n\tadmin_http = true\n\tadmin_port = {admin_port}\n}}\n")
    return admin_port


def admin_in(namespace: NetworkNamespace, admin_port: int, janus: str, path: str = "") -> Any:
    """An Admin API request made from inside ``namespace`` (where the server is)."""
    body = json.dumps({"janus": janus, "transaction": "t", "admin_secret": "overlord"})
    script = (
        "import sys, urllib.request; request = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode()); "
        "print(urllib.request.urlopen(request, timeout=10).read().decode())"
    )
    url = f"http://127.0.0.1:{admin_port}/admin{path}"
    reply = subprocess.run(namespace.command("python3", "-c", script, url, body), capture_output=True, text=True, check=True)
    return json.loads(reply.stdout)


def viewer_ice_info(namespace: NetworkNamespace, admin_port: int) -> dict[str, Any]:
    """handle_info's ice section of the one handle on the server."""
    (session,) = admin_in(namespace, admin_port, "list_sessions")["sessions"]
    (handle,) = admin_in(namespace, admin_port, "list_handles", f"/{session}")["handles"]
    ice: dict[str, Any] = admin_in(namespace, admin_port, "handle_info", f"/{session}/{handle}")["info"]["webrtc"]["ice"]
    return ice


@pytest.mark.parametrize("turn_type", ["udp", "tcp", "tls"])
def test_janus_js_watches_through_coturn(tmp_path: Path, turn_type: str) -> None:
    with (
        loopback_namespace() as namespace,
        coturn(namespace, tmp_path) as turn,
    ):
        addresses = with_turn(tmp_path / "config", turn, turn_type)
        admin_port = with_admin(tmp_path / "config")
        with (
            FanoutProcess(tmp_path / "config", namespace),
            chromium_in(namespace, tmp_path, ("--ignore-certificate-errors",)) as browser,
        ):
            errors: list[str] = []
            page = browser.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{addresses.page_url}?mountpoint=1&transport=http&ice_transport_policy=relay")
            page.wait_for_function("window.fanoutDemo && window.fanoutDemo.state === 'playing'", timeout=30_000)
            figures = wait_for_playback(page, frames=FRAMES)
            pair = page.evaluate("window.fanoutDemo.selectedPair()")
            assert errors == []
            assert figures["frameWidth"] == 640, figures
            assert figures["audioPacketsReceived"] > 0, figures
            assert pair["local"]["candidateType"] == "relay", pair
            assert pair["local"]["relayProtocol"] == turn_type, pair
            assert pair["remote"]["address"] == "127.0.0.1", pair
            assert turn.allocations() >= 1
            ice = viewer_ice_info(namespace, admin_port)
            # the relay's side is always UDP (TURN relays over UDP): what fanout sees is the relay's address
            relay = f"{pair['remote']['address']}:{pair['remote']['port']} [host,udp] <-> 127.0.0.1:{pair['local']['port']}"
            assert ice["selected-pair"] == relay + " [relay,udp]", (ice, pair)
            assert (ice["selected-transport"], ice["selected-family"]) == ("udp", "ipv4")


def test_the_demo_page_gets_fresh_turn_credentials_coturn_accepts(tmp_path: Path) -> None:
    """Without a usable credential Chromium gathers no relay candidate and never connects: so
    the watch above passing shows coturn took the minted ones; here, their form and freshness."""
    with loopback_namespace() as namespace, coturn(namespace, tmp_path) as turn:
        addresses = with_turn(tmp_path / "config", turn, "udp,tcp,tls")
        with FanoutProcess(tmp_path / "config", namespace), chromium_in(namespace, tmp_path) as browser:
            page = browser.new_page()
            page.goto(addresses.page_url)
            servers = page.evaluate("window.fanoutDemoConfig.iceServers")
    assert len(servers) == 1, servers
    assert servers[0]["urls"] == [
        "turn:127.0.0.1:3478?transport=udp",
        "turn:127.0.0.1:3478?transport=tcp",
        "turns:127.0.0.1:3478?transport=tcp",
    ]
    assert re.fullmatch(r"\d+:fanout", servers[0]["username"]), servers
    assert servers[0]["credential"], servers


async def test_a_whep_player_relays_through_the_servers_in_link_headers(tmp_path: Path) -> None:
    """aiortc reads RFC 9725 ``Link`` headers and, relay-only, watches through coturn over UDP."""
    (turn_port,) = free_ports(1)
    with coturn(None, tmp_path, port=turn_port) as turn:
        addresses = with_turn(tmp_path / "config", turn, "udp", advertise="127.0.0.1")
        with FanoutProcess(tmp_path / "config"):
            async with aiohttp.ClientSession() as http:
                await _watch_through_link_headers(http, addresses, turn)


async def _watch_through_link_headers(http: aiohttp.ClientSession, addresses: ServerAddresses, turn: TurnServer) -> None:
    url = f"http://127.0.0.1:{addresses.http_port}/whep/endpoint/1"
    # The first POST learns the servers (a player may also learn them from an earlier session).
    probe = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    probe.addTransceiver("video", direction="recvonly")
    await probe.setLocalDescription(await probe.createOffer())
    async with http.post(url, data=probe.localDescription.sdp, headers={"Content-Type": SDP}) as reply:
        assert reply.status == 201
        links = reply.headers.getall("Link")
        location = reply.headers["Location"]
        assert "Link" in reply.headers["Access-Control-Expose-Headers"]
    await probe.close()
    async with http.delete(f"http://127.0.0.1:{addresses.http_port}{location}") as deleted:
        assert deleted.status == 200
    servers = [_ice_server_of(link) for link in links]
    assert [server.urls for server in servers] == [f"turn:127.0.0.1:{turn.port}?transport=udp"]

    pc = RTCPeerConnection(RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY))
    media = DecodedMedia()

    async def consume(track: object) -> None:
        while True:
            await track.recv()  # type: ignore[attr-defined]
            media.video_frames += 1

    pc.on("track", lambda track: asyncio.ensure_future(consume(track)))
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        assert " typ relay" in pc.localDescription.sdp and " typ host" not in pc.localDescription.sdp
        async with http.post(url, data=pc.localDescription.sdp, headers={"Content-Type": SDP}) as reply:
            assert reply.status == 201, await reply.text()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=await reply.text(), type="answer"))

        async def enough() -> None:
            while media.video_frames < 60:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(enough(), 30)
        assert turn.allocations() >= 1
    finally:
        await pc.close()


def _ice_server_of(link: str) -> RTCIceServer:
    """An RTCIceServer from one ``Link: <url>; rel="ice-server"; username=...; credential=...`` value."""
    match = re.fullmatch(r"<([^>]+)>((?:\s*;\s*[\w-]+=\"(?:[^\"\\]|\\.)*\")*)", link)
    assert match is not None, link
    parameters = {key: value.replace('\\"', '"') for key, value in re.findall(r'([\w-]+)="((?:[^"\\]|\\.)*)"', match[2])}
    assert parameters["rel"] == "ice-server", link
    return RTCIceServer(urls=match[1], username=parameters.get("username"), credential=parameters.get("credential"))
