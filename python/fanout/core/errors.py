"""The Janus core API's error codes, with Janus's names and default reason texts."""

from __future__ import annotations

from enum import IntEnum


class JanusErrorCode(IntEnum):
    """``error.code`` in ``{"janus": "error", ...}`` (Janus's JANUS_ERROR_* names)."""

    UNAUTHORIZED = 403
    UNAUTHORIZED_PLUGIN = 405
    TRANSPORT_SPECIFIC = 450
    MISSING_REQUEST = 452
    UNKNOWN_REQUEST = 453
    INVALID_JSON = 454
    INVALID_JSON_OBJECT = 455
    MISSING_MANDATORY_ELEMENT = 456
    INVALID_REQUEST_PATH = 457
    SESSION_NOT_FOUND = 458
    HANDLE_NOT_FOUND = 459
    PLUGIN_NOT_FOUND = 460
    PLUGIN_ATTACH = 461
    PLUGIN_MESSAGE = 462
    PLUGIN_DETACH = 463
    JSEP_UNKNOWN_TYPE = 464
    JSEP_INVALID_SDP = 465
    TRICKE_INVALID_STREAM = 466  # sic, as Janus spells it
    INVALID_ELEMENT_TYPE = 467
    SESSION_CONFLICT = 468
    UNEXPECTED_ANSWER = 469
    TOKEN_NOT_FOUND = 470
    WEBRTC_STATE = 471
    NOT_ACCEPTING_SESSIONS = 472
    UNKNOWN = 490


DEFAULT_REASONS: dict[JanusErrorCode, str] = {
    JanusErrorCode.UNAUTHORIZED: "Unauthorized request (wrong or missing secret/token)",
    JanusErrorCode.UNAUTHORIZED_PLUGIN: "Unauthorized access to plugin (token is not allowed to)",
    JanusErrorCode.TRANSPORT_SPECIFIC: "Transport specific error",
    JanusErrorCode.MISSING_REQUEST: "Missing request",
    JanusErrorCode.UNKNOWN_REQUEST: "Unknown request",
    JanusErrorCode.INVALID_JSON: "Invalid JSON",
    JanusErrorCode.INVALID_JSON_OBJECT: "Invalid JSON Object",
    JanusErrorCode.MISSING_MANDATORY_ELEMENT: "Missing mandatory element",
    JanusErrorCode.INVALID_REQUEST_PATH: "Invalid path for this request",
    JanusErrorCode.SESSION_NOT_FOUND: "Session not found",
    JanusErrorCode.HANDLE_NOT_FOUND: "Handle not found",
    JanusErrorCode.PLUGIN_NOT_FOUND: "Plugin not found",
    JanusErrorCode.PLUGIN_ATTACH: "Error attaching plugin",
    JanusErrorCode.PLUGIN_MESSAGE: "Error sending message to plugin",
    JanusErrorCode.PLUGIN_DETACH: "Error detaching from plugin",
    JanusErrorCode.JSEP_UNKNOWN_TYPE: "Unsupported JSEP type",
    JanusErrorCode.JSEP_INVALID_SDP: "Invalid SDP",
    JanusErrorCode.TRICKE_INVALID_STREAM: "Invalid stream",
    JanusErrorCode.INVALID_ELEMENT_TYPE: "Invalid element type",
    JanusErrorCode.SESSION_CONFLICT: "Session ID already in use",
    JanusErrorCode.UNEXPECTED_ANSWER: "Unexpected ANSWER (no OFFER)",
    JanusErrorCode.TOKEN_NOT_FOUND: "Token not found",
    JanusErrorCode.WEBRTC_STATE: "Wrong WebRTC state",
    JanusErrorCode.NOT_ACCEPTING_SESSIONS: "Currently not accepting new sessions",
    JanusErrorCode.UNKNOWN: "Unknown error",
}


class JanusError(Exception):
    """A request failed: the client gets ``{"janus": "error", "error": {"code", "reason"}}``.

    ``anonymous`` errors are the ones Janus sends without the request's
    transaction and session (a malformed ``janus``/``transaction`` field, a
    bad ``id`` in ``create``, a path/payload conflict)."""

    def __init__(self, code: JanusErrorCode, reason: str | None = None, *, anonymous: bool = False) -> None:
        self.code = code
        self.reason = reason if reason is not None else DEFAULT_REASONS[code]
        self.anonymous = anonymous
        super().__init__(f"{int(code)} {self.reason}")
