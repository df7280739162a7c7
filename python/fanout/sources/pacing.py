"""Real-time pacing without drift: frame n is due at ``start + n * period``.

Time is passed in (seconds on a monotonic clock), so this is plain arithmetic.
Each frame is due at a time computed from its number, never from when the
previous one went out, so lateness does not add up; after a stall longer than
``max_lateness`` the frames that were missed are skipped, not sent in a burst.
"""

from __future__ import annotations


class FrameClock:
    def __init__(self, start: float, period: float, max_lateness: float = 0.25) -> None:
        if period <= 0:
            raise ValueError(f"a frame period of {period} s")
        self.start = start
        self.period = period
        self.max_lateness = max_lateness
        self.next_frame = 0
        self.frames_skipped = 0

    def media_time(self, frame_number: int) -> float:
        """Seconds from the start of the stream to frame ``frame_number``."""
        return frame_number * self.period

    def deadline(self) -> float:
        """When the next frame is due."""
        return self.start + self.next_frame * self.period

    def take(self, now: float) -> int | None:
        """The number of the frame to make now, or None if the next one is not due yet."""
        if now < self.deadline():
            return None
        if now - self.deadline() > self.max_lateness:
            current = int((now - self.start) / self.period)
            self.frames_skipped += current - self.next_frame
            self.next_frame = current
        frame_number = self.next_frame
        self.next_frame += 1
        return frame_number
