"""The cluster's media relay: an edge node pulls a mountpoint from its origin node.

To the origin's engine the edge is one more peer (``add_peer``) subscribed to every
source stream of the mountpoint, each simulcast substream as a stream of its own with
its own SSRC. To the edge's engine the origin is the mountpoint's publisher
(``attach_publisher``): one connected UDP socket carrying SRTP for all its streams,
routed by SSRC, answered with SRTCP (NACK, PLI, receiver reports). The edge chooses
the SSRCs and both SRTP keys; they travel sealed under the cluster secret
(:mod:`fanout.cluster.sealed`).

The exchange, on the origin's HTTP transport (bodies sealed, ``application/x-fanout-sealed``)::

    edge                                            origin
     | POST /cluster/relay         RelayRequest ->    | add_peer + subscribe; SRTCP from the
     |                                               | edge's address: the engine's socket
     |                                               | reader takes it (or, without one, the
     |                                               | endpoint routes it to engine.receive_rtcp)
     | <- 200 RelayGranted (sealed: the origin's WebRTC address)
     | connect the socket there; attach_publisher
     | POST /cluster/relay/refresh  (every second)->  | 204; 404 when it does not know the
     |                                               | relay (restarted): the edge asks again
     | POST /cluster/relay/teardown  (linger over)->  | 204; a relay not refreshed for
     |                                               | RELAY_EXPIRY_SECONDS goes by itself

The edge pulls while its mountpoint has viewers (from the first ``watch``) and for
``relay_linger`` seconds after the last one leaves. When the origin is unreachable or
restarts, the edge asks again until it answers; the edge's viewers keep their
PeerConnections (the engine numbers a reattached link's packets on, and starts them
at a keyframe).

Entry point for the registry: a ``MountpointConfig`` with ``relay = RelaySource(...)``
added with ``StreamingPlugin.add_mountpoint`` (see :func:`relay_config`).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import aiohttp
from aiohttp import web

from fanout.cluster.sealed import CONTENT_TYPE, SealedRefused, Sealer
from fanout.plugins.streaming.config import MountpointConfig, MountpointId, RelaySource, StreamConfig
from fanout.plugins.streaming.mountpoint import Mountpoint, source_index

if TYPE_CHECKING:
    from fanout._engine import Engine, PublisherRoute, SrtpProfile, ViewerStream
    from fanout.plugins.streaming.plugin import StreamingPlugin
    from fanout.webrtc.endpoint import WebRtcEndpoint

__all__ = [
    "RelayEdge",
    "RelayGranted",
    "RelayOrigin",
    "RelayRequest",
    "RelaySource",
    "RelayStream",
    "relay_config",
]

logger = logging.getLogger(__name__)

RELAY_PATH = "/cluster/relay"
REFRESH_PATH = "/cluster/relay/refresh"
TEARDOWN_PATH = "/cluster/relay/teardown"
# The sealed messages' purposes (their associated data): one cannot be played as another.
PURPOSE_REQUEST = "relay-request"
PURPOSE_GRANTED = "relay-granted"
PURPOSE_REFRESH = "relay-refresh"
PURPOSE_TEARDOWN = "relay-teardown"

SRTP_PROFILE: SrtpProfile = "AEAD_AES_128_GCM"
MASTER_KEY_LENGTHS = {"AEAD_AES_128_GCM": 28, "AES_CM_128_HMAC_SHA1_80": 30}
REFRESH_INTERVAL_SECONDS = 1.0  # the edge's refreshes
RELAY_EXPIRY_SECONDS = 5.0  # the origin drops a relay not refreshed for this long
REQUEST_TIMEOUT_SECONDS = 2.0
RETRY_DELAYS_SECONDS = (0.25, 0.5, 1.0, 2.0)  # the edge's waits between failed requests, then the last one
# The origin's engine peer ids of relays: above every handle id (handle ids are below 2**53).
FIRST_RELAY_PEER_ID = 2**53
MAX_RELAY_STREAMS = 64 * 3  # a mountpoint's streams, each up to three substreams
LOG_REFUSALS_EVERY_SECONDS = 10.0
# The edge's relay socket: the origin's keyframe-cache burst arrives before the edge attaches it.
RELAY_RECEIVE_BUFFER = 4 << 20


class RelayMessageError(ValueError):
    """A relay message without the fields it must have (a 400)."""


# --- the messages --------------------------------------------------------------------


@dataclass(frozen=True)
class RelayStream:
    """One source stream the edge wants: a stream of the mountpoint (by mid), one of its
    simulcast substreams (0 without simulcast), and the SSRC it gets it with."""

    mid: str
    substream: int
    ssrc: int
    codec: str  # the edge's idea of the stream's codec; the origin refuses a mismatch
    payload_type: int  # the edge's: the origin sends it so (the edge's ingest takes only its own)

    def to_body(self) -> dict[str, Any]:
        return {"mid": self.mid, "substream": self.substream, "ssrc": self.ssrc, "codec": self.codec,
                "payload_type": self.payload_type}  # fmt: skip

    @classmethod
    def parse(cls, body: Any) -> RelayStream:
        if not isinstance(body, dict):
            raise RelayMessageError("each of 'streams' must be an object")
        return cls(
            mid=_field(body, "mid", str),
            substream=_integer(body, "substream", 0, 2),
            ssrc=_integer(body, "ssrc", 1, 2**32 - 1),
            codec=_field(body, "codec", str),
            payload_type=_integer(body, "payload_type", 0, 127),
        )


@dataclass(frozen=True)
class RelayRequest:
    """The edge asks the origin to relay one mountpoint to its relay socket."""

    relay_id: str  # the edge's name for this relay, the same while it pulls
    edge: str  # the edge's node name (logs)
    mountpoint: MountpointId  # the origin's mountpoint
    address: tuple[str, int]  # the edge's relay socket
    srtp_profile: SrtpProfile
    origin_key: bytes  # master key || salt that protects the origin's SRTP (and its SRTCP)
    edge_key: bytes  # master key || salt that protects the edge's SRTCP
    streams: tuple[RelayStream, ...]

    def to_body(self) -> dict[str, Any]:
        return {
            "relay_id": self.relay_id,
            "edge": self.edge,
            "mountpoint": self.mountpoint,
            "address": [self.address[0], self.address[1]],
            "srtp_profile": self.srtp_profile,
            "origin_key": base64.b64encode(self.origin_key).decode(),
            "edge_key": base64.b64encode(self.edge_key).decode(),
            "streams": [stream.to_body() for stream in self.streams],
        }

    @classmethod
    def parse(cls, body: dict[str, Any]) -> RelayRequest:
        mountpoint = body.get("mountpoint")
        if isinstance(mountpoint, bool) or not isinstance(mountpoint, (int, str)):
            raise RelayMessageError("'mountpoint' must be a mountpoint id (a number or a string)")
        profile = _field(body, "srtp_profile", str)
        if profile not in MASTER_KEY_LENGTHS:
            raise RelayMessageError(f"'srtp_profile' must be one of {sorted(MASTER_KEY_LENGTHS)}")
        keys = [_key(body, name, MASTER_KEY_LENGTHS[profile]) for name in ("origin_key", "edge_key")]
        streams = body.get("streams")
        if not isinstance(streams, list) or not 0 < len(streams) <= MAX_RELAY_STREAMS:
            raise RelayMessageError(f"'streams' must be a list of 1 to {MAX_RELAY_STREAMS} streams")
        parsed = tuple(RelayStream.parse(stream) for stream in streams)
        ssrcs = [stream.ssrc for stream in parsed]
        if len(set(ssrcs)) != len(ssrcs):
            raise RelayMessageError("two streams have one SSRC")
        if len({(stream.mid, stream.substream) for stream in parsed}) != len(parsed):
            raise RelayMessageError("a stream is asked for twice")
        return cls(
            relay_id=_token(body, "relay_id"),
            edge=_token(body, "edge"),
            mountpoint=mountpoint,
            address=_address(body, "address"),
            srtp_profile=cast("SrtpProfile", profile),
            origin_key=keys[0],
            edge_key=keys[1],
            streams=parsed,
        )


@dataclass(frozen=True)
class RelayGranted:
    """The origin's answer: it sends the relay from its WebRTC endpoint at ``address``."""

    relay_id: str
    address: tuple[str, int]
    expires_in: float  # seconds without a refresh after which the origin drops the relay

    def to_body(self) -> dict[str, Any]:
        return {"relay_id": self.relay_id, "address": [self.address[0], self.address[1]], "expires_in": self.expires_in}

    @classmethod
    def parse(cls, body: dict[str, Any]) -> RelayGranted:
        expires_in = body.get("expires_in")
        if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or not expires_in > 0:
            raise RelayMessageError("'expires_in' must be a positive number of seconds")
        return cls(relay_id=_token(body, "relay_id"), address=_address(body, "address"), expires_in=float(expires_in))


def relay_id_of(body: dict[str, Any]) -> str:
    """The relay a refresh or teardown names."""
    return _token(body, "relay_id")


def _field(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise RelayMessageError(f"'{name}' must be a {kind.__name__}")
    return value


def _integer(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = _field(body, name, int)
    if not low <= value <= high:
        raise RelayMessageError(f"'{name}' must be in {low}..{high}")
    return int(value)


def _token(body: dict[str, Any], name: str) -> str:
    value = _field(body, name, str)
    if not 0 < len(value) <= 128 or not value.isprintable():
        raise RelayMessageError(f"'{name}' must be 1 to 128 printable characters")
    return str(value)


def _key(body: dict[str, Any], name: str, length: int) -> bytes:
    try:
        key = base64.b64decode(_field(body, name, str), validate=True)
    except ValueError:  # binascii.Error, or a character outside ASCII
        key = b""
    if len(key) != length:
        raise RelayMessageError(f"'{name}' must be the base64 of {length} bytes (master key and salt)")
    return key


def _address(body: dict[str, Any], name: str) -> tuple[str, int]:
    value = body.get(name)
    if not isinstance(value, list) or len(value) != 2:
        raise RelayMessageError(f"'{name}' must be [ip, port]")
    host, port = value
    try:
        ip = ipaddress.ip_address(host) if isinstance(host, str) else None
    except ValueError:
        ip = None
    if ip is None or ip.is_unspecified or ip.is_multicast:
        raise RelayMessageError(f"'{name}' must hold a unicast IP address")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise RelayMessageError(f"'{name}' must hold a port number")
    return str(ip), port


# --- the layout ----------------------------------------------------------------------


def relay_config(config: MountpointConfig, source: RelaySource) -> MountpointConfig:
    """The mountpoint that serves the origin's ``config`` on an edge, fed by its relay: the
    same streams, without the origin's own ports, keys, data stream or test source."""
    streams = tuple(dataclasses.replace(stream, port=0, rtcp_port=None, multicast_interface=None) for stream in config.streams)
    return dataclasses.replace(
        config, streams=streams, testsource=False, srtp=None, data=None, rtsp=None, collision_ms=0, relay=source
    )


def relay_streams(config: MountpointConfig) -> list[tuple[StreamConfig, int]]:
    """Every source stream a relay carries: (stream, substream), each substream of a simulcast stream."""
    return [(stream, substream) for stream in config.streams for substream in range(stream.substreams)]


# --- the origin ------------------------------------------------------------------------


@dataclass
class _OriginRelay:
    relay_id: str
    edge: str
    mountpoint_id: MountpointId
    engine_id: int
    peer_id: int
    address: tuple[str, int]
    expiry: asyncio.TimerHandle | None = None


class RelayOrigin:
    """The origin's side: relays asked for by edges, as engine peers of its mountpoints."""

    def __init__(
        self,
        plugin: StreamingPlugin,
        endpoint: WebRtcEndpoint,
        sealer: Sealer,
        webrtc_address: tuple[str, int],
        *,
        expiry: float = RELAY_EXPIRY_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.plugin = plugin
        self.endpoint = endpoint
        self.sealer = sealer
        self.webrtc_address = webrtc_address  # where edges connect their relay sockets
        self.expiry = expiry
        self.clock = clock
        self.relays: dict[str, _OriginRelay] = {}
        self.counts: Counter[str] = Counter()  # granted, refused, expired, torn_down, rtcp, rtcp_dropped
        self._next_peer_id = FIRST_RELAY_PEER_ID
        self._refusals_logged_at: dict[str, float] = {}

    @property
    def engine(self) -> Engine:
        return self.plugin.engine

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(RELAY_PATH, self._request),
            web.post(REFRESH_PATH, self._refresh),
            web.post(TEARDOWN_PATH, self._teardown),
        ]

    def close(self) -> None:
        for relay_id in list(self.relays):
            self._drop(relay_id)

    async def _open(self, request: web.Request, purpose: str) -> dict[str, Any] | web.Response:
        """The request's sealed body, or the response that refuses it (logged and counted)."""
        try:
            if request.content_type != CONTENT_TYPE:
                raise SealedRefused("malformed", 415, f"a cluster message is sent as {CONTENT_TYPE}")
            return self.sealer.open(purpose, await request.read(), self.clock())
        except SealedRefused as refused:
            if refused.status == 415:
                self.sealer.refusals[refused.kind] += 1
            self._log_refusal(request, refused.kind, refused.reason)
            return web.Response(status=refused.status, text=refused.reason + "\n")

    def _log_refusal(self, request: web.Request, kind: str, reason: str) -> None:
        """A warning per kind of refusal at most every LOG_REFUSALS_EVERY_SECONDS (a flood
        of forged messages does not flood the log); the counters have them all."""
        self.counts["refused"] += 1
        now = time.monotonic()
        last = self._refusals_logged_at.get(kind)
        if last is not None and now - last < LOG_REFUSALS_EVERY_SECONDS:
            logger.debug("cluster relay: refused a message from %s: %s", request.remote, reason)
            return
        self._refusals_logged_at[kind] = now
        logger.warning(
            "cluster relay: refused a message from %s (%s): %s; %d refused so far",
            request.remote, kind, reason, self.counts["refused"],
        )  # fmt: skip

    async def _request(self, request: web.Request) -> web.Response:
        body = await self._open(request, PURPOSE_REQUEST)
        if isinstance(body, web.Response):
            return body
        try:
            relay_request = RelayRequest.parse(body)
        except RelayMessageError as error:
            self._log_refusal(request, "malformed", f"a relay request {error}")
            return web.Response(status=400, text=f"{error}\n")
        try:
            granted = self.grant(relay_request)
        except _Refusal as refusal:
            self._log_refusal(request, "refused", refusal.reason)
            return web.Response(status=refusal.status, text=refusal.reason + "\n")
        sealed = self.sealer.seal(PURPOSE_GRANTED, granted.to_body(), self.clock())
        return web.Response(status=200, body=sealed, content_type=CONTENT_TYPE)

    def grant(self, request: RelayRequest) -> RelayGranted:
        """Add the relay's engine peer, subscribed to the streams it asks for (a relay with
        this id already: replaced). _Refusal if the mountpoint cannot be relayed so."""
        mountpoint = self.plugin.mountpoints.get(request.mountpoint)
        if mountpoint is None:
            raise _Refusal(404, f"no mountpoint {request.mountpoint} here")
        if mountpoint.config.relay is not None and mountpoint.config.relay.origin_node == request.edge:
            raise _Refusal(409, f"mountpoint {request.mountpoint} is relayed from {request.edge} itself")
        streams: list[ViewerStream] = []
        for wanted in request.streams:
            stream = mountpoint.stream(wanted.mid)
            if stream is None:
                raise _Refusal(409, f"mountpoint {request.mountpoint} has no stream '{wanted.mid}'")
            if stream.codec.name != wanted.codec:
                raise _Refusal(409, f"stream '{wanted.mid}' is {stream.codec.name} here, not {wanted.codec}")
            if wanted.substream >= stream.substreams:
                raise _Refusal(409, f"stream '{wanted.mid}' has no substream {wanted.substream}")
            streams.append(
                {"index": source_index(stream, wanted.substream), "ssrc": wanted.ssrc, "payload_type": wanted.payload_type}
            )
        self._drop(request.relay_id)  # asked again (the edge lost our answer, or reattaches): the new one wins
        peer_id = self._next_peer_id
        self._next_peer_id += 1
        try:
            self.engine.add_peer(peer_id, request.address, request.srtp_profile, request.origin_key, request.edge_key)
        except (ValueError, RuntimeError) as error:
            raise _Refusal(400, f"the engine refused the relay: {error}") from None
        try:
            self.engine.subscribe(peer_id, mountpoint.engine_id, streams)
        except (KeyError, ValueError, RuntimeError) as error:
            self.engine.remove_peer(peer_id)
            raise _Refusal(409, f"the engine refused the relay's streams: {error}") from None
        relay = _OriginRelay(request.relay_id, request.edge, mountpoint.id, mountpoint.engine_id, peer_id, request.address)
        self.relays[relay.relay_id] = relay
        if mountpoint.config.relay is not None:  # a tree: this node's own relay is pulled while it relays on
            mountpoint.add_viewer(peer_id)
        self.endpoint.route_address(relay.address, lambda data: self._receive_rtcp(relay, data))
        self._arm_expiry(relay)
        self.counts["granted"] += 1
        logger.info(
            "cluster relay %s: mountpoint %s to %s at %s:%d (%d streams)",
            relay.relay_id, mountpoint.id, request.edge, *request.address, len(streams),
        )  # fmt: skip
        return RelayGranted(relay.relay_id, self.webrtc_address, self.expiry)

    def _receive_rtcp(self, relay: _OriginRelay, data: bytes) -> None:
        """The edge's SRTCP (NACKs: the engine resends; PLIs: on to the source)."""
        if not data or not 128 <= data[0] <= 191:
            self.counts["rtcp_dropped"] += 1
            return
        try:
            self.engine.receive_rtcp(relay.peer_id, data)
        except (KeyError, ValueError) as error:
            self.counts["rtcp_dropped"] += 1
            logger.debug("cluster relay %s: RTCP dropped: %s", relay.relay_id, error)
            return
        self.counts["rtcp"] += 1

    async def _refresh(self, request: web.Request) -> web.Response:
        return await self._about_relay(request, PURPOSE_REFRESH, self._refreshed)

    async def _teardown(self, request: web.Request) -> web.Response:
        return await self._about_relay(request, PURPOSE_TEARDOWN, self._torn_down)

    async def _about_relay(
        self, request: web.Request, purpose: str, act: Callable[[_OriginRelay], None]
    ) -> web.Response:
        body = await self._open(request, purpose)
        if isinstance(body, web.Response):
            return body
        try:
            relay_id = relay_id_of(body)
        except RelayMessageError as error:
            self._log_refusal(request, "malformed", str(error))
            return web.Response(status=400, text=f"{error}\n")
        relay = self.relays.get(relay_id)
        if relay is not None and not self._still_subscribed(relay):
            self._drop(relay_id)
            relay = None
        if relay is None:
            return web.Response(status=404, text=f"no relay {relay_id} here\n")
        act(relay)
        return web.Response(status=204)

    def _still_subscribed(self, relay: _OriginRelay) -> bool:
        """Its mountpoint is still the one it subscribed to (not destroyed, nor made again)."""
        mountpoint = self.plugin.mountpoints.get(relay.mountpoint_id)
        return mountpoint is not None and mountpoint.engine_id == relay.engine_id

    def _refreshed(self, relay: _OriginRelay) -> None:
        self._arm_expiry(relay)

    def _torn_down(self, relay: _OriginRelay) -> None:
        logger.info("cluster relay %s: %s tore it down", relay.relay_id, relay.edge)
        self.counts["torn_down"] += 1
        self._drop(relay.relay_id)

    def _arm_expiry(self, relay: _OriginRelay) -> None:
        if relay.expiry is not None:
            relay.expiry.cancel()
        relay.expiry = asyncio.get_running_loop().call_later(self.expiry, self._expired, relay.relay_id)

    def _expired(self, relay_id: str) -> None:
        relay = self.relays.get(relay_id)
        if relay is not None:
            logger.info("cluster relay %s: %s stopped refreshing it; dropped", relay_id, relay.edge)
            self.counts["expired"] += 1
            self._drop(relay_id)

    def _drop(self, relay_id: str) -> None:
        relay = self.relays.pop(relay_id, None)
        if relay is None:
            return
        if relay.expiry is not None:
            relay.expiry.cancel()
        self.endpoint.unroute_address(relay.address)
        mountpoint = self.plugin.mountpoints.get(relay.mountpoint_id)
        if mountpoint is not None and mountpoint.engine_id == relay.engine_id:
            mountpoint.remove_viewer(relay.peer_id)
        try:
            self.engine.remove_peer(relay.peer_id)
        except RuntimeError:  # the engine closed first (shutdown)
            pass


class _Refusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# --- the edge --------------------------------------------------------------------------


class RelayUnavailable(Exception):
    """The origin did not grant the relay (unreachable, refused, or an answer not sealed right)."""


class RelayEdge:
    """The edge's side: pulls each relay mountpoint from its origin while it has viewers
    (the Streaming plugin's ``relay_feeder``)."""

    def __init__(
        self,
        engine: Engine,
        sealer: Sealer,
        *,
        node_name: str,
        relay_address: str,
        linger: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.sealer = sealer
        self.node_name = node_name
        self.relay_address = relay_address  # where relay sockets bind
        self.linger = linger
        self.clock = clock
        self.pulls: dict[MountpointId, RelayPull] = {}
        self._http: aiohttp.ClientSession | None = None
        self._closing: set[asyncio.Task[None]] = set()

    # RelayFeeder
    def opened(self, mountpoint: Mountpoint) -> None:
        pull = RelayPull(self, mountpoint)
        self.pulls[mountpoint.id] = pull
        mountpoint.on_viewers_changed = pull.viewers_changed
        if mountpoint.viewers:
            pull.viewers_changed(len(mountpoint.viewers))

    def closed(self, mountpoint: Mountpoint) -> None:
        mountpoint.on_viewers_changed = None
        pull = self.pulls.pop(mountpoint.id, None)
        if pull is not None:
            self._spawn(pull.stop())

    async def stop(self) -> None:
        for pull in list(self.pulls.values()):
            self._spawn(pull.stop())
        self.pulls.clear()
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=REQUEST_TIMEOUT_SECONDS + 1)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def post(self, url: str, purpose: str, body: dict[str, Any]) -> tuple[int, bytes]:
        """POST a sealed message: the answer's status and body. OSError or TimeoutError if none came."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS))
        sealed = self.sealer.seal(purpose, body, self.clock())
        try:
            async with self._http.post(url, data=sealed, headers={"Content-Type": CONTENT_TYPE}) as response:
                return response.status, await response.read()
        except aiohttp.ClientError as error:
            raise OSError(str(error) or type(error).__name__) from None


class RelayPull:
    """One relay mountpoint on the edge: pulled while it has viewers, and ``linger`` after."""

    def __init__(self, edge: RelayEdge, mountpoint: Mountpoint) -> None:
        assert mountpoint.config.relay is not None
        self.edge = edge
        self.mountpoint = mountpoint
        self.source: RelaySource = mountpoint.config.relay
        self.task: asyncio.Task[None] | None = None
        self.linger_timer: asyncio.TimerHandle | None = None
        self.relay_id: str | None = None  # while pulling
        self._previous: asyncio.Task[None] | None = None  # the pull before, maybe still letting go
        self.granted: RelayGranted | None = None  # while the origin relays
        self.requests = 0
        self.grants = 0

    @property
    def origin_mountpoint(self) -> MountpointId:
        origin = self.source.origin_mountpoint
        return self.mountpoint.id if origin is None else origin

    def viewers_changed(self, viewers: int) -> None:
        if viewers > 0:
            if self.linger_timer is not None:
                self.linger_timer.cancel()
                self.linger_timer = None
            if self.task is None:
                self.relay_id = f"{self.edge.node_name}/{self.mountpoint.id}/{secrets.token_hex(4)}"
                self.task = asyncio.get_running_loop().create_task(self._pull(self.relay_id, self._previous))
        elif self.task is not None and self.linger_timer is None:
            self.linger_timer = asyncio.get_running_loop().call_later(self.edge.linger, self._linger_over)

    def _linger_over(self) -> None:
        self.linger_timer = None
        logger.info("relay of mountpoint %s: no viewer for %g s; the relay stops", self.mountpoint.id, self.edge.linger)
        ending = self._halt()
        if ending is not None:
            self.edge._spawn(ending)

    async def stop(self) -> None:
        """Stop pulling (detach, close the socket) and tell the origin."""
        ending = self._halt()
        if ending is not None:
            await ending

    def _halt(self) -> Coroutine[Any, Any, None] | None:
        """Stop pulling now (a viewer coming next starts a new pull, which waits for this one's
        end); the coroutine returned tells the origin once the pull has let go of the link."""
        if self.linger_timer is not None:
            self.linger_timer.cancel()
            self.linger_timer = None
        task, self.task = self.task, None
        relay_id, self.relay_id = self.relay_id, None
        if task is None or relay_id is None:
            return None
        task.cancel()
        self._previous = task
        return self._tear_down(task, relay_id)

    async def _tear_down(self, task: asyncio.Task[None], relay_id: str) -> None:
        await asyncio.gather(task, return_exceptions=True)
        try:
            await self.edge.post(self.source.origin_url + TEARDOWN_PATH, PURPOSE_TEARDOWN, {"relay_id": relay_id})
        except (OSError, TimeoutError) as error:
            logger.info("relay of mountpoint %s: the teardown did not reach %s (%s); it expires there",
                        self.mountpoint.id, self.source.origin_node, error)  # fmt: skip

    async def _pull(self, relay_id: str, previous: asyncio.Task[None] | None) -> None:
        """Ask, attach, refresh; ask again whenever the origin forgets or cannot be reached."""
        if previous is not None:  # the pull before this one detaches first
            await asyncio.gather(previous, return_exceptions=True)
        sock = socket.socket(socket.AF_INET6 if ":" in self.edge.relay_address else socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RELAY_RECEIVE_BUFFER)  # the origin's first burst waits here
        sock.bind((self.edge.relay_address, 0))
        local: tuple[str, int] = sock.getsockname()[:2]
        layout = relay_streams(self.mountpoint.config)
        ssrcs = _distinct_ssrcs(len(layout))
        routes: list[PublisherRoute] = [
            {"index": source_index(stream, substream), "ssrc": ssrc} for (stream, substream), ssrc in zip(layout, ssrcs)
        ]
        streams = tuple(
            RelayStream(stream.mid, substream, ssrc, stream.codec.name, stream.payload_type)
            for (stream, substream), ssrc in zip(layout, ssrcs)
        )
        failures = 0
        attached = False
        try:
            while True:
                key_length = MASTER_KEY_LENGTHS[SRTP_PROFILE]
                request = RelayRequest(
                    relay_id=relay_id,
                    edge=self.edge.node_name,
                    mountpoint=self.origin_mountpoint,
                    address=local,
                    srtp_profile=SRTP_PROFILE,
                    origin_key=os.urandom(key_length),
                    edge_key=os.urandom(key_length),
                    streams=streams,
                )
                try:
                    granted = await self._ask(request)
                    sock.connect(granted.address)
                    self.edge.engine.attach_publisher(
                        self.mountpoint.engine_id, sock.fileno(), SRTP_PROFILE, request.edge_key, request.origin_key,
                        routes,
                    )  # fmt: skip
                except (RelayUnavailable, OSError, KeyError, ValueError, RuntimeError) as error:
                    delay = RETRY_DELAYS_SECONDS[min(failures, len(RETRY_DELAYS_SECONDS) - 1)]
                    log = logger.warning if failures == 0 else logger.debug
                    log("relay of mountpoint %s from %s: %s; asking again every %g s or so",
                        self.mountpoint.id, self.source.origin_node, error, RETRY_DELAYS_SECONDS[-1])  # fmt: skip
                    failures += 1
                    await asyncio.sleep(delay)
                    continue
                attached = True
                self.granted = granted
                self.grants += 1
                if failures:
                    logger.info("relay of mountpoint %s from %s: granted again", self.mountpoint.id, self.source.origin_node)
                failures = 0
                await self._keep_refreshing(granted)
                # The origin forgot the relay (it restarted): the link waits, detached, for the new keys.
                self.granted = None
                self.edge.engine.detach_publisher(self.mountpoint.engine_id)
                attached = False
        finally:
            self.granted = None
            if attached:
                try:
                    self.edge.engine.detach_publisher(self.mountpoint.engine_id)
                except (KeyError, RuntimeError):  # the mountpoint or the engine went first
                    pass
            sock.close()

    async def _ask(self, request: RelayRequest) -> RelayGranted:
        self.requests += 1
        url = self.source.origin_url + RELAY_PATH
        try:
            status, body = await self.edge.post(url, PURPOSE_REQUEST, request.to_body())
        except (OSError, TimeoutError) as error:
            raise RelayUnavailable(f"{url} unreachable ({error or type(error).__name__})") from None
        if status != 200:
            reason = body.decode("utf-8", "replace").strip()[:200]
            raise RelayUnavailable(f"{url} answered {status}: {reason}")
        try:
            granted = RelayGranted.parse(self.edge.sealer.open(PURPOSE_GRANTED, body, self.edge.clock()))
        except (SealedRefused, RelayMessageError) as error:
            raise RelayUnavailable(f"{url} answered what does not open as a grant: {error}") from None
        if granted.relay_id != request.relay_id:
            raise RelayUnavailable(f"{url} granted relay {granted.relay_id}, not {request.relay_id}")
        return granted

    async def _keep_refreshing(self, granted: RelayGranted) -> None:
        """Refresh until the origin says it does not know the relay; an origin that cannot be
        reached is tried again (if it stays away past the expiry, it will have forgotten)."""
        url = self.source.origin_url + REFRESH_PATH
        while True:
            await asyncio.sleep(REFRESH_INTERVAL_SECONDS)
            try:
                status, _ = await self.edge.post(url, PURPOSE_REFRESH, {"relay_id": granted.relay_id})
            except (OSError, TimeoutError) as error:
                logger.debug("relay of mountpoint %s: refresh failed: %s", self.mountpoint.id, error)
                continue
            if status == 404:
                logger.warning("relay of mountpoint %s: %s no longer knows the relay (restarted?); asking again",
                               self.mountpoint.id, self.source.origin_node)  # fmt: skip
                return
            if status != 204:
                logger.warning("relay of mountpoint %s: refresh answered %d", self.mountpoint.id, status)
                if status in (400, 403):
                    return


def _distinct_ssrcs(count: int) -> list[int]:
    ssrcs: list[int] = []
    while len(ssrcs) < count:
        ssrc = secrets.randbits(32)
        if ssrc and ssrc not in ssrcs:
            ssrcs.append(ssrc)
    return ssrcs

