"""WHIP's HTTP side (RFC 9725), served by the HTTP transport next to the Janus API and WHEP.

``POST /whip/endpoint/<mountpoint id>`` (application/sdp offer, ``Authorization:
Bearer <token>``) -> ``201`` with the answer, ``Location: /whip/resource/<id>`` and
an ``ETag``. The resource takes ``PATCH`` (application/trickle-ice-sdpfrag): trickled
candidates -> ``204``; new ICE credentials, an ICE restart, -> ``200`` with fanout's
new ones and a new ``ETag`` (it needs ``If-Match``: ``428`` without, ``412`` when it
is not ``*`` or the current ETag; a trickle with a stale ``If-Match`` gets ``412``
too). ``DELETE`` -> ``200``. ``OPTIONS`` on the endpoint answers CORS preflights
with ``Accept-Post: application/sdp``.

Errors: ``415`` a body of another type, ``401`` a missing or wrong token (the
mountpoint's ``whip_token``; with ``token_auth``, a stored token also does), ``404``
no such mountpoint (or one that is not ``whip``), ``409`` the mountpoint has a live
publisher, ``400`` SDP fanout cannot read, ``422`` no offered codec fits the
mountpoint's streams, ``503`` fanout could not make the link. The ``201`` carries the
configured STUN/TURN servers (janus.jcfg's ``nat`` group) as ``Link: <url>;
rel="ice-server"`` headers, TURN credentials minted afresh for each publisher.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from fanout._engine import PublisherDatagram
from fanout.config.settings import IceServerSettings
from fanout.webrtc.ice_servers import link_header_values
from fanout.whep.sdpfrag import SdpFragError, parse_sdpfrag
from fanout.whip.offer import WhipOfferError, read_offer
from fanout.whip.publisher import WhipPublisher

if TYPE_CHECKING:
    from fanout._engine import Engine
    from fanout.core.gateway import Gateway
    from fanout.engine_events import EngineEvents
    from fanout.plugins.streaming.mountpoint import Mountpoint
    from fanout.plugins.streaming.plugin import StreamingPlugin
    from fanout.webrtc.endpoint import WebRtcEndpoint

logger = logging.getLogger(__name__)

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
ENDPOINT_PATH = "/whip/endpoint/{mountpoint}"
RESOURCE_PATH = "/whip/resource/{resource}"
EXPOSED_HEADERS = "Location, ETag, Accept-Patch, Accept-Post, Link"
ALLOWED_HEADERS = "Authorization, Content-Type, If-Match"
STREAMING = "janus.plugin.streaming"


class WhipService:
    """The WHIP endpoints of one server and the publishers (resources) they made."""

    def __init__(
        self,
        plugin: StreamingPlugin,
        endpoint: WebRtcEndpoint,
        engine: Engine,
        events: EngineEvents,
        gateway: Gateway | None = None,
        ice_server_settings: IceServerSettings | None = None,
    ) -> None:
        self.plugin = plugin
        self.ice_server_settings = ice_server_settings or IceServerSettings()
        self.endpoint = endpoint
        self.engine = engine
        self.gateway = gateway  # its stored tokens, with token_auth
        self.publishers: dict[str, WhipPublisher] = {}  # by resource id
        events.subscribe(PublisherDatagram, self._publisher_datagram)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(ENDPOINT_PATH, self._create),
            web.options(ENDPOINT_PATH, self._options),
            web.patch(RESOURCE_PATH, self._patch),
            web.delete(RESOURCE_PATH, self._delete),
            web.options(RESOURCE_PATH, self._options),
        ]

    async def stop(self) -> None:
        for publisher in list(self.publishers.values()):
            publisher.stop("fanout stops")
        self.publishers.clear()

    def publisher_of(self, mountpoint: Mountpoint) -> WhipPublisher | None:
        return next((p for p in self.publishers.values() if p.mountpoint is mountpoint and not p.stopped), None)

    async def _options(self, request: web.Request) -> web.Response:
        return web.Response(
            status=204,
            headers={
                "Accept-Post": SDP,
                "Accept-Patch": SDPFRAG,
                "Access-Control-Allow-Methods": "OPTIONS, POST, PATCH, DELETE",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Expose-Headers": EXPOSED_HEADERS,
            },
        )

    async def _create(self, request: web.Request) -> web.Response:
        mountpoint = self._mountpoint(request.match_info["mountpoint"])
        if mountpoint is None or mountpoint.config.whip is None:
            return _error(404, f"no whip mountpoint {request.match_info['mountpoint']}")
        if not self._authorized(request, mountpoint):
            return _error(401, "a Bearer token this mountpoint takes is needed", unauthorized=True)
        if request.content_type != SDP:
            return _error(415, f"the offer must be sent as {SDP}")
        current = self.publisher_of(mountpoint)
        if current is not None:
            if current.holds_mountpoint():
                return _error(409, f"mountpoint {mountpoint.id} has a live publisher")
            current.stop("replaced by a new publisher")
            self._forget(current)
        try:
            text = await request.text()
        except UnicodeDecodeError:
            return _error(400, "the offer is not text")
        try:
            offer = read_offer(text, mountpoint.config.streams)
        except WhipOfferError as error:
            return _error(error.status, str(error))
        publisher = WhipPublisher(
            mountpoint, offer, self.endpoint, self.engine, self._forget, self.plugin.lowest_viewer_estimate
        )
        try:
            answer = publisher.start()
        except ValueError as error:
            publisher.stop("refused")
            return _error(400, f"unusable offer: {error}")
        self.publishers[publisher.id] = publisher
        logger.info("WHIP resource %s publishes to mountpoint %s", publisher.id, mountpoint.id)
        headers = CIMultiDict(
            {
                "Content-Type": SDP,
                "Location": RESOURCE_PATH.format(resource=publisher.id),
                "ETag": publisher.etag,
                "Accept-Patch": SDPFRAG,
                "Access-Control-Expose-Headers": EXPOSED_HEADERS,
            }
        )
        for link in link_header_values(self.ice_server_settings, time.time()):
            headers.add("Link", link)
        return web.Response(status=201, body=answer.encode(), headers=headers)

    async def _patch(self, request: web.Request) -> web.Response:
        publisher = self.publishers.get(request.match_info["resource"])
        if publisher is None:
            return _error(404, "no such WHIP resource")
        if not self._authorized(request, publisher.mountpoint):
            return _error(401, "a Bearer token this mountpoint takes is needed", unauthorized=True)
        if request.content_type != SDPFRAG:
            return _error(415, f"a PATCH must be sent as {SDPFRAG}")
        try:
            fragment = parse_sdpfrag(await request.text())
        except (SdpFragError, UnicodeDecodeError) as error:
            return _error(400, f"malformed SDP fragment: {error}")
        if_match = request.headers.get("If-Match")
        remote = publisher.peer.remote_description
        restart = fragment.ice_ufrag is not None and remote is not None and fragment.ice_ufrag != remote.ice_ufrag
        if restart:
            if if_match is None:
                return _error(428, "an ICE restart needs If-Match")
            if if_match not in ("*", publisher.etag):
                return _error(412, "the resource's ETag has changed")
            if not fragment.ice_pwd:
                return _error(400, "an ICE restart needs the new ice-pwd")
            body = publisher.restart_ice(fragment.ice_ufrag or "", fragment.ice_pwd)
            publisher.trickle(fragment)
            return web.Response(
                status=200,
                body=body.encode(),
                headers={"Content-Type": SDPFRAG, "ETag": publisher.etag, "Access-Control-Expose-Headers": EXPOSED_HEADERS},
            )
        if if_match is not None and if_match not in ("*", publisher.etag):
            return _error(412, "the resource's ETag has changed")
        publisher.trickle(fragment)
        return web.Response(status=204, headers={"ETag": publisher.etag})

    async def _delete(self, request: web.Request) -> web.Response:
        publisher = self.publishers.get(request.match_info["resource"])
        if publisher is None:
            return _error(404, "no such WHIP resource")
        if not self._authorized(request, publisher.mountpoint):
            return _error(401, "a Bearer token this mountpoint takes is needed", unauthorized=True)
        del self.publishers[publisher.id]
        publisher.stop("DELETE")
        return web.Response(status=200)

    def _forget(self, publisher: WhipPublisher) -> None:
        self.publishers.pop(publisher.id, None)

    def _publisher_datagram(self, event: PublisherDatagram) -> None:
        for publisher in self.publishers.values():
            if publisher.mountpoint.engine_id == event.mountpoint_id and publisher.attached:
                publisher.datagram_received(event.data)
                return

    def _mountpoint(self, text: str) -> Mountpoint | None:
        mountpoints = self.plugin.mountpoints
        if self.plugin.settings.string_ids:
            return mountpoints.get(text)
        return mountpoints.get(int(text)) if text.isdigit() else None

    def _authorized(self, request: web.Request, mountpoint: Mountpoint) -> bool:
        """The Bearer token is the mountpoint's ``whip_token`` or, with ``token_auth``, a
        stored token that may use the Streaming plugin; a mountpoint with neither needs none."""
        whip = mountpoint.config.whip
        expected = whip.token if whip is not None else None
        gateway = self.gateway
        stored_tokens = gateway is not None and gateway.settings.token_auth
        if expected is None and not stored_tokens:
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        if expected is not None and secrets.compare_digest(token.encode(), expected.encode()):
            return True
        if stored_tokens:
            assert gateway is not None
            return token in gateway.tokens and gateway.tokens.allowed(token, STREAMING)
        return False


def _error(status: int, reason: str, *, unauthorized: bool = False) -> web.Response:
    logger.info("WHIP request refused: %d %s", status, reason)
    headers = {"Access-Control-Expose-Headers": EXPOSED_HEADERS}
    if unauthorized:
        headers["WWW-Authenticate"] = 'Bearer realm="fanout WHIP"'
    return web.Response(status=status, text=reason + "\n", headers=headers)
