"""WHEP's HTTP side (draft-ietf-wish-whep), served by the HTTP transport next to the Janus API.

``POST /whep/endpoint/<mountpoint id>`` (application/sdp offer) -> 201, the
answer and ``Location: /whep/resource/<id>``; ``PATCH`` the resource with
application/trickle-ice-sdpfrag -> 204; ``DELETE`` it -> 200. A Bearer token is
passed to the Janus core as ``apisecret`` and ``token``. The 201 carries the
configured STUN/TURN servers as ``Link: <url>; rel="ice-server"`` headers (RFC 9725).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from fanout.config.settings import IceServerSettings
from fanout.webrtc.ice_servers import link_header_values

from fanout.whep.resource import WhepError, WhepResource
from fanout.whep.sdpfrag import SdpFragError, parse_sdpfrag

if TYPE_CHECKING:
    from fanout.core.gateway import Gateway

logger = logging.getLogger(__name__)

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
ENDPOINT_PATH = "/whep/endpoint/{mountpoint}"
RESOURCE_PATH = "/whep/resource/{resource}"
EXPOSED_HEADERS = "Location, ETag, Accept-Patch, Link"
# In a cluster: the answer sending a POST to another node (307), or None to serve it here.
Redirect = Callable[[web.Request, str], "web.Response | None"]


class WhepService:
    """The WHEP endpoints of one server and the resources (viewers) they made."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        string_ids: bool = False,
        redirect: Redirect | None = None,
        ice_server_settings: IceServerSettings | None = None,
    ) -> None:
        self.gateway = gateway
        self.string_ids = string_ids
        self.redirect = redirect
        self.ice_server_settings = ice_server_settings or IceServerSettings()
        self.resources: dict[str, WhepResource] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(ENDPOINT_PATH, self._create),
            web.patch(RESOURCE_PATH, self._patch),
            web.delete(RESOURCE_PATH, self._delete),
        ]

    async def stop(self) -> None:
        for resource in list(self.resources.values()):
            await resource.stop()
        self.resources.clear()

    async def _create(self, request: web.Request) -> web.Response:
        if request.content_type != SDP:
            return _error(415, f"the offer must be sent as {SDP}")
        offer = await request.text()
        mountpoint = request.match_info["mountpoint"]
        mountpoint_id: int | str = mountpoint if self.string_ids or not mountpoint.isdigit() else int(mountpoint)
        if isinstance(mountpoint_id, str) and not self.string_ids:
            return _error(404, f"No such mountpoint/stream {mountpoint}")
        if self.redirect is not None and (elsewhere := self.redirect(request, mountpoint)) is not None:
            return elsewhere
        resource = WhepResource(self.gateway, _credentials(request), self._forget)
        try:
            answer = await resource.start(mountpoint_id, offer)
        except WhepError as error:
            return _error(error.status, error.reason, error.retry_after)
        self.resources[resource.id] = resource
        location = RESOURCE_PATH.format(resource=resource.id)
        logger.info("WHEP resource %s watches mountpoint %s", resource.id, mountpoint_id)
        headers = CIMultiDict(
            {
                "Content-Type": SDP,
                "Location": location,
                "ETag": resource.etag,
                "Accept-Patch": SDPFRAG,
                "Access-Control-Expose-Headers": EXPOSED_HEADERS,
            }
        )
        for link in link_header_values(self.ice_server_settings, time.time()):
            headers.add("Link", link)
        return web.Response(status=201, body=answer.encode(), headers=headers)

    async def _patch(self, request: web.Request) -> web.Response:
        resource = self.resources.get(request.match_info["resource"])
        if resource is None:
            return _error(404, "no such WHEP resource")
        if request.content_type != SDPFRAG:
            return _error(415, f"trickle must be sent as {SDPFRAG}")
        if_match = request.headers.get("If-Match")
        if if_match is not None and if_match not in ("*", resource.etag):
            return _error(412, "the resource's ETag has changed")
        try:
            fragment = parse_sdpfrag(await request.text())
            await resource.trickle(fragment)
        except SdpFragError as error:
            return _error(400, str(error))
        except WhepError as error:
            return _error(error.status, error.reason)
        return web.Response(status=204)

    async def _delete(self, request: web.Request) -> web.Response:
        resource = self.resources.pop(request.match_info["resource"], None)
        if resource is None:
            return _error(404, "no such WHEP resource")
        await resource.stop()
        return web.Response(status=200)

    def _forget(self, resource: WhepResource) -> None:
        self.resources.pop(resource.id, None)


def _credentials(request: web.Request) -> dict[str, str]:
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return {}
    return {"apisecret": token.strip(), "token": token.strip()}


def _error(status: int, reason: str, retry_after: int | None = None) -> web.Response:
    headers = {"Access-Control-Expose-Headers": EXPOSED_HEADERS}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
        headers["Access-Control-Expose-Headers"] += ", Retry-After"
    return web.Response(status=status, text=reason + "\n", headers=headers)
