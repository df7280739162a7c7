"""A viewer that stops answering is dropped once its ICE consent expires (RFC 7675: 30 s),
its resources are freed, and the other viewers never notice."""

from __future__ import annotations

import time

import pytest

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient

pytestmark = pytest.mark.usefixtures("loopback_only_ice")

CONSENT_TIMEOUT = 30.0


def go_silent(viewer: AiortcViewer) -> None:
    """Close the viewer's UDP sockets without a word: no more STUN, DTLS or RTCP from it."""
    for transceiver in viewer.pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        for protocol in connection._protocols:
            protocol.transport.close()


async def viewers_of(janus: JanusHttpClient, handle_id: int, mountpoint_id: int) -> int:
    reply = await janus.message(handle_id, {"request": "info", "id": mountpoint_id})
    return int(reply["plugindata"]["data"]["info"]["viewers"])


async def test_a_silent_viewer_is_dropped_when_consent_expires(janus_http: JanusHttpClient) -> None:
    staying, vanishing = AiortcViewer(janus_http), AiortcViewer(janus_http)
    try:
        await staying.watch(1)
        await vanishing.watch(1)
        await vanishing.wait_for_frames(video=10, audio=10)
        assert await viewers_of(janus_http, staying.handle_id, 1) == 2

        go_silent(vanishing)
        silent_since = time.monotonic()
        hangup = await janus_http.event(
            lambda e: e.get("janus") == "hangup" and e.get("sender") == vanishing.handle_id,
            timeout=CONSENT_TIMEOUT + 15,
        )
        assert hangup["reason"] == "consent expired"
        assert time.monotonic() - silent_since >= CONSENT_TIMEOUT - 6  # the last consent check came up to 5 s before
        assert await viewers_of(janus_http, staying.handle_id, 1) == 1

        frames = staying.media.video_frames
        await staying.wait_for_frames(video=frames + 30, audio=0)
    finally:
        await staying.close()
        await vanishing.close()
