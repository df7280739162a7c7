"""Which of a mountpoint's source streams are silent, as the engine's events tell.

The engine reports ``SourceSilent`` once a stream that sent has had no packet for
its silence threshold, and ``SourceResumed`` at its next packet (or its first).
:class:`SourceSilence` keeps, for each silent stream, when its last packet came,
so that each user of it decides with its own limit: a simulcast viewer falls back
after its ``fallback`` (the threshold is the smallest any viewer asked, so every
viewer hears in time; a viewer whose fallback is longer looks again when it has
passed), an RTSP pull reconnects once every stream has been silent for
``rtsp_reconnect_delay``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

# The shortest silence threshold the plugin asks the engine for: a shorter one
# would report every gap between two frames of a slow source.
MIN_SILENCE_MS = 50


class SourceSilence:
    """The silent source streams of one mountpoint, by engine source index. Every stream
    starts silent with no packet yet (the engine says nothing until one sends)."""

    def __init__(self, indexes: Iterable[int]) -> None:
        self.indexes = tuple(indexes)
        # Silent streams: when their last packet came (time.monotonic()), None if none yet.
        self._last_packet_at: dict[int, float | None] = dict.fromkeys(self.indexes)
        self.listeners: list[Callable[[], None]] = []  # called after every change

    def silent(self, index: int, silent_ms: int, now: float) -> None:
        """The engine reported stream ``index`` silent for ``silent_ms``."""
        self._last_packet_at[index] = now - silent_ms / 1000
        self._changed()

    def resumed(self, index: int) -> None:
        """The engine reported stream ``index`` sending."""
        self._last_packet_at.pop(index, None)
        self._changed()

    def is_silent(self, index: int) -> bool:
        return index in self._last_packet_at

    def all_silent(self) -> bool:
        return bool(self.indexes) and all(self.is_silent(index) for index in self.indexes)

    def ages_ms(self, now: float) -> dict[int, int | None]:
        """Each stream's milliseconds since its last packet as far as a decision needs it:
        0 for a stream sending (silent for less than the threshold), None before its first."""
        ages: dict[int, int | None] = {}
        for index in self.indexes:
            if index not in self._last_packet_at:
                ages[index] = 0
            else:
                last = self._last_packet_at[index]
                ages[index] = None if last is None else int((now - last) * 1000)
        return ages

    def _changed(self) -> None:
        for listener in list(self.listeners):
            listener()
