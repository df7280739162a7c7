"""A live mountpoint: its definition, the ports the engine bound, its data port, its viewers."""

from __future__ import annotations

import dataclasses
import errno
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fanout.plugins.streaming.adaptation import LayerRates
from fanout.plugins.streaming.config import (
    DataStreamConfig,
    MountpointConfig,
    MountpointId,
    StreamConfig,
    h264_parameter_sets,
)
from fanout.plugins.streaming.data_source import DataSource
from fanout.plugins.streaming.port_range import PortRange
from fanout.plugins.streaming.silence import SourceSilence

if TYPE_CHECKING:
    import asyncio

    from fanout._engine import Engine, SourceStream


# The engine index of substream k of the stream at mindex m is m + k * SUBSTREAM_INDEX_STRIDE:
# substream 0 keeps the stream's mindex, so mountpoints without simulcast look as before.
SUBSTREAM_INDEX_STRIDE = 1 << 16
# The silence threshold of simulcast streams at first: Janus's default fallback (250 ms).
SIMULCAST_SILENCE_MS = 250
# A port picked from rtp_port_range is free when picked, but another process (another server's
# pick) may bind it before the engine does: the mountpoint picks again, this many times in all.
PICK_ATTEMPTS = 8


def source_index(stream: StreamConfig, substream: int | None) -> int:
    """The engine's SourceStream index of one encoding of ``stream`` (None: not simulcast)."""
    return stream.mindex + (substream or 0) * SUBSTREAM_INDEX_STRIDE


class Mountpoint:
    """An ``rtp`` or ``rtsp`` mountpoint whose source ports the engine reads, or a ``whip``
    one whose streams a WebRTC publisher's link feeds."""

    def __init__(
        self,
        config: MountpointConfig,
        engine_id: int,
        ports: list[int],
        created_at: float,
        substream_ports: dict[str, list[int]] | None = None,
    ) -> None:
        self.config = config
        self.engine_id = engine_id  # the engine's number for it (ids may be strings)
        self.ports = ports  # per stream (a simulcast stream: its substream 0)
        self.substream_ports = substream_ports or {}  # simulcast streams by mid: the bound port of each substream
        self.created_at = created_at
        self.enabled = True
        self.viewers: set[int] = set()  # handle ids
        self.data_source: DataSource | None = None
        self.latest_data_message: bytes | None = None  # kept for new viewers when the data stream buffers
        # The source streams (substreams too) the engine reported silent, from its events.
        self.silence = SourceSilence(source_indexes(config))
        # Simulcast: the engine's silence threshold of the substreams (the smallest
        # fallback any viewer asked, see plugin), and the timer that looks again at a
        # silent substream when some viewer's fallback will have passed.
        self.simulcast_silence_ms = SIMULCAST_SILENCE_MS
        self.fallback_timer: asyncio.TimerHandle | None = None
        # Told the number of viewers each time it changes: a relay mountpoint pulls its
        # origin's media while it has viewers (fanout.cluster.relay).
        self.on_viewers_changed: Callable[[int], None] | None = None
        # A whip mountpoint: a WHIP publisher's link is attached (fanout.whip sets it).
        self.publisher_attached = False
        self.recordings: dict[int, str] = {}  # the .mjr file each recorded stream (by mindex) goes to
        self.rtsp_transport: str | None = None  # an rtsp mountpoint's lower transport now: "udp" | "tcp"
        self.rtsp_dropped_frames = 0  # interleaved frames oversized, malformed, or on a channel not set up
        # Simulcast: each substream's bitrate, for the viewers' automatic layer choice.
        self.layer_rates = LayerRates()
        self.layer_rates_sampled_at: float | None = None

    @classmethod
    def open(
        cls,
        engine: Engine,
        config: MountpointConfig,
        engine_id: int,
        on_data: Callable[[bytes], None],
        port_range: PortRange | None = None,
    ) -> Mountpoint:
        """Bind the mountpoint's source ports in the engine (a simulcast stream's substreams
        1 and 2 after every stream's first), and its data port here (OSError if one is taken;
        nothing stays bound then). A port 0 is a free one of ``port_range`` (else the kernel's
        pick). ``on_data`` gets each data port datagram."""
        sources = [source_stream(stream, config) for stream in config.streams]
        extra = [(stream, substream) for stream in config.streams for substream in range(1, stream.substreams)]
        sources += [substream_source(stream, config, substream) for stream, substream in extra]
        data = None if config.fed_by_publisher_link else config.data
        for attempt in range(1, PICK_ATTEMPTS + 1):
            picked_sources, picked_data = _picked_ports(sources, data, port_range)
            try:
                bound = engine.add_mountpoint(engine_id, picked_sources)
            except OSError as error:
                if error.errno != errno.EADDRINUSE or picked_sources == sources or attempt == PICK_ATTEMPTS:
                    raise
                continue
            data = picked_data
            break
        ports = bound[: len(config.streams)]
        substream_ports = {stream.mid: [port] for stream, port in zip(config.streams, ports) if stream.simulcast}
        for (stream, _), port in zip(extra, bound[len(config.streams) :]):
            substream_ports[stream.mid].append(port)
        mountpoint = cls(config, engine_id, ports, time.monotonic(), substream_ports)
        if data is not None:
            try:
                mountpoint.data_source = DataSource(data, on_data)
            except OSError:
                engine.remove_mountpoint(engine_id)
                raise
        return mountpoint

    def add_viewer(self, handle_id: int) -> None:
        if handle_id not in self.viewers:
            self.viewers.add(handle_id)
            self._viewers_changed()

    def remove_viewer(self, handle_id: int) -> None:
        if handle_id in self.viewers:
            self.viewers.discard(handle_id)
            self._viewers_changed()

    def _viewers_changed(self) -> None:
        if self.on_viewers_changed is not None:
            self.on_viewers_changed(len(self.viewers))

    def close(self, engine: Engine) -> None:
        self.close_timers()
        engine.remove_mountpoint(self.engine_id)
        if self.data_source is not None:
            self.data_source.close()

    @property
    def data_port(self) -> int | None:
        return self.data_source.port if self.data_source is not None else None

    def data_age_ms(self) -> int:
        """Milliseconds since the data port's last message (since creation if none came yet)."""
        source = self.data_source
        last = source.last_message_at if source is not None and source.last_message_at is not None else self.created_at
        return int((time.monotonic() - last) * 1000)

    @property
    def publisher_live(self) -> bool:
        """A whip mountpoint's publisher is attached and some stream of it sends."""
        return self.publisher_attached and not self.silence.all_silent()

    @property
    def id(self) -> MountpointId:
        return self.config.id

    def first_stream(self, kind: str) -> StreamConfig | None:
        return next((stream for stream in self.config.streams if stream.kind == kind), None)

    def stream(self, mid: str) -> StreamConfig | None:
        return next((stream for stream in self.config.streams if stream.mid == mid), None)

    def ages_ms(self, engine: Engine) -> list[int]:
        """Per stream, milliseconds since its last packet (since creation if none came yet)."""
        since_creation = int((time.monotonic() - self.created_at) * 1000)
        ages: dict[int, int] = {}  # by mindex: a simulcast stream's age is its freshest substream's
        for stream in engine.mountpoint_stats(self.engine_id).streams:  # reported, not decided on
            age = since_creation if stream.last_packet_age_ms is None else stream.last_packet_age_ms
            mindex = stream.index % SUBSTREAM_INDEX_STRIDE
            ages[mindex] = min(age, ages.get(mindex, age))
        return [ages[stream.mindex] for stream in self.config.streams]

    @property
    def janus_type(self) -> str:
        """What ``list`` and ``info`` call it: "on demand" for a file played per viewer, as Janus."""
        file = self.config.file
        return "on demand" if file is not None and file.ondemand else "live"

    def close_timers(self) -> None:
        if self.fallback_timer is not None:
            self.fallback_timer.cancel()
            self.fallback_timer = None

    def list_entry(self, engine: Engine) -> dict[str, Any]:
        """The mountpoint as the ``list`` request shows it."""
        entry: dict[str, Any] = {"id": self.id, "type": self.janus_type, "description": self.config.description}
        if self.config.metadata is not None:
            entry["metadata"] = self.config.metadata
        entry["enabled"] = self.enabled
        if self.config.whip is not None:
            entry["publisher_live"] = self.publisher_live
        media = [
            (stream.mindex, {"mid": stream.mid, "type": stream.kind, "label": stream.label, "age_ms": age}
             | ({"msid": stream.msid} if stream.msid else {}))
            for stream, age in zip(self.config.streams, self.ages_ms(engine), strict=True)
        ]
        data = self.config.data
        if data is not None:
            media.append((data.mindex, {"mid": data.mid, "type": "data", "label": data.label, "age_ms": self.data_age_ms()}))
        entry["media"] = [item for _, item in sorted(media, key=lambda pair: pair[0])]
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
        info["type"] = self.janus_type
        if self.config.whip is not None:  # fanout: fed by a WHIP publisher, live or not
            info["whip"] = True
            info["publisher_live"] = self.publisher_live
            link = engine.publisher_stats(self.engine_id) if with_secret else None
            if link is not None:  # what the engine made of the publisher's datagrams
                info["publisher"] = {
                    name: getattr(link, name)
                    for name in ("packets", "bytes", "rtcp_packets", "undecryptable", "unroutable", "malformed",
                                 "control_datagrams", "lost", "nacks_sent", "recovered", "receiver_reports_sent")
                }  # fmt: skip
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
            if stream.simulcast:
                entry["videosimulcast"] = True  # as Janus 1.1.2 names it in both forms
            if with_secret and self.config.whip is None:
                entry["port"] = port
                for number, substream_port in enumerate(self.substream_ports.get(stream.mid, [])[1:], start=2):
                    entry[f"port{number}"] = substream_port
            entry["age_ms"] = age
            media.append(entry)
        data = self.config.data
        if data is not None:
            data_entry: dict[str, Any] = {"mindex": data.mindex, "type": "data", "mid": data.mid, "label": data.label}
            if with_secret:
                data_entry["port"] = self.data_port
            data_entry["age_ms"] = self.data_age_ms()
            media.append(data_entry)
        info["media"] = sorted(media, key=lambda entry: entry["mindex"])
        if self.config.file is not None and with_secret:
            info["filename"] = self.config.file.filename
        rtsp = self.config.rtsp
        if rtsp is not None:  # as Janus: the source's URL and credentials only with the secret
            info["rtsp"] = True
            if with_secret:
                info["url"] = rtsp.url
                if rtsp.username is not None:
                    info["rtsp_user"] = rtsp.username
                if rtsp.password is not None:
                    info["rtsp_pwd"] = rtsp.password
                if rtsp.quirk:
                    info["rtsp_quirk"] = True
                info["rtsp_transport"] = self.rtsp_transport
                info["rtsp_dropped_frames"] = self.rtsp_dropped_frames
        return info


def source_stream(stream: StreamConfig, mountpoint: MountpointConfig) -> SourceStream:
    srtp = mountpoint.srtp
    source: SourceStream = {
        "index": stream.mindex,
        "kind": "audio" if stream.kind == "audio" else "video",
        "codec": stream.codec.name,
        "clock_rate": stream.codec.clock_rate,
        "collision_ms": mountpoint.collision_ms,
        # An RTP source (and a relay's origin) sends the payload type its mountpoint names; an
        # RTSP server the one its DESCRIBE named, which the mountpoint may show its viewers as
        # another; a WHIP publisher the one its offer named (its link's routes check it).
        "payload_types": [stream.payload_type] if mountpoint.rtsp is None and mountpoint.whip is None else [],
        "h264_parameter_sets": h264_parameter_sets(stream.mid, stream.h264sps) if stream.h264sps else [],
        "skew_compensation": stream.skew,
    }
    if not mountpoint.fed_by_publisher_link:  # else no socket of its own: the engine's publisher link feeds it
        source |= {
            "host": stream.host,
            "port": stream.port,
            "rtcp_port": stream.rtcp_port,
            "interface": stream.multicast_interface,
            "srtp_profile": srtp.profile if srtp else None,
            "srtp_master_key": srtp.master_key if srtp else None,
        }
    threshold = silence_ms(stream, mountpoint)
    if threshold is not None:
        source["silence_ms"] = threshold
    return source


def source_indexes(config: MountpointConfig) -> list[int]:
    """The engine's index of every source stream of the mountpoint, substreams included."""
    return [source_index(stream, substream) for stream in config.streams for substream in range(stream.substreams)]


def silence_ms(stream: StreamConfig, mountpoint: MountpointConfig) -> int | None:
    """After how long without a packet the engine reports a stream silent: for an RTSP
    pull, its reconnect delay; for simulcast, the fallback; else the engine's default."""
    if mountpoint.rtsp is not None:
        return max(mountpoint.rtsp.reconnect_delay, 1) * 1000
    if stream.simulcast:
        return SIMULCAST_SILENCE_MS
    return None


def substream_source(stream: StreamConfig, mountpoint: MountpointConfig, substream: int) -> SourceStream:
    """Substream 1 or 2 of a simulcast stream: its own port, and the stream's RTCP port shared
    (Janus has one per stream), so that the source hears keyframe requests for each layer."""
    source = source_stream(stream, mountpoint)
    source["index"] = source_index(stream, substream)
    if not mountpoint.fed_by_publisher_link:
        source["port"] = stream.substream_ports[substream - 1]
        source["rtcp_port"] = None
        if stream.rtcp_port is not None:
            source["shares_rtcp_port_of"] = stream.mindex
    return source


def _picked_ports(
    sources: list[SourceStream], data: DataStreamConfig | None, port_range: PortRange | None
) -> tuple[list[SourceStream], DataStreamConfig | None]:
    """``sources`` and ``data`` with each port 0 (and RTCP port 0) a free port of ``port_range``
    (left 0 without one: the kernel picks)."""
    if port_range is None:
        return sources, data
    picked: list[SourceStream] = []
    for source in sources:
        source = source.copy()
        if source.get("port") == 0:
            source["port"] = port_range.pick(source["host"])
        if source.get("rtcp_port") == 0:
            source["rtcp_port"] = port_range.pick(source["host"])
        picked.append(source)
    if data is not None and data.port == 0:
        data = dataclasses.replace(data, port=port_range.pick(data.host))
    return picked, data
