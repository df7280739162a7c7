"""The JSON messages of the Janus core API, field for field and in Janus's order.

Responses (``success``, ``ack``, ``error``, ``pong``, ``server_info``) answer
a request; events (``event``, ``webrtcup``, ``hangup``, ``detached``,
``media``, ``timeout``, ``keepalive``) arrive on their own, on the long poll
or the WebSocket.
"""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]


def error(code: int, reason: str, *, session_id: int | None = None, transaction: str | None = None) -> Message:
    message: Message = {"janus": "error"}
    if session_id:
        message["session_id"] = session_id
    if transaction is not None:
        message["transaction"] = transaction
    message["error"] = {"code": code, "reason": reason}
    return message


def success(transaction: str, *, session_id: int | None = None, data: dict[str, Any] | None = None) -> Message:
    message: Message = {"janus": "success"}
    if session_id:
        message["session_id"] = session_id
    message["transaction"] = transaction
    if data is not None:
        message["data"] = data
    return message


def plugin_success(session_id: int, transaction: str, sender: int, plugin: str, data: dict[str, Any]) -> Message:
    return {
        "janus": "success",
        "session_id": session_id,
        "transaction": transaction,
        "sender": sender,
        "plugindata": {"plugin": plugin, "data": data},
    }


def ack(session_id: int, transaction: str, hint: str | None = None) -> Message:
    message: Message = {"janus": "ack", "session_id": session_id, "transaction": transaction}
    if hint is not None:
        message["hint"] = hint
    return message


def pong(transaction: str) -> Message:
    return {"janus": "pong", "transaction": transaction}


def plugin_event(
    session_id: int,
    sender: int,
    plugin: str,
    data: dict[str, Any],
    *,
    transaction: str | None = None,
    jsep: dict[str, Any] | None = None,
) -> Message:
    message: Message = {"janus": "event", "session_id": session_id}
    if transaction is not None:
        message["transaction"] = transaction
    message["sender"] = sender
    message["plugindata"] = {"plugin": plugin, "data": data}
    if jsep is not None:
        message["jsep"] = jsep
    return message


def webrtcup(session_id: int, sender: int) -> Message:
    return {"janus": "webrtcup", "session_id": session_id, "sender": sender}


def hangup(session_id: int, sender: int, reason: str) -> Message:
    return {"janus": "hangup", "session_id": session_id, "sender": sender, "reason": reason}


def detached(session_id: int, sender: int) -> Message:
    return {"janus": "detached", "session_id": session_id, "sender": sender}


def media(session_id: int, sender: int, mid: str, kind: str, receiving: bool) -> Message:
    return {"janus": "media", "session_id": session_id, "sender": sender, "mid": mid, "type": kind, "receiving": receiving}


def timeout(session_id: int) -> Message:
    return {"janus": "timeout", "session_id": session_id}


def keepalive() -> Message:
    return {"janus": "keepalive"}
