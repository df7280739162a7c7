"""fanout's HTTP and WebSocket transports on free loopback ports, over a Gateway on the fakes."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from fanout.config.settings import HttpSettings, Settings, WebSocketSettings
from fanout.transports.http import HttpTransport
from fanout.transports.websocket import WebSocketTransport

from tests.core.harness import Core

LONG_POLL = 0.3  # seconds a long poll waits before its keepalive (Janus: 30)
WATCHDOG = 0.01  # seconds between the Gateway's looks for idle sessions (on the fake clock)


@dataclass
class Servers:
    core: Core
    http: HttpTransport
    websocket: WebSocketTransport

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"

    @property
    def base_url(self) -> str:
        return self.origin + self.http.settings.base_path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.websocket.port}/"


@contextlib.asynccontextmanager
async def running(settings: Settings | None = None, *, long_poll_timeout: float = LONG_POLL) -> AsyncIterator[Servers]:
    """Both transports and the Gateway (its watchdog on the fake clock) running; ports are free ones."""
    settings = settings or Settings()
    settings = dataclasses.replace(
        settings,
        http=dataclasses.replace(settings.http, host="127.0.0.1", port=0),
        websocket=dataclasses.replace(settings.websocket, host="127.0.0.1", port=0),
    )
    core = Core(settings=settings, timeout_check_interval=WATCHDOG)
    http = HttpTransport(core.gateway, settings.http, long_poll_timeout=long_poll_timeout)
    websocket = WebSocketTransport(core.gateway, settings.websocket)
    await core.gateway.start()
    await http.start()
    await websocket.start()
    try:
        yield Servers(core, http, websocket)
    finally:
        await websocket.stop()
        await http.stop()
        await core.gateway.stop()


SECURED = Settings(
    api_secret="s3cret",
    http=HttpSettings(allow_origin="http://foo.example", enforce_cors=True),
    websocket=WebSocketSettings(allow_origin="http://foo.example", enforce_cors=True),
)


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    async with running() as started:
        yield started


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
