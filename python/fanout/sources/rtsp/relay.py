"""RTP and RTCP interleaved on the RTSP connection, handed to the engine's ports.

With RTSP over TCP (RFC 2326 section 10.12) the server's media comes on the control
connection. :class:`MediaRelay` sends each frame's packet, as is, in one UDP datagram
over loopback to the engine's port for it (a track's RTP port or its RTCP port), from
one socket per track; what the engine sends back to that socket (its keyframe
requests and bitrate estimates, which it addresses to where the track's RTCP came
from) goes to the server in the track's RTCP channel. The engine then receives,
caches, records and fans out the stream exactly as if the server had sent it over
UDP: Python touches each packet of the one ingest stream once, never per viewer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from fanout.sources.rtsp.client import Channel
from fanout.sources.rtsp.messages import InterleavedFrame

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnginePorts:
    """Where a track's packets go: the engine's RTP and RTCP ports, bound on ``host``."""

    host: str  # the address the ports are bound on; a wildcard is reached over loopback
    rtp_port: int
    rtcp_port: int

    @property
    def address(self) -> str:
        if self.host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host


class _TrackSocket(asyncio.DatagramProtocol):
    """One track's socket: sends to the engine, takes its RTCP back."""

    def __init__(self, on_rtcp: Callable[[bytes], None]) -> None:
        self.on_rtcp = on_rtcp
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.on_rtcp(data)

    def error_received(self, exc: Exception) -> None:  # e.g. ECONNREFUSED from a closed port
        logger.debug("interleaved relay: %s", exc)


class MediaRelay:
    """Interleaved frames to the engine's ports; the engine's RTCP back as frames.

    :meth:`open` binds a socket per track; :meth:`deliver` takes each frame (those on a
    channel the server was not given are dropped and counted in ``unknown_frames``);
    ``send_frame`` is how frames for the server leave (the connection's writer)."""

    def __init__(self, tracks: list[EnginePorts]) -> None:
        self.tracks = tracks
        self.channels: dict[int, Channel] = {}
        self.send_frame: Callable[[InterleavedFrame], None] = lambda frame: None
        self.unknown_frames = 0
        self.relayed_packets = 0
        self._sockets: list[_TrackSocket] = []

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for index, ports in enumerate(self.tracks):
            _, protocol = await loop.create_datagram_endpoint(
                functools.partial(_TrackSocket, functools.partial(self._engine_rtcp, index)),
                local_addr=(ports.address, 0),
            )
            self._sockets.append(protocol)

    def deliver(self, frame: InterleavedFrame) -> None:
        channel = self.channels.get(frame.channel)
        if channel is None or channel.track >= len(self._sockets):
            self.unknown_frames += 1
            return
        transport = self._sockets[channel.track].transport
        if transport is None or transport.is_closing():
            return
        ports = self.tracks[channel.track]
        transport.sendto(frame.payload, (ports.address, ports.rtcp_port if channel.rtcp else ports.rtp_port))
        self.relayed_packets += 1

    def _engine_rtcp(self, track: int, data: bytes) -> None:
        channel = next((number for number, owner in self.channels.items() if owner == Channel(track, rtcp=True)), None)
        if channel is not None:
            self.send_frame(InterleavedFrame(channel, data))

    def close(self) -> None:
        for track_socket in self._sockets:
            if track_socket.transport is not None:
                track_socket.transport.close()
        self._sockets.clear()
