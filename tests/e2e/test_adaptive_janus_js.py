"""The real janus.js in a real Chromium watches a three-layer simulcast mountpoint over a
link whose rate tc changes (3 Mbit/s, then 600 kbit/s, then 5 Mbit/s): with no client code,
fanout's estimate of the viewer's bandwidth (transport-wide feedback, which Chromium sends
because fanout's offer asks for it) moves it to the layer that fits, and back up.

Browser and server share a network namespace (as the other janus.js tests) whose ``lo``
tc shapes with a token bucket (tbf: the only qdisc this kernel has); the encoder runs in a
namespace of its own behind a veth pair, so its RTP reaches fanout unshaped.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.support.browser import chromium_in
from tests.support.encoders import running

from tests.support.netns import NetworkNamespace, loopback_namespace
from tests.support.server import FanoutProcess, write_config

# The live three-layer encoder must keep its rates for the layer choice to be tested: beside
# another test's browser and encoder on two cores it starved. scripts/test runs this alone.
pytestmark = pytest.mark.alone

PORTS = [5004, 5006, 5008]
# Width and bitrate of each layer: the top one fits 3 Mbit/s, not 600 kbit/s.
LAYERS = [(320, 180, 150), (640, 360, 400), (1280, 720, 1500)]
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
FPS = 30


def encoder() -> list[str]:
    width, height, _ = LAYERS[-1]
    scales = ";".join(f"[in{i}]scale={w}:{h}[out{i}]" for i, (w, h, _) in enumerate(LAYERS))
    splits = "".join(f"[in{i}]" for i in range(len(LAYERS)))
    command = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={FPS}",
        "-filter_complex", f"[0:v]split={len(LAYERS)}{splits};{scales}",
    ]  # fmt: skip
    for i, ((_, _, kbps), port) in enumerate(zip(LAYERS, PORTS, strict=True)):
        command += [
            "-map", f"[out{i}]", "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8",
            "-b:v", f"{kbps}k", "-minrate", f"{kbps}k", "-maxrate", f"{kbps}k", "-g", str(FPS),
            "-f", "rtp", "-payload_type", "96", f"rtp://{SERVER_ADDRESS}:{port}?pkt_size=1200",
        ]  # fmt: skip
    return command


SERVER_ADDRESS, ENCODER_ADDRESS = "10.213.0.1", "10.213.0.2"


@contextmanager
def encoder_namespace(server: NetworkNamespace) -> Iterator[NetworkNamespace]:
    """A namespace joined to ``server``'s by a veth pair: SERVER_ADDRESS there, ENCODER_ADDRESS here."""
    name = f"{server.name}-enc"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "link", "add", "fanout-enc0", "netns", server.name, "type", "veth",
                        "peer", "name", "fanout-enc1", "netns", name], check=True)  # fmt: skip
        for namespace, device, address in ((server.name, "fanout-enc0", SERVER_ADDRESS),
                                           (name, "fanout-enc1", ENCODER_ADDRESS)):  # fmt: skip
            subprocess.run(["ip", "-n", namespace, "addr", "add", f"{address}/30", "dev", device], check=True)
            subprocess.run(["ip", "-n", namespace, "link", "set", device, "up"], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield NetworkNamespace(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def shape(namespace: NetworkNamespace, rate: str, *, first: bool = False) -> None:
    """Everything on the namespace's ``lo`` (fanout to Chromium) goes at ``rate`` (a 200 ms queue, then drops)."""
    if first:
        subprocess.run(namespace.command("ip", "link", "set", "lo", "mtu", "1500"), check=True)
    verb = "add" if first else "change"
    subprocess.run(namespace.command("tc", "qdisc", verb, "dev", "lo", "root", "tbf", "rate", rate,
                                     "burst", "32kb", "latency", "200ms"), check=True)  # fmt: skip


def video_stats(page: Page) -> dict[str, Any]:
    return page.evaluate(  # type: ignore[no-any-return]
        """async () => {
            const pc = streaming.webrtcStuff.pc;
            const figures = {};
            (await pc.getStats()).forEach((entry) => {
                if (entry.type === "inbound-rtp" && entry.kind === "video") {
                    for (const key of ["frameWidth", "framesDecoded", "packetsLost", "freezeCount",
                                       "totalFreezesDuration", "bytesReceived"]) {
                        figures[key] = entry[key] || 0;
                    }
                }
            });
            return figures;
        }"""
    )


def wait_for(page: Page, condition: str, predicate: Any, seconds: float, timeline: list[Any]) -> float:
    """Until ``predicate(stats)``: the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        figures = video_stats(page)
        timeline.append(
            (round(time.monotonic(), 1), figures.get("frameWidth"), figures.get("framesDecoded"), figures.get("packetsLost"))
        )
        if predicate(figures):
            return time.monotonic() - start
        page.wait_for_timeout(500)
    raise AssertionError(f"{condition} not within {seconds} s: {timeline[-20:]}")


def top_layer_kbits(page: Page) -> int:
    """The top layer's rate as received: the encoder makes less than its target on a starved machine."""
    first, first_at = video_stats(page)["bytesReceived"], time.monotonic()
    page.wait_for_timeout(3000)
    last, last_at = video_stats(page)["bytesReceived"], time.monotonic()
    return int((last - first) * 8 / 1000 / (last_at - first_at))


@dataclass
class ShapedViewer:
    """The demo page playing in Chromium in ``namespace``, whose loopback ``shape`` limits."""

    namespace: NetworkNamespace
    server: FanoutProcess
    page: Page
    errors: list[str]  # the page's uncaught errors


@contextmanager
def playing_over_a_shapeable_link(
    tmp_path: Path, mountpoint: str, mountpoint_id: int, encoder_command: list[str]
) -> Iterator[ShapedViewer]:
    """fanout and the browser in one namespace, the encoder in another behind a veth pair; the
    demo page watches ``mountpoint_id`` over the Janus HTTP API until it plays."""
    config = tmp_path / "config"
    addresses = write_config(config, mountpoint, nat_1_1_mapping=None)
    with (
        loopback_namespace() as namespace,
        FanoutProcess(config, namespace) as server,  # before the veth: it advertises loopback only
        encoder_namespace(namespace) as encoding,
        running(encoder_command, encoding),
        chromium_in(namespace, tmp_path) as browser,
    ):
        errors: list[str] = []
        page = browser.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{addresses.page_url}?mountpoint={mountpoint_id}&transport=http")
        try:
            page.wait_for_function("window.fanoutDemo && window.fanoutDemo.state === 'playing'", timeout=30_000)
        except Exception as error:
            raise AssertionError(f"not playing: {server.output}") from error
        yield ShapedViewer(namespace, server, page, errors)


def test_the_layer_follows_the_shaped_link(tmp_path: Path) -> None:
    timeline: list[Any] = []
    with playing_over_a_shapeable_link(tmp_path, MOUNTPOINT, 4, encoder()) as viewer:
        namespace, server, page, errors = viewer.namespace, viewer.server, viewer.page, viewer.errors
        shape(namespace, "3mbit", first=True)
        wait_for(page, "the top layer at 3 Mbit/s", lambda s: s.get("frameWidth") == 1280, 30, timeline)

        # 600 kbit/s, or half of what the top layer really carries when the encoder is short of CPU.
        narrow = min(600, top_layer_kbits(page) // 2)
        shape(namespace, f"{narrow}kbit")
        down = wait_for(page, f"a lower layer at {narrow} kbit/s", lambda s: 0 < s.get("frameWidth", 0) < 1280, 30, timeline)
        settled = video_stats(page)

        # A probe tells the link opened: padding up to the top layer's rate with headroom, 2 s
        # after the move down and once the estimate stopped falling, then after each failed
        # probe twice as long, up to 8 s (measured: up 2.5 s after the link opened).
        shape(namespace, "5mbit")
        up = wait_for(page, "the top layer again at 5 Mbit/s", lambda s: s.get("frameWidth") == 1280, 60, timeline)
        after = video_stats(page)

        assert errors == [], errors
        assert after["framesDecoded"] > settled["framesDecoded"], (settled, after, server.output)
        print(f"down in {down:.1f} s, up in {up:.1f} s; figures at the end: {after}")
