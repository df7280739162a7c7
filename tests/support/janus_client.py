"""A small Janus API client over HTTP (REST + long poll), as janus.js speaks it."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

Message = dict[str, Any]


class JanusHttpClient:
    """One Janus session over HTTP, with a long-poll task collecting its events."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.session_id: int | None = None
        self.events: asyncio.Queue[Message] = asyncio.Queue()
        self._poller: asyncio.Task[None] | None = None

    async def post(self, path: str, body: Message) -> Message:
        body = {"transaction": secrets.token_hex(6), **body}
        async with self.http.post(self.base_url + path, json=body) as response:
            return await response.json(content_type=None)  # type: ignore[no-any-return]

    async def create(self) -> int:
        reply = await self.post("", {"janus": "create"})
        assert reply["janus"] == "success", reply
        self.session_id = reply["data"]["id"]
        self._poller = asyncio.get_running_loop().create_task(self._poll())
        return self.session_id

    async def attach(self, plugin: str = "janus.plugin.streaming") -> int:
        reply = await self.post(f"/{self.session_id}", {"janus": "attach", "plugin": plugin})
        assert reply["janus"] == "success", reply
        return int(reply["data"]["id"])

    async def message(self, handle_id: int, body: Message, jsep: Message | None = None) -> Message:
        request: Message = {"janus": "message", "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        return await self.post(f"/{self.session_id}/{handle_id}", request)

    async def handle_request(self, handle_id: int, janus: str, **fields: Any) -> Message:
        return await self.post(f"/{self.session_id}/{handle_id}", {"janus": janus, **fields})

    async def event(self, predicate: Callable[[Message], bool] = lambda _: True, timeout: float = 20.0) -> Message:
        """The next event that matches ``predicate``; others before it are dropped."""

        async def wait() -> Message:
            while True:
                event = await self.events.get()
                if predicate(event):
                    return event

        return await asyncio.wait_for(wait(), timeout)

    async def plugin_event(self, handle_id: int, timeout: float = 20.0) -> Message:
        return await self.event(
            lambda e: e.get("janus") == "event" and e.get("sender") == handle_id, timeout=timeout
        )

    async def _poll(self) -> None:
        while True:
            try:
                async with self.http.get(f"{self.base_url}/{self.session_id}?maxev=10") as response:
                    reply = await response.json(content_type=None)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                await asyncio.sleep(0.2)
                continue
            for event in reply if isinstance(reply, list) else [reply]:
                if event.get("janus") != "keepalive":
                    self.events.put_nowait(event)
            if isinstance(reply, dict) and reply.get("janus") == "error":
                return

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self.session_id is not None:
            try:
                await self.post(f"/{self.session_id}", {"janus": "destroy"})
            except aiohttp.ClientError:
                pass


@asynccontextmanager
async def janus_session(url: str) -> AsyncIterator[JanusHttpClient]:
    """A Janus API session over HTTP at ``url`` (e.g. http://127.0.0.1:8088/janus), destroyed on exit."""
    async with aiohttp.ClientSession() as http:
        client = JanusHttpClient(http, url)
        await client.create()
        try:
            yield client
        finally:
            await client.close()
