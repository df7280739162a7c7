"""configure's min_delay and max_delay (Janus's units: 10 ms): how they are read and what a
viewer's tracks then carry; the offers and replies over the API beside the real Janus's. The
packets themselves: tests/e2e/test_playout_delay.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fanout.plugins.streaming.config import parse_mountpoint
from fanout.plugins.streaming.errors import StreamingError
from fanout.plugins.streaming.subscription import playout_delay_choices, send_choices
from fanout.plugins.streaming.viewer import ViewerTrack

from tests.plugins.streaming import playout_delay_cases
from tests.support.janus_client import JanusHttpClient
from tests.support.server import FanoutProcess, write_config

RECORDING = json.loads((Path(__file__).parent / "data" / "janus_playout_delay.json").read_text())["recording"]

MOUNTPOINT, _ = parse_mountpoint(
    "m",
    {
        "type": "rtp",
        "id": 1,
        "playoutdelay_ext": True,
        "media": [
            {"type": "audio", "mid": "a", "port": 0, "pt": 111, "codec": "opus"},
            {"type": "video", "mid": "v1", "port": 0, "pt": 96, "codec": "vp8"},
            {"type": "video", "mid": "v2", "port": 0, "pt": 97, "codec": "vp8"},
        ],
    },
)


def tracks(playoutdelay_ext: bool = True) -> list[ViewerTrack]:
    return [ViewerTrack.offered(stream, playoutdelay_ext=playoutdelay_ext) for stream in MOUNTPOINT.streams]


def configure(tracks: list[ViewerTrack], body: dict[str, Any]) -> list[tuple[int, int] | None]:
    send_choices(body, tracks)  # as the plugin: the streams entries are checked first
    for track, minimum, maximum in playout_delay_choices(body, tracks):
        track.configure_playout_delay(minimum, maximum)
    return [track.playout_delay_ms() for track in tracks]


def test_video_tracks_offer_the_extension_when_the_mountpoint_enables_it() -> None:
    assert [track.playout_delay_extension_id for track in tracks()] == [None, 12, 12]
    assert [track.playout_delay_extension_id for track in tracks(playoutdelay_ext=False)] == [None, None, None]


def test_top_level_delays_apply_to_every_video_track() -> None:
    viewer = tracks()
    assert configure(viewer, {"min_delay": 100, "max_delay": 200}) == [None, (1000, 2000), (1000, 2000)]


def test_per_mid_delays_apply_to_their_track() -> None:
    viewer = tracks()
    body = {"streams": [{"mid": "v2", "min_delay": 0, "max_delay": 0}, {"mid": "a", "min_delay": 5}]}
    assert configure(viewer, body) == [None, None, (0, 0)]
    assert viewer[0].min_delay == -1, "audio has no playout delay"


def test_one_bound_at_a_time_as_janus() -> None:
    viewer = tracks()
    assert configure(viewer, {"max_delay": 30}) == [None, None, None], "a maximum alone sends nothing"
    assert configure(viewer, {"min_delay": 50}) == [None, (500, 500), (500, 500)], "the maximum rises to the minimum"
    assert configure(viewer, {"max_delay": 20}) == [None, (200, 200), (200, 200)], "the minimum falls to the maximum"
    assert configure(viewer, {"max_delay": 300}) == [None, (200, 3000), (200, 3000)]
    assert configure(viewer, {"min_delay": 9000}) == [None, (40950, 40950), (40950, 40950)], "12 bits at most"
    assert configure(viewer, {"min_delay": -1}) == [None, None, None], "negative: no playout delay"


def test_nothing_is_sent_without_the_extension() -> None:
    viewer = tracks(playoutdelay_ext=False)
    assert configure(viewer, {"min_delay": 10, "max_delay": 20}) == [None, None, None]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"min_delay": "100"}, "Invalid element type (min_delay should be an integer)"),
        ({"max_delay": 1.5}, "Invalid element type (max_delay should be an integer)"),
        ({"min_delay": True}, "Invalid element type (min_delay should be an integer)"),
        ({"streams": [{"mid": "v1", "max_delay": "x"}]}, "Invalid element type (max_delay should be an integer)"),
        ({"streams": [{"mid": "nope", "min_delay": 10}]}, "No such mid 'nope' in this subscription"),
    ],
)
def test_bad_values_are_refused_and_change_nothing(body: dict[str, Any], reason: str) -> None:
    viewer = tracks()
    configure(viewer, {"min_delay": 10, "max_delay": 20})
    with pytest.raises(StreamingError) as error:
        configure(viewer, body | {"min_delay": body.get("min_delay", 30)})
    assert error.value.to_data() == {"streaming": "event", "error_code": 454, "error": reason}
    assert [track.playout_delay_ms() for track in viewer] == [None, (100, 200), (100, 200)]


async def test_offers_and_configure_replies_as_janus(tmp_path: Path) -> None:
    """The same playout-delay a=extmap lines as Janus 1.1.2 (id 12, video only, with the
    mountpoint-level key in either form), the same ``configured`` replies; but where Janus
    takes any JSON as a delay (a non-integer counts as 0), fanout refuses it."""
    addresses = write_config(tmp_path / "config", "")
    with FanoutProcess(tmp_path / "config"):
        async with aiohttp.ClientSession() as http:
            client = JanusHttpClient(http, addresses.janus_url)
            await client.create()
            recording = await playout_delay_cases.run(client)
            await client.close()
    assert recording["offers"] == RECORDING["offers"]
    refused = {
        len(playout_delay_cases.CONFIGURES) - 4 + i: {
            "streaming": "event",
            "error_code": 454,
            "error": f"Invalid element type ({key} should be an integer)",
        }
        for i, key in enumerate(["min_delay", "max_delay", "min_delay", "min_delay"])
    }
    expected = [refused.get(step, reply) for step, reply in enumerate(RECORDING["configure"])]
    assert recording["configure"] == expected
