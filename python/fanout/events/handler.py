"""What every event handler shares: a bounded queue the core offers events to without
waiting, one task delivering them, and a stop that first delivers what is queued."""

from __future__ import annotations

import asyncio
import contextlib

from fanout.events.queue import Event, EventQueue

STOP_FLUSH = 2.0  # seconds a stopping handler keeps delivering what is queued


class QueuedEventHandler:
    """A handler whose ``_run`` coroutine takes events from :attr:`queue` and delivers them,
    setting ``_busy`` while a batch is on its way."""

    def __init__(self, queue_size: int) -> None:
        self.queue = EventQueue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # a batch is on its way

    def offer(self, event: Event) -> bool:
        return self.queue.offer(event)

    def stats(self) -> dict[str, int]:
        return self.queue.stats()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Deliver what is queued (for at most STOP_FLUSH seconds), then stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_FLUSH
        while self._delivering() and (self.queue.qsize() or self._busy) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _delivering(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        raise NotImplementedError
