"""The Admin API: Janus's admin/monitor requests, shapes and error codes.

:meth:`AdminApi.handle_request` takes one request as the admin transports
parse it (``session_id``/``handle_id`` in the message, from the HTTP path or
the body) and returns the reply. ``ping`` and ``info`` need no secret; every
other request needs ``admin_secret`` when it is set (error 403). Root
requests: ``get_status``, ``list_sessions``, ``accept_new_sessions``,
``set_session_timeout``, ``set_log_level``, ``message_plugin`` and the
tokens, and fanout's own ``list_cluster_nodes`` (the cluster's nodes and their
load; Janus has no cluster); at a session: ``list_handles``, ``destroy_session``; at a handle:
``handle_info``, ``detach_handle``, ``hangup_webrtc``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fanout.admin.handle_info import handle_info
from fanout.admin.logs import LOGS, LogControl
from fanout.core import events
from fanout.core.errors import JanusError, JanusErrorCode
from fanout.core.handle import HANGUP_JANUS_API
from fanout.core.plugin import (
    Jsep,
    LocalDescription,
    PluginAck,
    PluginError,
    PluginSuccess,
)

if TYPE_CHECKING:
    from fanout.cluster.node import ClusterNode
    from fanout.core.gateway import Gateway
    from fanout.core.handle import Handle
    from fanout.core.session import Session

logger = logging.getLogger(__name__)

Errors = JanusErrorCode
Message = dict[str, Any]
UINT64 = 2**64
TOKENS_DISABLED = "Stored-Token based authentication disabled"
ASYNC_CLEANUP_DELAY = 1.0  # seconds before an admin handle's plugin state is freed after an asynchronous request
_MISSING = object()


class AdminApi:
    """The Admin API over a :class:`~fanout.core.gateway.Gateway`."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        logs: LogControl = LOGS,
        bytes_lastsec: Callable[[], dict[int, int]] | None = None,
        cluster: ClusterNode | None = None,
    ) -> None:
        self.gateway = gateway
        self.cluster = cluster
        self.logs = logs
        self.bytes_lastsec = bytes_lastsec or dict
        self._admin_handles = 0
        self._root: dict[str, Callable[[Message, str], Message]] = {
            "get_status": self._get_status,
            "list_sessions": self._list_sessions,
            "accept_new_sessions": self._accept_new_sessions,
            "set_session_timeout": self._set_session_timeout,
            "set_log_level": self._set_log_level,
            "add_token": self._add_token,
            "list_tokens": self._list_tokens,
            "allow_token": self._allow_token,
            "disallow_token": self._disallow_token,
            "remove_token": self._remove_token,
            "list_cluster_nodes": self._list_cluster_nodes,
        }

    async def handle_request(self, message: Any) -> Message:
        request: Message = message if isinstance(message, dict) else {}
        raw_session = request.get("session_id")
        session_id = raw_session if isinstance(raw_session, int) and not isinstance(raw_session, bool) else 0
        try:
            transaction = _mandatory(request, "transaction", str, "a string", anonymous=True)
            janus = _mandatory(request, "janus", str, "a string", anonymous=True)
        except JanusError as error:  # as Janus: no transaction to echo, but the session it was for
            return events.error(error.code, error.reason, session_id=session_id)
        try:
            return await self._dispatch(request, janus.lower(), janus, transaction, session_id)
        except JanusError as error:
            if error.anonymous:
                return events.error(error.code, error.reason)
            return events.error(error.code, error.reason, session_id=session_id, transaction=transaction)

    async def _dispatch(self, request: Message, name: str, janus: str, transaction: str, session_id: int) -> Message:
        raw_handle = request.get("handle_id")
        logger.debug("admin request %s (session %s, handle %s)", name, session_id or "-", raw_handle or "-")
        if session_id == 0 and raw_handle is None:
            if name == "ping":
                return events.pong(transaction)
            if name == "info":
                return self.gateway.server_info(transaction)
            self._check_secret(request)
            if name == "message_plugin":
                return await self._message_plugin(request, transaction)
            if name in self._root:
                return self._root[name](request, transaction)
            raise JanusError(Errors.INVALID_REQUEST_PATH, f"Unhandled request '{janus}' at this path")
        self._check_secret(request)
        if session_id == 0:
            raise JanusError(Errors.SESSION_NOT_FOUND)
        session = self.gateway.sessions.get(session_id)
        if session is None:
            raise JanusError(Errors.SESSION_NOT_FOUND, f"No such session {session_id % UINT64}")
        if raw_handle is None:
            if name == "list_handles":
                return {"janus": "success", "session_id": session.id, "transaction": transaction, "handles": list(session.handles)}
            if name == "destroy_session":
                self.gateway.destroy_session(session)
                return events.success(transaction, session_id=session.id)
            raise JanusError(Errors.INVALID_REQUEST_PATH, f"Unhandled request '{janus}' at this path")
        handle = self._handle(session, raw_handle)
        if name == "handle_info":
            info = handle_info(self.gateway, handle, self.bytes_lastsec())
            return {"janus": "success", "session_id": session.id, "transaction": transaction, "handle_id": handle.id, "info": info}
        if name == "detach_handle":
            self.gateway.detach_handle(handle)
            return events.success(transaction, session_id=session.id)
        if name == "hangup_webrtc":
            handle.hangup(HANGUP_JANUS_API, notify=True)
            return events.success(transaction, session_id=session.id)
        raise JanusError(Errors.INVALID_REQUEST_PATH, f"Unhandled request '{janus}' at this path")

    def _check_secret(self, request: Message) -> None:
        secret = self.gateway.settings.admin_secret
        if secret is not None and request.get("admin_secret") != secret:
            raise JanusError(Errors.UNAUTHORIZED)

    def _handle(self, session: Session, raw_handle: Any) -> Handle:
        if not isinstance(raw_handle, int) or isinstance(raw_handle, bool) or raw_handle == 0:
            raise JanusError(Errors.HANDLE_NOT_FOUND)
        handle = session.handles.get(raw_handle)
        if handle is None:
            raise JanusError(Errors.HANDLE_NOT_FOUND, f"No such handle {raw_handle % UINT64} in session {session.id}")
        return handle

    # -- the server
    def _get_status(self, request: Message, transaction: str) -> Message:
        settings = self.gateway.settings
        status = {
            "token_auth": settings.token_auth,
            "session_timeout": settings.session_timeout,
            "reclaim_session_timeout": settings.reclaim_session_timeout,
            "candidates_timeout": settings.candidates_timeout,
            "log_level": self.logs.janus_level,
            "log_timestamps": self.logs.timestamps,
            "log_colors": False,
            "locking_debug": False,
            "refcount_debug": False,
            "libnice_debug": False,
            "min_nack_queue": 200,
            "nack-optimizations": False,
            "no_media_timer": 1,
            "slowlink_threshold": 0,
            # fanout's: the nice value of the engine's threads (fanout.data_plane_nice), of the control plane's
            # thread (this one), and why the engine could not take the one configured
            "data_plane_nice": self.gateway.engine.data_plane_nice,
            "control_plane_nice": os.getpriority(os.PRIO_PROCESS, 0),
            "data_plane_nice_refused": self.gateway.engine.data_plane_nice_refused,
        }
        return {"janus": "success", "transaction": transaction, "status": status}

    def _list_sessions(self, request: Message, transaction: str) -> Message:
        return {"janus": "success", "transaction": transaction, "sessions": list(self.gateway.sessions)}

    def _list_cluster_nodes(self, request: Message, transaction: str) -> Message:
        """fanout's: the cluster's nodes as this node sees them (itself first), with their load."""
        cluster = self.cluster
        if cluster is None:
            raise JanusError(Errors.UNKNOWN_REQUEST, "This node is not in a cluster (janus.jcfg has no cluster.redis_url)")
        nodes = [node.as_json() | {"self": node.name == cluster.name} for node in cluster.nodes()]
        return {
            "janus": "success",
            "transaction": transaction,
            "cluster": cluster.settings.cluster_name,
            "registry_up": bool(cluster.health.up),
            "nodes": nodes,
        }

    def _accept_new_sessions(self, request: Message, transaction: str) -> Message:
        accept = _mandatory(request, "accept", bool, "a boolean")
        self.gateway.accepting_new_sessions = accept
        logger.info("%s new sessions", "accepting" if accept else "refusing")
        return {"janus": "success", "transaction": transaction, "accept": accept}

    def _set_session_timeout(self, request: Message, transaction: str) -> Message:
        timeout = _mandatory(request, "timeout", int, "a positive integer")
        if timeout < 0:
            raise JanusError(Errors.INVALID_ELEMENT_TYPE, "Invalid element type (timeout should be a positive integer)")
        self.gateway.set_session_timeout(timeout)
        return {"janus": "success", "transaction": transaction, "timeout": timeout}

    def _set_log_level(self, request: Message, transaction: str) -> Message:
        level = _mandatory(request, "level", int, "an integer")
        if not 0 <= level <= 7:
            raise JanusError(Errors.INVALID_ELEMENT_TYPE, "Invalid element type (level should be between 0 and 7)")
        self.logs.set_level(level)
        logger.warning("log level set to %d", level)
        return {"janus": "success", "transaction": transaction, "level": level}

    # -- plugins
    async def _message_plugin(self, request: Message, transaction: str) -> Message:
        package = _mandatory(request, "plugin", str, "a string")
        plugin = self.gateway.plugins.get(package)
        if plugin is None:
            raise JanusError(Errors.PLUGIN_NOT_FOUND, "Invalid plugin")
        body = request.get("request")
        if not isinstance(body, dict):
            body = {}
        self._admin_handles += 1
        handle = _AdminHandle(-self._admin_handles)
        plugin.create_session(handle)
        try:
            result = await plugin.handle_message(handle, transaction, body, None)
        except Exception as error:
            plugin.destroy_session(handle)
            logger.exception("%s: an Admin API message failed", package)
            raise JanusError(Errors.PLUGIN_MESSAGE, "Plugin returned a severe (unknown) error") from error
        if isinstance(result, PluginAck):
            # what the plugin does asynchronously goes nowhere; its state is freed once that is done
            asyncio.get_running_loop().call_later(ASYNC_CLEANUP_DELAY, plugin.destroy_session, handle)
        else:
            plugin.destroy_session(handle)
        if isinstance(result, PluginSuccess):
            return {"janus": "success", "transaction": transaction, "response": result.data}
        if isinstance(result, PluginAck):
            # Janus's plugins answer admin messages synchronously only; an asynchronous
            # request (watch, start, ...) has nothing to act on here
            prefix = package.rsplit(".", 1)[-1]
            return {"janus": "success", "transaction": transaction, "response": {prefix: "event", "error_code": 452, "error": "Unknown request '" + str(body.get("request")) + "'"}}
        if isinstance(result, PluginError):
            raise JanusError(Errors.PLUGIN_MESSAGE, result.reason)
        raise JanusError(Errors.PLUGIN_MESSAGE, "Plugin returned a severe (unknown) error")

    # -- tokens
    def _token_request(self, request: Message) -> str:
        if not self.gateway.settings.token_auth:
            raise JanusError(Errors.UNKNOWN, TOKENS_DISABLED)
        return str(_mandatory(request, "token", str, "a string"))

    def _plugin_list(self, request: Message, *, required: bool) -> list[str] | None:
        plugins = request.get("plugins", _MISSING)
        if plugins is _MISSING and not required:
            return None
        if not isinstance(plugins, list) or (required and not plugins):
            described = "a non-empty array" if required else "an array"
            raise JanusError(Errors.INVALID_ELEMENT_TYPE, f"Invalid element type (plugins should be {described})")
        return [name for name in plugins if isinstance(name, str) and name in self.gateway.plugins]

    def _add_token(self, request: Message, transaction: str) -> Message:
        token = self._token_request(request)
        plugins = self._plugin_list(request, required=False)
        if plugins is None:
            plugins = list(self.gateway.plugins)
        self.gateway.tokens.add(token, plugins)
        return {"janus": "success", "transaction": transaction, "data": {"plugins": self._plugins_of(token)}}

    def _list_tokens(self, request: Message, transaction: str) -> Message:
        if not self.gateway.settings.token_auth:
            raise JanusError(Errors.UNKNOWN, TOKENS_DISABLED)
        tokens = [{"token": token, "allowed_plugins": self._plugins_of(token)} for token in self.gateway.tokens.listed()]
        return {"janus": "success", "transaction": transaction, "data": {"tokens": tokens}}

    def _allow_token(self, request: Message, transaction: str) -> Message:
        return self._change_token(request, transaction, allow=True)

    def _disallow_token(self, request: Message, transaction: str) -> Message:
        return self._change_token(request, transaction, allow=False)

    def _change_token(self, request: Message, transaction: str, *, allow: bool) -> Message:
        token = self._token_request(request)
        plugins = self._plugin_list(request, required=True)
        assert plugins is not None
        if token not in self.gateway.tokens:
            raise JanusError(Errors.TOKEN_NOT_FOUND, f"Token {token} not found")
        if allow:
            self.gateway.tokens.allow(token, plugins)
        else:
            self.gateway.tokens.disallow(token, plugins)
        return {"janus": "success", "transaction": transaction, "data": {"plugins": self._plugins_of(token)}}

    def _remove_token(self, request: Message, transaction: str) -> Message:
        token = self._token_request(request)
        if not self.gateway.tokens.remove(token):
            raise JanusError(Errors.UNKNOWN, "Error removing token")
        return events.success(transaction)

    def _plugins_of(self, token: str) -> list[str]:
        return self.gateway.tokens.plugins_of(token, list(self.gateway.plugins))


class _AdminHandle:
    """The handle a plugin sees for an Admin API ``message_plugin``: no session, no PeerConnection."""

    def __init__(self, handle_id: int) -> None:
        self._id = handle_id

    @property
    def id(self) -> int:
        return self._id

    @property
    def session_id(self) -> int:
        return 0

    @property
    def opaque_id(self) -> str | None:
        return None

    @property
    def remote_description(self) -> None:
        return None

    def push_event(self, transaction: str | None, data: dict[str, Any], jsep: LocalDescription | None = None) -> None:
        logger.debug("admin handle %d: plugin event dropped", self._id)

    def close_pc(self) -> None:
        pass

    def send_data(self, data: bytes, *, binary: bool) -> bool:
        return False  # no PeerConnection, so no data channel

    def take_jsep(self, jsep: Any) -> Jsep:
        raise JanusError(Errors.INVALID_JSON_OBJECT, "Invalid jsep object")


def _mandatory(request: Message, key: str, kind: type, described: str, *, anonymous: bool = False) -> Any:
    value = request.get(key, _MISSING)
    if value is _MISSING:
        raise JanusError(Errors.MISSING_MANDATORY_ELEMENT, f"Missing mandatory element ({key})", anonymous=anonymous)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise JanusError(Errors.INVALID_ELEMENT_TYPE, f"Invalid element type ({key} should be {described})", anonymous=anonymous)
    return value
