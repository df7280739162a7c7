"""The viewers' bitrate estimates (REMB) passed on to a mountpoint's source.

A source with an RTCP port (``rtcpport``) hears what its viewers can take, as
with Janus: once a second, each video stream's source gets the lowest estimate
among the viewers who sent one in the last few seconds, so an encoder that
adapts its bitrate serves the most constrained viewer. A WHIP publisher hears the
lower of that and its mountpoint's cap (``whip_bitrate``), see :func:`publisher_bitrate`.
Sans-IO: the plugin records estimates as they arrive and asks what to send when its
timer fires.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

FORWARD_INTERVAL_SECONDS = 1.0
FRESH_SECONDS = 5.0  # an estimate older than this no longer counts


@dataclass(frozen=True)
class BitrateEstimate:
    bitrate: int  # bits per second
    received_at: float  # monotonic seconds


def lowest_fresh_estimate(estimates: Iterable[BitrateEstimate | None], now: float) -> int | None:
    """The lowest bitrate among the estimates received in the last FRESH_SECONDS; None if none is."""
    fresh = [
        estimate.bitrate
        for estimate in estimates
        if estimate is not None and now - estimate.received_at <= FRESH_SECONDS
    ]
    return min(fresh, default=None)


def publisher_bitrate(cap: int, lowest_estimate: int | None) -> int:
    """The REMB a WHIP publisher's video gets: its mountpoint's cap, or the viewers' lowest
    fresh estimate when that is lower (None: no viewer sent one lately)."""
    return cap if lowest_estimate is None else min(cap, lowest_estimate)
