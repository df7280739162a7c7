"""The origin's side of the relay, with a real engine, Streaming plugin and WebRTC endpoint:
the "edge" is a UDP socket of the test with libsrtp (pylibsrtp) sessions."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from fanout._engine import Engine
from fanout.cluster.relay import (
    PURPOSE_GRANTED,
    PURPOSE_REFRESH,
    PURPOSE_REQUEST,
    PURPOSE_TEARDOWN,
    RelayGranted,
    RelayOrigin,
    RelayRequest,
    RelayStream,
)
from fanout.cluster.sealed import CONTENT_TYPE, Sealer
from fanout.plugins.streaming.config import parse_mountpoint
from fanout.plugins.streaming.mountpoint import Mountpoint
from fanout.plugins.streaming.plugin import StreamingPlugin
from fanout.webrtc.endpoint import WebRtcEndpoint
from pylibsrtp import Error as SrtpError
from pylibsrtp import Policy, Session

from tests.engine.test_engine import VP8_DELTA, VP8_KEYFRAME, RtpPacket, rtp
from tests.support.ports import free_ports

SECRET = "the cluster secret of these tests"
VIDEO, VIDEO_MIDDLE, AUDIO = 0x0A0A0A0A, 0x0B0B0B0B, 0x0C0C0C0C
MOUNTPOINT = {
    "type": "rtp",
    "id": 5,
    "media": [
        {"type": "audio", "mid": "a", "port": 0, "pt": 111, "codec": "opus"},
        {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8", "simulcast": True},
    ],
}


@dataclass
class Origin:
    relay: RelayOrigin
    plugin: StreamingPlugin
    mountpoint: Mountpoint
    endpoint: WebRtcEndpoint
    url: str
    http: aiohttp.ClientSession

    @property
    def engine(self) -> Engine:
        return self.plugin.engine

    def relays(self) -> int:
        return self.engine.mountpoint_stats(self.mountpoint.engine_id).viewers

    async def post(self, path: str, data: bytes, content_type: str = CONTENT_TYPE) -> tuple[int, bytes]:
        async with self.http.post(self.url + path, data=data, headers={"Content-Type": content_type}) as response:
            return response.status, await response.read()


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    endpoint = await WebRtcEndpoint.open("127.0.0.1", 0, ["127.0.0.1"])
    engine = Engine(endpoint.fileno())
    plugin = StreamingPlugin(engine, [])
    config, _ = parse_mountpoint("m", MOUNTPOINT)
    mountpoint = plugin.add_mountpoint(config)
    relay = RelayOrigin(plugin, endpoint, Sealer(SECRET), ("127.0.0.1", endpoint.port), expiry=1.0)
    app = web.Application()
    app.add_routes(relay.routes())
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_ports(1)[0]
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession() as http:
        yield Origin(relay, plugin, mountpoint, endpoint, f"http://127.0.0.1:{port}", http)
    await runner.cleanup()
    relay.close()
    await plugin.stop()
    engine.close()
    endpoint.close()


class Edge:
    """The edge's relay socket and its SRTP sessions."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sealer = Sealer(SECRET)
        self.origin_key, self.edge_key = os.urandom(28), os.urandom(28)
        profile = Policy.SRTP_PROFILE_AEAD_AES_128_GCM
        self.inbound = Session(Policy(key=self.origin_key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile))
        self.outbound = Session(Policy(key=self.edge_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
        self.rtp: list[RtpPacket] = []

    def request(self, mountpoint: int = 5, streams: tuple[RelayStream, ...] | None = None) -> RelayRequest:
        return RelayRequest(
            relay_id="edge-1/5/0001",
            edge="edge-1",
            mountpoint=mountpoint,
            address=self.sock.getsockname(),
            srtp_profile="AEAD_AES_128_GCM",
            origin_key=self.origin_key,
            edge_key=self.edge_key,
            streams=streams
            or (RelayStream("a", 0, AUDIO, "opus", 111), RelayStream("v", 0, VIDEO, "vp8", 100), RelayStream("v", 1, VIDEO_MIDDLE, "vp8", 100)),
        )

    def sealed(self, purpose: str, body: dict[str, object]) -> bytes:
        return self.sealer.seal(purpose, body, time.time())

    async def wait_rtp(self, accept: object, timeout: float = 5.0) -> RtpPacket:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                await asyncio.sleep(0.005)
                continue
            if 192 <= data[1] <= 223:
                continue  # the origin's sender reports
            try:
                packet = RtpPacket.parse(self.inbound.unprotect(data))
            except SrtpError:  # a retransmission: protected as first sent, so libsrtp calls it a replay
                packet = RtpPacket.parse(data[:12])
            self.rtp.append(packet)
            if accept(packet):  # type: ignore[operator]
                return packet
        raise AssertionError(f"no such packet within {timeout} s; got {self.rtp}")


async def granted(origin: Origin, edge: Edge) -> RelayGranted:
    status, body = await origin.post("/cluster/relay", edge.sealed(PURPOSE_REQUEST, edge.request().to_body()))
    assert status == 200, body
    return RelayGranted.parse(edge.sealer.open(PURPOSE_GRANTED, body, time.time()))


def send_video(origin: Origin, substream: int, sequence: int, payload: bytes) -> None:
    port = origin.mountpoint.substream_ports["v"][substream]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as source:
        source.sendto(rtp(sequence, sequence * 3000, payload, ssrc=0x5000 + substream), ("127.0.0.1", port))


async def test_a_granted_relay_gets_every_substream_with_its_ssrcs_and_its_nack_is_answered(origin: Origin) -> None:
    edge = Edge()
    grant = await granted(origin, edge)
    assert grant.address == ("127.0.0.1", origin.endpoint.port) and grant.relay_id == "edge-1/5/0001"
    assert origin.relays() == 1

    send_video(origin, 0, 100, VP8_KEYFRAME)
    send_video(origin, 1, 200, VP8_KEYFRAME)
    low = await edge.wait_rtp(lambda packet: packet.ssrc == VIDEO)
    await edge.wait_rtp(lambda packet: packet.ssrc == VIDEO_MIDDLE)
    assert (low.payload_type, low.payload) == (100, VP8_KEYFRAME), "as the edge asked, whatever the origin's"
    send_video(origin, 0, 101, VP8_DELTA)
    await edge.wait_rtp(lambda packet: packet.ssrc == VIDEO and packet.sequence == (low.sequence + 1) & 0xFFFF)

    # A generic NACK (RFC 4585) for the keyframe, from the edge's relay address: sent again.
    nack = struct.pack("!BBHIIHH", 0x81, 205, 3, 0x1234, VIDEO, low.sequence, 0)
    edge.sock.sendto(edge.outbound.protect_rtcp(nack), grant.address)
    await edge.wait_rtp(lambda packet: packet.ssrc == VIDEO and packet.sequence == low.sequence)
    assert origin.relay.counts["rtcp"] == 1

    status, _ = await origin.post("/cluster/relay/refresh", edge.sealed(PURPOSE_REFRESH, {"relay_id": grant.relay_id}))
    assert status == 204
    status, _ = await origin.post("/cluster/relay/teardown", edge.sealed(PURPOSE_TEARDOWN, {"relay_id": grant.relay_id}))
    assert status == 204
    assert origin.relays() == 0 and origin.relay.relays == {}
    status, _ = await origin.post("/cluster/relay/refresh", edge.sealed(PURPOSE_REFRESH, {"relay_id": grant.relay_id}))
    assert status == 404


async def test_asking_again_with_the_same_relay_id_replaces_the_relay(origin: Origin) -> None:
    edge = Edge()
    await granted(origin, edge)
    await granted(origin, edge)
    assert origin.relays() == 1 and len(origin.relay.relays) == 1


async def test_a_relay_not_refreshed_expires(origin: Origin) -> None:
    edge = Edge()
    await granted(origin, edge)
    deadline = time.monotonic() + 10
    while origin.relays() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert origin.relays() == 0 and origin.relay.counts["expired"] == 1


async def test_a_request_sealed_with_another_secret_is_refused_with_403_and_counted(origin: Origin) -> None:
    edge = Edge()
    edge.sealer = Sealer("not the cluster's secret")
    status, body = await origin.post("/cluster/relay", edge.sealed(PURPOSE_REQUEST, edge.request().to_body()))
    assert (status, origin.relays()) == (403, 0)
    assert b"cluster secret" in body
    assert origin.relay.sealer.refusals == {"unauthentic": 1}


async def test_a_replayed_request_is_refused(origin: Origin) -> None:
    edge = Edge()
    sealed = edge.sealed(PURPOSE_REQUEST, edge.request().to_body())
    assert (await origin.post("/cluster/relay", sealed))[0] == 200
    assert (await origin.post("/cluster/relay", sealed))[0] == 403
    assert origin.relay.sealer.refusals == {"replayed": 1}


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [(b"garbage", CONTENT_TYPE, 400), (b"", CONTENT_TYPE, 400), (b"{}", "application/json", 415)],
)
async def test_garbage_is_refused_and_nothing_else_is_disturbed(
    origin: Origin, data: bytes, content_type: str, status: int
) -> None:
    edge = Edge()
    await granted(origin, edge)
    assert (await origin.post("/cluster/relay", data, content_type))[0] == status
    assert origin.relays() == 1


async def test_a_request_that_does_not_fit_the_mountpoint_is_refused(origin: Origin) -> None:
    edge = Edge()
    cases = [
        (edge.request(mountpoint=6), 404),
        (edge.request(streams=(RelayStream("v", 0, VIDEO, "h264", 96),)), 409),
        (edge.request(streams=(RelayStream("x", 0, VIDEO, "vp8", 96),)), 409),
        (edge.request(streams=(RelayStream("a", 1, AUDIO, "opus", 111),)), 409),
    ]
    for request, status in cases:
        answer, body = await origin.post("/cluster/relay", edge.sealed(PURPOSE_REQUEST, request.to_body()))
        assert answer == status, body
    short_key = edge.request().to_body() | {"origin_key": "short"}
    assert (await origin.post("/cluster/relay", edge.sealed(PURPOSE_REQUEST, short_key)))[0] == 400
    assert origin.relays() == 0
