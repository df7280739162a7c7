"""Faults, each with real processes: a source that stops and resumes, changes its SSRC, jumps its
sequence numbers and timestamps, sends out of order and twice (the viewer keeps decoding); a viewer
that vanishes without a hangup (freed at consent expiry, its session at session timeout, each
shortened and neither early); one that keeps sending consent checks but never reads (kept past
the consent timeout, and holds up no one); SIGTERM
(every viewer hears its hangup, recordings are complete, permanent mountpoints stay); SIGKILL then
restart (no ``permanent`` mountpoint lost)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
import pytest
from fanout.sources.tracks import AudioTrack, VideoTrack

from fanout.webrtc.stun import BINDING_REQUEST, ICE_CONTROLLING, PRIORITY, USERNAME, StunMessage

from tests.e2e.test_consent import CONSENT_TIMEOUT, EXPIRY_SLACK, go_silent, last_check_sent, viewers_of
from tests.whep.test_whep import WhepPlayer
from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient, janus_session
from tests.support.ports import free_ports
from tests.support.server import DEMO_MOUNTPOINT, FanoutProcess, ServerAddresses, rtp_mountpoint, write_config

pytestmark = pytest.mark.usefixtures("loopback_only_ice")

Mangle = Callable[[list[bytes]], list[bytes]]


def unchanged(packets: list[bytes]) -> list[bytes]:
    return packets


def with_ssrc(ssrc: int) -> Mangle:
    return lambda packets: [packet[:8] + struct.pack("!I", ssrc) + packet[12:] for packet in packets]


def jumped(sequence_step: int, timestamp_step: int) -> Mangle:
    def mangle(packets: list[bytes]) -> list[bytes]:
        out = []
        for packet in packets:
            sequence, timestamp = struct.unpack("!HI", packet[2:8])
            shifted = struct.pack("!HI", (sequence + sequence_step) % 65536, (timestamp + timestamp_step) % 2**32)
            out.append(packet[:2] + shifted + packet[8:])
        return out

    return mangle


def reordered_and_doubled(packets: list[bytes]) -> list[bytes]:
    """Each pair of packets swapped, every packet sent twice."""
    swapped = [packet for pair in zip(packets[1::2], packets[0::2], strict=False) for packet in pair]
    if len(packets) % 2:
        swapped.append(packets[-1])
    return [packet for packet in swapped for _ in range(2)]


class FaultySource:
    """A VP8 + Opus RTP source (30 fps, a keyframe each second) whose video packets go through
    ``mangle`` on their way out, and which sends nothing while ``stopped``."""

    def __init__(self, audio_port: int, video_port: int) -> None:
        self.targets = {"audio": ("127.0.0.1", audio_port), "video": ("127.0.0.1", video_port)}
        self.video = VideoTrack(96, width=320, height=240, fps=30, bitrate=300_000, keyframe_interval=1.0)
        self.audio = AudioTrack(111)
        self.mangle: Mangle = unchanged
        self.stopped = False

    async def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            start = time.monotonic()
            frame = audio_frame = 0
            while True:
                now = time.monotonic() - start
                video_packets = self.video.packets(frame, now)
                audio_packets: list[bytes] = []
                while audio_frame * self.audio.frame_period <= now:
                    audio_packets += self.audio.packets(audio_frame, now)
                    audio_frame += 1
                if not self.stopped:
                    for packet in self.mangle(video_packets):
                        sender.sendto(packet, self.targets["video"])
                    for packet in audio_packets:
                        sender.sendto(packet, self.targets["audio"])
                frame += 1
                await asyncio.sleep(max(0.0, frame * self.video.frame_period - (time.monotonic() - start)))


@pytest.fixture
def rtp_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[ServerAddresses, int, int]]:
    """fanout with mountpoint 2 fed from outside; parametrized indirectly, its fanout.ice_consent_timeout."""
    audio_port, video_port = free_ports(2)
    consent_timeout: float | None = getattr(request, "param", None)
    addresses = write_config(tmp_path, rtp_mountpoint(2, audio_port, video_port), ice_consent_timeout=consent_timeout)
    with FanoutProcess(tmp_path):
        yield addresses, audio_port, video_port


@pytest.fixture
async def faulty_source(rtp_server: tuple[ServerAddresses, int, int]) -> AsyncIterator[FaultySource]:
    _, audio_port, video_port = rtp_server
    source = FaultySource(audio_port, video_port)
    task = asyncio.get_running_loop().create_task(source.run())
    yield source
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def decodes_on(viewer: AiortcViewer, frames: int = 45) -> None:
    await viewer.wait_for_frames(video=viewer.media.video_frames + frames, audio=0, timeout=30)


async def test_the_viewer_keeps_decoding_through_a_misbehaving_source(
    rtp_server: tuple[ServerAddresses, int, int], faulty_source: FaultySource
) -> None:
    addresses, _, _ = rtp_server
    async with janus_session(addresses.janus_url) as janus:
        viewer = AiortcViewer(janus)
        try:
            await viewer.watch(2)
            await decodes_on(viewer)

            faulty_source.stopped = True  # the fault itself: two seconds without a packet
            await asyncio.sleep(2)
            faulty_source.stopped = False
            await decodes_on(viewer)

            faulty_source.stopped = True  # past the 500 ms SSRC lock, another SSRC takes over
            await asyncio.sleep(1)
            faulty_source.mangle = with_ssrc(0x5EED5EED)
            faulty_source.stopped = False
            await decodes_on(viewer)

            jump = jumped(sequence_step=20_000, timestamp_step=90_000 * 3600)
            faulty_source.mangle = lambda packets: jump(with_ssrc(0x5EED5EED)(packets))
            await decodes_on(viewer)

            faulty_source.mangle = lambda packets: reordered_and_doubled(jump(with_ssrc(0x5EED5EED)(packets)))
            await decodes_on(viewer)
            assert viewer.media.video_sizes == {(320, 240)}
        finally:
            await viewer.close()


class StalledReader:
    """An aiortc viewer that stops reading its socket (the kernel drops what fanout sends it) but
    keeps sending a consent check every 2 s on its nominated pair, as a client whose network
    stack answers while its application hangs; aioice's own checks, whose answers it no longer
    reads, are stopped (they would give up after 30 s)."""

    def __init__(self, viewer: AiortcViewer) -> None:
        [transceiver, *_] = viewer.pc.getTransceivers()
        self.connection = transceiver.receiver.transport.transport._connection
        self.pair = self.connection._nominated[1]
        self.transport: Any = self.pair.protocol.transport  # asyncio's selector transport: it pauses reading
        self.sender: asyncio.Task[None] | None = None

    def check(self) -> bytes:
        assert self.connection.remote_password is not None
        message = (
            StunMessage(BINDING_REQUEST, os.urandom(12))
            .with_attribute(USERNAME, f"{self.connection.remote_username}:{self.connection.local_username}".encode())
            .with_attribute(PRIORITY, self.pair.local_candidate.priority.to_bytes(4, "big"))
            .with_attribute(ICE_CONTROLLING, os.urandom(8))
        )
        return bytes(message.with_integrity(self.connection.remote_password.encode()).with_fingerprint())

    async def _send_checks(self) -> None:
        while True:
            self.pair.protocol.transport.sendto(self.check(), self.pair.remote_addr)
            await asyncio.sleep(2)

    def stop_reading(self) -> None:
        if self.connection._query_consent_task is not None:
            self.connection._query_consent_task.cancel()
        self.transport.pause_reading()
        self.sender = asyncio.get_running_loop().create_task(self._send_checks())

    def read_again(self) -> None:
        self.transport.resume_reading()


@pytest.mark.parametrize("rtp_server", [CONSENT_TIMEOUT], indirect=True, ids=[f"ice_consent_timeout={CONSENT_TIMEOUT:g}"])
async def test_a_viewer_that_keeps_consent_but_never_reads_is_kept_and_holds_up_no_one(
    rtp_server: tuple[ServerAddresses, int, int], faulty_source: FaultySource
) -> None:
    addresses, _, _ = rtp_server
    async with janus_session(addresses.janus_url) as janus:
        steady, stalled = AiortcViewer(janus), AiortcViewer(janus)
        reader: StalledReader | None = None
        try:
            await steady.watch(2)
            await stalled.watch(2)
            await steady.wait_for_frames(video=10, audio=10)
            await stalled.wait_for_frames(video=10, audio=10)
            reader = StalledReader(stalled)
            reader.stop_reading()
            stalled_since = time.monotonic()
            # Past the consent timeout (the checks it still sends every 2 s keep its consent):
            # fanout keeps sending to it (the kernel drops it), keeps it as a viewer, and the
            # other viewer decodes on.
            while time.monotonic() - stalled_since < CONSENT_TIMEOUT + 5:
                await decodes_on(steady, frames=30)
                assert await viewers_of(janus, steady.handle_id, 2) == 2
            assert not [e for e in drained_events(janus) if e.get("janus") == "hangup"]
            reader.read_again()
            await decodes_on(stalled)  # from the next keyframe on
        finally:
            if reader is not None and reader.sender is not None:
                reader.sender.cancel()
            await steady.close()
            await stalled.close()


def drained_events(janus: JanusHttpClient) -> list[dict[str, object]]:
    events = []
    while not janus.events.empty():
        events.append(janus.events.get_nowait())
    return events


async def metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    async with http.get(url) as reply:
        for line in (await reply.text()).splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.split()[-1])
    raise AssertionError(f"{name} is not in /metrics")


async def wait_until(condition: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():  # type: ignore[misc]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.5)


SESSION_TIMEOUT = 20  # well past CONSENT_TIMEOUT: consent expiry frees the viewer first, the session later


async def test_a_viewer_that_vanishes_is_freed_at_consent_expiry_and_its_session_at_timeout(
    tmp_path: Path, checks_sent: dict[aioice.ice.StunProtocol, float]
) -> None:
    addresses = write_config(
        tmp_path, DEMO_MOUNTPOINT, session_timeout=SESSION_TIMEOUT, ice_consent_timeout=CONSENT_TIMEOUT
    )
    (metrics_port,) = free_ports(1)
    path = tmp_path / "janus.jcfg"
    path.write_text(path.read_text().replace("fanout: {\n", f"fanout: {{\n\tmetrics_port = {metrics_port}\n", 1))
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with FanoutProcess(tmp_path):
        async with aiohttp.ClientSession() as http:
            janus = JanusHttpClient(http, addresses.janus_url)
            await janus.create()
            viewer = AiortcViewer(janus)
            await viewer.watch(1)
            await viewer.wait_for_frames(video=10, audio=10)
            assert await metric(http, url, "fanout_peerconnections") == 1
            assert janus._poller is not None
            janus._poller.cancel()  # no more long polls nor keepalives: the client is gone
            with contextlib.suppress(asyncio.CancelledError):
                await janus._poller
            last_request = time.monotonic()
            assert (await janus.post(f"/{janus.session_id}", {"janus": "keepalive"}))["janus"] == "ack"  # its last
            last_check = last_check_sent(viewer, checks_sent)
            go_silent(viewer)

            async def engine_freed() -> bool:
                return await metric(http, url, "fanout_peerconnections") == 0 and await metric(
                    http, url, 'fanout_viewers{mountpoint="1"}'
                ) == 0

            async def session_freed() -> bool:
                return await metric(http, url, "fanout_sessions") == 0 and await metric(http, url, "fanout_handles") == 0

            await wait_until(engine_freed, timeout=CONSENT_TIMEOUT + EXPIRY_SLACK)
            assert time.monotonic() - last_check >= CONSENT_TIMEOUT  # not before its consent expired
            # Freed by its consent's expiry, not with its session: that (and its handle) is still there.
            assert await metric(http, url, "fanout_sessions") == 1 and await metric(http, url, "fanout_handles") == 1
            await wait_until(session_freed, timeout=SESSION_TIMEOUT + EXPIRY_SLACK)
            assert time.monotonic() - last_request >= SESSION_TIMEOUT  # not before the session timed out
            await viewer.close()


CREATE = {
    "request": "create",
    "type": "rtp",
    "id": 77,
    "name": "kept",
    "permanent": True,
    "media": [{"type": "audio", "mid": "a", "port": 0, "pt": 111, "codec": "opus"}],
}


async def test_sigkill_then_restart_loses_no_permanent_mountpoint(tmp_path: Path) -> None:
    addresses = write_config(tmp_path, rtp_mountpoint(1, 0, 0))  # no test source: nothing orphaned by the kill
    with FanoutProcess(tmp_path) as server:
        async with janus_session(addresses.janus_url) as janus:
            handle = await janus.attach()
            created = (await janus.message(handle, CREATE))["plugindata"]["data"]
            assert created["permanent"] is True
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        assert server.process.wait(10) == -signal.SIGKILL
    with FanoutProcess(tmp_path):
        async with janus_session(addresses.janus_url) as janus:
            handle = await janus.attach()
            listed = (await janus.message(handle, {"request": "list"}))["plugindata"]["data"]["list"]
            assert sorted(entry["id"] for entry in listed) == [1, 77]


def mjr_packets(data: bytes) -> int:
    """How many RTP packets a Janus .mjr recording holds; AssertionError unless it ends on a whole packet."""
    assert data[:8] == b"MJR00002", data[:8]
    (info_length,) = struct.unpack("!H", data[8:10])
    assert json.loads(data[10 : 10 + info_length])["t"] == "v"
    offset, packets = 10 + info_length, 0
    while offset < len(data):
        assert data[offset : offset + 4] == b"MEET", f"no packet header at byte {offset}"
        (length,) = struct.unpack("!H", data[offset + 8 : offset + 10])
        offset += 10 + length
        packets += 1
    assert offset == len(data), f"the last packet is cut short ({offset - len(data)} bytes missing)"
    return packets


async def test_sigterm_hangs_up_every_viewer_completes_recordings_and_keeps_permanent_mountpoints(tmp_path: Path) -> None:
    addresses = write_config(tmp_path, DEMO_MOUNTPOINT)
    recording = tmp_path / "demo-video.mjr"
    with FanoutProcess(tmp_path) as server:
        assert server.process is not None
        async with aiohttp.ClientSession() as http, janus_session(addresses.janus_url) as janus:
            created = (await janus.message(await janus.attach(), CREATE))["plugindata"]["data"]
            assert created["permanent"] is True
            viewer = AiortcViewer(janus)
            player = WhepPlayer(http, f"http://127.0.0.1:{addresses.http_port}/whep/endpoint/1")
            try:
                await viewer.watch(1)
                assert (await player.play()).status == 201
                await viewer.wait_for_frames(video=10, audio=10)
                await player.frames(video=10, audio=10)
                start = {"request": "recording", "action": "start", "id": 1, "video": str(recording)}
                assert (await janus.message(await janus.attach(), start))["plugindata"]["data"] == {"streaming": "ok"}

                async def some_recorded() -> bool:
                    return recording.exists() and recording.stat().st_size > 10_000

                await wait_until(some_recorded, timeout=30)
                size_before = recording.stat().st_size

                server.process.send_signal(signal.SIGTERM)
                hangup = await janus.event(
                    lambda e: e.get("janus") == "hangup" and e.get("sender") == viewer.handle_id, timeout=30
                )
                assert hangup["reason"] == "Shutdown"

                async def player_closed() -> bool:
                    return player.pc.connectionState == "closed"

                await wait_until(player_closed, timeout=30)
                assert await asyncio.to_thread(server.process.wait, 30) == 0
            finally:
                await viewer.close()
                await player.pc.close()
    data = recording.read_bytes()
    assert mjr_packets(data) > 0 and len(data) > size_before  # what was buffered at SIGTERM was written too

    with FanoutProcess(tmp_path):
        async with janus_session(addresses.janus_url) as janus:
            listed = (await janus.message(await janus.attach(), {"request": "list"}))["plugindata"]["data"]["list"]
            assert sorted(entry["id"] for entry in listed) == [1, 77]
