"""The Janus API as a viewer speaks it, over HTTP (REST + long poll) or WebSocket.

Only what a Streaming viewer needs: create a session, attach the streaming
plugin, send messages (with a JSEP), trickle, keep the session alive, and
receive the plugin's events. Nothing fanout-specific: any server that speaks
the Janus API answers these.

:class:`HttpJanus` long-polls for events until :meth:`JanusApi.stop_events`
(a viewer that is up needs no more events) and from then on keeps the session
alive with ``keepalive`` requests. :class:`WebSocketJanus` carries one session
on one connection (``janus-protocol``), like a browser tab running janus.js.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

Message = dict[str, Any]
_transactions = itertools.count(1)


class JanusError(RuntimeError):
    """The server answered with an error, or not at all."""


def _transaction() -> str:
    return f"t{next(_transactions)}"


def _check(reply: Message, expected: tuple[str, ...]) -> Message:
    if reply.get("janus") not in expected:
        raise JanusError(f"unexpected reply {json.dumps(reply)[:300]}")
    return reply


class JanusApi:
    """One Janus session."""

    session_id: int | None = None

    async def create(self) -> int:
        raise NotImplementedError

    async def request(self, body: Message, handle_id: int | None = None) -> Message:
        raise NotImplementedError

    async def next_event(self, handle_id: int, timeout: float) -> Message:
        raise NotImplementedError

    def stop_events(self) -> None:
        """Events are no longer needed."""

    async def close(self) -> None:
        raise NotImplementedError

    async def attach(self, plugin: str = "janus.plugin.streaming") -> int:
        reply = _check(await self.request({"janus": "attach", "plugin": plugin}), ("success",))
        return int(reply["data"]["id"])

    async def message(self, handle_id: int, body: Message, jsep: Message | None = None) -> Message:
        request: Message = {"janus": "message", "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        return _check(await self.request(request, handle_id), ("ack", "success", "event"))

    async def trickle_completed(self, handle_id: int) -> None:
        _check(
            await self.request({"janus": "trickle", "candidate": {"completed": True}}, handle_id),
            ("ack",),
        )

    async def keepalive(self) -> None:
        _check(await self.request({"janus": "keepalive"}), ("ack",))

    async def destroy(self) -> None:
        with contextlib.suppress(JanusError, aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
            await self.request({"janus": "destroy"})


class HttpJanus(JanusApi):
    """A session over the REST API; events by long poll until :meth:`stop_events`."""

    def __init__(self, http: aiohttp.ClientSession, url: str, timeout: float = 30.0) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._events: dict[int, asyncio.Queue[Message]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def _post(self, path: str, body: Message) -> Message:
        body = {**body, "transaction": _transaction()}
        async with self.http.post(self.url + path, json=body, timeout=self.timeout) as response:
            return await response.json(content_type=None)  # type: ignore[no-any-return]

    async def create(self) -> int:
        reply = _check(await self._post("", {"janus": "create"}), ("success",))
        self.session_id = int(reply["data"]["id"])
        self._poller = asyncio.get_running_loop().create_task(self._poll())
        return self.session_id

    async def request(self, body: Message, handle_id: int | None = None) -> Message:
        path = f"/{self.session_id}" + (f"/{handle_id}" if handle_id is not None else "")
        return await self._post(path, body)

    async def next_event(self, handle_id: int, timeout: float) -> Message:
        queue = self._events.setdefault(handle_id, asyncio.Queue())
        return await asyncio.wait_for(queue.get(), timeout)

    async def _poll(self) -> None:
        while True:
            try:
                async with self.http.get(
                    f"{self.url}/{self.session_id}?maxev=10",
                    timeout=aiohttp.ClientTimeout(total=70),
                ) as response:
                    reply = await response.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError):
                await asyncio.sleep(0.5)
                continue
            for event in reply if isinstance(reply, list) else [reply]:
                sender = event.get("sender")
                if isinstance(sender, int):
                    self._events.setdefault(sender, asyncio.Queue()).put_nowait(event)
            if isinstance(reply, dict) and reply.get("janus") == "error":
                return

    def stop_events(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    async def close(self) -> None:
        self.stop_events()
        if self.session_id is not None:
            await self.destroy()


class WebSocketJanus(JanusApi):
    """A session on its own WebSocket connection (``janus-protocol``)."""

    def __init__(self, http: aiohttp.ClientSession, url: str, timeout: float = 30.0) -> None:
        self.http = http
        self.url = url
        self.timeout = timeout
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._events: dict[int, asyncio.Queue[Message]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._keep_events = True

    async def create(self) -> int:
        self._ws = await self.http.ws_connect(self.url, protocols=("janus-protocol",), heartbeat=None, max_msg_size=0)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        reply = _check(await self._send({"janus": "create"}), ("success",))
        self.session_id = int(reply["data"]["id"])
        return self.session_id

    async def request(self, body: Message, handle_id: int | None = None) -> Message:
        body = {**body, "session_id": self.session_id}
        if handle_id is not None:
            body["handle_id"] = handle_id
        return await self._send(body)

    async def _send(self, body: Message) -> Message:
        if self._ws is None or self._ws.closed:
            raise JanusError("WebSocket closed")
        transaction = _transaction()
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[transaction] = future
        try:
            await self._ws.send_str(json.dumps({**body, "transaction": transaction}))
            return await asyncio.wait_for(future, self.timeout)
        finally:
            self._pending.pop(transaction, None)

    async def next_event(self, handle_id: int, timeout: float) -> Message:
        queue = self._events.setdefault(handle_id, asyncio.Queue())
        return await asyncio.wait_for(queue.get(), timeout)

    async def _read(self) -> None:
        assert self._ws is not None
        async for frame in self._ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                message = json.loads(frame.data)
            except json.JSONDecodeError:
                continue
            future = self._pending.pop(message.get("transaction", ""), None)
            if future is not None and not future.done() and message.get("janus") != "event":
                future.set_result(message)
                continue
            if future is not None and not future.done():  # an event that answers the request at once
                future.set_result(message)
            sender = message.get("sender")
            if self._keep_events and isinstance(sender, int) and message.get("janus") == "event":
                self._events.setdefault(sender, asyncio.Queue()).put_nowait(message)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(JanusError("WebSocket closed"))

    def stop_events(self) -> None:
        self._keep_events = False
        self._events.clear()

    @property
    def closed(self) -> bool:
        """Whether the server closed the WebSocket (a janus.js client notices at once: the node is lost)."""
        return self._ws is not None and self._ws.closed

    async def close(self) -> None:
        if self.session_id is not None and self._ws is not None and not self._ws.closed:
            with contextlib.suppress(asyncio.TimeoutError, JanusError, ConnectionError):
                await asyncio.wait_for(self.destroy(), 5)
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
