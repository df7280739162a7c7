"""Real clients answering fanout's offer: headless Chromium (Playwright) and aiortc.

``python -m tests.webrtc.real_answers`` stores their answers under data/ for
test_sdp.py; the live tests in test_sdp.py call the same functions.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from fanout.webrtc.sdp import Candidate, Codec, OfferMedia, TransportDescription, build_offer
from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS

DATA = Path(__file__).parent / "data"

VIDEO_FEEDBACK = ("nack", "nack pli", "ccm fir", "goog-remb")
SAMPLE_FINGERPRINT = ":".join(f"{byte:02X}" for byte in range(0xA0, 0xC0))


def sample_offer() -> str:
    """An offer as the Streaming plugin makes it: Opus audio and VP8 video, one host candidate."""
    media = [
        OfferMedia("a", "audio", Codec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1"), ssrc=1111),
        OfferMedia("v", "video", Codec(96, "VP8", 90000, rtcp_feedback=VIDEO_FEEDBACK), ssrc=2222),
    ]
    transport = TransportDescription(
        ice_ufrag="fNoU",
        ice_pwd="fanoutIcePasswordOf24ch",
        fingerprint=("sha-256", SAMPLE_FINGERPRINT),
        setup="actpass",
        candidates=[Candidate("1", 1, "udp", 2130706431, "127.0.0.1", 10000, "host")],
    )
    return build_offer(media, transport, session_id=1234567890, session_version=1)


ANSWER_PAGE = """
async (offer) => {
  const pc = new RTCPeerConnection({iceServers: []});
  const gathered = new Promise((resolve) => {
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") resolve(); };
  });
  await pc.setRemoteDescription({type: "offer", sdp: offer});
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  await Promise.race([gathered, new Promise((resolve) => setTimeout(resolve, 5000))]);
  const result = {
    answer: answer.sdp,
    complete: pc.localDescription.sdp,
    tracks: pc.getTransceivers().map((t) => [t.mid, t.receiver.track.kind, t.currentDirection]),
  };
  pc.close();
  return result;
}
"""


def chromium_answer(offer: str) -> dict[str, object]:
    """Chromium's answer (as janus.js sends it), its description after gathering, and its transceivers."""
    with tempfile.TemporaryDirectory() as home, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS, env={"HOME": home}
        )
        try:
            page = browser.new_page()
            result: dict[str, object] = page.evaluate(ANSWER_PAGE, offer)
        finally:
            browser.close()
    return result


async def aiortc_answer(offer: str) -> str:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def main() -> None:
    offer = sample_offer()
    chromium = chromium_answer(offer)
    (DATA / "answer_chromium.sdp").write_text(str(chromium["answer"]))
    (DATA / "answer_chromium_complete.sdp").write_text(str(chromium["complete"]))
    (DATA / "answer_aiortc.sdp").write_text(asyncio.run(aiortc_answer(offer)))
    print(chromium["tracks"])


if __name__ == "__main__":
    main()
