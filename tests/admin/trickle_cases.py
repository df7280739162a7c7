"""Candidates trickled before their SDP, against ``candidates_timeout``: recorded from Debian's
Janus 1.1.2 by record_janus.py (with ``candidates_timeout = 1``), replayed against fanout by
test_candidates_timeout.py.

Each case trickles a candidate at once, waits, asks for the offer (``watch``), trickles a
second candidate, waits, and answers; handle_info tells how many candidates wait before the
answer and which ones the PeerConnection took after it. A candidate that waited
``candidates_timeout`` seconds or more is dropped.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.core.janus_scenarios import answer_from_offer

CANDIDATES_TIMEOUT = 1
PAST_THE_TIMEOUT = 1.6  # seconds: past candidates_timeout, with a margin for a busy machine
FIRST = {"candidate": "candidate:1 1 udp 2122260223 192.0.2.9 50000 typ host", "sdpMid": "a"}
SECOND = {"candidate": "candidate:2 1 udp 2122260223 192.0.2.9 50002 typ host", "sdpMid": "a"}
# (seconds before the watch, seconds before the answer)
CASES = {"none_waited_too_long": (0.0, 0.0), "first_waited_too_long": (PAST_THE_TIMEOUT, 0.0), "both_waited_too_long": (0.0, PAST_THE_TIMEOUT)}


async def run_trickle_case(http: aiohttp.ClientSession, janus_url: str, admin_url: str, waits: tuple[float, float]) -> dict[str, Any]:
    async def post(url: str, body: dict[str, Any]) -> Any:
        async with http.post(url, data=json.dumps(body)) as response:
            return await response.json(content_type=None)

    session = (await post(janus_url, {"janus": "create", "transaction": "c"}))["data"]["id"]
    handle = (await post(f"{janus_url}/{session}", {"janus": "attach", "transaction": "a", "plugin": "janus.plugin.streaming"}))["data"]["id"]
    at_handle = f"{janus_url}/{session}/{handle}"
    await post(at_handle, {"janus": "trickle", "transaction": "t1", "candidate": FIRST})
    await asyncio.sleep(waits[0])
    await post(at_handle, {"janus": "message", "transaction": "w", "body": {"request": "watch", "id": 1}})
    async with http.get(f"{janus_url}/{session}?maxev=1") as response:
        offer = (await response.json(content_type=None))["jsep"]["sdp"]
    await post(at_handle, {"janus": "trickle", "transaction": "t2", "candidate": SECOND})
    await asyncio.sleep(waits[1])
    before = (await post(f"{admin_url}/{session}/{handle}", {"janus": "handle_info", "transaction": "i"}))["info"]
    answer = {"janus": "message", "transaction": "s", "body": {"request": "start"}, "jsep": {"type": "answer", "sdp": answer_from_offer(offer)}}
    await post(at_handle, answer)
    after = (await post(f"{admin_url}/{session}/{handle}", {"janus": "handle_info", "transaction": "i"}))["info"]
    await post(f"{janus_url}/{session}", {"janus": "destroy", "transaction": "d"})
    return {
        "pending_before_the_answer": before.get("pending-trickles"),
        "pending_after_the_answer": after.get("pending-trickles"),
        "remote_candidates": after.get("webrtc", {}).get("ice", {}).get("remote-candidates"),
    }
