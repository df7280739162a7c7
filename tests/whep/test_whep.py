"""WHEP against a real fanout: an aiortc player and a plain-JavaScript player in Chromium
POST offers, decode what they get, trickle and DELETE; bad requests get HTTP errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from tests.support.aiortc_viewer import DecodedMedia
from tests.support.browser import chromium_in, wait_for_figures
from tests.support.janus_client import JanusHttpClient
from tests.support.netns import loopback_namespace
from tests.support.server import DEMO_MOUNTPOINT, FanoutProcess, ServerAddresses, write_config

SDP = "application/sdp"


@pytest.fixture
def loopback_only_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerAddresses]:
    folder = tmp_path_factory.mktemp("config")
    addresses = write_config(folder, DEMO_MOUNTPOINT)
    with FanoutProcess(folder):
        yield addresses


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def base(addresses: ServerAddresses) -> str:
    return f"http://127.0.0.1:{addresses.http_port}"


class WhepPlayer:
    """A WHEP player made of aiortc: recvonly audio + video, the offer POSTed, frames counted."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.media = DecodedMedia()
        self.location: str | None = None
        self.pc.on("track", lambda track: asyncio.ensure_future(self._consume(track)))

    async def play(self) -> aiohttp.ClientResponse:
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with self.http.post(self.url, data=self.pc.localDescription.sdp, headers={"Content-Type": SDP}) as reply:
            body = await reply.text()
            if reply.status == 201:
                self.location = reply.headers["Location"]
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
            return reply

    async def _consume(self, track: object) -> None:
        try:
            while True:
                frame = await track.recv()  # type: ignore[attr-defined]
                if track.kind == "video":  # type: ignore[attr-defined]
                    self.media.video_frames += 1
                    self.media.video_sizes.add((frame.width, frame.height))
                else:
                    self.media.audio_frames += 1
        except MediaStreamError:
            return

    async def frames(self, video: int, audio: int) -> None:
        async def enough() -> None:
            while self.media.video_frames < video or self.media.audio_frames < audio:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(enough(), 20)


async def viewers_of(http: aiohttp.ClientSession, addresses: ServerAddresses, mountpoint_id: int) -> int:
    janus = JanusHttpClient(http, addresses.janus_url)
    await janus.create()
    try:
        reply = await janus.message(await janus.attach(), {"request": "info", "id": mountpoint_id})
        return int(reply["plugindata"]["data"]["info"]["viewers"])
    finally:
        await janus.close()


@pytest.mark.usefixtures("loopback_only_ice")
async def test_a_player_posts_its_offer_watches_and_deletes(server: ServerAddresses, http: aiohttp.ClientSession) -> None:
    player = WhepPlayer(http, f"{base(server)}/whep/endpoint/1")
    try:
        reply = await player.play()
        assert reply.status == 201 and reply.headers["Content-Type"] == SDP
        assert player.location is not None and player.location.startswith("/whep/resource/")
        await player.frames(video=30, audio=30)
        assert player.media.video_sizes == {(640, 360)}
        assert await viewers_of(http, server, 1) == 1

        resource = base(server) + player.location
        fragment = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\na=mid:0\r\na=end-of-candidates\r\n"
        patch_headers = {"Content-Type": "application/trickle-ice-sdpfrag"}
        async with http.patch(resource, data=fragment, headers=patch_headers) as patched:
            assert patched.status == 204
        async with http.patch(resource, data=fragment, headers={**patch_headers, "If-Match": '"stale"'}) as stale:
            assert stale.status == 412
        async with http.patch(resource, data="x", headers={"Content-Type": "text/plain"}) as wrong:
            assert wrong.status == 415

        async with http.delete(resource) as deleted:
            assert deleted.status == 200
        for _ in range(50):
            if await viewers_of(http, server, 1) == 0:
                break
            await asyncio.sleep(0.1)
        assert await viewers_of(http, server, 1) == 0
        async with http.delete(resource) as again:
            assert again.status == 404
    finally:
        await player.pc.close()


@pytest.mark.usefixtures("loopback_only_ice")
async def test_a_player_that_goes_away_frees_its_resource(server: ServerAddresses, http: aiohttp.ClientSession) -> None:
    player = WhepPlayer(http, f"{base(server)}/whep/endpoint/1")
    await player.play()
    await player.frames(video=5, audio=5)
    await player.pc.close()  # DTLS close_notify: fanout hangs up
    assert player.location is not None
    for _ in range(50):
        async with http.delete(base(server) + player.location) as deleted:
            if deleted.status == 404:
                return
        await asyncio.sleep(0.1)
    pytest.fail("the resource outlived its player")


async def test_bad_requests_get_http_errors(server: ServerAddresses, http: aiohttp.ClientSession) -> None:
    offer_url = f"{base(server)}/whep/endpoint/1"
    async with http.post(offer_url, data="v=0", headers={"Content-Type": "text/plain"}) as reply:
        assert reply.status == 415
    async with http.post(offer_url, data="hello", headers={"Content-Type": SDP}) as reply:
        assert reply.status == 400
    async with http.post(f"{base(server)}/whep/endpoint/99", data="x", headers={"Content-Type": SDP}) as reply:
        assert reply.status in (400, 404)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with http.post(f"{base(server)}/whep/endpoint/99", data=pc.localDescription.sdp, headers={"Content-Type": SDP}) as reply:
            assert reply.status == 404
            assert "No such mountpoint/stream 99" in await reply.text()
    finally:
        await pc.close()
    async with http.patch(f"{base(server)}/whep/resource/nope", data="", headers={"Content-Type": "application/trickle-ice-sdpfrag"}) as reply:
        assert reply.status == 404


PLAYER_SCRIPT = """
async (endpoint) => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", {direction: "recvonly"});
  pc.addTransceiver("audio", {direction: "recvonly"});
  const video = document.createElement("video");
  video.muted = true; video.autoplay = true; document.body.appendChild(video);
  const stream = new MediaStream();
  pc.ontrack = (event) => { stream.addTrack(event.track); video.srcObject = stream; };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
  });
  const reply = await fetch(endpoint, {method: "POST", headers: {"Content-Type": "application/sdp"}, body: pc.localDescription.sdp});
  await pc.setRemoteDescription({type: "answer", sdp: await reply.text()});
  window.whepPc = pc;
  return {status: reply.status, location: reply.headers.get("Location")};
}
"""

STATS_SCRIPT = """
async () => {
  let figures = {framesDecoded: 0, frameWidth: 0, packetsLost: 0};
  (await window.whepPc.getStats()).forEach((entry) => {
    if (entry.type === "inbound-rtp" && entry.kind === "video") {
      figures = {framesDecoded: entry.framesDecoded, frameWidth: entry.frameWidth, packetsLost: entry.packetsLost};
    }
  });
  return figures;
}
"""


def test_a_plain_browser_player_watches_over_whep(tmp_path: Path) -> None:
    config = tmp_path / "config"
    addresses = write_config(config, DEMO_MOUNTPOINT, nat_1_1_mapping=None)
    with loopback_namespace() as namespace, FanoutProcess(config, namespace), chromium_in(namespace, tmp_path) as browser:
        page = browser.new_page()
        page.goto(addresses.page_url)
        posted = page.evaluate(PLAYER_SCRIPT, f"{addresses.page_url}whep/endpoint/1")
        assert posted["status"] == 201 and posted["location"].startswith("/whep/resource/")
        figures = wait_for_figures(
            page, STATS_SCRIPT, lambda figures: figures["framesDecoded"] >= 45 and figures["packetsLost"] == 0
        )
        assert figures["frameWidth"] == 640, figures
