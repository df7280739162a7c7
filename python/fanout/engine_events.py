"""The engine's events on the asyncio loop.

The engine cannot call Python: it queues events (a source fell silent or sends
again, a simulcast move took effect, a viewer's packets were dropped, a viewer
started from the keyframe cache) and makes its ``event_fd()`` readable. The
loop watches that fd (``add_reader``); :class:`EngineEvents` then drains the
queue and hands each event to the handlers subscribed to its class, so that no
part of the control plane polls the engine's counters to decide something.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias, TypeVar, cast

from fanout._engine import (
    BandwidthEstimate,
    KeyframeFromCache,
    PublisherDatagram,
    RecordingStopped,
    SendQueueOverflow,
    SourceResumed,
    SourceSilent,
    SubstreamMoved,
    TcpConnectionLost,
    ViewerRtcp,
)

if TYPE_CHECKING:
    from fanout._engine import Engine

logger = logging.getLogger(__name__)

# What Engine.drain_events() gives: one class per kind of event.
EngineEvent: TypeAlias = (
    SubstreamMoved
    | SourceSilent
    | SourceResumed
    | SendQueueOverflow
    | KeyframeFromCache
    | PublisherDatagram
    | RecordingStopped
    | BandwidthEstimate
    | TcpConnectionLost
    | ViewerRtcp
)
Event = TypeVar("Event", bound=EngineEvent)
Handler = Callable[[EngineEvent], None]


class EngineEvents:
    """Routes the engine's events to their owners: ``subscribe(SourceSilent, handler)``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._handlers: dict[type, list[Handler]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def subscribe(self, kind: type[Event], handler: Callable[[Event], None]) -> None:
        """``handler`` gets every event of class ``kind``, in the order the engine queued them."""
        self._handlers.setdefault(kind, []).append(cast(Handler, handler))

    def start(self) -> None:
        """Watch the engine's event fd on the running loop."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self.engine.event_fd(), self.dispatch)

    def stop(self) -> None:
        """Stop watching (before the engine closes). Idempotent."""
        if self._loop is not None:
            self._loop.remove_reader(self.engine.event_fd())
            self._loop = None

    def dispatch(self) -> None:
        """Drain the engine's events and call each one's handlers; a handler that
        raises is logged and does not keep the others from their events."""
        for event in self.engine.drain_events():
            for handler in self._handlers.get(type(event), ()):
                try:
                    handler(event)
                except Exception:
                    logger.exception("handling %r", event)


def log_peer_events(events: EngineEvents) -> None:
    """Events about one peer that nothing else acts on: written to the log."""
    events.subscribe(SendQueueOverflow, _log_overflow)
    events.subscribe(KeyframeFromCache, _log_keyframe_from_cache)


def _log_overflow(event: SendQueueOverflow) -> None:
    logger.warning("peer %d: %d packets dropped, the WebRTC socket's send buffer is full", event.peer_id, event.dropped)


def _log_keyframe_from_cache(event: KeyframeFromCache) -> None:
    logger.debug("peer %d: stream %d started from the keyframe cache (%d packets)", event.peer_id, event.index, event.packets)
