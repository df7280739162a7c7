"""A node's load, measured between two heartbeats (sans-IO: the caller reads the engine).

The figure placement compares is in 0..1: the larger of the engine workers'
mean busy fraction (CPU) and viewers / max_viewers when a capacity is
configured. Busy time and bytes sent are counters that only grow; the meter
keeps the previous reading and turns the difference into rates.
"""

from __future__ import annotations

from dataclasses import dataclass

from fanout.cluster.records import NodeLoad


@dataclass(frozen=True)
class EngineReading:
    """What the engine said at one moment."""

    at: float  # seconds, monotonic
    viewers: int  # peers subscribed, summed over workers
    busy_ns: tuple[int, ...]  # each worker's busy time so far
    sent_bytes: int  # bytes sent to viewers so far, summed over the mountpoints


class LoadMeter:
    def __init__(self, max_viewers: int = 0) -> None:
        self.max_viewers = max_viewers
        self._previous: EngineReading | None = None

    def update(self, reading: EngineReading) -> NodeLoad:
        """The load since the previous reading (the first reading: viewers only)."""
        previous, self._previous = self._previous, reading
        busy = 0.0
        sent_gbps = 0.0
        if previous is not None and reading.at > previous.at:
            elapsed_ns = (reading.at - previous.at) * 1e9
            if len(previous.busy_ns) == len(reading.busy_ns) and reading.busy_ns:
                fractions = [
                    min(1.0, max(0, now - before) / elapsed_ns)
                    for before, now in zip(previous.busy_ns, reading.busy_ns, strict=True)
                ]
                busy = sum(fractions) / len(fractions)
            # A mountpoint removed meanwhile makes the sum shrink: no negative rate.
            sent_gbps = max(0, reading.sent_bytes - previous.sent_bytes) * 8 / (reading.at - previous.at) / 1e9
        by_viewers = min(1.0, reading.viewers / self.max_viewers) if self.max_viewers else 0.0
        return NodeLoad(
            viewers=reading.viewers,
            sent_gbps=round(sent_gbps, 6),
            worker_busy=round(busy, 4),
            # in steps of 1 %: nodes within noise of each other are equal, and the node asked keeps the viewer
            load=round(max(busy, by_viewers), 2),
        )
