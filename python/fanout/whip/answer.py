"""fanout's SDP answer to a WHIP publisher, and the fragment that answers an ICE restart (sans-IO).

The answer is ICE-lite with every one of fanout's host candidates and
``a=end-of-candidates`` (OBS does not trickle), DTLS ``passive`` (the publisher
offers ``actpass``), one BUNDLE group, and per accepted m-line ``recvonly`` on the
publisher's payload type: no RTX, the feedback the engine gives (NACK, PLI, FIR,
REMB), the mid and rid header extensions (the engine routes by them), and every rid
layer offered as ``a=rid:<id> recv`` with ``a=simulcast:recv``. Rejected m-lines get
port 0.
"""

from __future__ import annotations

from fanout.webrtc.sdp import TransportDescription, rejected_media_lines, session_lines
from fanout.whip.offer import AcceptedMedia, PublisherOffer


def build_answer(offer: PublisherOffer, transport: TransportDescription, *, session_id: int, session_version: int) -> str:
    lines = session_lines([item.mid for item in offer.accepted], transport, session_id, session_version)
    for offered, item in zip(offer.offered, offer.media, strict=True):
        lines += _accepted_lines(item, transport) if item is not None else rejected_media_lines(offered)
    return "\r\n".join(lines) + "\r\n"


def ice_restart_fragment(offer: PublisherOffer, transport: TransportDescription) -> str:
    """The ``application/trickle-ice-sdpfrag`` body of a 200 to an ICE restart (RFC 9725
    section 4.3.2): fanout's new credentials and its candidates, on the first m-line."""
    lines = []
    if transport.ice_lite:
        lines.append("a=ice-lite")
    lines += [f"a=ice-ufrag:{transport.ice_ufrag}", f"a=ice-pwd:{transport.ice_pwd}"]
    first = offer.accepted[0]
    lines.append(f"a=group:BUNDLE {' '.join(item.mid for item in offer.accepted)}")
    lines += [f"m={first.kind} 9 UDP/TLS/RTP/SAVPF {first.codec.payload_type}", f"a=mid:{first.mid}"]
    lines += [f"a={candidate}" for candidate in transport.candidates]
    lines.append("a=end-of-candidates")
    return "\r\n".join(lines) + "\r\n"


def _accepted_lines(item: AcceptedMedia, transport: TransportDescription) -> list[str]:
    first = transport.candidates[0] if transport.candidates else None
    port = first.port if first is not None else 9
    address = first.ip if first is not None else "0.0.0.0"
    family = "IP6" if ":" in address else "IP4"
    codec = item.codec
    lines = [
        f"m={item.kind} {port} UDP/TLS/RTP/SAVPF {codec.payload_type}",
        f"c=IN {family} {address}",
        f"a=ice-ufrag:{transport.ice_ufrag}",
        f"a=ice-pwd:{transport.ice_pwd}",
        f"a=fingerprint:{transport.fingerprint[0]} {transport.fingerprint[1]}",
        f"a=setup:{transport.setup}",
        f"a=mid:{item.mid}",
        "a=recvonly",
        "a=rtcp-mux",
    ]
    lines += [f"a=extmap:{number} {uri}" for number, uri in item.header_extensions]
    rtpmap = f"a=rtpmap:{codec.payload_type} {codec.name}/{codec.clock_rate}"
    if codec.channels is not None:
        rtpmap += f"/{codec.channels}"
    lines.append(rtpmap)
    lines += [f"a=rtcp-fb:{codec.payload_type} {feedback}" for feedback in codec.rtcp_feedback]
    if codec.fmtp:
        lines.append(f"a=fmtp:{codec.payload_type} {codec.fmtp}")
    if item.rids:
        lines += [f"a=rid:{rid} recv" for rid in item.rids]
        lines.append(f"a=simulcast:recv {';'.join(item.rids)}")
    lines += [f"a={candidate}" for candidate in transport.candidates]
    lines.append("a=end-of-candidates")
    return lines

