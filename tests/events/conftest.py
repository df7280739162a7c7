"""An event collector (a real aiohttp server, as an operator's backend would be) and fanout
configured to send it events, with the built-in test source on mountpoint 1."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioice.ice
import pytest
from aiohttp import web

from tests.support.ports import free_ports
from tests.support.server import DEMO_MOUNTPOINT, ServerAddresses, write_config

USER, PASSWORD = "collector", "pa55"


@pytest.fixture
def loopback_only_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice leaves 127.0.0.1 out of its host candidates; make it gather only that."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


class Collector:
    """Takes POSTs of events (an object or an array of them); answers 401 without the right basic auth."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.posts = 0
        self.refused = 0
        self.arrived = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/events", self._post)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    async def _post(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            self.refused += 1
            return web.Response(status=401)
        body = json.loads(await request.text())
        self.posts += 1
        self.events.extend(body if isinstance(body, list) else [body])
        self.arrived.set()
        return web.Response(text="ok")

    async def wait_for(self, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
        async def find() -> dict[str, Any]:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self.arrived.clear()
                await self.arrived.wait()

        return await asyncio.wait_for(find(), timeout)


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    started = Collector()
    await started.start()
    yield started
    await started.stop()


def events_config(folder: Path, backend: str, *, events: str = "all", queue_size: int | None = None, stats_period: int = 1) -> tuple[ServerAddresses, int]:
    """fanout on free ports with the HTTP event handler sending to ``backend``; also its metrics port."""
    (metrics_port,) = free_ports(1)
    addresses = write_config(folder, DEMO_MOUNTPOINT)
    with (folder / "janus.jcfg").open("a") as janus:
        janus.write(f"events: {{\n\tbroadcast = true\n\tstats_period = {stats_period}\n}}\n")
    path = folder / "janus.jcfg"
    path.write_text(path.read_text().replace("fanout: {\n", f"fanout: {{\n\tmetrics_port = {metrics_port}\n", 1))
    extra = f"\tqueue_size = {queue_size}\n" if queue_size is not None else ""
    (folder / "janus.eventhandler.sampleevh.jcfg").write_text(
        f"""general: {{
	enabled = true
	events = "{events}"
	grouping = true
	json = "compact"
	backend = "{backend}"
	backend_user = "{USER}"
	backend_pwd = "{PASSWORD}"
	max_retransmissions = 2
	retransmissions_backoff = 50
{extra}}}
"""
    )
    return addresses, metrics_port
