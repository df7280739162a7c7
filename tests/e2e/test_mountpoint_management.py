"""Managing a mountpoint that a real viewer watches: disable, enable, kick_all, destroy, create."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient

pytestmark = pytest.mark.usefixtures("loopback_only_ice")


async def manage(janus: JanusHttpClient, handle_id: int, body: dict[str, object]) -> dict[str, object]:
    reply = await janus.message(handle_id, body)
    assert reply["janus"] == "success", reply
    return reply["plugindata"]["data"]  # type: ignore[no-any-return]


async def frames_in(viewer: AiortcViewer, seconds: float) -> int:
    before = viewer.media.video_frames
    await asyncio.sleep(seconds)
    return viewer.media.video_frames - before


async def test_disable_stops_the_media_and_enable_brings_it_back(janus_http: JanusHttpClient) -> None:
    viewer = AiortcViewer(janus_http)
    try:
        await viewer.watch(1)
        await viewer.wait_for_frames(video=10, audio=10)
        admin = await janus_http.attach()

        assert await manage(janus_http, admin, {"request": "disable", "id": 1}) == {"streaming": "ok"}
        await viewer.wait_until_video_stops()
        assert await frames_in(viewer, 1.5) == 0, "a disabled mountpoint sends again"
        info = await manage(janus_http, admin, {"request": "info", "id": 1})
        assert info["info"]["enabled"] is False  # type: ignore[index]

        assert await manage(janus_http, admin, {"request": "enable", "id": 1}) == {"streaming": "ok"}
        await viewer.wait_for_frames(video=viewer.media.video_frames + 15, audio=0)
    finally:
        await viewer.close()


async def test_kick_all_stops_every_viewer(janus_http: JanusHttpClient) -> None:
    first, second = AiortcViewer(janus_http), AiortcViewer(janus_http)
    try:
        await first.watch(1)
        await second.watch(1)
        admin = await janus_http.attach()
        assert await manage(janus_http, admin, {"request": "kick_all", "id": 1}) == {"streaming": "kicked_all"}
        expected = {
            (kind, viewer.handle_id) for viewer in (first, second) for kind in ("stopped", "hangup")
        }  # the two viewers' events come interleaved, in any order between them
        seen: set[tuple[str, int]] = set()
        while not expected <= seen:
            event = await janus_http.event()
            data = event.get("plugindata", {}).get("data", {})
            if data == {"streaming": "event", "result": {"status": "stopped"}}:
                seen.add(("stopped", event["sender"]))
            elif event.get("janus") == "hangup":
                seen.add(("hangup", event["sender"]))
        info = await manage(janus_http, admin, {"request": "info", "id": 1})
        assert info["info"]["viewers"] == 0  # type: ignore[index]
    finally:
        await first.close()
        await second.close()


async def test_a_created_mountpoint_is_watched_then_destroyed_under_its_viewer(janus_http: JanusHttpClient) -> None:
    admin = await janus_http.attach()
    created = await manage(
        janus_http,
        admin,
        {
            "request": "create",
            "type": "rtp",
            "id": 7,
            "secret": "x",
            "media": [{"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"}],
        },
    )
    assert created["created"] == "mp-7"
    viewer = AiortcViewer(janus_http)
    try:
        await viewer.watch(7)  # no source yet: the offer and ICE/DTLS do not need one
        destroyed = await manage(janus_http, admin, {"request": "destroy", "id": 7, "secret": "x"})
        assert destroyed == {"streaming": "destroyed", "destroyed": 7}
        stopped = await viewer.plugin_event()
        assert stopped["plugindata"]["data"]["result"] == {"status": "stopped"}
        listed = await manage(janus_http, admin, {"request": "list"})
        assert [entry["id"] for entry in listed["list"]] == [1]  # type: ignore[index, union-attr]
    finally:
        await viewer.close()
