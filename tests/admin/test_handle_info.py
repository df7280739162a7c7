"""``handle_info`` on the core's fakes: the media it lists come from the handle's own offer, read
through the SDP model, and the SDPs stay after a hangup as Janus shows them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fanout.admin.handle_info import handle_info

from tests.core.harness import Core, EventSink
from tests.core.janus_scenarios import answer_from_offer


class EngineWithoutPeers:
    """An engine that serves no peer yet: whatever handle_info asks it about one is unknown."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def unknown(*args: Any) -> Any:
            raise KeyError(args)

        return unknown


async def test_media_from_the_offer_and_sdps_kept_after_hangup() -> None:
    core = Core()
    core.gateway.engine = EngineWithoutPeers()  # type: ignore[assignment]
    sink = EventSink()
    session_id = await core.session(sink)
    core.clock.advance(3)
    handle = await core.handle(session_id, sink)
    await core.request(sink, janus="message", transaction="w", session_id=session_id, handle_id=handle.id, body={"request": "watch"})
    await asyncio.sleep(0)
    offer = [event for event in sink.drain() if "jsep" in event][-1]["jsep"]["sdp"]
    answer = answer_from_offer(offer)
    await core.request(
        sink, janus="message", transaction="s", session_id=session_id, handle_id=handle.id,
        body={"request": "start"}, jsep={"type": "answer", "sdp": answer},
    )

    info = handle_info(core.gateway, handle)
    assert info["created"] == 1_003_000_000
    assert (info["flags"]["got-offer"], info["flags"]["got-answer"], info["flags"]["stopped"]) == (True, True, False)
    media = info["webrtc"]["media"]
    assert [(mid, entry["type"], entry["mindex"], entry["ssrc"], entry["do_nacks"]) for mid, entry in media.items()] == [
        ("a", "audio", 0, {"ssrc": 1111}, False),
        ("v", "video", 1, {"ssrc": 2222}, True),
    ]
    assert media["v"]["direction"] == {"send": True, "recv": False}

    await core.request(sink, janus="hangup", transaction="h", session_id=session_id, handle_id=handle.id)
    info = handle_info(core.gateway, handle)
    assert (info["flags"]["got-offer"], info["flags"]["got-answer"], info["flags"]["stopped"]) == (True, False, True)
    assert info["sdps"] == {"profile": "UDP/TLS/RTP/SAVPF", "local": offer, "remote": answer}
    assert "webrtc" not in info


async def test_a_handle_that_never_negotiated() -> None:
    core = Core()
    session_id = await core.session()
    handle = await core.handle(session_id)
    info = handle_info(core.gateway, handle)
    assert info["sdps"] == {}
    assert (info["flags"]["got-offer"], info["flags"]["stopped"]) == (False, False)
