"""The WebSocket event handler (Janus's ``janus.eventhandler.wsevh``): events sent as text messages.

One connection to ``backend`` (with ``subprotocol`` if set), made again when
it drops (waiting 1 s, then longer, up to 30 s); with ``grouping`` the
events queued at that moment go as one JSON array. Events wait in a bounded
queue meanwhile; when it is full new ones are dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp

from fanout.events.handler import QueuedEventHandler
from fanout.events.http import MAX_GROUP
from fanout.events.queue import DEFAULT_QUEUE_SIZE, Event
from fanout.transports.encoding import dumps

logger = logging.getLogger(__name__)

RECONNECT_FIRST = 1.0
RECONNECT_MAX = 30.0


@dataclass(frozen=True)
class WebSocketBackend:
    url: str
    mask: int
    grouping: bool = True
    json: str = "indented"
    subprotocol: str | None = None
    queue_size: int = DEFAULT_QUEUE_SIZE


class WebSocketEventHandler(QueuedEventHandler):
    package = "janus.eventhandler.wsevh"
    name = "fanout WebSocket event handler"
    description = "Events sent over a WebSocket to a backend (as Janus's WebSockets event handler)."

    def __init__(self, backend: WebSocketBackend) -> None:
        super().__init__(backend.queue_size)
        self.backend = backend
        self.mask = backend.mask

    async def start(self) -> None:
        await super().start()
        logger.info("event handler: sending events to %s", self.backend.url)

    async def _run(self) -> None:
        protocols = (self.backend.subprotocol,) if self.backend.subprotocol else ()
        wait = RECONNECT_FIRST
        async with aiohttp.ClientSession() as http:
            while True:
                batch: list[Event] = []
                try:
                    async with http.ws_connect(self.backend.url, protocols=protocols, heartbeat=30) as socket:
                        wait = RECONNECT_FIRST
                        while True:
                            batch = await self.queue.take(MAX_GROUP if self.backend.grouping else 1)
                            self._busy = True
                            payload = batch if self.backend.grouping else batch[0]
                            await socket.send_str(dumps(payload, self.backend.json))
                            self.queue.sent += len(batch)
                            batch = []
                            self._busy = False
                except (TimeoutError, aiohttp.ClientError, OSError, ConnectionError) as error:
                    self.queue.failed += len(batch)
                    self._busy = False
                    logger.debug("event handler: WebSocket to %s: %s", self.backend.url, error)
                await asyncio.sleep(wait)
                wait = min(wait * 2, RECONNECT_MAX)
