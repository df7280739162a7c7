"""A real WebRTC viewer made with aiortc: watches a mountpoint and decodes what it gets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from tests.support.janus_client import JanusHttpClient


@dataclass
class DecodedMedia:
    video_frames: int = 0
    video_sizes: set[tuple[int, int]] = field(default_factory=set)
    audio_frames: int = 0
    audio_sample_rates: set[int] = field(default_factory=set)
    video_brightness: float | None = None  # the mean luma (0-255) of the latest picture
    video_timestamps: list[int] = field(default_factory=list)  # each decoded picture's RTP timestamp


class AiortcViewer:
    """One handle watching one mountpoint through a real aiortc PeerConnection."""

    def __init__(self, client: JanusHttpClient) -> None:
        self.client = client
        self.handle_id = 0
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.media = DecodedMedia()
        self.events: list[dict[str, Any]] = []
        self._consumers: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)
        self.data_channels: list[RTCDataChannel] = []
        self.data_messages: list[str | bytes] = []  # in arrival order, from every channel
        self.pc.on("datachannel", self._on_datachannel)

    async def watch(self, mountpoint_id: int) -> dict[str, Any]:
        """watch -> offer -> answer -> start; returns the ``started`` event."""
        self.handle_id = await self.client.attach()
        ack = await self.client.message(self.handle_id, {"request": "watch", "id": mountpoint_id})
        assert ack["janus"] == "ack", ack
        preparing = await self.plugin_event()
        assert preparing["plugindata"]["data"]["result"]["status"] == "preparing", preparing
        offer = preparing["jsep"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        answer = {"type": "answer", "sdp": self.pc.localDescription.sdp}
        ack = await self.client.message(self.handle_id, {"request": "start"}, jsep=answer)
        assert ack["janus"] == "ack", ack
        starting = await self.plugin_event()
        assert starting["plugindata"]["data"]["result"]["status"] == "starting", starting
        await self.client.event(lambda e: e.get("janus") == "webrtcup" and e.get("sender") == self.handle_id)
        started = await self.plugin_event()
        assert started["plugindata"]["data"]["result"]["status"] == "started", started
        return started

    async def watch_with_offer(
        self, mountpoint_id: int, kinds: tuple[str, ...] = ("audio", "video"), *, data_channel: str | None = None
    ) -> dict[str, Any]:
        """The client offers (as WHEP players do): watch + offer -> answer; returns ``started``.
        With ``data_channel``, the client opens a channel of that label (and offers m=application)."""
        for kind in kinds:
            self.pc.addTransceiver(kind, direction="recvonly")
        if data_channel is not None:
            self.data_channels.append(self.pc.createDataChannel(data_channel))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"type": "offer", "sdp": self.pc.localDescription.sdp}
        self.handle_id = await self.client.attach()
        ack = await self.client.message(self.handle_id, {"request": "watch", "id": mountpoint_id}, jsep=offer)
        assert ack["janus"] == "ack", ack
        preparing = await self.plugin_event()
        assert preparing["plugindata"]["data"].get("result") == {"status": "preparing"}, preparing
        answer = preparing["jsep"]
        assert answer["type"] == "answer", answer
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await self.client.event(lambda e: e.get("janus") == "webrtcup" and e.get("sender") == self.handle_id)
        started = await self.plugin_event()
        assert started["plugindata"]["data"]["result"]["status"] == "started", started
        return started

    async def plugin_event(self, timeout: float = 20.0) -> dict[str, Any]:
        event = await self.client.plugin_event(self.handle_id, timeout=timeout)
        self.events.append(event)
        return event

    async def wait_for_frames(self, video: int, audio: int, timeout: float = 60.0) -> DecodedMedia:
        async def enough() -> None:
            while self.media.video_frames < video or self.media.audio_frames < audio:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(enough(), timeout)
        return self.media

    async def wait_until_video_stops(self, quiet: float = 1.0, timeout: float = 60.0) -> None:
        """Until no video frame has been decoded for ``quiet`` seconds (what was in flight or in
        the jitter buffer is out)."""

        async def stopped() -> None:
            frames, since = self.media.video_frames, time.monotonic()
            while time.monotonic() - since < quiet:
                await asyncio.sleep(0.05)
                if self.media.video_frames != frames:
                    frames, since = self.media.video_frames, time.monotonic()

        await asyncio.wait_for(stopped(), timeout)

    async def wait_for_data(self, count: int, timeout: float = 20.0) -> list[str | bytes]:
        async def enough() -> None:
            while len(self.data_messages) < count:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(enough(), timeout)
        return self.data_messages

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self.data_channels.append(channel)
        channel.on("message", self.data_messages.append)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._consumers.append(asyncio.get_running_loop().create_task(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.media.video_frames += 1
                    self.media.video_sizes.add((frame.width, frame.height))
                    self.media.video_brightness = float(frame.to_ndarray(format="gray").mean())
                    self.media.video_timestamps.append(frame.pts)
                else:
                    self.media.audio_frames += 1
                    self.media.audio_sample_rates.add(frame.sample_rate)

    async def close(self) -> None:
        for consumer in self._consumers:
            consumer.cancel()
        await self.pc.close()
