"""The Janus API over WebSocket (subprotocol ``janus-protocol``), as Janus's transport serves it.

Each text message holds one or more requests (JSON values one after the
other); responses and the events of the socket's sessions are pushed as they
happen, in order. When the socket closes its sessions are destroyed, or kept
for ``reclaim_session_timeout`` seconds (to be ``claim``-ed) if that is set.
It listens on ``ws_port`` (``ws = true``) and, with TLS, on ``wss_port``
(``wss = true``); a client outside the ``ws_acl`` prefixes gets 403.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import WSMsgType, web

from fanout.config.settings import WebSocketSettings
from fanout.core import events, jansson
from fanout.core.errors import JanusErrorCode
from fanout.core.gateway import Gateway, TransportInfo
from fanout.transports.encoding import dumps
from fanout.transports.listeners import Listener, acl_allows, serve

logger = logging.getLogger(__name__)

Message = dict[str, Any]
SUBPROTOCOL = "janus-protocol"
INFO = TransportInfo(
    package="janus.transport.websockets",
    name="fanout WebSockets transport",
    author="fanout",
    description="The Janus API over WebSockets (janus-protocol).",
    version=1,
    version_string="0.0.1",
)


class WebSocketConnection:
    """One client socket: the :class:`~fanout.core.session.Connection` of the sessions made on it."""

    transport_package = "janus.transport.websockets"

    def __init__(self, socket: web.WebSocketResponse, style: str) -> None:
        self.socket = socket
        self.style = style
        self.sessions: set[int] = set()
        self._outgoing: asyncio.Queue[Message | None] = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(self._write())

    def send_event(self, session_id: int, message: Message) -> None:
        self.send(message)

    def session_created(self, session_id: int) -> None:
        self.sessions.add(session_id)

    def session_over(self, session_id: int, *, timeout: bool, claimed: bool) -> None:
        self.sessions.discard(session_id)

    def send(self, message: Message) -> None:
        self._outgoing.put_nowait(message)

    async def _write(self) -> None:
        while True:
            message = await self._outgoing.get()
            if message is None:
                return
            if self.socket.closed:
                continue
            try:
                await self.socket.send_str(dumps(message, self.style))
            except ConnectionError as error:
                logger.debug("WebSocket send failed: %s", error)

    async def close(self) -> None:
        """Send what is queued, then stop writing."""
        self._outgoing.put_nowait(None)
        await self._writer


class WebSocketTransport:
    """The WebSocket transport: an aiohttp application on its own address and port."""

    subprotocol = SUBPROTOCOL

    def __init__(
        self,
        gateway: Gateway,
        settings: WebSocketSettings,
        *,
        listeners: list[Listener] | None = None,
        acl: tuple[str, ...] | None = None,
        info: TransportInfo | None = INFO,
    ) -> None:
        self.gateway = gateway
        self.settings = settings
        self.listeners = listeners if listeners is not None else janus_listeners(settings)
        self.acl = settings.acl if acl is None else acl
        self.port: int | None = None  # the first plain listener's
        self.secure_port: int | None = None  # the first TLS listener's
        self.connections: set[WebSocketConnection] = set()
        self.app = web.Application()
        self.app.router.add_route("GET", "/{tail:.*}", self._accept)
        self._runner: web.AppRunner | None = None
        if info is not None:
            gateway.register_transport(info)

    async def start(self) -> None:
        serving = await serve(self.app, self.listeners)
        self._runner, self.port, self.secure_port = serving.runner, serving.port, serving.secure_port
        for listener, port in zip(self.listeners, serving.ports):
            scheme = "wss" if listener.tls is not None else "ws"
            logger.info("%s on %s://%s:%d/", type(self).__name__, scheme, listener.host, port)

    async def stop(self) -> None:
        for connection in list(self.connections):
            await connection.socket.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _accept(self, request: web.Request) -> web.StreamResponse:
        allow_origin = self.settings.allow_origin
        if not acl_allows(self.acl, request.remote):
            logger.info("WebSocket from %s refused by the ACL", request.remote)
            return web.Response(status=403, text="address not allowed\n")
        if allow_origin and self.settings.enforce_cors and request.headers.get("Origin") != allow_origin:
            return web.Response(status=403, text="origin not allowed\n")
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if self.subprotocol not in offered:
            return web.Response(status=400, text=f"the {self.subprotocol} subprotocol is required\n")
        socket = web.WebSocketResponse(protocols=(self.subprotocol,), heartbeat=None, max_msg_size=0)
        socket.headers["Access-Control-Allow-Origin"] = allow_origin or "*"
        await socket.prepare(request)
        connection = WebSocketConnection(socket, self.settings.json)
        self.connections.add(connection)
        try:
            async for frame in socket:
                if frame.type == WSMsgType.TEXT:
                    await self._receive(connection, frame.data)
                elif frame.type == WSMsgType.BINARY:
                    await self._receive(connection, frame.data.decode("utf-8", errors="replace"))
                elif frame.type == WSMsgType.ERROR:
                    logger.debug("WebSocket error: %s", socket.exception())
        finally:
            self.connections.discard(connection)
            self.gateway.connection_closed(connection)
            await connection.close()
        return socket

    async def _receive(self, connection: WebSocketConnection, text: str) -> None:
        try:
            requests = jansson.loads_sequence(text)
        except jansson.JsonError as error:
            reason = f"Invalid Janus API request - <string>({error.line},{error.column}): {error.text}"
            connection.send(events.error(JanusErrorCode.INVALID_JSON, reason))
            return
        for request in requests:
            connection.send(await self._handle(request, connection))

    async def _handle(self, request: Any, connection: WebSocketConnection) -> Message:
        """One request of the API this socket serves."""
        return await self.gateway.handle_request(request, connection)


def janus_listeners(settings: WebSocketSettings) -> list[Listener]:
    """The Janus API's: ``ws_port`` if ``ws``, ``wss_port`` if ``wss``."""
    listeners = []
    if settings.enabled:
        listeners.append(Listener(settings.host, settings.port))
    if settings.wss and settings.tls is not None:
        listeners.append(Listener(settings.wss_host, settings.wss_port, settings.tls))
    return listeners
