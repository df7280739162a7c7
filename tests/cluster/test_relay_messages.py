"""The relay's messages and the relay mountpoint's configuration."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fanout.cluster.relay import (
    RelayGranted,
    RelayMessageError,
    RelayRequest,
    RelayStream,
    relay_config,
    relay_streams,
)
from fanout.plugins.streaming.config import MountpointConfigError, RelaySource, parse_mountpoint
from fanout.plugins.streaming.mountpoint import source_stream
from fanout.plugins.streaming.persistence import mountpoint_settings
from hypothesis import given, settings
from hypothesis import strategies as st

REQUEST = RelayRequest(
    relay_id="edge-1/7/0a1b2c3d",
    edge="edge-1",
    mountpoint=7,
    address=("127.0.0.3", 40000),
    srtp_profile="AEAD_AES_128_GCM",
    origin_key=bytes(range(28)),
    edge_key=bytes(range(28, 56)),
    streams=(RelayStream("a", 0, 1111, "opus", 111), RelayStream("v", 0, 2222, "vp8", 96), RelayStream("v", 1, 3333, "vp8", 96)),
)


def test_a_request_round_trips_through_its_body() -> None:
    assert RelayRequest.parse(REQUEST.to_body()) == REQUEST


def test_a_grant_round_trips_through_its_body() -> None:
    granted = RelayGranted("edge-1/7/0a1b2c3d", ("127.0.0.2", 10000), 5.0)
    assert RelayGranted.parse(granted.to_body()) == granted


def changed(**fields: Any) -> dict[str, Any]:
    return REQUEST.to_body() | fields


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (changed(mountpoint=True), "'mountpoint'"),
        (changed(mountpoint=None), "'mountpoint'"),
        (changed(address=["0.0.0.0", 4000]), "unicast"),
        (changed(address=["not an ip", 4000]), "unicast"),
        (changed(address=["127.0.0.3", 0]), "port"),
        (changed(address=["127.0.0.3", True]), "port"),
        (changed(address="127.0.0.3:4000"), "[ip, port]"),
        (changed(srtp_profile="NULL"), "'srtp_profile'"),
        (changed(origin_key=base64.b64encode(bytes(16)).decode()), "28 bytes"),
        (changed(edge_key="!!"), "28 bytes"),
        (changed(streams=[]), "'streams'"),
        (changed(streams="v"), "'streams'"),
        (changed(streams=[{"mid": "v", "substream": 0, "ssrc": 0, "codec": "vp8"}]), "'ssrc'"),
        (changed(streams=[{"mid": "v", "substream": 3, "ssrc": 5, "codec": "vp8"}]), "'substream'"),
        (changed(streams=[{"mid": "v", "substream": 0, "ssrc": 5}]), "'codec'"),
        (changed(streams=[{"mid": "v", "substream": 0, "ssrc": 5, "codec": "vp8", "payload_type": 96}] * 2), "SSRC"),
        (changed(streams=[{"mid": "v", "substream": 0, "ssrc": 5, "codec": "vp8", "payload_type": 128}]), "'payload_type'"),
        (changed(relay_id=""), "'relay_id'"),
        (changed(relay_id="x\n"), "'relay_id'"),
        (changed(edge=7), "'edge'"),
    ],
)
def test_a_request_without_what_it_needs_is_refused_naming_the_field(body: dict[str, Any], complaint: str) -> None:
    with pytest.raises(RelayMessageError, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        RelayRequest.parse(body)


RELAY_GROUP = {
    "type": "relay",
    "id": 7,
    "description": "the match, from the origin",
    "relay_url": "http://127.0.0.2:8088/",
    "relay_id": 3,
    "relay_node": "origin",
    "media": [
        {"type": "audio", "mid": "a", "pt": 111, "codec": "opus"},
        {"type": "video", "mid": "v", "pt": 96, "codec": "vp8", "simulcast": True},
    ],
}


def test_a_relay_mountpoint_from_the_file_has_its_origin_and_portless_streams() -> None:
    config, unsupported = parse_mountpoint("match", RELAY_GROUP)
    assert unsupported == []
    assert config.relay == RelaySource(origin_node="origin", origin_url="http://127.0.0.2:8088", origin_mountpoint=3)
    assert [(stream.mid, stream.codec.name, stream.substreams) for stream in config.streams] == [("a", "opus", 1), ("v", "vp8", 3)]
    assert [(stream.mid, substream) for stream, substream in relay_streams(config)] == [("a", 0), ("v", 0), ("v", 1), ("v", 2)]
    source = source_stream(config.streams[1], config)
    assert "port" not in source and "host" not in source and "rtcp_port" not in source


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"relay_url": None}, "missing 'relay_url'"),
        ({"relay_url": "rtsp://x"}, "http:// or https://"),
        ({"media": []}, "non-empty list"),
        ({"media": [{"type": "video", "mid": "v", "pt": 96, "codec": "vp8", "port": 5004}]}, "'port' is the origin's"),
        ({"media": [{"type": "data", "mid": "d"}]}, "not data"),
        ({"media": [{"type": "video", "mid": "v", "pt": 96}]}, "missing 'codec'"),
    ],
)
def test_a_relay_mountpoint_without_what_it_needs_is_refused(change: dict[str, Any], complaint: str) -> None:
    group = {key: value for key, value in (RELAY_GROUP | change).items() if value is not None}
    with pytest.raises(MountpointConfigError, match=complaint):
        parse_mountpoint("match", group)


def test_relay_config_keeps_the_origins_layout_without_its_ports() -> None:
    origin, _ = parse_mountpoint(
        "match",
        {"type": "rtp", "id": 7, "testsource": True,
         "media": [{"type": "video", "mid": "v", "pt": 96, "codec": "vp8", "port": 5004, "rtcpport": 5005,
                    "simulcast": True, "port2": 5006, "port3": 5008},
                   {"type": "data", "mid": "d", "port": 5010}]},
    )  # fmt: skip
    source = RelaySource(origin_node="origin", origin_url="http://127.0.0.2:8088")
    edge = relay_config(origin, source)
    assert edge.relay == source and edge.data is None and not edge.testsource
    assert [(stream.mid, stream.port, stream.rtcp_port, stream.substreams) for stream in edge.streams] == [("v", 0, None, 3)]


def test_a_relay_mountpoint_saved_reads_back_the_same() -> None:
    config, _ = parse_mountpoint("match", RELAY_GROUP)
    saved = mountpoint_settings(config)
    assert saved["type"] == "relay" and all("port" not in entry for entry in saved["media"])
    assert parse_mountpoint("match", saved)[0] == config


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(sorted(REQUEST.to_body())), JSON_VALUES, max_size=3))
def test_fuzz_a_request_with_any_fields_changed_parses_or_is_refused_with_its_own_error(changes: dict[str, Any]) -> None:
    try:
        RelayRequest.parse(REQUEST.to_body() | changes)
    except RelayMessageError:
        pass


@settings(max_examples=200, deadline=None)
@given(body=st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=6))
def test_fuzz_any_object_as_a_grant_parses_or_is_refused_with_its_own_error(body: dict[str, Any]) -> None:
    try:
        RelayGranted.parse(body)
    except RelayMessageError:
        pass
