"""``rtsp`` mountpoints: fanout pulls the stream from an RTSP server (a camera, a media server).

The server's DESCRIBE says which tracks it has; :func:`streams_from_tracks` turns
the ones the mountpoint takes (its first audio and first video track, as Janus)
into the mountpoint's streams, whose ports the engine binds. :class:`RtspPull`
then SETUPs each track with ``client_port=<RTP port>-<RTCP port>`` so the server
sends RTP straight to the engine (and its sender reports to the RTCP port, from
which the engine sends keyframe requests back), PLAYs, keeps the session alive,
and starts again after ``rtsp_reconnect_delay`` when the server goes away or its
media stops: every stream silent for ``rtsp_reconnect_delay``, as the engine's
events say (each stream's silence threshold is that delay). Viewers stay connected meanwhile: the engine's numbering goes on
across the restart.

RTSP over TCP (``rtsp_transport``, past Janus): ``tcp`` SETUPs each track
interleaved on the RTSP connection (``RTP/AVP/TCP;interleaved=``) and a
:class:`~fanout.sources.rtsp.relay.MediaRelay` has the engine send each packet on to
the stream's ports over loopback (no Python per packet), so that the engine fans out
as it does for UDP; ``udp`` is
Janus's way; ``auto`` (the default) starts with UDP and changes to TCP for the
mountpoint's life when a SETUP answers 461 Unsupported Transport or when not one
packet came over UDP within ``rtsp_reconnect_delay`` of PLAY (a firewall or NAT
in the way), and back to UDP if a TCP SETUP answers 461. ``rtsps://`` (RTSP over
TLS) is always interleaved: its media stays inside the TLS connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import time
from typing import TYPE_CHECKING

from fanout.plugins.streaming.codecs import CodecInfo, codec_from_rtpmap
from fanout.plugins.streaming.config import (
    DEFAULT_MIDS,
    MountpointConfig,
    MountpointConfigError,
    RtspSettings,
    StreamConfig,
    UnsafeValueError,
    checked_text,
    h264_parameter_sets,
)
from fanout.sources.rtsp.auth import Credentials
from fanout.sources.rtsp.client import UNSUPPORTED_TRANSPORT, RtspRequestError, State, TransportRequest
from fanout.sources.rtsp.connection import MediaStalled, RtspConnection
from fanout.sources.rtsp.description import Track, split_credentials
from fanout.sources.rtsp.messages import RtspError, RtspProtocolError
from fanout.sources.rtsp.relay import EnginePorts, MediaRelay

if TYPE_CHECKING:
    from fanout._engine import Engine
    from fanout.plugins.streaming.mountpoint import Mountpoint

logger = logging.getLogger(__name__)

PULL_ERRORS = (RtspError, OSError, TimeoutError)
# The check at rtsp_reconnect_delay after PLAY runs this much later, so that the delay has passed.
STALL_TIMER_MARGIN_SECONDS = 0.01


def connect(settings: RtspSettings) -> RtspConnection:
    """A connection (not yet open) to the mountpoint's server, with its credentials and timeouts."""
    url, url_user, url_password = split_credentials(settings.url)
    username = settings.username if settings.username is not None else url_user
    password = settings.password if settings.password is not None else url_password
    credentials = Credentials(username, password or "") if username is not None else None
    return RtspConnection(
        url,
        credentials=credentials,
        quirk=settings.quirk,
        timeout=settings.timeout or 10,
        connect_timeout=settings.connect_timeout or 5,
        session_timeout=settings.session_timeout,
        local_address=settings.interface,
        tls=tls_context(settings) if url.lower().startswith("rtsps://") else None,
    )


def tls_context(settings: RtspSettings) -> ssl.SSLContext:
    """How an rtsps:// server's certificate is checked: against ``rtsp_cafile`` (the
    system's CAs without it), its name against the URL's host; not at all when
    ``rtsp_tls_verify`` is false. OSError or ssl.SSLError for an unreadable CA file."""
    context = ssl.create_default_context(cafile=settings.tls_cafile)
    if not settings.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def first_transport(settings: RtspSettings) -> str:
    """The lower transport a pull starts with: "udp" or "tcp"."""
    if settings.transport == "tcp" or settings.url.lower().startswith("rtsps://"):
        return "tcp"
    return "udp"


# Payload types offered to viewers for a stream whose server could not be described yet.
UNDESCRIBED_PAYLOAD_TYPES = {"audio": 111, "video": 96}


def streams_from_choices(config: MountpointConfig) -> tuple[StreamConfig, ...]:
    """``rtsp_failcheck = false`` and a server that cannot be described now: the streams
    its audio/video overrides name (``videocodec``, ``videopt``...), so that the mountpoint
    exists and waits for the server. MountpointConfigError if a kind has no codec given."""
    settings = config.rtsp
    assert settings is not None
    streams: list[StreamConfig] = []
    for choice in settings.tracks:
        if choice.codec is None:
            raise MountpointConfigError(
                f"the RTSP server cannot be described now, and '{choice.kind}codec' does not say what it will send"
            )
        streams.append(
            _stream(
                config, len(streams), choice.kind, choice.codec,
                choice.payload_type if choice.payload_type is not None else UNDESCRIBED_PAYLOAD_TYPES[choice.kind],
                choice.fmtp if choice.fmtp is not None else choice.codec.default_fmtp, None,
            )
        )  # fmt: skip
    return tuple(streams)


def _stream(
    config: MountpointConfig, mindex: int, kind: str, codec: CodecInfo, payload_type: int, fmtp: str | None,
    h264sps: str | None,
) -> StreamConfig:
    settings = config.rtsp
    assert settings is not None
    return StreamConfig(
        mindex=mindex,
        kind=kind,
        mid=DEFAULT_MIDS[kind],
        label=kind,
        msid=None,
        host=settings.interface or "0.0.0.0",
        port=0,
        rtcp_port=0,  # where the server's sender reports come, and keyframe requests leave from
        multicast_interface=None,
        payload_type=payload_type,
        codec=codec,
        fmtp=fmtp,
        h264sps=h264sps,
    )


def streams_from_tracks(config: MountpointConfig, tracks: tuple[Track, ...]) -> tuple[StreamConfig, ...]:
    """The mountpoint's streams for the server's ``tracks``: for each kind it takes, the
    first track of that kind in a codec fanout relays. MountpointConfigError if none."""
    settings = config.rtsp
    assert settings is not None
    streams: list[StreamConfig] = []
    for choice in settings.tracks:
        offered = [track for track in tracks if track.kind == choice.kind]
        usable = [(track, choice.codec or codec_from_rtpmap(track.rtpmap)) for track in offered]
        usable = [(track, codec) for track, codec in usable if codec is not None and codec.kind == choice.kind]
        if not usable:
            listed = ", ".join(track.rtpmap for track in offered) or "none"
            raise MountpointConfigError(
                f"the RTSP server offers no {choice.kind} track fanout can relay (it offers: {listed})"
            )
        track, codec = usable[0]
        assert codec is not None
        h264sps = None
        sprop = track.fmtp_parameter("sprop-parameter-sets") if codec.name == "h264" else None
        if sprop:
            try:
                h264_parameter_sets(config.name, sprop)
                h264sps = sprop
            except MountpointConfigError:
                logger.warning("mountpoint %s: ignoring the server's unusable sprop-parameter-sets %r", config.id, sprop)
        payload_type = choice.payload_type if choice.payload_type is not None else track.payload_type
        fmtp = choice.fmtp if choice.fmtp is not None else (track.fmtp or codec.default_fmtp)
        try:
            checked_text(f"mountpoint {config.id}", "fmtp", fmtp or "")
        except UnsafeValueError as error:  # it goes into every viewer's offer
            logger.warning("%s from the RTSP server; the codec's default is offered instead", error)
            fmtp = codec.default_fmtp
        streams.append(_stream(config, len(streams), choice.kind, codec, payload_type, fmtp, h264sps))
    return tuple(streams)


def described_config(config: MountpointConfig, tracks: tuple[Track, ...]) -> MountpointConfig:
    return dataclasses.replace(config, streams=streams_from_tracks(config, tracks))


class RtspPull:
    """Keeps one rtsp mountpoint fed: SETUP + PLAY to the engine's ports, keep-alives,
    and a new session after ``rtsp_reconnect_delay`` whenever the last one ends."""

    def __init__(self, engine: Engine, mountpoint: Mountpoint, connection: RtspConnection | None) -> None:
        settings = mountpoint.config.rtsp
        assert settings is not None
        self.engine = engine
        self.mountpoint = mountpoint
        self.settings = settings
        self._connection = connection  # already described (create), or None: connect first
        self._playing_since = 0.0
        self.transport = first_transport(settings)  # "udp" | "tcp": the next session's
        mountpoint.rtsp_transport = self.transport
        self._retry_now = False  # the lower transport just changed: no delay before the next try

    async def run(self) -> None:
        delay = max(self.settings.reconnect_delay, 1)
        try:
            while True:
                connection, self._connection = self._connection, None
                try:
                    await self._play_once(connection)
                except (*PULL_ERRORS, MountpointConfigError) as error:
                    logger.warning(
                        "mountpoint %s: RTSP source %s: %s; trying again in %d s",
                        self.mountpoint.id, self.settings.url, error or type(error).__name__, delay,
                    )
                except Exception:  # a bug: say so, and keep the mountpoint fed all the same
                    logger.exception("mountpoint %s: RTSP source %s failed", self.mountpoint.id, self.settings.url)
                if self._retry_now:
                    self._retry_now = False
                    continue
                await asyncio.sleep(delay)
        finally:
            connection = self._connection
            if connection is not None:
                await connection.close()

    async def _play_once(self, connection: RtspConnection | None) -> None:
        if connection is None:
            connection = connect(self.settings)
        self._connection = connection
        relay: MediaRelay | None = None
        try:
            if connection.client.state is State.IDLE:
                await connection.describe()
            transports = self._transports(connection)
            if self.transport == "tcp":
                relay = self._relay(transports)
                await relay.open()
            try:
                await connection.play(transports, relay)
            except RtspRequestError as error:
                secure = self.settings.url.lower().startswith("rtsps://")  # its media stays in TLS
                if error.status == UNSUPPORTED_TRANSPORT and self.settings.transport == "auto" and not secure:
                    self._change_transport(f"the server refused RTP over {self.transport.upper()} (461)")
                raise
            packets_at_play = self._packets_received()
            self._playing_since = time.monotonic()
            logger.info("mountpoint %s: playing %s over %s", self.mountpoint.id, self.settings.url, self.transport.upper())
            stalled = asyncio.Event()

            def check() -> None:
                if self._stalled():
                    stalled.set()

            silence = self.mountpoint.silence
            silence.listeners.append(check)
            # Silent since before PLAY (or never sent): stalled once the delay has passed.
            timer = asyncio.get_running_loop().call_later(self._stall_limit_s() + STALL_TIMER_MARGIN_SECONDS, check)
            try:
                await connection.maintain(stalled)
            except MediaStalled:
                nothing_came = self._packets_received() == packets_at_play
                if nothing_came and self.transport == "udp" and self.settings.transport == "auto":
                    self._change_transport("no RTP came over UDP")
                raise
            except RtspProtocolError as error:
                if relay is not None:  # an oversized frame, or bytes that are no frame: framing lost
                    self.mountpoint.rtsp_dropped_frames += 1
                    logger.warning("mountpoint %s: interleaved frame dropped: %s", self.mountpoint.id, error)
                raise
            finally:
                timer.cancel()
                silence.listeners.remove(check)
        finally:
            self._connection = None
            if relay is not None:
                self.mountpoint.rtsp_dropped_frames += relay.unknown_frames  # on channels the server was not given
                relay.close()
            await connection.close()

    def _change_transport(self, reason: str) -> None:
        self.transport = "tcp" if self.transport == "udp" else "udp"
        self.mountpoint.rtsp_transport = self.transport
        self._retry_now = True
        logger.warning(
            "mountpoint %s: %s; pulling %s over %s from now on",
            self.mountpoint.id, reason, self.settings.url, self.transport.upper(),
        )  # fmt: skip

    def _relay(self, transports: list[TransportRequest]) -> MediaRelay:
        """Where the interleaved packets of each track go: its stream's engine ports."""
        hosts = [stream.host for stream in self.mountpoint.config.streams]
        return MediaRelay(
            [EnginePorts(host, transport.rtp_port, transport.rtcp_port) for host, transport in zip(hosts, transports, strict=True)]
        )

    def _packets_received(self) -> int:
        return sum(stream.packets for stream in self.engine.mountpoint_stats(self.mountpoint.engine_id).streams)

    def _transports(self, connection: RtspConnection) -> list[TransportRequest]:
        """Each stream's track (a server that came back must still offer it in the stream's
        codec) with the engine's RTP and RTCP ports of the stream."""
        tracks = connection.client.tracks
        stats = {stream.index: stream for stream in self.engine.mountpoint_stats(self.mountpoint.engine_id).streams}
        transports = []
        for stream, port in zip(self.mountpoint.config.streams, self.mountpoint.ports, strict=True):
            track = next((track for track in tracks if track.kind == stream.kind and self._relayable(track, stream)), None)
            if track is None:
                offered = ", ".join(track.rtpmap for track in tracks if track.kind == stream.kind) or "none"
                raise RtspError(f"the server no longer offers {stream.kind} in {stream.codec.name} (it offers: {offered})")
            rtcp_port = stats[stream.mindex].rtcp_port
            assert rtcp_port is not None
            transports.append(TransportRequest(track, port, rtcp_port))
        return transports

    def _relayable(self, track: Track, stream: StreamConfig) -> bool:
        choice = next(choice for choice in self.settings.tracks if choice.kind == stream.kind)
        codec = choice.codec or codec_from_rtpmap(track.rtpmap)
        return codec is not None and codec.name == stream.codec.name

    def _stall_limit_s(self) -> int:
        return max(self.settings.reconnect_delay, 1)

    def _stalled(self) -> bool:
        """No packet on any stream for rtsp_reconnect_delay (counted from PLAY): the
        engine reported every stream silent (its threshold is that delay)."""
        if time.monotonic() - self._playing_since < self._stall_limit_s():
            return False
        return self.mountpoint.silence.all_silent()
