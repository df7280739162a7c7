"""Where the core's, the plugins' and the media's events go: every enabled event handler.

:meth:`EventBus.emit` wraps an event in Janus's envelope (``emitter``, ``type``,
``subtype``, ``timestamp``, ``session_id``, ``handle_id``, ``opaque_id``,
``event``) and offers it to each handler whose mask takes its type. A handler
keeps a bounded queue and sends from its own task: emitting never waits, and
an event that finds a handler's queue full is dropped and counted there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger(__name__)

Event = dict[str, Any]


class EventHandler(Protocol):
    """An event handler: a name, a type mask, and a queue it never lets grow past a bound."""

    package: str  # "janus.eventhandler.sampleevh"
    mask: int

    def offer(self, event: Event) -> bool:
        """Queue ``event`` without waiting; False (and counted) if the queue is full."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def stats(self) -> dict[str, int]:
        """``queued``, ``sent``, ``dropped``, ``failed`` (events given up after the retries)."""


class EventBus:
    """The event handlers, and the envelope Janus puts around each event."""

    def __init__(self, emitter: str, handlers: list[EventHandler] | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.emitter = emitter
        self.handlers: list[EventHandler] = list(handlers or [])
        self.clock = clock
        self.emitted = 0

    @property
    def enabled(self) -> bool:
        return bool(self.handlers)

    def wants(self, event_type: int) -> bool:
        """Whether any handler takes events of this type (to skip building ones nobody takes)."""
        return any(handler.mask & event_type for handler in self.handlers)

    def emit(
        self,
        event_type: int,
        event: Event,
        *,
        subtype: int | None = None,
        session_id: int | None = None,
        handle_id: int | None = None,
        opaque_id: str | None = None,
    ) -> None:
        if not self.wants(event_type):
            return
        envelope: Event = {"emitter": self.emitter, "type": int(event_type)}
        if subtype is not None:
            envelope["subtype"] = int(subtype)
        envelope["timestamp"] = int(self.clock() * 1_000_000)
        if session_id is not None:
            envelope["session_id"] = session_id
        if handle_id is not None:
            envelope["handle_id"] = handle_id
        if opaque_id is not None:
            envelope["opaque_id"] = opaque_id
        envelope["event"] = event
        self.emitted += 1
        for handler in self.handlers:
            if handler.mask & event_type:
                handler.offer(envelope)

    async def start(self) -> None:
        for handler in self.handlers:
            await handler.start()

    async def stop(self) -> None:
        for handler in self.handlers:
            try:
                await handler.stop()
            except Exception:
                logger.exception("stopping event handler %s failed", handler.package)
