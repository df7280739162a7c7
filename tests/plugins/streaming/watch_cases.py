"""``watch`` and ``start`` as a viewer sends them, with the events they bring: recorded from the
real Janus by record_janus.py (``watch``), replayed against fanout by test_watch.py.

Each case is a list of request bodies sent on one handle; each reply is the plugin's data
(a synchronous reply) or, for an ``ack``, the event carrying the request's transaction. An
offer is summed up as its m-lines' kinds and mids (servers write the rest their own way).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.plugins.streaming.management_cases import mask

Message = dict[str, Any]
EVENT_TIMEOUT = 10.0

# A mountpoint with a data stream too (made by the first step of the cases that use it).
WITH_DATA = {
    "request": "create",
    "type": "rtp",
    "id": 140,
    "media": [
        {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"},
        {"type": "data", "mid": "d", "port": 0},
    ],
}

WATCH_CASES: dict[str, list[Message]] = {
    "start_before_the_answer": [
        {"request": "watch", "id": 1},
        {"request": "start"},
    ],
    "offer_audio_false": [{"request": "watch", "id": 1, "offer_audio": False}],
    "offer_video_false": [{"request": "watch", "id": 1, "offer_video": False}],
    "offer_audio_and_video_false": [
        {"request": "watch", "id": 1, "offer_audio": False, "offer_video": False},
        {"request": "watch", "id": 1, "offer_audio": True},
    ],
    "offer_data_false_without_data": [{"request": "watch", "id": 1, "offer_data": False}],
    "offer_bad_type": [
        {"request": "watch", "id": 1, "offer_audio": "x"},
        {"request": "watch", "id": 1, "offer_video": 0},
        {"request": "watch", "id": 1, "offer_data": None},
    ],
    "offer_data_false": [
        WITH_DATA,
        {"request": "watch", "id": 140, "offer_data": False},
    ],
    "offer_only_data": [
        WITH_DATA | {"id": 141},
        {"request": "watch", "id": 141, "offer_video": False},
    ],
    "offer_nothing_with_data": [
        WITH_DATA | {"id": 142},
        {"request": "watch", "id": 142, "offer_video": False, "offer_data": False},
    ],
}


def offer_summary(sdp: str) -> list[str]:
    """An SDP's m-lines as ``<kind> <mid>``."""
    summary: list[str] = []
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("m="):
            summary.append(line[2:].split(" ", 1)[0])
        elif line.startswith("a=mid:") and summary:
            summary[-1] += " " + line[len("a=mid:") :]
    return summary


def summed_up(event: Message) -> Message:
    result: Message = {"data": event.get("plugindata", {}).get("data")}
    jsep = event.get("jsep")
    if isinstance(jsep, dict):
        result["jsep"] = {"type": jsep.get("type"), "media": offer_summary(str(jsep.get("sdp", "")))}
    return result


async def run_watch_case(http: aiohttp.ClientSession, janus_url: str, bodies: list[Message]) -> list[Any]:
    """Run one case on a fresh session and handle; per request, the plugin's reply or event."""

    async def post(path: str, body: Message) -> Message:
        async with http.post(janus_url + path, data=json.dumps(body)) as response:
            return await response.json(content_type=None)  # type: ignore[no-any-return]

    session_id = (await post("", {"janus": "create", "transaction": "c"}))["data"]["id"]
    handle_id = (await post(f"/{session_id}", {"janus": "attach", "transaction": "a", "plugin": "janus.plugin.streaming"}))["data"]["id"]
    waiting: dict[str, asyncio.Future[Message]] = {}

    async def poll() -> None:
        while True:
            async with http.get(f"{janus_url}/{session_id}?maxev=10") as response:
                reply = await response.json(content_type=None)
            for event in reply if isinstance(reply, list) else [reply]:
                future = waiting.get(event.get("transaction", ""))
                if event.get("janus") == "event" and future is not None and not future.done():
                    future.set_result(event)

    poller = asyncio.get_running_loop().create_task(poll())
    replies: list[Any] = []
    try:
        for number, body in enumerate(bodies):
            transaction = f"step{number}"
            waiting[transaction] = asyncio.get_running_loop().create_future()
            reply = await post(f"/{session_id}/{handle_id}", {"janus": "message", "transaction": transaction, "body": body})
            if reply.get("janus") == "success":
                replies.append(mask(reply["plugindata"]["data"]))
            elif reply.get("janus") == "ack":
                replies.append(summed_up(await asyncio.wait_for(waiting[transaction], EVENT_TIMEOUT)))
            else:
                replies.append({"janus": reply.get("janus"), "error": reply.get("error")})
    finally:
        poller.cancel()
        await post(f"/{session_id}", {"janus": "destroy", "transaction": "d"})
    return replies
