"""The viewer's SDP answer to a Streaming offer: recvonly, BUNDLE, rtcp-mux, setup:active
(and, if asked and offered, transport-wide congestion control)."""

from __future__ import annotations

import secrets

from fanout.webrtc.sdp import TRANSPORT_CC_URI, SessionDescription
from fanout_bench.load.ice import HOST_PRIORITY


def build_answer(
    offer: SessionDescription,
    *,
    ice_ufrag: str,
    ice_pwd: str,
    fingerprint: str,
    host: str,
    port: int,
    transport: str = "udp",
    transport_cc: bool = False,
) -> str:
    """Accept every audio and video m-line with its first codec; reject the rest (port 0).
    ``transport`` "tcp": the viewer's candidate is an active TCP one (RFC 6544, port 9).
    ``transport_cc``: keep the transport-wide sequence extension and ``transport-cc``
    feedback on each m-line that offers them (as Chromium does); else leave them out."""
    family = "IP6" if ":" in host else "IP4"
    candidate = (
        f"a=candidate:1 1 tcp {HOST_PRIORITY} {host} 9 typ host tcptype active"
        if transport == "tcp"
        else f"a=candidate:1 1 udp {HOST_PRIORITY} {host} {port} typ host"
    )
    accepted = [m for m in offer.media if m.kind in ("audio", "video") and m.codecs and m.port != 0]
    lines = [
        "v=0",
        f"o=- {secrets.randbits(62)} 2 IN {family} {host}",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE " + " ".join(m.mid or "" for m in accepted),
        "a=msid-semantic: WMS",
    ]
    for media in offer.media:
        if media not in accepted:
            lines += [
                f"m={media.kind} 0 UDP/TLS/RTP/SAVPF 0",
                f"c=IN {family} {host}",
                "a=inactive",
            ]
            if media.mid is not None:
                lines.append(f"a=mid:{media.mid}")
            continue
        codec = media.codecs[0]
        lines += [
            f"m={media.kind} {port} UDP/TLS/RTP/SAVPF {codec.payload_type}",
            f"c=IN {family} {host}",
            f"a=ice-ufrag:{ice_ufrag}",
            f"a=ice-pwd:{ice_pwd}",
            f"a=fingerprint:sha-256 {fingerprint}",
            "a=setup:active",
            f"a=mid:{media.mid}",
            "a=recvonly",
            "a=rtcp-mux",
        ]
        rtpmap = f"a=rtpmap:{codec.payload_type} {codec.name}/{codec.clock_rate}"
        if codec.channels is not None:
            rtpmap += f"/{codec.channels}"
        lines.append(rtpmap)
        if codec.fmtp:
            lines.append(f"a=fmtp:{codec.payload_type} {codec.fmtp}")
        extension_id = media.header_extension_id(TRANSPORT_CC_URI)
        if transport_cc and extension_id is not None:
            lines.append(f"a=extmap:{extension_id} {TRANSPORT_CC_URI}")
            if "transport-cc" in codec.rtcp_feedback:
                lines.append(f"a=rtcp-fb:{codec.payload_type} transport-cc")
        lines += [
            candidate,
            "a=end-of-candidates",
        ]
    return "\r\n".join(lines) + "\r\n"
