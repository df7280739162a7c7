"""Real aiortc viewers watch a real fanout: frames decoded is what counts."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient

pytestmark = pytest.mark.usefixtures("loopback_only_ice")


async def test_aiortc_decodes_video_and_audio_of_the_test_source(janus_http: JanusHttpClient) -> None:
    viewer = AiortcViewer(janus_http)
    try:
        await viewer.watch(1)
        media = await viewer.wait_for_frames(video=45, audio=50)
        assert media.video_sizes == {(640, 360)}
        assert media.audio_sample_rates == {48000}
    finally:
        await viewer.close()


async def test_two_viewers_and_one_leaving_does_not_disturb_the_other(janus_http: JanusHttpClient) -> None:
    first, second = AiortcViewer(janus_http), AiortcViewer(janus_http)
    try:
        await first.watch(1)
        await second.watch(1)
        await first.wait_for_frames(video=20, audio=20)
        await second.wait_for_frames(video=20, audio=20)

        ack = await janus_http.message(first.handle_id, {"request": "stop"})
        assert ack["janus"] == "ack"
        stopping = await first.plugin_event()
        assert stopping["plugindata"]["data"]["result"]["status"] == "stopping"
        await janus_http.event(lambda e: e.get("janus") == "hangup" and e.get("sender") == first.handle_id)
        await first.close()

        frames_before = second.media.video_frames
        await second.wait_for_frames(video=frames_before + 30, audio=0)
        await asyncio.sleep(0)
    finally:
        await first.close()
        await second.close()


async def test_a_client_that_offers_gets_an_answer_and_decodes(janus_http: JanusHttpClient) -> None:
    viewer = AiortcViewer(janus_http)
    try:
        await viewer.watch_with_offer(1)
        media = await viewer.wait_for_frames(video=45, audio=50)
        assert media.video_sizes == {(640, 360)}
        assert media.audio_sample_rates == {48000}
    finally:
        await viewer.close()


async def test_an_offer_of_video_only_gets_video_only(janus_http: JanusHttpClient) -> None:
    viewer = AiortcViewer(janus_http)
    try:
        await viewer.watch_with_offer(1, kinds=("video",))
        media = await viewer.wait_for_frames(video=30, audio=0)
        assert media.audio_frames == 0
    finally:
        await viewer.close()
