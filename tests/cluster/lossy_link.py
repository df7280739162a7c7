"""A lossy network between an edge and its origin, for tests (no netem on this machine).

The edge's ``relay_url`` points here. Holding the cluster secret, the link opens each
relay request and grant, puts its own UDP sockets in the addresses they carry and seals
them again; then it forwards the relay's datagrams both ways, dropping every
``drop_every``-th RTP packet of the video SSRC from the origin (SRTP leaves the RTP
header readable). Refreshes and teardowns pass through unchanged.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from fanout.cluster.relay import PURPOSE_GRANTED, PURPOSE_REQUEST, RelayGranted, RelayRequest
from fanout.cluster.sealed import CONTENT_TYPE, Sealer

from tests.support.ports import free_ports


@dataclass
class LinkCounts:
    forwarded_to_edge: int = 0
    dropped_video: int = 0
    forwarded_to_origin: int = 0
    video_ssrcs: set[int] = field(default_factory=set)


class _Forward(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: object) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, addr)  # type: ignore[operator]


class LossyLink:
    def __init__(self, origin_control_url: str, secret: str, ip: str, *, drop_every: int = 20) -> None:
        self.origin_control_url = origin_control_url
        self.sealer = Sealer(secret)
        self.ip = ip
        self.drop_every = drop_every
        self.counts = LinkCounts()
        self.http_port = free_ports(1)[0]
        self._edge_address: tuple[str, int] | None = None  # the edge's relay socket
        self._origin_address: tuple[str, int] | None = None  # the origin's WebRTC endpoint
        self._to_edge: asyncio.DatagramTransport | None = None  # faces the edge (the "origin" it sees)
        self._to_origin: asyncio.DatagramTransport | None = None  # faces the origin (the "edge" it sees)
        self._runner: web.AppRunner | None = None
        self._video_packets = 0

    @property
    def control_url(self) -> str:
        return f"http://{self.ip}:{self.http_port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._to_edge, _ = await loop.create_datagram_endpoint(lambda: _Forward(self._from_edge), local_addr=(self.ip, 0))
        self._to_origin, _ = await loop.create_datagram_endpoint(lambda: _Forward(self._from_origin), local_addr=(self.ip, 0))
        app = web.Application()
        app.router.add_post("/cluster/relay", self._relay)
        app.router.add_post("/cluster/relay/{what}", self._pass)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.ip, self.http_port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        for transport in (self._to_edge, self._to_origin):
            if transport is not None:
                transport.close()

    async def _relay(self, request: web.Request) -> web.Response:
        assert self._to_edge is not None and self._to_origin is not None
        body = self.sealer.open(PURPOSE_REQUEST, await request.read(), time.time())
        relay_request = RelayRequest.parse(body)
        self._edge_address = relay_request.address
        self.counts.video_ssrcs = {stream.ssrc for stream in relay_request.streams if stream.codec == "vp8"}
        body["address"] = list(self._to_origin.get_extra_info("sockname")[:2])
        status, reply = await self._forward("/cluster/relay", self.sealer.seal(PURPOSE_REQUEST, body, time.time()))
        if status != 200:
            return web.Response(status=status, body=reply)
        granted = RelayGranted.parse(self.sealer.open(PURPOSE_GRANTED, reply, time.time()))
        self._origin_address = granted.address
        ours = RelayGranted(granted.relay_id, self._to_edge.get_extra_info("sockname")[:2], granted.expires_in)
        return web.Response(status=200, body=self.sealer.seal(PURPOSE_GRANTED, ours.to_body(), time.time()),
                            content_type=CONTENT_TYPE)  # fmt: skip

    async def _pass(self, request: web.Request) -> web.Response:
        status, reply = await self._forward(request.path, await request.read())
        return web.Response(status=status, body=reply)

    async def _forward(self, path: str, sealed: bytes) -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as http, http.post(
            self.origin_control_url + path, data=sealed, headers={"Content-Type": CONTENT_TYPE}
        ) as response:
            return response.status, await response.read()

    def _from_origin(self, data: bytes, address: tuple[str, int]) -> None:
        if self._edge_address is None or self._to_edge is None:
            return
        is_rtp = len(data) >= 12 and 128 <= data[0] <= 191 and not 192 <= data[1] <= 223
        if is_rtp and struct.unpack_from("!I", data, 8)[0] in self.counts.video_ssrcs:
            self._video_packets += 1
            if self._video_packets % self.drop_every == 0:
                self.counts.dropped_video += 1
                return
        self.counts.forwarded_to_edge += 1
        self._to_edge.sendto(data, self._edge_address)

    def _from_edge(self, data: bytes, address: tuple[str, int]) -> None:
        if self._origin_address is None or self._to_origin is None:
            return
        self.counts.forwarded_to_origin += 1
        self._to_origin.sendto(data, self._origin_address)

