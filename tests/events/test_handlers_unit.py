"""The event bus and both event handlers in-process, against real aiohttp servers: masks, the
envelope, grouping, retries with backoff, the bounded queue, the WebSocket handler."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from fanout.admin.logs import LogControl
from fanout.events.bus import EventBus
from fanout.events.http import HttpBackend, HttpEventHandler
from fanout.events.types import ALL, EventType, parse_mask
from fanout.events.websocket import WebSocketBackend, WebSocketEventHandler


@pytest.mark.parametrize(
    ("text", "mask"),
    [("all", ALL), ("none", 0), ("sessions, handles", 3), ("media,webrtc", 48), ("core", 256), ("plugins,external", 68)],
)
def test_masks_as_janus_names_them(text: str, mask: int) -> None:
    assert parse_mask(text) == mask


def test_unknown_mask_name() -> None:
    with pytest.raises(ValueError, match="unknown event type 'sesions'"):
        parse_mask("sesions")


class Recorder:
    def __init__(self, mask: int) -> None:
        self.package = "recorder"
        self.mask = mask
        self.events: list[dict[str, Any]] = []

    def offer(self, event: dict[str, Any]) -> bool:
        self.events.append(event)
        return True


def test_envelope_and_mask() -> None:
    handles_only = Recorder(EventType.HANDLE)
    bus = EventBus("my-fanout", [handles_only], clock=lambda: 12.5)  # type: ignore[list-item]
    bus.emit(EventType.SESSION, {"name": "created"}, session_id=1)
    bus.emit(EventType.HANDLE, {"name": "attached", "plugin": "p"}, session_id=1, handle_id=2, opaque_id="o")
    bus.emit(EventType.WEBRTC, {"connection": "webrtcup"}, subtype=6, session_id=1, handle_id=2)
    assert handles_only.events == [
        {"emitter": "my-fanout", "type": 2, "timestamp": 12_500_000, "session_id": 1, "handle_id": 2, "opaque_id": "o",
         "event": {"name": "attached", "plugin": "p"}}
    ]


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def test_http_handler_retries_with_backoff_then_delivers_grouped() -> None:
    bodies: list[Any] = []
    failures = [500, 503]

    async def collect(request: web.Request) -> web.Response:
        if failures:
            return web.Response(status=failures.pop(0))
        bodies.append(json.loads(await request.text()))
        return web.Response()

    app = web.Application()
    app.router.add_post("/", collect)
    runner, port = await serve(app)
    handler = HttpEventHandler(HttpBackend(f"http://127.0.0.1:{port}/", ALL, backoff_ms=10, json="compact"))
    bus = EventBus("fanout", [handler])
    for number in range(3):
        bus.emit(EventType.SESSION, {"name": "created"}, session_id=number + 1)
    await bus.start()
    try:
        while handler.stats()["sent"] < 3:
            await asyncio.sleep(0.01)
    finally:
        await bus.stop()
        await runner.cleanup()
    assert [[event["session_id"] for event in body] for body in bodies] == [[1, 2, 3]]  # one grouped POST
    assert handler.stats() == {"queued": 0, "sent": 3, "dropped": 0, "failed": 0}


async def test_http_handler_gives_up_after_the_retries_and_drops_past_its_bound() -> None:
    handler = HttpEventHandler(HttpBackend("http://127.0.0.1:9/", ALL, grouping=False, max_retransmissions=1, backoff_ms=1, queue_size=2))
    for number in range(5):
        handler.offer({"n": number})
    assert handler.stats()["dropped"] == 3
    await handler.start()
    try:
        while handler.stats()["failed"] < 2:
            await asyncio.sleep(0.01)
    finally:
        await handler.stop()
    assert handler.stats() == {"queued": 0, "sent": 0, "dropped": 3, "failed": 2}


async def test_websocket_handler_sends_to_its_backend() -> None:
    received: asyncio.Queue[Any] = asyncio.Queue()

    async def accept(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(protocols=("events",))
        await socket.prepare(request)
        async for frame in socket:
            if frame.type == WSMsgType.TEXT:
                received.put_nowait((socket.ws_protocol, json.loads(frame.data)))
        return socket

    app = web.Application()
    app.router.add_get("/", accept)
    runner, port = await serve(app)
    handler = WebSocketEventHandler(WebSocketBackend(f"ws://127.0.0.1:{port}/", ALL, subprotocol="events"))
    bus = EventBus("fanout", [handler])
    await bus.start()
    try:
        bus.emit(EventType.PLUGIN, {"plugin": "p", "data": {}}, session_id=1, handle_id=2)
        protocol, batch = await asyncio.wait_for(received.get(), 10)
    finally:
        await bus.stop()
        await runner.cleanup()
    assert protocol == "events"
    assert [(event["type"], event["event"]["plugin"]) for event in batch] == [(64, "p")]


def test_json_log_lines_and_levels() -> None:
    stream = io.StringIO()
    logs = LogControl()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.configure(4, "json", stream)
        logging.getLogger("fanout.test").debug("hidden")
        logging.getLogger("fanout.test").info("viewer %d joined", 7, extra={"mountpoint": 1})
        logs.set_level(7)
        logging.getLogger("fanout.test").debug("shown")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        logging.getLogger("fanout").setLevel(logging.NOTSET)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["level"], line["logger"], line["message"]) for line in lines] == [
        ("info", "fanout.test", "viewer 7 joined"),
        ("debug", "fanout.test", "shown"),
    ]
    assert lines[0]["mountpoint"] == 1 and lines[0]["ts"].endswith("Z")
    with pytest.raises(ValueError):
        logs.set_level(8)
