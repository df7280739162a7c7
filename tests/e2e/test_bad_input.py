"""Bad input gets Janus's error code and reason, or is dropped, and everyone else keeps watching.

A real fanout serves two aiortc viewers (one per mountpoint) while the test
throws malformed requests at its Janus API, an invalid SDP answer and a
forged DTLS fingerprint at its Streaming plugin, and garbage datagrams at a
mountpoint's RTP ports and at the WebRTC port. The viewers must go on
decoding video and audio throughout.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from fanout.sources import testsource
from fanout.sources.tracks import VideoTrack

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient
from tests.support.ports import free_ports
from tests.support.server import DEMO_MOUNTPOINT, FanoutProcess, ServerAddresses, rtp_mountpoint, write_config

pytestmark = pytest.mark.usefixtures("loopback_only_ice")

Message = dict[str, Any]


@pytest.fixture
def rtp_ports() -> tuple[int, int]:
    audio_port, video_port = free_ports(2)
    return audio_port, video_port


@pytest.fixture
def server(tmp_path: Path, rtp_ports: tuple[int, int]) -> Iterator[ServerAddresses]:
    """fanout with the demo mountpoint (1) and an RTP mountpoint (2) fed by a test source."""
    audio_port, video_port = rtp_ports
    addresses = write_config(tmp_path / "config", DEMO_MOUNTPOINT + rtp_mountpoint(2, audio_port, video_port))
    source = subprocess.Popen(testsource.testsource_command("127.0.0.1", video_port=video_port, audio_port=audio_port))
    try:
        with FanoutProcess(tmp_path / "config") as process:
            yield addresses
            assert process.process is not None and process.process.poll() is None, process.output
    finally:
        source.terminate()
        source.wait(5)


@pytest.fixture
async def viewers(janus: JanusHttpClient) -> AsyncIterator[list[AiortcViewer]]:
    """One viewer on each mountpoint, decoding before the bad input starts."""
    watching = [AiortcViewer(janus), AiortcViewer(janus)]
    try:
        for mountpoint_id, viewer in enumerate(watching, start=1):
            await viewer.watch(mountpoint_id)
            await viewer.wait_for_frames(video=10, audio=10)
        yield watching
    finally:
        for viewer in watching:
            await viewer.close()


async def still_decoding(viewers: list[AiortcViewer]) -> None:
    """Every viewer decodes at least a second more of video and audio."""
    for viewer in viewers:
        await viewer.wait_for_frames(video=viewer.media.video_frames + 30, audio=viewer.media.audio_frames + 40)
        assert viewer.media.video_sizes == {(640, 360)}


async def raw_post(janus: JanusHttpClient, path: str, body: bytes) -> Message:
    async with janus.http.post(janus.base_url + path, data=body) as response:
        assert response.status == 200
        return await response.json(content_type=None)  # type: ignore[no-any-return]


def error(code: int, reason: str, session_id: int | None = None, transaction: str | None = None) -> Message:
    message: Message = {"janus": "error"}
    if session_id is not None:
        message["session_id"] = session_id
    if transaction is not None:
        message["transaction"] = transaction
    message["error"] = {"code": code, "reason": reason}
    return message


async def test_malformed_requests_get_janus_errors_and_viewers_keep_watching(
    janus: JanusHttpClient, viewers: list[AiortcViewer]
) -> None:
    session = janus.session_id
    assert session is not None
    handle = viewers[0].handle_id

    assert await raw_post(janus, "", b'{"janus": "create", "transaction": "t"') == error(
        454, "JSON error: on line 1: '}' expected near end of file"
    )
    assert await raw_post(janus, "", b"[1, 2]") == error(455, "JSON error: not an object")
    assert await raw_post(janus, "", b'{"janus": "create"}') == error(456, "Missing mandatory element (transaction)")
    assert await raw_post(janus, "", b'{"janus": 7, "transaction": "t"}') == error(
        467, "Invalid element type (janus should be a string)"
    )
    assert await janus.post("/123", {"janus": "keepalive", "transaction": "t"}) == error(
        458, "No such session 123", 123, "t"
    )
    assert await janus.post(f"/{session}/123", {"janus": "message", "transaction": "t", "body": {}}) == error(
        459, f"No such handle 123 in session {session}", session, "t"
    )
    assert await janus.post(f"/{session}", {"janus": "foo", "transaction": "t"}) == error(
        453, "Unknown request 'foo'", session, "t"
    )
    assert await janus.post(f"/{session}", {"janus": "attach", "transaction": "t"}) == error(
        456, "Missing mandatory element (plugin)", session, "t"
    )
    assert await janus.post(f"/{session}", {"janus": "attach", "transaction": "t", "plugin": "janus.plugin.nope"}) == (
        error(460, "No such plugin 'janus.plugin.nope'", session, "t")
    )
    assert await janus.post(f"/{session}/{handle}", {"janus": "message", "transaction": "t"}) == error(
        456, "Missing mandatory element (body)", session, "t"
    )

    for body, code, reason in [
        ({"request": "nope"}, 452, "Unknown request 'nope'"),
        ({}, 453, "Missing mandatory element (request)"),
        ({"request": "info"}, 453, "Missing mandatory element (id)"),
        ({"request": "info", "id": "one"}, 454, "Invalid element type (id should be a positive integer)"),
        ({"request": "info", "id": 99}, 455, "No such mountpoint/stream 99"),
    ]:
        reply = await janus.message(handle, body)
        assert reply["janus"] == "success", reply
        assert reply["plugindata"] == {
            "plugin": "janus.plugin.streaming",
            "data": {"streaming": "event", "error_code": code, "error": reason},
        }

    await still_decoding(viewers)


async def test_an_invalid_sdp_answer_is_refused_and_a_forged_fingerprint_fails_only_its_own_viewer(
    janus: JanusHttpClient, viewers: list[AiortcViewer]
) -> None:
    session = janus.session_id
    handle = await janus.attach()
    assert (await janus.message(handle, {"request": "watch", "id": 1}))["janus"] == "ack"
    offer = (await janus.plugin_event(handle))["jsep"]

    for jsep, code, reason in [
        ({"type": "answer", "sdp": "hello"}, 465, "Invalid SDP (doesn't start with v=)"),
        ({"type": "answer", "sdp": "v=0\r\n"}, 465, "Missing mandatory lines (o=, s= or m=)"),
        ({"type": "pranswer", "sdp": "v=0\r\n"}, 464, "JSEP error: unknown message type 'pranswer'"),
        ({"type": "answer"}, 456, "JSEP error: missing mandatory element (sdp)"),
    ]:
        reply = await janus.message(handle, {"request": "start"}, jsep=jsep)
        assert reply == error(code, reason, session, reply.get("transaction")), (jsep, reply)

    forger = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await forger.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        await forger.setLocalDescription(await forger.createAnswer())
        forged_sdp = "\r\n".join(
            "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) if line.startswith("a=fingerprint:") else line
            for line in forger.localDescription.sdp.split("\r\n")
        )
        reply = await janus.message(handle, {"request": "start"}, jsep={"type": "answer", "sdp": forged_sdp})
        assert reply["janus"] == "ack", reply
        hangup = await janus.event(lambda e: e.get("janus") == "hangup" and e.get("sender") == handle)
        assert hangup["reason"] == "fingerprint mismatch"
    finally:
        await forger.close()

    await still_decoding(viewers)


def garbage_datagrams() -> list[bytes]:
    """Datagrams that are not usable RTP: random, truncated, lying about their own lengths."""
    rtp_header = struct.pack("!BBHII", 0x80, 96, 1, 1000, 0x1234)
    return [
        b"",
        b"\x80",
        os.urandom(11),
        os.urandom(1400),
        bytes(1400),
        struct.pack("!BBHII", 0x00, 96, 1, 1000, 0x1234) + bytes(100),  # RTP version 0
        struct.pack("!BBHII", 0x8F, 96, 1, 1000, 0x1234),  # 15 CSRCs announced, none present
        struct.pack("!BBHII", 0x90, 96, 1, 1000, 0x1234) + struct.pack("!HH", 0xBEDE, 0xFFFF),  # extension too long
        struct.pack("!BBHII", 0xA0, 96, 1, 1000, 0x1234) + b"\x00\x00\xff",  # padding longer than the packet
        struct.pack("!BBHII", 0x80, 200, 0, 0, 0) + bytes(20),  # an RTCP sender report
        rtp_header + os.urandom(60000),
    ]


async def test_garbage_on_rtp_and_webrtc_ports_is_dropped_and_viewers_keep_watching(
    server: ServerAddresses, rtp_ports: tuple[int, int], viewers: list[AiortcViewer]
) -> None:
    targets = [("127.0.0.1", port) for port in rtp_ports] + [("127.0.0.1", server.webrtc_port)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(50):
            for target in targets:
                for datagram in garbage_datagrams():
                    sender.sendto(datagram, target)
            await asyncio.sleep(0.02)
    await still_decoding(viewers)


def injected_video(payload_type: int, frames: int) -> list[bytes]:
    """A stranger's VP8 (every frame a keyframe, 320x240, its own random SSRC) for a video port."""
    track = VideoTrack(payload_type, width=320, height=240, fps=30, bitrate=300_000, keyframe_interval=1 / 30)
    return [packet for frame in range(frames) for packet in track.packets(frame, wall_time=0.0)]


async def test_packets_injected_from_another_ssrc_or_payload_type_never_reach_viewers(
    rtp_ports: tuple[int, int], viewers: list[AiortcViewer]
) -> None:
    """Keyframes sent to a mountpoint's port by someone who is not its source: while the source
    sends, its SSRC holds the stream (fanout's default collision time) and only the configured
    payload type passes, so the viewers never decode a 320x240 picture."""
    _, video_port = rtp_ports
    streams = [injected_video(96, frames=30), injected_video(100, frames=30)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for frame_packets in zip(*(_frames(stream) for stream in streams)):
            for packets in frame_packets:
                for packet in packets:
                    sender.sendto(packet, ("127.0.0.1", video_port))
            await asyncio.sleep(1 / 30)
    await still_decoding(viewers)
    assert viewers[1].media.video_sizes == {(640, 360)}


def _frames(packets: list[bytes]) -> list[list[bytes]]:
    """``packets`` cut into frames at each marker bit."""
    frames: list[list[bytes]] = [[]]
    for packet in packets:
        frames[-1].append(packet)
        if packet[1] & 0x80:
            frames.append([])
    return [frame for frame in frames if frame]
