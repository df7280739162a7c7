"""Janus's event types, their mask names (``events = "sessions,handles"``) and subtypes."""

from __future__ import annotations

from enum import IntEnum


class EventType(IntEnum):
    """``type`` in an event handler's envelope (Janus's JANUS_EVENT_TYPE_*)."""

    SESSION = 1
    HANDLE = 2
    EXTERNAL = 4
    JSEP = 8
    WEBRTC = 16
    MEDIA = 32
    PLUGIN = 64
    TRANSPORT = 128
    CORE = 256


class WebRtcSubtype(IntEnum):
    ICE_STATE = 1
    LOCAL_CANDIDATE = 2
    REMOTE_CANDIDATE = 3
    SELECTED_PAIR = 4
    DTLS_STATE = 5
    PC_STATE = 6


class MediaSubtype(IntEnum):
    STATE = 1
    SLOWLINK = 2
    STATS = 3


class CoreSubtype(IntEnum):
    SERVER_STARTUP = 1
    SERVER_SHUTDOWN = 2


MASK_NAMES: dict[str, int] = {
    "sessions": EventType.SESSION,
    "handles": EventType.HANDLE,
    "external": EventType.EXTERNAL,
    "jsep": EventType.JSEP,
    "webrtc": EventType.WEBRTC,
    "media": EventType.MEDIA,
    "plugins": EventType.PLUGIN,
    "transports": EventType.TRANSPORT,
    "core": EventType.CORE,
}
ALL = sum(MASK_NAMES.values())


def parse_mask(text: str) -> int:
    """``"all"``, ``"none"`` or a comma separated list of names; ValueError on an unknown name."""
    mask = 0
    for part in (word.strip().lower() for word in text.split(",")):
        if not part or part == "none":
            continue
        if part == "all":
            mask |= ALL
        elif part in MASK_NAMES:
            mask |= MASK_NAMES[part]
        else:
            raise ValueError(f"unknown event type '{part}' (valid: none, all, {', '.join(MASK_NAMES)})")
    return mask
