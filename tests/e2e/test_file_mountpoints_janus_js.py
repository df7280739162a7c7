"""The real janus.js in a real Chromium watches a live and an ondemand file mountpoint
(an MP4 with H.264 and AAC made by ffmpeg: the AAC transcoded to Opus)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.e2e.test_file_mountpoints import make_mp4
from tests.support.browser import chromium_in
from tests.support.netns import loopback_namespace
from tests.support.server import FanoutProcess, write_config

FRAMES = 60  # 2 s of the file's 30 fps


def file_mountpoint(name: str, kind: str, mountpoint_id: int, filename: Path) -> str:
    return (
        f'{name}: {{\n\ttype = "{kind}"\n\tid = {mountpoint_id}\n\tfilename = "{filename}"\n'
        "\taudio = true\n\tvideo = true\n}\n"
    )


def test_janus_js_decodes_a_live_and_an_ondemand_file(tmp_path: Path) -> None:
    movie = make_mp4(tmp_path / "movie.mp4", seconds=6)
    config = tmp_path / "config"
    mountpoints = file_mountpoint("live-movie", "live", 5, movie) + file_mountpoint("vod-movie", "ondemand", 6, movie)
    addresses = write_config(config, mountpoints, nat_1_1_mapping=None)
    with (
        loopback_namespace() as namespace,
        FanoutProcess(config, namespace) as server,
        chromium_in(namespace, tmp_path) as browser,
    ):
        errors: list[str] = []
        pages = {}
        for mountpoint in (5, 6):
            page = browser.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{addresses.page_url}?mountpoint={mountpoint}&transport=http")
            pages[mountpoint] = page
        for page in pages.values():
            page.wait_for_function("window.fanoutDemo && window.fanoutDemo.state === 'playing'", timeout=30_000)
        stats: dict[int, Any] = {}
        deadline = time.monotonic() + 30
        for mountpoint, page in pages.items():
            while True:
                stats[mountpoint] = page.evaluate("window.fanoutDemo.stats()")
                if stats[mountpoint].get("framesDecoded", 0) >= FRAMES and stats[mountpoint].get("audioPacketsReceived", 0):
                    break
                assert time.monotonic() < deadline, (mountpoint, stats[mountpoint], server.output)
                page.wait_for_timeout(100)
        assert errors == [], errors
        for mountpoint, figures in stats.items():
            assert (figures["frameWidth"], figures["frameHeight"]) == (320, 240), (mountpoint, figures)
