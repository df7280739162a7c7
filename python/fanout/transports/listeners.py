"""Where a transport listens: plain or TLS (https, wss) sockets, the address ACLs, and the
limits every client meets before any authentication.

A :class:`Listener` is one address and port, with the certificate files when
it speaks TLS (Janus's ``certificates`` group: ``cert_pem``, ``cert_key``,
``cert_pwd``, ``ciphers``). An ACL is Janus's list of address prefixes
(``acl = "127.,192.168.0."``): a client whose address starts with none of
them is refused; an empty list lets everyone in.

A :class:`ConnectionGuard` watches every connection of one application's
listeners (:class:`~fanout.config.settings.ConnectionLimits`): a connection
must finish a request's headers within ``header_timeout`` of being accepted
(or of that request's first byte), a kept-alive connection may wait
``idle_timeout`` for its next request, and one address may hold
``max_connections_per_address`` connections (more are closed at once). What
the limits refused is counted in :data:`CONNECTION_COUNTERS` (served on
``/metrics``) and logged at most once per :data:`LOG_INTERVAL` per reason.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from fanout.config.network import unmapped
from fanout.config.settings import ConnectionLimits, TlsFiles

logger = logging.getLogger(__name__)

LOG_INTERVAL = 10.0  # seconds between two log lines of one repeated refusal or error
RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@dataclass(frozen=True)
class Listener:
    host: str
    port: int
    tls: TlsFiles | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"


def ssl_context(tls: TlsFiles) -> ssl.SSLContext:
    """A server context from PEM files (OSError or ssl.SSLError if they do not load)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_pem, tls.cert_key, password=tls.cert_pwd)
    if tls.ciphers:
        context.set_ciphers(tls.ciphers)
    return context


@dataclass
class Serving:
    """An application listening: its runner, and the port each listener got."""

    runner: web.AppRunner
    ports: list[int]
    port: int | None  # the first plain listener's
    secure_port: int | None  # the first TLS listener's


async def serve(app: web.Application, listeners: list[Listener], limits: ConnectionLimits | None = None) -> Serving:
    """Run ``app`` on every listener, its connections within ``limits`` (nothing is left open if one fails)."""
    guard = ConnectionGuard(limits or ConnectionLimits())
    app.middlewares.insert(0, guard.middleware)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        ports = await open_sites(runner, listeners, guard)
    except BaseException:
        await runner.cleanup()
        raise
    plain = [port for listener, port in zip(listeners, ports) if listener.tls is None]
    secure = [port for listener, port in zip(listeners, ports) if listener.tls is not None]
    return Serving(runner, ports, plain[0] if plain else None, secure[0] if secure else None)


async def open_sites(runner: web.AppRunner, listeners: list[Listener], guard: ConnectionGuard) -> list[int]:
    """Start one site per listener on a set-up runner; the bound port of each, in order."""
    ports: list[int] = []
    for listener in listeners:
        site = _GuardedSite(runner, listener, guard)
        await site.start()
        ports.append(site.port)
    return ports


@dataclass
class ConnectionCounters:
    """What the limits refused, over every listener since start."""

    refused_over_address_cap: int = 0  # connections closed at accept: their address held its cap
    header_timeouts: int = 0  # connections closed because a request's headers did not come in time
    idle_timeouts: int = 0  # kept-alive connections closed after idle_timeout without a request
    websocket_messages_too_big: int = 0  # WebSockets closed (1009) for a message over websocket_max_message
    websocket_slow_readers: int = 0  # WebSockets dropped: replies past websocket_max_send_queue were unread


CONNECTION_COUNTERS = ConnectionCounters()


class RateLimitedLog:
    """Logs the first of a repeated message, then at most one line per ``interval`` saying how many more came."""

    def __init__(self, interval: float = LOG_INTERVAL, clock: Callable[[], float] | None = None) -> None:
        self.interval = interval
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter[str] = collections.Counter()

    def warning(self, key: str, text: str) -> None:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] += 1
            return
        more = self._suppressed.pop(key, 0)
        self._last[key] = now
        if more:
            logger.warning("%s (and %d more times since the last report)", text, more)
        else:
            logger.warning("%s", text)


class ConnectionGuard:
    """The connections of one application's listeners, held to ``limits`` (see the module's docstring)."""

    def __init__(self, limits: ConnectionLimits, log: RateLimitedLog | None = None) -> None:
        self.limits = limits
        self.per_address: collections.Counter[str] = collections.Counter()
        self.connections: dict[asyncio.BaseTransport, _GuardedProtocol] = {}
        self.log = log or RateLimitedLog()

    def protocol_factory(self, make_protocol: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedProtocol(self, make_protocol())

    def admit(self, connection: _GuardedProtocol) -> bool:
        cap = self.limits.max_connections_per_address
        if cap and self.per_address[connection.address] >= cap:
            CONNECTION_COUNTERS.refused_over_address_cap += 1
            self.log.warning(
                "address_cap",  # one key for every address: an attacker with many addresses floods no log
                f"connection from {connection.address} refused: it holds {cap} connections "
                "(fanout.max_connections_per_address; raise it if many clients share an address, as behind a proxy)",
            )
            return False
        self.per_address[connection.address] += 1
        return True

    def release(self, connection: _GuardedProtocol) -> None:
        self.per_address[connection.address] -= 1
        if self.per_address[connection.address] <= 0:
            del self.per_address[connection.address]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        connection = self.connections.get(request.transport) if request.transport is not None else None
        if connection is not None:
            connection.request_began()
        try:
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            if connection is not None:
                connection.request_ended()


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind its guard's timers and address cap."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.address = ""
        self.transport: asyncio.Transport | None = None
        self.requests_running = 0
        self.awaiting_headers = True  # from accept, and from the first byte of each later request
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        self.address = unmapped(str(peer[0])) if peer else ""
        if not self.guard.admit(self):
            transport.abort()
            return
        self.transport = transport
        self.guard.connections[transport] = self
        self._arm(self.guard.limits.header_timeout)
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return  # refused at accept: aiohttp never saw it
        self._disarm()
        self.guard.connections.pop(self.transport, None)
        self.guard.release(self)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.requests_running == 0 and not self.awaiting_headers:
            self.awaiting_headers = True  # a new request begins on a kept-alive connection
            self._arm(self.guard.limits.header_timeout)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def request_began(self) -> None:
        self.requests_running += 1
        self.awaiting_headers = False
        self._disarm()

    def request_ended(self) -> None:
        self.requests_running -= 1
        if self.requests_running == 0 and self.transport is not None and not self.transport.is_closing():
            self._arm(self.guard.limits.idle_timeout)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self.transport is None or self.requests_running:
            return
        if self.awaiting_headers:
            CONNECTION_COUNTERS.header_timeouts += 1
            self.guard.log.warning(
                "header_timeout",
                f"connection from {self.address} closed: no request headers within {self.guard.limits.header_timeout:g} s",
            )
        else:
            CONNECTION_COUNTERS.idle_timeouts += 1
        self.transport.abort()


class _GuardedSite(web.BaseSite):
    """A TCP (or TLS) site whose connections go through a :class:`ConnectionGuard`."""

    def __init__(self, runner: web.AppRunner, listener: Listener, guard: ConnectionGuard) -> None:
        super().__init__(runner, ssl_context=ssl_context(listener.tls) if listener.tls is not None else None)
        self.listener = listener
        self.guard = guard
        self.port = listener.port

    @property
    def name(self) -> str:
        return f"{self.listener.scheme}://{self.listener.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        make_protocol = self._runner.server
        assert make_protocol is not None
        loop = asyncio.get_running_loop()
        protocol_factory = self.guard.protocol_factory(make_protocol)
        handshake_timeout = self.guard.limits.header_timeout if self._ssl_context is not None else None
        if self.listener.host == "::":  # asyncio makes "::" IPv6-only; a dual-stack socket takes IPv4 clients too
            server = await loop.create_server(
                protocol_factory,
                sock=dual_stack_listener(self.listener.port),
                ssl=self._ssl_context,
                ssl_handshake_timeout=handshake_timeout,
                backlog=self._backlog,
            )
        else:
            server = await loop.create_server(
                protocol_factory,
                self.listener.host,
                self.listener.port,
                ssl=self._ssl_context,
                ssl_handshake_timeout=handshake_timeout,
                backlog=self._backlog,
                reuse_address=True,
            )
        self._server = server
        self.port = server.sockets[0].getsockname()[1]


def limit_resource_error_logs(loop: asyncio.AbstractEventLoop, log: RateLimitedLog | None = None) -> None:
    """Log asyncio's accept errors for lack of file descriptors or memory (EMFILE, ENFILE, ENOBUFS,
    ENOMEM) once per :data:`LOG_INTERVAL`, one line each, instead of a traceback every retry."""
    limited = log or RateLimitedLog()
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in RESOURCE_ERRNOS:
            limited.warning(f"resource:{error.errno}", f"{context.get('message', 'error')}: {error}")
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


def dual_stack_listener(port: int) -> socket.socket:
    """A TCP socket bound to every IPv6 and IPv4 address (``::`` with IPV6_V6ONLY off)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def acl_allows(acl: tuple[str, ...], address: str | None) -> bool:
    """Janus's ACL: the client's address must start with one of the prefixes (empty: anyone)."""
    if not acl:
        return True
    if address is None:
        return False
    address = unmapped(address)  # an IPv4 client of a dual-stack ("::") listener
    return any(address.startswith(prefix) for prefix in acl)
