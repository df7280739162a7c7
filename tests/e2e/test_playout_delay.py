"""The playout-delay header extension (``playoutdelay_ext``; ``configure`` with min_delay and
max_delay) as a real aiortc viewer receives it: after decryption, the video packets carry
the delay ``configure`` asked for, then the next one, then none; audio never does. aiortc
1.16 does not negotiate the extension by itself (its answer drops it, and then nothing is
sent); to receive it, the test adds it to aiortc's supported header extensions. Then the
real janus.js in Chromium: the browser's jitter buffer holds each frame about as long as
``configure`` asked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import codecs as aiortc_codecs
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.browser import chromium_in
from tests.support.janus_client import JanusHttpClient
from tests.support.netns import loopback_namespace
from tests.support.server import DEMO_MOUNTPOINT, FanoutProcess, write_config

pytestmark = pytest.mark.usefixtures("loopback_only_ice")

PLAYOUT_DELAY_URI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
DELAYED_DEMO = DEMO_MOUNTPOINT.replace("testsource = true", "testsource = true\n\tplayoutdelay_ext = true")


@dataclass
class ReceivedPackets:
    """What the viewer's packets carried, in arrival order: (payload type, header
    extension elements by id) of each decrypted RTP packet."""

    packets: list[tuple[int, dict[int, bytes]]] = field(default_factory=list)
    video_payload_type: int = -1  # as the viewer's SDP negotiated it
    video_mid: str = ""

    def learn_video_line(self, viewer: AiortcViewer) -> None:
        """The video payload type and mid: fanout's when it offers, the viewer's when the viewer does."""
        video = viewer.pc.remoteDescription.sdp.split("m=video ")[1]
        self.video_payload_type = int(video.split()[2])
        self.video_mid = video.split("a=mid:")[1].split()[0]

    def video_delays(self, since: int = 0) -> list[tuple[int, int] | None]:
        """The playout delay (min, max, in 10 ms units) of each video packet from ``since``."""
        return [playout_delay(elements) for pt, elements in self.packets[since:] if pt == self.video_payload_type]

    def audio_extensions(self) -> list[dict[int, bytes]]:
        return [elements for pt, elements in self.packets if pt != self.video_payload_type]


def header_extension_elements(packet: bytes) -> dict[int, bytes]:
    """The RFC 8285 one-byte-header elements of an RTP packet, by id."""
    if not packet[0] & 0x10:
        return {}
    at = 12 + 4 * (packet[0] & 0x0F)
    profile, words = int.from_bytes(packet[at : at + 2]), int.from_bytes(packet[at + 2 : at + 4])
    assert profile == 0xBEDE, f"a one-byte header extension, not {profile:#x}"
    block, elements, position = packet[at + 4 : at + 4 + 4 * words], {}, 0
    while position < len(block):
        if block[position] == 0:  # padding
            position += 1
            continue
        element_id, length = block[position] >> 4, (block[position] & 0x0F) + 1
        elements[element_id] = block[position + 1 : position + 1 + length]
        position += 1 + length
    return elements


def playout_delay(elements: dict[int, bytes]) -> tuple[int, int] | None:
    data = elements.get(12)
    if data is None:
        return None
    assert len(data) == 3
    value = int.from_bytes(data)
    return value >> 12, value & 0xFFF


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> ReceivedPackets:
    """Every RTP packet aiortc decrypts, seen before aiortc parses it."""
    seen = ReceivedPackets()
    handle = RTCDtlsTransport._handle_rtp_data

    async def recording(self: RTCDtlsTransport, data: bytes, arrival_time_ms: int) -> None:
        seen.packets.append((data[1] & 0x7F, header_extension_elements(data)))
        await handle(self, data, arrival_time_ms)

    monkeypatch.setattr(RTCDtlsTransport, "_handle_rtp_data", recording)
    return seen


@pytest.fixture
def aiortc_takes_playout_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    extensions = [*aiortc_codecs.HEADER_EXTENSIONS["video"], RTCRtpHeaderExtensionParameters(id=12, uri=PLAYOUT_DELAY_URI)]
    monkeypatch.setitem(aiortc_codecs.HEADER_EXTENSIONS, "video", extensions)


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    """Mountpoint 1: the test source, with ``playoutdelay_ext = true``."""
    addresses = write_config(tmp_path / "config", DELAYED_DEMO)
    with FanoutProcess(tmp_path / "config"):
        yield addresses.janus_url


@pytest.fixture
async def viewer(server_url: str) -> AsyncIterator[AiortcViewer]:
    async with aiohttp.ClientSession() as http:
        client = JanusHttpClient(http, server_url)
        await client.create()
        viewer = AiortcViewer(client)
        try:
            yield viewer
        finally:
            await viewer.close()
            await client.close()


async def configure(viewer: AiortcViewer, body: dict[str, Any]) -> None:
    ack = await viewer.client.message(viewer.handle_id, {"request": "configure", **body})
    assert ack["janus"] == "ack", ack
    event = await viewer.plugin_event()
    assert event["plugindata"]["data"] == {"streaming": "event", "result": {"event": "configured"}}


async def video_carries(received: ReceivedPackets, delay: tuple[int, int] | None, timeout: float = 10.0) -> int:
    """Waits until 20 video packets in a row carry ``delay``; where that run starts."""

    async def run_start() -> int:
        while True:
            video = [
                (i, playout_delay(elements))
                for i, (pt, elements) in enumerate(received.packets)
                if pt == received.video_payload_type
            ]
            if len(video) >= 20 and all(found == delay for _, found in video[-20:]):
                return video[-20][0]
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(run_start(), timeout)


@pytest.mark.usefixtures("aiortc_takes_playout_delay")
@pytest.mark.parametrize("who_offers", ["fanout", "viewer"])
async def test_video_packets_carry_the_configured_playout_delay(
    viewer: AiortcViewer, received: ReceivedPackets, who_offers: str
) -> None:
    if who_offers == "fanout":
        await viewer.watch(1)
    else:
        await viewer.watch_with_offer(1)
    received.learn_video_line(viewer)
    await viewer.wait_for_frames(video=10, audio=10)
    before = len(received.packets)
    assert set(received.video_delays()) == {None}, "no playout delay before configure asks for one"

    await configure(viewer, {"min_delay": 100, "max_delay": 200})  # Janus's units: 1 s to 2 s
    first = await video_carries(received, (100, 200))
    assert set(received.video_delays(before)) <= {None, (100, 200)}

    await configure(viewer, {"streams": [{"mid": received.video_mid, "min_delay": 0, "max_delay": 50}]})
    second = await video_carries(received, (0, 50))
    assert set(received.video_delays(first)) <= {(100, 200), (0, 50)}, "no other value in between"

    await configure(viewer, {"min_delay": -1})  # as Janus: a negative value stops it
    await video_carries(received, None)
    assert set(received.video_delays(second)) <= {(0, 50), None}

    assert not any(received.audio_extensions()), "audio never carries it"
    frames = viewer.media.video_frames
    await viewer.wait_for_frames(video=frames + 10, audio=0)  # the packets with the extension decode


async def test_a_viewer_whose_answer_drops_the_extension_gets_none(
    viewer: AiortcViewer, received: ReceivedPackets
) -> None:
    await viewer.watch(1)
    await viewer.wait_for_frames(video=10, audio=10)
    await configure(viewer, {"min_delay": 100, "max_delay": 100})
    frames, count = viewer.media.video_frames, len(received.packets)
    await viewer.wait_for_frames(video=frames + 15, audio=0)
    assert len(received.packets) > count
    assert all(not elements for _, elements in received.packets), "no header extension at all"


# The demo page's janus.js handle is the page's global ``streaming``.
JITTER_BUFFER = """async () => {
  let video = null;
  (await streaming.webrtcStuff.pc.getStats()).forEach((entry) => {
    if (entry.type === "inbound-rtp" && entry.kind === "video") video = entry;
  });
  return [video.jitterBufferDelay, video.jitterBufferEmittedCount];
}"""


def seconds_per_frame_in_jitter_buffer(page: Any, seconds: float) -> float:
    """How long Chromium held each frame it emitted in the next ``seconds`` (getStats:
    jitterBufferDelay over jitterBufferEmittedCount)."""
    delay_before, emitted_before = page.evaluate(JITTER_BUFFER)
    page.wait_for_timeout(seconds * 1000)
    delay, emitted = page.evaluate(JITTER_BUFFER)
    assert emitted - emitted_before >= 10 * seconds, "the video plays"
    return float((delay - delay_before) / (emitted - emitted_before))


def test_chromium_holds_frames_for_the_configured_delay(tmp_path: Path) -> None:
    """About 10 ms a frame as it comes; about 1 s once configure asks for 1 s (min_delay =
    max_delay = 100 units of 10 ms). The thresholds leave wide room for a busy machine."""
    config = tmp_path / "config"
    addresses = write_config(config, DELAYED_DEMO, nat_1_1_mapping=None)
    with (
        loopback_namespace() as namespace,
        FanoutProcess(config, namespace),
        chromium_in(namespace, tmp_path) as browser,
    ):
        page = browser.new_page()
        page.goto(f"{addresses.page_url}?mountpoint=1&transport=http")
        page.wait_for_function("window.fanoutDemo && window.fanoutDemo.state === 'playing'", timeout=30_000)
        assert PLAYOUT_DELAY_URI in page.evaluate("streaming.webrtcStuff.pc.localDescription.sdp"), "Chromium took it"
        page.wait_for_timeout(1000)
        assert seconds_per_frame_in_jitter_buffer(page, 3) < 0.3

        page.evaluate("streaming.send({message: {request: 'configure', min_delay: 100, max_delay: 100}})")
        page.wait_for_timeout(2000)  # the buffer fills up to the new delay
        assert 0.7 < seconds_per_frame_in_jitter_buffer(page, 3) < 2.0
