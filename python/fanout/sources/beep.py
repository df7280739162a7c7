"""The test sound: a tone at the start of every wall-clock second, silence between.

The tone starts when the picture's clock shows ``.000``, so a viewer can see
and hear whether audio and video play in sync. Samples are a pure function of
wall time; nothing here reads a clock.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 48_000


class Beep:
    """``frequency`` Hz for ``duration`` s of every ``period`` s, ramped over ``ramp`` s to avoid clicks."""

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        channels: int = 2,
        frequency: float = 440.0,
        duration: float = 0.2,
        period: float = 1.0,
        amplitude: float = 0.5,
        ramp: float = 0.005,
    ) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.frequency = frequency
        self.duration = duration
        self.period = period
        self.amplitude = amplitude
        self.ramp = ramp

    def samples(self, wall_time: float, count: int) -> npt.NDArray[np.int16]:
        """``count`` interleaved signed 16-bit samples per channel, the first at ``wall_time``, shaped (1, count * channels)."""
        phase = (wall_time % self.period + np.arange(count) / self.sample_rate) % self.period
        envelope = np.clip(np.minimum(phase, self.duration - phase) / self.ramp, 0.0, 1.0)
        tone = np.sin(2 * np.pi * self.frequency * phase) * envelope * (self.amplitude * 32767)
        mono = np.rint(tone).astype(np.int16)
        return np.repeat(mono, self.channels).reshape(1, -1)
