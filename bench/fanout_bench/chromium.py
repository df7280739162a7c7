"""Debian's Chromium as the benchmarks (and the tests) drive it over loopback: the flags
WebRTC needs there. Without --allow-loopback-in-peer-connection and
--disable-features=WebRtcHideLocalIpsWithMdns the PeerConnection stays "new" over
loopback; the others keep a fresh headless browser quiet and let muted video autoplay."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",  # as root
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
