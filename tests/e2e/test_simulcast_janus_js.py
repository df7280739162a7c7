"""The real janus.js in a real Chromium watches a simulcast mountpoint fed by ffmpeg (three
VP8 encodings of one test pattern) and moves between substreams with ``configure``: the
decoded size follows, and Chromium reports no loss (each encoding numbers its packets and
pictures on its own; fanout renumbers both so the browser sees one continuous stream).

Browser, server and encoder share a loopback-only network namespace, as in
test_watch_janus_js.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import Page

from tests.support.browser import chromium_in, wait_for_playback
from tests.support.encoders import ffmpeg_vp8_simulcast, running
from tests.support.netns import loopback_namespace
from tests.support.server import FanoutProcess, write_config

PORTS = [5004, 5006, 5008]
SIZES = [(320, 180), (640, 360), (1280, 720)]
MOUNTPOINT = f"""
simulcast: {{
	type = "rtp"
	id = 4
	description = "three encodings"
	media = (
		{{ type = "video" mid = "v" port = {PORTS[0]} port2 = {PORTS[1]} port3 = {PORTS[2]} simulcast = true pt = 96 codec = "vp8" }}
	)
}}
"""


def stats(page: Page) -> dict[str, Any]:
    return page.evaluate("window.fanoutDemo.stats()")  # type: ignore[no-any-return]


def configure(page: Page, substream: int) -> None:
    # janus.js's own handle, as the Janus demos send it: top-level mid and substream.
    page.evaluate(f"streaming.send({{ message: {{ request: 'configure', mid: 'v', substream: {substream} }} }})")


def wait_for_width(page: Page, width: int) -> dict[str, Any]:
    for _ in range(80):
        figures = stats(page)
        if figures["frameWidth"] == width:
            return figures
        page.wait_for_timeout(250)
    raise AssertionError(f"no {width} wide frames: {figures}")


def test_janus_js_moves_between_substreams_without_loss(tmp_path: Path) -> None:
    config = tmp_path / "config"
    addresses = write_config(config, MOUNTPOINT, nat_1_1_mapping=None)
    with (
        loopback_namespace() as namespace,
        FanoutProcess(config, namespace) as server,
        running(ffmpeg_vp8_simulcast("127.0.0.1", PORTS, SIZES), namespace),
        chromium_in(namespace, tmp_path) as browser,
    ):
        errors: list[str] = []
        page = browser.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{addresses.page_url}?mountpoint=4&transport=http")
        page.wait_for_function("window.fanoutDemo && window.fanoutDemo.state === 'playing'", timeout=30_000)
        assert wait_for_width(page, 1280)["frameHeight"] == 720, "the highest substream first, as Janus"

        configure(page, 0)
        low = wait_for_width(page, 320)
        configure(page, 1)
        middle = wait_for_width(page, 640)
        after = wait_for_playback(page, frames=middle["framesDecoded"] + 30)

        assert errors == [], errors
        assert low["frameHeight"] == 180 and middle["frameHeight"] == 360, (low, middle)
        assert after["frameWidth"] == 640, (after, server.output)
