"""A handle's WebRTC side with the fakes: the offer it renders, the answer and trickled
candidates it gives its peer, the peer's events, RTCP, hangup and ICE restart."""

from __future__ import annotations

import asyncio
from typing import Any

from fanout.admin.handle_info import handle_info
from fanout.config.settings import Settings
from fanout.core.handle import Handle
from fanout.core.plugin import LocalOffer
from fanout.webrtc.peer import AddressChanged, DtlsConnected, RtcpReceived
from fanout.webrtc.rtcp import ReceiverReport

from tests.core.fakes import OFFER, FakeEndpoint, FakeRtcpReport, status
from tests.core.harness import Core, EventSink
from tests.core.janus_scenarios import answer_from_offer

CANDIDATE = "candidate:1 1 udp 2122260223 192.0.2.9 50000 typ host"
OTHER_CANDIDATE = "candidate:2 1 udp 2122260223 192.0.2.9 50002 typ host"
RECEIVER_REPORT = b"\x80\xc9\x00\x01\x00\x00\x00\x01"
KEYS = DtlsConnected("AEAD_AES_128_GCM", b"l" * 28, b"r" * 28, ("192.0.2.9", 50000))


async def offered(core: Core, sink: EventSink | None = None) -> tuple[Handle, str]:
    """A handle the plugin made an offer on; the offer's SDP."""
    sink = sink or EventSink()
    session_id = await core.session(sink)
    handle = await core.handle(session_id, sink)
    await core.request(sink, janus="message", transaction="w", session_id=session_id, handle_id=handle.id, body={"request": "watch"})
    await asyncio.sleep(0)
    offer = [event for event in sink.drain() if "jsep" in event][-1]["jsep"]["sdp"]
    return handle, offer


async def answer(core: Core, handle: Handle, offer: str, **jsep: Any) -> dict[str, Any]:
    return await core.request(
        janus="message",
        transaction="s",
        session_id=handle.session.id,
        handle_id=handle.id,
        body={"request": "start"},
        jsep={"type": "answer", "sdp": answer_from_offer(offer), **jsep},
    )


async def trickle(core: Core, handle: Handle, **fields: Any) -> dict[str, Any]:
    return await core.request(janus="trickle", transaction="t", session_id=handle.session.id, handle_id=handle.id, **fields)


async def test_offer_carries_the_transport() -> None:
    core = Core()
    handle, offer = await offered(core)
    assert handle.peer is not None and handle.offer_pending
    assert core.endpoint.peers.keys() == {handle.peer}
    description = offer.replace("\r\n", "\n")
    assert f"a=ice-ufrag:{handle.peer.local_ufrag}\n" in description
    assert f"a=ice-pwd:{handle.peer.local_pwd}\n" in description
    assert f"a=fingerprint:sha-256 {core.endpoint.certificate.fingerprint()}\n" in description
    assert "a=setup:actpass\n" in description
    assert "192.0.2.2 10000 typ host" in description
    assert [line for line in description.split("\n") if line.startswith("m=")] == [
        "m=audio 10000 UDP/TLS/RTP/SAVPF 111",
        "m=video 10000 UDP/TLS/RTP/SAVPF 96",
    ]


def origin(offer: str) -> tuple[int, int]:
    """The o= line's session id and version."""
    fields = next(line for line in offer.split("\r\n") if line.startswith("o=")).split()
    return int(fields[1]), int(fields[2])


async def test_the_peer_expires_consent_at_the_endpoints_consent_timeout() -> None:
    core = Core(endpoint=FakeEndpoint(consent_timeout=7.5))
    handle, _ = await offered(core)
    assert handle.peer is not None and handle.peer.consent_timeout == 7.5


async def test_offer_again_keeps_the_peer() -> None:
    core = Core()
    sink = EventSink()
    handle, first = await offered(core, sink)
    peer = handle.peer
    handle.push_event(None, status("again"), OFFER)
    assert handle.peer is peer
    await asyncio.sleep(0)
    (again,) = (event["jsep"]["sdp"] for event in sink.drain())
    assert origin(again) == (origin(first)[0], 2)  # the version counts offers
    assert core.endpoint.removed == []


async def test_ice_restart_keeps_the_peer_with_new_credentials() -> None:
    core = Core()
    sink = EventSink()
    handle, first = await offered(core, sink)
    peer = handle.peer
    assert peer is not None
    ufrag = peer.local_ufrag
    handle.push_event(None, status("restart"), LocalOffer(OFFER.media, ice_restart=True))
    assert handle.peer is peer and peer.local_ufrag != ufrag
    assert core.endpoint.restarted == [peer] and core.endpoint.removed == []
    await asyncio.sleep(0)
    (restart,) = (event["jsep"]["sdp"] for event in sink.drain())
    assert f"a=ice-ufrag:{peer.local_ufrag}" in restart
    assert origin(restart) == (origin(first)[0], 2)


async def test_answer_goes_to_the_peer_and_the_plugin() -> None:
    core = Core()
    handle, offer = await offered(core)
    reply = await answer(core, handle, offer, trickle=False)
    assert reply["janus"] == "ack"
    assert handle.remote_description is not None and not handle.offer_pending
    assert handle.peer is not None and handle.peer.remote_description is handle.remote_description
    jsep = core.plugin.messages[-1][3]
    assert jsep is not None and (jsep.type, jsep.trickle) == ("answer", False)
    assert jsep.description is handle.remote_description


async def test_early_candidates_wait_for_the_answer() -> None:
    core = Core()
    handle, offer = await offered(core)
    early: list[dict[str, Any]] = [
        {"candidate": {"candidate": CANDIDATE, "sdpMid": "a"}},
        {"candidate": {}},  # refused once the answer is there: dropped quietly
        {"candidates": [{"candidate": OTHER_CANDIDATE, "sdpMLineIndex": 1}, {"completed": True}]},
    ]
    for fields in early:
        assert (await trickle(core, handle, **fields))["janus"] == "ack"
    assert handle.peer is not None and handle.peer.remote_candidates == []
    await answer(core, handle, offer)
    assert [str(candidate) for candidate in handle.peer.remote_candidates] == [CANDIDATE, OTHER_CANDIDATE]
    assert handle.peer.remote_end_of_candidates


async def test_early_candidates_older_than_candidates_timeout_are_dropped() -> None:
    """Janus's ``candidates_timeout``: a trickled candidate that waited that long for its SDP is
    dropped when the SDP comes; handle_info counts every waiting one (``pending-trickles``)
    until then, as Janus's does (tests/admin/test_candidates_timeout.py compares with Janus)."""
    core = Core(settings=Settings(candidates_timeout=2))
    sink = EventSink()
    handle = await core.handle(await core.session(sink), sink)
    handle.clock = core.clock  # the candidates wait on the fake clock
    await trickle(core, handle, candidate={"candidate": CANDIDATE, "sdpMid": "a"})
    core.clock.advance(2)
    await trickle(core, handle, candidate={"candidate": OTHER_CANDIDATE, "sdpMid": "a"})
    assert handle_info(core.gateway, handle)["pending-trickles"] == 2
    await core.request(sink, janus="message", transaction="w", session_id=handle.session.id, handle_id=handle.id, body={"request": "watch"})
    await asyncio.sleep(0)
    offer = [event for event in sink.drain() if "jsep" in event][-1]["jsep"]["sdp"]
    core.clock.advance(1.9)
    await answer(core, handle, offer)
    assert handle.peer is not None
    assert [str(candidate) for candidate in handle.peer.remote_candidates] == [OTHER_CANDIDATE]
    assert "pending-trickles" not in handle_info(core.gateway, handle)


async def test_handle_info_follows_the_peer() -> None:
    """``agent-created`` (after the flags, as in Janus) and the ``ice-restart`` flag: from the
    restarting offer to its answer."""
    core = Core()
    handle, offer = await offered(core)
    info = handle_info(core.gateway, handle)
    assert handle.peer is not None and info["agent-created"] == int(handle.peer.created * 1_000_000)
    assert list(info)[list(info).index("flags") + 1] == "agent-created"
    assert info["flags"]["ice-restart"] is False
    await answer(core, handle, offer)
    handle.push_event(None, status("restart"), LocalOffer(OFFER.media, ice_restart=True))
    assert handle_info(core.gateway, handle)["flags"]["ice-restart"] is True
    await answer(core, handle, offer)
    info = handle_info(core.gateway, handle)
    assert info["flags"]["ice-restart"] is False
    assert (info["webrtc"]["dtls"]["retransmissions"], info["webrtc"]["dtls"]["sctp-association"]) == (0, False)


async def test_an_answer_with_data_channels_sets_the_flag() -> None:
    core = Core()
    handle, offer = await offered(core)
    application = "\r\n".join(
        ["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 0.0.0.0", "a=mid:d", "a=sctp-port:5000", ""]
    )
    await answer(core, handle, offer.replace("a=group:BUNDLE a v", "a=group:BUNDLE a v d") + application)
    assert handle.remote_description is not None and handle.remote_description.media[-1].kind == "application"
    assert handle_info(core.gateway, handle)["flags"]["data-channels"] is True


async def test_candidates_after_the_answer() -> None:
    core = Core()
    handle, offer = await offered(core)
    await answer(core, handle, offer)
    peer = handle.peer
    assert peer is not None
    await trickle(core, handle, candidate={"candidate": CANDIDATE, "sdpMid": "a"})
    await trickle(core, handle, candidate={"candidate": "garbage", "sdpMid": "a"})  # acked, unusable
    await trickle(core, handle, candidates=[5, {"candidate": OTHER_CANDIDATE, "sdpMid": "v"}, {}])
    assert [str(candidate) for candidate in peer.remote_candidates] == [CANDIDATE, OTHER_CANDIDATE]
    assert not peer.remote_end_of_candidates
    await trickle(core, handle, candidate={"completed": False})
    assert not peer.remote_end_of_candidates
    await trickle(core, handle, candidate={"candidate": "", "sdpMid": "a"})
    assert peer.remote_end_of_candidates


async def test_webrtc_up_adds_the_engine_peer_before_the_plugin_sets_up_media() -> None:
    core = Core()
    sink = EventSink()
    handle, offer = await offered(core, sink)
    await answer(core, handle, offer)
    assert handle.peer is not None
    handle.on_peer_event(handle.peer, KEYS)
    assert handle.media_keys is not None and handle.media_keys.address == ("192.0.2.9", 50000)
    assert core.engine.peers == {handle.id: KEYS.srtp_profile}
    assert ("setup_media", handle.id) in core.plugin.calls
    handle.on_peer_event(handle.peer, AddressChanged(("192.0.2.9", 50002)))
    assert handle.media_keys.address == ("192.0.2.9", 50002)
    assert core.engine.addresses == [(handle.id, ("192.0.2.9", 50000)), (handle.id, ("192.0.2.9", 50002))]
    await asyncio.sleep(0)
    assert [event["janus"] for event in sink.drain()] == ["event", "webrtcup", "event"]  # starting, up, started
    handle.on_peer_event(handle.peer, KEYS)  # DTLS up again on the same PeerConnection: the same engine peer
    assert core.engine.peers == {handle.id: KEYS.srtp_profile} and len(core.engine.addresses) == 2
    handle.hangup("test", notify=False)
    assert core.engine.peers == {} and core.engine.removed_peers == [handle.id]


async def test_rtcp_reaches_the_plugin() -> None:
    core = Core()
    handle, offer = await offered(core)
    await answer(core, handle, offer)
    assert handle.peer is not None
    handle.on_peer_event(handle.peer, RtcpReceived(RECEIVER_REPORT))  # not a viewer of the engine yet
    core.engine.peers[handle.id] = "AEAD_AES_128_GCM"
    core.engine.bad_rtcp.add(b"bad")
    handle.on_peer_event(handle.peer, RtcpReceived(b"bad"))
    handle.on_peer_event(handle.peer, RtcpReceived(b"\x80\xc9\x00"))  # not RTCP once unprotected
    handle.on_peer_event(handle.peer, RtcpReceived(RECEIVER_REPORT))
    assert handle.rtcp_dropped == 3
    assert core.plugin.rtcp == [(handle.id, FakeRtcpReport([ReceiverReport(ssrc=1, reports=[], extension=b"")]))]  # type: ignore[comparison-overlap]


async def test_hangup_frees_the_transport() -> None:
    core = Core()
    sink = EventSink()
    handle, offer = await offered(core, sink)
    await answer(core, handle, offer)
    peer = handle.peer
    await core.request(sink, janus="hangup", transaction="h", session_id=handle.session.id, handle_id=handle.id)
    await core.request(sink, janus="hangup", transaction="h2", session_id=handle.session.id, handle_id=handle.id)
    await asyncio.sleep(0)
    assert [event["janus"] for event in sink.drain()] == ["event", "hangup"]
    assert handle.peer is None and handle.remote_description is None
    assert core.endpoint.removed == [peer]
    assert [call for call, _ in core.plugin.calls].count("hangup_media") == 1
    reply = await answer(core, handle, offer)
    assert reply["error"] == {"code": 469, "reason": "Unexpected ANSWER (did we offer?)"}


async def test_nothing_after_detach() -> None:
    core = Core()
    sink = EventSink()
    handle, _ = await offered(core, sink)
    await core.request(sink, janus="detach", transaction="d", session_id=handle.session.id, handle_id=handle.id)
    handle.push_event(None, status("late"))
    handle.close_pc()
    await asyncio.sleep(0)
    assert [event["janus"] for event in sink.drain()] == ["detached"]
    assert core.endpoint.peers == {}


async def test_changed_fingerprint_is_refused() -> None:
    """A second answer may not change the DTLS fingerprint (Janus takes a second answer alike)."""
    core = Core()
    handle, offer = await offered(core)
    assert (await answer(core, handle, offer))["janus"] == "ack"
    first = answer_from_offer(offer)
    fingerprint = next(line for line in first.split("\r\n") if line.startswith("a=fingerprint:"))
    other = first.replace(fingerprint, "a=fingerprint:sha-256 " + ":".join(["AB"] * 32))
    reply = await core.request(
        janus="message", transaction="s2", session_id=handle.session.id, handle_id=handle.id,
        body={"request": "start"}, jsep={"type": "answer", "sdp": other},
    )
    assert reply["error"] == {"code": 465, "reason": "Error processing SDP"}
