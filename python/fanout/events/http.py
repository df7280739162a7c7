"""The HTTP event handler (Janus's ``janus.eventhandler.sampleevh``): events POSTed as JSON to a backend.

With ``grouping`` the events queued at that moment go in one POST as a JSON
array (up to ``MAX_GROUP``), else one object per POST. A POST that fails (no
connection, a timeout, a status other than 2xx) is retried up to
``max_retransmissions`` times, waiting ``retransmissions_backoff`` ms, then
twice that, and so on; then its events are counted as failed. Basic
authentication with ``backend_user``/``backend_pwd``. Events wait in a bounded
queue; when it is full new ones are dropped and counted, so a slow or dead
backend never holds up the server.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp

from fanout.events.handler import QueuedEventHandler
from fanout.events.queue import DEFAULT_QUEUE_SIZE
from fanout.transports.encoding import dumps

logger = logging.getLogger(__name__)

MAX_GROUP = 100
REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True)
class HttpBackend:
    url: str
    mask: int
    grouping: bool = True
    json: str = "indented"
    user: str | None = None
    password: str | None = None
    max_retransmissions: int = 5
    backoff_ms: int = 100
    queue_size: int = DEFAULT_QUEUE_SIZE
    timeout: float = REQUEST_TIMEOUT


class HttpEventHandler(QueuedEventHandler):
    package = "janus.eventhandler.sampleevh"
    name = "fanout HTTP event handler"
    description = "Events POSTed as JSON to a backend (as Janus's sample event handler)."

    def __init__(self, backend: HttpBackend) -> None:
        super().__init__(backend.queue_size)
        self.backend = backend
        self.mask = backend.mask
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        auth = aiohttp.BasicAuth(self.backend.user, self.backend.password or "") if self.backend.user else None
        self._http = aiohttp.ClientSession(auth=auth, timeout=aiohttp.ClientTimeout(total=self.backend.timeout))
        await super().start()
        logger.info("event handler: POSTing events to %s", self.backend.url)

    async def stop(self) -> None:
        await super().stop()
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _run(self) -> None:
        while True:
            batch = await self.queue.take(MAX_GROUP if self.backend.grouping else 1)
            self._busy = True
            body = dumps(batch if self.backend.grouping else batch[0], self.backend.json).encode()
            if await self._post(body):
                self.queue.sent += len(batch)
            else:
                self.queue.failed += len(batch)
                logger.warning("event handler: %d event(s) lost: %s does not take them", len(batch), self.backend.url)
            self._busy = False

    async def _post(self, body: bytes) -> bool:
        assert self._http is not None
        delay = self.backend.backoff_ms / 1000
        for attempt in range(self.backend.max_retransmissions + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay *= 2
            try:
                async with self._http.post(self.backend.url, data=body, headers={"Content-Type": "application/json"}) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        return True
                    logger.debug("event handler: %s answered %d", self.backend.url, response.status)
            except (TimeoutError, aiohttp.ClientError, OSError) as error:
                logger.debug("event handler: POST to %s failed: %s", self.backend.url, error)
        return False
