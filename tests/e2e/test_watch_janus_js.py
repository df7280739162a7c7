"""The real janus.js in a real Chromium watches fanout, over HTTP and over WebSocket.

Browser, server and encoder share a network namespace whose only interface is
loopback, so the only ICE candidate pair is 127.0.0.1 <-> 127.0.0.1. fanout is not
told what to advertise: it finds 127.0.0.1 itself, as on a host with only ``lo``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.browser import chromium_in, wait_for_playback
from tests.support.encoders import ffmpeg_vp8_opus, running
from tests.support.netns import loopback_namespace
from tests.support.server import DEMO_MOUNTPOINT, FanoutProcess, rtp_mountpoint, write_config

AUDIO_PORT, VIDEO_PORT = 5002, 5004
FRAMES = 100  # over 3 s of the 30 fps sources


def test_janus_js_decodes_both_mountpoints_over_both_transports(tmp_path: Path) -> None:
    config = tmp_path / "config"
    addresses = write_config(config, DEMO_MOUNTPOINT + rtp_mountpoint(2, AUDIO_PORT, VIDEO_PORT), nat_1_1_mapping=None)
    with (
        loopback_namespace() as namespace,
        FanoutProcess(config, namespace) as server,
        running(ffmpeg_vp8_opus("127.0.0.1", AUDIO_PORT, VIDEO_PORT), namespace),
        chromium_in(namespace, tmp_path) as browser,
    ):
        errors: list[str] = []
        pages = {}
        for transport in ("http", "ws"):
            for mountpoint in (1, 2):
                page = browser.new_page()
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(
                    f"{addresses.page_url}?mountpoint={mountpoint}&transport={transport}&ws_port={addresses.ws_port}"
                )
                pages[(transport, mountpoint)] = page
        for (transport, mountpoint), page in pages.items():
            page.wait_for_function("window.fanoutDemo && window.fanoutDemo.state === 'playing'", timeout=30_000)
        stats: dict[Any, Any] = {key: wait_for_playback(page, frames=FRAMES) for key, page in pages.items()}
        assert errors == [], errors
        assert "advertising ['127.0.0.1']" in server.output
        for key, figures in stats.items():
            assert figures["frameWidth"] == 640, (key, figures, server.output)
            assert figures["frameHeight"] == 360, (key, figures)
            assert figures["audioPacketsReceived"] > 0, (key, figures)
