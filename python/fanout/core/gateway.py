"""The Janus core: requests in, responses and events out.

:meth:`Gateway.handle_request` takes one request of the Janus API as the
transports parse it (``session_id`` and ``handle_id`` in the message; the HTTP
transport puts there what its path says) and returns the response. It checks
every field as Janus 1.x does and answers with Janus's error codes and
reason texts. Sessions time out after ``session_timeout`` seconds without a
request; a session whose WebSocket closed goes at once, or after
``reclaim_session_timeout`` seconds if that is set.

Authentication is Janus's: ``api_secret`` (``apisecret`` in each request)
and/or stored tokens (``token_auth``: ``token`` in each request, tokens kept
in :attr:`Gateway.tokens` by the Admin API); either one lets a request in.
The core reports what happens to the event handlers (:attr:`Gateway.event_bus`)
and to its listeners (the metrics), as its handles tell it
(:mod:`fanout.core.notifications`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import platform
import secrets
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fanout.admin.tokens import TokenStore
from fanout.config.settings import Settings
from fanout.core import events
from fanout.core.errors import JanusError, JanusErrorCode
from fanout.core.handle import HANGUP_JANUS_API, HANGUP_SHUTDOWN, Handle
from fanout.core.notifications import HungUp, JsepReceived, JsepSent, Notification, PluginEventSent, WebRtcUp
from fanout.core.plugin import Plugin, PluginAck, PluginError, PluginSuccess
from fanout.core.session import Connection, Session, transport_of
from fanout.events.bus import EventBus
from fanout.events.types import CoreSubtype, EventType, WebRtcSubtype

if TYPE_CHECKING:
    from fanout._engine import Engine
    from fanout.webrtc.endpoint import WebRtcEndpoint

logger = logging.getLogger(__name__)

Errors = JanusErrorCode
Message = dict[str, Any]

ID_LIMIT = 2**53  # ids stay exact in JavaScript numbers, as Janus's do
UINT64 = 2**64
TIMEOUT_CHECK_INTERVAL = 1.0
JANUS_API_VERSION = 1102  # the Janus release whose API fanout speaks
JANUS_API_VERSION_STRING = "1.1.2"
HANDLE_REQUESTS = {"message", "trickle", "detach", "hangup"}
_MISSING = object()


class GatewayListener(Protocol):
    """Hears what the metrics count: PeerConnections coming up and going."""

    def webrtc_up(self, handle: Handle, join_seconds: float | None) -> None:
        """WebRTC is up (ICE + DTLS); ``join_seconds`` since the request that began it."""

    def webrtc_hangup(self, handle: Handle, reason: str) -> None: ...


@dataclass(frozen=True)
class TransportInfo:
    """A transport as the ``info`` response lists it."""

    package: str  # "janus.transport.http"
    name: str
    author: str
    description: str
    version: int
    version_string: str


class Gateway:
    """The Janus core: sessions, handles, plugins, and the dispatch of every request."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        endpoint: WebRtcEndpoint,
        plugins: Iterable[Plugin] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        timeout_check_interval: float = TIMEOUT_CHECK_INTERVAL,
        event_bus: EventBus | None = None,
    ) -> None:
        self.settings = settings
        self.tokens = TokenStore()
        self.accepting_new_sessions = True
        self.event_bus = event_bus or EventBus(settings.server_name)
        self.listeners: list[GatewayListener] = []
        self.engine = engine
        self.endpoint = endpoint
        self.clock = clock
        self.timeout_check_interval = timeout_check_interval
        self.plugins: dict[str, Plugin] = {}
        self.transports: dict[str, TransportInfo] = {}
        self.sessions: dict[int, Session] = {}
        self.handles: dict[int, Handle] = {}
        self.started_at = time.gmtime()
        self._watchdog: asyncio.Task[None] | None = None
        for plugin in plugins:
            self.register_plugin(plugin)

    def register_plugin(self, plugin: Plugin) -> None:
        if plugin.package in self.plugins:
            raise ValueError(f"plugin {plugin.package} is already registered")
        self.plugins[plugin.package] = plugin

    def register_transport(self, info: TransportInfo) -> None:
        self.transports[info.package] = info

    async def start(self) -> None:
        """Start the plugins and the session timeout watchdog."""
        for plugin in self.plugins.values():
            await plugin.start()
        self._watchdog = asyncio.get_running_loop().create_task(self._watch_timeouts())
        self.event_bus.emit(EventType.CORE, {"status": "started", "info": self.server_info("")}, subtype=CoreSubtype.SERVER_STARTUP)

    async def stop(self) -> None:
        """Destroy every session, stop the watchdog and the plugins."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            try:
                await self._watchdog
            except asyncio.CancelledError:
                pass
            self._watchdog = None
        for session in list(self.sessions.values()):
            self.destroy_session(session)
        self.event_bus.emit(EventType.CORE, {"status": "shutdown"}, subtype=CoreSubtype.SERVER_SHUTDOWN)
        for plugin in self.plugins.values():
            try:
                await plugin.stop()
            except Exception:
                logger.exception("stopping %s failed", plugin.package)

    def hang_up_everyone(self) -> int:
        """fanout is stopping: every PeerConnection hangs up (a DTLS close_notify goes out) and
        its client gets a ``hangup`` event (reason "Shutdown"), handed to its transport now.
        The sessions stay until :meth:`stop`. Returns how many hung up."""
        hung_up = 0
        for session in list(self.sessions.values()):
            for handle in list(session.handles.values()):
                hung_up += handle.hangup(HANGUP_SHUTDOWN, notify=True)
            session.flush()
        return hung_up

    # -- requests
    async def handle_request(self, message: Any, connection: Connection | None) -> Message:
        """One request of the Janus API; returns the response (``success``, ``ack``, ``error``, ...)."""
        request: dict[str, Any] = message if isinstance(message, dict) else {}
        raw_session = request.get("session_id")
        session_id = raw_session if isinstance(raw_session, int) and not isinstance(raw_session, bool) else 0
        try:
            transaction = _mandatory(request, "transaction", str, "a string", anonymous=True)
            janus = _mandatory(request, "janus", str, "a string", anonymous=True)
        except JanusError as error:  # as Janus: no transaction to echo, but the session it was for
            return events.error(error.code, error.reason, session_id=session_id)
        try:
            return await self._dispatch(request, janus, transaction, session_id, connection)
        except JanusError as error:
            if error.anonymous:
                return events.error(error.code, error.reason)
            return events.error(error.code, error.reason, session_id=session_id, transaction=transaction)

    async def _dispatch(
        self, request: dict[str, Any], janus: str, transaction: str, session_id: int, connection: Connection | None
    ) -> Message:
        name = janus.lower()
        raw_handle = request.get("handle_id")
        if session_id == 0 and raw_handle is None:
            if name == "ping":
                return events.pong(transaction)
            if name == "info":
                return self.server_info(transaction)
            if name == "create":
                self._check_secret(request)
                if not self.accepting_new_sessions:
                    raise JanusError(Errors.NOT_ACCEPTING_SESSIONS)
                return self._create(request, transaction, connection)
            raise JanusError(Errors.INVALID_REQUEST_PATH, f"Unhandled request '{janus}' at this path")
        if session_id == 0:
            raise JanusError(Errors.SESSION_NOT_FOUND)
        self._check_secret(request)
        session = self.sessions.get(session_id)
        if session is None:
            raise JanusError(Errors.SESSION_NOT_FOUND, f"No such session {session_id % UINT64}")
        session.touch(self.clock())
        if raw_handle is None:
            if name == "keepalive":
                return events.ack(session.id, transaction)
            if name == "attach":
                return self._attach(session, request, transaction)
            if name == "destroy":
                self.destroy_session(session)
                return events.success(transaction, session_id=session.id)
            if name == "claim":
                return self._claim(session, transaction, connection)
            if name in HANDLE_REQUESTS:
                raise JanusError(Errors.INVALID_REQUEST_PATH, f"Unhandled request '{janus}' at this path")
            raise JanusError(Errors.UNKNOWN_REQUEST, f"Unknown request '{janus}'")
        if not isinstance(raw_handle, int) or isinstance(raw_handle, bool) or raw_handle == 0:
            raise JanusError(Errors.HANDLE_NOT_FOUND)
        handle = session.handles.get(raw_handle)
        if handle is None:
            raise JanusError(Errors.HANDLE_NOT_FOUND, f"No such handle {raw_handle % UINT64} in session {session.id}")
        if name == "keepalive":
            return events.ack(session.id, transaction)
        if name == "claim":
            return self._claim(session, transaction, connection)
        if name == "message":
            return await self._message(handle, request, transaction)
        if name == "trickle":
            handle.trickle(request)
            return events.ack(session.id, transaction)
        if name == "detach":
            self._detach(handle)
            return events.success(transaction, session_id=session.id)
        if name == "hangup":
            handle.hangup(HANGUP_JANUS_API, notify=True)
            return events.success(transaction, session_id=session.id)
        if name in ("attach", "destroy"):
            raise JanusError(Errors.INVALID_REQUEST_PATH, f"Unhandled request '{janus}' at this path")
        raise JanusError(Errors.UNKNOWN_REQUEST, f"Unknown request '{janus}'")

    def _check_secret(self, request: dict[str, Any]) -> None:
        if not self.check_secret(request.get("apisecret"), request.get("token")):
            raise JanusError(Errors.UNAUTHORIZED)

    def check_secret(self, apisecret: Any, token: Any = None) -> bool:
        """Whether a request carrying ``apisecret`` and ``token`` may use the API: with neither
        ``api_secret`` nor ``token_auth`` set anyone may; else the secret or a stored token must match."""
        secret = self.settings.api_secret
        if secret is None and not self.settings.token_auth:
            return True
        if secret is not None and apisecret == secret:
            return True
        return self.settings.token_auth and token in self.tokens

    def _create(self, request: dict[str, Any], transaction: str, connection: Connection | None) -> Message:
        wanted = request.get("id", 0)
        if not isinstance(wanted, int) or isinstance(wanted, bool) or wanted < 0:
            raise JanusError(Errors.INVALID_ELEMENT_TYPE, "Invalid element type (id should be a positive integer)", anonymous=True)
        if wanted:
            if wanted in self.sessions:
                return events.error(Errors.SESSION_CONFLICT, "Session ID already in use", session_id=wanted, transaction=transaction)
            session_id = wanted
        else:
            session_id = self._new_id(self.sessions)
        token = request.get("token") if self.settings.token_auth and request.get("token") in self.tokens else None
        session = Session(session_id, connection, self.clock(), observer=self._observe, token=token)
        self.sessions[session_id] = session
        if connection is not None:
            connection.session_created(session_id)
        logger.info("session %d created", session_id)
        transport = {"transport": transport_of(connection) or "", "id": f"{id(connection):x}"}
        self.event_bus.emit(EventType.SESSION, {"name": "created", "transport": transport}, session_id=session_id)
        return events.success(transaction, data={"id": session_id})

    def _attach(self, session: Session, request: dict[str, Any], transaction: str) -> Message:
        package = _mandatory(request, "plugin", str, "a string")
        opaque_id = request.get("opaque_id")
        if "opaque_id" in request and not isinstance(opaque_id, str):
            raise JanusError(Errors.INVALID_ELEMENT_TYPE, "Invalid element type (opaque_id should be a string)")
        plugin = self.plugins.get(package)
        if plugin is None:
            raise JanusError(Errors.PLUGIN_NOT_FOUND, f"No such plugin '{package}'")
        token = request.get("token")
        if self.settings.token_auth and isinstance(token, str) and token in self.tokens and not self.tokens.allowed(token, package):
            raise JanusError(Errors.UNAUTHORIZED_PLUGIN, f"Provided token can't access plugin '{package}'")
        handle = Handle(
            self._new_id(self.handles),
            session,
            plugin,
            opaque_id,
            endpoint=self.endpoint,
            engine=self.engine,
            clock=self._peer_clock,
            created=self.clock(),
            candidates_timeout=self.settings.candidates_timeout,
        )
        try:
            plugin.create_session(handle)
        except Exception as error:
            logger.exception("%s.create_session failed", package)
            raise JanusError(Errors.PLUGIN_ATTACH, f"Couldn't attach to plugin '{package}': {error}") from error
        session.handles[handle.id] = handle
        self.handles[handle.id] = handle
        logger.info("session %d: handle %d attached to %s", session.id, handle.id, package)
        attached: dict[str, Any] = {"name": "attached", "plugin": package}
        if opaque_id is not None:
            attached["opaque_id"] = opaque_id
        self.event_bus.emit(EventType.HANDLE, attached, session_id=session.id, handle_id=handle.id, opaque_id=opaque_id)
        return events.success(transaction, session_id=session.id, data={"id": handle.id})

    def _claim(self, session: Session, transaction: str, connection: Connection | None) -> Message:
        previous = session.connection
        if connection is not previous:
            session.flush()
            if previous is not None:
                previous.session_over(session.id, timeout=False, claimed=True)
            session.connection = connection
            if connection is not None:
                connection.session_created(session.id)
        return events.success(transaction, session_id=session.id)

    async def _message(self, handle: Handle, request: dict[str, Any], transaction: str) -> Message:
        body = _mandatory(request, "body", dict, "an object")
        handle.note_join_request(self.clock())
        jsep = handle.take_jsep(request["jsep"]) if "jsep" in request else None
        try:
            result = await handle.plugin.handle_message(handle, transaction, body, jsep)
        except Exception as error:
            logger.exception("%s.handle_message failed", handle.plugin.package)
            raise JanusError(Errors.PLUGIN_MESSAGE, "Plugin returned a severe (unknown) error") from error
        if isinstance(result, PluginSuccess):
            return events.plugin_success(handle.session.id, transaction, handle.id, handle.plugin.package, result.data)
        if isinstance(result, PluginAck):
            return events.ack(handle.session.id, transaction, result.hint)
        if isinstance(result, PluginError):
            raise JanusError(Errors.PLUGIN_MESSAGE, result.reason)
        raise JanusError(Errors.PLUGIN_MESSAGE, "Plugin returned a severe (unknown) error")

    def _detach(self, handle: Handle) -> None:
        handle.detach(notify=True)
        handle.session.handles.pop(handle.id, None)
        self._forget_handle(handle)
        logger.info("session %d: handle %d detached", handle.session.id, handle.id)

    def detach_handle(self, handle: Handle) -> None:
        """Detach a handle as its client's ``detach`` does (the Admin API's ``detach_handle``)."""
        self._detach(handle)

    def _forget_handle(self, handle: Handle) -> None:
        self.handles.pop(handle.id, None)
        self._emit_for(handle, EventType.HANDLE, {"name": "detached", "plugin": handle.plugin.package})

    # -- what happens, for the event handlers and the metrics
    def _emit_for(self, handle: Handle, event_type: int, event: dict[str, Any], subtype: int | None = None) -> None:
        self.event_bus.emit(
            event_type, event, subtype=subtype, session_id=handle.session.id, handle_id=handle.id, opaque_id=handle.opaque_id
        )

    def _observe(self, notification: Notification) -> None:
        """What happened to a handle: tell the event handlers and the listeners."""
        handle = notification.handle
        if self.handles.get(handle.id) is not handle:  # attaching (the plugin's create_session) or detached
            return
        match notification:
            case PluginEventSent(data=data):
                self._emit_for(handle, EventType.PLUGIN, {"plugin": handle.plugin.package, "data": data})
            case JsepSent(jsep=jsep):
                self._emit_for(handle, EventType.JSEP, {"owner": "local", "jsep": {"type": jsep.type, "sdp": jsep.sdp}})
            case JsepReceived(jsep=jsep):
                self._emit_for(handle, EventType.JSEP, {"owner": "remote", "jsep": {"type": jsep.type, "sdp": jsep.sdp}})
            case WebRtcUp(join_started=join_started):
                self._webrtc_up(handle, join_started)
            case HungUp(reason=reason):
                self._emit_for(handle, EventType.WEBRTC, {"connection": "hangup", "reason": reason}, WebRtcSubtype.PC_STATE)
                for listener in self.listeners:
                    listener.webrtc_hangup(handle, reason)

    def _webrtc_up(self, handle: Handle, join_started: float | None) -> None:
        peer = handle.peer
        component = {"stream_id": 1, "component_id": 1}
        self._emit_for(handle, EventType.WEBRTC, {"ice": "connected", **component}, WebRtcSubtype.ICE_STATE)
        if peer is not None and peer.address is not None:
            pair = selected_pair(self.endpoint, peer.address)
            self._emit_for(handle, EventType.WEBRTC, {"selected-pair": pair, **component}, WebRtcSubtype.SELECTED_PAIR)
        self._emit_for(handle, EventType.WEBRTC, {"dtls": "connected", **component, "retransmissions": peer.dtls_retransmissions if peer else 0}, WebRtcSubtype.DTLS_STATE)
        self._emit_for(handle, EventType.WEBRTC, {"connection": "webrtcup"}, WebRtcSubtype.PC_STATE)
        join_seconds = None if join_started is None else max(0.0, self.clock() - join_started)
        for listener in self.listeners:
            listener.webrtc_up(handle, join_seconds)

    # -- what the Admin API changes
    def set_session_timeout(self, seconds: int) -> None:
        self.settings = dataclasses.replace(self.settings, session_timeout=seconds)

    # -- sessions ending
    def destroy_session(self, session: Session, *, timeout: bool = False) -> None:
        """End a session: what is queued goes out, then its handles hang up and detach silently
        (events their plugins push meanwhile are dropped), as in Janus."""
        if session.destroyed:
            return
        session.flush()
        session.destroyed = True
        for handle in list(session.handles.values()):
            handle.detach(notify=False)
            self._forget_handle(handle)
        session.handles.clear()
        self.sessions.pop(session.id, None)
        if session.connection is not None:
            session.connection.session_over(session.id, timeout=timeout, claimed=False)
        logger.info("session %d %s", session.id, "timed out" if timeout else "destroyed")
        if timeout:
            self.event_bus.emit(EventType.SESSION, {"name": "timeout"}, session_id=session.id)
        self.event_bus.emit(EventType.SESSION, {"name": "destroyed"}, session_id=session.id)

    def connection_closed(self, connection: Connection) -> None:
        """A transport's connection went away (a WebSocket closed): its sessions are destroyed,
        or kept for ``reclaim_session_timeout`` seconds if that is set."""
        for session in list(self.sessions.values()):
            if session.connection is not connection:
                continue
            session.connection = None
            if self.settings.reclaim_session_timeout == 0:
                self.destroy_session(session)

    def check_timeouts(self, now: float | None = None) -> None:
        """Time out idle sessions (``timeout`` event) and orphans past the reclaim time."""
        now = self.clock() if now is None else now
        session_timeout = self.settings.session_timeout
        reclaim_timeout = self.settings.reclaim_session_timeout
        for session in list(self.sessions.values()):
            idle = session.idle_for(now)
            if session.connection is None and reclaim_timeout > 0 and idle >= reclaim_timeout:
                self.destroy_session(session)
            elif session_timeout > 0 and idle >= session_timeout:
                session.send_event(events.timeout(session.id))
                self.destroy_session(session, timeout=True)

    def session_for_poll(self, session_id: int) -> Session | None:
        """The session a long poll waits on, touched as by a keepalive; None if there is none."""
        session = self.sessions.get(session_id)
        if session is not None:
            session.touch(self.clock())
        return session

    async def _watch_timeouts(self) -> None:
        while True:
            await asyncio.sleep(self.timeout_check_interval)
            try:
                self.check_timeouts()
            except Exception:
                logger.exception("session timeout check failed")

    def _new_id(self, taken: dict[int, Any]) -> int:
        while True:
            candidate = secrets.randbelow(ID_LIMIT - 1) + 1
            if candidate not in taken:
                return candidate

    def _peer_clock(self) -> float:
        """The WebRTC peers' clock: the event loop's, as the endpoint's timers use it."""
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    # -- info
    def server_info(self, transaction: str) -> Message:
        """The ``server_info`` response, with Janus's fields and fanout's values."""
        settings = self.settings
        return {
            "janus": "server_info",
            "transaction": transaction,
            "name": "fanout",
            "version": JANUS_API_VERSION,
            "version_string": JANUS_API_VERSION_STRING,
            "author": "fanout",
            "commit-hash": "not-a-git-repo",
            "compile-time": time.strftime("%a %b %d %H:%M:%S UTC %Y", self.started_at),
            "log-to-stdout": settings.log_to_stdout,
            "log-to-file": settings.log_to_file is not None,
            **({"log-path": settings.log_to_file} if settings.log_to_file is not None else {}),
            "data_channels": True,  # data streams reach viewers over data channels
            "accepting-new-sessions": self.accepting_new_sessions,
            "session-timeout": settings.session_timeout,
            "reclaim-session-timeout": settings.reclaim_session_timeout,
            "candidates-timeout": settings.candidates_timeout,
            "server-name": settings.server_name,
            "local-ip": settings.advertised_ips[0] if settings.advertised_ips else "127.0.0.1",
            "ipv6": False,
            "ice-lite": True,
            "ice-tcp": False,
            "ice-nomination": "regular",
            "ice-keepalive-conncheck": False,
            "full-trickle": False,
            "mdns-enabled": False,
            "min-nack-queue": 200,
            "nack-optimizations": False,
            "twcc-period": 200,
            "dtls-mtu": 1200,
            "static-event-loops": 0,
            "api_secret": settings.api_secret is not None,
            "auth_token": settings.token_auth,
            "event_handlers": self.event_bus.enabled,
            "opaqueid_in_api": False,
            "dependencies": {
                "python": platform.python_version(),
                "crypto": ssl.OPENSSL_VERSION,
            },
            "transports": {
                info.package: {
                    "name": info.name,
                    "author": info.author,
                    "description": info.description,
                    "version_string": info.version_string,
                    "version": info.version,
                }
                for info in self.transports.values()
            },
            "events": {
                handler.package: {
                    "name": getattr(handler, "name", handler.package),
                    "author": "fanout",
                    "description": getattr(handler, "description", ""),
                    "version_string": "0.0.1",
                    "version": 1,
                }
                for handler in self.event_bus.handlers
            },
            "loggers": {},
            "plugins": {
                plugin.package: {
                    "name": plugin.name,
                    "author": plugin.author,
                    "description": plugin.description,
                    "version_string": plugin.version_string,
                    "version": plugin.version,
                }
                for plugin in self.plugins.values()
            },
        }


def selected_pair(endpoint: WebRtcEndpoint, remote: tuple[str, int], remote_type: str = "prflx") -> str:
    """Janus's text for an ICE pair: ``local:port [host,udp] <-> remote:port [prflx,udp]`` (``tcp`` for an
    ICE-TCP connection); the local address is the advertised one of the remote's family."""
    family = address_family(remote[0])
    same_family = [ip for ip in endpoint.advertised_ips if address_family(ip) == family]
    local = (same_family or endpoint.advertised_ips or ["0.0.0.0"])[0]
    transport = endpoint.transport_of(remote)
    return f"{local}:{endpoint.port} [host,{transport}] <-> {remote[0]}:{remote[1]} [{remote_type},{transport}]"


def address_family(ip: str) -> str:
    """"ipv6" or "ipv4", as handle_info and /metrics name a viewer's family."""
    return "ipv6" if ":" in ip else "ipv4"


def _mandatory(request: dict[str, Any], key: str, kind: type, described: str, *, anonymous: bool = False) -> Any:
    value = request.get(key, _MISSING)
    if value is _MISSING:
        raise JanusError(Errors.MISSING_MANDATORY_ELEMENT, f"Missing mandatory element ({key})", anonymous=anonymous)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise JanusError(Errors.INVALID_ELEMENT_TYPE, f"Invalid element type ({key} should be {described})", anonymous=anonymous)
    return value
