"""What the core's observers hear as a handle joins and leaves (the event handlers' events and the
metrics' listener calls), and the SDPs the handle keeps for the Admin API."""

from __future__ import annotations

import asyncio
from typing import Any

from fanout.core.handle import Handle
from fanout.events.types import ALL
from fanout.webrtc.peer import DtlsConnected, PeerClosed

from tests.core.harness import Core, EventSink
from tests.core.janus_scenarios import answer_from_offer

KEYS = DtlsConnected("AEAD_AES_128_GCM", b"l" * 28, b"r" * 28, ("192.0.2.9", 5000))


class Recorder:
    """An event handler that takes every type and keeps what it is offered."""

    package = "recorder"
    mask = ALL

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def offer(self, event: dict[str, Any]) -> bool:
        self.events.append(event)
        return True

    def taken(self) -> list[tuple[int, int | None, dict[str, Any]]]:
        """(type, subtype, event) of each event offered since the last call."""
        taken, self.events = self.events, []
        return [(event["type"], event.get("subtype"), event["event"]) for event in taken]


class Listener:
    """The metrics' side: PeerConnections coming up and going."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, int, Any]] = []

    def webrtc_up(self, handle: Handle, join_seconds: float | None) -> None:
        self.heard.append(("up", handle.id, join_seconds))

    def webrtc_hangup(self, handle: Handle, reason: str) -> None:
        self.heard.append(("hangup", handle.id, reason))


async def joined_core() -> tuple[Core, EventSink, Recorder, Listener, Handle, str]:
    """A handle that asked to watch: the core, its client's events, the observers, the offer."""
    core = Core()
    recorder, listener = Recorder(), Listener()
    core.gateway.event_bus.handlers.append(recorder)  # type: ignore[arg-type]
    core.gateway.listeners.append(listener)
    sink = EventSink()
    session_id = await core.session(sink)
    handle = await core.handle(session_id, sink)
    recorder.taken()
    await core.request(sink, janus="message", transaction="w", session_id=session_id, handle_id=handle.id, body={"request": "watch"})
    await asyncio.sleep(0)
    offer = [event for event in sink.drain() if "jsep" in event][-1]["jsep"]["sdp"]
    return core, sink, recorder, listener, handle, offer


async def test_a_join_as_the_observers_hear_it() -> None:
    core, sink, recorder, listener, handle, offer = await joined_core()
    preparing = {"streaming": "event", "result": {"status": "preparing"}}
    assert recorder.taken() == [
        (64, None, {"plugin": "janus.plugin.streaming", "data": preparing}),
        (8, None, {"owner": "local", "jsep": {"type": "offer", "sdp": offer}}),
    ]
    core.clock.advance(2.5)
    answer = answer_from_offer(offer)
    await core.request(
        sink, janus="message", transaction="s", session_id=handle.session.id, handle_id=handle.id,
        body={"request": "start"}, jsep={"type": "ANSWER", "sdp": answer},
    )
    assert recorder.taken()[0] == (8, None, {"owner": "remote", "jsep": {"type": "answer", "sdp": answer}})
    assert handle.peer is not None
    handle.on_peer_event(handle.peer, KEYS)  # (no ICE ran on the fake endpoint, so no selected pair)
    assert [(kind, subtype, event) for kind, subtype, event in recorder.taken() if kind == 16] == [
        (16, 1, {"ice": "connected", "stream_id": 1, "component_id": 1}),
        (16, 5, {"dtls": "connected", "stream_id": 1, "component_id": 1, "retransmissions": 0}),
        (16, 6, {"connection": "webrtcup"}),
    ]
    handle.on_peer_event(handle.peer, PeerClosed("ICE failed"))
    assert (16, 6, {"connection": "hangup", "reason": "ICE failed"}) in recorder.taken()
    assert listener.heard == [("up", handle.id, 2.5), ("hangup", handle.id, "ICE failed")]


async def test_the_join_time_starts_again_after_a_hangup() -> None:
    core, sink, _, listener, handle, _ = await joined_core()
    await core.request(sink, janus="hangup", transaction="h", session_id=handle.session.id, handle_id=handle.id)
    core.clock.advance(10)
    await core.request(sink, janus="message", transaction="w", session_id=handle.session.id, handle_id=handle.id, body={"request": "watch"})
    core.clock.advance(1)
    assert handle.peer is not None
    handle.on_peer_event(handle.peer, KEYS)
    assert listener.heard == [("hangup", handle.id, "Janus API"), ("up", handle.id, 1.0)]


async def test_the_handle_keeps_both_sdps_after_a_hangup() -> None:
    core, sink, _, _, handle, offer = await joined_core()
    assert handle.created == 1000.0  # the gateway's clock when it attached
    answer = answer_from_offer(offer)
    await core.request(
        sink, janus="message", transaction="s", session_id=handle.session.id, handle_id=handle.id,
        body={"request": "start"}, jsep={"type": "answer", "sdp": answer},
    )
    await core.request(sink, janus="hangup", transaction="h", session_id=handle.session.id, handle_id=handle.id)
    assert handle.remote_description is None
    assert handle.local_jsep is not None and handle.remote_jsep is not None
    assert (handle.local_jsep.type, handle.local_jsep.sdp) == ("offer", offer)
    assert [(m.mid, m.kind, m.direction, m.ssrcs) for m in handle.local_jsep.description.media] == [
        ("a", "audio", "sendonly", (1111,)),
        ("v", "video", "sendonly", (2222,)),
    ]
    assert (handle.remote_jsep.type, handle.remote_jsep.sdp) == ("answer", answer)
    assert [m.direction for m in handle.remote_jsep.description.media] == ["recvonly", "recvonly"]


async def test_nothing_is_heard_from_a_handle_once_it_goes() -> None:
    """What a plugin pushes while its handle detaches or its session ends reaches no observer,
    as it reaches no client."""
    core, sink, recorder, listener, handle, _ = await joined_core()
    core.plugin.tell_stopped = True
    recorder.taken()
    await core.request(sink, janus="detach", transaction="d", session_id=handle.session.id, handle_id=handle.id)
    handle.push_event(None, {"late": True})
    assert [kind for kind, _, _ in recorder.taken()] == [2]  # detached
    other = await core.handle(handle.session.id, sink)
    await core.request(sink, janus="message", transaction="w", session_id=other.session.id, handle_id=other.id, body={"request": "watch"})
    recorder.taken()
    await core.request(sink, janus="destroy", transaction="x", session_id=other.session.id)
    other.push_event(None, {"late": True})
    assert [kind for kind, _, _ in recorder.taken()] == [2, 1]  # detached, session destroyed
    assert listener.heard == []
