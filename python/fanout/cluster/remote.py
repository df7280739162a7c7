"""The cluster's mountpoints ingested on other nodes, as this node shows and serves them.

``list`` and ``info`` show a remote mountpoint as Janus shows a live one, from
its description (no ages: its packets are not here). To serve it, a node makes
a local relay mountpoint from the description: the same streams, fed by the
origin over the cluster's relay (piece ``relay``: :class:`RelaySource`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # plugin.py imports this module: no import of the plugin's package here
    from fanout.cluster.records import NodeRecord
    from fanout.plugins.streaming.config import MountpointConfig


def remote_list_entry(config: MountpointConfig, origin: str) -> dict[str, Any]:
    """The mountpoint as ``list`` shows it on a node that does not ingest it."""
    entry: dict[str, Any] = {"id": config.id, "type": "live", "description": config.description}
    if config.metadata is not None:
        entry["metadata"] = config.metadata
    entry["enabled"] = True
    entry["media"] = [item for _, item in sorted(_media(config, detailed=False), key=lambda pair: pair[0])]
    entry["origin"] = origin
    return entry


def remote_info(config: MountpointConfig, origin: str) -> dict[str, Any]:
    """The mountpoint as ``info`` shows it (never its secrets: they stay on the origin)."""
    info: dict[str, Any] = {"id": config.id, "description": config.description}
    if config.metadata is not None:
        info["metadata"] = config.metadata
    info |= {"enabled": True, "type": "live"}
    info["media"] = [item for _, item in sorted(_media(config, detailed=True), key=lambda pair: pair[0])]
    info["origin"] = origin
    return info


def _media(config: MountpointConfig, *, detailed: bool) -> list[tuple[int, dict[str, Any]]]:
    media = []
    for stream in config.streams:
        entry: dict[str, Any] = {"mid": stream.mid, "type": stream.kind, "label": stream.label}
        if detailed:
            entry["mindex"] = stream.mindex
        if stream.msid:
            entry["msid"] = stream.msid
        if detailed:
            entry |= {"pt": stream.payload_type, "codec": stream.codec.name, "rtpmap": stream.rtpmap}
            if stream.fmtp:
                entry["fmtp"] = stream.fmtp
            if stream.simulcast:
                entry["videosimulcast"] = True
        entry["age_ms"] = None
        media.append((stream.mindex, entry))
    data = config.data
    if data is not None:
        entry = {"mid": data.mid, "type": "data", "label": data.label, "age_ms": None}
        if detailed:
            entry["mindex"] = data.mindex
        media.append((data.mindex, entry))
    return media


def relay_mountpoint_config(config: MountpointConfig, origin: NodeRecord) -> MountpointConfig:
    """The local mountpoint that serves ``config`` here, fed by ``origin``'s relay
    (fanout.cluster.relay pulls it on the first viewer). What belongs to the origin's
    sources (SRTP keys, the built-in test source) is left out; a relay carries no data stream."""
    from fanout.plugins.streaming.config import RelaySource

    source = RelaySource(origin_node=origin.name, origin_url=origin.public_url, origin_webrtc_address=origin.webrtc_address)
    return dataclasses.replace(config, testsource=False, srtp=None, data=None, relay=source)
