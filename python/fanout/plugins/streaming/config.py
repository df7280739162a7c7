"""Mountpoint definitions from janus.plugin.streaming.jcfg (or a ``create`` request).

Accepts Janus's two forms: the multistream ``media`` list and the legacy flat
keys (``audioport``, ``videopt``, ...). A data stream is ``data = true`` with
``dataport``, ``dataiface``, ``datatype`` (text|binary) and ``databuffermsg``,
or a ``media`` entry of type "data" with ``port``, ``iface``, ``datatype`` and
``buffermsg``; a mountpoint has at most one. Keys fanout does not support are
returned by name so the caller can report them. A ``whip`` mountpoint has the ``media``
list without ports (a WebRTC publisher feeds it, see :mod:`fanout.whip`), ``whip_token``
and ``whip_bitrate``. Bad values raise
:class:`MountpointConfigError` naming the mountpoint and the key.

Strings are bounded, because a ``create`` request may come from anyone who reaches
the Janus API and its strings reach every viewer's SDP offer, the logs, RTSP requests
and (``permanent``) this file: no string has control characters (CR, LF, NUL...) but
``description`` and ``metadata``, which are free text; ``mid`` is 1 to 64 of SDP's token
characters (RFC 8843, RFC 4566), ``msid`` one or two such ids (RFC 8830); ids, names,
labels, secrets, pins, interfaces and RTSP credentials are at most 256 characters, the
rest (description, metadata, fmtp, url...) at most 4096; a ``media`` list has at most
64 streams. What breaks these rules raises :class:`UnsafeValueError`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from fanout.config.network import address_of_interface, is_ip_address
from fanout.plugins.streaming.codecs import KNOWN_CODECS, CodecInfo, codec_from_rtpmap
from fanout.plugins.streaming.port_range import DEFAULT_RTP_PORT_RANGE

if TYPE_CHECKING:
    from fanout._engine import SourceSrtpProfile


logger = logging.getLogger(__name__)


class MountpointConfigError(ValueError):
    """A mountpoint definition fanout cannot use."""


class UnsafeValueError(MountpointConfigError):
    """A string fanout will not carry into an SDP offer, a log line, an RTSP request or the
    .jcfg file: control characters where a line is expected, or too long."""


SHORT_TEXT_LIMIT = 256  # ids, names, labels, secrets, pins, interfaces, RTSP credentials
LONG_TEXT_LIMIT = 4096  # description, metadata, fmtp, url and any other string
MID_LIMIT = 64  # RFC 8843 sets none; RFC 8830's bound on an msid id
MEDIA_LIMIT = 64  # streams of one mountpoint
# RFC 4566's token-char: what a mid (RFC 8843) and an msid id (RFC 8830) are made of.
_TOKEN = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]"
_MID = re.compile(f"{_TOKEN}{{1,{MID_LIMIT}}}")
_MSID = re.compile(f"{_TOKEN}{{1,64}}(?: {_TOKEN}{{1,64}})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SHORT_KEYS = {"id", "name", "label", "secret", "pin", "type", "datatype", "rtspiface", "rtsp_user", "rtsp_pwd",
               "whip_token"} | {
    prefix + key for prefix in ("", "audio", "video", "data") for key in ("iface", "codec", "mcast")
}


def checked_text(where: str, key: str, value: str, *, limit: int = LONG_TEXT_LIMIT, free_text: bool = False) -> str:
    """``value`` if it is safe to keep, write and log: at most ``limit`` characters, valid
    Unicode (no lone surrogate, which no file or reply can encode) and, unless ``free_text``,
    no control characters. UnsafeValueError names the key otherwise."""
    if len(value) > limit:
        raise UnsafeValueError(f"{where}: '{key}' is longer than {limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeValueError(f"{where}: '{key}' is not valid Unicode text") from None
    if not free_text and _CONTROL.search(value):
        raise UnsafeValueError(f"{where}: '{key}' must not contain control characters (CR, LF, ...): {_shown(value)}")
    return value


def checked_mid(where: str, key: str, mid: str) -> str:
    if _MID.fullmatch(mid) is None:
        raise UnsafeValueError(
            f"{where}: '{key}' must be 1 to {MID_LIMIT} letters, digits or !#$%&'*+-.^_`{{|}}~ (RFC 8843), "
            f"not {_shown(mid)}"
        )
    return mid


def _shown(value: str) -> str:
    """``value`` as an error message may quote it: escaped, and cut if long."""
    return repr(value) if len(value) <= 40 else repr(value[:40]) + "..."


@dataclass(frozen=True)
class StreamConfig:
    """One RTP input of a mountpoint (one m-line for its viewers)."""

    mindex: int
    kind: str  # "audio" | "video"
    mid: str
    label: str
    msid: str | None
    host: str  # address to bind
    port: int  # 0 = any free port
    rtcp_port: int | None  # the source's RTCP (PLI/FIR go there); None = none, 0 = any free port
    multicast_interface: str | None  # host is a multicast group: the address of the interface to join it on
    payload_type: int
    codec: CodecInfo
    fmtp: str | None
    skew: bool = False  # compensate the source clock's drift against the server's
    h264sps: str | None = None  # sprop-parameter-sets sent in band before keyframes that lack them
    # Simulcast (Janus's simulcast/videosimulcast): the ports of substreams 1 and 2
    # (port2, port3; 0 or left out picks a free one). Substream 0, the lowest quality,
    # comes in on ``port``. Empty: not simulcast.
    substream_ports: tuple[int, ...] = ()
    # VP9 SVC (Janus's svc/videosvc): the source sends spatial layers, which the viewers'
    # estimates choose among (fanout reads the layers of any VP9 stream; this only offers
    # transport-wide congestion control as a simulcast stream does).
    svc: bool = False

    @property
    def rtpmap(self) -> str:
        return self.codec.rtpmap

    @property
    def simulcast(self) -> bool:
        return bool(self.substream_ports)

    @property
    def substreams(self) -> int:
        """How many encodings the source sends (1 without simulcast)."""
        return 1 + len(self.substream_ports)


@dataclass(frozen=True)
class DataStreamConfig:
    """A mountpoint's data stream: UDP datagrams on ``port``, each relayed to every viewer as
    one data channel message (the m=application line of its offer)."""

    mindex: int
    mid: str
    label: str
    host: str  # address to bind
    port: int  # 0 = any free port
    binary: bool  # datatype "binary" (else "text")
    buffer_message: bool  # keep the latest message and send it at once to each new viewer

    @property
    def datatype(self) -> str:
        return "binary" if self.binary else "text"


# Janus's collision is 0 (off) unless set; fanout's default locks each stream to the SSRC
# sending it, which a restarted encoder (new SSRC) takes over after this much silence.
DEFAULT_COLLISION_MS = 500

MountpointId = int | str  # a string when the plugin runs with string_ids


@dataclass(frozen=True)
class MountpointConfig:
    id: MountpointId
    name: str
    description: str
    metadata: str | None
    is_private: bool
    secret: str | None
    pin: str | None
    streams: tuple[StreamConfig, ...]  # the RTP streams (audio, video), which the engine receives
    testsource: bool = False  # fanout: fed by the built-in test source
    # How long an SSRC must be silent before another takes its streams (Janus's collision);
    # 0: at once. fanout locks by default, so that packets injected from another SSRC
    # never reach viewers while the source sends.
    collision_ms: int = DEFAULT_COLLISION_MS
    srtp: SourceSrtp | None = None  # the sources send SRTP with these keys
    # Janus's playoutdelay_ext: video m-lines offer the playout-delay RTP header extension,
    # so that viewers can ask for a playout delay (configure min_delay/max_delay).
    playoutdelay_ext: bool = False
    data: DataStreamConfig | None = None  # the data stream, which the control plane receives
    # type "rtsp": fanout pulls the stream from an RTSP server. ``streams`` is empty until
    # the server's DESCRIBE says what its tracks are (see rtsp_source.streams_from_tracks).
    rtsp: RtspSettings | None = None
    # fanout's cluster: the streams come from this mountpoint on another node (the origin),
    # over a relay pulled on the first viewer (fanout.cluster.relay); the streams' ports,
    # RTCP ports, SRTP keys and data stream are the origin's, not bound here.
    relay: RelaySource | None = None
    # type "whip": a WebRTC publisher sends the streams (POST /whip/endpoint/<id>); they have no ports.
    whip: WhipSettings | None = None
    # type "live" or "ondemand": fanout plays a media file (sources/filesource.py).
    file: FileSettings | None = None

    @property
    def fed_by_publisher_link(self) -> bool:
        """The streams have no ports: their packets come over the engine's publisher link."""
        return self.relay is not None or self.whip is not None


@dataclass(frozen=True)
class RelaySource:
    """Where a relay mountpoint's media comes from (type "relay", or the cluster's registry)."""

    origin_node: str  # the origin's node name (for the logs)
    origin_url: str  # the origin's HTTP transport, e.g. "http://10.0.0.2:8088": POST /cluster/relay goes there
    origin_mountpoint: MountpointId | None = None  # the mountpoint's id on the origin; None: the same id as here
    origin_webrtc_address: str | None = None  # "ip:port" the registry advertises; the origin's reply decides


DEFAULT_WHIP_BITRATE = 10_000_000  # bit/s: the REMB cap a WHIP publisher gets when the mountpoint names none


@dataclass(frozen=True)
class WhipSettings:
    """A ``whip`` mountpoint's publisher side: who may publish and how fast."""

    token: str | None = None  # whip_token: the Bearer token a publisher must send (token_auth: a stored one works too)
    bitrate: int = DEFAULT_WHIP_BITRATE  # whip_bitrate: the REMB cap sent to the publisher's video, bit/s


@dataclass(frozen=True)
class FileSettings:
    """A ``live`` or ``ondemand`` mountpoint's file. ``live``: one player, every viewer sees
    the same moment; ``ondemand``: a player per viewer, from the start of the file."""

    filename: str
    ondemand: bool = False

    @property
    def kind(self) -> str:
        return "ondemand" if self.ondemand else "live"


@dataclass(frozen=True)
class RtspTrackChoice:
    """Janus's audio/video of an rtsp mountpoint: take the server's first track of
    ``kind``, with what the viewers are offered optionally overridden."""

    kind: str  # "audio" | "video"
    payload_type: int | None = None  # audiopt/videopt
    codec: CodecInfo | None = None  # audiocodec/videocodec (or audiortpmap/videortpmap)
    fmtp: str | None = None  # audiofmtp/videofmtp


@dataclass(frozen=True)
class RtspSettings:
    """An ``rtsp`` mountpoint's source, with Janus's keys and defaults (times in seconds)."""

    url: str
    username: str | None = None  # rtsp_user
    password: str | None = None  # rtsp_pwd
    quirk: bool = False  # rtsp_quirk: DESCRIBE the path only after a 404
    interface: str | None = None  # rtspiface: the address the media ports bind
    failcheck: bool = True  # rtsp_failcheck: a server that cannot be described fails the creation
    reconnect_delay: int = 5  # rtsp_reconnect_delay: no media this long means the server is gone; retry as often
    session_timeout: int = 0  # rtsp_session_timeout: caps the keep-alive interval at half of it (0: the server's)
    timeout: int = 10  # rtsp_timeout: each request's answer
    connect_timeout: int = 5  # rtsp_conn_timeout: the TCP connection
    tracks: tuple[RtspTrackChoice, ...] = ()  # audio first, then video, as Janus
    interface_name: str | None = None  # rtspiface as written (saved back as such)
    # Past Janus (which pulls over UDP only): "udp", "tcp" (interleaved on the RTSP
    # connection), or "auto": UDP, then TCP if SETUP answers 461 or no media comes.
    transport: str = "auto"  # rtsp_transport
    tls_cafile: str | None = None  # rtsp_cafile: the CAs an rtsps:// server's certificate is checked against
    tls_verify: bool = True  # rtsp_tls_verify: false takes any certificate (a camera's self-signed one)


SRTP_SUITES: dict[int, SourceSrtpProfile] = {32: "AES_CM_128_HMAC_SHA1_32", 80: "AES_CM_128_HMAC_SHA1_80"}


@dataclass(frozen=True)
class SourceSrtp:
    """Janus's ``srtpsuite`` and ``srtpcrypto``: keys for sources that send SRTP."""

    suite: int  # 32 or 80: the length of the authentication tag
    crypto: str  # base64 of the 30-byte master key and salt, as SDES writes it

    @property
    def profile(self) -> SourceSrtpProfile:
        return SRTP_SUITES[self.suite]

    @property
    def master_key(self) -> bytes:
        return base64.b64decode(self.crypto)


@dataclass(frozen=True)
class StreamingSettings:
    """The ``general`` group of janus.plugin.streaming.jcfg."""

    admin_key: str | None = None  # needed to create mountpoints and to list private ones
    string_ids: bool = False  # mountpoint ids are strings, not numbers
    config_file: Path | None = None  # where "permanent" mountpoints are saved; None: nowhere
    rtp_port_range: tuple[int, int] = DEFAULT_RTP_PORT_RANGE  # where a port 0 is taken
    # fanout: ``create`` may bind source ports below 1024 (the file's own mountpoints always may).
    allow_privileged_ports: bool = False
    # fanout: where a ``recording`` request's relative file names go (Janus: its working folder).
    rec_dir: Path | None = None
    # fanout: which mountpoints' offers carry transport-wide congestion control (the extension
    # and rtcp-fb transport-cc): "simulcast" (simulcast and VP9-SVC mountpoints, where the estimate
    # picks a layer and probes for the next one), or "all" (a
    # single layer's viewers too: their estimate then comes from transport feedback, not REMB).
    transport_cc: str = "simulcast"


TRANSPORT_CC_CHOICES = ("simulcast", "all")


PRIVILEGED_PORTS = range(1, 1024)


def privileged_ports(config: MountpointConfig) -> list[int]:
    """The source ports below 1024 ``config`` binds (0, any free port, is not one)."""
    ports = []
    for stream in config.streams:
        ports += [stream.port, *stream.substream_ports]
        if stream.rtcp_port is not None:
            ports.append(stream.rtcp_port)
    if config.data is not None:
        ports.append(config.data.port)
    return sorted({port for port in ports if port in PRIVILEGED_PORTS})


MOUNTPOINT_KEYS = {
    "type", "id", "name", "description", "metadata", "is_private", "secret", "pin", "media", "testsource",
    "collision", "srtpsuite", "srtpcrypto", "playoutdelay_ext",
}  # fmt: skip
STREAM_KEYS = (
    "port", "rtcpport", "pt", "codec", "rtpmap", "fmtp", "iface", "mcast", "skew", "h264sps", "simulcast", "port2",
    "port3", "svc",
)  # fmt: skip
VIDEO_ONLY_KEYS = {"h264sps", "simulcast", "port2", "port3", "svc"}
LEGACY_STREAM_KEYS = {
    # The legacy form has no per-stream h264sps: a top-level "h264sps" is the video stream's.
    kind: {kind, *(f"{kind}{key}" for key in STREAM_KEYS if key != "h264sps" and (kind == "video" or key not in VIDEO_ONLY_KEYS))}
    | ({"h264sps"} if kind == "video" else set())
    for kind in ("audio", "video")
}
LEGACY_DATA_KEYS = {"data", "dataport", "dataiface", "datatype", "databuffermsg"}
# Codecs whose keyframes the engine finds, so a viewer can move between encodings.
SIMULCAST_CODECS = ("vp8", "h264")
MEDIA_KEYS = {"type", "mid", "label", "msid", *STREAM_KEYS}
DATA_MEDIA_KEYS = {"type", "mid", "label", "port", "iface", "datatype", "buffermsg"}
DEFAULT_MIDS = {"audio": "a", "video": "v", "data": "d"}


def parse_mountpoint(
    name: str, group: Mapping[str, Any], *, string_ids: bool = False
) -> tuple[MountpointConfig, list[str]]:
    """A mountpoint from its configuration group; also the keys fanout does not support."""
    where = f"mountpoint {_shown(name)}"
    reader = _Reader(where, group)
    kind = reader.string("type")
    if kind is None:
        raise MountpointConfigError(f"{where}: missing 'type'")
    if kind == "rtsp":
        return _parse_rtsp_mountpoint(name, group, reader, string_ids=string_ids)
    if kind == "relay":
        return _parse_relay_mountpoint(name, group, reader, string_ids=string_ids)
    if kind == "whip":
        return _parse_whip_mountpoint(name, group, reader, string_ids=string_ids)
    if kind in ("live", "ondemand"):
        return _parse_file_mountpoint(name, group, reader, kind, string_ids=string_ids)
    if kind != "rtp":
        raise MountpointConfigError(
            f"{where}: type '{kind}' is not supported by fanout "
            "(only 'rtp', 'rtsp', 'live', 'ondemand', 'relay' and 'whip')"
        )
    mountpoint_id = _mountpoint_id(reader, string_ids=string_ids)
    unsupported: list[str] = []
    media = group.get("media")
    data: DataStreamConfig | None = None
    if media is not None:
        if not isinstance(media, (list, tuple)) or not media:
            raise MountpointConfigError(f"{where}: 'media' must be a non-empty list of streams")
        if len(media) > MEDIA_LIMIT:  # each binds a port or more
            raise UnsafeValueError(f"{where}: 'media' has more than {MEDIA_LIMIT} streams")
        streams = []
        for index, entry in enumerate(media):
            if isinstance(entry, Mapping) and entry.get("type") == "data":
                if data is not None:
                    raise MountpointConfigError(f"{where}: media[{index}]: a mountpoint has at most one data stream")
                data = _parse_data_entry(where, index, entry, unsupported)
            else:
                streams.append(_parse_media_entry(where, index, entry, unsupported))
        legacy_keys = set().union(*LEGACY_STREAM_KEYS.values(), LEGACY_DATA_KEYS)
        unsupported.extend(key for key in group if key in legacy_keys)
    else:
        streams = []
        for stream_kind in ("audio", "video"):
            if reader.boolean(stream_kind, default=False):
                streams.append(_parse_legacy_stream(where, len(streams), stream_kind, reader))
        if reader.boolean("data", default=False):
            data = _parse_legacy_data(len(streams), reader)
        if not streams and data is None:
            raise MountpointConfigError(f"{where}: no streams (set audio/video/data = true or a 'media' list)")
    mids = [stream.mid for stream in streams] + ([data.mid] if data is not None else [])
    duplicates = sorted({mid for mid in mids if mids.count(mid) > 1})
    if duplicates:
        raise MountpointConfigError(f"{where}: duplicate mid {duplicates[0]!r}")
    known = MOUNTPOINT_KEYS | set().union(*LEGACY_STREAM_KEYS.values(), LEGACY_DATA_KEYS)
    unsupported.extend(key for key in group if key not in known)
    config = MountpointConfig(
        **_described(reader, name, mountpoint_id),
        streams=tuple(streams),
        testsource=reader.boolean("testsource", default=False),
        collision_ms=_collision_ms(reader),
        srtp=_source_srtp(reader),
        playoutdelay_ext=reader.boolean("playoutdelay_ext", default=False),
        data=data,
    )
    return config, [f"{name}.{key}" for key in unsupported]


def _described(reader: _Reader, name: str, mountpoint_id: MountpointId) -> dict[str, Any]:
    """What every mountpoint has, whatever feeds it: id, name, description, metadata, privacy, secrets."""
    name = reader.string("name") or name
    return {
        "id": mountpoint_id,
        "name": name,
        "description": reader.text("description") or name,
        "metadata": reader.text("metadata"),
        "is_private": reader.boolean("is_private", default=False),
        "secret": reader.string("secret"),
        "pin": reader.string("pin"),
    }


def _mountpoint_id(reader: _Reader, *, string_ids: bool) -> MountpointId:
    where = reader.where
    mountpoint_id: MountpointId | None
    if string_ids:
        mountpoint_id = reader.string("id")
        if mountpoint_id == "":
            raise MountpointConfigError(f"{where}: 'id' must not be empty")
    else:
        mountpoint_id = reader.integer("id")
        if mountpoint_id is not None and mountpoint_id <= 0:
            raise MountpointConfigError(f"{where}: 'id' must be a positive integer")
    if mountpoint_id is None:
        raise MountpointConfigError(f"{where}: missing 'id'")
    return mountpoint_id


RTSP_KEYS = {
    "type", "id", "name", "description", "metadata", "is_private", "secret", "pin", "url", "rtsp_user", "rtsp_pwd",
    "rtsp_quirk", "rtspiface", "rtsp_failcheck", "rtsp_check", "rtsp_reconnect_delay", "rtsp_session_timeout",
    "rtsp_timeout", "rtsp_conn_timeout", "audio", "video", "audiopt", "audiocodec", "audiortpmap", "audiofmtp",
    "videopt", "videocodec", "videortpmap", "videofmtp", "videobufferkf", "rtsp_transport", "rtsp_cafile",
    "rtsp_tls_verify",
}  # fmt: skip
RTSP_TRANSPORTS = ("auto", "udp", "tcp")


def _parse_rtsp_mountpoint(
    name: str, group: Mapping[str, Any], reader: _Reader, *, string_ids: bool
) -> tuple[MountpointConfig, list[str]]:
    """A ``type = "rtsp"`` mountpoint: Janus's legacy audio/video keys and its rtsp_* keys.
    (``videobufferkf`` is accepted and needs nothing: fanout always keeps the latest keyframe.)"""
    where = reader.where
    mountpoint_id = _mountpoint_id(reader, string_ids=string_ids)
    url = reader.string("url")
    if not url:
        raise MountpointConfigError(f"{where}: missing 'url'")
    if not url.lower().startswith(("rtsp://", "rtsps://")):
        raise MountpointConfigError(f"{where}: 'url' must be an rtsp:// or rtsps:// URL, not {_shown(url)}")
    if any(char.isspace() for char in url) or _CONTROL.search(unquote(url)):
        raise UnsafeValueError(f"{where}: 'url' must not contain spaces or (even %-encoded) control characters")
    tracks = []
    for kind in ("audio", "video"):
        if not reader.boolean(kind, default=False):
            continue
        payload_type = reader.payload_type(f"{kind}pt")
        codec = _named_codec(reader, kind, f"{kind}codec", f"{kind}rtpmap")
        tracks.append(RtspTrackChoice(kind, payload_type, codec, reader.string(f"{kind}fmtp")))
    if not tracks:
        raise MountpointConfigError(f"{where}: no audio or video have to be streamed (set audio and/or video = true)")
    interface_name = reader.string("rtspiface")
    failcheck = reader.boolean("rtsp_failcheck", default=reader.boolean("rtsp_check", default=True))
    seconds = {}
    for key, default in (("rtsp_reconnect_delay", 5), ("rtsp_session_timeout", 0), ("rtsp_timeout", 10),
                         ("rtsp_conn_timeout", 5)):  # fmt: skip
        value = reader.integer(key)
        if value is not None and value < 0:
            raise MountpointConfigError(f"{where}: '{key}' can't be smaller than zero")
        seconds[key] = default if value is None else value
    transport = reader.string("rtsp_transport") or "auto"
    if transport not in RTSP_TRANSPORTS:
        raise MountpointConfigError(f"{where}: 'rtsp_transport' must be auto, udp or tcp, not {_shown(transport)}")
    if transport == "udp" and url.lower().startswith("rtsps://"):
        raise MountpointConfigError(
            f"{where}: 'rtsp_transport' cannot be udp for an rtsps:// URL (its media travels in the TLS connection)"
        )
    settings = RtspSettings(
        url=url,
        username=reader.string("rtsp_user"),
        password=reader.string("rtsp_pwd"),
        quirk=reader.boolean("rtsp_quirk", default=False),
        interface=_interface_address(where, "rtspiface", interface_name),
        failcheck=failcheck,
        reconnect_delay=seconds["rtsp_reconnect_delay"],
        session_timeout=seconds["rtsp_session_timeout"],
        timeout=seconds["rtsp_timeout"],
        connect_timeout=seconds["rtsp_conn_timeout"],
        tracks=tuple(tracks),
        interface_name=interface_name,
        transport=transport,
        tls_cafile=reader.string("rtsp_cafile"),
        tls_verify=reader.boolean("rtsp_tls_verify", default=True),
    )
    config = MountpointConfig(
        **_described(reader, name, mountpoint_id),
        streams=(),
        rtsp=settings,
    )
    return config, [f"{name}.{key}" for key in group if key not in RTSP_KEYS]


RELAY_KEYS = {"type", "id", "name", "description", "metadata", "is_private", "secret", "pin", "media", "playoutdelay_ext",
              "relay_url", "relay_id", "relay_node"}  # fmt: skip
# What a relay stream's packets do not need: they come from the origin, over the relay.
RELAY_REFUSED_MEDIA_KEYS = ("port", "rtcpport", "port2", "port3", "iface", "mcast", "skew")


def _parse_relay_mountpoint(
    name: str, group: Mapping[str, Any], reader: _Reader, *, string_ids: bool
) -> tuple[MountpointConfig, list[str]]:
    """A ``type = "relay"`` mountpoint (fanout's cluster, configured by hand): ``relay_url`` is
    the origin's HTTP transport, ``relay_id`` its mountpoint's id (default: this one's), and
    ``media`` the origin's streams as an rtp mountpoint lists them, without ports."""
    where = reader.where
    mountpoint_id = _mountpoint_id(reader, string_ids=string_ids)
    url = reader.string("relay_url")
    if not url:
        raise MountpointConfigError(f"{where}: missing 'relay_url' (the origin's HTTP transport, e.g. http://10.0.0.2:8088)")
    if not url.startswith(("http://", "https://")) or any(char.isspace() for char in url):
        raise MountpointConfigError(f"{where}: 'relay_url' must be an http:// or https:// URL, not {_shown(url)}")
    origin_mountpoint: MountpointId | None = reader.string("relay_id") if string_ids else reader.integer("relay_id")
    media = group.get("media")
    if not isinstance(media, (list, tuple)) or not media:
        raise MountpointConfigError(f"{where}: 'media' must be a non-empty list of the origin's streams")
    if len(media) > MEDIA_LIMIT:
        raise UnsafeValueError(f"{where}: 'media' has more than {MEDIA_LIMIT} streams")
    unsupported: list[str] = []
    streams = []
    for index, entry in enumerate(media):
        if not isinstance(entry, Mapping):
            raise MountpointConfigError(f"{where}: media[{index}] must be a group of settings")
        if entry.get("type") == "data":
            raise MountpointConfigError(f"{where}: media[{index}]: a relay carries audio and video, not data")
        refused = [key for key in RELAY_REFUSED_MEDIA_KEYS if key in entry]
        if refused:
            raise MountpointConfigError(
                f"{where}: media[{index}]: '{refused[0]}' is the origin's: a relay stream's packets come from the origin"
            )
        streams.append(_parse_media_entry(where, index, {**entry, "port": 0}, unsupported))
    mids = [stream.mid for stream in streams]
    duplicates = sorted({mid for mid in mids if mids.count(mid) > 1})
    if duplicates:
        raise MountpointConfigError(f"{where}: duplicate mid {duplicates[0]!r}")
    node = reader.string("relay_node")
    config = MountpointConfig(
        **_described(reader, name, mountpoint_id),
        streams=tuple(streams),
        playoutdelay_ext=reader.boolean("playoutdelay_ext", default=False),
        collision_ms=0,  # the edge chose the SSRCs, and only they are routed: no lock needed
        relay=RelaySource(origin_node=node or url, origin_url=url.rstrip("/"), origin_mountpoint=origin_mountpoint),
    )
    unsupported.extend(key for key in group if key not in RELAY_KEYS)
    return config, [f"{name}.{key}" for key in unsupported]


WHIP_KEYS = {"type", "id", "name", "description", "metadata", "is_private", "secret", "pin", "media", "whip_token",
             "whip_bitrate", "playoutdelay_ext"}  # fmt: skip
WHIP_MEDIA_KEYS = {"type", "mid", "label", "msid", "pt", "codec", "rtpmap", "fmtp", "h264sps", "simulcast"}
# What a whip stream cannot have: the publisher sends over the WebRTC port, with its own SRTP.
WHIP_REFUSED_KEYS = {"port", "rtcpport", "iface", "mcast", "port2", "port3", "skew", "srtpsuite", "srtpcrypto",
                     "testsource", "collision", "audio", "video", "data"}  # fmt: skip
MIN_WHIP_BITRATE = 10_000


def _parse_whip_mountpoint(
    name: str, group: Mapping[str, Any], reader: _Reader, *, string_ids: bool
) -> tuple[MountpointConfig, list[str]]:
    """A ``type = "whip"`` mountpoint: the ``media`` list of an rtp mountpoint without ports
    (a simulcast video stream takes the publisher's rid layers as its substreams), and
    ``whip_token``, ``whip_bitrate``."""
    where = reader.where
    mountpoint_id = _mountpoint_id(reader, string_ids=string_ids)
    refused = sorted(key for key in group if key in WHIP_REFUSED_KEYS)
    if refused:
        raise MountpointConfigError(
            f"{where}: '{refused[0]}' has no meaning in a whip mountpoint: its publisher sends over WebRTC"
        )
    media = group.get("media")
    if not isinstance(media, (list, tuple)) or not media:
        raise MountpointConfigError(f"{where}: a whip mountpoint needs a 'media' list of the streams it takes")
    if len(media) > MEDIA_LIMIT:
        raise UnsafeValueError(f"{where}: 'media' has more than {MEDIA_LIMIT} streams")
    unsupported: list[str] = []
    streams = []
    for index, entry in enumerate(media):
        if not isinstance(entry, Mapping):
            raise MountpointConfigError(f"{where}: media[{index}] must be a group of settings")
        entry_refused = sorted(key for key in entry if key in WHIP_REFUSED_KEYS)
        if entry_refused:
            raise MountpointConfigError(
                f"{where}: media[{index}]: '{entry_refused[0]}' has no meaning in a whip mountpoint: "
                "its publisher sends over WebRTC"
            )
        entry_reader = _Reader(f"{where}: media[{index}]", entry)
        kind = entry_reader.string("type")
        if kind not in ("audio", "video"):
            raise MountpointConfigError(
                f"{where}: media[{index}]: type must be 'audio' or 'video'" + (f", not '{kind}'" if kind else "")
            )
        mid = _media_mid(entry_reader, index, entry, WHIP_MEDIA_KEYS, unsupported)
        streams.append(
            _stream(
                entry_reader,
                mindex=index,
                kind=kind,
                mid=mid,
                label=entry_reader.string("label") or kind,
                msid=_msid(entry_reader),
                keys={key: key for key in STREAM_KEYS},
                whip=True,
            )
        )
    mids = [stream.mid for stream in streams]
    duplicates = sorted({mid for mid in mids if mids.count(mid) > 1})
    if duplicates:
        raise MountpointConfigError(f"{where}: duplicate mid {duplicates[0]!r}")
    bitrate = reader.integer("whip_bitrate")
    if bitrate is not None and bitrate < MIN_WHIP_BITRATE:
        raise MountpointConfigError(f"{where}: 'whip_bitrate' must be at least {MIN_WHIP_BITRATE} (bit/s)")
    token = reader.string("whip_token")
    if token == "":
        raise MountpointConfigError(f"{where}: 'whip_token' must not be empty (leave it out to need none)")
    config = MountpointConfig(
        **_described(reader, name, mountpoint_id),
        streams=tuple(streams),
        playoutdelay_ext=reader.boolean("playoutdelay_ext", default=False),
        whip=WhipSettings(token=token, bitrate=bitrate if bitrate is not None else DEFAULT_WHIP_BITRATE),
    )
    unsupported.extend(key for key in group if key not in WHIP_KEYS)
    return config, [f"{name}.{key}" for key in unsupported]


FILE_KEYS = {
    "type", "id", "name", "description", "metadata", "is_private", "secret", "pin", "filename", "audio", "video",
    "audiopt", "audiocodec", "videopt", "videocodec",
}  # fmt: skip
FILE_AUDIO_CODECS = ("opus",)
FILE_VIDEO_CODECS = ("h264", "vp8")
FILE_SOURCE_HOST = "127.0.0.1"  # the file source process sends to the mountpoint's ports here


def _parse_file_mountpoint(
    name: str, group: Mapping[str, Any], reader: _Reader, kind: str, *, string_ids: bool
) -> tuple[MountpointConfig, list[str]]:
    """A ``type = "live"`` or ``"ondemand"`` mountpoint: Janus's ``filename``, ``audio`` and
    ``video``, and (fanout) the codecs and payload types its viewers get: Opus (111) and
    H.264 (96) unless ``audiocodec``/``videocodec``/``audiopt``/``videopt`` say otherwise."""
    where = reader.where
    mountpoint_id = _mountpoint_id(reader, string_ids=string_ids)
    filename = reader.string("filename")
    if not filename:
        raise MountpointConfigError(f"{where}: missing 'filename'")
    streams: list[StreamConfig] = []
    for stream_kind, codecs, default_pt in (("audio", FILE_AUDIO_CODECS, 111), ("video", FILE_VIDEO_CODECS, 96)):
        if not reader.boolean(stream_kind, default=False):
            continue
        codec = _named_codec(reader, stream_kind, f"{stream_kind}codec", f"{stream_kind}codec")
        codec = codec or KNOWN_CODECS[codecs[0]]
        if codec.name not in codecs:
            raise MountpointConfigError(
                f"{where}: '{stream_kind}codec' of a file mountpoint must be {' or '.join(codecs)}, not {codec.name}"
            )
        payload_type = reader.payload_type(f"{stream_kind}pt")
        streams.append(
            StreamConfig(
                mindex=len(streams),
                kind=stream_kind,
                mid=DEFAULT_MIDS[stream_kind],
                label=stream_kind,
                msid=None,
                host=FILE_SOURCE_HOST,
                port=0,
                rtcp_port=None,
                multicast_interface=None,
                payload_type=default_pt if payload_type is None else payload_type,
                codec=codec,
                fmtp=codec.default_fmtp,
            )
        )
    if not streams:
        raise MountpointConfigError(f"{where}: no audio or video have to be streamed (set audio and/or video = true)")
    config = MountpointConfig(
        **_described(reader, name, mountpoint_id),
        streams=tuple(streams),
        file=FileSettings(filename, ondemand=kind == "ondemand"),
    )
    return config, [f"{name}.{key}" for key in group if key not in FILE_KEYS]


def _collision_ms(reader: _Reader) -> int:
    collision = reader.integer("collision")
    if collision is None:
        return DEFAULT_COLLISION_MS
    if collision < 0:
        raise MountpointConfigError(f"{reader.where}: 'collision' must be a time in milliseconds (0 disables it)")
    return collision


def _source_srtp(reader: _Reader) -> SourceSrtp | None:
    suite = reader.integer("srtpsuite")
    crypto = reader.string("srtpcrypto")
    if suite is None and crypto is None:
        return None
    if suite not in SRTP_SUITES:
        raise MountpointConfigError(f"{reader.where}: 'srtpsuite' must be 32 or 80")
    if crypto is None:
        raise MountpointConfigError(f"{reader.where}: 'srtpsuite' needs 'srtpcrypto' (the base64 master key and salt)")
    try:
        key = base64.b64decode(crypto, validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 30:
        raise MountpointConfigError(
            f"{reader.where}: 'srtpcrypto' must be the base64 of a 30-byte master key and salt, as SDES writes it"
        )
    return SourceSrtp(suite, crypto)


def _parse_data_entry(where: str, index: int, entry: Mapping[str, Any], unsupported: list[str]) -> DataStreamConfig:
    reader = _Reader(f"{where}: media[{index}]", entry)
    mid = _media_mid(reader, index, entry, DATA_MEDIA_KEYS, unsupported)
    return _data_stream(
        reader,
        mindex=index,
        mid=mid,
        label=reader.string("label") or "data",
        keys={"port": "port", "iface": "iface", "datatype": "datatype", "buffermsg": "buffermsg"},
    )


def _parse_legacy_data(mindex: int, reader: _Reader) -> DataStreamConfig:
    return _data_stream(
        reader,
        mindex=mindex,
        mid=DEFAULT_MIDS["data"],
        label="data",
        keys={"port": "dataport", "iface": "dataiface", "datatype": "datatype", "buffermsg": "databuffermsg"},
    )


def _data_stream(reader: _Reader, *, mindex: int, mid: str, label: str, keys: dict[str, str]) -> DataStreamConfig:
    where = reader.where
    port = reader.required_port(keys["port"])
    datatype = reader.string(keys["datatype"]) or "text"
    if datatype not in ("text", "binary"):
        raise MountpointConfigError(f"{where}: '{keys['datatype']}' must be 'text' or 'binary', not '{datatype}'")
    interface = _interface_address(where, keys["iface"], reader.string(keys["iface"]))
    return DataStreamConfig(
        mindex=mindex,
        mid=mid,
        label=label,
        host=interface or "0.0.0.0",
        port=port,
        binary=datatype == "binary",
        buffer_message=reader.boolean(keys["buffermsg"], default=False),
    )


def _media_mid(
    reader: _Reader, index: int, entry: Mapping[str, Any], known: Collection[str], unsupported: list[str]
) -> str:
    """A ``media`` entry's mid (it must have one); its keys outside ``known`` go to ``unsupported``."""
    mid = reader.string("mid")
    if not mid:
        raise MountpointConfigError(f"{reader.where}: missing 'mid'")
    unsupported.extend(f"media[{index}].{key}" for key in entry if key not in known)
    return checked_mid(reader.where, "mid", mid)


def _parse_media_entry(where: str, index: int, entry: Any, unsupported: list[str]) -> StreamConfig:
    if not isinstance(entry, Mapping):
        raise MountpointConfigError(f"{where}: media[{index}] must be a group of settings")
    reader = _Reader(f"{where}: media[{index}]", entry)
    kind = reader.string("type")
    if kind not in ("audio", "video"):
        raise MountpointConfigError(
            f"{where}: media[{index}]: type must be 'audio', 'video' or 'data'" + (f", not '{kind}'" if kind else "")
        )
    mid = _media_mid(reader, index, entry, MEDIA_KEYS, unsupported)
    return _stream(
        reader,
        mindex=index,
        kind=kind,
        mid=mid,
        label=reader.string("label") or kind,
        msid=_msid(reader),
        keys={key: key for key in STREAM_KEYS},
    )


def _msid(reader: _Reader) -> str | None:
    """A media entry's ``msid``: as in Janus, "<stream id> <track id>" (RFC 8830's msid-id
    and msid-appdata); fanout also takes a lone track id (its stream id is then "fanout")."""
    msid = reader.string("msid")
    if msid is not None and _MSID.fullmatch(msid) is None:
        raise UnsafeValueError(
            f"{reader.where}: 'msid' must be a stream id and a track id, each 1 to 64 letters, digits or "
            f"!#$%&'*+-.^_`{{|}}~, with one space between (RFC 8830), not {_shown(msid)}"
        )
    return msid


def _parse_legacy_stream(where: str, mindex: int, kind: str, reader: _Reader) -> StreamConfig:
    return _stream(
        reader,
        mindex=mindex,
        kind=kind,
        mid=DEFAULT_MIDS[kind],
        label=kind,
        msid=None,
        keys={key: key if key == "h264sps" else f"{kind}{key}" for key in STREAM_KEYS},
    )


def _named_codec(reader: _Reader, kind: str, codec_key: str, rtpmap_key: str) -> CodecInfo | None:
    """The codec a stream names, by name or else by rtpmap; None if it names none."""
    codec_name = reader.string(codec_key)
    rtpmap = reader.string(rtpmap_key)
    codec = None
    if codec_name is not None:
        codec = KNOWN_CODECS.get(codec_name.lower())
        if codec is None:
            raise MountpointConfigError(f"{reader.where}: unknown codec '{codec_name}'")
    elif rtpmap is not None:
        codec = codec_from_rtpmap(rtpmap)
        if codec is None:
            raise MountpointConfigError(f"{reader.where}: unknown codec in rtpmap '{rtpmap}'")
    if codec is not None and codec.kind != kind:
        raise MountpointConfigError(f"{reader.where}: codec '{codec.name}' is not a {kind} codec")
    return codec


def _stream(
    reader: _Reader,
    *,
    mindex: int,
    kind: str,
    mid: str,
    label: str,
    msid: str | None,
    keys: dict[str, str],
    whip: bool = False,
) -> StreamConfig:
    """One RTP stream; ``whip``: one a WHIP publisher feeds (no port: 0, no RTCP port)."""
    where = reader.where
    port = 0 if whip else reader.required_port(keys["port"])
    rtcp_port = reader.port(keys["rtcpport"])
    payload_type = reader.payload_type(keys["pt"])
    if payload_type is None:
        raise MountpointConfigError(f"{where}: missing '{keys['pt']}'")
    codec = _named_codec(reader, kind, keys["codec"], keys["rtpmap"])
    if codec is None:
        raise MountpointConfigError(f"{where}: missing '{keys['codec']}'")
    fmtp = reader.string(keys["fmtp"])
    interface = _interface_address(where, keys["iface"], reader.string(keys["iface"]))
    group = reader.string(keys["mcast"])
    if group is not None and not (is_ip_address(group) and ipaddress.ip_address(group).is_multicast):
        raise MountpointConfigError(f"{where}: '{keys['mcast']}' must be a multicast address, not '{group}'")
    substream_ports = _substream_ports(reader, keys, kind, codec)
    if whip and substream_ports:
        substream_ports = (0,) * len(substream_ports)  # the publisher's rid layers, no ports
    # Janus's VP9-SVC switch: fanout reads the layers of any VP9 stream; with it, viewers are offered
    # transport-wide congestion control (their estimates choose the spatial layer).
    svc = reader.boolean(keys["svc"], default=False)
    if svc and (kind, codec.name) != ("video", "vp9"):
        raise MountpointConfigError(f"{where}: '{keys['svc']}' is for VP9 video streams, not {codec.name}")
    h264sps = reader.string(keys["h264sps"]) if kind == "video" else None
    if h264sps is not None:
        if codec.name != "h264":
            raise MountpointConfigError(f"{where}: '{keys['h264sps']}' is for H.264 streams, not {codec.name}")
        h264_parameter_sets(where, h264sps)
    return StreamConfig(
        mindex=mindex,
        kind=kind,
        mid=mid,
        label=label,
        msid=msid,
        host=group or interface or "0.0.0.0",
        multicast_interface=interface if group else None,
        port=port,
        rtcp_port=rtcp_port,
        payload_type=payload_type,
        codec=codec,
        fmtp=fmtp if fmtp is not None else codec.default_fmtp,
        skew=reader.boolean(keys["skew"], default=False),
        h264sps=h264sps,
        svc=svc,
        substream_ports=substream_ports,
    )


def _substream_ports(reader: _Reader, keys: dict[str, str], kind: str, codec: CodecInfo) -> tuple[int, ...]:
    """The ports of substreams 1 and 2 of a simulcast stream; () if it is not one. As Janus, a
    simulcast stream always has three substreams; a port left out is any free one (0)."""
    where = reader.where
    simulcast_key = keys["simulcast"]
    if kind != "video" or not reader.boolean(simulcast_key, default=False):
        return ()
    if codec.name not in SIMULCAST_CODECS:
        raise MountpointConfigError(
            f"{where}: '{simulcast_key}' needs a codec whose keyframes fanout finds ({', '.join(SIMULCAST_CODECS)}), "
            f"not {codec.name}"
        )
    ports = []
    for key in (keys["port2"], keys["port3"]):
        ports.append(reader.port(key) or 0)
    return tuple(ports)


def h264_parameter_sets(where: str, sprop_parameter_sets: str) -> list[bytes]:
    """The NAL units of an RFC 6184 sprop-parameter-sets value (comma-separated base64), SPS first."""
    try:
        units = [base64.b64decode(unit.strip(), validate=True) for unit in sprop_parameter_sets.split(",")]
    except binascii.Error:
        units = []
    if not units or any(not unit for unit in units) or units[0][0] & 0x1F != 7:
        raise MountpointConfigError(
            f"{where}: 'h264sps' must be a sprop-parameter-sets value: the base64 SPS, then the PPS, comma-separated"
        )
    if sum(2 + len(unit) for unit in units) > 999:
        raise MountpointConfigError(f"{where}: 'h264sps' is longer than the 1000 bytes one packet may carry")
    return units


def _interface_address(where: str, key: str, interface: str | None) -> str | None:
    """``iface`` as Janus takes it: an address, or the name of an interface (its IPv4 address)."""
    if interface is None or is_ip_address(interface):
        return interface
    address = address_of_interface(interface)
    if address is None:
        raise MountpointConfigError(f"{where}: '{key}' names no interface with an IPv4 address: '{interface}'")
    return address


class _Reader:
    """Typed access to one group's values, with errors that name the key."""

    def __init__(self, where: str, group: Mapping[str, Any]) -> None:
        self.where = where
        self.group = group

    def string(self, key: str) -> str | None:
        """A string of one line: no control characters, at most 256 characters for a
        name-like key and 4096 for any other."""
        value = self.text(key)
        if value is not None:
            checked_text(self.where, key, value, limit=SHORT_TEXT_LIMIT if key in _SHORT_KEYS else LONG_TEXT_LIMIT)
        return value

    def text(self, key: str) -> str | None:
        """Free text (line breaks allowed), at most 4096 characters."""
        value = self.group.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise MountpointConfigError(f"{self.where}: '{key}' must be a string")
        return checked_text(self.where, key, value, free_text=True)

    def port(self, key: str) -> int | None:
        """A UDP port number; 0 lets the kernel pick a free one."""
        port = self.integer(key)
        if port is not None and not 0 <= port <= 65535:
            raise MountpointConfigError(f"{self.where}: '{key}' must be a port number (0 picks a free one)")
        return port

    def payload_type(self, key: str) -> int | None:
        payload_type = self.integer(key)
        if payload_type is not None and not 0 <= payload_type <= 127:
            raise MountpointConfigError(f"{self.where}: '{key}' must be an RTP payload type (0-127)")
        return payload_type

    def required_port(self, key: str) -> int:
        port = self.port(key)
        if port is None:
            raise MountpointConfigError(f"{self.where}: missing '{key}'")
        return port

    def integer(self, key: str) -> int | None:
        value = self.group.get(key)
        if value is None:
            return None
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise MountpointConfigError(f"{self.where}: '{key}' must be an integer")
        return value

    def boolean(self, key: str, *, default: bool) -> bool:
        value = self.group.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "false", "no"):
            return value.lower() in ("true", "yes")
        raise MountpointConfigError(f"{self.where}: '{key}' must be true or false")


def streaming_settings_from_file(root: Mapping[str, Any], config_file: Path | None = None) -> StreamingSettings:
    """The ``general`` group of a parsed janus.plugin.streaming.jcfg (saved to ``config_file``)."""
    general = root.get("general")
    if not isinstance(general, Mapping):
        return StreamingSettings(config_file=config_file)
    from fanout.config.jcfg import ConfigError

    def where(key: str) -> object:
        return getattr(general, "location_of", lambda _: "general")(key)

    admin_key = general.get("admin_key")
    if admin_key is not None and not isinstance(admin_key, str):
        raise ConfigError(f"{where('admin_key')}: 'admin_key' must be a string")
    string_ids = general.get("string_ids", False)
    if not isinstance(string_ids, bool):
        raise ConfigError(f"{where('string_ids')}: 'string_ids' must be true or false")
    port_range = DEFAULT_RTP_PORT_RANGE
    text = general.get("rtp_port_range")
    if text is not None:
        match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text) if isinstance(text, str) else None
        low, high = sorted((int(match.group(1)), int(match.group(2)))) if match else (0, 0)  # as Janus: either order
        if not 1 <= low <= high <= 65535:
            raise ConfigError(f"{where('rtp_port_range')}: 'rtp_port_range' must be a range of port numbers like \"20000-40000\", not {text!r}")
        port_range = (low, high)
    allow_privileged_ports = general.get("allow_privileged_ports", False)
    if not isinstance(allow_privileged_ports, bool):
        raise ConfigError(f"{where('allow_privileged_ports')}: 'allow_privileged_ports' must be true or false")
    rec_dir = general.get("rec_dir")
    if rec_dir is not None and (not isinstance(rec_dir, str) or not rec_dir):
        raise ConfigError(f"{where('rec_dir')}: 'rec_dir' must be a folder's path")
    transport_cc = general.get("transport_cc", "simulcast")
    if transport_cc not in TRANSPORT_CC_CHOICES:
        choices = " or ".join(f'"{choice}"' for choice in TRANSPORT_CC_CHOICES)
        raise ConfigError(f"{where('transport_cc')}: 'transport_cc' must be {choices}, not {transport_cc!r}")
    return StreamingSettings(
        admin_key=admin_key,
        string_ids=string_ids,
        config_file=config_file,
        rtp_port_range=port_range,
        allow_privileged_ports=allow_privileged_ports,
        rec_dir=Path(rec_dir) if rec_dir else None,
        transport_cc=transport_cc,
    )


def mountpoints_from_file(
    root: Mapping[str, Any], file_name: str = "janus.plugin.streaming.jcfg", *, string_ids: bool = False
) -> list[MountpointConfig]:
    """Every mountpoint of a parsed janus.plugin.streaming.jcfg (its ``general`` group aside).

    Errors name the file and line of the mountpoint (ConfigError); a mountpoint with an
    unsafe string (UnsafeValueError) is left out with an error in the log."""
    from fanout.config.jcfg import ConfigError

    mountpoints: list[MountpointConfig] = []
    seen: dict[MountpointId, str] = {}
    for name in list(root):
        if name == "general":
            continue
        group = root[name]
        location = getattr(root, "location_of", lambda _: file_name)(name)
        if not isinstance(group, Mapping):
            raise ConfigError(f"{location}: '{name}' must be a group describing a mountpoint")
        try:
            config, _ = parse_mountpoint(name, group, string_ids=string_ids)
        except UnsafeValueError as error:
            # Most likely saved by an older fanout that took anything: the others still start.
            logger.error("%s: %s; the mountpoint is skipped", location, error)
            continue
        except MountpointConfigError as error:
            raise ConfigError(f"{location}: {error}") from None
        if config.id in seen:
            raise ConfigError(f"{location}: mountpoint '{name}' has the id {config.id} of '{seen[config.id]}'")
        seen[config.id] = name
        mountpoints.append(config)
    return mountpoints
