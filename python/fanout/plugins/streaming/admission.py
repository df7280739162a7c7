"""Admission control: past a configured load, a new viewer is refused instead of degrading everyone.

Two limits, both in janus.jcfg's ``fanout`` group and both off unless set:

- ``max_viewers``: the viewers this node serves at most (handles watching a mountpoint);
- ``max_worker_load``: the engine workers' mean busy fraction (0..1, e.g. 0.85), measured
  over the last second from ``Engine.worker_stats``; a new viewer is refused while it is above.

A refused ``watch`` gets Janus Streaming error 470 (Janus has no "overloaded" code; 470 is
its code for a request that failed for a reason other than the request itself) with a
``retry_after`` (seconds) next to ``error_code`` and ``error``; a WHEP POST gets 503 with
``Retry-After``. Viewers already watching, ICE restarts and ``switch`` are never refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fanout.plugins.streaming.errors import StreamingError, StreamingErrorCode

if TYPE_CHECKING:
    from fanout._engine import Engine

RETRY_AFTER_SECONDS = 5  # what a refused viewer is told to wait before trying again
LOAD_SAMPLE_INTERVAL = 1.0  # seconds between two readings of the workers' busy time
LIMITS = ("max_viewers", "max_worker_load")


@dataclass(frozen=True)
class AdmissionLimits:
    """janus.jcfg's ``fanout.max_viewers`` and ``fanout.max_worker_load``; 0 = no limit."""

    max_viewers: int = 0
    max_worker_load: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.max_viewers > 0 or self.max_worker_load > 0


class OverloadedError(StreamingError):
    """A new viewer refused because the node is past a configured load."""

    def __init__(self, limit: str, reason: str) -> None:
        super().__init__(StreamingErrorCode.UNKNOWN_ERROR, reason)
        self.limit = limit
        self.retry_after = RETRY_AFTER_SECONDS

    def to_data(self) -> dict[str, object]:
        return {**super().to_data(), "retry_after": self.retry_after}


class Admission:
    """Decides whether one more viewer may watch, and counts the refusals (per limit)."""

    def __init__(
        self, limits: AdmissionLimits, engine: Engine | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self.engine = engine
        self.clock = clock
        self.refused: dict[str, int] = dict.fromkeys(LIMITS, 0)
        self.worker_load = 0.0  # the workers' mean busy fraction over the last sample interval
        self._last_sample: tuple[float, list[int]] | None = None

    def check(self, viewers: int) -> None:
        """Raise :class:`OverloadedError` if a viewer beyond the ``viewers`` watching now would
        take the node past a limit."""
        limits = self.limits
        if limits.max_viewers and viewers >= limits.max_viewers:
            self._refuse("max_viewers", f"Too many viewers on this node ({viewers} of max_viewers {limits.max_viewers}); try again later")
        if limits.max_worker_load and self.worker_load > limits.max_worker_load:
            self._refuse(
                "max_worker_load",
                f"This node is too busy (engine workers {self.worker_load:.0%} busy, max_worker_load "
                f"{limits.max_worker_load:.0%}); try again later",
            )

    def _refuse(self, limit: str, reason: str) -> None:
        self.refused[limit] += 1
        raise OverloadedError(limit, reason)

    def sample_worker_load(self) -> None:
        """Read the workers' busy time; the load is the mean busy fraction since the last reading."""
        if self.engine is None:
            return
        now = self.clock()
        busy = [worker.busy_ns for worker in self.engine.worker_stats()]
        if self._last_sample is not None and busy:
            then, busy_then = self._last_sample
            elapsed_ns = (now - then) * 1e9
            if elapsed_ns > 0 and len(busy_then) == len(busy):
                fractions = [min(1.0, max(0.0, (b - a) / elapsed_ns)) for a, b in zip(busy_then, busy, strict=True)]
                self.worker_load = sum(fractions) / len(fractions)
        self._last_sample = (now, busy)

    async def follow_worker_load(self) -> None:
        """Sample the workers' load every second, while ``max_worker_load`` is set."""
        if not self.limits.max_worker_load:
            return
        while True:
            self.sample_worker_load()
            await asyncio.sleep(LOAD_SAMPLE_INTERVAL)
