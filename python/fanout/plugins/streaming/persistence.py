"""Saving mountpoints back to janus.plugin.streaming.jcfg (``"permanent": true``).

As Janus does, the file is read, the mountpoint's group is added, replaced or
removed, and the whole file is written again (comments are not kept). The
file is replaced atomically, so a crash never leaves half a file. Strings are
written escaped (quotes, backslashes, control characters) and in UTF-8, as the
file is read, whatever the locale.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fanout.config.jcfg import ConfigError, Group, dumps, is_setting_name, load
from fanout.plugins.streaming.config import (
    DEFAULT_COLLISION_MS,
    DEFAULT_WHIP_BITRATE,
    MountpointConfig,
    MountpointId,
    RtspSettings,
)

HEADER = "# Written by fanout when a mountpoint was created, edited or destroyed with \"permanent\": true.\n\n"


class PersistenceError(Exception):
    """The mountpoint cannot be saved; the message says why."""


def mountpoint_settings(config: MountpointConfig) -> dict[str, Any]:
    """The mountpoint as its .jcfg group (the multistream ``media`` form; an rtsp
    mountpoint in Janus's legacy keys, the only ones it has)."""
    kind = "rtp"
    if config.rtsp is not None:
        kind = "rtsp"
    elif config.file is not None:
        kind = config.file.kind
    elif config.relay is not None:
        kind = "relay"
    elif config.whip is not None:
        kind = "whip"
    settings: dict[str, Any] = {"type": kind, "id": config.id, "description": config.description}
    for key in ("metadata", "secret", "pin"):
        value = getattr(config, key)
        if value is not None:
            settings[key] = value
    if config.is_private:
        settings["is_private"] = True
    if config.rtsp is not None:
        return settings | rtsp_settings(config.rtsp)
    if config.file is not None:
        return settings | file_settings(config)
    if config.relay is not None:
        return settings | relay_settings(config)
    if config.whip is not None:
        if config.whip.token is not None:
            settings["whip_token"] = config.whip.token
        if config.whip.bitrate != DEFAULT_WHIP_BITRATE:
            settings["whip_bitrate"] = config.whip.bitrate
    if config.testsource:
        settings["testsource"] = True
    if config.collision_ms != DEFAULT_COLLISION_MS:
        settings["collision"] = config.collision_ms
    if config.srtp is not None:
        settings |= {"srtpsuite": config.srtp.suite, "srtpcrypto": config.srtp.crypto}
    if config.playoutdelay_ext:
        settings["playoutdelay_ext"] = True
    media = []
    for stream in config.streams:
        entry: dict[str, Any] = {"type": stream.kind, "mid": stream.mid, "label": stream.label}
        if stream.msid:
            entry["msid"] = stream.msid
        if config.whip is None:
            entry["port"] = stream.port
        if stream.rtcp_port is not None:
            entry["rtcpport"] = stream.rtcp_port
        entry |= {"pt": stream.payload_type, "codec": stream.codec.name}
        if stream.fmtp is not None and stream.fmtp != stream.codec.default_fmtp:
            entry["fmtp"] = stream.fmtp
        if stream.multicast_interface is not None:
            entry |= {"mcast": stream.host, "iface": stream.multicast_interface}
        elif ipaddress.ip_address(stream.host).is_multicast:
            entry["mcast"] = stream.host
        elif stream.host not in ("0.0.0.0", ""):
            entry["iface"] = stream.host
        if stream.skew:
            entry["skew"] = True
        if stream.h264sps is not None:
            entry["h264sps"] = stream.h264sps
        if stream.svc:
            entry["svc"] = True
        if stream.simulcast:
            entry["simulcast"] = True
            if config.whip is None:
                entry |= {f"port{number}": port for number, port in enumerate(stream.substream_ports, start=2)}
        media.append(entry)
    data = config.data
    if data is not None:
        data_entry: dict[str, Any] = {"type": "data", "mid": data.mid, "label": data.label, "port": data.port}
        if data.host not in ("0.0.0.0", ""):
            data_entry["iface"] = data.host
        data_entry["datatype"] = data.datatype
        if data.buffer_message:
            data_entry["buffermsg"] = True
        media.insert(min(data.mindex, len(media)), data_entry)
    settings["media"] = media
    return settings


def relay_settings(config: MountpointConfig) -> dict[str, Any]:
    """A relay mountpoint's origin and its streams' layout (no ports: they are the origin's)."""
    relay = config.relay
    assert relay is not None
    settings: dict[str, Any] = {"relay_url": relay.origin_url}
    if relay.origin_mountpoint is not None:
        settings["relay_id"] = relay.origin_mountpoint
    if relay.origin_node != relay.origin_url:
        settings["relay_node"] = relay.origin_node
    if config.playoutdelay_ext:
        settings["playoutdelay_ext"] = True
    media = []
    for stream in config.streams:
        entry: dict[str, Any] = {"type": stream.kind, "mid": stream.mid, "label": stream.label}
        if stream.msid:
            entry["msid"] = stream.msid
        entry |= {"pt": stream.payload_type, "codec": stream.codec.name}
        if stream.fmtp is not None and stream.fmtp != stream.codec.default_fmtp:
            entry["fmtp"] = stream.fmtp
        if stream.h264sps is not None:
            entry["h264sps"] = stream.h264sps
        if stream.simulcast:
            entry["simulcast"] = True
        media.append(entry)
    return settings | {"media": media}


def file_settings(config: MountpointConfig) -> dict[str, Any]:
    """A live or ondemand mountpoint's file and streams as its keys; defaults left out."""
    assert config.file is not None
    settings: dict[str, Any] = {"filename": config.file.filename}
    for stream in config.streams:
        settings[stream.kind] = True
        if stream.payload_type != (111 if stream.kind == "audio" else 96):
            settings[f"{stream.kind}pt"] = stream.payload_type
        if stream.codec.name not in ("opus", "h264"):
            settings[f"{stream.kind}codec"] = stream.codec.name
    return settings


def rtsp_settings(rtsp: RtspSettings) -> dict[str, Any]:
    """An rtsp mountpoint's source as Janus's keys; defaults left out."""
    settings: dict[str, Any] = {"url": rtsp.url}
    if rtsp.username is not None:
        settings["rtsp_user"] = rtsp.username
    if rtsp.password is not None:
        settings["rtsp_pwd"] = rtsp.password
    if rtsp.quirk:
        settings["rtsp_quirk"] = True
    if rtsp.interface_name is not None:
        settings["rtspiface"] = rtsp.interface_name
    if not rtsp.failcheck:
        settings["rtsp_failcheck"] = False
    if rtsp.transport != "auto":
        settings["rtsp_transport"] = rtsp.transport
    if rtsp.tls_cafile is not None:
        settings["rtsp_cafile"] = rtsp.tls_cafile
    if not rtsp.tls_verify:
        settings["rtsp_tls_verify"] = False
    for key, value, default in (
        ("rtsp_reconnect_delay", rtsp.reconnect_delay, 5),
        ("rtsp_session_timeout", rtsp.session_timeout, 0),
        ("rtsp_timeout", rtsp.timeout, 10),
        ("rtsp_conn_timeout", rtsp.connect_timeout, 5),
    ):
        if value != default:
            settings[key] = value
    for choice in rtsp.tracks:
        settings[choice.kind] = True
        if choice.payload_type is not None:
            settings[f"{choice.kind}pt"] = choice.payload_type
        if choice.codec is not None:
            settings[f"{choice.kind}codec"] = choice.codec.name
        if choice.fmtp is not None:
            settings[f"{choice.kind}fmtp"] = choice.fmtp
    return settings


def save_mountpoint(path: Path, config: MountpointConfig) -> None:
    """Add ``config`` to the file, or replace the group of the same name or id."""
    if not is_setting_name(config.name):
        raise PersistenceError(f"the name '{config.name}' cannot name a group in {path.name}")
    settings = _read(path)
    for name in [name for name, group in settings.items() if name == config.name or _id_of(group) == config.id]:
        del settings[name]
    settings[config.name] = mountpoint_settings(config)
    _write(path, settings)


def forget_mountpoint(path: Path, mountpoint_id: MountpointId) -> bool:
    """Remove the mountpoint with this id from the file; whether it was there."""
    settings = _read(path)
    names = [name for name, group in settings.items() if name != "general" and _id_of(group) == mountpoint_id]
    for name in names:
        del settings[name]
    if names:
        _write(path, settings)
    return bool(names)


def _id_of(group: Any) -> Any:
    return group.get("id") if isinstance(group, Mapping) else None


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"general": {}}
    try:
        return _plain(load(path))  # type: ignore[no-any-return]
    except ConfigError as error:
        raise PersistenceError(str(error)) from None


def _plain(value: Any) -> Any:
    if isinstance(value, Group):
        return {key: _plain(value[key]) for key in value}
    if isinstance(value, list):
        return [_plain(element) for element in value]
    return value


def _write(path: Path, settings: dict[str, Any]) -> None:
    try:
        text = HEADER + dumps(settings)
        data = text.encode("utf-8")  # as load() reads it, whatever the locale
    except ValueError as error:  # a value .jcfg cannot hold, or a lone surrogate: never half written
        raise PersistenceError(f"cannot write {path}: {error}") from None
    temporary = path.with_name(f".{path.name}.saving")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise PersistenceError(f"cannot write {path}: {error.strerror or error}") from None
