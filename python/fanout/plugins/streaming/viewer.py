"""One handle's subscription to a mountpoint."""

from __future__ import annotations

import dataclasses
import enum
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fanout.core.plugin import PluginHandle
from fanout.plugins.streaming.adaptation import KeepingUp, LayerChoice
from fanout.plugins.streaming.bitrate_feedback import BitrateEstimate
from fanout.plugins.streaming.codecs import TEMPORAL_LAYER_CODECS, VIDEO_RTCP_FEEDBACK
from fanout.plugins.streaming.config import DataStreamConfig, StreamConfig
from fanout.plugins.streaming.mountpoint import Mountpoint, source_index
from fanout.plugins.streaming.reception import Reception
from fanout.webrtc.sdp import PLAYOUT_DELAY_URI, TRANSPORT_CC_URI, Codec, OfferMedia

DEFAULT_FALLBACK_US = 250_000  # as Janus: a substream silent this long is left for the one below

if TYPE_CHECKING:
    from fanout._engine import ReceptionReport, ViewerStream

# The a=extmap id fanout offers the playout-delay extension with (Janus's), and the ids it
# can send it with: the engine writes RFC 8285 one-byte headers.
PLAYOUT_DELAY_EXTENSION_ID = 12
ONE_BYTE_EXTENSION_IDS = range(1, 15)
# The a=extmap id of the transport-wide sequence number (offered on every audio and video
# m-line of a mountpoint with simulcast, with a=rtcp-fb transport-cc, so Chromium sends
# transport feedback; the engine numbers every packet to the viewer).
TRANSPORT_CC_EXTENSION_ID = 3
# The most the extension carries: 12 bits of 10 ms units.
MAX_PLAYOUT_DELAY = 4095


class ViewerState(enum.Enum):
    IDLE = "idle"  # attached, watching nothing
    OFFERED = "offered"  # watch answered with an offer; waiting for start + answer
    STARTING = "starting"  # answer taken; waiting for the PeerConnection
    STARTED = "started"  # media flowing
    PAUSED = "paused"


@dataclass
class ViewerTrack:
    """What this viewer receives of one mountpoint stream, on which m-line and payload type
    (the mountpoint's own when fanout offers; the client's when it offered)."""

    stream: StreamConfig
    mid: str
    payload_type: int
    rtcp_feedback: tuple[str, ...]
    ssrc: int = field(default_factory=lambda: secrets.randbits(32) or 1)
    send: bool = True  # the client's answer accepted this m-line
    paused: bool = False  # the client asked not to get it for now (configure "send": false)
    # The playout-delay header extension's id on this m-line; None when not negotiated.
    playout_delay_extension_id: int | None = None
    # What configure asked (Janus's min_delay/max_delay: 10 ms units; -1: not set). The
    # extension goes out once both are set.
    min_delay: int = -1
    max_delay: int = -1
    # Simulcast streams: the substream (encoding) the viewer gets or is moving to, the
    # highest by default, as Janus; None for other streams.
    substream: int | None = None
    # VP8, VP9 or AV1: the highest temporal layer it gets (configure "temporal", VP9's "temporal_layer",
    # or the estimate); None: all.
    temporal: int | None = None
    # VP9: the highest spatial layer it gets (configure "spatial_layer", or the estimate); None: all.
    spatial: int | None = None
    # The substream configure asked for: ``substream`` falls back below it while it has
    # been silent for longer than ``fallback_us`` (Janus's configure "fallback"), and
    # comes back to it when it sends again.
    requested_substream: int | None = None
    fallback_us: int = DEFAULT_FALLBACK_US
    # The transport-wide sequence extension's id on this m-line; None when not negotiated.
    transport_cc_extension_id: int | None = None
    # Simulcast: the substream follows the viewer's bandwidth estimate (configure "adaptive";
    # on by default, off once configure pins a substream). None: the default for the stream.
    adaptive: bool | None = None
    layer_choice: LayerChoice = field(default_factory=LayerChoice)
    # VP8, VP9 or AV1: below the lowest substream (or a single-layer stream's bitrate) the estimate
    # also leaves temporal layers out, unless configure pinned one ("temporal", "temporal_layer")
    # or turned automatic choice off.
    temporal_pinned: bool = False
    temporal_choice: LayerChoice = field(default_factory=LayerChoice)
    # VP9 (not simulcast): the estimate leaves spatial layers out too, unless configure pinned one
    # ("spatial_layer") or turned automatic choice off.
    spatial_pinned: bool = False
    spatial_choice: LayerChoice = field(default_factory=LayerChoice)

    def __post_init__(self) -> None:
        if self.substream is None and self.stream.simulcast:
            self.substream = self.stream.substreams - 1
        if self.requested_substream is None:
            self.requested_substream = self.substream
        if self.adaptive is None:
            self.adaptive = self.stream.simulcast

    def substream_to_take(self, ages_ms: dict[int, int | None]) -> int | None:
        """The substream this track should get now: the requested one or, while it is
        silent, the highest below it that is not (``ages_ms``: each source index's time
        since its last packet). The current one if every candidate is silent."""
        if self.requested_substream is None:
            return self.substream
        for substream in range(self.requested_substream, -1, -1):
            age = ages_ms.get(source_index(self.stream, substream))
            if age is not None and age * 1000 <= self.fallback_us:
                return substream
        return self.substream

    @property
    def source_index(self) -> int:
        """The engine's index of the source stream this track takes."""
        return source_index(self.stream, self.substream)

    @classmethod
    def offered(cls, stream: StreamConfig, *, playoutdelay_ext: bool = False, transport_cc: bool = False) -> ViewerTrack:
        feedback = VIDEO_RTCP_FEEDBACK if stream.kind == "video" else ()
        extension_id = PLAYOUT_DELAY_EXTENSION_ID if playoutdelay_ext and stream.kind == "video" else None
        transport_cc = transport_cc and stream.kind in ("audio", "video")
        return cls(
            stream,
            mid=stream.mid,
            payload_type=stream.payload_type,
            rtcp_feedback=(*feedback, "transport-cc") if transport_cc else feedback,
            playout_delay_extension_id=extension_id,
            transport_cc_extension_id=TRANSPORT_CC_EXTENSION_ID if transport_cc else None,
        )

    def offer_media(self) -> OfferMedia:
        stream = self.stream
        codec = Codec(
            payload_type=self.payload_type,
            name=stream.codec.rtpmap_name,
            clock_rate=stream.codec.clock_rate,
            channels=stream.codec.channels,
            fmtp=stream.fmtp,
            rtcp_feedback=self.rtcp_feedback,
        )
        stream_id, _, track_id = (stream.msid or "").rpartition(" ")  # Janus's "<stream id> <track id>", or a track id
        return OfferMedia(
            mid=self.mid,
            kind=stream.kind,
            codec=codec,
            ssrc=self.ssrc,
            stream_id=stream_id or "fanout",
            track_id=track_id or f"fanout{stream.mid}",
            header_extensions=(
                ((self.playout_delay_extension_id, PLAYOUT_DELAY_URI),)
                if self.playout_delay_extension_id is not None
                else ()
            )
            + (
                ((self.transport_cc_extension_id, TRANSPORT_CC_URI),)
                if self.transport_cc_extension_id is not None
                else ()
            ),
        )

    def configure_playout_delay(self, min_delay: int | None, max_delay: int | None) -> None:
        """Take ``configure``'s min_delay and/or max_delay (10 ms units) as Janus does: a
        negative value unsets both; a new minimum above the maximum raises the maximum, a
        new maximum below the minimum lowers the minimum; values past 4095 count as 4095."""
        if min_delay is not None:
            if min_delay < 0:
                self.min_delay = self.max_delay = -1
            else:
                self.min_delay = min(min_delay, MAX_PLAYOUT_DELAY)
                self.max_delay = max(self.max_delay, self.min_delay)
        if max_delay is not None:
            if max_delay < 0:
                self.min_delay = self.max_delay = -1
            else:
                self.max_delay = min(max_delay, MAX_PLAYOUT_DELAY)
                self.min_delay = min(self.min_delay, self.max_delay)

    def playout_delay_ms(self) -> tuple[int, int] | None:
        """The (minimum, maximum) delay in milliseconds the viewer's packets carry, or None
        (no extension: not negotiated, or not both set)."""
        if self.playout_delay_extension_id is None or self.min_delay < 0 or self.max_delay < 0:
            return None
        return self.min_delay * 10, self.max_delay * 10

    def switched_to(self, stream: StreamConfig) -> ViewerTrack:
        """This track fed by another mountpoint's ``stream``: same m-line, SSRC and payload type."""
        return dataclasses.replace(
            self,
            stream=stream,
            substream=None,
            temporal=None,
            requested_substream=None,
            adaptive=None,
            layer_choice=LayerChoice(),
            temporal_pinned=False,
            temporal_choice=LayerChoice(),
            spatial=self.spatial if self.spatial_pinned else None,
            spatial_choice=LayerChoice(),
        )

    def engine_stream(self) -> ViewerStream:
        """What the engine sends this track, its layer caps in place from the first packet."""
        stream: ViewerStream = {"index": self.source_index, "ssrc": self.ssrc, "payload_type": self.payload_type}
        if self.temporal is not None and self.stream.codec.name in TEMPORAL_LAYER_CODECS:
            stream["temporal_layer"] = self.temporal
        if self.spatial is not None:
            stream["spatial_layer"] = self.spatial
        return stream


@dataclass
class Viewer:
    handle: PluginHandle
    state: ViewerState = ViewerState.IDLE
    mountpoint: Mountpoint | None = None
    tracks: list[ViewerTrack] = field(default_factory=list)
    in_engine: bool = False
    watching_since: float = 0.0  # time.monotonic() when its media started (or moved to this mountpoint)
    rtcp_counts: dict[str, int] = field(default_factory=dict)
    reception: dict[str, Reception] = field(default_factory=dict)  # by mid
    bitrate_estimates: dict[str, BitrateEstimate] = field(default_factory=dict)  # by mid: the latest REMB
    data: DataStreamConfig | None = None  # the mountpoint's data stream, when negotiated with this viewer
    data_mid: str | None = None  # the mid of the viewer's m=application (the client's when it offered)
    data_accepted: bool = False  # the client accepted (or offered) the data m-line
    data_paused: bool = False  # the client asked not to get data for now (configure)
    data_sent: int = 0
    data_dropped: int = 0  # no data channel yet, or the viewer read too slowly
    # Transport-wide congestion control: the extension id every m-line it gets media on
    # negotiated (None: not negotiated on all of them, so the engine does not number packets).
    transport_cc_id: int | None = None
    estimate: int | None = None  # the engine's latest bandwidth estimate of it, bits per second
    probe_goal: int | None = None  # what the engine probes its link for (Engine.set_probe_goal)
    layer_moves: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})  # automatic ones, by direction
    # Whether its link carries what it gets, judged from its estimates once they measure a rate.
    keeping_up: KeepingUp = field(default_factory=KeepingUp)

    @property
    def estimate_measures_rate(self) -> bool:
        """Whether the engine's estimate of it rests on a measured rate: transport feedback or a
        REMB. A receiver report's loss alone cannot tell that a link would carry more."""
        return self.transport_cc_id is not None or bool(self.bitrate_estimates)

    def take_bitrate_estimate(self, ssrcs: list[int], bitrate: int, now: float) -> None:
        """A REMB about some of this viewer's tracks."""
        for track in self.tracks:
            if track.ssrc in ssrcs:
                self.bitrate_estimates[track.mid] = BitrateEstimate(bitrate, now)

    def bitrate_estimate(self, mountpoint: Mountpoint, mindex: int) -> BitrateEstimate | None:
        """The latest estimate about the track fed by ``mountpoint``'s stream ``mindex``."""
        if self.mountpoint is not mountpoint:
            return None
        track = next((track for track in self.tracks if track.stream.mindex == mindex), None)
        return None if track is None else self.bitrate_estimates.get(track.mid)

    def offer_media(self) -> list[OfferMedia]:
        """The m-lines of this viewer's offer, in the mountpoint's order (data as m=application)."""
        media = [(track.stream.mindex, track.offer_media()) for track in self.tracks]
        if self.data is not None and self.data_mid is not None:
            media.append((self.data.mindex, OfferMedia(mid=self.data_mid, kind="application", codec=None, ssrc=0)))
        return [item for _, item in sorted(media, key=lambda pair: pair[0])]

    def take_report(self, report: ReceptionReport) -> None:
        """A receiver report block about one of the tracks this viewer gets."""
        track = next((track for track in self.tracks if track.ssrc == report.ssrc), None)
        if track is None:
            return
        reception = self.reception.setdefault(track.mid, Reception(track.stream.codec.clock_rate))
        reception.update(report)

    def watch(
        self,
        mountpoint: Mountpoint,
        mids: list[str] | None,
        left_out: frozenset[str] = frozenset(),
        *,
        transport_cc_everywhere: bool = False,
    ) -> None:
        """Offered ``mountpoint``'s streams (those ``mids`` names, if any), but none of the kinds
        (``audio``, ``video``, ``data``) in ``left_out``; transport-cc on a simulcast or VP9-SVC
        mountpoint, or on any with ``transport_cc_everywhere``."""
        self.mountpoint = mountpoint
        streams = mountpoint.config.streams
        playoutdelay_ext = mountpoint.config.playoutdelay_ext
        transport_cc = transport_cc_everywhere or any(stream.simulcast or stream.svc for stream in streams)
        self.tracks = [
            ViewerTrack.offered(stream, playoutdelay_ext=playoutdelay_ext, transport_cc=transport_cc)
            for stream in streams
            if (not mids or stream.mid in mids) and stream.kind not in left_out
        ]
        data = mountpoint.config.data
        wanted = data is not None and (not mids or data.mid in mids) and "data" not in left_out
        self.data = data if wanted else None
        self.data_mid = self.data.mid if self.data is not None else None
        self.data_accepted = False
        self.data_paused = False
        self.state = ViewerState.OFFERED
        mountpoint.add_viewer(self.handle.id)

    def answer(self, mountpoint: Mountpoint, tracks: list[ViewerTrack], data_mid: str | None = None) -> None:
        """Watch ``mountpoint`` on the m-lines of the client's offer (``tracks`` matched to them,
        and its data stream on the offered m=application ``data_mid``, if any)."""
        self.mountpoint = mountpoint
        self.tracks = tracks
        self.data = mountpoint.config.data if data_mid is not None else None
        self.data_mid = data_mid if self.data is not None else None
        self.data_accepted = self.data is not None
        self.data_paused = False
        self.state = ViewerState.STARTING
        mountpoint.add_viewer(self.handle.id)

    def leave(self) -> None:
        if self.mountpoint is not None:
            self.mountpoint.remove_viewer(self.handle.id)
        self.mountpoint = None
        self.tracks = []
        self.reception = {}
        self.bitrate_estimates = {}
        self.data = None
        self.data_mid = None
        self.data_accepted = False
        self.data_paused = False
        self.transport_cc_id = None
        self.estimate = None
        self.probe_goal = None
        self.keeping_up = KeepingUp()
        self.state = ViewerState.IDLE
