"""Debian's headless Chromium, driven by Playwright, inside a loopback-only namespace."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fanout_bench.chromium import CHROMIUM, CHROMIUM_FLAGS
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.netns import NetworkNamespace


@contextmanager
def chromium_in(namespace: NetworkNamespace, workdir: Path, extra_flags: tuple[str, ...] = ()) -> Iterator[Browser]:
    """A headless Chromium whose network is ``namespace``'s (Playwright talks to it over a pipe)."""
    launcher = workdir / "chromium-in-namespace"
    launcher.write_text(f'#!/bin/sh\nexec {" ".join(namespace.command(CHROMIUM))} "$@"\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(launcher),
            headless=True,
            args=[*CHROMIUM_FLAGS, *extra_flags],
            env={**os.environ, "HOME": str(workdir)},
        )
        try:
            yield browser
        finally:
            browser.close()



def wait_for_figures(
    page: Page, expression: str, ready: Callable[[Any], bool], *, timeout: float = 60.0, what: str = "figures"
) -> Any:
    """``expression`` evaluated in the page (a promise is awaited) every 250 ms until ``ready``
    accepts its value, which is returned; a timeout fails with the last value.

    Playwright's ``wait_for_function`` does not await a promise: ``getStats()`` must be polled from here.
    """
    deadline = time.monotonic() + timeout
    value: Any = None
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if ready(value):
            return value
        page.wait_for_timeout(250)
    raise AssertionError(f"{what} not ready in {timeout:.0f} s: {value}")


# Audio packets a start may lose for good: 100 ms of Opus. The keyframe-cache burst that starts a
# viewer can back up a relay's TCP leg for a moment (seen once through coturn over TCP beside a CPU
# hog: 5 of the first 221 audio packets lost, the video healed by NACKs).
AUDIO_LOST_AT_START = 5


def audio_lost_for_good_allowed(received: int) -> int:
    """The audio packets that may stay lost (Opus is not resent; its decoder conceals a few): 1%
    of those received, or AUDIO_LOST_AT_START if that is more."""
    return max(received // 100, AUDIO_LOST_AT_START)


def wait_for_playback(page: Page, *, frames: int, timeout: float = 60.0) -> dict[str, Any]:
    """The demo page's figures (``window.fanoutDemo.stats()``) once it has decoded ``frames`` video
    frames in all and misses no video packet.

    Chromium asks again (NACK) for a video packet that did not come and counts it lost until the
    server resends it, so a loaded machine may show a loss for a moment: the wait lets it heal.
    Opus has no retransmission: at most 1% of audio packets may stay lost (concealed by the
    decoder), or AUDIO_LOST_AT_START if that is more; more is a failure.
    """
    figures: dict[str, Any] = wait_for_figures(
        page,
        "window.fanoutDemo.stats()",
        lambda figures: figures["framesDecoded"] >= frames and figures["videoPacketsLost"] == 0,
        timeout=timeout,
        what=f"clean playback of {frames} frames",
    )
    assert figures["audioPacketsLost"] <= audio_lost_for_good_allowed(figures["audioPacketsReceived"]), figures
    return figures
