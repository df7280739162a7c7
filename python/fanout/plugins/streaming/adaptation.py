"""Each viewer's simulcast layer from its bandwidth estimate (issue 12).

The engine estimates each viewer's bandwidth (transport-wide feedback, GCC) and
reports it as BandwidthEstimate events, at most once a second per viewer or at
once when it falls. The plugin picks, per simulcast track, the highest substream
that fits: down at once when the estimate falls under the current layer's
bitrate (by more than measurement noise), up only when the estimate has held above the next layer's bitrate with
20% headroom for a few seconds, or at once when a probe measured that the link carries it: the
plugin gives the engine a probe goal (the next layer's bitrate with headroom) and the engine
sends padding up to it now and then. A single-layer VP9 stream's spatial layers are chosen the
same way; below the lowest substream or spatial layer (or on a single-layer stream), VP8, VP9 and AV1
temporal layers are left out likewise. The layers' bitrates are measured from the engine's
per-stream byte counters (per TID and per SID). A viewer whose estimate stays under the
bitrate of what it gets (the only layer of a single-layer mountpoint, or the
lowest it could move to) cannot keep up: KeepingUp says so, with hysteresis.
Sans-IO: times are passed in.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

UP_HEADROOM = 1.2
# Down only when the estimate falls under this share of the current layer's bitrate: the first
# estimates are the acknowledged rate of that very layer, a few percent either side of it.
DOWN_SHARE = 0.9
UP_HOLD_SECONDS = 3.0
# A probe succeeds when the link carried 90% of its goal (the engine's egress::probe), so a goal
# this far above the next layer's bitrate measures at least UP_HEADROOM times it.
PROBE_HEADROOM = UP_HEADROOM / 0.9 * 1.05
# A viewer cannot keep up once its estimate has stayed under this share of the bitrate of what it
# gets for this long (a dip, or a second of keyframes, does not count); it keeps up again once the
# estimate has stayed at or above that bitrate for as long.
BEHIND_SHARE = DOWN_SHARE
BEHIND_HOLD_SECONDS = 3.0
# A layer's bitrate is measured over at least this long.
RATE_WINDOW_SECONDS = 1.0
# Until measured: what a three-layer simulcast encoder (Chromium's 1/4, 1/2, full) sends, roughly.
DEFAULT_LAYER_BITRATES = (150_000, 500_000, 1_500_000)


@dataclass
class LayerRates:
    """The bitrates of a mountpoint's source streams, from successive byte counts."""

    bitrates: dict[int, int] = field(default_factory=dict)  # by source index, bits per second
    # VP8, VP9 and AV1: each temporal layer's own bitrate (TID 0, 1, ...), by source index.
    layer_bitrates_by_tid: dict[int, list[int]] = field(default_factory=dict)
    # VP9: each spatial layer's own bitrate (SID 0, 1, ...), by source index.
    layer_bitrates_by_sid: dict[int, list[int]] = field(default_factory=dict)
    _samples: dict[int, tuple[int, tuple[int, ...], tuple[int, ...], float]] = field(default_factory=dict)

    def sample(
        self,
        index: int,
        total_bytes: int,
        now: float,
        temporal_layer_bytes: Sequence[int] = (),
        spatial_layer_bytes: Sequence[int] = (),
    ) -> None:
        previous = self._samples.get(index)
        sample = (total_bytes, tuple(temporal_layer_bytes), tuple(spatial_layer_bytes), now)
        if previous is None:
            self._samples[index] = sample
            return
        then_bytes, then_temporal_bytes, then_spatial_bytes, then = previous
        if now - then < RATE_WINDOW_SECONDS:
            return
        seconds = now - then

        def rates(then_counts: Sequence[int], counts: Sequence[int]) -> list[int]:
            return [max(0, int((count - then_count) * 8 / seconds)) for then_count, count in zip(then_counts, counts)]

        self.bitrates[index] = max(0, int((total_bytes - then_bytes) * 8 / seconds))
        self.layer_bitrates_by_tid[index] = rates(then_temporal_bytes, temporal_layer_bytes)
        self.layer_bitrates_by_sid[index] = rates(then_spatial_bytes, spatial_layer_bytes)
        self._samples[index] = sample

    def temporal_bitrates(self, index: int) -> list[int]:
        """What a viewer of source stream ``index`` capped at each temporal layer gets (0, 1,
        ... up to the highest that sent lately), bits per second: one entry for a stream
        without temporal layers, none until measured."""
        return _capped(self.layer_bitrates_by_tid.get(index, []))

    def spatial_bitrates(self, index: int) -> list[int]:
        """VP9: what a viewer of source stream ``index`` capped at each spatial layer gets (0,
        1, ... up to the highest that sent lately), bits per second: one entry for a stream
        without spatial layers, none until measured."""
        return _capped(self.layer_bitrates_by_sid.get(index, []))

    def layer_bitrates(self, indexes: list[int]) -> list[int]:
        """Each layer's bitrate (the source indexes of substreams 0, 1, ...); a layer not
        yet measured (or silent) counts as the default for its position."""
        rates = []
        for position, index in enumerate(indexes):
            default = DEFAULT_LAYER_BITRATES[min(position, len(DEFAULT_LAYER_BITRATES) - 1)]
            measured = self.bitrates.get(index)
            rates.append(measured if measured else default)
        return rates


def _capped(own_rates: list[int]) -> list[int]:
    """From each layer's own bitrate, what a cap at each layer up to the highest that sent gets."""
    layers = max((layer + 1 for layer, rate in enumerate(own_rates) if rate > 0), default=0)
    return list(itertools.accumulate(own_rates[:layers]))


@dataclass
class LayerChoice:
    """One track's automatic choice among layers, each carrying more than the one below
    (substreams, or temporal layers with their bitrates summed): down fast, up slowly, with
    hysteresis."""

    above_since: float | None = None  # the estimate has held above the next layer's bitrate since

    def choose(
        self, estimate: int, bitrates: list[int], current: int, now: float, *, link_limited: bool = True, probed: bool = False
    ) -> int:
        """The substream to take, given the estimate (bits/s), each substream's bitrate and
        the current substream. Down only once the link was seen to limit the rate
        (``link_limited``): before, the estimate is the start's guess or what was sent,
        and says only that the link carries at least that much. Up at once when a probe just
        measured the estimate (``probed``): the link carried it, so no hold is needed."""
        fits = max((layer for layer, bitrate in enumerate(bitrates) if bitrate <= estimate), default=0)
        if fits < current:
            self.above_since = None
            return fits if link_limited and estimate < bitrates[current] * DOWN_SHARE else current
        following = current + 1
        if following < len(bitrates) and estimate >= bitrates[following] * UP_HEADROOM:
            if probed:
                self.above_since = None
                return following
            if self.above_since is None:
                self.above_since = now
            if now - self.above_since >= UP_HOLD_SECONDS:
                self.above_since = None
                return following
        else:
            self.above_since = None
        return current


def probe_goal(bitrates: list[int], current: int) -> int | None:
    """What to probe the link for from layer ``current`` (bits/s): the next layer's bitrate
    with headroom; None at the top."""
    following = current + 1
    return int(bitrates[following] * PROBE_HEADROOM) if following < len(bitrates) else None


@dataclass
class KeepingUp:
    """Whether a viewer's link carries what it gets: its estimate against the bitrate of its
    streams, with hysteresis. ``behind`` flips only once the estimate has said otherwise for
    BEHIND_HOLD_SECONDS."""

    behind: bool = False
    contrary_since: float | None = None  # the estimate has said otherwise than ``behind`` since

    def update(self, estimate: int, bitrate: int, now: float, *, link_limited: bool = True) -> bool:
        """Takes an estimate and the bitrate of what the viewer gets now (bits/s); True when
        ``behind`` changed. Never behind before the link was seen to limit the rate."""
        contrary = estimate >= bitrate if self.behind else link_limited and estimate < bitrate * BEHIND_SHARE
        if not contrary:
            self.contrary_since = None
            return False
        if self.contrary_since is None:
            self.contrary_since = now
        if now - self.contrary_since < BEHIND_HOLD_SECONDS:
            return False
        self.behind = not self.behind
        self.contrary_since = None
        return True
