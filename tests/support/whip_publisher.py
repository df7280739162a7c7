"""A WHIP publisher made of aiortc: sends a moving picture and a tone (or silence) to a
WHIP endpoint, optionally with its offer reshaped before it is POSTed (as OBS writes it)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import aiohttp
import numpy
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from av import VideoFrame

SDP = "application/sdp"


class MovingPicture(VideoStreamTrack):
    """320x240 frames whose content changes every frame, so each encodes to real data."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        self.count += 1
        image = numpy.zeros((240, 320, 3), numpy.uint8)
        image[:, :, 1] = (self.count * 4) % 256
        image[(self.count * 2) % 240 :, :, 2] = 200
        frame = VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class AiortcPublisher:
    """POSTs an offer with one audio and one video m-line, sendonly; ``video_codec`` is the
    only video codec offered ("VP8" or "H264")."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        *,
        token: str | None = None,
        video_codec: str = "VP8",
        reshape: Callable[[str], str] | None = None,
    ) -> None:
        self.http = http
        self.url = url
        self.token = token
        self.video_codec = video_codec
        self.reshape = reshape
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.location: str | None = None
        self.etag: str | None = None
        self.offer_sdp = ""
        self.dropped = 0  # RTP packets lost on purpose (see lose)

    async def publish(self) -> aiohttp.ClientResponse:
        audio = self.pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        video = self.pc.addTransceiver(MovingPicture(), direction="sendonly")
        del audio
        codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == f"video/{self.video_codec}"]
        video.setCodecPreferences(codecs)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.offer_sdp = self.pc.localDescription.sdp
        if self.reshape is not None:
            self.offer_sdp = self.reshape(self.offer_sdp)
        headers = {"Content-Type": SDP}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        async with self.http.post(self.url, data=self.offer_sdp, headers=headers) as reply:
            body = await reply.text()
            if reply.status == 201:
                self.location = reply.headers["Location"]
                self.etag = reply.headers.get("ETag")
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
            return reply

    async def connected(self, timeout: float = 20) -> None:
        async def up() -> None:
            while self.pc.connectionState != "connected":
                if self.pc.connectionState == "failed":
                    raise AssertionError("the publisher's PeerConnection failed")
                await asyncio.sleep(0.05)

        await asyncio.wait_for(up(), timeout)

    def lose(self, fraction: float, seed: int = 11) -> None:
        """From now on, drop this ``fraction`` of the RTP packets sent (retransmissions too), as a
        lossy link would: after the SRTP-less hand-off from the sender, before encryption."""
        transport = self.pc.getTransceivers()[0].sender.transport  # one, bundled
        send = transport._send_rtp
        chance = random.Random(seed)

        async def lossy(data: bytes) -> None:
            is_rtcp = len(data) > 1 and 192 <= data[1] <= 223
            if not is_rtcp and chance.random() < fraction:
                self.dropped += 1
                return
            await send(data)

        transport._send_rtp = lossy  # type: ignore[method-assign]

    async def close(self) -> None:
        await self.pc.close()

