"""A viewer that cannot keep up with a single-layer mountpoint is told so: the real janus.js
in a real Chromium watches one 300 kbit/s VP8 stream (320x180: cheap to decode on a busy
machine) over a link whose rate tc changes (3 Mbit/s, then 100 kbit/s). Chromium's REMB (fanout's offer asks for it; a
mountpoint without simulcast does not offer transport-wide feedback) makes fanout's estimate
of the viewer, and janus.js's onmessage gets ``keeping_up: false`` once the link is too thin
for the stream. The way back (``keeping_up: true``) is tested at the plugin level
(tests/plugins/streaming): Chromium's REMB takes about a minute to climb back from a thin link,
too long for the suite.

The set-up is test_adaptive_janus_js's: browser and server share a namespace whose ``lo`` tc
shapes; the encoder sends from a namespace of its own behind a veth pair, unshaped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.e2e.test_adaptive_janus_js import FPS, SERVER_ADDRESS, playing_over_a_shapeable_link, shape, video_stats

# A live encoder through a shaped link, as test_adaptive_janus_js: scripts/test runs this alone.
pytestmark = pytest.mark.alone

PORT = 5010
KBPS = 300
MOUNTPOINT = f"""
single: {{
	type = "rtp"
	id = 5
	description = "one encoding"
	media = (
		{{ type = "video" mid = "v" port = {PORT} pt = 96 codec = "vp8" }}
	)
}}
"""


def encoder() -> list[str]:
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate={FPS}",
        "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8",
        "-b:v", f"{KBPS}k", "-minrate", f"{KBPS}k", "-maxrate", f"{KBPS}k", "-g", str(FPS),
        "-f", "rtp", "-payload_type", "96", f"rtp://{SERVER_ADDRESS}:{PORT}?pkt_size=1200",
    ]  # fmt: skip


def keeping_up_told(page: Page) -> list[Any]:
    """The ``keeping_up`` of each such event janus.js's onmessage delivered, in order."""
    return page.evaluate(  # type: ignore[no-any-return]
        "() => window.fanoutDemo.messages.filter((m) => m.result && 'keeping_up' in m.result)"
        ".map((m) => m.result.keeping_up)"
    )


def wait_until(page: Page, condition: str, predicate: Any, seconds: float) -> float:
    """Until ``predicate(page)``: the seconds it took."""
    start = time.monotonic()
    while not predicate(page):
        if time.monotonic() - start > seconds:
            raise AssertionError(f"{condition} not within {seconds} s: told {keeping_up_told(page)}")
        page.wait_for_timeout(500)
    return time.monotonic() - start


def test_a_viewer_on_a_link_too_thin_for_the_only_layer_is_told(tmp_path: Path) -> None:
    with playing_over_a_shapeable_link(tmp_path, MOUNTPOINT, 5, encoder()) as viewer:
        namespace, page, errors = viewer.namespace, viewer.page, viewer.errors
        shape(namespace, "3mbit", first=True)
        # Three seconds of video decoded: playing (Chromium's first REMB comes after about 5 s,
        # on the thin link then).
        wait_until(page, "three seconds decoded", lambda page: video_stats(page)["framesDecoded"] > 3 * FPS, 60)
        # On a quiet machine nothing is told at 3 Mbit/s. On a busy one, Chromium's REMB (its
        # single-stream estimator, delay-based) can read the scheduler's jitter as queueing and
        # fall under the stream for a minute; then the viewer is already told it is behind, and
        # stays so.
        told_before = keeping_up_told(page)

        shape(namespace, "100kbit")
        behind = wait_until(
            page, "keeping_up false at 100 kbit/s", lambda page: keeping_up_told(page)[-1:] == [False], 60
        )

        assert errors == [], errors
        print(f"told behind {behind:.1f} s after the link fell (before it: {told_before})")
