"""Streaming plugin management requests (create, edit, destroy, enable, disable, kick_all,
list, info) as sequences run on one handle: recorded from the real Janus by
record_janus.py, replayed against fanout by test_management.py.

Each case is a list of request bodies. Replies are masked where servers may
differ by design: ``age_ms`` (time), ports picked by the server (``port`` 0),
and ids picked by the server (a ``create`` without ``id``).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

Message = dict[str, Any]
ADMIN_KEY = "adm1n"

# The mountpoint both servers start with (Janus's config syntax, also fanout's).
STREAMING_CONFIG = """general: {
%(general)s
}
configured: {
	type = "rtp"
	id = %(configured_id)s
	description = "configured mountpoint"
	secret = "s3cret"
	audio = true
	audioport = %(audio_port)d
	audiopt = 111
	audiocodec = "opus"
	video = true
	videoport = %(video_port)d
	videopt = 96
	videocodec = "vp8"
}
"""


def video_only(mountpoint_id: int | None = None, **extra: Any) -> Message:
    body: Message = {"request": "create", "type": "rtp"}
    if mountpoint_id is not None:
        body["id"] = mountpoint_id
    body["media"] = [{"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"}]
    return body | extra


LEGACY = {
    "request": "create",
    "type": "rtp",
    "id": 101,
    "name": "legacy",
    "description": "legacy keys",
    "secret": "s",
    "pin": "p",
    "is_private": True,
    "audio": True,
    "audioport": 0,
    "audiopt": 111,
    "audiocodec": "opus",
    "video": True,
    "videoport": 0,
    "videopt": 96,
    "videocodec": "vp8",
}

CASES: dict[str, list[Message]] = {
    "create_list_info_destroy": [
        video_only(100, description="made by create"),
        {"request": "list"},
        {"request": "info", "id": 100},
        {"request": "destroy", "id": 100},
        {"request": "info", "id": 100},
        {"request": "list"},
    ],
    "create_with_playoutdelay_ext": [
        video_only(108, playoutdelay_ext=True),
        LEGACY | {"id": 109, "is_private": False, "playoutdelay_ext": True},
        {"request": "info", "id": 108},
        video_only(110, playoutdelay_ext="yes"),
        {"request": "destroy", "id": 108},
        {"request": "destroy", "id": 109, "secret": "s"},
    ],
    "create_legacy_private_with_secret": [
        LEGACY,
        {"request": "list"},
        {"request": "info", "id": 101},
        {"request": "info", "id": 101, "secret": "s"},
        {"request": "destroy", "id": 101},
        {"request": "destroy", "id": 101, "secret": "wrong"},
        {"request": "destroy", "id": 101, "secret": "s"},
    ],
    "create_multistream_default_labels": [
        {
            "request": "create",
            "type": "rtp",
            "id": 140,
            "media": [
                {"type": "audio", "mid": "a", "port": 0, "pt": 111, "codec": "opus"},
                {"type": "video", "mid": "v1", "port": 0, "pt": 96, "codec": "vp8"},
                {"type": "video", "mid": "v2", "port": 0, "pt": 97, "codec": "vp8", "label": "second"},
            ],
        },
        {"request": "info", "id": 140},
        {"request": "destroy", "id": 140},
    ],
    "create_without_id": [
        video_only(None, name="no-id"),
    ],
    "create_errors": [
        {"request": "create"},
        {"request": "create", "type": "foo"},
        {"request": "create", "type": "rtp", "id": "7"},
        video_only(1),
        {"request": "create", "type": "rtp", "id": 102},
        {"request": "create", "type": "rtp", "id": 103, "media": "nope"},
        {"request": "create", "type": "rtp", "id": 104, "media": [{"type": "video", "mid": "v", "port": 0}]},
        {"request": "create", "type": "rtp", "id": 105, "media": [{"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "theora"}]},
        {"request": "create", "type": "rtp", "id": 106, "description": 5, "media": [{"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"}]},
    ],
    "edit": [
        video_only(110, description="before", secret="e"),
        {"request": "edit", "id": 110, "secret": "e", "new_description": "after", "new_pin": "1234", "new_is_private": True},
        {"request": "info", "id": 110, "secret": "e"},
        {"request": "list"},
        {"request": "edit", "id": 110, "new_description": "nope"},
        {"request": "edit", "id": 110, "secret": "e", "new_secret": "f"},
        {"request": "info", "id": 110, "secret": "f"},
        {"request": "edit", "id": 999, "secret": "e"},
        {"request": "edit", "secret": "e"},
        {"request": "destroy", "id": 110, "secret": "f"},
    ],
    "kick_all": [
        {"request": "kick_all", "id": 1},
        {"request": "kick_all", "id": 1, "secret": "s3cret"},
        {"request": "kick_all", "id": 999, "secret": "s3cret"},
        {"request": "kick_all"},
    ],
}

# Simulcast mountpoints (recorded apart, in janus_simulcast.json): both forms, with and
# without the substreams' ports; Janus binds three substreams either way.
SIMULCAST_CASES: dict[str, list[Message]] = {
    "create_simulcast": [
        video_only(150, secret="s", media=[
            {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8", "simulcast": True, "port2": 0, "port3": 0}
        ]),
        {"request": "info", "id": 150},
        {"request": "info", "id": 150, "secret": "s"},
        {"request": "list"},
        {"request": "destroy", "id": 150, "secret": "s"},
        {"request": "create", "type": "rtp", "id": 151, "video": True, "videoport": 0, "videopt": 96,
         "videocodec": "vp8", "videosimulcast": True, "videoport2": 0, "videoport3": 0},
        {"request": "info", "id": 151},
        {"request": "destroy", "id": 151},
        video_only(152, media=[{"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8", "simulcast": True}]),
        {"request": "info", "id": 152},
        {"request": "destroy", "id": 152},
        video_only(154, media=[
            {"type": "audio", "mid": "a", "port": 0, "pt": 111, "codec": "opus", "simulcast": True, "port2": 0}
        ]),
        {"request": "info", "id": 154},
        {"request": "destroy", "id": 154},
    ],
}

# What a creator should not control (issue 16): Janus 1.1.2 takes every one of these,
# fanout refuses each (test_untrusted_input.py compares). Recorded into janus_hostile.json.
FOREIGN_CANDIDATE = "a=candidate:1 1 udp 2130706431 203.0.113.66 9 typ host"
HOSTILE_CASES: dict[str, list[Message]] = {
    "create_hostile": [
        video_only(160, media=[{"type": "video", "mid": "v\r\n" + FOREIGN_CANDIDATE, "port": 0, "pt": 96, "codec": "vp8"}]),
        video_only(161, media=[{"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8",
                                "fmtp": "x=1\r\n" + FOREIGN_CANDIDATE}]),
        video_only(162, media=[{"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8",
                                "msid": "s t\r\n" + FOREIGN_CANDIDATE}]),
        video_only(163, media=[{"type": "video", "mid": "m" * 65, "port": 0, "pt": 96, "codec": "vp8"}]),
        video_only(164, name="n\r\nforged log line"),
        video_only(165, description="x" * 4097),
        video_only(166, media=[{"type": "video", "mid": "v", "port": 22, "pt": 96, "codec": "vp8"}]),
        {"request": "edit", "id": 1, "secret": "s3cret", "new_secret": "s\r\nt"},
    ],
}  # fmt: skip

# Janus 1.1.2 crashes on "disable" with the right secret, so these are checked against
# Janus's documentation in test_management.py instead of a recording.
UNRECORDED_CASES: dict[str, list[Message]] = {
    "enable_disable": [
        video_only(130, secret="d"),
        {"request": "disable", "id": 130},
        {"request": "disable", "id": 130, "secret": "d"},
        {"request": "info", "id": 130, "secret": "d"},
        {"request": "list"},
        {"request": "enable", "id": 130, "secret": "d"},
        {"request": "info", "id": 130, "secret": "d"},
        {"request": "enable", "id": 999, "secret": "d"},
        {"request": "destroy", "id": 130, "secret": "d"},
    ],
}

# With string_ids = true in the plugin's general group; the configured mountpoint is "one".
STRING_ID_CASES: dict[str, list[Message]] = {
    "string_ids": [
        {"request": "list"},
        {"request": "info", "id": "one", "secret": "s3cret"},
        {"request": "info", "id": 1},
        {"request": "info", "id": ""},
        {"request": "info", "id": "nope"},
        {"request": "create", "type": "rtp", "id": "cam-1", "description": "camera", "media": [{"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"}]},
        {"request": "create", "type": "rtp", "id": 7, "media": [{"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"}]},
        {"request": "create", "type": "rtp", "id": "cam-1", "media": [{"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"}]},
        {"request": "info", "id": "cam-1"},
        {"request": "edit", "id": "cam-1", "new_description": "renamed"},
        {"request": "destroy", "id": "cam-1"},
        {"request": "create", "type": "rtp", "name": "anonymous", "media": [{"type": "audio", "mid": "a", "port": 0, "pt": 111, "codec": "opus"}]},
        {"request": "watch", "id": 1},
    ],
}

ADMIN_CASES: dict[str, list[Message]] = {
    "create_needs_admin_key": [
        video_only(120),
        video_only(120, admin_key="wrong"),
        video_only(120, admin_key=ADMIN_KEY),
        {"request": "destroy", "id": 120},
        {"request": "list"},
        {"request": "list", "admin_key": ADMIN_KEY},
    ],
}


PORT_KEYS = {
    "port", "rtcp_port", "audio_port", "video_port", "port2", "port3", "port_2", "port_3", "video_port_2",
    "video_port_3",
}  # fmt: skip


def mask(reply: Any, created_id_unknown: bool = False) -> Any:
    """Replace what servers may pick differently."""
    text = json.dumps(reply)
    value = json.loads(text)

    def walk(node: Any, key: str | None = None) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        if key == "age_ms":
            return "{age}"
        if key in PORT_KEYS and isinstance(node, int) and node >= 10000:
            return "{port}"
        return node

    masked = walk(value)
    if created_id_unknown:
        stream = masked.get("stream") if isinstance(masked, dict) else None
        if isinstance(stream, dict) and "id" in stream:
            stream["id"] = "{id}"
    return masked


async def run_case(http: aiohttp.ClientSession, janus_url: str, bodies: list[Message], *, trace: bool = False) -> list[Any]:
    """Run one case on a fresh session and handle; the masked plugin replies, in order."""

    async def post(path: str, body: Message) -> Message:
        async with http.post(janus_url + path, data=json.dumps({"transaction": "t", **body})) as response:
            return await response.json(content_type=None)  # type: ignore[no-any-return]

    session_id = (await post("", {"janus": "create"}))["data"]["id"]
    handle_id = (await post(f"/{session_id}", {"janus": "attach", "plugin": "janus.plugin.streaming"}))["data"]["id"]
    replies = []
    for body in bodies:
        if trace:
            print("->", json.dumps(body))
        reply = await post(f"/{session_id}/{handle_id}", {"janus": "message", "body": body})
        if reply.get("janus") == "success":
            result: Any = reply["plugindata"]["data"]
        else:
            result = {"janus": reply.get("janus")}
        replies.append(mask(result, created_id_unknown=body.get("request") == "create" and "id" not in body))
    await post(f"/{session_id}", {"janus": "destroy"})
    return replies
