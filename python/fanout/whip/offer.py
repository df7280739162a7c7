"""A WHIP publisher's SDP offer, read for one mountpoint (sans-IO).

Each offered m-line that sends audio or video gets the first unused stream of the
mountpoint of its kind whose codec it offers (for H.264, packetization mode 1, the
mountpoint's profile preferred), on the publisher's own payload type. An m-line
with simulcast (RFC 8853: ``a=rid:<id> send`` and ``a=simulcast:send``) keeps every
rid layer it offers (OBS gives up on an answer that drops one); on a simulcast
stream of the mountpoint the layers become its substreams, the first listed the
highest (substream 2), unless their names say otherwise (``l``/``m``/``h``,
``q``/``h``/``f``). A layer with no substream left, or any layer past the first of a
stream that is not simulcast, is answered but its packets are dropped and counted.

:func:`read_offer` raises :class:`WhipOfferError` with the HTTP status to answer:
400 for SDP fanout cannot read, 422 when no offered codec fits a stream.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fanout.plugins.streaming.config import StreamConfig
from fanout.plugins.streaming.mountpoint import SUBSTREAM_INDEX_STRIDE, source_index
from fanout.plugins.streaming.offer_matching import _offered_codec
from fanout.webrtc.sdp import Codec, MediaDescription, SdpError, SessionDescription, parse_description

if TYPE_CHECKING:
    from fanout._engine import PublisherRoute

logger = logging.getLogger(__name__)

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
# The only header extensions the answer keeps: the engine routes packets by them.
KEPT_EXTENSIONS = (MID_URI, RID_URI)
KEPT_VIDEO_FEEDBACK = ("nack", "nack pli", "ccm fir", "goog-remb")
SENDING_DIRECTIONS = ("sendonly", "sendrecv")
ONE_BYTE_EXTENSION_IDS = range(1, 15)  # the engine reads RFC 8285 one-byte headers
# rid names that say their quality, lowest first (as browsers' and janus.js's examples use them)
QUALITY_ORDERS = (("l", "m", "h"), ("q", "h", "f"))


class WhipOfferError(ValueError):
    """An offer refused: ``status`` is the HTTP status, the message the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class AcceptedMedia:
    """One offered m-line fanout receives: the mountpoint stream it feeds, on the publisher's codec."""

    mid: str
    kind: str
    stream: StreamConfig
    codec: Codec  # as offered: its payload type, fmtp and feedback
    rids: tuple[str, ...]  # the rid layers offered (a=simulcast order), () without simulcast
    header_extensions: tuple[tuple[int, str], ...]  # the kept ones: (id, URI)

    def substream_of(self, rid: str) -> int | None:
        """The stream's substream a layer feeds; None: its packets are not wanted."""
        substreams = self.stream.substreams if self.stream.simulcast else 1
        highest_first = _highest_first(self.rids)
        position = highest_first.index(rid)
        substream = substreams - 1 - position
        return substream if substream >= 0 else None

    def routes(self, *, by_rid: bool = True) -> list[PublisherRoute]:
        """Which of the link's packets feed which substream. Without the rid extension
        (``by_rid`` False) the layers cannot be told apart: only the highest is taken."""
        if not self.rids or not by_rid:
            index = self.stream.mindex
            if self.rids:
                highest = self.substream_of(_highest_first(self.rids)[0])
                index = source_index(self.stream, highest if self.stream.simulcast else None)
            return [{"index": index, "mid": self.mid, "payload_types": [self.codec.payload_type]}]
        routes: list[PublisherRoute] = []
        for rid in self.rids:
            substream = self.substream_of(rid)
            if substream is not None:
                index = source_index(self.stream, substream if self.stream.simulcast else None)
                routes.append({"index": index, "mid": self.mid, "rid": rid})
        return routes


@dataclass(frozen=True)
class PublisherOffer:
    """The publisher's offer and, per m-line in order, what fanout takes of it (None: rejected)."""

    description: SessionDescription
    media: tuple[AcceptedMedia | None, ...]
    offered: tuple[MediaDescription, ...]

    @property
    def accepted(self) -> list[AcceptedMedia]:
        return [item for item in self.media if item is not None]

    def routes(self) -> list[PublisherRoute]:
        by_rid = self.extension_id(RID_URI) is not None
        return [route for item in self.accepted for route in item.routes(by_rid=by_rid)]

    def video_indexes(self) -> list[int]:
        """The engine indexes of the video streams the link feeds (REMB goes to them)."""
        video = {item.stream.mindex for item in self.accepted if item.kind == "video"}
        return [route["index"] for route in self.routes() if route["index"] % SUBSTREAM_INDEX_STRIDE in video]

    def extension_id(self, uri: str) -> int | None:
        """The id the publisher gives ``uri`` (one for the BUNDLE), if the engine can read it."""
        for item in self.accepted:
            for number, name in item.header_extensions:
                if name == uri:
                    return number
        return None


def read_offer(text: str, streams: tuple[StreamConfig, ...]) -> PublisherOffer:
    """The offer matched to ``streams``; WhipOfferError (400, 422) if it cannot be used."""
    try:
        description = parse_description(text)
    except SdpError as error:
        raise WhipOfferError(400, f"malformed SDP offer: {error}") from None
    if description.setup not in ("actpass", "active"):
        raise WhipOfferError(400, f"the offer's setup must be actpass or active, not {description.setup}")
    rids_by_mline, bundle_only = _rid_layers(text)
    unused = list(streams)
    media: list[AcceptedMedia | None] = []
    for number, offered in enumerate(description.media):
        if offered.port == 0 and bundle_only[number]:  # RFC 8843: port 0 and bundle-only is offered, bundled
            offered = dataclasses.replace(offered, port=9)
        item = _accept(offered, unused, rids_by_mline[number])
        if item is not None:
            unused.remove(item.stream)
        media.append(item)
    if not any(item is not None for item in media):
        wanted = ", ".join(f"{stream.kind} {stream.codec.name}" for stream in streams)
        raise WhipOfferError(422, f"no offered m-line sends a codec this mountpoint takes ({wanted})")
    return PublisherOffer(description, tuple(media), tuple(description.media))


def _accept(offered: MediaDescription, unused: list[StreamConfig], rids: tuple[str, ...]) -> AcceptedMedia | None:
    if offered.kind not in ("audio", "video") or offered.port == 0 or offered.mid is None:
        return None
    if offered.direction not in SENDING_DIRECTIONS:
        return None
    for stream in unused:
        if stream.kind != offered.kind:
            continue
        codec = _offered_codec(offered, stream)
        if codec is None:
            continue
        extensions = tuple(
            (number, uri)
            for number, uri in offered.header_extensions
            if uri in KEPT_EXTENSIONS and number in ONE_BYTE_EXTENSION_IDS
        )
        feedback = tuple(fb for fb in codec.rtcp_feedback if fb in KEPT_VIDEO_FEEDBACK) if offered.kind == "video" else ()
        kept = Codec(codec.payload_type, codec.name, codec.clock_rate, codec.channels, codec.fmtp, feedback)
        return AcceptedMedia(offered.mid, offered.kind, stream, kept, rids, extensions)
    return None


def _rid_layers(text: str) -> tuple[list[tuple[str, ...]], list[bool]]:
    """Per m-line, the rids it sends (RFC 8851 ``a=rid:<id> send``), in its ``a=simulcast:send``
    order (RFC 8853; every alternative and paused ``~`` layer counted) when it has one; and
    whether it is ``a=bundle-only`` (GStreamer's webrtcbin offers its second m-line so)."""
    layers: list[tuple[str, ...]] = []
    bundle_only: list[bool] = []
    sending: list[str] = []
    listed: list[str] = []

    def close_section() -> None:
        ordered = [rid for rid in listed if rid in sending] + [rid for rid in sending if rid not in listed]
        layers.append(tuple(dict.fromkeys(ordered)))

    started = False
    for raw in text.split("\n"):
        line = raw.strip()
        if line.startswith("m="):
            if started:
                close_section()
            started = True
            sending, listed = [], []
            bundle_only.append(False)
        elif started and line == "a=bundle-only":
            bundle_only[-1] = True
        elif started and line.startswith("a=rid:"):
            fields = line[len("a=rid:") :].split()
            if len(fields) >= 2 and fields[1] == "send":
                sending.append(fields[0])
        elif started and line.startswith("a=simulcast:"):
            fields = line[len("a=simulcast:") :].split()
            for direction, value in zip(fields[::2], fields[1::2], strict=False):
                if direction == "send":
                    listed += [rid.lstrip("~") for layer in value.split(";") for rid in layer.split(",")]
    if started:
        close_section()
    return layers, bundle_only


def _highest_first(rids: tuple[str, ...]) -> list[str]:
    """The layers from the highest quality down: by name when the names say it, else as listed."""
    for lowest_first in QUALITY_ORDERS:
        if set(rids) <= set(lowest_first):
            return sorted(rids, key=lowest_first.index, reverse=True)
    return list(rids)
