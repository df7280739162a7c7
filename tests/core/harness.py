"""A Gateway on the fakes, a connection that keeps what it is sent, a fake clock, and an
API client that drives ``Gateway.handle_request`` directly (for janus_scenarios)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanout.config.settings import Settings
from fanout.core.gateway import Gateway
from fanout.core.handle import Handle
from fanout.core.session import Connection

from tests.core.fakes import EchoStreamingPlugin, FakeEndpoint, FakeEngine
from tests.core.janus_scenarios import take

Message = dict[str, Any]
DATA = Path(__file__).parent / "data"


def recording(name: str) -> Any:
    """The recordings of one file in tests/core/data (``janus_api_http`` ...)."""
    return json.loads((DATA / f"{name}.json").read_text())["recordings"]


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class EventSink:
    """A transport's connection that keeps every event, and hears sessions come and go."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[Message] = asyncio.Queue()
        self.sessions: set[int] = set()
        self.ended: list[tuple[int, bool, bool]] = []  # (session, timeout, claimed)

    def send_event(self, session_id: int, message: Message) -> None:
        self.received.put_nowait(message)

    def session_created(self, session_id: int) -> None:
        self.sessions.add(session_id)

    def session_over(self, session_id: int, *, timeout: bool, claimed: bool) -> None:
        self.sessions.discard(session_id)
        self.ended.append((session_id, timeout, claimed))

    def drain(self) -> list[Message]:
        """What has arrived so far (events are flushed on the next turn of the loop)."""
        taken = []
        while not self.received.empty():
            taken.append(self.received.get_nowait())
        return taken


@dataclass
class Core:
    """A Gateway with the stand-in Streaming plugin, a fake engine and endpoint, a fake clock."""

    settings: Settings = field(default_factory=Settings)
    clock: FakeClock = field(default_factory=FakeClock)
    plugin: EchoStreamingPlugin = field(default_factory=EchoStreamingPlugin)
    endpoint: FakeEndpoint = field(default_factory=FakeEndpoint)
    engine: FakeEngine = field(default_factory=FakeEngine)
    timeout_check_interval: float = 1.0  # how often the started Gateway's watchdog looks
    gateway: Gateway = field(init=False)

    def __post_init__(self) -> None:
        self.gateway = Gateway(
            self.settings,
            self.engine,  # type: ignore[arg-type]
            self.endpoint,  # type: ignore[arg-type]
            [self.plugin],
            clock=self.clock,
            timeout_check_interval=self.timeout_check_interval,
        )

    async def request(self, connection: Connection | None = None, **fields: Any) -> Message:
        return await self.gateway.handle_request(fields, connection)

    async def session(self, connection: Connection | None = None) -> int:
        reply = await self.request(connection, janus="create", transaction="c")
        assert reply["janus"] == "success", reply
        return int(reply["data"]["id"])

    async def handle(self, session_id: int, connection: Connection | None = None) -> Handle:
        reply = await self.request(connection, janus="attach", transaction="a", session_id=session_id, plugin="janus.plugin.streaming")
        assert reply["janus"] == "success", reply
        return self.gateway.handles[reply["data"]["id"]]


class DirectApiClient:
    """janus_scenarios' ApiClient on ``Gateway.handle_request``: ids in the body, as over WebSocket."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.connection = EventSink()

    async def request(self, session_id: int | None, handle_id: int | None, body: Any) -> Message:
        if isinstance(body, dict):
            body = dict(body)
            if session_id is not None:
                body["session_id"] = session_id
            if handle_id is not None:
                body["handle_id"] = handle_id
        return await self.gateway.handle_request(body, self.connection)

    async def events(self, count: int, timeout: float) -> list[Message]:
        return await take(self.connection.received, count, timeout)

    async def stray_events(self, window: float) -> list[Message]:
        return await take(self.connection.received, 1000, window)

    async def close(self) -> None:
        pass
