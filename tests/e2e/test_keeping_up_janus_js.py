"""A viewer that cannot keep up with a single-layer mountpoint is told so: the real janus.js
in a real Chromium watches one 1 Mbit/s VP8 stream over a link whose rate tc changes (3
Mbit/s, then 300 kbit/s). Chromium's REMB (fanout's offer asks for it; a
mountpoint without simulcast does not offer transport-wide feedback) makes fanout's estimate
of the viewer, and janus.js's onmessage gets ``keeping_up: false`` once the link is too thin
for the stream. The way back (``keeping_up: true``) is tested at the plugin level
(tests/plugins/streaming): Chromium's REMB takes about a minute to climb back from 300 kbit/s
to the stream's 1 Mbit/s, too long for the suite.

The set-up is test_adaptive_janus_js's: browser and server share a namespace whose ``lo`` tc
shapes; the encoder sends from a namespace of its own behind a veth pair, unshaped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Page

from tests.e2e.test_adaptive_janus_js import FPS, SERVER_ADDRESS, encoder_namespace, shape, video_stats
from tests.support.browser import chromium_in
from tests.support.encoders import running
from tests.support.netns import loopback_namespace
from tests.support.server import FanoutProcess, write_config

PORT = 5010
KBPS = 1000
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
        "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={FPS}",
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
    config = tmp_path / "config"
    addresses = write_config(config, MOUNTPOINT, nat_1_1_mapping=None)
    with (
        loopback_namespace() as namespace,
        FanoutProcess(config, namespace) as server,  # before the veth: it advertises loopback only
        encoder_namespace(namespace) as encoding,
        running(encoder(), encoding),
        chromium_in(namespace, tmp_path) as browser,
    ):
        errors: list[str] = []
        page = browser.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{addresses.page_url}?mountpoint=5&transport=http")
        try:
            page.wait_for_function("window.fanoutDemo && window.fanoutDemo.state === 'playing'", timeout=30_000)
        except Exception as error:
            raise AssertionError(f"not playing: {server.output}") from error
        shape(namespace, "3mbit", first=True)
        # Ten seconds of video decoded: Chromium's REMB (its first after about 5 s) has come.
        wait_until(page, "ten seconds decoded", lambda page: video_stats(page)["framesDecoded"] > 10 * FPS, 60)
        # A machine too busy for Chromium to decode in time makes its REMB fall (the viewer does
        # fall behind then): wait until the viewer keeps up on a link that carries the stream.
        wait_until(page, "keeping up at 3 Mbit/s", lambda page: keeping_up_told(page)[-1:] in ([], [True]), 120)

        shape(namespace, "300kbit")
        behind = wait_until(
            page, "keeping_up false at 300 kbit/s", lambda page: keeping_up_told(page)[-1:] == [False], 60
        )

        assert errors == [], errors
        print(f"told behind {behind:.1f} s after the link fell")
