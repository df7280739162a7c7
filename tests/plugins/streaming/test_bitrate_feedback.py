"""Which bitrate estimate goes to a source: the lowest fresh one among its viewers (for a
WHIP publisher, no more than its mountpoint's cap)."""

from __future__ import annotations

from fanout.plugins.streaming.bitrate_feedback import (
    FRESH_SECONDS,
    BitrateEstimate,
    lowest_fresh_estimate,
    publisher_bitrate,
)


def test_the_lowest_fresh_estimate_wins() -> None:
    now = 1000.0
    estimates = [
        BitrateEstimate(2_000_000, now - 1),
        BitrateEstimate(800_000, now - 0.5),
        BitrateEstimate(100_000, now - FRESH_SECONDS - 0.1),  # a viewer that stopped reporting
        None,  # a viewer that never sent one
    ]
    assert lowest_fresh_estimate(estimates, now) == 800_000


def test_no_fresh_estimate_sends_nothing() -> None:
    assert lowest_fresh_estimate([], 5.0) is None
    assert lowest_fresh_estimate([None, BitrateEstimate(1, 0.0)], FRESH_SECONDS + 1) is None


def test_a_whip_publisher_gets_the_lower_of_its_cap_and_the_viewers_estimate() -> None:
    assert publisher_bitrate(6_000_000, None) == 6_000_000, "no viewer estimate: the cap"
    assert publisher_bitrate(6_000_000, 1_500_000) == 1_500_000
    assert publisher_bitrate(6_000_000, 9_000_000) == 6_000_000, "viewers who could take more: still the cap"
