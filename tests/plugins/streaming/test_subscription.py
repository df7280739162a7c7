"""configure's simulcast keys, read without a server: which track gets which substream
and temporal layer."""

from __future__ import annotations

from typing import Any

import pytest
from fanout.plugins.streaming.config import parse_mountpoint
from fanout.plugins.streaming.errors import StreamingError
from fanout.plugins.streaming.subscription import layer_choices
from fanout.plugins.streaming.viewer import ViewerTrack


def tracks() -> list[ViewerTrack]:
    group = {
        "type": "rtp",
        "id": 1,
        "media": [
            {"type": "audio", "mid": "a", "port": 0, "pt": 111, "codec": "opus"},
            {"type": "video", "mid": "v1", "port": 0, "pt": 96, "codec": "vp8", "simulcast": True},
            {"type": "video", "mid": "v2", "port": 0, "pt": 96, "codec": "vp8", "simulcast": True},
            {"type": "video", "mid": "v3", "port": 0, "pt": 96, "codec": "vp8"},
        ],
    }
    config, _ = parse_mountpoint("m", group)
    return [ViewerTrack.offered(stream) for stream in config.streams]


def chosen(body: dict[str, Any]) -> list[tuple[str, dict[str, int]]]:
    return [(track.mid, layers) for track, layers in layer_choices(body, tracks())]


def test_a_simulcast_track_starts_on_the_highest_substream_as_janus() -> None:
    audio, first, _, plain = tracks()
    assert (audio.substream, first.substream, plain.substream) == (None, 2, None)
    assert (first.source_index, plain.source_index) == (1 + 2 * 65536, 3)


def test_top_level_keys_go_to_the_mid_named_or_every_simulcast_track() -> None:
    assert chosen({"substream": 0}) == [("v1", {"substream": 0}), ("v2", {"substream": 0})]
    assert chosen({"mid": "v2", "substream": 1, "temporal": 0}) == [("v2", {"substream": 1, "temporal": 0})]
    assert chosen({"mid": "v3", "substream": 1}) == [], "not simulcast: ignored, as Janus"
    assert chosen({"video": False}) == []


def test_streams_entries_choose_per_mid() -> None:
    body = {"streams": [{"mid": "v1", "substream": 0}, {"mid": "v2", "temporal": 1, "fallback": 500}, {"mid": "a"}]}
    assert chosen(body) == [("v1", {"substream": 0}), ("v2", {"temporal": 1, "fallback": 500})]


def test_adaptive_turns_automatic_choice_on_or_off_and_is_on_by_default_for_simulcast() -> None:
    audio, first, _, plain = tracks()
    assert (audio.adaptive, first.adaptive, plain.adaptive) == (False, True, False)
    assert chosen({"adaptive": False}) == [("v1", {"adaptive": 0}), ("v2", {"adaptive": 0})]
    assert chosen({"streams": [{"mid": "v2", "adaptive": True}]}) == [("v2", {"adaptive": 1})]


def test_a_vp9_or_av1_track_takes_janus_svc_temporal_layer_and_adaptive() -> None:
    group = {
        "type": "rtp",
        "id": 2,
        "media": [
            {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp9"},
            {"type": "video", "mid": "w", "port": 0, "pt": 97, "codec": "vp8"},
            {"type": "video", "mid": "x", "port": 0, "pt": 98, "codec": "av1"},
        ],
    }
    config, _ = parse_mountpoint("m", group)
    vp9_tracks = [ViewerTrack.offered(stream) for stream in config.streams]

    def vp9_chosen(body: dict[str, Any]) -> list[tuple[str, dict[str, int]]]:
        return [(track.mid, layers) for track, layers in layer_choices(body, vp9_tracks)]

    assert vp9_chosen({"temporal_layer": 0}) == [("v", {"temporal": 0}), ("x", {"temporal": 0})], "not for VP8"
    assert vp9_chosen({"mid": "v", "temporal": 1, "spatial_layer": 2}) == [("v", {"temporal": 1, "spatial": 2})]
    assert vp9_chosen({"mid": "x", "temporal": 1, "spatial_layer": 2}) == [("x", {"temporal": 1})], "no AV1 spatial"
    assert vp9_chosen({"mid": "x", "spatial_layer": 2}) == [], "nothing for AV1"
    assert vp9_chosen({"mid": "v", "temporal": 1, "temporal_layer": 0}) == [("v", {"temporal": 0})], "Janus's key first"
    assert vp9_chosen({"streams": [{"mid": "v", "adaptive": False}]}) == [("v", {"adaptive": 0})]
    assert vp9_chosen({"streams": [{"mid": "x", "adaptive": True}]}) == [("x", {"adaptive": 1})]
    assert vp9_chosen({"substream": 1}) == [], "no substreams"
    with pytest.raises(StreamingError):
        vp9_chosen({"spatial_layer": -1})


@pytest.mark.parametrize(
    "body",
    [{"substream": "1"}, {"temporal": -1}, {"substream": True}, {"mid": 3, "substream": 0}, {"adaptive": 1},
     {"temporal_layer": "0"},
     {"streams": [{"mid": "v1", "adaptive": "yes"}]}],
)  # fmt: skip
def test_bad_values_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(StreamingError) as error:
        layer_choices(body, tracks())
    assert error.value.code == 454


def test_a_silent_requested_substream_gives_way_to_the_highest_one_below_that_sends() -> None:
    _, track, _, _ = tracks()  # mindex 1: substream k is source index 1 + k * 65536
    index = [1 + substream * 65536 for substream in range(3)]
    assert track.requested_substream == 2 and track.fallback_us == 250_000, "Janus's defaults"
    assert track.substream_to_take({index[0]: 20, index[1]: 20, index[2]: 20}) == 2
    assert track.substream_to_take({index[0]: 20, index[1]: 20, index[2]: 300}) == 1
    assert track.substream_to_take({index[0]: 20, index[1]: None, index[2]: 300}) == 0, "None: nothing came yet"
    track.substream = 1
    assert track.substream_to_take({index[0]: 900, index[1]: 900, index[2]: 900}) == 1, "all silent: stay"
    track.fallback_us = 1_000_000
    assert track.substream_to_take({index[0]: 20, index[1]: 20, index[2]: 900}) == 2
    track.requested_substream = 0
    assert track.substream_to_take({index[0]: 20, index[1]: 20, index[2]: 20}) == 0, "never above what was asked"
