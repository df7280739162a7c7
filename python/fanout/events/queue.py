"""A bounded event queue with counters: offering never waits; a full queue drops and counts."""

from __future__ import annotations

import asyncio
from typing import Any

Event = dict[str, Any]
DEFAULT_QUEUE_SIZE = 10_000


class EventQueue:
    def __init__(self, maxsize: int = DEFAULT_QUEUE_SIZE) -> None:
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.sent = 0
        self.dropped = 0  # events that found the queue full
        self.failed = 0  # events given up after the retries

    def offer(self, event: Event) -> bool:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        return True

    async def take(self, limit: int) -> list[Event]:
        """Wait for one event, then take up to ``limit`` (what is queued now)."""
        batch = [await self._queue.get()]
        while len(batch) < limit and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    def qsize(self) -> int:
        return self._queue.qsize()

    def stats(self) -> dict[str, int]:
        return {"queued": self.qsize(), "sent": self.sent, "dropped": self.dropped, "failed": self.failed}
