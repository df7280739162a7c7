"""WHIP ingest against a real fanout, with publishers nobody here wrote: Debian's
simple-whip-client (GStreamer's webrtcbin) publishing VP8/Opus and H.264/Opus, and aiortc
replaying an offer of OBS Studio's shape; an aiortc viewer decodes what they send. A
publisher killed and started again: the viewer goes on decoding, with no renegotiation.
Bad input (malformed SDP, unknown mountpoint, wrong token, a second publisher, garbage
from the publisher's address) gets its status code or is dropped, and the viewer sees
nothing of it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient, janus_session
from tests.support.netns import VETH_ADDRESS, entered_namespace_with_veth
from tests.support.server import FanoutProcess, ServerAddresses, write_config
from tests.support.whip_client import WhipClient, soup_check_shim
from tests.support.whip_publisher import AiortcPublisher

pytestmark = pytest.mark.usefixtures("loopback_only_ice")

TOKEN = "whip-token-21"
MOUNTPOINTS = f"""
vp8: {{
	type = "whip"
	id = 21
	description = "simple-whip-client VP8"
	whip_token = "{TOKEN}"
	media = (
		{{ type = "audio", mid = "a", codec = "opus", pt = 111 }},
		{{ type = "video", mid = "v", codec = "vp8", pt = 96 }}
	)
}}
h264: {{
	type = "whip"
	id = 22
	description = "simple-whip-client H.264"
	media = (
		{{ type = "audio", mid = "a", codec = "opus", pt = 111 }},
		{{ type = "video", mid = "v", codec = "h264", pt = 96 }}
	)
}}
obs: {{
	type = "whip"
	id = 23
	description = "OBS-shaped"
	whip_token = "obs"
	media = (
		{{ type = "audio", mid = "a", codec = "opus", pt = 111 }},
		{{ type = "video", mid = "v", codec = "h264", pt = 96 }}
	)
}}
lossy: {{
	type = "whip"
	id = 27
	description = "aiortc VP8 through a lossy link"
	media = (
		{{ type = "audio", mid = "a", codec = "opus", pt = 111 }},
		{{ type = "video", mid = "v", codec = "vp8", pt = 96 }}
	)
}}
garbage: {{
	type = "whip"
	id = 24
	description = "aiortc VP8, garbage beside"
	media = (
		{{ type = "audio", mid = "a", codec = "opus", pt = 111 }},
		{{ type = "video", mid = "v", codec = "vp8", pt = 96 }}
	)
}}
"""
@pytest.fixture(scope="module")
def running_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerAddresses, FanoutProcess]]:
    """fanout on 127.0.0.2 (a veth's address: libnice skips loopback interfaces), with the
    test itself and every client in the same private namespace."""
    with entered_namespace_with_veth():
        folder = tmp_path_factory.mktemp("config")
        addresses = write_config(folder, MOUNTPOINTS, nat_1_1_mapping=VETH_ADDRESS)
        jcfg = folder / "janus.jcfg"
        jcfg.write_text(jcfg.read_text().replace('webrtc_interface = "127.0.0.1"', f'webrtc_interface = "{VETH_ADDRESS}"'))
        with FanoutProcess(folder) as process:
            yield addresses, process


@pytest.fixture(scope="module")
def server(running_server: tuple[ServerAddresses, FanoutProcess]) -> ServerAddresses:
    return running_server[0]


def whip_log(process: FanoutProcess) -> str:
    """The server's lines about WHIP publishers (a failing test shows them)."""
    return "\n".join(line for line in process.lines if "WHIP" in line or "whip" in line)


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return soup_check_shim(tmp_path_factory.mktemp("shim"))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def endpoint_url(server: ServerAddresses, mountpoint_id: int) -> str:
    return f"http://127.0.0.1:{server.http_port}/whip/endpoint/{mountpoint_id}"


async def mountpoint_info(janus: JanusHttpClient, mountpoint_id: int) -> dict[str, Any]:
    handle = await janus.attach()
    reply = await janus.message(handle, {"request": "info", "id": mountpoint_id})
    await janus.handle_request(handle, "detach")
    return reply["plugindata"]["data"]["info"]  # type: ignore[no-any-return]


async def wait_for_publisher(
    janus: JanusHttpClient, mountpoint_id: int, live: bool, timeout: float = 30, client: WhipClient | None = None
) -> None:
    """Until the mountpoint's publisher is live (or not); ``client``, the one expected to go live,
    is started again if it aborted before it could (see ``WhipClient.restart_if_aborted``)."""

    async def check() -> None:
        while (await mountpoint_info(janus, mountpoint_id))["publisher_live"] is not live:
            if client is not None:
                client.restart_if_aborted()
            await asyncio.sleep(0.1)

    await asyncio.wait_for(check(), timeout)


async def goes_live(
    janus: JanusHttpClient, mountpoint_id: int, client: WhipClient, process: FanoutProcess, which: str
) -> None:
    """Until ``client`` is the mountpoint's live publisher; if it is not within the deadline, the
    failure shows what the client and fanout's WHIP service printed."""
    try:
        await wait_for_publisher(janus, mountpoint_id, live=True, client=client)
    except TimeoutError:
        raise AssertionError(f"{which} is not live; it printed:\n{client.kill()}\nfanout:\n{whip_log(process)}") from None


async def watching(janus: JanusHttpClient, mountpoint_id: int) -> AiortcViewer:
    viewer = AiortcViewer(janus)
    await viewer.watch(mountpoint_id)
    return viewer


@pytest.mark.parametrize(("mountpoint_id", "video", "token"), [(21, "vp8", TOKEN), (22, "h264", None)], ids=["vp8", "h264"])
async def test_simple_whip_client_publishes_and_a_viewer_decodes_across_a_restart(
    running_server: tuple[ServerAddresses, FanoutProcess], shim: Path, mountpoint_id: int, video: str, token: str | None
) -> None:
    server, process = running_server
    client = WhipClient(endpoint_url(server, mountpoint_id), video, shim, token).start()
    viewer: AiortcViewer | None = None
    try:
        async with janus_session(server.janus_url) as janus:
            await goes_live(janus, mountpoint_id, client, process, "the publisher")
            viewer = await watching(janus, mountpoint_id)
            media = await viewer.wait_for_frames(video=60, audio=50)
            assert media.video_sizes == {(320, 240)}

            client.kill()  # no DELETE: fanout finds out by itself (the link falls silent)
            await wait_for_publisher(janus, mountpoint_id, live=False)
            decoded = media.video_frames
            client = WhipClient(endpoint_url(server, mountpoint_id), video, shim, token).start()
            await goes_live(janus, mountpoint_id, client, process, "the restarted publisher")
            await viewer.wait_for_frames(video=decoded + 60, audio=0, timeout=30)
            assert viewer.pc.connectionState == "connected"
            assert all(e["plugindata"]["data"].get("result", {}).get("status") != "stopped" for e in viewer.events)
    finally:
        client.kill()
        if viewer is not None:
            await viewer.close()


def obs_shaped(offer: str) -> str:
    """aiortc's offer written as OBS Studio writes it: no candidates, setup actpass, mid 0 Opus
    on pt 111 (stereo=1;useinbandfec=1), mid 1 H.264 on pt 96 (42e01f, packetization mode 1),
    no RTX, no header extensions, no transport-cc."""
    sections = re.split(r"(?=^m=)", offer.replace("\r\n", "\n"), flags=re.MULTILINE)
    session, media = sections[0], sections[1:]
    shaped = [line for line in session.splitlines() if not line.startswith("a=group:")]
    shaped.append("a=group:BUNDLE 0 1")
    for section in media:
        lines = section.splitlines()
        kind = lines[0].split()[0][2:]
        payload_type = _payload_type(lines, "opus" if kind == "audio" else "H264")
        wanted = 111 if kind == "audio" else 96
        keep = []
        for line in lines[1:]:
            if line.startswith(("a=candidate", "a=end-of-candidates", "a=extmap", "a=ssrc-group", "a=rtcp-rsize")):
                continue
            if line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")):
                if int(line.split(":", 1)[1].split()[0]) != payload_type or "transport-cc" in line:
                    continue
                line = line.replace(f":{payload_type} ", f":{wanted} ", 1)
                if line.startswith("a=fmtp:"):
                    line = f"a=fmtp:{wanted} " + (
                        "stereo=1;useinbandfec=1" if kind == "audio"
                        else "profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1"
                    )
            if line.startswith("a=mid:"):
                line = "a=mid:0" if kind == "audio" else "a=mid:1"
            if line.startswith("a=setup:"):
                line = "a=setup:actpass"
            keep.append(line)
        if kind == "audio" and not any(line.startswith("a=fmtp:") for line in keep):
            keep.append("a=fmtp:111 stereo=1;useinbandfec=1")
        shaped.append(f"m={kind} 9 UDP/TLS/RTP/SAVPF {wanted}")
        shaped += keep
    return "\r\n".join(shaped) + "\r\n"


def _payload_type(lines: list[str], codec: str) -> int:
    for line in lines:
        if line.startswith("a=rtpmap:") and line.split()[1].split("/")[0].lower() == codec.lower():
            number = int(line.split(":", 1)[1].split()[0])
            fmtp = next((fmtp for fmtp in lines if fmtp.startswith(f"a=fmtp:{number} ")), "")
            if codec != "H264" or "packetization-mode=1" in fmtp:
                return number
    raise AssertionError(f"no {codec} in the offer")


async def test_an_obs_shaped_offer_is_answered_and_its_h264_decoded(server: ServerAddresses, http: aiohttp.ClientSession) -> None:
    publisher = AiortcPublisher(http, endpoint_url(server, 23), token="obs", video_codec="H264", reshape=obs_shaped)
    viewer: AiortcViewer | None = None
    try:
        reply = await publisher.publish()
        assert reply.status == 201, await reply.text()
        offer = publisher.offer_sdp
        assert "a=candidate" not in offer and "a=extmap" not in offer and "rtx" not in offer and "transport-cc" not in offer
        assert "a=rtpmap:111 opus/48000/2" in offer and "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1" in offer
        await publisher.connected()
        async with janus_session(server.janus_url) as janus:
            await wait_for_publisher(janus, 23, live=True)
            viewer = await watching(janus, 23)
            media = await viewer.wait_for_frames(video=30, audio=30)
            assert media.video_sizes == {(320, 240)}
        async with http.delete(f"http://127.0.0.1:{server.http_port}{publisher.location}", headers={"Authorization": "Bearer obs"}) as deleted:
            assert deleted.status == 200
        async with janus_session(server.janus_url) as janus:
            await wait_for_publisher(janus, 23, live=False)
    finally:
        await publisher.close()
        if viewer is not None:
            await viewer.close()


async def test_bad_requests_get_their_status_and_garbage_is_dropped(server: ServerAddresses, http: aiohttp.ClientSession) -> None:
    publisher = AiortcPublisher(http, endpoint_url(server, 24), video_codec="VP8")
    viewer: AiortcViewer | None = None
    try:
        assert (await publisher.publish()).status == 201
        await publisher.connected()
        async with janus_session(server.janus_url) as janus:
            await wait_for_publisher(janus, 24, live=True)
            viewer = await watching(janus, 24)
            await viewer.wait_for_frames(video=30, audio=30)

            sdp = {"Content-Type": "application/sdp"}
            offer = publisher.offer_sdp
            async with http.post(endpoint_url(server, 24), data=offer, headers=sdp) as second:
                assert second.status == 409
            async with http.post(endpoint_url(server, 99), data=offer, headers=sdp) as unknown:
                assert unknown.status == 404
            async with http.post(endpoint_url(server, 21), data=offer, headers={**sdp, "Authorization": "Bearer nope"}) as wrong:
                assert wrong.status == 401
            async with http.post(endpoint_url(server, 24), data="v=0\r\nnonsense", headers=sdp) as malformed:
                assert malformed.status in (400, 409)  # the live publisher is checked first
            async with http.options(endpoint_url(server, 24)) as preflight:
                assert preflight.status == 204 and preflight.headers["Accept-Post"] == "application/sdp"
                assert preflight.headers["Access-Control-Allow-Origin"] == "*"

            # Garbage from the publisher's own address and port, into its link: RTP-looking
            # bytes that fail authentication, and bytes that are nothing at all.
            connection = publisher.pc.getTransceivers()[0].sender.transport.transport._connection
            pair = connection._nominated[1]
            before = (await mountpoint_info(janus, 24))["publisher"]
            for size in (1, 12, 200, 1200):
                pair.protocol.transport.sendto(bytes([0x80, 96]) + bytes(size), pair.remote_addr)
                pair.protocol.transport.sendto(bytes([0x47]) * size, pair.remote_addr)

            async def counted() -> dict[str, int]:
                while True:
                    stats: dict[str, int] = (await mountpoint_info(janus, 24))["publisher"]
                    dropped = stats["malformed"] + stats["undecryptable"]
                    if dropped >= before["malformed"] + before["undecryptable"] + 8 and stats["malformed"] >= 4:
                        return stats
                    await asyncio.sleep(0.1)

            try:
                await asyncio.wait_for(counted(), 10)
            except TimeoutError:
                raise AssertionError((before, (await mountpoint_info(janus, 24))["publisher"])) from None
            decoded = viewer.media.video_frames
            await viewer.wait_for_frames(video=decoded + 30, audio=0)
            assert (await mountpoint_info(janus, 24))["publisher_live"] is True
    finally:
        await publisher.close()
        if viewer is not None:
            await viewer.close()


async def video_reception(viewer: AiortcViewer) -> tuple[int, int]:
    """The viewer's video packets received and lost, as its receiver counts them."""
    for entry in (await viewer.pc.getStats()).values():
        if entry.type == "inbound-rtp" and entry.kind == "video":
            return int(entry.packetsReceived), int(entry.packetsLost)
    return 0, 0


async def test_loss_on_the_publisher_link_is_recovered_by_nack(server: ServerAddresses, http: aiohttp.ClientSession) -> None:
    """The kernel here has no netem qdisc: the publisher itself drops 5% of its RTP packets
    (retransmissions included) before they reach its socket, as a lossy link would."""
    publisher = AiortcPublisher(http, endpoint_url(server, 27), video_codec="VP8")
    viewer: AiortcViewer | None = None
    try:
        assert (await publisher.publish()).status == 201
        await publisher.connected()
        async with janus_session(server.janus_url) as janus:
            await wait_for_publisher(janus, 27, live=True)
            viewer = await watching(janus, 27)
            await viewer.wait_for_frames(video=30, audio=30)
            publisher.lose(0.05)
            await viewer.wait_for_frames(video=viewer.media.video_frames + 150, audio=0, timeout=40)
            link = (await mountpoint_info(janus, 27))["publisher"]
            assert publisher.dropped > 0
            assert link["lost"] > 0 and link["nacks_sent"] >= link["lost"] and link["recovered"] > 0, link

            async def repaired(watched: AiortcViewer) -> None:
                while True:
                    received, lost = await video_reception(watched)
                    if received > 300 and lost == 0:
                        return
                    await asyncio.sleep(0.5)

            try:
                await asyncio.wait_for(repaired(viewer), 20)
            except TimeoutError:
                raise AssertionError((await video_reception(viewer), link, publisher.dropped)) from None
    finally:
        await publisher.close()
        if viewer is not None:
            await viewer.close()
