"""A mountpoint fed by multicast (``mcast``): fanout joins the group and janus.js in a real
Chromium decodes what a source sends to it."""

from __future__ import annotations

from pathlib import Path

from fanout.sources import testsource
from tests.support.browser import chromium_in, wait_for_playback
from tests.support.encoders import running
from tests.support.netns import loopback_namespace
from tests.support.server import FanoutProcess, write_config

GROUP = "239.255.42.1"
AUDIO_PORT, VIDEO_PORT = 5102, 5104
MULTICAST_MOUNTPOINT = f"""
multicast: {{
	type = "rtp"
	id = 5
	description = "multicast input"
	media = (
		{{ type = "audio", mid = "a", mcast = "{GROUP}", iface = "127.0.0.1", port = {AUDIO_PORT}, pt = 111, codec = "opus" }},
		{{ type = "video", mid = "v", mcast = "{GROUP}", iface = "127.0.0.1", port = {VIDEO_PORT}, pt = 96, codec = "vp8" }}
	)
}}
"""


def test_janus_js_plays_a_multicast_fed_mountpoint(tmp_path: Path) -> None:
    config = tmp_path / "config"
    addresses = write_config(config, MULTICAST_MOUNTPOINT)
    source = testsource.testsource_command(GROUP, video_port=VIDEO_PORT, audio_port=AUDIO_PORT)
    with (
        loopback_namespace(multicast=True) as namespace,
        FanoutProcess(config, namespace),
        running(source, namespace),
        chromium_in(namespace, tmp_path) as browser,
    ):
        page = browser.new_page()
        page.goto(f"{addresses.page_url}?mountpoint=5&transport=http")
        page.wait_for_function("window.fanoutDemo && window.fanoutDemo.state === 'playing'", timeout=30_000)
        figures = wait_for_playback(page, frames=60)
        assert (figures["frameWidth"], figures["frameHeight"]) == (640, 360), figures
        assert figures["audioPacketsReceived"] > 0, figures
