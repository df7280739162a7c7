"""The real janus.js in a real Chromium gets a mountpoint's data stream through its ``ondata``
callback: on a data-only mountpoint, and on one with audio, video and data (whose video still
decodes). The browser, fanout, ffmpeg and the UDP sender share a loopback-only namespace."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.browser import chromium_in, wait_for_playback
from tests.support.encoders import ffmpeg_vp8_opus, running
from tests.support.netns import NetworkNamespace, loopback_namespace
from tests.support.server import FanoutProcess, write_config

AUDIO_PORT, VIDEO_PORT, DATA_ONLY_PORT, AV_DATA_PORT = 5002, 5004, 5008, 5010

MOUNTPOINTS = f"""
data-only: {{
	type = "rtp"
	id = 15
	description = "Datachannel stream from an UDP source"
	audio = false
	video = false
	data = true
	dataport = {DATA_ONLY_PORT}
	datatype = "text"
}}
subtitled: {{
	type = "rtp"
	id = 3
	description = "audio, video and subtitles"
	media = (
		{{ type = "audio", mid = "a", port = {AUDIO_PORT}, pt = 111, codec = "opus" }},
		{{ type = "video", mid = "v", port = {VIDEO_PORT}, pt = 96, codec = "vp8" }},
		{{ type = "data", mid = "d", port = {AV_DATA_PORT}, datatype = "text" }}
	)
}}
"""

SENDER = """
import json, socket, sys, time
port, messages = json.load(sys.stdin)
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
    for index, message in enumerate(messages):
        sender.sendto(message.encode(), ("127.0.0.1", port))
        if index % 10 == 9:
            time.sleep(0.01)
"""


def send_datagrams(namespace: NetworkNamespace, port: int, messages: list[str]) -> None:
    """Datagrams from a process inside the namespace (where fanout's 127.0.0.1 is)."""
    subprocess.run(
        namespace.command(sys.executable, "-c", SENDER), input=json.dumps([port, messages]), text=True, check=True
    )


def test_janus_js_gets_data_channel_messages_with_and_without_media(tmp_path: Path) -> None:
    config = tmp_path / "config"
    addresses = write_config(config, MOUNTPOINTS, nat_1_1_mapping=None)
    with (
        loopback_namespace() as namespace,
        FanoutProcess(config, namespace) as server,
        running(ffmpeg_vp8_opus("127.0.0.1", AUDIO_PORT, VIDEO_PORT), namespace),
        chromium_in(namespace, tmp_path) as browser,
    ):
        errors: list[str] = []
        pages = {}
        for mountpoint in (15, 3):
            page = browser.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{addresses.page_url}?mountpoint={mountpoint}&transport=http")
            pages[mountpoint] = page
        for page in pages.values():
            page.wait_for_function("window.fanoutDemo && window.fanoutDemo.dataChannels.length > 0", timeout=30_000)
        pages[3].wait_for_function("window.fanoutDemo.state === 'playing'", timeout=30_000)

        messages = {
            port: [f"{name} line {i}" for i in range(40)] + ["long " + "é" * 1500]  # 3 kB: several SCTP chunks
            for port, name in ((DATA_ONLY_PORT, "data-only"), (AV_DATA_PORT, "subtitle"))
        }
        for port, sent in messages.items():
            send_datagrams(namespace, port, sent)
        for mountpoint, port in ((15, DATA_ONLY_PORT), (3, AV_DATA_PORT)):
            pages[mountpoint].wait_for_function(
                f"window.fanoutDemo.dataMessages.length >= {len(messages[port])}", timeout=20_000
            )
        before: Any = pages[3].evaluate("window.fanoutDemo.stats()")
        figures = wait_for_playback(pages[3], frames=before["framesDecoded"] + 50)
        received = {mountpoint: page.evaluate("window.fanoutDemo.dataMessages") for mountpoint, page in pages.items()}
        channels = {mountpoint: page.evaluate("window.fanoutDemo.dataChannels") for mountpoint, page in pages.items()}

        assert errors == [], errors
        assert received[15] == messages[DATA_ONLY_PORT], server.output
        assert received[3] == messages[AV_DATA_PORT]
        assert channels == {15: ["JanusDataChannel"], 3: ["JanusDataChannel"]}
        assert figures["frameWidth"] == 640, figures
        assert figures["audioPacketsReceived"] > 0, figures
