"""Debian's headless Chromium, driven by Playwright, inside a loopback-only namespace."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fanout_bench.chromium import CHROMIUM, CHROMIUM_FLAGS
from playwright.sync_api import Browser, sync_playwright

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
