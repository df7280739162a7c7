"""The test source's two RTP streams, frame by frame: picture or sound, encoded, packetized.

No sockets and no clock: the caller says which frame is wanted and the wall
time to show, and gets the RTP packets to send.
"""

from __future__ import annotations

from fanout.sources.beep import Beep
from fanout.sources.encoders import OpusEncoder, Vp8Encoder
from fanout.sources.opus import OPUS_CLOCK_RATE, OpusPacketizer
from fanout.sources.pattern import TestPattern
from fanout.sources.rtp import RtpStream
from fanout.sources.vp8 import VP8_CLOCK_RATE, Vp8Packetizer


class VideoTrack:
    """VP8 at ``fps``; a key frame starts every ``keyframe_interval`` seconds, and the first frame is one."""

    def __init__(
        self,
        payload_type: int,
        width: int,
        height: int,
        fps: int,
        bitrate: int,
        keyframe_interval: float,
    ) -> None:
        self.fps = fps
        self.frames_per_keyframe = max(1, round(keyframe_interval * fps))
        self.pattern = TestPattern(width, height)
        self.encoder = Vp8Encoder(width, height, fps, bitrate)
        self.packetizer = Vp8Packetizer()
        self.stream = RtpStream(payload_type)
        self._last_frame: int | None = None

    @property
    def frame_period(self) -> float:
        return 1 / self.fps

    def packets(self, frame_number: int, wall_time: float) -> list[bytes]:
        keyframe = (
            self._last_frame is None
            or frame_number // self.frames_per_keyframe != self._last_frame // self.frames_per_keyframe
        )
        self._last_frame = frame_number
        planes = self.pattern.render(frame_number, wall_time)
        timestamp = frame_number * VP8_CLOCK_RATE // self.fps
        packets = []
        for frame in self.encoder.encode(planes, frame_number, keyframe):
            packets += self.stream.packetize(self.packetizer.packetize(frame), timestamp, marker_on_last=True)
        return packets


class AudioTrack:
    """Opus, 48 kHz stereo, 20 ms per packet, carrying :class:`Beep`."""

    def __init__(self, payload_type: int, bitrate: int = 64_000) -> None:
        self.beep = Beep(sample_rate=OPUS_CLOCK_RATE, channels=2)
        self.encoder = OpusEncoder(channels=2, bitrate=bitrate)
        self.packetizer = OpusPacketizer()
        self.stream = RtpStream(payload_type)
        self.samples_per_frame = self.encoder.frame_size

    @property
    def frame_period(self) -> float:
        return self.samples_per_frame / OPUS_CLOCK_RATE

    def packets(self, frame_number: int, wall_time: float) -> list[bytes]:
        first_sample = frame_number * self.samples_per_frame
        samples = self.beep.samples(wall_time, self.samples_per_frame)
        packets = []
        for opus_packet in self.encoder.encode(samples, first_sample):
            packets += self.stream.packetize(self.packetizer.packetize(opus_packet), first_sample, marker_on_last=False)
        return packets
