"""A live mountpoint: its definition, the ports the engine bound, its viewers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fanout.plugins.streaming.config import MountpointConfig, MountpointId, StreamConfig, h264_parameter_sets

if TYPE_CHECKING:
    from fanout._engine import Engine, SourceStream


class Mountpoint:
    """An ``rtp`` mountpoint whose source ports the engine reads."""

    def __init__(self, config: MountpointConfig, engine_id: int, ports: list[int], created_at: float) -> None:
        self.config = config
        self.engine_id = engine_id  # the engine's number for it (ids may be strings)
        self.ports = ports
        self.created_at = created_at
        self.enabled = True
        self.viewers: set[int] = set()  # handle ids

    @classmethod
    def open(cls, engine: Engine, config: MountpointConfig, engine_id: int) -> Mountpoint:
        """Bind the mountpoint's source ports in the engine (OSError if one is taken)."""
        ports = engine.add_mountpoint(engine_id, [source_stream(stream, config) for stream in config.streams])
        return cls(config, engine_id, ports, time.monotonic())

    def close(self, engine: Engine) -> None:
        engine.remove_mountpoint(self.engine_id)

    @property
    def id(self) -> MountpointId:
        return self.config.id

    def stream(self, mid: str) -> StreamConfig | None:
        return next((stream for stream in self.config.streams if stream.mid == mid), None)

    def ages_ms(self, engine: Engine) -> list[int]:
        """Per stream, milliseconds since its last packet (since creation if none came yet)."""
        since_creation = int((time.monotonic() - self.created_at) * 1000)
        stats = engine.mountpoint_stats(self.engine_id)["streams"]
        return [
            since_creation if stream["last_packet_age_ms"] is None else stream["last_packet_age_ms"]
            for stream in stats
        ]

    def list_entry(self, engine: Engine) -> dict[str, Any]:
        """The mountpoint as the ``list`` request shows it."""
        entry: dict[str, Any] = {"id": self.id, "type": "live", "description": self.config.description}
        if self.config.metadata is not None:
            entry["metadata"] = self.config.metadata
        entry["enabled"] = self.enabled
        entry["media"] = [
            {"mid": stream.mid, "type": stream.kind, "label": stream.label, "age_ms": age}
            | ({"msid": stream.msid} if stream.msid else {})
            for stream, age in zip(self.config.streams, self.ages_ms(engine), strict=True)
        ]
        return entry

    def info(self, engine: Engine, *, with_secret: bool) -> dict[str, Any]:
        """The mountpoint as the ``info`` request shows it; more with the right secret."""
        info: dict[str, Any] = {"id": self.id}
        if with_secret:
            info["name"] = self.config.name
        info["description"] = self.config.description
        if self.config.metadata is not None:
            info["metadata"] = self.config.metadata
        if with_secret:
            if self.config.secret is not None:
                info["secret"] = self.config.secret
            if self.config.pin is not None:
                info["pin"] = self.config.pin
            if self.config.is_private:
                info["is_private"] = True
        info["enabled"] = self.enabled
        if with_secret:
            info["viewers"] = len(self.viewers)
        info["type"] = "live"
        media = []
        for stream, port, age in zip(self.config.streams, self.ports, self.ages_ms(engine), strict=True):
            entry: dict[str, Any] = {
                "mindex": stream.mindex,
                "type": stream.kind,
                "mid": stream.mid,
                "label": stream.label,
            }
            if stream.msid:
                entry["msid"] = stream.msid
            entry |= {"pt": stream.payload_type, "codec": stream.codec.name, "rtpmap": stream.rtpmap}
            if stream.fmtp:
                entry["fmtp"] = stream.fmtp
            if with_secret:
                entry["port"] = port
            entry["age_ms"] = age
            media.append(entry)
        info["media"] = media
        return info


def source_stream(stream: StreamConfig, mountpoint: MountpointConfig) -> SourceStream:
    srtp = mountpoint.srtp
    return {
        "index": stream.mindex,
        "kind": "audio" if stream.kind == "audio" else "video",
        "codec": stream.codec.name,
        "clock_rate": stream.codec.clock_rate,
        "host": stream.host,
        "port": stream.port,
        "rtcp_port": stream.rtcp_port,
        "interface": stream.multicast_interface,
        "srtp_profile": srtp.profile if srtp else None,
        "srtp_master_key": srtp.master_key if srtp else None,
        "collision_ms": mountpoint.collision_ms,
        "h264_parameter_sets": h264_parameter_sets(stream.mid, stream.h264sps) if stream.h264sps else [],
        "skew_compensation": stream.skew,
    }
