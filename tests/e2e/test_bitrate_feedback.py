"""A source with an RTCP port hears its viewers' bitrate estimates: janus.js in a
real Chromium watches a mountpoint fed by ffmpeg, and a process standing in
for the encoder's RTCP side receives the REMBs fanout sends it once a second."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.browser import chromium_in
from tests.support.encoders import ffmpeg_vp8_opus, running
from tests.support.netns import loopback_namespace
from tests.support.server import FanoutProcess, write_config

AUDIO_PORT, VIDEO_PORT, VIDEO_RTCP_PORT = 5002, 5004, 5010
MOUNTPOINT = f"""
with-rtcp: {{
	type = "rtp"
	id = 2
	description = "a source that adapts to its viewers"
	media = (
		{{ type = "audio", mid = "a", port = {AUDIO_PORT}, pt = 111, codec = "opus" }},
		{{ type = "video", mid = "v", port = {VIDEO_PORT}, rtcpport = {VIDEO_RTCP_PORT}, pt = 96, codec = "vp8" }}
	)
}}
"""
# The encoder's RTCP side: makes itself known with an empty receiver report,
# then prints the bitrate of each REMB that arrives; gives up after 90 silent seconds
# (Chromium may take tens of seconds to start and play on a loaded machine).
RTCP_LISTENER = f"""
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
sock.settimeout(90)
sock.sendto(bytes([0x80, 201, 0, 1, 0, 0, 0, 7]), ("127.0.0.1", {VIDEO_RTCP_PORT}))
for _ in range(200):
    packet = sock.recv(1500)
    at = packet.find(b"REMB")
    if at > 0:
        word = int.from_bytes(packet[at + 5:at + 8], "big")
        print((word & 0x3FFFF) << (word >> 18), flush=True)
"""


def test_the_source_hears_its_viewers_bitrate_estimates(tmp_path: Path) -> None:
    config = tmp_path / "config"
    addresses = write_config(config, MOUNTPOINT)
    with (
        loopback_namespace() as namespace,
        FanoutProcess(config, namespace),
        running(ffmpeg_vp8_opus("127.0.0.1", AUDIO_PORT, VIDEO_PORT), namespace),
        running([sys.executable, "-c", RTCP_LISTENER], namespace, stdout=subprocess.PIPE) as listener,
        chromium_in(namespace, tmp_path) as browser,
    ):
        page = browser.new_page()
        page.goto(f"{addresses.page_url}?mountpoint=2&transport=http")
        page.wait_for_function("window.fanoutDemo && window.fanoutDemo.state === 'playing'", timeout=30_000)
        assert listener.stdout is not None
        estimates = [int(listener.stdout.readline()) for _ in range(3)]
    assert all(estimate > 100_000 for estimate in estimates), estimates
