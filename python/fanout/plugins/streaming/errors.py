"""The Streaming plugin's error codes, as Janus documents them."""

from __future__ import annotations

from enum import IntEnum


class StreamingErrorCode(IntEnum):
    NO_MESSAGE = 450
    INVALID_JSON = 451
    INVALID_REQUEST = 452
    MISSING_ELEMENT = 453
    INVALID_ELEMENT = 454
    NO_SUCH_MOUNTPOINT = 455
    CANT_CREATE = 456
    UNAUTHORIZED = 457
    CANT_SWITCH = 458
    CANT_RECORD = 459
    INVALID_STATE = 460
    INVALID_SDP = 461
    UNKNOWN_ERROR = 470


class StreamingError(Exception):
    """A request the plugin refuses; the client gets ``error_code`` and ``error``."""

    def __init__(self, code: StreamingErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def to_data(self) -> dict[str, object]:
        return {"streaming": "event", "error_code": int(self.code), "error": self.reason}
