"""Thin PyAV wrappers: VP8 (libvpx, real-time settings) and Opus (libopus), one frame in, packets out."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt
from av.video.frame import PictureType


class Vp8Encoder:
    """Encodes frames at ``fps`` as they come, key frames when asked, and never waits for more input."""

    def __init__(self, width: int, height: int, fps: int, bitrate: int) -> None:
        self._codec = av.CodecContext.create("libvpx", "w")
        self._codec.width = width
        self._codec.height = height
        self._codec.pix_fmt = "yuv420p"
        self._codec.time_base = Fraction(1, fps)
        self._codec.framerate = Fraction(fps)
        self._codec.bit_rate = bitrate
        self._codec.gop_size = 1 << 20
        self._codec.thread_count = 1
        self._codec.options = {
            "deadline": "realtime",
            "cpu-used": "8",
            "lag-in-frames": "0",
            "auto-alt-ref": "0",
            "error-resilient": "1",
        }
        self._codec.open()

    def encode(self, planes: npt.NDArray[np.uint8], frame_number: int, keyframe: bool) -> list[bytes]:
        """The encoded frames for ``planes`` (yuv420p, stacked Y, U, V); none or one with these settings."""
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts = frame_number
        if keyframe:
            frame.pict_type = PictureType.I
        return [bytes(packet) for packet in self._codec.encode(frame)]


class OpusEncoder:
    """Encodes 20 ms of interleaved 16-bit 48 kHz samples per call into one Opus packet."""

    def __init__(self, channels: int = 2, bitrate: int = 64_000) -> None:
        self.channels = channels
        self._codec = av.CodecContext.create("libopus", "w")
        self._codec.sample_rate = 48_000
        self._codec.layout = "stereo" if channels == 2 else "mono"
        self._codec.format = "s16"
        self._codec.bit_rate = bitrate
        self._codec.options = {"frame_duration": "20", "application": "audio"}
        self._codec.open()
        self.frame_size = self._codec.frame_size

    def encode(self, samples: npt.NDArray[np.int16], first_sample: int) -> list[bytes]:
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout=self._codec.layout.name)
        frame.sample_rate = 48_000
        frame.pts = first_sample
        return [bytes(packet) for packet in self._codec.encode(frame)]
