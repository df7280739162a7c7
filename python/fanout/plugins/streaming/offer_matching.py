"""Matching a client's SDP offer to a mountpoint's streams (``watch`` with a JSEP offer,
as WHEP players do): each offered m-line that can receive gets the first unused
stream of its kind whose codec it offers, on the client's payload type. With
``playoutdelay_ext``, a video m-line that offers the playout-delay extension with a
one-byte-header id (1-14) gets it in the answer."""

from __future__ import annotations

from fanout.plugins.streaming.config import StreamConfig
from fanout.plugins.streaming.viewer import ONE_BYTE_EXTENSION_IDS, ViewerTrack
from fanout.webrtc.sdp import PLAYOUT_DELAY_URI, Codec, SessionDescription, MediaDescription

RECEIVING_DIRECTIONS = ("recvonly", "sendrecv")
SUPPORTED_FEEDBACK = ("nack", "nack pli", "ccm fir")


def match_offer(
    offer: SessionDescription, streams: tuple[StreamConfig, ...], *, playoutdelay_ext: bool = False
) -> list[ViewerTrack | None]:
    """For each m-line of ``offer``, in order, the track sent on it, or None if it is rejected."""
    unused = list(streams)
    tracks: list[ViewerTrack | None] = []
    for media in offer.media:
        track = _track_for(media, unused, playoutdelay_ext)
        if track is not None:
            unused.remove(track.stream)
        tracks.append(track)
    return tracks


def data_mline(offer: SessionDescription) -> int | None:
    """The index of the offer's first usable m=application (data channels), if any."""
    return next(
        (
            index
            for index, media in enumerate(offer.media)
            if media.kind == "application" and media.port != 0 and media.mid is not None
        ),
        None,
    )


def _track_for(media: MediaDescription, streams: list[StreamConfig], playoutdelay_ext: bool) -> ViewerTrack | None:
    if media.port == 0 or media.mid is None or media.direction not in RECEIVING_DIRECTIONS:
        return None
    for stream in streams:
        if stream.kind != media.kind:
            continue
        codec = _offered_codec(media, stream)
        if codec is not None:
            feedback = tuple(fb for fb in codec.rtcp_feedback if fb in SUPPORTED_FEEDBACK)
            extension_id = media.header_extension_id(PLAYOUT_DELAY_URI)
            takes_delay = playoutdelay_ext and media.kind == "video" and extension_id in ONE_BYTE_EXTENSION_IDS
            return ViewerTrack(
                stream,
                mid=media.mid,
                payload_type=codec.payload_type,
                rtcp_feedback=feedback,
                playout_delay_extension_id=extension_id if takes_delay else None,
            )
    return None


def _offered_codec(media: MediaDescription, stream: StreamConfig) -> Codec | None:
    """The client's payload type for the stream's codec; for H.264, one with the stream's
    packetization mode and profile if offered, else any H.264 in packetization mode 1."""
    candidates = [
        codec
        for codec in media.codecs
        if codec.name.lower() == stream.codec.rtpmap_name.lower() and codec.clock_rate == stream.codec.clock_rate
    ]
    if stream.codec.name != "h264":
        return candidates[0] if candidates else None
    wanted = _fmtp_parameters(stream.fmtp)
    mode_1 = [codec for codec in candidates if _fmtp_parameters(codec.fmtp).get("packetization-mode") == "1"]
    same_profile = [
        codec
        for codec in mode_1
        if _fmtp_parameters(codec.fmtp).get("profile-level-id", "")[:4].lower()
        == wanted.get("profile-level-id", "42e0")[:4].lower()
    ]
    preferred = same_profile or mode_1
    return preferred[0] if preferred else None


def _fmtp_parameters(fmtp: str | None) -> dict[str, str]:
    parameters = {}
    for part in (fmtp or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            parameters[name.lower()] = value.strip()
    return parameters
