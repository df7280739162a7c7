"""The moving test picture: colour bars over a grey ramp, scrolling left, under a clock.

Frames are drawn straight in planar YUV 4:2:0 (BT.601 limited range), the
encoder's own format, so no colour conversion runs per frame: the background
is rendered once at twice the frame width and each frame copies a window of
it, and only the caption box (wall clock with milliseconds, frame number) is
drawn anew, with Pillow.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

BARS_RGB = [
    (191, 191, 191),
    (191, 191, 0),
    (0, 191, 191),
    (0, 191, 0),
    (191, 0, 191),
    (191, 0, 0),
    (0, 0, 191),
    (16, 16, 16),
]

Planes = npt.NDArray[np.uint8]


def rgb_to_yuv(rgb: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """BT.601 limited range Y, U, V of full range R, G, B in the last axis."""
    matrix = np.array(
        [
            [65.481, 128.553, 24.966],
            [-37.797, -74.203, 112.0],
            [112.0, -93.786, -18.214],
        ]
    )
    yuv: npt.NDArray[np.float64] = rgb / 255.0 @ matrix.T + np.array([16.0, 128.0, 128.0])
    return yuv


def clock_text(wall_time: float) -> str:
    milliseconds = int(wall_time * 1000) % 1000
    return time.strftime("%H:%M:%S", time.localtime(wall_time)) + f".{milliseconds:03d}"


class TestPattern:
    """Frames of ``width`` x ``height`` as a (height * 3 / 2, width) array: the Y plane, then U, then V."""

    __test__ = False

    def __init__(self, width: int, height: int, pixels_per_frame: int = 4) -> None:
        if width < 64 or height < 64 or width % 2 or height % 2:
            raise ValueError(f"{width}x{height}: width and height must be even and at least 64")
        self.width = width
        self.height = height
        self.pixels_per_frame = pixels_per_frame & ~1
        self._background_y, self._background_u, self._background_v = self._background()
        self._clock_font = ImageFont.load_default(size=max(8, height // 7))
        self._counter_font = ImageFont.load_default(size=max(6, height // 18))
        self._box_size, self._counter_offset = self._measure_box()
        self._box_origin = ((width - self._box_size[0]) // 2 & ~1, (height - self._box_size[1]) // 2 & ~1)
        self._levels = np.array([16 + value * 219 // 255 for value in range(256)], dtype=np.uint8)
        self._frame: Planes = np.empty((height * 3 // 2, width), dtype=np.uint8)

    def _background(self) -> tuple[Planes, Planes, Planes]:
        width, height = self.width, self.height
        columns = np.arange(2 * width)
        bar = columns * len(BARS_RGB) // width % len(BARS_RGB)
        bars = np.array(BARS_RGB, dtype=np.float64)[bar]
        ramp_level = (columns % width) * 255.0 / (width - 1)
        ramp = np.stack([ramp_level] * 3, axis=-1)
        bars_height = height * 2 // 3
        rgb = np.empty((height, 2 * width, 3))
        rgb[:bars_height] = bars
        rgb[bars_height:] = ramp
        yuv = np.clip(np.rint(rgb_to_yuv(rgb)), 0, 255).astype(np.uint8)
        chroma = yuv[::2, ::2]
        return yuv[:, :, 0].copy(), chroma[:, :, 1].copy(), chroma[:, :, 2].copy()

    def _measure_box(self) -> tuple[tuple[int, int], int]:
        clock = [round(edge) for edge in self._clock_font.getbbox("00:00:00.000")]
        counter = [round(edge) for edge in self._counter_font.getbbox("frame 0000000")]
        margin = self.height // 30 + 2
        box_width = min(self.width, max(clock[2], counter[2]) + 2 * margin) & ~1
        counter_offset = margin + clock[3] + margin // 2
        box_height = min(self.height, counter_offset + counter[3] + margin) & ~1
        return (box_width, box_height), counter_offset

    def render(self, frame_number: int, wall_time: float) -> Planes:
        """Frame ``frame_number`` captioned with ``wall_time``; the array is reused by the next call."""
        width, height = self.width, self.height
        shift = frame_number * self.pixels_per_frame % width
        # yuv420p: the Y plane, then U and V of a quarter of its size each, back to back
        # (the chroma planes do not fall on whole rows of the array when height % 4 == 2).
        y = self._frame[:height]
        chroma = self._frame.reshape(-1)[width * height :]
        quarter = (width // 2) * (height // 2)
        u = chroma[:quarter].reshape(height // 2, width // 2)
        v = chroma[quarter:].reshape(height // 2, width // 2)
        y[:] = self._background_y[:, shift : shift + width]
        u[:] = self._background_u[:, shift // 2 : shift // 2 + width // 2]
        v[:] = self._background_v[:, shift // 2 : shift // 2 + width // 2]
        caption = Image.new("L", self._box_size)
        draw = ImageDraw.Draw(caption)
        margin = self.height // 30 + 2
        draw.text((margin, margin), clock_text(wall_time), fill=255, font=self._clock_font)
        draw.text((margin, self._counter_offset), f"frame {frame_number}", fill=255, font=self._counter_font)
        left, top = self._box_origin
        box_width, box_height = self._box_size
        y[top : top + box_height, left : left + box_width] = self._levels[np.asarray(caption)]
        u[top // 2 : (top + box_height) // 2, left // 2 : (left + box_width) // 2] = 128
        v[top // 2 : (top + box_height) // 2, left // 2 : (left + box_width) // 2] = 128
        return self._frame
