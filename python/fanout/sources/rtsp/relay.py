"""RTP and RTCP interleaved on the RTSP connection, handed to the engine's ports.

With RTSP over TCP (RFC 2326 section 10.12) the server's media comes on the control
connection. The connection's reader hands each chunk it reads to the parser, which
gives each run of whole frames to :meth:`MediaRelay.relay_frames`: the engine's
:class:`~fanout._engine.InterleavedRelay` sends every frame's packet, as is, in one
UDP datagram over loopback to the engine's port for it (a track's RTP port or its
RTCP port), from one socket per track, with no Python per packet. What the engine
sends back to that socket (its keyframe requests and bitrate estimates, which it
addresses to where the track's RTCP came from) goes to the server in the track's
RTCP channel. The engine then receives, caches, records and fans out the stream
exactly as if the server had sent it over UDP.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from fanout._engine import InterleavedRelay
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
    """One track's socket: the engine's relay sends from it; the engine's RTCP comes back to it."""

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

    :meth:`open` binds a socket per track; ``channels`` (the RTSP client's, filled in as
    each SETUP is answered) says whose each channel is; :meth:`relay_frames` is the
    parser's frame relay; ``send_frame`` is how frames for the server leave."""

    def __init__(self, tracks: list[EnginePorts]) -> None:
        self.tracks = tracks
        self.channels: dict[int, Channel] = {}
        self.send_frame: Callable[[InterleavedFrame], None] = lambda frame: None
        self._sockets: list[_TrackSocket] = []
        self._engine_relay: InterleavedRelay | None = None  # made at the first frame: all SETUPs answered

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for index, ports in enumerate(self.tracks):
            _, protocol = await loop.create_datagram_endpoint(
                functools.partial(_TrackSocket, functools.partial(self._engine_rtcp, index)),
                local_addr=(ports.address, 0),
            )
            self._sockets.append(protocol)

    def relay_frames(self, buffer: bytearray, start: int) -> int:
        """Sends on the whole frames from ``start`` of ``buffer`` (ValueError for one longer
        than the engine takes); where the first thing that is not a whole frame starts."""
        if self._engine_relay is None:
            self._engine_relay = InterleavedRelay(self._routes())
        return self._engine_relay.relay(buffer, start)

    @property
    def relayed_packets(self) -> int:
        return self._engine_relay.relayed if self._engine_relay is not None else 0

    @property
    def unknown_frames(self) -> int:
        """Frames on a channel the server was not given: dropped."""
        return self._engine_relay.unknown if self._engine_relay is not None else 0

    def _routes(self) -> list[tuple[int, int, tuple[str, int]]]:
        routes = []
        for number, channel in self.channels.items():
            transport = self._sockets[channel.track].transport if channel.track < len(self._sockets) else None
            if transport is None:
                continue
            ports = self.tracks[channel.track]
            fd = transport.get_extra_info("socket").fileno()
            routes.append((number, fd, (ports.address, ports.rtcp_port if channel.rtcp else ports.rtp_port)))
        return routes

    def _engine_rtcp(self, track: int, data: bytes) -> None:
        channel = next((number for number, owner in self.channels.items() if owner == Channel(track, rtcp=True)), None)
        if channel is not None:
            self.send_frame(InterleavedFrame(channel, data))

    def close(self) -> None:
        for track_socket in self._sockets:
            if track_socket.transport is not None:
                track_socket.transport.close()
        self._sockets.clear()
