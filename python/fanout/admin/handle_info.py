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
    info["created"] = _usec(gateway.handle_created.get(handle.id, now))
    info["current_time"] = _usec(now)
    info["plugin"] = handle.plugin.package
    try:
        info["plugin_specific"] = handle.plugin.query_session(handle)
    except Exception as error:  # a plugin's bug must not break the Admin API
        info["plugin_specific"] = {"error": str(error)}
    peer = handle.peer
    remote = handle.remote_description
    sdps = gateway.sdps.get(handle.id, {})
    connected = peer is not None and peer.dtls_state == "connected"
    info["flags"] = {
        "got-offer": "local" in sdps,
        "got-answer": remote is not None,
        "negotiated": remote is not None and not handle.offer_pending,
        "processing-offer": handle.offer_pending,
        "starting": peer is not None and not connected,
        "ice-restart": False,
        "ready": connected,
        "stopped": peer is None and "local" in sdps,
        "alert": False,
        "trickle": True,
        "all-trickles": peer is not None and peer.remote_end_of_candidates,
        "resend-trickles": False,
        "trickle-synced": False,
        "data-channels": False,
        "has-audio": remote is not None and any(m.kind == "audio" and m.port for m in remote.media),
        "has-video": remote is not None and any(m.kind == "video" and m.port for m in remote.media),
        "new-datachan-sdp": False,
        "rfc4588-rtx": False,
        "cleaning": False,
        "e2ee": False,
    }
    if peer is not None:
        info["ice-mode"] = "lite"
        info["ice-role"] = "controlled"
    info["sdps"] = {key: sdps[key] for key in ("local", "remote") if key in sdps}
    if sdps:
        info["sdps"] = {"profile": "UDP/TLS/RTP/SAVPF", **info["sdps"]}
    info["queued-packets"] = 0
    if peer is not None:
        info["webrtc"] = _webrtc(gateway, handle, (bytes_lastsec or {}).get(handle.id, 0))
    return info


def _webrtc(gateway: Gateway, handle: Handle, bytes_lastsec: int) -> dict[str, Any]:
    from fanout.core.gateway import selected_pair

    peer = handle.peer
    assert peer is not None
    endpoint = gateway.endpoint
    ice: dict[str, Any] = {
        "stream_id": 1,
        "component_id": 1,
        "state": peer.ice_state,
        "local-candidates": [str(candidate) for candidate in endpoint.candidates()],
        "remote-candidates": [str(candidate) for candidate in peer.remote_candidates],
    }
    if peer.address is not None:
        ice["selected-pair"] = selected_pair(endpoint, peer.address)
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
            "retransmissions": 0,
            "valid": peer.dtls_state == "connected",
            "srtp-profile": SRTP_PROFILE_NAMES.get(peer.srtp_profile or "", "none"),
            "ready": peer.dtls_state == "connected",
            "sctp-association": False,
        }
    )
    engine_stats = _peer_stats(gateway, handle)
    plugin_specific = _safe_query(handle)
    rtcp_in = plugin_specific.get("rtcp_received", {}) if isinstance(plugin_specific, dict) else {}
    reception = plugin_specific.get("reception", {}) if isinstance(plugin_specific, dict) else {}
    media: dict[str, Any] = {}
    accepted = {m.mid: bool(m.port) for m in handle.remote_description.media} if handle.remote_description else {}
    for index, (kind, mid, ssrc) in enumerate(local_media(gateway.sdps.get(handle.id, {}).get("local", ""))):
        mid = mid if mid is not None else str(index)
        entry: dict[str, Any] = {"type": kind, "mindex": index, "mid": mid, "do_nacks": kind == "video"}
        if ssrc is not None:
            entry["ssrc"] = {"ssrc": ssrc}
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
    }
    stats_in = {"packets": 0, "bytes": 0, "nacks": rtcp_in.get("nack", 0), "plis": rtcp_in.get("pli", 0), "receiver_reports": rtcp_in.get("rr", 0)}
    return {
        "ice": ice,
        "dtls": dtls,
        "media": media,
        # the engine counts per viewer (all its media together): fanout's totals beside Janus's per-media blocks
        "stats": {"in": stats_in, "out": out},
    }


def _reception(report: Any) -> dict[str, Any]:
    """Janus's per-media RTCP figures from the viewer's latest receiver report about it."""
    if not isinstance(report, dict):
        return {}
    figures = {"lost-by-remote": report.get("lost", 0), "jitter-remote": report.get("jitter_ms", 0)}
    if report.get("rtt_ms") is not None:
        figures["rtt"] = round(report["rtt_ms"])
    return figures


def local_media(sdp: str) -> list[tuple[str, str | None, int | None]]:
    """(kind, mid, ssrc) of each m-line of our SDP."""
    found: list[list[Any]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            found.append([line[2:].split(" ", 1)[0], None, None])
        elif found and line.startswith("a=mid:"):
            found[-1][1] = line[6:].strip()
        elif found and line.startswith("a=ssrc:") and found[-1][2] is None:
            number = line[7:].split(" ", 1)[0]
            found[-1][2] = int(number) if number.isdigit() else None
    return [(kind, mid, ssrc) for kind, mid, ssrc in found]


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
