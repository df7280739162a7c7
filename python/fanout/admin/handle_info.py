"""``handle_info``: what the Admin API tells about one handle, in Janus's layout.

Session and handle facts, the plugin's own view (``plugin_specific``), Janus's
flags, the last local and remote SDP, and for a handle with a PeerConnection
the ``webrtc`` block: ICE (state, candidates, selected pair), DTLS (role,
state, fingerprints, SRTP profile) and, per media, direction and the
engine's counters (``stats.out``) and the viewer's RTCP (``stats.in``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fanout.core.session import transport_of

if TYPE_CHECKING:
    from fanout._engine import PeerStats
    from fanout.core.gateway import Gateway
    from fanout.core.handle import Handle

# Janus writes the SRTP profile with OpenSSL's names
SRTP_PROFILE_NAMES = {"AEAD_AES_128_GCM": "SRTP_AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80": "SRTP_AES128_CM_SHA1_80"}
CLOCK_RATES = {"audio": 48000, "video": 90000}


def _usec(seconds: float) -> int:
    return int(seconds * 1_000_000)


def handle_info(gateway: Gateway, handle: Handle, bytes_lastsec: dict[int, int] | None = None) -> dict[str, Any]:
    session = handle.session
    now = gateway.clock()
    info: dict[str, Any] = {
        "session_id": session.id,
        "session_last_activity": _usec(session.last_activity),
        "session_timeout": gateway.settings.session_timeout,
        "session_transport": transport_of(session.connection) or "",
        "handle_id": handle.id,
    }
    if handle.opaque_id is not None:
        info["opaque_id"] = handle.opaque_id
    if session.token is not None:
        info["token"] = session.token
    info["loop-running"] = True
    info["created"] = _usec(handle.created)
    info["current_time"] = _usec(now)
    info["plugin"] = handle.plugin.package
    try:
        info["plugin_specific"] = handle.plugin.query_session(handle)
    except Exception as error:  # a plugin's bug must not break the Admin API
        info["plugin_specific"] = {"error": str(error)}
    peer = handle.peer
    remote = handle.remote_description
    sent = handle.local_jsep
    connected = peer is not None and peer.dtls_state == "connected"
    info["flags"] = {
        "got-offer": sent is not None,
        "got-answer": remote is not None,
        "negotiated": remote is not None and not handle.offer_pending,
        "processing-offer": handle.offer_pending,
        "starting": peer is not None and not connected,
        "ice-restart": peer is not None and peer.ice_restarting,
        "ready": connected,
        "stopped": peer is None and sent is not None,
        "alert": False,
        "trickle": True,
        "all-trickles": peer is not None and peer.remote_end_of_candidates,
        "resend-trickles": False,
        "trickle-synced": False,
        "data-channels": remote is not None and any(m.kind == "application" and m.port for m in remote.media),
        "has-audio": remote is not None and any(m.kind == "audio" and m.port for m in remote.media),
        "has-video": remote is not None and any(m.kind == "video" and m.port for m in remote.media),
        "new-datachan-sdp": False,
        "rfc4588-rtx": False,
        "cleaning": False,
        "e2ee": False,
    }
    if peer is not None:
        info["agent-created"] = _usec(peer.created)
        info["ice-mode"] = "lite"
        info["ice-role"] = "controlled"
    sdps = {owner: jsep.sdp for owner, jsep in (("local", sent), ("remote", handle.remote_jsep)) if jsep is not None}
    info["sdps"] = {"profile": "UDP/TLS/RTP/SAVPF", **sdps} if sdps else {}
    if handle.pending_trickles:
        info["pending-trickles"] = handle.pending_trickles
    info["queued-packets"] = 0
    if peer is not None:
        info["webrtc"] = _webrtc(gateway, handle, (bytes_lastsec or {}).get(handle.id, 0))
    return info


def _webrtc(gateway: Gateway, handle: Handle, bytes_lastsec: int) -> dict[str, Any]:
    from fanout.core.gateway import address_family, selected_pair

    peer = handle.peer
    assert peer is not None
    endpoint = gateway.endpoint
    ice: dict[str, Any] = {
        "stream_id": 1,
        "component_id": 1,
        "state": peer.ice_state,
        "local-candidates": [_janus_candidate(candidate) for candidate in endpoint.candidates()],
    }
    if peer.remote_candidates:  # as Janus: only when there are some
        ice["remote-candidates"] = [_janus_candidate(candidate) for candidate in peer.remote_candidates]
    if peer.address is not None:
        transport = endpoint.transport_of(peer.address)
        remote_type = next(
            (c.type for c in peer.remote_candidates if (c.ip, c.port) == peer.address and c.transport.lower() == transport),
            "prflx",
        )  # a TURN relay's address the viewer trickled shows as "relay"
        ice["selected-pair"] = selected_pair(endpoint, peer.address, remote_type)
        ice["selected-transport"] = transport  # fanout's: the viewer's transport ("udp", "tcp") and address family
        ice["selected-family"] = address_family(peer.address[0])
    ice["ready"] = 1 if peer.address is not None else -1
    remote = peer.remote_description
    setup = remote.setup if remote is not None else None
    dtls: dict[str, Any] = {"fingerprint": endpoint.certificate.fingerprint()}
    if remote is not None and remote.fingerprints:
        dtls["remote-fingerprint"] = remote.fingerprints[0][1]
        dtls["remote-fingerprint-hash"] = remote.fingerprints[0][0]
    dtls.update(
        {
            "dtls-role": {"active": "passive", "actpass": "passive", "passive": "active"}.get(setup or "", "actpass"),
            "dtls-state": peer.dtls_state,
            "retransmissions": peer.dtls_retransmissions,
            "valid": peer.dtls_state == "connected",
            "srtp-profile": SRTP_PROFILE_NAMES.get(peer.srtp_profile or "", "none"),
            "ready": peer.dtls_state == "connected",
            "sctp-association": peer.sctp_established,
        }
    )
    engine_stats = _peer_stats(gateway, handle)
    plugin_specific = _safe_query(handle)
    rtcp_in = plugin_specific.get("rtcp_received", {}) if isinstance(plugin_specific, dict) else {}
    reception = plugin_specific.get("reception", {}) if isinstance(plugin_specific, dict) else {}
    media: dict[str, Any] = {}
    accepted = {m.mid: bool(m.port) for m in handle.remote_description.media} if handle.remote_description else {}
    local_media = handle.local_jsep.description.media if handle.local_jsep is not None else []
    for index, described in enumerate(local_media):
        kind = described.kind
        mid = described.mid if described.mid is not None else str(index)
        entry: dict[str, Any] = {"type": kind, "mindex": index, "mid": mid, "do_nacks": kind == "video"}
        if described.ssrcs:
            entry["ssrc"] = {"ssrc": described.ssrcs[0]}
        entry["direction"] = {"send": accepted.get(mid, True), "recv": False}
        entry["rtcp"] = {"main": {"base": CLOCK_RATES.get(kind, 90000)} | _reception(reception.get(mid))}
        media[mid] = entry
    out: dict[str, Any] = {
        "packets": engine_stats.packets if engine_stats is not None else 0,
        "bytes": engine_stats.bytes if engine_stats is not None else 0,
        "bytes_lastsec": bytes_lastsec,
        "nacks": 0,
        "retransmissions": engine_stats.retransmissions if engine_stats is not None else 0,
        "dropped": engine_stats.dropped if engine_stats is not None else 0,
        "dropped_late": engine_stats.dropped_late if engine_stats is not None else 0,
    }
    stats_in = {"packets": 0, "bytes": 0, "nacks": rtcp_in.get("nack", 0), "plis": rtcp_in.get("pli", 0), "receiver_reports": rtcp_in.get("rr", 0)}
    return {
        "ice": ice,
        "dtls": dtls,
        "media": media,
        # the engine counts per viewer (all its media together): fanout's totals beside Janus's per-media blocks
        "stats": {"in": stats_in, "out": out},
    }


def _janus_candidate(candidate: object) -> str:
    """A candidate as Janus lists it: its SDP attribute's value without ``candidate:``."""
    return str(candidate).removeprefix("candidate:")


def _reception(report: Any) -> dict[str, Any]:
    """Janus's per-media RTCP figures from the viewer's latest receiver report about it."""
    if not isinstance(report, dict):
        return {}
    figures = {"lost-by-remote": report.get("lost", 0), "jitter-remote": report.get("jitter_ms", 0)}
    if report.get("rtt_ms") is not None:
        figures["rtt"] = round(report["rtt_ms"])
    return figures


def _peer_stats(gateway: Gateway, handle: Handle) -> PeerStats | None:
    try:
        return gateway.engine.peer_stats(handle.id)
    except (KeyError, RuntimeError):
        return None


def _safe_query(handle: Handle) -> Any:
    try:
        return handle.plugin.query_session(handle)
    except Exception:
        return {}


def now_usec() -> int:
    return _usec(time.monotonic())
