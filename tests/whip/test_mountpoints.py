"""``type = "whip"`` mountpoints: read from the .jcfg and from ``create``, saved with
``permanent``, and shown by ``info``/``list`` with whether a publisher is live."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fanout.config.jcfg import load
from fanout.plugins.streaming.config import DEFAULT_WHIP_BITRATE, MountpointConfigError, mountpoints_from_file, parse_mountpoint
from fanout.plugins.streaming.errors import StreamingError
from fanout.plugins.streaming.management import created_reply, mountpoint_from_create
from fanout.plugins.streaming.mountpoint import Mountpoint
from fanout.plugins.streaming.persistence import save_mountpoint

MEDIA = [
    {"type": "audio", "mid": "a", "codec": "opus", "pt": 111},
    {"type": "video", "mid": "v", "codec": "h264", "pt": 96, "simulcast": True},
]
CREATE = {"request": "create", "type": "whip", "id": 9, "name": "obs", "whip_token": "t0k", "secret": "s", "media": MEDIA}


def test_a_whip_mountpoint_takes_its_streams_without_ports() -> None:
    config, unsupported = parse_mountpoint("obs", {"type": "whip", "id": 9, "whip_token": "t0k", "media": MEDIA})

    assert unsupported == []
    assert config.whip is not None and config.whip.token == "t0k" and config.whip.bitrate == DEFAULT_WHIP_BITRATE
    assert [(s.kind, s.codec.name, s.payload_type, s.port) for s in config.streams] == [("audio", "opus", 111, 0), ("video", "h264", 96, 0)]
    assert config.streams[1].substreams == 3  # the publisher's rid layers


@pytest.mark.parametrize(
    ("definition", "error"),
    [
        ({"media": [{"type": "audio", "mid": "a", "codec": "opus", "pt": 111, "port": 5000}]},
         "media[0]: 'port' has no meaning in a whip mountpoint: its publisher sends over WebRTC"),
        ({"media": MEDIA, "srtpsuite": 80}, "'srtpsuite' has no meaning in a whip mountpoint"),
        ({}, "a whip mountpoint needs a 'media' list of the streams it takes"),
        ({"media": MEDIA, "whip_bitrate": 5}, "'whip_bitrate' must be at least 10000 (bit/s)"),
        ({"media": MEDIA, "whip_token": ""}, "'whip_token' must not be empty"),
        ({"media": [{"type": "data", "mid": "d"}]}, "media[0]: type must be 'audio' or 'video', not 'data'"),
    ],
    ids=["port", "srtp", "no-media", "tiny-bitrate", "empty-token", "data"],
)
def test_what_a_whip_mountpoint_cannot_have_is_refused_by_name(definition: dict[str, Any], error: str) -> None:
    with pytest.raises(MountpointConfigError) as refused:
        parse_mountpoint("obs", {"type": "whip", "id": 9, **definition})
    assert error in str(refused.value)


def test_create_makes_one_and_tells_where_to_publish() -> None:
    config = mountpoint_from_create(CREATE, set())
    reply = created_reply(config, [0, 0], permanent=False, legacy=False)

    assert config.whip is not None and config.secret == "s"
    assert reply["stream"] == {"id": 9, "type": "live", "description": "obs", "is_private": False, "whip": "/whip/endpoint/9"}


def test_create_without_media_is_refused() -> None:
    with pytest.raises(StreamingError) as refused:
        mountpoint_from_create({"request": "create", "type": "whip", "id": 9}, set())
    assert "no media list" in refused.value.reason


def test_a_saved_whip_mountpoint_reads_back_the_same(tmp_path: Path) -> None:
    path = tmp_path / "janus.plugin.streaming.jcfg"
    config = mountpoint_from_create({**CREATE, "whip_bitrate": 3_000_000}, set())
    save_mountpoint(path, config)

    assert mountpoints_from_file(load(path)) == [config]
    assert "port" not in path.read_text()


@dataclass
class StreamStats:
    index: int
    last_packet_age_ms: int | None


@dataclass
class MountpointStats:
    streams: list[StreamStats]


class StatsEngine:
    def publisher_stats(self, mountpoint_id: int) -> None:
        return None

    def mountpoint_stats(self, mountpoint_id: int) -> MountpointStats:
        return MountpointStats([StreamStats(0, None), StreamStats(1, 20), StreamStats(1 + 65536, None), StreamStats(1 + 131072, 40)])


def test_info_and_list_show_whether_a_publisher_is_live() -> None:
    config = mountpoint_from_create(CREATE, set())
    mountpoint = Mountpoint(config, engine_id=1, ports=[0, 0], created_at=time.monotonic())
    engine: Any = StatsEngine()

    info = mountpoint.info(engine, with_secret=True)
    assert (info["whip"], info["publisher_live"]) == (True, False)
    assert all("port" not in entry for entry in info["media"])
    assert "t0k" not in str(info)  # the token is never shown
    assert mountpoint.list_entry(engine)["publisher_live"] is False

    mountpoint.publisher_attached = True
    assert mountpoint.info(engine, with_secret=False)["publisher_live"] is False  # attached, nothing sent yet
    mountpoint.silence.resumed(1)
    assert mountpoint.info(engine, with_secret=False)["publisher_live"] is True
    assert mountpoint.list_entry(engine)["publisher_live"] is True
    for index in mountpoint.silence.indexes:
        mountpoint.silence.silent(index, 1000, time.monotonic())
    assert mountpoint.list_entry(engine)["publisher_live"] is False  # attached, but every stream fell silent
