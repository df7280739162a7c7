"""The Streaming plugin: viewers watch live RTP mountpoints over WebRTC.

Speaks the request/response/event API of Janus's Streaming plugin
(``janus.plugin.streaming``) so janus.js and other Janus clients work
unchanged. The plugin decides; the engine moves the media: on ``setup_media``
the viewer's engine peer (the core made it, with its keys) is subscribed to the
mountpoint, and from then on no packet of it passes through Python. Data
streams are the exception: their few datagrams are read here and sent to each
viewer over its data channel (``PluginHandle.send_data``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fanout._engine import BandwidthEstimate, RecordingStopped, SourceResumed, SourceSilent, SubstreamMoved
from fanout.cluster.remote import remote_info, remote_list_entry
from fanout.core.plugin import (
    Jsep,
    LocalAnswer,
    LocalOffer,
    Plugin,
    PluginAck,
    PluginHandle,
    PluginResult,
    PluginSuccess,
)
from fanout.engine_events import EngineEvents
from fanout.plugins.streaming import management, persistence, rtsp_source, subscription
from fanout.plugins.streaming.adaptation import LayerChoice, probe_goal
from fanout.plugins.streaming.admission import Admission, AdmissionLimits
from fanout.plugins.streaming.bitrate_feedback import FORWARD_INTERVAL_SECONDS, lowest_fresh_estimate
from fanout.plugins.streaming.codecs import TEMPORAL_LAYER_CODECS
from fanout.plugins.streaming.config import (
    MountpointConfig,
    MountpointConfigError,
    MountpointId,
    StreamConfig,
    StreamingSettings,
)
from fanout.plugins.streaming.errors import StreamingError, StreamingErrorCode
from fanout.plugins.streaming.file_source import FilePlayer, FileSourceError, checked_file
from fanout.plugins.streaming.mountpoint import Mountpoint, source_index
from fanout.plugins.streaming.offer_matching import data_mline, match_offer
from fanout.plugins.streaming.port_range import PortRange
from fanout.plugins.streaming.rtsp_source import RtspPull
from fanout.plugins.streaming.silence import MIN_SILENCE_MS
from fanout.plugins.streaming.viewer import ONE_BYTE_EXTENSION_IDS, Viewer, ViewerState, ViewerTrack
from fanout.sources.rtsp.connection import RtspConnection
from fanout.webrtc.sdp import PLAYOUT_DELAY_URI, TRANSPORT_CC_URI, MediaDescription, OfferMedia

if TYPE_CHECKING:
    from fanout._engine import Engine, PeerStats, RtcpReport

logger = logging.getLogger(__name__)

Errors = StreamingErrorCode
AsyncRequest = Callable[[Viewer, str, dict[str, Any], Jsep | None], None]


def _kinds_left_out(body: dict[str, Any]) -> frozenset[str]:
    """``watch``'s ``offer_audio``, ``offer_video`` and ``offer_data``: false leaves that kind out of the offer."""
    left_out = set()
    for kind in ("audio", "video", "data"):
        offered = body.get(f"offer_{kind}", True)
        if not isinstance(offered, bool):
            raise StreamingError(Errors.INVALID_ELEMENT, f"Invalid element type (offer_{kind} should be a boolean)")
        if not offered:
            left_out.add(kind)
    return frozenset(left_out)


def status_event(status: str) -> dict[str, Any]:
    return {"streaming": "event", "result": {"status": status}}


def layer_event(mid: str, **layer: int) -> dict[str, Any]:
    """A simulcast viewer's stream now gets another substream or temporal layer."""
    return {"streaming": "event", "result": {"mid": mid, **layer}}


def keeping_up_event(keeping_up: bool, estimate: int, bitrate: int) -> dict[str, Any]:
    """The viewer's link no longer carries what it gets (its bandwidth estimate stayed under the
    bitrate of its streams), or carries it again; both in bits per second."""
    return {"streaming": "event", "result": {"keeping_up": keeping_up, "estimate": estimate, "bitrate": bitrate}}


def temporal_layer_event(track: ViewerTrack, layer: int) -> dict[str, Any]:
    """The track now gets temporal layers up to ``layer``: ``temporal`` as Janus tells a
    simulcast viewer, ``temporal_layer`` for VP9 and AV1 as Janus tells a VP9-SVC or AV1-SVC one."""
    key = "temporal_layer" if track.stream.codec.name in ("vp9", "av1") else "temporal"
    return layer_event(track.mid, **{key: layer})


def _top_layer(capped_bitrates: list[int]) -> int:
    """The highest temporal or spatial layer of a stream (``LayerRates.temporal_bitrates``,
    ``spatial_bitrates``); until measured, 2: the highest Janus knows, which means all."""
    return len(capped_bitrates) - 1 if capped_bitrates else 2


def _peer_stats_json(stats: PeerStats) -> dict[str, Any]:
    """The engine's counters of a viewer, as query_session (handle_info's plugin_specific) shows them."""
    return {
        "packets": stats.packets,
        "bytes": stats.bytes,
        "rtcp_packets": stats.rtcp_packets,
        "retransmissions": stats.retransmissions,
        "nacked": stats.nacked,
        "gso_refused": stats.gso_refused,
        "dropped": stats.dropped,
        "dropped_late": stats.dropped_late,
        "send_errors": stats.send_errors,
        "paused": stats.paused,
        "worker": stats.worker,
        "source_switches": stats.source_switches,
        "estimate": stats.estimate,
        "transport_feedbacks": stats.transport_feedbacks,
        "bytes_in_flight": stats.bytes_in_flight,
        "retransmissions_over_budget": stats.retransmissions_over_budget,
        "nacks_unanswered": stats.nacks_unanswered,
        "probes": stats.probes,
        "probes_carried": stats.probes_carried,
    }


class RelayFeeder(Protocol):
    """Feeds relay mountpoints (``MountpointConfig.relay``) from their origin: told when one
    opens and when it closes (fanout.cluster.relay.RelayEdge)."""

    def opened(self, mountpoint: Mountpoint) -> None: ...

    def closed(self, mountpoint: Mountpoint) -> None: ...


def _transport_cc_id(viewer: Viewer, accepted: dict[str | None, MediaDescription]) -> int | None:
    """The transport-wide sequence extension id the answer kept on every m-line fanout sends
    media on (one id for the whole BUNDLE); None if one of them lacks it or the ids differ."""
    ids = {
        accepted[track.mid].header_extension_id(TRANSPORT_CC_URI)
        for track in viewer.tracks
        if track.send and track.transport_cc_extension_id is not None
    }
    if not ids or len(ids) != 1 or any(not track.transport_cc_extension_id for track in viewer.tracks if track.send):
        return None
    (extension_id,) = ids
    return extension_id if extension_id in ONE_BYTE_EXTENSION_IDS else None


# A fallback timer fires this much after the fallback has passed, so that the age it
# reads (whole milliseconds) is past it too.
FALLBACK_TIMER_MARGIN_SECONDS = 0.002
# A move waits for the new encoding's keyframe. A publisher that makes one only when asked
# (a browser over WHIP) may pass over a request too soon after another (Chromium: one per
# 300 ms for all its layers), so the request goes again each second (the engine's own rate
# limit) until the move is made, this many times at most.
MOVE_KEYFRAME_RETRY_SECONDS = 1.0
MOVE_KEYFRAME_RETRIES = 10


class StreamingPlugin(Plugin):
    package = "janus.plugin.streaming"
    name = "JANUS Streaming plugin"
    description = "fanout's Streaming plugin: WebRTC viewers watch live RTP mountpoints."
    author = "fanout"
    version = 10
    version_string = "0.0.10"

    def __init__(
        self,
        engine: Engine,
        mountpoints: list[MountpointConfig],
        settings: StreamingSettings | None = None,
        events: EngineEvents | None = None,
        admission: AdmissionLimits | None = None,
    ) -> None:
        self.engine = engine
        self.admission = Admission(admission or AdmissionLimits(), engine)  # new viewers past a load are refused
        # The engine's events (sources silent or resumed, substream moves): the server's
        # dispatcher, or one of the plugin's own, started with it.
        self._events = events
        self._own_events: EngineEvents | None = None
        self.settings = settings or StreamingSettings()
        self.mountpoint_configs = mountpoints
        self.port_range = PortRange(*self.settings.rtp_port_range)  # where a port 0 is taken
        self.mountpoints: dict[MountpointId, Mountpoint] = {}
        self._engine_ids = itertools.count(1)
        self.viewers: dict[int, Viewer] = {}
        # Substreams and temporal layers the viewers' estimates moved them to, by direction, since start (for /metrics).
        self.layer_moves: dict[str, int] = {"up": 0, "down": 0}
        self._tasks: set[asyncio.Task[None]] = set()
        self._moves_pending: dict[tuple[int, str], int] = {}  # (handle id, mid) -> the source index a move waits for
        self._rtsp_pulls: dict[MountpointId, asyncio.Task[None]] = {}  # rtsp mountpoints' sources
        # In a cluster (fanout.cluster sets it): the mountpoints ingested on other nodes,
        # id -> (description, origin node), which list and info show after the local ones.
        self.remote_mountpoints: Callable[[], Mapping[MountpointId, tuple[MountpointConfig, str]]] = dict
        self.relay_feeder: RelayFeeder | None = None  # relay mountpoints' sources; None: none can open
        self._file_players: dict[MountpointId, FilePlayer] = {}  # live mountpoints' sources
        # ondemand mountpoints: each viewer's own engine mountpoint and player, by handle id
        self._viewer_feeds: dict[int, tuple[Mountpoint, FilePlayer]] = {}
        self._sync_requests: dict[str, Callable[[Viewer, dict[str, Any]], dict[str, Any]]] = {
            "list": self._list,
            "info": self._info,
            "create": self._create,
            "edit": self._edit,
            "destroy": self._destroy,
            "enable": self._enable,
            "disable": self._disable,
            "kick_all": self._kick_all,
            "recording": self._recording,
        }
        self._async_requests: dict[str, AsyncRequest] = {
            "watch": self._watch,
            "start": self._start,
            "pause": self._pause,
            "configure": self._configure,
            "switch": self._switch,
            "stop": self._stop,
        }

    async def start(self) -> None:
        self._follow_engine_events()
        for config in self.mountpoint_configs:
            if config.file is not None:
                try:
                    await self.open_file_mountpoint(config)
                except FileSourceError as error:
                    logger.error("mountpoint %s (%s): cannot play its file: %s", config.id, config.name, error)
                continue
            if config.rtsp is None:
                self.add_mountpoint(config)
                continue
            try:
                await self.open_rtsp_mountpoint(config)
            except (*rtsp_source.PULL_ERRORS, MountpointConfigError) as error:
                logger.error("mountpoint %s (%s): cannot describe %s: %s", config.id, config.name, config.rtsp.url, error)
        self._spawn(self._forward_bitrate_estimates())
        self._spawn(self.admission.follow_worker_load())

    def _follow_engine_events(self) -> None:
        events = self._events
        if events is None:
            events = self._own_events = EngineEvents(self.engine)
            events.start()
        events.subscribe(SourceSilent, self._source_silent)
        events.subscribe(SourceResumed, self._source_resumed)
        events.subscribe(SubstreamMoved, self._substream_moved)
        events.subscribe(RecordingStopped, self._recording_stopped)
        events.subscribe(BandwidthEstimate, self._bandwidth_estimate)

    async def _forward_bitrate_estimates(self) -> None:
        """Once a second: each video source with an RTCP port gets its viewers' lowest estimate."""
        while True:
            await asyncio.sleep(FORWARD_INTERVAL_SECONDS)
            now = time.monotonic()
            for mountpoint in list(self.mountpoints.values()):
                for stream in mountpoint.config.streams:
                    if stream.kind != "video" or stream.rtcp_port is None:
                        continue
                    lowest = self.lowest_viewer_estimate(mountpoint, stream.mindex, now)
                    if lowest is None:
                        continue
                    try:
                        self.engine.send_source_remb(mountpoint.engine_id, stream.mindex, lowest)
                    except (KeyError, ValueError, RuntimeError) as error:  # gone meanwhile, or the engine closed
                        logger.debug("no REMB to mountpoint %s's source: %s", mountpoint.id, error)

    def lowest_viewer_estimate(self, mountpoint: Mountpoint, mindex: int, now: float | None = None) -> int | None:
        """The lowest bandwidth estimate (REMB) the viewers of ``mountpoint`` sent lately about
        its stream ``mindex``; None if none did."""
        viewers = [self.viewers.get(handle_id) for handle_id in mountpoint.viewers]
        estimates = (viewer.bitrate_estimate(mountpoint, mindex) for viewer in viewers if viewer)
        return lowest_fresh_estimate(estimates, time.monotonic() if now is None else now)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        pulls = list(self._rtsp_pulls.values())
        players = list(self._file_players.values()) + [player for _, player in self._viewer_feeds.values()]
        for mountpoint in list(self.mountpoints.values()):
            self.remove_mountpoint(mountpoint.id)
        if pulls:  # their TEARDOWNs
            await asyncio.wait(pulls, timeout=2)
        for player in players:
            await player.stopped()
        if self._own_events is not None:
            self._own_events.stop()
            self._own_events = None

    def add_mountpoint(self, config: MountpointConfig) -> Mountpoint:
        """Open a mountpoint: its source ports are bound when this returns (OSError if not)."""
        if config.id in self.mountpoints:
            raise ValueError(f"mountpoint {config.id} already exists")
        if config.relay is not None and self.relay_feeder is None:
            raise MountpointConfigError(
                f"mountpoint {config.id}: a relay needs janus.jcfg's cluster group (the cluster secret)"
            )
        mountpoint = Mountpoint.open(
            self.engine, config, next(self._engine_ids), lambda data: self._relay_data(config.id, data), self.port_range
        )
        self.mountpoints[config.id] = mountpoint
        if config.relay is not None and self.relay_feeder is not None:
            self.relay_feeder.opened(mountpoint)
            logger.info("mountpoint %s (%s) relays %s's mountpoint %s on demand", config.id, config.name,
                        config.relay.origin_node, config.relay.origin_mountpoint or config.id)  # fmt: skip
            return mountpoint
        inputs = [f"{s.kind} {s.codec.name} port {p}" for s, p in zip(config.streams, mountpoint.ports)]
        if config.whip is not None:
            inputs = [f"{s.kind} {s.codec.name}" for s in config.streams] + [f"WHIP at /whip/endpoint/{config.id}"]
        if config.data is not None:
            inputs.append(f"data ({config.data.datatype}) port {mountpoint.data_port}")
        logger.info("mountpoint %s (%s) listening on %s", config.id, config.name, ", ".join(inputs))
        return mountpoint

    async def open_rtsp_mountpoint(self, config: MountpointConfig) -> Mountpoint:
        """An rtsp mountpoint: DESCRIBE its server, bind the streams its tracks need, and
        keep pulling (SETUP, PLAY, reconnections) from a task. Raises RtspError, OSError
        or TimeoutError if the server cannot be described, MountpointConfigError if it
        offers no track the mountpoint can take."""
        settings = config.rtsp
        assert settings is not None
        connection: RtspConnection | None = rtsp_source.connect(settings)
        assert connection is not None
        try:
            config = rtsp_source.described_config(config, await connection.describe())
        except rtsp_source.PULL_ERRORS as error:
            await connection.close()
            if settings.failcheck:
                raise
            logger.warning("mountpoint %s: cannot describe %s now (%s); will try again", config.id, settings.url, error)
            connection = None  # the pull connects when the server is there
            config = dataclasses.replace(config, streams=rtsp_source.streams_from_choices(config))
        except BaseException:
            await connection.close()
            raise
        try:
            if config.id in self.mountpoints:  # created by another request while this one waited
                raise StreamingError(Errors.CANT_CREATE, "A stream with the provided ID already exists")
            mountpoint = self.add_mountpoint(config)
        except BaseException:
            if connection is not None:
                await connection.close()
            raise
        pull = RtspPull(self.engine, mountpoint, connection)
        self._rtsp_pulls[config.id] = asyncio.get_running_loop().create_task(pull.run())
        return mountpoint

    async def open_file_mountpoint(self, config: MountpointConfig) -> Mountpoint:
        """A live or ondemand mountpoint: its file checked (FileSourceError if it cannot be
        played), its streams bound, and for ``live`` the player started."""
        assert config.file is not None
        await checked_file(config)
        if config.id in self.mountpoints:  # created by another request while this one waited
            raise StreamingError(Errors.CANT_CREATE, "A stream with the provided ID already exists")
        mountpoint = self.add_mountpoint(config)
        if not config.file.ondemand:
            player = FilePlayer(config, mountpoint.ports, lambda reason: self._file_failed(mountpoint, reason))
            self._file_players[config.id] = player
            player.start()
        return mountpoint

    def _file_failed(self, mountpoint: Mountpoint, reason: str, handle_id: int | None = None) -> None:
        """A file player stopped with an error (it is started again): the viewers it fed are told."""
        event = {"streaming": "event", "result": {"status": "source_error", "id": mountpoint.id, "reason": reason}}
        for viewer_id in [handle_id] if handle_id is not None else list(mountpoint.viewers):
            viewer = self.viewers.get(viewer_id)
            if viewer is not None:
                viewer.handle.push_event(None, event)

    def _open_viewer_feed(self, viewer: Viewer, mountpoint: Mountpoint) -> int:
        """An ondemand viewer's own engine mountpoint, fed from the start of the file; its engine id."""
        handle_id = viewer.handle.id
        feed = Mountpoint.open(self.engine, mountpoint.config, next(self._engine_ids), lambda _: None, self.port_range)
        player = FilePlayer(mountpoint.config, feed.ports, lambda reason: self._file_failed(mountpoint, reason, handle_id))
        self._viewer_feeds[handle_id] = (feed, player)
        player.start()
        return feed.engine_id

    def _close_viewer_feed(self, handle_id: int) -> None:
        feed = self._viewer_feeds.pop(handle_id, None)
        if feed is not None:
            mountpoint, player = feed
            player.stop()
            mountpoint.close(self.engine)

    def remove_mountpoint(self, mountpoint_id: MountpointId) -> None:
        pull = self._rtsp_pulls.pop(mountpoint_id, None)
        if pull is not None:
            pull.cancel()  # it tears the RTSP session down
        player = self._file_players.pop(mountpoint_id, None)
        if player is not None:
            player.stop()
        mountpoint = self.mountpoints.pop(mountpoint_id)
        if mountpoint.config.relay is not None and self.relay_feeder is not None:
            self.relay_feeder.closed(mountpoint)
        self._kick_viewers(mountpoint)
        mountpoint.close(self.engine)

    def _kick_viewers(self, mountpoint: Mountpoint) -> None:
        """Every viewer of ``mountpoint`` is told ``stopped`` and its PeerConnection closed."""
        for handle_id in list(mountpoint.viewers):
            viewer = self.viewers.get(handle_id)
            if viewer is not None:
                self._remove_from_engine(viewer)
                viewer.leave()
                viewer.handle.push_event(None, status_event("stopped"))
                viewer.handle.close_pc()

    # --- the core's calls -------------------------------------------------

    def create_session(self, handle: PluginHandle) -> None:
        self.viewers[handle.id] = Viewer(handle)

    async def handle_message(
        self, handle: PluginHandle, transaction: str, body: dict[str, Any], jsep: Jsep | None
    ) -> PluginResult:
        viewer = self.viewers[handle.id]
        try:
            request = body.get("request")
            if request is None:
                raise StreamingError(Errors.MISSING_ELEMENT, "Missing mandatory element (request)")
            if not isinstance(request, str):
                raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (request should be a string)")
            request = request.lower()
            if request == "create" and body.get("type") == "rtsp":
                return PluginSuccess(await self._create_rtsp(body))
            if request == "create" and body.get("type") in ("live", "ondemand"):
                return PluginSuccess(await self._create_file(body))
            if request in self._sync_requests:
                return PluginSuccess(self._sync_requests[request](viewer, body))
            if request not in self._async_requests:
                raise StreamingError(Errors.INVALID_REQUEST, f"Unknown request '{request}'")
        except StreamingError as error:
            return PluginSuccess(error.to_data())
        self._spawn(self._run_async(self._async_requests[request], viewer, transaction, body, jsep))
        return PluginAck()

    def setup_media(self, handle: PluginHandle) -> None:
        viewer = self.viewers.get(handle.id)
        if viewer is None or viewer.mountpoint is None or viewer.in_engine:
            return
        tracks = [track for track in viewer.tracks if track.send]
        file = viewer.mountpoint.config.file
        engine_id = viewer.mountpoint.engine_id
        if file is not None and file.ondemand:
            engine_id = self._open_viewer_feed(viewer, viewer.mountpoint)
        # The core made the engine peer (keys, address) when DTLS came up; it gets the streams now.
        self.engine.subscribe(handle.id, engine_id, [track.engine_stream() for track in tracks])
        viewer.in_engine = True
        viewer.watching_since = time.monotonic()
        for track in tracks:
            if track.paused:
                self.engine.set_stream_paused(handle.id, track.source_index, True)
            self._send_playout_delay(viewer, track)
        if viewer.transport_cc_id is not None:
            self.engine.set_transport_cc(handle.id, viewer.transport_cc_id)
        if viewer.state is not ViewerState.PAUSED:
            viewer.state = ViewerState.STARTED
        if viewer.state is ViewerState.PAUSED or not viewer.mountpoint.enabled:
            self.engine.set_paused(handle.id, True)
        logger.info("viewer %d watching mountpoint %s", handle.id, viewer.mountpoint.id)
        handle.push_event(None, status_event("started"))
        for track in tracks:
            if track.substream is not None:
                handle.push_event(None, layer_event(track.mid, substream=track.substream))
        self._follow_silence(viewer.mountpoint)  # its substream may be silent already

    def incoming_rtcp(self, handle: PluginHandle, report: RtcpReport) -> None:
        """What the engine read in the viewer's RTCP (it answered NACKs and forwarded PLIs
        itself): counted for handle_info; receiver reports and REMB kept."""
        viewer = self.viewers.get(handle.id)
        if viewer is None:
            return
        seen = {
            "nack": report.nacks,  # sequence numbers asked for
            "pli": report.keyframe_requests,  # PLIs and FIRs
            "rr": len(report.receiver_reports),  # report blocks
            "remb": int(report.remb is not None),
            "other": report.other,
        }
        for kind, count in seen.items():
            if count:
                viewer.rtcp_counts[kind] = viewer.rtcp_counts.get(kind, 0) + count
        for block in report.receiver_reports:
            viewer.take_report(block)
        if report.remb is not None:
            viewer.take_bitrate_estimate(report.remb.ssrcs, report.remb.bitrate, time.monotonic())

    def data_ready(self, handle: PluginHandle) -> None:
        """The viewer's data channel can carry messages: a buffering data stream sends it the
        latest message at once."""
        viewer = self.viewers.get(handle.id)
        if viewer is None or viewer.mountpoint is None or not self._gets_data(viewer, viewer.mountpoint):
            return
        data = viewer.mountpoint.config.data
        latest = viewer.mountpoint.latest_data_message
        if data is not None and data.buffer_message and latest is not None:
            self._send_data(viewer, latest, binary=data.binary)

    def _relay_data(self, mountpoint_id: MountpointId, data: bytes) -> None:
        """One datagram from a mountpoint's data port: a message to each of its viewers."""
        mountpoint = self.mountpoints.get(mountpoint_id)
        stream = mountpoint.config.data if mountpoint is not None else None
        if mountpoint is None or stream is None:
            return
        if stream.buffer_message:
            mountpoint.latest_data_message = data
        for handle_id in list(mountpoint.viewers):
            viewer = self.viewers.get(handle_id)
            if viewer is not None and self._gets_data(viewer, mountpoint):
                self._send_data(viewer, data, binary=stream.binary)

    @staticmethod
    def _gets_data(viewer: Viewer, mountpoint: Mountpoint) -> bool:
        return (
            viewer.data is not None
            and viewer.data_accepted
            and not viewer.data_paused
            and mountpoint.config.data is not None
            and viewer.in_engine
            and viewer.state is ViewerState.STARTED
            and mountpoint.enabled
        )

    @staticmethod
    def _send_data(viewer: Viewer, data: bytes, *, binary: bool) -> None:
        if viewer.handle.send_data(data, binary=binary):
            viewer.data_sent += 1
        else:
            viewer.data_dropped += 1

    def hangup_media(self, handle: PluginHandle) -> None:
        viewer = self.viewers.get(handle.id)
        if viewer is None:
            return
        media_was_flowing = viewer.in_engine  # as Janus: no "stopped" for a PeerConnection that never came up
        self._remove_from_engine(viewer)
        viewer.leave()
        if media_was_flowing:
            handle.push_event(None, status_event("stopped"))

    def destroy_session(self, handle: PluginHandle) -> None:
        viewer = self.viewers.pop(handle.id, None)
        if viewer is not None:
            self._remove_from_engine(viewer)
            viewer.leave()

    def query_session(self, handle: PluginHandle) -> dict[str, Any]:
        viewer = self.viewers.get(handle.id)
        if viewer is None:
            return {}
        info: dict[str, Any] = {"state": viewer.state.value}
        if viewer.mountpoint is not None:
            info["mountpoint"] = viewer.mountpoint.id
            info["mids"] = [track.mid for track in viewer.tracks]
            info["estimate"] = viewer.estimate
            info["layer_moves"] = dict(viewer.layer_moves)
            # None: fanout cannot tell (no transport feedback or REMB measures the viewer's rate).
            info["keeping_up"] = not viewer.keeping_up.behind if viewer.estimate_measures_rate else None
            info["transport_cc"] = viewer.transport_cc_id is not None
            info["layers"] = {
                track.mid: {"substream": track.substream, "temporal": track.temporal, "adaptive": track.adaptive}
                for track in viewer.tracks
                if track.stream.simulcast or track.temporal is not None
            }
        if viewer.in_engine:
            info["engine"] = _peer_stats_json(self.engine.peer_stats(handle.id))
        info["rtcp_received"] = dict(viewer.rtcp_counts)
        info["reception"] = {mid: reception.as_dict() for mid, reception in viewer.reception.items()}
        if viewer.data is not None:
            info["data"] = {"mid": viewer.data_mid, "messages_sent": viewer.data_sent, "messages_dropped": viewer.data_dropped}
        return info

    # --- synchronous requests ----------------------------------------------

    def _list(self, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        admin_key = self.settings.admin_key
        with_private = admin_key is not None and body.get("admin_key") == admin_key
        entries = [
            mountpoint.list_entry(self.engine)
            for mountpoint in self.mountpoints.values()
            if with_private or not mountpoint.config.is_private
        ]
        entries += [
            remote_list_entry(config, origin)
            for mountpoint_id, (config, origin) in self.remote_mountpoints().items()
            if mountpoint_id not in self.mountpoints and (with_private or not config.is_private)
        ]
        return {"streaming": "list", "list": entries}

    def _info(self, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        try:
            mountpoint = self._mountpoint_from(body)
        except StreamingError as error:
            remote = None
            if error.code == Errors.NO_SUCH_MOUNTPOINT:  # not here: perhaps elsewhere in the cluster
                remote = self.remote_mountpoints().get(management.checked_id(body["id"], string_ids=self.settings.string_ids))
            if remote is None:
                raise
            return {"streaming": "info", "info": remote_info(*remote)}
        with_secret = mountpoint.config.secret is None or body.get("secret") == mountpoint.config.secret
        return {"streaming": "info", "info": mountpoint.info(self.engine, with_secret=with_secret)}

    def _create(self, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        management.check_admin_key(body, self.settings.admin_key)
        permanent = management.permanent_flag(body)
        config = management.mountpoint_from_create(
            body,
            self.mountpoints.keys(),
            string_ids=self.settings.string_ids,
            allow_privileged_ports=self.settings.allow_privileged_ports,
        )
        try:
            mountpoint = self.add_mountpoint(config)
        except (OSError, MountpointConfigError) as error:
            raise StreamingError(Errors.CANT_CREATE, f"Can't add 'rtp' stream: {error}") from None
        if permanent:
            try:
                persistence.save_mountpoint(self._config_file(), config)
            except persistence.PersistenceError as error:
                self.remove_mountpoint(config.id)
                raise StreamingError(Errors.CANT_CREATE, f"Can't save the stream: {error}") from None
        return management.created_reply(
            config,
            mountpoint.ports,
            permanent=permanent,
            legacy="media" not in body,
            data_port=mountpoint.data_port,
            substream_ports=mountpoint.substream_ports,
        )

    async def _create_rtsp(self, body: dict[str, Any]) -> dict[str, Any]:
        """``create`` with ``type: "rtsp"``: answered once the server described its stream."""
        management.check_admin_key(body, self.settings.admin_key)
        permanent = management.permanent_flag(body)
        config = management.mountpoint_from_create(
            body,
            self.mountpoints.keys(),
            string_ids=self.settings.string_ids,
            allow_privileged_ports=self.settings.allow_privileged_ports,
        )
        assert config.rtsp is not None
        try:
            mountpoint = await self.open_rtsp_mountpoint(config)
        except (*rtsp_source.PULL_ERRORS, MountpointConfigError) as error:
            logger.warning("cannot create rtsp mountpoint %s from %s: %s", config.id, config.rtsp.url, error)
            raise StreamingError(Errors.CANT_CREATE, "Error creating 'RTSP' stream") from None
        if permanent:
            try:
                persistence.save_mountpoint(self._config_file(), mountpoint.config)
            except persistence.PersistenceError as error:
                self.remove_mountpoint(config.id)
                raise StreamingError(Errors.CANT_CREATE, f"Can't save the stream: {error}") from None
        return management.created_reply(mountpoint.config, mountpoint.ports, permanent=permanent, legacy=False)

    async def _create_file(self, body: dict[str, Any]) -> dict[str, Any]:
        """``create`` with ``type: "live"`` or ``"ondemand"``: answered once the file was checked."""
        management.check_admin_key(body, self.settings.admin_key)
        permanent = management.permanent_flag(body)
        config = management.mountpoint_from_create(body, self.mountpoints.keys(), string_ids=self.settings.string_ids)
        assert config.file is not None
        try:
            mountpoint = await self.open_file_mountpoint(config)
        except (FileSourceError, OSError) as error:
            logger.warning("cannot create %s mountpoint %s: %s", config.file.kind, config.id, error)
            raise StreamingError(Errors.CANT_CREATE, f"Error creating '{config.file.kind}' stream: {error}") from None
        if permanent:
            try:
                persistence.save_mountpoint(self._config_file(), config)
            except persistence.PersistenceError as error:
                self.remove_mountpoint(config.id)
                raise StreamingError(Errors.CANT_CREATE, f"Can't save the stream: {error}") from None
        return management.created_reply(config, mountpoint.ports, permanent=permanent, legacy=False)

    def _edit(self, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        mountpoint = self._mountpoint_from(body, missing_reason="No such mountpoint ({id})")
        management.check_secret(body, mountpoint.config)
        permanent = management.permanent_flag(body)
        edited = management.edited_mountpoint(mountpoint.config, body)
        if permanent:
            try:
                persistence.save_mountpoint(self._config_file(), edited)
            except persistence.PersistenceError as error:
                raise StreamingError(Errors.UNKNOWN_ERROR, f"Can't save the stream: {error}") from None
        mountpoint.config = edited
        return {"streaming": "edited", "id": mountpoint.id, "permanent": permanent}

    def _destroy(self, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        mountpoint = self._mountpoint_from(body)
        management.check_secret(body, mountpoint.config)
        if management.permanent_flag(body):
            try:
                persistence.forget_mountpoint(self._config_file(), mountpoint.id)
            except persistence.PersistenceError as error:
                raise StreamingError(Errors.UNKNOWN_ERROR, f"Can't save the change: {error}") from None
        self.remove_mountpoint(mountpoint.id)
        return {"streaming": "destroyed", "destroyed": mountpoint.id}

    def _config_file(self) -> Path:
        if self.settings.config_file is None:
            raise persistence.PersistenceError(
                "fanout runs its embedded default configuration; start it with --config DIR to save mountpoints"
            )
        return self.settings.config_file

    def _enable(self, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        return self._set_enabled(body, enabled=True)

    def _disable(self, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        return self._set_enabled(body, enabled=False)

    def _set_enabled(self, body: dict[str, Any], *, enabled: bool) -> dict[str, Any]:
        """A disabled mountpoint keeps its viewers but sends them nothing, and takes no new ones;
        its recordings stop unless ``stop_recording`` is false (as Janus)."""
        mountpoint = self._mountpoint_from(body)
        management.check_secret(body, mountpoint.config)
        stop_recording = body.get("stop_recording", True)
        if not enabled and not isinstance(stop_recording, bool):
            raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (stop_recording should be a boolean)")
        if not enabled and stop_recording:
            self._stop_recordings(mountpoint, [s for s in mountpoint.config.streams if s.mindex in mountpoint.recordings])
        mountpoint.enabled = enabled
        for handle_id in mountpoint.viewers:
            watcher = self.viewers.get(handle_id)
            if watcher is not None and watcher.in_engine:
                self.engine.set_paused(handle_id, not enabled or watcher.state is ViewerState.PAUSED)
        return {"streaming": "ok"}

    def _recording(self, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        """Janus's ``recording``, answered as Janus 1.1.2 answers it: ``action`` start or stop,
        the streams either as ``media`` (``mid`` and, to start, ``filename``) or, as before
        multistream, ``audio``/``video``/``data`` (a file name to start, true to stop: the
        mountpoint's first stream of that kind). Janus's checks come in its order; the engine
        writes the .mjr files, off the viewers' path. A relative file name is taken under
        ``rec_dir`` (general), missing folders are made (as Janus does)."""
        action = body.get("action")
        if action is None:
            raise StreamingError(Errors.MISSING_ELEMENT, "Missing mandatory element (action)")
        if not isinstance(action, str):
            raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (action should be a string)")
        if action not in ("start", "stop"):
            raise StreamingError(Errors.INVALID_ELEMENT, "Invalid action (should be start|stop)")
        mountpoint = self._mountpoint_from(body)
        if mountpoint.config.file is not None:
            raise StreamingError(Errors.INVALID_REQUEST, "Recording is only available on RTP-based live streams")
        management.check_secret(body, mountpoint.config)
        if "media" in body:
            return self._recording_media(mountpoint, action, body["media"])
        return self._recording_legacy(mountpoint, action, body)

    def _recording_media(self, mountpoint: Mountpoint, action: str, media: Any) -> dict[str, Any]:
        """``media``: entries naming a stream the mountpoint has (and a file name, to start)
        count; the others are passed over, as Janus does."""
        if not isinstance(media, list):
            raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (media should be an array)")
        targets: list[tuple[StreamConfig, str]] = []
        for entry in media:
            mid = entry.get("mid") if isinstance(entry, dict) else None
            stream = mountpoint.stream(mid) if isinstance(mid, str) else None
            filename = entry.get("filename") if isinstance(entry, dict) else None
            if stream is not None and (action == "stop" or isinstance(filename, str)):
                targets.append((stream, filename if isinstance(filename, str) else ""))
        if action == "stop":
            self._stop_recordings(mountpoint, [stream for stream, _ in targets])
            return {"streaming": "ok"}
        if any(stream.mindex in mountpoint.recordings for stream, _ in targets):
            raise StreamingError(
                Errors.INVALID_REQUEST, "Recording for audio, video and/or data already started for this stream"
            )
        self._start_recordings(mountpoint, targets, lambda kind: f"Error starting recorder for {kind}")
        return {"streaming": "ok"}

    def _recording_legacy(self, mountpoint: Mountpoint, action: str, body: dict[str, Any]) -> dict[str, Any]:
        kinds = [kind for kind in ("audio", "video", "data") if body.get(kind) is not None]
        wanted, name = (str, "a string") if action == "start" else (bool, "a boolean")
        for kind in kinds:
            if not isinstance(body[kind], wanted):
                raise StreamingError(Errors.INVALID_ELEMENT, f"Invalid element type ({kind} should be {name})")
        if not kinds:
            missing = "Missing audio, video and/or data" if action == "start" else "Missing audio, video and or data"
            raise StreamingError(Errors.INVALID_REQUEST, missing)
        if action == "start" and "data" in kinds and mountpoint.data_port is not None:
            raise StreamingError(Errors.CANT_RECORD, "Error starting recorder: fanout does not record data streams")
        streams = [(stream, body[kind]) for kind in kinds if (stream := mountpoint.first_stream(kind)) is not None]
        if action == "stop":
            self._stop_recordings(mountpoint, [stream for stream, stop in streams if stop])
            return {"streaming": "ok"}
        if any(stream.mindex in mountpoint.recordings for stream, _ in streams):
            raise StreamingError(Errors.INVALID_REQUEST, "Recording started for this stream")
        self._start_recordings(mountpoint, streams, lambda kind: "Error starting recorder")
        return {"streaming": "ok"}

    def _start_recordings(
        self, mountpoint: Mountpoint, targets: list[tuple[StreamConfig, str]], error: Callable[[str], str]
    ) -> None:
        """Each stream to its file, all or none: a file that cannot be made stops those started."""
        started: list[StreamConfig] = []
        for stream, filename in targets:
            path = self._recording_path(filename)
            try:
                path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                self.engine.start_recording(mountpoint.engine_id, stream.mindex, str(path), stream.codec.name)
            except OSError as failure:
                reason = os.strerror(failure.errno) if failure.errno else str(failure)
                logger.warning("mountpoint %s: cannot record %s to %s: %s", mountpoint.id, stream.kind, path, reason)
                self._stop_recordings(mountpoint, started)
                raise StreamingError(Errors.CANT_RECORD, error(stream.kind)) from None
            mountpoint.recordings[stream.mindex] = str(path)
            started.append(stream)
            logger.info("mountpoint %s: recording %s to %s", mountpoint.id, stream.kind, path)

    def _stop_recordings(self, mountpoint: Mountpoint, streams: list[StreamConfig]) -> None:
        for stream in streams:
            if mountpoint.recordings.pop(stream.mindex, None) is not None:
                self.engine.stop_recording(mountpoint.engine_id, stream.mindex)
                logger.info("mountpoint %s: %s recording stopped", mountpoint.id, stream.kind)

    def _recording_path(self, filename: str) -> Path:
        """``filename`` with Janus's .mjr extension, under rec_dir if relative."""
        path = Path(filename if filename.endswith(".mjr") else filename + ".mjr")
        if self.settings.rec_dir is not None and not path.is_absolute():
            path = self.settings.rec_dir / path
        return path

    def _recording_stopped(self, event: RecordingStopped) -> None:
        mountpoint = self._mountpoint_of_engine_id(event.mountpoint_id)
        if mountpoint is None:
            return
        path = mountpoint.recordings.pop(event.index, None)
        logger.error("mountpoint %s: recording to %s stopped: %s", mountpoint.id, path, event.reason)

    def _kick_all(self, viewer: Viewer, body: dict[str, Any]) -> dict[str, Any]:
        mountpoint = self._mountpoint_from(body)
        management.check_secret(body, mountpoint.config)
        self._kick_viewers(mountpoint)
        return {"streaming": "kicked_all"}

    # --- asynchronous requests ---------------------------------------------

    async def _run_async(
        self, request: AsyncRequest, viewer: Viewer, transaction: str, body: dict[str, Any], jsep: Jsep | None
    ) -> None:
        try:
            request(viewer, transaction, body, jsep)
        except StreamingError as error:
            viewer.handle.push_event(transaction, error.to_data())
        except Exception:
            logger.exception("streaming request failed for handle %d", viewer.handle.id)
            viewer.handle.push_event(
                transaction, StreamingError(Errors.UNKNOWN_ERROR, "Internal error").to_data()
            )

    def _watch(self, viewer: Viewer, transaction: str, body: dict[str, Any], jsep: Jsep | None) -> None:
        restart = body.get("restart", False)
        if not isinstance(restart, bool):
            raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (restart should be a boolean)")
        if restart and viewer.mountpoint is not None:
            self._restart_ice(viewer, transaction)
            return
        if jsep is not None:
            self._answer_offer(viewer, transaction, body, jsep)
            return
        left_out = _kinds_left_out(body)
        mountpoint = self._watchable_mountpoint(viewer, body)
        self._admit()
        mids = body.get("media")
        if mids is not None and (not isinstance(mids, list) or not all(isinstance(m, str) for m in mids)):
            raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (media should be an array)")
        if mids:
            data_mid = mountpoint.config.data.mid if mountpoint.config.data is not None else None
            unknown = [mid for mid in mids if mountpoint.stream(mid) is None and mid != data_mid]
            if len(unknown) == len(mids):
                raise StreamingError(Errors.INVALID_ELEMENT, "No valid mid in the media list")
        viewer.watch(mountpoint, mids, left_out, transport_cc_everywhere=self.settings.transport_cc == "all")
        if not viewer.tracks and viewer.data is None:
            viewer.leave()
            raise StreamingError(Errors.INVALID_REQUEST, "Can't offer an SDP with no audio, video or data for this mountpoint")
        offer = LocalOffer(media=viewer.offer_media())
        viewer.handle.push_event(transaction, status_event("preparing"), offer)

    def _answer_offer(self, viewer: Viewer, transaction: str, body: dict[str, Any], jsep: Jsep) -> None:
        """``watch`` with the client's offer: fanout answers with the mountpoint's streams on the
        offered m-lines; media starts when the PeerConnection is up (no ``start`` needed)."""
        mountpoint = self._watchable_mountpoint(viewer, body)
        if jsep.type != "offer":
            raise StreamingError(Errors.INVALID_SDP, "watch takes an SDP offer (or none, and fanout offers)")
        self._admit()
        tracks = match_offer(
            jsep.description, mountpoint.config.streams, playoutdelay_ext=mountpoint.config.playoutdelay_ext
        )
        data_index = data_mline(jsep.description) if mountpoint.config.data is not None else None
        if not any(tracks) and data_index is None:
            raise StreamingError(Errors.INVALID_SDP, "The offer can receive none of the mountpoint's streams")
        data_mid = jsep.description.media[data_index].mid if data_index is not None else None
        viewer.answer(mountpoint, [track for track in tracks if track is not None], data_mid)
        answer_media: list[OfferMedia | None] = [track.offer_media() if track is not None else None for track in tracks]
        if data_index is not None and data_mid is not None:
            answer_media[data_index] = OfferMedia(mid=data_mid, kind="application", codec=None, ssrc=0)
        answer = LocalAnswer(answer_media)
        viewer.handle.push_event(transaction, status_event("preparing"), answer)

    def _admit(self) -> None:
        """Refuse a new viewer (OverloadedError) when the node is past a configured load."""
        self.admission.check(sum(1 for viewer in self.viewers.values() if viewer.mountpoint is not None))

    def _restart_ice(self, viewer: Viewer, transaction: str) -> None:
        """``watch`` with ``restart``: a new offer with new ICE credentials, same DTLS and media."""
        offer = LocalOffer(media=viewer.offer_media(), ice_restart=True)
        viewer.handle.push_event(transaction, status_event("updating"), offer)

    def _watchable_mountpoint(self, viewer: Viewer, body: dict[str, Any], *, switching: bool = False) -> Mountpoint:
        """The mountpoint a ``watch`` (or ``switch``) names, if this viewer may watch it now."""
        mountpoint = self._mountpoint_from(body)
        pin = body.get("pin")
        if pin is not None and not isinstance(pin, str):
            raise StreamingError(Errors.INVALID_ELEMENT, "Invalid element type (pin should be a string)")
        if viewer.mountpoint is not None and not switching:
            raise StreamingError(Errors.INVALID_STATE, f"Already watching mountpoint {viewer.mountpoint.id}")
        if mountpoint.config.pin is not None and pin != mountpoint.config.pin:
            raise StreamingError(Errors.UNAUTHORIZED, "Unauthorized (wrong pin)")
        if not mountpoint.enabled:
            raise StreamingError(Errors.UNAUTHORIZED, f"Mountpoint {mountpoint.id} is not enabled")
        return mountpoint

    def _start(self, viewer: Viewer, transaction: str, body: dict[str, Any], jsep: Jsep | None) -> None:
        """Take the client's answer, or resume a paused viewer. Without a JSEP while the offer
        waits for its answer, Janus answers ``starting`` too; media flows once an answer came."""
        if viewer.mountpoint is None:
            raise StreamingError(Errors.NO_SUCH_MOUNTPOINT, "Can't start: no mountpoint set")
        if jsep is not None:
            if jsep.type != "answer":
                raise StreamingError(Errors.INVALID_STATE, "Can't start: expected an SDP answer")
            accepted = {media.mid: media for media in jsep.description.media if media.port != 0}
            for track in viewer.tracks:
                track.send = track.mid in accepted
                if track.send and track.playout_delay_extension_id is not None:
                    # Sent only if the answer kept it, with the answer's id.
                    extension_id = accepted[track.mid].header_extension_id(PLAYOUT_DELAY_URI)
                    track.playout_delay_extension_id = extension_id if extension_id in ONE_BYTE_EXTENSION_IDS else None
            viewer.transport_cc_id = _transport_cc_id(viewer, accepted)
            viewer.data_accepted = viewer.data is not None and viewer.data.mid in accepted
            if not any(track.send for track in viewer.tracks) and not viewer.data_accepted:
                raise StreamingError(Errors.INVALID_SDP, "The answer rejected every stream")
            if viewer.state is ViewerState.OFFERED:
                viewer.state = ViewerState.STARTING
        elif viewer.state is ViewerState.PAUSED:
            viewer.state = ViewerState.STARTED if viewer.in_engine else ViewerState.STARTING
            if viewer.in_engine:
                self.engine.set_paused(viewer.handle.id, not viewer.mountpoint.enabled)
        viewer.handle.push_event(transaction, status_event("starting"))

    def _pause(self, viewer: Viewer, transaction: str, body: dict[str, Any], jsep: Jsep | None) -> None:
        if viewer.mountpoint is not None:
            viewer.state = ViewerState.PAUSED
            if viewer.in_engine:
                self.engine.set_paused(viewer.handle.id, True)
        viewer.handle.push_event(transaction, status_event("pausing"))

    def _configure(self, viewer: Viewer, transaction: str, body: dict[str, Any], jsep: Jsep | None) -> None:
        """Which of its streams the viewer gets: ``streams: [{mid, send}]``, or the legacy
        ``audio``/``video``/``data`` booleans. A video stream sent again starts at a keyframe.
        ``min_delay``/``max_delay`` (top level: every video stream; or per mid in ``streams``)
        set the playout delay its video packets carry, where the extension was negotiated."""
        if viewer.mountpoint is None:
            raise StreamingError(Errors.INVALID_STATE, "Can't configure: not watching anything")
        body, send_data = subscription.data_choice(body, viewer.data_mid)
        wanted = subscription.send_choices(body, viewer.tracks)
        delays = subscription.playout_delay_choices(body, viewer.tracks)
        if send_data is not None:
            viewer.data_paused = not send_data
        layers = subscription.layer_choices(body, viewer.tracks)
        for track, send in wanted:
            track.paused = not send
            if viewer.in_engine and track.send:
                self.engine.set_stream_paused(viewer.handle.id, track.source_index, not send)
        for track, min_delay, max_delay in delays:
            track.configure_playout_delay(min_delay, max_delay)
        for track in viewer.tracks:
            if any(track is delayed for delayed, _, _ in delays):
                self._send_playout_delay(viewer, track)
        viewer.handle.push_event(transaction, {"streaming": "event", "result": {"event": "configured"}})
        for track, layer in layers:
            if "substream" in layer or "adaptive" in layer:
                # A substream pins the track (Janus's behaviour), unless the request turns adaptive on itself.
                track.adaptive = bool(layer.get("adaptive", 0))
                track.layer_choice = LayerChoice()
            if "temporal" in layer or "adaptive" in layer:
                # A temporal layer pins it too, unless the request turns adaptive on itself.
                automatic_cap = not track.temporal_pinned and track.temporal is not None
                track.temporal_pinned = "temporal" in layer and not layer.get("adaptive", 0)
                if not track.stream.simulcast and not layer.get("adaptive", 1):
                    # VP9 without simulcast: automatic choice off, the layers it left out back.
                    track.temporal_pinned = True
                    if automatic_cap and "temporal" not in layer:
                        rates = viewer.mountpoint.layer_rates.temporal_bitrates(track.source_index)
                        self._take_temporal_layer(viewer, track, None, shown=_top_layer(rates))
                track.temporal_choice = LayerChoice()
            if track.stream.codec.name == "vp9" and not track.stream.simulcast and ("spatial" in layer or "adaptive" in layer):
                # A spatial layer pins the track's spatial layers likewise; automatic choice off brings
                # back those the estimate left out.
                automatic_spatial = not track.spatial_pinned and track.spatial is not None
                track.spatial_pinned = ("spatial" in layer and not layer.get("adaptive", 0)) or not layer.get("adaptive", 1)
                if track.spatial_pinned and automatic_spatial and "spatial" not in layer:
                    top = _top_layer(viewer.mountpoint.layer_rates.spatial_bitrates(track.source_index))
                    self._take_spatial_layer(viewer, track, None, shown=top)
                track.spatial_choice = LayerChoice()
            automatic_cap = not track.temporal_pinned and track.temporal is not None
            if not track.adaptive and automatic_cap and "temporal" not in layer:
                # Automatic choice off: the temporal layers the estimate left out come back.
                rates = viewer.mountpoint.layer_rates.temporal_bitrates(track.source_index)
                self._take_temporal_layer(viewer, track, None, shown=_top_layer(rates))
            if "fallback" in layer:
                track.fallback_us = layer["fallback"]
            if "temporal" in layer:
                self._set_temporal_layer(viewer, track, layer["temporal"])
            if "spatial" in layer:
                self._set_spatial_layer(viewer, track, layer["spatial"])
            if "substream" in layer:
                track.requested_substream = min(layer["substream"], track.stream.substreams - 1)
                ages = self._source_ages_ms(viewer.mountpoint, viewer, time.monotonic())
                self._set_substream(viewer, track, track.substream_to_take(ages))
        if layers:
            self._follow_silence(viewer.mountpoint)

    # --- the engine's events ------------------------------------------------

    def _mountpoint_of_engine_id(self, engine_id: int) -> Mountpoint | None:
        return next((mountpoint for mountpoint in self.mountpoints.values() if mountpoint.engine_id == engine_id), None)

    def _source_silent(self, event: SourceSilent) -> None:
        mountpoint = self._mountpoint_of_engine_id(event.mountpoint_id)
        if mountpoint is not None:
            logger.debug("mountpoint %s: source stream %d silent for %d ms", mountpoint.id, event.index, event.silent_ms)
            mountpoint.silence.silent(event.index, event.silent_ms, time.monotonic())
            self._follow_silence(mountpoint)

    def _source_resumed(self, event: SourceResumed) -> None:
        mountpoint = self._mountpoint_of_engine_id(event.mountpoint_id)
        if mountpoint is not None:
            logger.debug("mountpoint %s: source stream %d sends", mountpoint.id, event.index)
            mountpoint.silence.resumed(event.index)
            self._follow_silence(mountpoint)

    def _substream_moved(self, event: SubstreamMoved) -> None:
        """The engine made a move ``_set_substream`` asked (at the new substream's keyframe):
        the client learns the substream it gets now. A move another configure overtook
        is not announced: the track waits for its own."""
        viewer = self.viewers.get(event.peer_id)
        if viewer is None or not viewer.in_engine:
            return
        for track in viewer.tracks:
            if track.stream.simulcast and track.source_index == event.source_index and track.substream is not None:
                self._moves_pending.pop((viewer.handle.id, track.mid), None)
                viewer.handle.push_event(None, layer_event(track.mid, substream=track.substream))

    def _bandwidth_estimate(self, event: BandwidthEstimate) -> None:
        """The engine's estimate of a viewer's bandwidth: each of its adaptive simulcast tracks
        takes the substream that fits (down at once, up after the estimate held above the next
        layer with headroom; see adaptation.py), through the same path as configure; then whether
        the viewer keeps up with what it gets."""
        viewer = self.viewers.get(event.peer_id)
        if viewer is None or viewer.mountpoint is None or not viewer.in_engine:
            return
        viewer.estimate = event.bitrate
        logger.debug("viewer %d: estimate %d bit/s", event.peer_id, event.bitrate)
        mountpoint = viewer.mountpoint
        now = time.monotonic()
        self._sample_layer_rates(mountpoint, now)
        goals = self._adapt_substreams(viewer, mountpoint, event, now)
        goals += self._adapt_spatial_layers(viewer, mountpoint, event, now)
        goals += self._adapt_temporal_layers(viewer, mountpoint, event, now)
        self._set_probe_goal(viewer, min(goals, default=None))
        self._judge_keeping_up(viewer, mountpoint, event, now)

    def _set_probe_goal(self, viewer: Viewer, goal: int | None) -> None:
        """What the engine probes the viewer's link for (the next layer up with headroom): sent
        when it appears, goes, or moves by more than a tenth (the layers' rates vary)."""
        if viewer.transport_cc_id is None:
            goal = None
        previous = viewer.probe_goal
        if goal == previous or (goal is not None and previous is not None and abs(goal - previous) <= previous / 10):
            return
        viewer.probe_goal = goal
        self.engine.set_probe_goal(viewer.handle.id, goal)

    def _adapt_substreams(self, viewer: Viewer, mountpoint: Mountpoint, event: BandwidthEstimate, now: float) -> list[int]:
        """Moves each adaptive simulcast track to the substream its estimate fits; returns the
        probe goals of those below their top."""
        tracks = [track for track in viewer.tracks if track.stream.simulcast and track.adaptive and track.send]
        ages: dict[int, int | None] | None = None
        goals = []
        for track in tracks:
            indexes = [source_index(track.stream, substream) for substream in range(track.stream.substreams)]
            bitrates = mountpoint.layer_rates.layer_bitrates(indexes)
            current = track.requested_substream if track.requested_substream is not None else 0
            chosen = track.layer_choice.choose(
                event.bitrate, bitrates, current, now, link_limited=event.link_limited, probed=event.probed
            )
            goal = probe_goal(bitrates, chosen)
            if goal is not None:
                goals.append(goal)
            if chosen == current:
                continue
            logger.debug("viewer %d, mid %s: estimate %d bit/s, substream %d -> %d",
                         viewer.handle.id, track.mid, event.bitrate, current, chosen)
            track.requested_substream = chosen
            direction = "up" if chosen > current else "down"
            viewer.layer_moves[direction] += 1
            self.layer_moves[direction] += 1
            if ages is None:
                ages = self._source_ages_ms(mountpoint, viewer, now)
            # Down: the link no longer carries the current substream, so it stops now instead of
            # filling the queue until the lower one's next keyframe (see set_stream_source).
            self._set_substream(viewer, track, track.substream_to_take(ages), at_once=chosen < current)
        return goals

    def _adapt_spatial_layers(self, viewer: Viewer, mountpoint: Mountpoint, event: BandwidthEstimate, now: float) -> list[int]:
        """VP9 with spatial layers on a single-layer stream: the highest spatial layer the estimate
        fits (down at once, up one layer after the estimate held above it with headroom, or at once
        when a probe measured it), unless configure pinned one or turned automatic choice off.
        Returns the probe goals of the tracks below their top spatial layer."""
        goals: list[int] = []
        if not viewer.estimate_measures_rate:
            return goals
        for track in viewer.tracks:
            if not track.send or track.stream.codec.name != "vp9" or track.stream.simulcast or track.spatial_pinned:
                continue
            rates = mountpoint.layer_rates.spatial_bitrates(track.source_index)
            if len(rates) < 2:  # no spatial layers, or not measured yet
                continue
            top = len(rates) - 1
            current = top if track.spatial is None else min(track.spatial, top)
            chosen = self._choose_layer(viewer, track, track.spatial_choice, rates, current, event, now, goals, "spatial")
            if chosen != current:
                self._take_spatial_layer(viewer, track, None if chosen == top else chosen, shown=chosen)
        return goals

    def _choose_layer(
        self,
        viewer: Viewer,
        track: ViewerTrack,
        choice: LayerChoice,
        rates: list[int],
        current: int,
        event: BandwidthEstimate,
        now: float,
        goals: list[int],
        kind: str,
    ) -> int:
        """The ``kind`` (spatial or temporal) layer ``choice`` takes from the estimate among
        layers of these bitrates, counted as a move if it is not ``current``; the probe goal
        from it (if below the top) goes into ``goals``."""
        chosen = choice.choose(event.bitrate, rates, current, now, link_limited=event.link_limited, probed=event.probed)
        goal = probe_goal(rates, chosen)
        if goal is not None:
            goals.append(goal)
        if chosen != current:
            logger.debug("viewer %d, mid %s: estimate %d bit/s, %s layer %d -> %d",
                         viewer.handle.id, track.mid, event.bitrate, kind, current, chosen)  # fmt: skip
            direction = "up" if chosen > current else "down"
            viewer.layer_moves[direction] += 1
            self.layer_moves[direction] += 1
        return chosen

    def _take_spatial_layer(self, viewer: Viewer, track: ViewerTrack, spatial: int | None, *, shown: int) -> None:
        """The estimate's spatial layer for the track (None: all); the client is told ``shown``."""
        track.spatial = spatial
        if viewer.in_engine and track.send:
            self.engine.set_stream_spatial_layer(viewer.handle.id, track.source_index, spatial)
        viewer.handle.push_event(None, layer_event(track.mid, spatial_layer=shown))

    def _adapt_temporal_layers(self, viewer: Viewer, mountpoint: Mountpoint, event: BandwidthEstimate, now: float) -> list[int]:
        """VP8, VP9 or AV1 with temporal layers, at the lowest substream of an adaptive simulcast track or on
        a single-layer stream: the highest temporal layer the estimate fits (down at once, up one
        layer after the estimate held above it with headroom), unless configure pinned one. A
        simulcast track moved above its lowest substream gets every layer again. Only once the
        estimate measures a rate: a viewer that sends neither transport feedback nor REMB has
        one that never grows past the engine's start (1 Mbit/s). Returns the probe goals of
        the tracks below their top temporal layer."""
        goals: list[int] = []
        if not viewer.estimate_measures_rate:
            return goals
        for track in viewer.tracks:
            if not track.send or track.stream.codec.name not in TEMPORAL_LAYER_CODECS or track.temporal_pinned:
                continue
            if track.stream.simulcast and not track.adaptive:
                continue
            rates = mountpoint.layer_rates.temporal_bitrates(track.source_index)
            top = _top_layer(rates)
            spatial_rates = mountpoint.layer_rates.spatial_bitrates(track.source_index)
            spatial_layered = track.stream.codec.name == "vp9" and not track.stream.simulcast and len(spatial_rates) > 1
            above_lowest = (track.stream.simulcast and track.requested_substream != 0) or (
                spatial_layered and (track.spatial is None or track.spatial > 0)
            )
            if above_lowest:
                # Temporal layers are left out only at the lowest substream or spatial layer.
                if track.temporal is not None:
                    track.temporal_choice = LayerChoice()
                    self._take_temporal_layer(viewer, track, None, shown=top)
                continue
            if spatial_layered:
                # Each temporal layer's bytes span every spatial layer: the base spatial layer's share of them.
                rates = [rate * spatial_rates[0] // spatial_rates[-1] for rate in rates]
            if len(rates) < 2:  # no temporal layers, or not measured yet
                continue
            current = top if track.temporal is None else min(track.temporal, top)
            chosen = self._choose_layer(viewer, track, track.temporal_choice, rates, current, event, now, goals, "temporal")
            if chosen != current:
                self._take_temporal_layer(viewer, track, None if chosen == top else chosen, shown=chosen)
        return goals

    def _take_temporal_layer(self, viewer: Viewer, track: ViewerTrack, temporal: int | None, *, shown: int) -> None:
        """The estimate's temporal layer for the track (None: all); the client is told ``shown``."""
        track.temporal = temporal
        if viewer.in_engine and track.send:
            self.engine.set_stream_temporal_layer(viewer.handle.id, track.source_index, temporal)
        viewer.handle.push_event(None, temporal_layer_event(track, shown))

    def _judge_keeping_up(self, viewer: Viewer, mountpoint: Mountpoint, event: BandwidthEstimate, now: float) -> None:
        """Whether the viewer's link carries what it gets (once its estimate measures a rate, while
        media flows): a change is told to its client (``keeping_up``), handle_info and /metrics
        show it. A simulcast viewer is judged on the substream its estimate moved it to."""
        if not viewer.estimate_measures_rate or viewer.state is not ViewerState.STARTED or not mountpoint.enabled:
            return
        bitrate = self._received_bitrate(viewer, mountpoint)
        if bitrate is None or not viewer.keeping_up.update(event.bitrate, bitrate, now, link_limited=event.link_limited):
            return
        if viewer.keeping_up.behind:
            logger.info("viewer %d cannot keep up: estimate %d bit/s under the %d bit/s it gets",
                        viewer.handle.id, event.bitrate, bitrate)  # fmt: skip
        else:
            logger.info("viewer %d keeps up again: estimate %d bit/s", viewer.handle.id, event.bitrate)
        viewer.handle.push_event(None, keeping_up_event(not viewer.keeping_up.behind, event.bitrate, bitrate))

    @staticmethod
    def _received_bitrate(viewer: Viewer, mountpoint: Mountpoint) -> int | None:
        """The bitrate of the source streams the viewer gets now, bits per second; None until
        each is measured, or while none sends."""
        total = 0
        for track in viewer.tracks:
            if not track.send or track.paused:
                continue
            measured = mountpoint.layer_rates.bitrates.get(track.source_index)
            if measured is None:
                return None
            capped = mountpoint.layer_rates.temporal_bitrates(track.source_index)
            if track.temporal is not None and track.temporal < len(capped):
                measured = capped[track.temporal]  # the layers above the cap are left out
            total += measured
        return total or None

    def _sample_layer_rates(self, mountpoint: Mountpoint, now: float) -> None:
        """At most once a second per mountpoint: each source stream's byte count, for its bitrate."""
        if mountpoint.layer_rates_sampled_at is not None and now - mountpoint.layer_rates_sampled_at < 1.0:
            return
        mountpoint.layer_rates_sampled_at = now
        for stream in self.engine.mountpoint_stats(mountpoint.engine_id).streams:
            mountpoint.layer_rates.sample(
                stream.index, stream.bytes, now, stream.temporal_layer_bytes, stream.spatial_layer_bytes
            )

    def _hear_silence_within(self, mountpoint: Mountpoint, fallback_ms: int) -> None:
        """A viewer's fallback: the engine reports the mountpoint's simulcast substreams
        silent soon enough for it. The threshold only goes down, to the smallest fallback
        any viewer asked (at least MIN_SILENCE_MS): a viewer with a longer one looks again
        when its own has passed (_follow_silence). Deciding per viewer here, not in the
        engine, keeps the engine's work per stream, not per viewer."""
        threshold = max(fallback_ms, MIN_SILENCE_MS)
        if threshold >= mountpoint.simulcast_silence_ms:
            return
        mountpoint.simulcast_silence_ms = threshold
        for stream in mountpoint.config.streams:
            for substream in range(stream.substreams if stream.simulcast else 0):
                self.engine.set_source_silence(mountpoint.engine_id, source_index(stream, substream), threshold)

    def _follow_silence(self, mountpoint: Mountpoint) -> None:
        """A simulcast track whose requested substream is silent (for longer than its
        fallback) falls back to the highest one below that still sends, and returns when it
        sends again. A substream that never sent counts as silent since the viewer started
        watching (a source starting with the viewer gets its fallback's time). A substream
        silent for less than some track's fallback sets a timer for when it will have been
        silent that long: nothing is polled."""
        if not any(stream.simulcast for stream in mountpoint.config.streams):
            return
        mountpoint.close_timers()
        now = time.monotonic()
        next_look: float | None = None
        for handle_id in list(mountpoint.viewers):
            viewer = self.viewers.get(handle_id)
            if viewer is None or not viewer.in_engine:
                continue
            viewer_ages = self._source_ages_ms(mountpoint, viewer, now)
            for track in viewer.tracks:
                if not track.stream.simulcast:
                    continue
                self._hear_silence_within(mountpoint, track.fallback_us // 1000)
                self._set_substream(viewer, track, track.substream_to_take(viewer_ages))
                for substream in range(track.stream.substreams):
                    index = source_index(track.stream, substream)
                    age = viewer_ages[index]
                    if mountpoint.silence.is_silent(index) and age is not None and age * 1000 <= track.fallback_us:
                        # Silent, not yet for the track's fallback: look again when it will have been.
                        wait = (track.fallback_us - age * 1000) / 1_000_000 + FALLBACK_TIMER_MARGIN_SECONDS
                        next_look = wait if next_look is None else min(next_look, wait)
        if next_look is not None:
            loop = asyncio.get_running_loop()
            mountpoint.fallback_timer = loop.call_later(next_look, self._follow_silence, mountpoint)

    @staticmethod
    def _source_ages_ms(mountpoint: Mountpoint, viewer: Viewer, now: float) -> dict[int, int | None]:
        """Each source stream's time since its last packet as ``viewer`` counts it: a stream
        that never sent, since the viewer started watching (None if it does not yet)."""
        ages = mountpoint.silence.ages_ms(now)
        if not viewer.in_engine:
            return ages
        watching_ms = int((now - viewer.watching_since) * 1000)
        return {index: watching_ms if age is None else age for index, age in ages.items()}

    def _set_substream(self, viewer: Viewer, track: ViewerTrack, substream: int | None, *, at_once: bool = False) -> None:
        """Move a simulcast track to another encoding; the ``substream`` event follows when
        the engine made the move (at that encoding's next keyframe, or with ``at_once`` now:
        the old encoding stops, the new one starts from its keyframe cache or next keyframe)."""
        if substream is None:
            return
        substream = min(substream, track.stream.substreams - 1)
        if substream == track.substream:
            return
        previous = track.source_index
        track.substream = substream
        if not (viewer.in_engine and track.send):
            return
        self.engine.set_stream_source(viewer.handle.id, previous, track.source_index, at_once=at_once)
        if track.temporal is not None and track.stream.codec.name in TEMPORAL_LAYER_CODECS:
            self.engine.set_stream_temporal_layer(viewer.handle.id, track.source_index, track.temporal)
        # The substream event follows the engine's SubstreamMoved (_substream_moved).
        self._moves_pending[(viewer.handle.id, track.mid)] = track.source_index
        self._spawn(self._ask_keyframe_until_moved(viewer, track, track.source_index))

    async def _ask_keyframe_until_moved(self, viewer: Viewer, track: ViewerTrack, source_index: int) -> None:
        """The new encoding's keyframe asked for again each second while the move waits for
        it (set_stream_source to the stream already chosen: the engine asks the source again,
        the viewer's stream is left as it is)."""
        key = (viewer.handle.id, track.mid)
        for _ in range(MOVE_KEYFRAME_RETRIES):
            await asyncio.sleep(MOVE_KEYFRAME_RETRY_SECONDS)
            if self._moves_pending.get(key) != source_index or not viewer.in_engine:
                return
            try:
                self.engine.set_stream_source(viewer.handle.id, source_index, source_index)
            except (KeyError, ValueError, RuntimeError):  # the viewer or its subscription went meanwhile
                break
        if self._moves_pending.get(key) == source_index:
            del self._moves_pending[key]

    def _set_temporal_layer(self, viewer: Viewer, track: ViewerTrack, temporal: int) -> None:
        """VP8, VP9 or AV1: the highest temporal layer the track gets (2, the top Janus knows: all)."""
        temporal = min(temporal, 2)
        if track.stream.codec.name not in TEMPORAL_LAYER_CODECS or temporal == track.temporal:
            return
        track.temporal = temporal
        if viewer.in_engine and track.send:
            self.engine.set_stream_temporal_layer(viewer.handle.id, track.source_index, temporal)
        viewer.handle.push_event(None, temporal_layer_event(track, temporal))

    def _set_spatial_layer(self, viewer: Viewer, track: ViewerTrack, spatial: int) -> None:
        """VP9: the highest spatial layer the track gets (2, the top Janus knows: all), told as
        Janus tells a VP9-SVC viewer (``spatial_layer``)."""
        spatial = min(spatial, 2)
        if track.stream.codec.name != "vp9" or spatial == track.spatial:
            return
        track.spatial = spatial
        if viewer.in_engine and track.send:
            self.engine.set_stream_spatial_layer(viewer.handle.id, track.source_index, spatial)
        viewer.handle.push_event(None, layer_event(track.mid, spatial_layer=spatial))

    def _switch(self, viewer: Viewer, transaction: str, body: dict[str, Any], jsep: Jsep | None) -> None:
        """Move the viewer to another mountpoint on the same PeerConnection: each of its tracks
        takes the new mountpoint's stream of the same kind and codec; SSRC, sequence numbers,
        timestamps and payload types stay the viewer's."""
        if viewer.mountpoint is None:
            raise StreamingError(Errors.INVALID_STATE, "Can't switch: not watching anything")
        target = self._watchable_mountpoint(viewer, body, switching=True)
        if target is viewer.mountpoint:
            viewer.handle.push_event(transaction, {"streaming": "event", "result": {"switched": "ok", "id": target.id}})
            return
        if any(m.config.file is not None and m.config.file.ondemand for m in (target, viewer.mountpoint)):
            raise StreamingError(Errors.CANT_SWITCH, "Can't switch to or from an ondemand mountpoint")
        tracks = subscription.switched_tracks(viewer.tracks, target)
        if viewer.in_engine:
            # The engine keeps each stream's pause and playout delay across the move; a pinned
            # spatial layer (kept by switched_to) goes with the subscription, in place from the
            # first packet of the new mountpoint.
            self.engine.subscribe(
                viewer.handle.id, target.engine_id, [track.engine_stream() for track in tracks if track.send]
            )
        viewer.mountpoint.remove_viewer(viewer.handle.id)
        viewer.mountpoint = target
        viewer.tracks = tracks  # a data m-line stays, and carries the new mountpoint's data, if it has any
        target.add_viewer(viewer.handle.id)
        viewer.watching_since = time.monotonic()
        logger.info("viewer %d switched to mountpoint %s", viewer.handle.id, target.id)
        viewer.handle.push_event(transaction, {"streaming": "event", "result": {"switched": "ok", "id": target.id}})
        for track in tracks:
            if viewer.in_engine and track.send and track.substream is not None:
                viewer.handle.push_event(None, layer_event(track.mid, substream=track.substream))
        self._follow_silence(target)

    def _stop(self, viewer: Viewer, transaction: str, body: dict[str, Any], jsep: Jsep | None) -> None:
        viewer.handle.push_event(transaction, status_event("stopping"))
        if viewer.mountpoint is not None:
            viewer.handle.close_pc()
            self._remove_from_engine(viewer)
            viewer.leave()

    # --- helpers --------------------------------------------------------------

    def _mountpoint_from(self, body: dict[str, Any], missing_reason: str = "No such mountpoint/stream {id}") -> Mountpoint:
        if "id" not in body:
            raise StreamingError(Errors.MISSING_ELEMENT, "Missing mandatory element (id)")
        mountpoint_id = management.checked_id(body["id"], string_ids=self.settings.string_ids)
        mountpoint = self.mountpoints.get(mountpoint_id)
        if mountpoint is None:
            raise StreamingError(Errors.NO_SUCH_MOUNTPOINT, missing_reason.format(id=mountpoint_id))
        return mountpoint

    def _send_playout_delay(self, viewer: Viewer, track: ViewerTrack) -> None:
        """Tell the engine the playout delay of a track it sends (nothing to say without the
        extension)."""
        if not viewer.in_engine or not track.send or track.playout_delay_extension_id is None:
            return
        delay = track.playout_delay_ms()
        minimum, maximum = delay if delay is not None else (None, None)
        self.engine.set_stream_playout_delay(
            viewer.handle.id, track.source_index, track.playout_delay_extension_id, minimum, maximum
        )

    def _remove_from_engine(self, viewer: Viewer) -> None:
        if viewer.in_engine:
            self.engine.unsubscribe(viewer.handle.id)
            viewer.in_engine = False
        self._close_viewer_feed(viewer.handle.id)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
