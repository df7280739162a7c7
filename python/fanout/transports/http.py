"""The Janus API over HTTP: REST requests and long poll, as Janus's HTTP transport serves them.

``POST <base>`` (create, info, ping), ``POST <base>/<session>``,
``POST <base>/<session>/<handle>``; ``GET <base>/info``; ``GET <base>/<session>``
waits up to 30 s for events (``?maxev=N``: up to N, as an array when N > 1),
else answers ``keepalive``. Every response carries Janus's CORS headers;
``OPTIONS`` answers preflights. The application also serves the routes the
host gives it (``extra_routes``, e.g. a demo page). It listens on ``port``
(``http = true``) and, with TLS, on ``secure_port`` (``https = true``); a
client outside the ``acl`` prefixes gets 403.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import string
from collections import deque
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from fanout.config.settings import HttpSettings
from fanout.core import events, jansson
from fanout.core.errors import JanusErrorCode
from fanout.core.gateway import Gateway, TransportInfo
from fanout.transports.encoding import dumps
from fanout.transports.listeners import Listener, acl_allows, serve

logger = logging.getLogger(__name__)

Message = dict[str, Any]
LONG_POLL_TIMEOUT = 30.0
QUEUE_CHECK_INTERVAL = 0.02  # while stopping: how often the long polls' queues are checked
CORS_MAX_AGE = "86400"
UINT64 = 2**64
INFO = TransportInfo(
    package="janus.transport.http",
    name="fanout REST (HTTP) transport",
    author="fanout",
    description="The Janus API over HTTP: REST requests and long poll, with CORS.",
    version=2,
    version_string="0.0.2",
)
_LEADING_NUMBER = re.compile(r"\s*([+-]?)(\d*)")


class _SessionEvents:
    """The events waiting for one session's long poll."""

    def __init__(self) -> None:
        self.queue: deque[Message] = deque()
        self.arrived = asyncio.Event()
        self.over = False

    def put(self, message: Message) -> None:
        self.queue.append(message)
        self.arrived.set()

    def take(self, limit: int) -> list[Message]:
        taken = [self.queue.popleft() for _ in range(min(limit, len(self.queue)))]
        if not self.queue:
            self.arrived.clear()
        return taken


class LongPollQueues:
    """The HTTP transport's :class:`~fanout.core.session.Connection`: one event queue per session."""

    transport_package = "janus.transport.http"

    def __init__(self) -> None:
        self.sessions: dict[int, _SessionEvents] = {}

    def send_event(self, session_id: int, message: Message) -> None:
        queue = self.sessions.get(session_id)
        if queue is not None:
            queue.put(message)

    def session_created(self, session_id: int) -> None:
        self.sessions.setdefault(session_id, _SessionEvents())

    def session_over(self, session_id: int, *, timeout: bool, claimed: bool) -> None:
        queue = self.sessions.pop(session_id, None)
        if queue is not None:
            queue.over = True
            queue.arrived.set()


class HttpTransport:
    """The HTTP transport: an aiohttp application on the configured address and port."""

    def __init__(
        self,
        gateway: Gateway,
        settings: HttpSettings,
        extra_routes: Iterable[web.RouteDef] = (),
        *,
        long_poll_timeout: float = LONG_POLL_TIMEOUT,
        base_path: str | None = None,
        listeners: list[Listener] | None = None,
        acl: tuple[str, ...] | None = None,
        info: TransportInfo | None = INFO,
    ) -> None:
        self.gateway = gateway
        self.settings = settings
        self.long_poll_timeout = long_poll_timeout
        self.connection = LongPollQueues()
        self.listeners = listeners if listeners is not None else janus_listeners(settings)
        self.acl = settings.acl if acl is None else acl
        self.port: int | None = None  # the first plain listener's
        self.secure_port: int | None = None  # the first TLS listener's
        self.app = web.Application(middlewares=[self._cors_middleware])
        self.app.add_routes(list(extra_routes))
        base = (settings.base_path if base_path is None else base_path).rstrip("/")
        self.base = base
        self.app.router.add_route("*", base or "/", self._janus)
        self.app.router.add_route("*", base + "/{tail:.*}", self._janus)
        if base:
            self.app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner: web.AppRunner | None = None
        if info is not None:
            gateway.register_transport(info)

    async def start(self) -> None:
        serving = await serve(self.app, self.listeners, self.settings.limits)
        self._runner, self.port, self.secure_port = serving.runner, serving.port, serving.secure_port
        for listener, port in zip(self.listeners, serving.ports):
            logger.info("%s on %s://%s:%d%s", type(self).__name__, listener.scheme, listener.host, port, self.base or "/")

    async def deliver_queued_events(self, timeout: float) -> None:
        """Give the clients' long polls up to ``timeout`` seconds to take the events queued for
        them (fanout is stopping: their ``hangup``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(queue.queue for queue in self.connection.sessions.values()) and loop.time() < deadline:
            await asyncio.sleep(QUEUE_CHECK_INTERVAL)

    async def stop(self) -> None:
        for queue in self.connection.sessions.values():
            queue.over = True
            queue.arrived.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- CORS, on every response
    @web.middleware
    async def _cors_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        allow_origin = self.settings.allow_origin
        if not acl_allows(self.acl, request.remote):
            logger.info("HTTP request from %s refused by the ACL", request.remote)
            response: web.StreamResponse = web.Response(status=403)
        elif allow_origin and self.settings.enforce_cors and request.headers.get("Origin") != allow_origin:
            response = self._preflight(request, status=403) if request.method == "OPTIONS" else web.Response(status=403)
        else:
            try:
                response = await handler(request)
            except web.HTTPException as error:
                response = web.Response(status=error.status, headers=error.headers)
        response.headers["Access-Control-Allow-Origin"] = allow_origin or "*"
        if allow_origin:
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE
        return response

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return self._preflight(request)
        return web.Response(status=404)

    def _preflight(self, request: web.Request, status: int = 200) -> web.Response:
        response = web.Response(status=status)
        method = request.headers.get("Access-Control-Request-Method")
        if method:
            response.headers["Access-Control-Allow-Methods"] = method
        headers = request.headers.get("Access-Control-Request-Headers")
        if headers:
            response.headers["Access-Control-Allow-Headers"] = headers
        return response

    def _json(self, message: Any) -> web.Response:
        return web.Response(body=dumps(message, self.settings.json).encode(), headers={"Content-Type": "application/json"})

    # -- the Janus API
    async def _janus(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("tail", "")
        segments = [segment for segment in tail.split("/")] if tail else []
        if segments and segments[-1] == "":
            segments.pop()
        if request.method == "OPTIONS":
            return self._preflight(request)
        if len(segments) > 2:
            return web.Response(status=404)
        if request.method == "GET":
            return await self._get(request, segments)
        if request.method == "POST":
            return await self._post(request, segments)
        return self._json(events.error(JanusErrorCode.TRANSPORT_SPECIFIC, f"Unsupported method {request.method}"))

    async def _post(self, request: web.Request, segments: list[str]) -> web.Response:
        try:
            body = await asyncio.wait_for(request.read(), self.settings.limits.header_timeout)
        except TimeoutError:
            return web.Response(status=408, text="the request body did not come in time\n")
        try:
            message = jansson.loads(body)
        except jansson.JsonError as error:
            return self._json(events.error(JanusErrorCode.INVALID_JSON, f"JSON error: on line {error.line}: {error.text}"))
        if not isinstance(message, dict):
            return self._json(events.error(JanusErrorCode.INVALID_JSON_OBJECT, "JSON error: not an object"))
        for index, key, name in ((0, "session_id", "session"), (1, "handle_id", "handle")):
            if len(segments) <= index:
                break
            path_id = _path_id(segments[index])
            if path_id == 0:  # as in Janus: a segment that reads as 0 is no id
                continue
            given = message.get(key)
            if isinstance(given, int) and not isinstance(given, bool) and given != path_id:
                return self._json(
                    events.error(JanusErrorCode.INVALID_REQUEST_PATH, f"Conflicting {name} ID (payload and path)")
                )
            message[key] = path_id
        return self._json(await self._handle(message))

    async def _handle(self, message: Message) -> Message:
        """One request of the API this application serves."""
        return await self.gateway.handle_request(message, self.connection)

    async def _get(self, request: web.Request, segments: list[str]) -> web.StreamResponse:
        if segments == ["info"]:
            return self._json(self.gateway.server_info(_random_transaction()))
        if len(segments) == 2:
            return web.Response(status=302, headers={"Location": f"{self.base}/{segments[0]}"})
        if len(segments) != 1:
            return web.Response(status=404)
        if not self.gateway.check_secret(request.query.get("apisecret"), request.query.get("token")):
            return web.Response(status=403)
        session_id = _path_id(segments[0])
        if session_id == 0 or self.gateway.session_for_poll(session_id) is None:
            return web.Response(status=404)
        maxev = _atoi(request.query.get("maxev", "1"))
        queue = self.connection.sessions.get(session_id) or _SessionEvents()  # a session of another transport: keepalives only
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.long_poll_timeout
        while not queue.queue and not queue.over and loop.time() < deadline:
            try:
                await asyncio.wait_for(queue.arrived.wait(), deadline - loop.time())
            except TimeoutError:
                break
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=204)  # the client gave up on this poll: its events wait for the next
        taken = queue.take(max(maxev, 1)) or [events.keepalive()]
        return self._json(taken if maxev > 1 else taken[0])


def janus_listeners(settings: HttpSettings) -> list[Listener]:
    """The Janus API's: ``port`` if ``http``, ``secure_port`` if ``https``."""
    listeners = []
    if settings.enabled:
        listeners.append(Listener(settings.host, settings.port))
    if settings.https and settings.tls is not None:
        listeners.append(Listener(settings.secure_host, settings.secure_port, settings.tls))
    return listeners


def _path_id(segment: str) -> int:
    """A path segment read as Janus reads it (C ``strtoull``), as the signed 64-bit JSON value."""
    match = _LEADING_NUMBER.match(segment)
    assert match is not None
    if not match.group(2):
        return 0
    value = min(int(match.group(2)), UINT64 - 1)
    if match.group(1) == "-":
        value = (-value) % UINT64
    return value - UINT64 if value >= 2**63 else value


def _atoi(text: str) -> int:
    match = re.match(r"\s*([+-]?\d+)", text)
    return int(match.group(1)) if match else 0


def _random_transaction() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(11))
