"""ICE restart (``watch`` with ``restart``) in a real Chromium with janus.js: new ICE
credentials, the same DTLS and media, and the picture never stops."""

from __future__ import annotations

from pathlib import Path

from tests.support.browser import chromium_in, wait_for_figures, wait_for_playback
from tests.support.netns import loopback_namespace
from tests.support.server import DEMO_MOUNTPOINT, FanoutProcess, write_config


def test_ice_restart_keeps_the_picture_going(tmp_path: Path) -> None:
    config = tmp_path / "config"
    addresses = write_config(config, DEMO_MOUNTPOINT)
    with loopback_namespace() as namespace, FanoutProcess(config, namespace) as server, chromium_in(namespace, tmp_path) as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{addresses.page_url}?mountpoint=1&transport=http")
        page.wait_for_function("window.fanoutDemo && window.fanoutDemo.state === 'playing'", timeout=30_000)
        frames_before = wait_for_playback(page, frames=30)["framesDecoded"]
        pair_before = page.evaluate("window.fanoutDemo.selectedPair()")

        page.evaluate("window.fanoutDemo.restartIce()")
        page.wait_for_function("window.fanoutDemo.offeredIceUfrags.length === 2", timeout=10_000)
        wait_for_figures(
            page,
            "window.fanoutDemo.selectedPair()",
            lambda pair: pair is not None and pair["id"] != pair_before["id"] and pair["responsesReceived"] > 0,
            timeout=15,
            what="a new candidate pair",
        )
        figures = wait_for_playback(page, frames=frames_before + 75)

        first, second = page.evaluate("window.fanoutDemo.offeredIceUfrags")
        assert first != second
        pair_after = page.evaluate("window.fanoutDemo.selectedPair()")
        assert pair_after["state"] == "succeeded" and pair_after["iceState"] == "connected", pair_after
        assert page.evaluate("window.fanoutDemo.state") == "playing"
        assert errors == []
        assert "PeerConnection closed" not in server.output
