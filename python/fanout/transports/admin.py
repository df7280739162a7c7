"""The Admin API's transports: HTTP (``admin_base_path`` on ``admin_port``) and WebSocket
(subprotocol ``janus-admin-protocol`` on ``admin_ws_port``), each also over TLS
(``admin_secure_port``, ``admin_wss_port``), as Janus's HTTP and WebSocket transports serve them.

They parse requests as the Janus API's transports do (paths, JSON, CORS,
ACLs: ``admin_acl``, ``admin_ws_acl``) and hand them to
:class:`~fanout.admin.api.AdminApi`. There is no long poll: the Admin API
has no events.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fanout.admin.api import AdminApi
from fanout.config.settings import HttpSettings, WebSocketSettings
from fanout.core import events
from fanout.core.errors import JanusErrorCode
from fanout.transports.http import HttpTransport
from fanout.transports.listeners import Listener
from fanout.transports.websocket import WebSocketConnection, WebSocketTransport

Message = dict[str, Any]
ADMIN_SUBPROTOCOL = "janus-admin-protocol"


def admin_http_listeners(settings: HttpSettings) -> list[Listener]:
    listeners = []
    if settings.admin_http:
        listeners.append(Listener(settings.admin_host, settings.admin_port))
    if settings.admin_https and settings.tls is not None:
        listeners.append(Listener(settings.admin_secure_host, settings.admin_secure_port, settings.tls))
    return listeners


def admin_websocket_listeners(settings: WebSocketSettings) -> list[Listener]:
    listeners = []
    if settings.admin_ws:
        listeners.append(Listener(settings.admin_host, settings.admin_port))
    if settings.admin_wss and settings.tls is not None:
        listeners.append(Listener(settings.admin_wss_host, settings.admin_wss_port, settings.tls))
    return listeners


class AdminHttpTransport(HttpTransport):
    """POST ``<admin_base_path>[/<session>[/<handle>]]``."""

    def __init__(self, admin: AdminApi, settings: HttpSettings, *, listeners: list[Listener] | None = None) -> None:
        super().__init__(
            admin.gateway,
            settings,
            base_path=settings.admin_base_path,
            listeners=admin_http_listeners(settings) if listeners is None else listeners,
            acl=settings.admin_acl,
            info=None,
        )
        self.admin = admin

    async def _handle(self, message: Message) -> Message:
        return await self.admin.handle_request(message)

    async def _get(self, request: web.Request, segments: list[str]) -> web.StreamResponse:
        if segments == ["info"]:
            return self._json(self.gateway.server_info("admin"))
        return self._json(events.error(JanusErrorCode.TRANSPORT_SPECIFIC, "Unsupported method GET"))


class AdminWebSocketTransport(WebSocketTransport):
    """The Admin API over WebSocket (``janus-admin-protocol``)."""

    subprotocol = ADMIN_SUBPROTOCOL

    def __init__(self, admin: AdminApi, settings: WebSocketSettings, *, listeners: list[Listener] | None = None) -> None:
        super().__init__(
            admin.gateway,
            settings,
            listeners=admin_websocket_listeners(settings) if listeners is None else listeners,
            acl=settings.admin_acl,
            info=None,
        )
        self.admin = admin

    async def _handle(self, request: Any, connection: WebSocketConnection) -> Message:
        return await self.admin.handle_request(request)
