"""A browser publishes over WHIP with nothing but RTCPeerConnection and fetch (a canvas that
moves and an oscillator), and the real janus.js in the same Chromium watches the
mountpoint on the demo page: it decodes the picture at the size the browser sends, with
no loss. With three simulcast rid layers offered, the answer accepts all three and the
viewer decodes the mountpoint's highest substream.

Browser and server share a network namespace whose only interface is loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import Page

from tests.support.browser import chromium_in, wait_for_playback
from tests.support.netns import loopback_namespace
from tests.support.server import FanoutProcess, write_config

TOKEN = "browser-token"
MOUNTPOINTS = f"""
browser: {{
	type = "whip"
	id = 25
	description = "a browser's canvas"
	whip_token = "{TOKEN}"
	media = (
		{{ type = "audio", mid = "a", codec = "opus", pt = 111 }},
		{{ type = "video", mid = "v", codec = "vp8", pt = 96 }}
	)
}}
layers: {{
	type = "whip"
	id = 26
	description = "a browser's canvas in three layers"
	whip_token = "{TOKEN}"
	media = (
		{{ type = "video", mid = "v", codec = "vp8", pt = 96, simulcast = true }}
	)
}}
"""
FRAMES = 100  # over 3 s of the 30 fps canvas

PUBLISHER_SCRIPT = """
async ([endpoint, token, layers]) => {
  const canvas = document.createElement("canvas");
  canvas.width = 640; canvas.height = 360;
  const context = canvas.getContext("2d");
  let frame = 0;
  setInterval(() => {
    frame += 1;
    context.fillStyle = `hsl(${(frame * 7) % 360}, 80%, 50%)`;
    context.fillRect(0, 0, 640, 360);
    context.fillStyle = "white";
    context.fillRect((frame * 8) % 600, 100, 40, 160);
  }, 33);
  const stream = canvas.captureStream(30);
  const pc = new RTCPeerConnection();
  if (!layers) {
    const audio = new AudioContext();
    const oscillator = audio.createOscillator();
    const destination = audio.createMediaStreamDestination();
    oscillator.connect(destination); oscillator.start();
    pc.addTransceiver(destination.stream.getAudioTracks()[0], {direction: "sendonly"});
  }
  const encodings = layers
    ? [{rid: "q", scaleResolutionDownBy: 4}, {rid: "h", scaleResolutionDownBy: 2}, {rid: "f"}]
    : undefined;
  pc.addTransceiver(stream.getVideoTracks()[0], {direction: "sendonly", sendEncodings: encodings});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
  });
  const reply = await fetch(endpoint, {
    method: "POST",
    headers: {"Content-Type": "application/sdp", "Authorization": `Bearer ${token}`},
    body: pc.localDescription.sdp,
  });
  const answer = await reply.text();
  if (reply.status !== 201) return {status: reply.status, answer};
  await pc.setRemoteDescription({type: "answer", sdp: answer});
  window.whipPc = pc;
  return {status: reply.status, answer, location: reply.headers.get("Location")};
}
"""


def publish(page: Page, url: str, *, layers: bool) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(PUBLISHER_SCRIPT, [url, TOKEN, layers])
    page.wait_for_function("window.whipPc && window.whipPc.connectionState === 'connected'", timeout=20_000)
    return result


def test_a_browser_publishes_and_janus_js_watches(tmp_path: Path) -> None:
    config = tmp_path / "config"
    addresses = write_config(config, MOUNTPOINTS, nat_1_1_mapping=None)
    with (
        loopback_namespace() as namespace,
        FanoutProcess(config, namespace) as server,
        chromium_in(namespace, tmp_path) as browser,
    ):
        errors: list[str] = []
        publisher = browser.new_page()
        publisher.goto(addresses.page_url)  # an origin for fetch; the publisher needs none of the page
        posted = publish(publisher, f"{addresses.page_url}whip/endpoint/25", layers=False)
        assert posted["status"] == 201, posted
        assert posted["location"].startswith("/whip/resource/")

        layered = browser.new_page()
        layered.goto(addresses.page_url)
        posted_layers = publish(layered, f"{addresses.page_url}whip/endpoint/26", layers=True)
        assert posted_layers["status"] == 201, posted_layers
        assert "a=simulcast:recv q;h;f\r\n" in posted_layers["answer"]

        viewers = {}
        for mountpoint in (25, 26):
            page = browser.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{addresses.page_url}?mountpoint={mountpoint}")
            viewers[mountpoint] = page
        for page in viewers.values():
            page.wait_for_function("window.fanoutDemo && window.fanoutDemo.state === 'playing'", timeout=30_000)
        stats = {mountpoint: wait_for_playback(page, frames=FRAMES) for mountpoint, page in viewers.items()}
        assert errors == [], errors
        plain, layers = stats[25], stats[26]
        assert (plain["frameWidth"], plain["frameHeight"]) == (640, 360), (plain, server.output[-3000:])
        assert plain["audioPacketsReceived"] > 0, plain
        assert layers["frameWidth"] in (160, 320, 640), layers  # the highest layer the browser sends yet
