"""SDP for WebRTC (RFC 8866, RFC 8829 JSEP, RFC 8843 BUNDLE, RFC 8839 ICE).

:func:`build_offer` writes the server's unified-plan offer: ICE-lite, one
BUNDLE group, rtcp-mux, sendonly m-lines with a=ssrc, and the server's host
candidates. :func:`parse_description` reads SDP into a :class:`SessionDescription`:
a client's answer or offer as Chromium, Firefox, janus.js and aiortc write it,
or the server's own read back (what the Admin API's ``handle_info`` shows); it
raises :class:`SdpError` with the reason when it is unusable.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

SETUP_ROLES = ("active", "passive", "actpass")
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int | None]] = {
    0: ("PCMU", 8000, None),
    8: ("PCMA", 8000, None),
    9: ("G722", 8000, None),
}
_FINGERPRINT = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+$")
# The playout-delay RTP header extension: the sender tells the receiver's jitter buffer
# which delay to target (a minimum and a maximum, in 10 ms units).
PLAYOUT_DELAY_URI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
TRANSPORT_CC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


class SdpError(ValueError):
    """Unusable SDP; the message is the reason, e.g. "no ice-ufrag"."""


@dataclass(frozen=True)
class Codec:
    """A payload type as a=rtpmap, a=fmtp and a=rtcp-fb describe it."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int | None = None
    fmtp: str | None = None
    rtcp_feedback: tuple[str, ...] = ()


@dataclass(frozen=True)
class Candidate:
    """An ICE candidate line (RFC 8839 section 5.1)."""

    foundation: str
    component: int
    transport: str
    priority: int
    ip: str
    port: int
    type: str
    related_address: str | None = None
    related_port: int | None = None
    tcptype: str | None = None  # a TCP candidate's "active", "passive" or "so" (RFC 6544 section 4.5)

    @classmethod
    def parse(cls, text: str) -> Candidate:
        """Parse ``candidate:...`` or ``a=candidate:...``; raises SdpError."""
        value = text.strip()
        for prefix in ("a=", "candidate:"):
            if value.startswith(prefix):
                value = value[len(prefix) :]
        fields = value.split()
        if len(fields) < 8 or fields[6] != "typ":
            raise SdpError(f"bad candidate {text.strip()!r}")
        try:
            component, priority, port = int(fields[1]), int(fields[3]), int(fields[5])
        except ValueError as error:
            raise SdpError(f"bad candidate {text.strip()!r}: {error}") from error
        if not 0 <= port <= 65535:
            raise SdpError(f"bad candidate {text.strip()!r}: port {port}")
        extensions = dict(zip(fields[8::2], fields[9::2], strict=False))
        related_port = extensions.get("rport")
        return cls(
            foundation=fields[0],
            component=component,
            transport=fields[2],
            priority=priority,
            ip=fields[4],
            port=port,
            type=fields[7],
            related_address=extensions.get("raddr"),
            related_port=int(related_port) if related_port is not None and related_port.isdigit() else None,
            tcptype=extensions.get("tcptype"),
        )

    def __str__(self) -> str:
        text = (
            f"candidate:{self.foundation} {self.component} {self.transport} {self.priority} "
            f"{self.ip} {self.port} typ {self.type}"
        )
        if self.related_address is not None and self.related_port is not None:
            text += f" raddr {self.related_address} rport {self.related_port}"
        if self.tcptype is not None:
            text += f" tcptype {self.tcptype}"
        return text


@dataclass(frozen=True)
class OfferMedia:
    """One m-line the server offers."""

    mid: str
    kind: str  # "audio" | "video" | "application"
    codec: Codec | None  # None for "application" (data channel)
    ssrc: int
    stream_id: str = "fanout"
    track_id: str = ""  # "" means "fanout-<mid>"
    cname: str = "fanout"
    direction: str = "sendonly"
    # RTP header extensions sent on this m-line: (id, URI) pairs, written as a=extmap.
    header_extensions: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class TransportDescription:
    """The transport the core adds to a plugin's media: ICE, DTLS, candidates."""

    ice_ufrag: str
    ice_pwd: str
    fingerprint: tuple[str, str]  # ("sha-256", "AB:CD:...")
    setup: str  # "actpass" in offers
    candidates: list[Candidate]
    ice_lite: bool = True


def build_offer(
    media: list[OfferMedia], transport: TransportDescription, *, session_id: int, session_version: int
) -> str:
    """The unified-plan offer for ``media`` over one BUNDLE transport."""
    if not media:
        raise ValueError("an offer needs at least one m-line")
    lines = session_lines([m.mid for m in media], transport, session_id, session_version)
    for item in media:
        lines += _offer_media_lines(item, transport)
    return "\r\n".join(lines) + "\r\n"


def build_answer(
    offer: SessionDescription,
    media: list[OfferMedia | None],
    transport: TransportDescription,
    *,
    session_id: int,
    session_version: int,
) -> str:
    """The answer to a client's ``offer``: for each offered m-line, in order, the media sent on
    it or None to reject it (port 0). ``transport.setup`` is "passive" or "active"."""
    if len(media) != len(offer.media):
        raise ValueError(f"the offer has {len(offer.media)} m-lines, the answer {len(media)}")
    accepted = [item for item in media if item is not None]
    if not accepted:
        raise ValueError("an answer that rejects every m-line")
    lines = session_lines([item.mid for item in accepted], transport, session_id, session_version)
    for offered, item in zip(offer.media, media, strict=True):
        lines += _offer_media_lines(item, transport) if item is not None else rejected_media_lines(offered)
    return "\r\n".join(lines) + "\r\n"


def session_lines(bundled_mids: list[str], transport: TransportDescription, session_id: int, version: int) -> list[str]:
    """An answer's or offer's session part: one BUNDLE group of ``bundled_mids``, ICE-lite if the transport is."""
    lines = [
        "v=0",
        f"o=- {session_id} {version} IN IP4 0.0.0.0",
        "s=fanout",
        "t=0 0",
        f"a=group:BUNDLE {' '.join(bundled_mids)}",
    ]
    if transport.ice_lite:
        lines.append("a=ice-lite")
    lines.append("a=msid-semantic: WMS *")
    return lines


def rejected_media_lines(offered: MediaDescription) -> list[str]:
    """An answer's m-line refusing ``offered``: port 0, inactive."""
    if offered.kind == "application":
        lines = ["m=application 0 UDP/DTLS/SCTP webrtc-datachannel"]
    else:
        format_ = str(offered.codecs[0].payload_type) if offered.codecs else "0"
        lines = [f"m={offered.kind} 0 UDP/TLS/RTP/SAVPF {format_}"]
    lines.append("c=IN IP4 0.0.0.0")
    if offered.mid is not None:
        lines.append(f"a=mid:{offered.mid}")
    lines.append("a=inactive")
    return lines


def _offer_media_lines(media: OfferMedia, transport: TransportDescription) -> list[str]:
    first = transport.candidates[0] if transport.candidates else None
    port = first.port if first is not None else 9
    address = first.ip if first is not None else "0.0.0.0"
    family = "IP6" if ":" in address else "IP4"
    codec = media.codec
    if media.kind == "application":
        lines = [f"m=application {port} UDP/DTLS/SCTP webrtc-datachannel", f"c=IN {family} {address}"]
    else:
        if codec is None:
            raise ValueError(f"m-line {media.mid}: {media.kind} needs a codec")
        lines = [f"m={media.kind} {port} UDP/TLS/RTP/SAVPF {codec.payload_type}", f"c=IN {family} {address}"]
    lines += [
        f"a=ice-ufrag:{transport.ice_ufrag}",
        f"a=ice-pwd:{transport.ice_pwd}",
        f"a=fingerprint:{transport.fingerprint[0]} {transport.fingerprint[1]}",
        f"a=setup:{transport.setup}",
        f"a=mid:{media.mid}",
    ]
    if media.kind == "application":
        lines += ["a=sctp-port:5000", "a=max-message-size:262144"]
    else:
        assert codec is not None
        track_id = media.track_id or f"fanout-{media.mid}"
        lines += [f"a={media.direction}", "a=rtcp-mux"]
        lines += [f"a=extmap:{number} {uri}" for number, uri in media.header_extensions]
        rtpmap = f"a=rtpmap:{codec.payload_type} {codec.name}/{codec.clock_rate}"
        if codec.channels is not None:
            rtpmap += f"/{codec.channels}"
        lines.append(rtpmap)
        lines += [f"a=rtcp-fb:{codec.payload_type} {feedback}" for feedback in codec.rtcp_feedback]
        if codec.fmtp:
            lines.append(f"a=fmtp:{codec.payload_type} {codec.fmtp}")
        lines += [
            f"a=msid:{media.stream_id} {track_id}",
            f"a=ssrc:{media.ssrc} cname:{media.cname}",
            f"a=ssrc:{media.ssrc} msid:{media.stream_id} {track_id}",
        ]
    lines += [f"a={candidate}" for candidate in transport.candidates]
    lines.append("a=end-of-candidates")
    return lines


@dataclass(frozen=True)
class MediaDescription:
    """One m-line of a session description."""

    mid: str | None
    kind: str
    port: int  # 0 = rejected
    direction: str
    codecs: list[Codec]
    # The RTP header extensions it negotiates (a=extmap, session level included): (id, URI).
    header_extensions: tuple[tuple[int, str], ...] = ()
    # The SSRCs its a=ssrc lines announce (RFC 5576), in the order they first appear.
    ssrcs: tuple[int, ...] = ()

    def header_extension_id(self, uri: str) -> int | None:
        """The id this m-line gives the header extension ``uri``, None if it has none."""
        return next((number for number, name in self.header_extensions if name == uri), None)


@dataclass(frozen=True)
class SessionDescription:
    """An SDP, parsed: a client's (its answer or offer) or the server's own read back."""

    ice_ufrag: str
    ice_pwd: str
    fingerprints: list[tuple[str, str]]
    setup: str
    media: list[MediaDescription]
    candidates: list[Candidate]
    end_of_candidates: bool
    ice_lite: bool


@dataclass
class _Section:
    """Attributes of the session or of one m-line while parsing."""

    number: int  # 0 = session level
    kind: str = ""
    port: int = 0
    formats: list[str] = field(default_factory=list)
    mid: str | None = None
    direction: str | None = None
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str | None = None
    candidates: list[Candidate] = field(default_factory=list)
    end_of_candidates: bool = False
    ice_lite: bool = False
    rtpmap: dict[int, tuple[str, int, int | None]] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    rtcp_feedback: dict[str, list[str]] = field(default_factory=dict)
    header_extensions: list[tuple[int, str]] = field(default_factory=list)
    ssrcs: list[int] = field(default_factory=list)

    def where(self) -> str:
        return f"m-line {self.number}: " if self.number else ""


def parse_description(text: str) -> SessionDescription:
    """Parse SDP (a client's, or the server's own); raises SdpError with the reason."""
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if not lines or lines[0].strip() != "v=0":
        raise SdpError("not SDP: the first line is not v=0")
    session = _Section(0)
    sections: list[_Section] = []
    current = session
    for line_number, line in enumerate(lines, start=1):
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"line {line_number}: not of the form x=value: {line!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            current = _parse_m_line(value, len(sections) + 1)
            sections.append(current)
        elif kind == "a":
            _parse_attribute(current, value)
    if not sections:
        raise SdpError("no m-line")
    return _describe(session, sections)


def _parse_m_line(value: str, number: int) -> _Section:
    fields = value.split()
    if len(fields) < 3:
        raise SdpError(f"m-line {number}: bad m= line {value!r}")
    port_text = fields[1].split("/")[0]
    if not port_text.isdigit() or int(port_text) > 65535:
        raise SdpError(f"m-line {number}: bad port {fields[1]!r}")
    return _Section(number, kind=fields[0], port=int(port_text), formats=fields[3:])


def _parse_attribute(section: _Section, value: str) -> None:
    name, _, argument = value.partition(":")
    argument = argument.strip()
    where = section.where()
    if name == "ice-ufrag":
        section.ice_ufrag = argument
    elif name == "ice-pwd":
        section.ice_pwd = argument
    elif name == "ice-lite":
        section.ice_lite = True
    elif name == "fingerprint":
        parts = argument.split()
        if len(parts) != 2 or not _FINGERPRINT.match(parts[1]):
            raise SdpError(f"{where}bad fingerprint {argument!r}")
        section.fingerprints.append((parts[0].lower(), parts[1].upper()))
    elif name == "setup":
        if argument not in SETUP_ROLES:
            raise SdpError(f"{where}unsupported setup role {argument!r}")
        section.setup = argument
    elif name == "mid":
        section.mid = argument
    elif name in DIRECTIONS:
        section.direction = name
    elif name == "candidate":
        section.candidates.append(Candidate.parse(value))
    elif name == "end-of-candidates":
        section.end_of_candidates = True
    elif name == "rtpmap":
        payload_type, codec = _payload_type(argument, where)
        parts = codec.split("/")
        if len(parts) < 2 or not parts[1].isdigit() or (len(parts) > 2 and not parts[2].isdigit()):
            raise SdpError(f"{where}bad rtpmap {argument!r}")
        section.rtpmap[payload_type] = (parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else None)
    elif name == "fmtp":
        payload_type, parameters = _payload_type(argument, where)
        section.fmtp[payload_type] = parameters
    elif name == "extmap":
        _parse_extmap(section, argument)
    elif name == "rtcp-fb":
        target, _, feedback = argument.partition(" ")
        section.rtcp_feedback.setdefault(target, []).append(feedback.strip())
    elif name == "ssrc":
        _parse_ssrc(section, argument)


def _parse_ssrc(section: _Section, argument: str) -> None:
    """``a=ssrc:<ssrc-id> <attribute>[:<value>]`` (RFC 5576 section 4.1). A line fanout
    cannot read only leaves that SSRC unannounced, as a client's odd line never made
    its answer unusable."""
    number = argument.partition(" ")[0]
    if number.isdigit() and int(number) < 2**32 and int(number) not in section.ssrcs:
        section.ssrcs.append(int(number))


def _parse_extmap(section: _Section, argument: str) -> None:
    """``a=extmap:<id>[/<direction>] <URI> [<attributes>]`` (RFC 8285 section 8). A line
    fanout cannot read only leaves that extension unnegotiated."""
    fields = argument.split()
    number = fields[0].partition("/")[0] if fields else ""
    if len(fields) >= 2 and number.isdigit() and 1 <= int(number) <= 255:
        section.header_extensions.append((int(number), fields[1]))


def _payload_type(argument: str, where: str) -> tuple[int, str]:
    number, _, rest = argument.partition(" ")
    if not number.isdigit() or int(number) > 127:
        raise SdpError(f"{where}bad payload type in {argument!r}")
    return int(number), rest.strip()


def _describe(session: _Section, sections: list[_Section]) -> SessionDescription:
    accepted = [s for s in sections if s.port != 0] or sections
    transport = accepted[0]
    ice_ufrag = transport.ice_ufrag or session.ice_ufrag
    ice_pwd = transport.ice_pwd or session.ice_pwd
    if not ice_ufrag:
        raise SdpError("no ice-ufrag")
    if not ice_pwd:
        raise SdpError("no ice-pwd")
    fingerprints: list[tuple[str, str]] = []
    for section in (session, *sections):
        fingerprints += [f for f in section.fingerprints if f not in fingerprints]
    if not fingerprints:
        raise SdpError("no fingerprint")
    setup = transport.setup or session.setup or "active"  # RFC 4145: active when absent
    candidates: list[Candidate] = []
    for section in (session, *sections):
        candidates += [c for c in section.candidates if c not in candidates]
    for candidate in candidates:
        _check_candidate_address(candidate)
    return SessionDescription(
        ice_ufrag=ice_ufrag,
        ice_pwd=ice_pwd,
        fingerprints=fingerprints,
        setup=setup,
        media=[_media(section, session) for section in sections],
        candidates=candidates,
        end_of_candidates=any(s.end_of_candidates for s in (session, *sections)),
        ice_lite=session.ice_lite,
    )


def _check_candidate_address(candidate: Candidate) -> None:
    if candidate.ip.endswith(".local"):
        return
    try:
        ipaddress.ip_address(candidate.ip)
    except ValueError as error:
        raise SdpError(f"bad candidate address {candidate.ip!r}") from error


def _media(section: _Section, session: _Section) -> MediaDescription:
    codecs: list[Codec] = []
    if section.kind in ("audio", "video"):
        for text in section.formats:
            if not text.isdigit():
                raise SdpError(f"m-line {section.number}: bad payload type {text!r}")
            payload_type = int(text)
            rtpmap = section.rtpmap.get(payload_type) or STATIC_PAYLOAD_TYPES.get(payload_type)
            if rtpmap is None:
                continue
            name, clock_rate, channels = rtpmap
            feedback = section.rtcp_feedback.get(text, []) + section.rtcp_feedback.get("*", [])
            codecs.append(
                Codec(payload_type, name, clock_rate, channels, section.fmtp.get(payload_type), tuple(feedback))
            )
    return MediaDescription(
        mid=section.mid,
        kind=section.kind,
        port=section.port,
        direction=section.direction or session.direction or "sendrecv",
        codecs=codecs,
        header_extensions=tuple(session.header_extensions + section.header_extensions),
        ssrcs=tuple(section.ssrcs),
    )
