"""The automatic layer choice from a viewer's bandwidth estimate (sans-IO)."""

from __future__ import annotations

from fanout.plugins.streaming.adaptation import (
    BEHIND_HOLD_SECONDS,
    DEFAULT_LAYER_BITRATES,
    UP_HEADROOM,
    UP_HOLD_SECONDS,
    KeepingUp,
    LayerChoice,
    LayerRates,
    probe_goal,
)
from typing import Any

import pytest
from fanout.config.jcfg import ConfigError, parse
from fanout.plugins.streaming.config import parse_mountpoint, streaming_settings_from_file
from fanout.plugins.streaming.mountpoint import Mountpoint
from fanout.plugins.streaming.viewer import TRANSPORT_CC_EXTENSION_ID, Viewer, ViewerTrack
from fanout.webrtc.sdp import TRANSPORT_CC_URI

RATES = [100_000, 400_000, 1_200_000]


def test_goes_down_at_once_to_the_highest_layer_that_fits() -> None:
    choice = LayerChoice()
    assert choice.choose(500_000, RATES, 2, now=0.0) == 1
    assert choice.choose(50_000, RATES, 1, now=0.1) == 0, "nothing fits: the lowest"


def test_no_move_down_before_the_link_was_seen_to_limit_the_rate() -> None:
    choice = LayerChoice()
    assert choice.choose(1_000_000, RATES, 2, now=0.0, link_limited=False) == 2, "the start's guess, no over-use"
    assert choice.choose(1_000_000, RATES, 2, now=0.1, link_limited=True) == 1


def test_an_estimate_within_a_tenth_under_the_current_layer_keeps_it() -> None:
    choice = LayerChoice()
    assert choice.choose(1_150_000, RATES, 2, now=0.0) == 2, "the layer's own acknowledged rate, measured a bit low"
    assert choice.choose(1_050_000, RATES, 2, now=0.1) == 1


def test_goes_up_one_layer_only_after_the_estimate_held_above_it_with_headroom() -> None:
    choice = LayerChoice()
    assert choice.choose(470_000, RATES, 0, now=0.0) == 0, "above 400k but without 20% headroom"
    assert choice.choose(480_000, RATES, 0, now=1.0) == 0, "held since now"
    assert choice.choose(480_000, RATES, 0, now=1.0 + UP_HOLD_SECONDS - 0.1) == 0
    assert choice.choose(10_000_000, RATES, 0, now=1.0 + UP_HOLD_SECONDS) == 1, "one layer at a time"
    assert choice.choose(10_000_000, RATES, 1, now=1.0 + UP_HOLD_SECONDS + 1) == 1, "held anew for the next"


def test_a_probed_estimate_goes_up_at_once() -> None:
    choice = LayerChoice()
    assert choice.choose(470_000, RATES, 0, now=0.0, probed=True) == 0, "a probe short of the headroom"
    assert choice.choose(480_000, RATES, 0, now=0.1, probed=True) == 1, "the link carried it: no hold"


def test_the_probe_goal_is_the_next_layer_with_more_than_the_headroom_a_move_up_needs() -> None:
    goal = probe_goal(RATES, 0)
    assert goal is not None and goal * 0.9 >= RATES[1] * UP_HEADROOM, "a probe that reached 90% of it moves up"
    assert probe_goal(RATES, 2) is None, "nothing above the top"


def test_a_dip_restarts_the_wait_to_go_up() -> None:
    choice = LayerChoice()
    choice.choose(500_000, RATES, 0, now=0.0)
    choice.choose(300_000, RATES, 0, now=2.0)
    assert choice.choose(500_000, RATES, 0, now=UP_HOLD_SECONDS + 0.5) == 0
    assert choice.choose(500_000, RATES, 0, now=2.0 + 2 * UP_HOLD_SECONDS) == 1


def test_layer_rates_are_measured_from_byte_counts_and_default_until_then() -> None:
    rates = LayerRates()
    assert rates.layer_bitrates([1, 2, 3]) == list(DEFAULT_LAYER_BITRATES)
    rates.sample(1, 0, now=10.0)
    rates.sample(1, 5_000, now=10.5)  # too soon: not a measurement
    rates.sample(1, 25_000, now=12.0)
    assert rates.layer_bitrates([1, 2, 3]) == [100_000, *DEFAULT_LAYER_BITRATES[1:]]


def test_temporal_layers_are_measured_each_and_summed_up_to_each_cap() -> None:
    rates = LayerRates()
    assert rates.temporal_bitrates(1) == [], "not measured yet"
    rates.sample(1, 0, now=0.0, temporal_layer_bytes=[0, 0, 0, 0])
    rates.sample(1, 70_000, now=2.0, temporal_layer_bytes=[25_000, 20_000, 25_000, 0])
    assert rates.temporal_bitrates(1) == [100_000, 180_000, 280_000], "a viewer capped at 0, 1, 2 gets"
    rates.sample(2, 0, now=0.0, temporal_layer_bytes=[0, 0, 0, 0])
    rates.sample(2, 50_000, now=2.0, temporal_layer_bytes=[50_000, 0, 0, 0])
    assert rates.temporal_bitrates(2) == [200_000], "no temporal layers"


def test_vp9_spatial_layers_are_measured_each_and_summed_up_to_each_cap() -> None:
    rates = LayerRates()
    assert rates.spatial_bitrates(1) == [], "not measured yet"
    rates.sample(1, 0, now=0.0, spatial_layer_bytes=[0, 0, 0, 0])
    rates.sample(1, 75_000, now=2.0, spatial_layer_bytes=[25_000, 50_000, 0, 0])
    assert rates.spatial_bitrates(1) == [100_000, 300_000], "a viewer capped at 0, 1 gets"
    assert rates.temporal_bitrates(1) == [], "no temporal layers counted"


def test_temporal_layers_are_left_out_at_once_and_come_back_one_at_a_time() -> None:
    choice = LayerChoice()
    capped = [100_000, 180_000, 280_000]
    assert choice.choose(150_000, capped, 2, now=0.0) == 0, "only the base layer fits"
    assert choice.choose(250_000, capped, 0, now=1.0) == 0
    assert choice.choose(250_000, capped, 0, now=1.0 + UP_HOLD_SECONDS) == 1
    assert choice.choose(250_000, capped, 1, now=2.0 + 2 * UP_HOLD_SECONDS) == 1, "2 needs 336 kbit/s"


def test_a_viewer_falls_behind_once_its_estimate_stayed_under_the_bitrate_it_gets() -> None:
    keeping_up = KeepingUp()
    assert not keeping_up.update(800_000, 1_000_000, now=0.0)
    assert not keeping_up.update(800_000, 1_000_000, now=BEHIND_HOLD_SECONDS - 0.1)
    assert not keeping_up.behind
    assert keeping_up.update(800_000, 1_000_000, now=BEHIND_HOLD_SECONDS), "held under for long enough"
    assert keeping_up.behind
    assert not keeping_up.update(500_000, 1_000_000, now=BEHIND_HOLD_SECONDS + 1), "told once"


def test_a_viewer_is_not_behind_before_its_link_was_seen_to_limit_the_rate() -> None:
    keeping_up = KeepingUp()
    for second in range(10):
        assert not keeping_up.update(500_000, 1_000_000, now=float(second), link_limited=False)
    assert not keeping_up.behind


def test_an_estimate_about_the_bitrate_it_gets_keeps_up() -> None:
    keeping_up = KeepingUp()
    for second in range(10):  # its own acknowledged rate, measured a bit low
        assert not keeping_up.update(950_000, 1_000_000, now=float(second))
    assert not keeping_up.behind


def test_a_second_above_restarts_the_wait_to_fall_behind() -> None:
    keeping_up = KeepingUp()
    keeping_up.update(500_000, 1_000_000, now=0.0)
    keeping_up.update(1_200_000, 1_000_000, now=2.0)
    assert not keeping_up.update(500_000, 1_000_000, now=3.0)
    assert not keeping_up.update(500_000, 1_000_000, now=3.0 + BEHIND_HOLD_SECONDS - 0.1)
    assert keeping_up.update(500_000, 1_000_000, now=3.0 + BEHIND_HOLD_SECONDS)


def test_a_viewer_behind_keeps_up_again_once_its_estimate_held_at_the_bitrate() -> None:
    keeping_up = KeepingUp(behind=True)
    assert not keeping_up.update(950_000, 1_000_000, now=0.0), "under the bitrate: still behind"
    assert not keeping_up.update(950_000, 1_000_000, now=10.0)
    assert not keeping_up.update(1_000_000, 1_000_000, now=11.0)
    assert not keeping_up.update(1_500_000, 1_000_000, now=11.0 + BEHIND_HOLD_SECONDS - 0.1)
    assert keeping_up.update(1_500_000, 1_000_000, now=11.0 + BEHIND_HOLD_SECONDS)
    assert not keeping_up.behind


def test_a_viewer_behind_stays_behind_through_a_short_recovery() -> None:
    keeping_up = KeepingUp(behind=True)
    keeping_up.update(2_000_000, 1_000_000, now=0.0)
    keeping_up.update(600_000, 1_000_000, now=1.0)
    assert not keeping_up.update(2_000_000, 1_000_000, now=BEHIND_HOLD_SECONDS + 0.5)
    assert keeping_up.behind


def test_simulcast_mountpoints_offer_transport_cc_on_their_m_lines() -> None:
    group = {"type": "rtp", "id": 1, "media": [
        {"type": "audio", "mid": "a", "port": 0, "pt": 111, "codec": "opus"},
        {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8", "simulcast": True},
    ]}  # fmt: skip
    config, _ = parse_mountpoint("m", group)
    for stream in config.streams:
        media = ViewerTrack.offered(stream, transport_cc=True).offer_media()
        assert (TRANSPORT_CC_EXTENSION_ID, TRANSPORT_CC_URI) in media.header_extensions
        assert media.codec is not None and "transport-cc" in media.codec.rtcp_feedback
        plain = ViewerTrack.offered(stream).offer_media()
        assert plain.header_extensions == () and plain.codec is not None
        assert "transport-cc" not in plain.codec.rtcp_feedback


@pytest.mark.parametrize(("everywhere", "offered"), [(False, False), (True, True)])
def test_a_single_layer_mountpoint_offers_transport_cc_only_when_told_to(everywhere: bool, offered: bool) -> None:
    group = {"type": "rtp", "id": 1, "media": [
        {"type": "audio", "mid": "a", "port": 0, "pt": 111, "codec": "opus"},
        {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"},
    ]}  # fmt: skip
    config, _ = parse_mountpoint("m", group)
    handle: Any = type("Handle", (), {"id": 1})()
    viewer = Viewer(handle)
    viewer.watch(Mountpoint(config, 1, [0, 0], 0.0), None, transport_cc_everywhere=everywhere)
    for media in viewer.offer_media():
        assert ((TRANSPORT_CC_EXTENSION_ID, TRANSPORT_CC_URI) in media.header_extensions) is offered
        assert media.codec is not None and ("transport-cc" in media.codec.rtcp_feedback) is offered


def test_a_vp9_svc_mountpoint_offers_transport_cc_as_a_simulcast_one() -> None:
    group = {"type": "rtp", "id": 1, "media": [
        {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp9", "svc": True},
    ]}  # fmt: skip
    config, _ = parse_mountpoint("m", group)
    handle: Any = type("Handle", (), {"id": 1})()
    viewer = Viewer(handle)
    viewer.watch(Mountpoint(config, 1, [0, 0], 0.0), None)
    (media,) = viewer.offer_media()
    assert (TRANSPORT_CC_EXTENSION_ID, TRANSPORT_CC_URI) in media.header_extensions


def test_transport_cc_everywhere_is_a_setting_of_the_general_group() -> None:
    assert streaming_settings_from_file(parse("general: {}", "s.jcfg")).transport_cc == "simulcast"
    assert streaming_settings_from_file(parse('general: { transport_cc = "all" }', "s.jcfg")).transport_cc == "all"
    with pytest.raises(ConfigError, match="""s.jcfg:1: 'transport_cc' must be "simulcast" or "all", not 'yes'"""):
        streaming_settings_from_file(parse('general: { transport_cc = "yes" }', "s.jcfg"))
