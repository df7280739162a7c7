"""playoutdelay_ext and configure's min_delay/max_delay over the Janus API, without media:
recorded from the real Janus by record_janus_playout_delay.py, replayed against fanout by
test_playout_delay.py. A run creates mountpoints, watches each (the offer's playout-delay
a=extmap lines, per m-line), then sends configure requests on the first watch (the replies)."""

from __future__ import annotations

from typing import Any

from tests.support.janus_client import JanusHttpClient

PLAYOUT_DELAY_URI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
MEDIA = [
    {"type": "audio", "mid": "a", "port": 0, "pt": 111, "codec": "opus"},
    {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"},
]
LEGACY = {
    "audio": True, "audioport": 0, "audiopt": 111, "audiocodec": "opus",
    "video": True, "videoport": 0, "videopt": 96, "videocodec": "vp8",
}  # fmt: skip
MOUNTPOINTS: dict[str, dict[str, Any]] = {
    "media list": {"id": 78, "playoutdelay_ext": True, "media": MEDIA},
    "legacy keys": {"id": 77, "playoutdelay_ext": True} | LEGACY,
    "key inside a media entry (ignored)": {"id": 79, "media": [MEDIA[1] | {"playoutdelay_ext": True}]},
    "without": {"id": 80, "media": MEDIA},
}
CONFIGURES: list[dict[str, Any]] = [
    {"min_delay": 100, "max_delay": 200},
    {"min_delay": 50},
    {"max_delay": 30},
    {"min_delay": -1},
    {"min_delay": 5000, "max_delay": 6000},
    {"min_delay": 300, "max_delay": 100},
    {"streams": [{"mid": "v", "min_delay": 10, "max_delay": 20}]},
    {"streams": [{"mid": "a", "min_delay": 10}]},
    {"streams": [{"mid": "v", "send": False, "max_delay": 0}]},
    # Janus 1.1.2 takes any JSON here (a non-integer counts as 0); fanout refuses it.
    {"min_delay": "100"},
    {"max_delay": 1.5},
    {"min_delay": True},
    {"streams": [{"mid": "v", "min_delay": "a"}]},
]


async def run(client: JanusHttpClient) -> dict[str, Any]:
    """The playout-delay lines of each mountpoint's offer, and the configure replies."""
    offers: dict[str, list[list[str]]] = {}
    handles: dict[str, int] = {}
    for name, definition in MOUNTPOINTS.items():
        manager = await client.attach()
        reply = await client.message(manager, {"request": "create", "type": "rtp"} | definition)
        assert reply["plugindata"]["data"]["streaming"] == "created", reply
        handles[name] = await client.attach()
        ack = await client.message(handles[name], {"request": "watch", "id": definition["id"]})
        assert ack["janus"] == "ack", ack
        event = await client.plugin_event(handles[name])
        sections = event["jsep"]["sdp"].split("\r\nm=")[1:]
        offers[name] = [[line for line in section.split("\r\n") if PLAYOUT_DELAY_URI in line] for section in sections]
    replies = []
    for body in CONFIGURES:
        ack = await client.message(handles["media list"], {"request": "configure"} | body)
        assert ack["janus"] == "ack", ack
        replies.append((await client.plugin_event(handles["media list"]))["plugindata"]["data"])
    return {"offers": offers, "configure": replies}
