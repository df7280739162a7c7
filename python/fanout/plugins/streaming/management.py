"""Mountpoint management requests: reading ``create`` and ``edit`` bodies, checking
secrets and the admin key, and shaping the replies, as Janus's Streaming plugin does.

Sans-IO: these functions take request bodies and mountpoint definitions and
return new definitions or reply bodies; the plugin opens and closes the
mountpoints themselves.
"""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from collections.abc import Collection
from typing import Any

from fanout.plugins.streaming.config import (
    LONG_TEXT_LIMIT,
    SHORT_TEXT_LIMIT,
    MountpointConfig,
    MountpointConfigError,
    MountpointId,
    checked_text,
    parse_mountpoint,
    privileged_ports,
)
from fanout.plugins.streaming.errors import StreamingError, StreamingErrorCode

Errors = StreamingErrorCode
ID_LIMIT = 2**53  # ids stay exact as JavaScript numbers
SUPPORTED_TYPES = ("rtp", "rtsp", "live", "ondemand", "whip")
KNOWN_TYPES = ("rtp", "live", "ondemand", "rtsp", "whip")
CREATE_ONLY_KEYS = {"request", "admin_key", "permanent"}
STRING_FIELDS = ("name", "description", "metadata", "secret", "pin")
EDIT_FIELDS = {
    "new_description": "description",
    "new_metadata": "metadata",
    "new_secret": "secret",
    "new_pin": "pin",
}


def check_admin_key(body: dict[str, Any], admin_key: str | None) -> None:
    """Refuse a request that needs the plugin's ``admin_key`` if it lacks the right one."""
    if admin_key is None:
        return
    given = body.get("admin_key")
    if given is None:
        raise StreamingError(Errors.MISSING_ELEMENT, "Missing mandatory element (admin_key)")
    if not isinstance(given, str):
        raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (admin_key should be a string)")
    if not secrets.compare_digest(given, admin_key):
        raise StreamingError(Errors.UNAUTHORIZED, "Unauthorized (wrong admin_key)")


def check_secret(body: dict[str, Any], mountpoint: MountpointConfig) -> None:
    """Refuse a request on a mountpoint with a ``secret`` unless the body has it."""
    if mountpoint.secret is None:
        return
    given = body.get("secret")
    if given is None:
        raise StreamingError(Errors.MISSING_ELEMENT, "Missing mandatory element (secret)")
    if not isinstance(given, str):
        raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (secret should be a string)")
    if not secrets.compare_digest(given, mountpoint.secret):
        raise StreamingError(Errors.UNAUTHORIZED, "Unauthorized (wrong secret)")


def permanent_flag(body: dict[str, Any]) -> bool:
    value = body.get("permanent", False)
    if not isinstance(value, bool):
        raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (permanent should be a boolean)")
    return value


def mountpoint_from_create(
    body: dict[str, Any],
    taken_ids: Collection[MountpointId],
    *,
    string_ids: bool = False,
    allow_privileged_ports: bool = False,
) -> MountpointConfig:
    """The mountpoint a ``create`` request describes (its id picked if it has none). Its
    source ports must not be below 1024 unless ``allow_privileged_ports``: anyone who may
    create could otherwise take a system service's port (22 when fanout runs as root)."""
    kind = body.get("type")
    if kind is None:
        raise StreamingError(Errors.MISSING_ELEMENT, "Missing mandatory element (type)")
    if not isinstance(kind, str):
        raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (type should be a string)")
    if kind not in KNOWN_TYPES:
        raise StreamingError(Errors.INVALID_ELEMENT, f"Unknown stream type '{kind}'...\n")
    if kind not in SUPPORTED_TYPES:
        raise StreamingError(Errors.CANT_CREATE, f"Can't add '{kind}' stream: fanout serves 'rtp', 'rtsp' and 'whip' mountpoints only")
    mountpoint_id = body.get("id")
    if mountpoint_id is None:
        mountpoint_id = _free_id(taken_ids, string_ids=string_ids)
    else:
        mountpoint_id = checked_id(mountpoint_id, string_ids=string_ids)
    if mountpoint_id in taken_ids and "id" in body:
        raise StreamingError(Errors.CANT_CREATE, "A stream with the provided ID already exists")
    for field in STRING_FIELDS:
        if field in body and not isinstance(body[field], str):
            raise StreamingError(Errors.INVALID_ELEMENT, f"Invalid element type ({field} should be a string)")
    for field in ("is_private", "playoutdelay_ext"):
        if field in body and not isinstance(body[field], bool):
            raise StreamingError(Errors.INVALID_ELEMENT, f"Invalid element type ({field} should be a boolean)")
    if kind == "rtsp":
        _check_rtsp_fields(body)
    if kind in ("live", "ondemand"):
        _check_file_fields(body)
    media = body.get("media") if kind in ("rtp", "whip") else None
    if media is not None and not isinstance(media, list):
        raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (media should be an array)")
    if kind == "whip" and not media:
        raise StreamingError(Errors.CANT_CREATE, "Can't add 'whip' stream, no media list of the streams it takes...")
    for field in ("whip_token",):
        if field in body and not isinstance(body[field], str):
            raise StreamingError(Errors.INVALID_ELEMENT, f"Invalid element type ({field} should be a string)")
    if kind in ("rtsp", "live", "ondemand") and not (body.get("audio") or body.get("video")):
        raise StreamingError(Errors.CANT_CREATE, f"Can't add '{kind}' stream, no audio or video have to be streamed...")
    if kind == "rtp" and media is None and not (body.get("audio") or body.get("video") or body.get("data")):
        raise StreamingError(Errors.CANT_CREATE, "Can't add 'rtp' stream, no audio or video have to be streamed...")
    definition = {key: value for key, value in body.items() if key not in CREATE_ONLY_KEYS} | {"id": mountpoint_id}
    name = body.get("name") or f"mp-{mountpoint_id}"
    try:
        config, _ = parse_mountpoint(name, definition, string_ids=string_ids)
    except MountpointConfigError as error:
        raise StreamingError(Errors.CANT_CREATE, f"Can't add '{kind}' stream: {_without_prefix(str(error))}") from None
    refused_ports = [] if allow_privileged_ports else privileged_ports(config)
    if refused_ports:
        raise StreamingError(
            Errors.CANT_CREATE,
            f"Can't add '{kind}' stream: port {refused_ports[0]} is below 1024 "
            "(allow_privileged_ports = true in janus.plugin.streaming.jcfg allows it)",
        )
    return config


RTSP_FIELD_TYPES: dict[str, tuple[type, str]] = {
    **{key: (str, "a string") for key in ("url", "rtsp_user", "rtsp_pwd", "rtspiface", "audiocodec", "audiortpmap",
                                          "audiofmtp", "videocodec", "videortpmap", "videofmtp", "rtsp_transport",
                                          "rtsp_cafile")},
    **{key: (bool, "a boolean") for key in ("audio", "video", "rtsp_quirk", "rtsp_failcheck", "rtsp_check",
                                            "videobufferkf", "rtsp_tls_verify")},
    **{key: (int, "an integer") for key in ("audiopt", "videopt", "rtsp_reconnect_delay", "rtsp_session_timeout",
                                            "rtsp_timeout", "rtsp_conn_timeout")},
}  # fmt: skip


def _check_rtsp_fields(body: dict[str, Any]) -> None:
    """An rtsp ``create``'s own fields, checked as Janus checks them: ``url`` is mandatory."""
    if "url" not in body:
        raise StreamingError(Errors.MISSING_ELEMENT, "Missing mandatory element (url)")
    for field, (kind, name) in RTSP_FIELD_TYPES.items():
        value = body.get(field)
        if value is None:
            continue
        wrong = isinstance(value, bool) != (kind is bool) or not isinstance(value, kind)
        if wrong:
            raise StreamingError(Errors.INVALID_ELEMENT, f"Invalid element type ({field} should be {name})")


FILE_FIELD_TYPES: dict[str, tuple[type, str]] = {
    **{key: (str, "a string") for key in ("filename", "audiocodec", "videocodec")},
    **{key: (bool, "a boolean") for key in ("audio", "video")},
    **{key: (int, "an integer") for key in ("audiopt", "videopt")},
}


def _check_file_fields(body: dict[str, Any]) -> None:
    """A live or ondemand ``create``'s own fields, checked as Janus checks them: ``filename`` is mandatory."""
    if "filename" not in body:
        raise StreamingError(Errors.MISSING_ELEMENT, "Missing mandatory element (filename)")
    for field, (kind, name) in FILE_FIELD_TYPES.items():
        value = body.get(field)
        if value is not None and (isinstance(value, bool) != (kind is bool) or not isinstance(value, kind)):
            raise StreamingError(Errors.INVALID_ELEMENT, f"Invalid element type ({field} should be {name})")


def created_reply(
    config: MountpointConfig,
    ports: list[int],
    *,
    permanent: bool,
    legacy: bool,
    data_port: int | None = None,
    substream_ports: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """The ``created`` reply; a mountpoint made with the legacy flat keys is described with them.
    ``substream_ports``: the bound ports of each simulcast stream's substreams, by mid."""
    stream: dict[str, Any] = {
        "id": config.id,
        "type": "on demand" if config.file is not None and config.file.ondemand else "live",
        "description": config.description,
        "is_private": config.is_private,
    }
    substream_ports = substream_ports or {}
    if config.rtsp is not None or config.file is not None:
        pass  # as Janus: the ports are the server's business (or fanout's own), not the creator's
    elif config.whip is not None:
        stream["whip"] = f"/whip/endpoint/{config.id}"  # fanout: where the publisher POSTs its offer
    elif legacy:
        for stream_config, port in zip(config.streams, ports, strict=True):
            stream[f"{stream_config.kind}_port"] = port
            for number, substream_port in enumerate(substream_ports.get(stream_config.mid, [])[1:], start=2):
                stream[f"{stream_config.kind}_port_{number}"] = substream_port
        if config.data is not None:
            stream["data_port"] = data_port
    else:
        entries: list[tuple[int, dict[str, Any]]] = [
            (stream_config.mindex, {"type": stream_config.kind, "mid": stream_config.mid}
             | ({"msid": stream_config.msid} if stream_config.msid else {})
             | {"port": port}
             | {
                 f"port_{number}": substream_port
                 for number, substream_port in enumerate(substream_ports.get(stream_config.mid, [])[1:], start=2)
             })
            for stream_config, port in zip(config.streams, ports, strict=True)
        ]
        if config.data is not None:
            entries.append((config.data.mindex, {"type": "data", "mid": config.data.mid, "port": data_port}))
        stream["ports"] = [entry for _, entry in sorted(entries, key=lambda pair: pair[0])]
    reply: dict[str, Any] = {"streaming": "created", "created": config.name, "permanent": permanent, "stream": stream}
    if legacy:
        reply["warning"] = "deprecated_api"
    return reply


def edited_mountpoint(config: MountpointConfig, body: dict[str, Any]) -> MountpointConfig:
    """``config`` with what an ``edit`` request changes (description, metadata, secret, pin, is_private)."""
    changes: dict[str, Any] = {}
    for request_field, config_field in EDIT_FIELDS.items():
        if request_field in body:
            value = body[request_field]
            if not isinstance(value, str):
                raise StreamingError(Errors.INVALID_ELEMENT, f"Invalid element type ({request_field} should be a string)")
            _check_edited_text(request_field, value)
            clears = config_field != "description" and value == ""
            changes[config_field] = None if clears else value
    if "new_is_private" in body:
        if not isinstance(body["new_is_private"], bool):
            raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (new_is_private should be a boolean)")
        changes["is_private"] = body["new_is_private"]
    return dataclasses.replace(config, **changes)


def _check_edited_text(field: str, value: str) -> None:
    """The bounds a ``create`` puts on the field, with Janus's invalid-element error."""
    free_text = field in ("new_description", "new_metadata")
    limit = LONG_TEXT_LIMIT if free_text else SHORT_TEXT_LIMIT
    try:
        checked_text("edit", field, value, limit=limit, free_text=free_text)
    except MountpointConfigError as error:
        raise StreamingError(Errors.INVALID_ELEMENT, f"Invalid element ({str(error).removeprefix('edit: ')})") from None


def checked_id(value: Any, *, string_ids: bool) -> MountpointId:
    """A mountpoint id as a request gives it, refused with Janus's error if of the wrong type."""
    if string_ids:
        if not isinstance(value, str):
            raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (id should be a string)")
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (id should be a positive integer)")
    return value


def _free_id(taken_ids: Collection[MountpointId], *, string_ids: bool) -> MountpointId:
    while True:
        candidate: MountpointId = str(uuid.uuid4()) if string_ids else secrets.randbelow(ID_LIMIT - 1) + 1
        if candidate not in taken_ids:
            return candidate


def _without_prefix(message: str) -> str:
    """``mountpoint 'x': media[0]: missing 'pt'`` -> ``media[0]: missing 'pt'``."""
    head, separator, rest = message.partition(": ")
    return rest if separator and head.startswith("mountpoint ") else message
