"""Janus API behaviours over time: the long poll's maxev and keepalive, session timeout,
sessions of a closed WebSocket, claim. Shared by record_janus.py and the transport tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.core.janus_scenarios import STREAMING, mask, record_headers, websocket

Message = dict[str, Any]


async def _post(http: aiohttp.ClientSession, url: str, body: Message) -> Message:
    async with http.post(url, data=json.dumps(body)) as response:
        return await response.json(content_type=None)  # type: ignore[no-any-return]


async def _get(http: aiohttp.ClientSession, url: str, timeout: float) -> dict[str, Any]:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
        raw = await response.read()
        result: dict[str, Any] = {"status": response.status, "headers": record_headers(response.headers)}
        result["headers"].pop("Content-Length", None)
        result["json"] = json.loads(raw) if raw else None
        return result


async def long_poll(http: aiohttp.ClientSession, base_url: str, keepalive_wait: float) -> list[dict[str, Any]]:
    """Four events queued, taken by polls without maxev, with maxev=1 and maxev=2; then polls
    with nothing to take (a keepalive after ``keepalive_wait`` seconds)."""
    created = await _post(http, base_url, {"janus": "create", "transaction": "c"})
    session_id = created["data"]["id"]
    variables: dict[str, Any] = {"session": session_id}
    for index in range(4):
        attached = await _post(http, f"{base_url}/{session_id}", {"janus": "attach", "transaction": "a", "plugin": STREAMING})
        variables[f"handle{index}"] = attached["data"]["id"]
        await _post(
            http,
            f"{base_url}/{session_id}/{attached['data']['id']}",
            {"janus": "message", "transaction": f"w{index}", "body": {"request": "watch", "id": 1}},
        )
    await asyncio.sleep(0.5)
    results = []
    for query in ("?rid=1", "?maxev=1", "?maxev=2&rid=2", "?maxev=5", ""):
        result = await _get(http, f"{base_url}/{session_id}{query}", keepalive_wait + 10)
        results.append({"query": query, **mask(result, variables)})
    await _post(http, f"{base_url}/{session_id}", {"janus": "destroy", "transaction": "d"})
    return results


async def session_timeout(ws_url: str, wait: float) -> list[Message]:
    """A session left alone over a WebSocket: what arrives until ``wait`` seconds pass."""
    async with websocket(ws_url) as socket:
        await socket.send_str(json.dumps({"janus": "create", "transaction": "c"}))
        session_id = json.loads((await socket.receive()).data)["data"]["id"]
        await socket.send_str(json.dumps({"janus": "attach", "transaction": "a", "session_id": session_id, "plugin": STREAMING}))
        handle_id = json.loads((await socket.receive()).data)["data"]["id"]
        variables = {"session": session_id, "handle": handle_id}
        received: list[Message] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while loop.time() < deadline:
            try:
                frame = await socket.receive(timeout=max(0.05, deadline - loop.time()))
            except TimeoutError:
                break
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            received.append(mask(json.loads(frame.data), variables))
        await socket.send_str(json.dumps({"janus": "keepalive", "transaction": "k", "session_id": session_id}))
        after = json.loads((await socket.receive(timeout=5)).data)
        return received + [{"after": mask(after, variables)}]


async def closed_websocket(http: aiohttp.ClientSession, base_url: str, ws_url: str, settle: float = 1.0) -> list[Message]:
    """Sessions of a WebSocket that closed (one of them claimed by another socket first)."""
    async with websocket(ws_url) as keeper:
        async with websocket(ws_url) as socket:
            ids = []
            for transaction in ("c1", "c2"):
                await socket.send_str(json.dumps({"janus": "create", "transaction": transaction}))
                ids.append(json.loads((await socket.receive()).data)["data"]["id"])
            variables = {"session1": ids[0], "session2": ids[1]}
            await keeper.send_str(json.dumps({"janus": "claim", "transaction": "cl", "session_id": ids[1]}))
            claimed = json.loads((await keeper.receive(timeout=5)).data)
        await asyncio.sleep(settle)
        results = [{"claim": mask(claimed, variables)}]
        for session_id in ids:
            reply = await _post(http, f"{base_url}/{session_id}", {"janus": "keepalive", "transaction": "k"})
            results.append(mask(reply, variables))
        await _post(http, f"{base_url}/{ids[1]}", {"janus": "destroy", "transaction": "d"})
        return results
