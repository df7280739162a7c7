"""The Janus API over WebSocket (subprotocol ``janus-protocol``), as Janus's transport serves it.

Each text message holds one or more requests (JSON values one after the
other); responses and the events of the socket's sessions are pushed as they
happen, in order. When the socket closes its sessions are destroyed, or kept
for ``reclaim_session_timeout`` seconds (to be ``claim``-ed) if that is set.
It listens on ``ws_port`` (``ws = true``) and, with TLS, on ``wss_port``
(``wss = true``); a client outside the ``ws_acl`` prefixes gets 403.

Before any authentication a client meets the limits of its settings
(:class:`~fanout.config.settings.ConnectionLimits`): a message longer than
``websocket_max_message`` closes the socket with 1009 (message too big) as
soon as its frame header says so, nothing of it buffered; a client that
leaves more than ``websocket_max_send_queue`` bytes of replies and events
unread is dropped (its connection closed; its sessions end as on any close).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, WebSocketError, web

from fanout.config.settings import DEFAULT_WEBSOCKET_MAX_SEND_QUEUE, WebSocketSettings
from fanout.core import events, jansson
from fanout.core.errors import JanusErrorCode
from fanout.core.gateway import Gateway, TransportInfo
from fanout.transports.encoding import dumps
from fanout.transports.listeners import CONNECTION_COUNTERS, Listener, RateLimitedLog, acl_allows, serve

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

    def __init__(
        self,
        socket: web.WebSocketResponse,
        style: str,
        *,
        transport: asyncio.Transport | None = None,
        max_send_queue: int = DEFAULT_WEBSOCKET_MAX_SEND_QUEUE,
        log: RateLimitedLog | None = None,
    ) -> None:
        self.socket = socket
        self.style = style
        self.sessions: set[int] = set()
        self.transport = transport
        self.max_send_queue = max_send_queue
        self.queued_bytes = 0  # of the messages not yet handed to the socket
        self.dropped = False
        self._log = log or RateLimitedLog()
        self._outgoing: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue()  # text, its size in bytes
        self._writer = asyncio.get_running_loop().create_task(self._write())

    def send_event(self, session_id: int, message: Message) -> None:
        self.send(message)

    def session_created(self, session_id: int) -> None:
        self.sessions.add(session_id)

    def session_over(self, session_id: int, *, timeout: bool, claimed: bool) -> None:
        self.sessions.discard(session_id)

    def send(self, message: Message) -> None:
        if self.dropped:
            return
        text = dumps(message, self.style)
        size = len(text.encode())
        if self.queued_bytes + size > self.max_send_queue:
            self._drop_slow_reader()
            return
        self.queued_bytes += size
        self._outgoing.put_nowait((text, size))

    def _drop_slow_reader(self) -> None:
        """The client reads its replies slower than it asks for them: close its connection."""
        self.dropped = True
        CONNECTION_COUNTERS.websocket_slow_readers += 1
        self._log.warning(
            "slow_reader",
            f"WebSocket client dropped: it left over {self.max_send_queue} bytes of replies unread (websocket_max_send_queue)",
        )
        if self.transport is not None:
            self.transport.abort()  # a close frame would wait behind what it does not read

    async def _write(self) -> None:
        while True:
            queued = await self._outgoing.get()
            if queued is None:
                return
            text, size = queued
            self.queued_bytes -= size
            if self.socket.closed or self.dropped:
                continue
            try:
                await self.socket.send_str(text)
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
        self.log = RateLimitedLog()
        self.app = web.Application()
        self.app.router.add_route("GET", "/{tail:.*}", self._accept)
        self._runner: web.AppRunner | None = None
        if info is not None:
            gateway.register_transport(info)

    async def start(self) -> None:
        serving = await serve(self.app, self.listeners, self.settings.limits)
        self._runner, self.port, self.secure_port = serving.runner, serving.port, serving.secure_port
        for listener, port in zip(self.listeners, serving.ports):
            scheme = "wss" if listener.tls is not None else "ws"
            logger.info("%s on %s://%s:%d/", type(self).__name__, scheme, listener.host, port)

    async def deliver_queued_events(self, timeout: float) -> None:
        """Write what is queued for each client, for up to ``timeout`` seconds (fanout is
        stopping: their ``hangup``); the connections write nothing after."""
        writers = [asyncio.ensure_future(connection.close()) for connection in self.connections]
        if writers:
            await asyncio.wait(writers, timeout=timeout)

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
        limits = self.settings.limits
        socket = web.WebSocketResponse(
            protocols=(self.subprotocol,), heartbeat=None, max_msg_size=limits.websocket_max_message + 1
        )  # aiohttp refuses a message of max_msg_size bytes
        socket.headers["Access-Control-Allow-Origin"] = allow_origin or "*"
        await socket.prepare(request)
        connection = WebSocketConnection(
            socket, self.settings.json, transport=request.transport, max_send_queue=limits.websocket_max_send_queue, log=self.log
        )
        self.connections.add(connection)
        try:
            async for frame in socket:
                if frame.type == WSMsgType.TEXT:
                    await self._receive(connection, frame.data)
                elif frame.type == WSMsgType.BINARY:
                    await self._receive(connection, frame.data.decode("utf-8", errors="replace"))
                elif frame.type == WSMsgType.ERROR:
                    self._receive_failed(request, frame.data)
        finally:
            self.connections.discard(connection)
            self.gateway.connection_closed(connection)
            await connection.close()
        return socket

    def _receive_failed(self, request: web.Request, error: BaseException) -> None:
        if isinstance(error, WebSocketError) and error.code == WSCloseCode.MESSAGE_TOO_BIG:
            CONNECTION_COUNTERS.websocket_messages_too_big += 1
            self.log.warning(
                "too_big",
                f"WebSocket from {request.remote} closed (1009): a message over {self.settings.limits.websocket_max_message} "
                "bytes (websocket_max_message)",
            )
        else:
            logger.debug("WebSocket error: %s", error)

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
