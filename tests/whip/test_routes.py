"""The WHIP endpoint's HTTP side against a fake engine: every status code RFC 9725 asks
for, the exact headers, and (with a real aiortc publisher) the link handed to the
engine once DTLS is up, connected to the publisher."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from fanout.config.settings import IceServerSettings
from fanout.plugins.streaming.config import StreamingSettings, parse_mountpoint
from fanout.plugins.streaming.mountpoint import Mountpoint
from fanout.webrtc.endpoint import WebRtcEndpoint
from fanout.whip.routes import WhipService
from tests.support.whip_publisher import AiortcPublisher

DATA = Path(__file__).parent / "data"
OBS_OFFER = (DATA / "obs_h264_opus.sdp").read_text()
TOKEN = "secret-whip-token"
SDP = {"Content-Type": "application/sdp"}
SDPFRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}


@dataclass
class Attached:
    mountpoint_id: int
    link: socket.socket
    profile: str
    local_key: bytes
    remote_key: bytes
    routes: list[dict[str, Any]]
    mid_extension_id: int | None
    rid_extension_id: int | None


@dataclass
class FakeEngine:
    """What the WHIP service asks of the engine, recorded; the link socket kept as the engine would."""

    attached: list[Attached] = field(default_factory=list)
    detached: list[int] = field(default_factory=list)
    rembs: list[tuple[int, int, int]] = field(default_factory=list)

    def attach_publisher(self, mountpoint_id: int, socket_fd: int, profile: str, local: bytes, remote: bytes,
                         routes: list[dict[str, Any]], mid_extension_id: int | None = None,
                         rid_extension_id: int | None = None) -> None:  # fmt: skip
        link = socket.socket(fileno=os.dup(socket_fd))
        self.attached.append(Attached(mountpoint_id, link, profile, local, remote, routes, mid_extension_id, rid_extension_id))

    def detach_publisher(self, mountpoint_id: int) -> None:
        self.detached.append(mountpoint_id)

    def send_source_remb(self, mountpoint_id: int, index: int, bitrate: int) -> bool:
        self.rembs.append((mountpoint_id, index, bitrate))
        return True


class FakeEvents:
    def __init__(self) -> None:
        self.handlers: dict[type, Callable[[Any], None]] = {}

    def subscribe(self, kind: type, handler: Callable[[Any], None]) -> None:
        self.handlers[kind] = handler


@dataclass
class FakePlugin:
    mountpoints: dict[int, Mountpoint]
    settings: StreamingSettings = field(default_factory=StreamingSettings)
    viewer_estimates: dict[tuple[int | str, int], int] = field(default_factory=dict)  # (mountpoint id, mindex) -> bit/s

    def lowest_viewer_estimate(self, mountpoint: Mountpoint, mindex: int) -> int | None:
        return self.viewer_estimates.get((mountpoint.id, mindex))


def mountpoint(mountpoint_id: int, definition: dict[str, Any]) -> Mountpoint:
    config, _ = parse_mountpoint(f"m{mountpoint_id}", {"id": mountpoint_id, **definition})
    return Mountpoint(config, engine_id=mountpoint_id + 100, ports=[0] * len(config.streams), created_at=time.monotonic())


OBS_MEDIA = [{"type": "audio", "mid": "a", "codec": "opus", "pt": 111}, {"type": "video", "mid": "v", "codec": "h264", "pt": 96}]


@dataclass
class Whip:
    client: TestClient
    engine: FakeEngine
    service: WhipService
    mountpoints: dict[int, Mountpoint]
    plugin: FakePlugin


PUBLISHER_CONSENT_TIMEOUT = 12.5  # the endpoint's (fanout.ice_consent_timeout), not the default 30 s


@pytest.fixture
async def whip(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Whip]:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    endpoint = await WebRtcEndpoint.open("127.0.0.1", 0, [], consent_timeout=PUBLISHER_CONSENT_TIMEOUT)
    engine = FakeEngine()
    mountpoints = {
        1: mountpoint(1, {"type": "whip", "whip_token": TOKEN, "whip_bitrate": 2_500_000, "media": OBS_MEDIA}),
        2: mountpoint(2, {"type": "whip", "media": [{"type": "video", "mid": "v", "codec": "vp8", "pt": 96}]}),
        3: mountpoint(3, {"type": "rtp", "media": [{"type": "video", "mid": "v", "codec": "vp8", "pt": 96, "port": 0}]}),
    }
    plugin = FakePlugin(mountpoints)
    service = WhipService(plugin, endpoint, engine, FakeEvents())  # type: ignore[arg-type]
    app = web.Application()
    app.add_routes(service.routes())
    async with TestClient(TestServer(app)) as client:
        yield Whip(client, engine, service, mountpoints, plugin)
    await service.stop()
    endpoint.close()
    for attached in engine.attached:
        attached.link.close()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post_offer(whip: Whip, path: str = "/whip/endpoint/1", offer: str = OBS_OFFER, **headers: str) -> aiohttp.ClientResponse:
    all_headers = {**SDP, **bearer(), **headers}
    return await whip.client.post(path, data=offer, headers=all_headers)


async def test_an_obs_offer_gets_201_with_location_etag_and_the_answer(whip: Whip) -> None:
    reply = await post_offer(whip)

    assert reply.status == 201
    assert reply.headers["Content-Type"] == "application/sdp"
    assert reply.headers["Location"].startswith("/whip/resource/")
    assert reply.headers["ETag"].startswith('"') and reply.headers["ETag"].endswith('"')
    assert reply.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
    assert "Location" in reply.headers["Access-Control-Expose-Headers"]
    assert "Link" not in reply.headers  # no STUN/TURN servers configured: none to tell of
    answer = await reply.text()
    assert "a=ice-lite\r\n" in answer and "a=setup:passive\r\n" in answer and "a=end-of-candidates\r\n" in answer
    assert "m=audio" in answer and "a=rtpmap:111 opus/48000/2\r\n" in answer and "a=rtpmap:96 H264/90000\r\n" in answer


async def test_the_201_names_the_configured_stun_and_turn_servers_in_link_headers(whip: Whip) -> None:
    """RFC 9725 section 4.6: OBS and browsers take their ICE servers from these headers; TURN
    credentials are minted from nat.turn_secret as coturn's use-auth-secret checks them."""
    whip.service.ice_server_settings = IceServerSettings(
        stun_server="stun.example", turn_server="turn.example", turn_types=("udp", "tls"), turn_secret="s3cret"
    )
    reply = await post_offer(whip)

    assert reply.status == 201
    links = reply.headers.getall("Link")
    assert links[0] == '<stun:stun.example:3478>; rel="ice-server"'
    assert [link.split(">")[0] for link in links[1:]] == [
        "<turn:turn.example:3478?transport=udp",
        "<turns:turn.example:3478?transport=tcp",
    ]
    assert all('credential-type="password"' in link and 'username="' in link for link in links[1:])
    assert "Link" in reply.headers["Access-Control-Expose-Headers"]


async def test_options_answers_the_preflight_with_accept_post(whip: Whip) -> None:
    reply = await whip.client.options("/whip/endpoint/1")

    assert reply.status == 204
    assert reply.headers["Accept-Post"] == "application/sdp"
    assert reply.headers["Access-Control-Allow-Methods"] == "OPTIONS, POST, PATCH, DELETE"
    assert reply.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type, If-Match"


@pytest.mark.parametrize("headers", [{}, bearer("wrong"), {"Authorization": f"Basic {TOKEN}"}], ids=["missing", "wrong", "not-bearer"])
async def test_a_missing_or_wrong_token_gets_401(whip: Whip, headers: dict[str, str]) -> None:
    reply = await whip.client.post("/whip/endpoint/1", data=OBS_OFFER, headers={**SDP, **headers})

    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="fanout WHIP"'
    assert whip.service.publishers == {}


async def test_a_mountpoint_without_a_token_takes_any_publisher(whip: Whip) -> None:
    offer = OBS_OFFER.replace("H264/90000", "VP8/90000").replace("a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1\n", "")
    reply = await whip.client.post("/whip/endpoint/2", data=offer, headers=SDP)

    assert reply.status == 201
    assert "m=audio 0 " in await reply.text()  # the mountpoint takes no audio


@pytest.mark.parametrize("path", ["/whip/endpoint/9", "/whip/endpoint/3", "/whip/endpoint/x"], ids=["unknown", "rtp", "not-a-number"])
async def test_an_unknown_or_non_whip_mountpoint_gets_404(whip: Whip, path: str) -> None:
    assert (await post_offer(whip, path)).status == 404


async def test_a_body_that_is_not_sdp_gets_415(whip: Whip) -> None:
    reply = await post_offer(whip, **{"Content-Type": "application/json"})

    assert reply.status == 415


@pytest.mark.parametrize("offer", ["hello", OBS_OFFER.replace("a=fingerprint:", "a=x:")], ids=["not-sdp", "no-fingerprint"])
async def test_malformed_sdp_gets_400(whip: Whip, offer: str) -> None:
    reply = await post_offer(whip, offer=offer)

    assert reply.status == 400
    assert "malformed SDP offer" in await reply.text()


async def test_an_offer_with_no_codec_of_the_mountpoint_gets_422(whip: Whip) -> None:
    offer = OBS_OFFER.replace("H264/90000", "VP9/90000").replace("opus/48000/2", "PCMU/8000")

    reply = await post_offer(whip, offer=offer)
    assert reply.status == 422
    assert "audio opus, video h264" in await reply.text()


async def test_a_second_publisher_gets_409_while_the_first_holds_the_mountpoint(whip: Whip) -> None:
    assert (await post_offer(whip)).status == 201

    second = await post_offer(whip)
    assert second.status == 409
    assert len(whip.service.publishers) == 1


async def test_a_publisher_that_never_connected_gives_way_after_the_grace(whip: Whip, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await post_offer(whip)).status == 201
    monkeypatch.setattr("fanout.whip.publisher.CONNECT_GRACE", 0.0)

    assert (await post_offer(whip)).status == 201
    assert len(whip.service.publishers) == 1


async def test_the_publishers_peer_expires_consent_at_the_endpoints_consent_timeout(whip: Whip) -> None:
    assert (await post_offer(whip)).status == 201
    [publisher] = whip.service.publishers.values()
    assert publisher.peer.consent_timeout == PUBLISHER_CONSENT_TIMEOUT


async def test_trickle_gets_204_and_a_stale_if_match_412(whip: Whip) -> None:
    created = await post_offer(whip)
    resource, etag = created.headers["Location"], created.headers["ETag"]
    fragment = "a=ice-ufrag:8aHx\r\na=ice-pwd:VxTKcW3cDBkFwSAbzsBJpB\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n"

    trickled = await whip.client.patch(resource, data=fragment, headers={**SDPFRAG, **bearer(), "If-Match": etag})
    assert trickled.status == 204
    publisher = next(iter(whip.service.publishers.values()))
    assert [(c.ip, c.port) for c in publisher.peer.remote_candidates] == [("127.0.0.1", 5000)]
    assert publisher.peer.remote_end_of_candidates

    stale = await whip.client.patch(resource, data=fragment, headers={**SDPFRAG, **bearer(), "If-Match": '"stale"'})
    assert stale.status == 412
    wrong_type = await whip.client.patch(resource, data=fragment, headers={"Content-Type": "text/plain", **bearer()})
    assert wrong_type.status == 415
    unknown = await whip.client.patch("/whip/resource/nope", data=fragment, headers={**SDPFRAG, **bearer()})
    assert unknown.status == 404
    no_token = await whip.client.patch(resource, data=fragment, headers=SDPFRAG)
    assert no_token.status == 401


async def test_an_ice_restart_needs_if_match_and_gets_new_credentials_and_etag(whip: Whip) -> None:
    created = await post_offer(whip)
    resource, etag = created.headers["Location"], created.headers["ETag"]
    publisher = next(iter(whip.service.publishers.values()))
    old_ufrag = publisher.peer.local_ufrag
    restart = "a=ice-ufrag:newU\r\na=ice-pwd:NewPasswordOf22Chars00\r\n"

    missing = await whip.client.patch(resource, data=restart, headers={**SDPFRAG, **bearer()})
    assert missing.status == 428
    stale = await whip.client.patch(resource, data=restart, headers={**SDPFRAG, **bearer(), "If-Match": '"stale"'})
    assert stale.status == 412

    restarted = await whip.client.patch(resource, data=restart, headers={**SDPFRAG, **bearer(), "If-Match": "*"})
    assert restarted.status == 200
    assert restarted.headers["Content-Type"] == "application/trickle-ice-sdpfrag"
    assert restarted.headers["ETag"] != etag
    body = await restarted.text()
    assert f"a=ice-ufrag:{publisher.peer.local_ufrag}\r\n" in body and publisher.peer.local_ufrag != old_ufrag
    assert "a=end-of-candidates" in body
    assert publisher.peer.remote_description is not None and publisher.peer.remote_description.ice_ufrag == "newU"


async def test_delete_ends_the_publisher_and_a_new_one_may_come(whip: Whip) -> None:
    created = await post_offer(whip)
    resource = created.headers["Location"]

    assert (await whip.client.delete(resource, headers=bearer())).status == 200
    assert whip.service.publishers == {}
    assert (await whip.client.delete(resource, headers=bearer())).status == 404
    assert (await post_offer(whip)).status == 201


async def test_dtls_up_hands_the_engine_a_link_connected_to_the_publisher(whip: Whip) -> None:
    async with aiohttp.ClientSession() as http:
        publisher = AiortcPublisher(http, str(whip.client.make_url("/whip/endpoint/1")), token=TOKEN, video_codec="H264")
        try:
            assert (await publisher.publish()).status == 201
            await publisher.connected()

            async def attached() -> None:
                while not whip.engine.attached:
                    await asyncio.sleep(0.02)

            await asyncio.wait_for(attached(), 10)
            link = whip.engine.attached[0]
            assert link.mountpoint_id == 101
            assert link.profile in ("AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80")
            assert len(link.local_key) == len(link.remote_key) and link.local_key != link.remote_key
            assert [route["index"] for route in link.routes] == [0, 1]
            assert link.mid_extension_id is not None  # aiortc sends the mid extension
            resource = next(iter(whip.service.publishers.values()))
            assert link.link.getpeername() == resource.address
            assert whip.mountpoints[1].publisher_attached

            # The publisher's SRTP comes to the link, not the shared socket. (Read without blocking
            # the loop: the publisher runs on it, and may not have sent its first packet yet.)
            link.link.setblocking(False)
            datagram = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(link.link, 2048), 10)
            assert 128 <= datagram[0] <= 191

            async def remb() -> None:
                while not whip.engine.rembs:
                    await asyncio.sleep(0.02)

            await asyncio.wait_for(remb(), 5)
            assert whip.engine.rembs[0] == (101, 1, 2_500_000)
        finally:
            await publisher.close()
    await whip.service.stop()
    assert whip.engine.detached == [101]
    assert not whip.mountpoints[1].publisher_attached


async def test_the_publishers_remb_is_the_lower_of_the_cap_and_its_viewers_estimate(whip: Whip) -> None:
    async with aiohttp.ClientSession() as http:
        publisher = AiortcPublisher(http, str(whip.client.make_url("/whip/endpoint/1")), token=TOKEN, video_codec="H264")
        try:
            assert (await publisher.publish()).status == 201
            await publisher.connected()

            async def remb_of(bitrate: int) -> None:
                while (101, 1, bitrate) not in whip.engine.rembs:
                    await asyncio.sleep(0.02)

            await asyncio.wait_for(remb_of(2_500_000), 10)  # no viewer estimate: the cap
            whip.plugin.viewer_estimates[(1, 1)] = 800_000  # a viewer on a slow link
            await asyncio.wait_for(remb_of(800_000), 5)
            whip.plugin.viewer_estimates[(1, 1)] = 40_000_000  # viewers who could take more than the cap
            whip.engine.rembs.clear()
            await asyncio.wait_for(remb_of(2_500_000), 5)
            assert {index for _, index, _ in whip.engine.rembs} == {1}, "video only"
        finally:
            await publisher.close()
