"""The tracks of an RTSP presentation, read from the SDP a DESCRIBE returns (RFC 2326
appendix C), and the URLs their SETUP requests go to."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from fanout.sources.rtsp.messages import RtspError, RtspResponse, is_number

# Static payload types a camera may announce without a=rtpmap (RFC 3551).
STATIC_PAYLOAD_TYPES = {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1)}


class RtspDescriptionError(RtspError):
    """The DESCRIBE's SDP cannot be used."""


@dataclass(frozen=True)
class Track:
    """One m-line of the presentation: its first payload type, as the server sends it."""

    kind: str  # "audio" | "video" | "application" | ...
    payload_type: int
    encoding: str  # as in a=rtpmap, e.g. "VP8", "H264", "opus"
    clock_rate: int
    channels: int | None
    fmtp: str | None
    control_url: str  # where its SETUP goes

    @property
    def rtpmap(self) -> str:
        return f"{self.encoding}/{self.clock_rate}" + (f"/{self.channels}" if self.channels else "")

    def fmtp_parameter(self, name: str) -> str | None:
        for item in (self.fmtp or "").split(";"):
            key, _, value = item.strip().partition("=")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


def base_url(request_url: str, response: RtspResponse) -> str:
    """The URL the presentation's relative control URLs resolve against (RFC 2326 C.1.1):
    Content-Base, else Content-Location, else the request's URL."""
    return response.header("Content-Base") or response.header("Content-Location") or request_url


def resolve_control(base: str, control: str | None) -> str:
    """A track's a=control made absolute. ``*`` or none is the base itself; a relative
    one is taken below the base, as if the base ended with "/" (what servers expect,
    and what ffmpeg and curl do)."""
    if control is None or control == "*":
        return base
    if urlsplit(control).scheme:
        return control
    return urljoin(base if base.endswith("/") else base + "/", control)


def parse_tracks(sdp: str, base: str) -> list[Track]:
    """Every m-line of ``sdp`` as a Track; RtspDescriptionError if it has none or is malformed."""
    session_control: str | None = None
    sections: list[_MediaSection] = []
    for number, raw in enumerate(sdp.replace("\r\n", "\n").split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise RtspDescriptionError(f"SDP line {number} is not <type>=<value>: {line[:60]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            parts = value.split()
            if len(parts) < 4 or not is_number(parts[1].split("/")[0]):
                raise RtspDescriptionError(f"SDP line {number}: invalid m-line {value[:60]!r}")
            formats = [int(fmt) for fmt in parts[3:] if is_number(fmt) and int(fmt) < 128]
            sections.append(_MediaSection(parts[0], formats))
        elif kind == "a":
            name, _, argument = value.partition(":")
            target = sections[-1] if sections else None
            if name == "control":
                if target is None:
                    session_control = argument.strip()
                else:
                    target.control = argument.strip()
            elif name in ("rtpmap", "fmtp") and target is not None:
                format_number, _, rest = argument.partition(" ")
                if is_number(format_number):
                    (target.rtpmap if name == "rtpmap" else target.fmtp)[int(format_number)] = rest.strip()
    if not sections:
        raise RtspDescriptionError("the SDP describes no media (no m-line)")
    presentation = resolve_control(base, session_control)
    tracks = []
    for section in sections:
        if not section.formats:
            continue
        payload_type = section.formats[0]
        if payload_type in section.rtpmap:
            encoding, clock_rate, channels = _parse_rtpmap(section.rtpmap[payload_type])
        elif payload_type in STATIC_PAYLOAD_TYPES:
            encoding, clock_rate, channels = STATIC_PAYLOAD_TYPES[payload_type]
        else:
            raise RtspDescriptionError(f"payload type {payload_type} has no a=rtpmap")
        tracks.append(
            Track(
                kind=section.kind,
                payload_type=payload_type,
                encoding=encoding,
                clock_rate=clock_rate,
                channels=channels,
                fmtp=section.fmtp.get(payload_type),
                control_url=resolve_control(presentation, section.control),
            )
        )
    return tracks


@dataclass
class _MediaSection:
    """One m-line of the SDP and the attributes that follow it."""

    kind: str
    formats: list[int]
    rtpmap: dict[int, str] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    control: str | None = None


def _parse_rtpmap(value: str) -> tuple[str, int, int | None]:
    parts = value.split("/")
    if len(parts) < 2 or not parts[0] or not is_number(parts[1]) or (len(parts) > 2 and not is_number(parts[2])):
        raise RtspDescriptionError(f"invalid a=rtpmap {value[:60]!r}")
    return parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else None


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``rtsp://user:pass@host/path`` -> (``rtsp://host/path``, user, pass); RTSP requests
    carry no userinfo."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("rtsp", "rtsps") or not parts.hostname:
        raise RtspError(f"not an rtsp:// URL: {url!r}")
    if parts.username is None:
        return url, None, None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    password = unquote(parts.password) if parts.password is not None else None
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), unquote(parts.username), password


def path_only(url: str) -> str:
    """``rtsp_quirk``: the URL's path (and query), for servers that want only that in DESCRIBE."""
    parts = urlsplit(url)
    return urlunsplit(("", "", parts.path or "/", parts.query, ""))
