"""Media statistics: each viewer's engine counters sampled every second (``bytes_lastsec``) and
reported to the event handlers every ``stats_period`` seconds (type 32, subtype 3).

The engine counts per viewer, all its media together, so one event per
viewer carries the totals, in Janus's combined form (``"media": [...]``,
as with ``combine_media_stats``) with one entry named by the viewer's mids.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from fanout.events.types import EventType, MediaSubtype

if TYPE_CHECKING:
    from fanout._engine import PeerStats
    from fanout.core.gateway import Gateway

logger = logging.getLogger(__name__)

SAMPLE_PERIOD = 1.0


class MediaStats:
    def __init__(self, gateway: Gateway, stats_period: int, *, sample_period: float = SAMPLE_PERIOD) -> None:
        self.gateway = gateway
        self.stats_period = stats_period
        self.sample_period = sample_period
        self.bytes_lastsec: dict[int, int] = {}
        self._previous: dict[int, int] = {}
        self._ticks = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.sample_period)
            try:
                self.sample()
            except Exception:
                logger.exception("media stats failed")

    def sample(self) -> None:
        self._ticks += 1
        report = self.stats_period > 0 and self._ticks % max(1, round(self.stats_period / self.sample_period)) == 0
        report = report and self.gateway.event_bus.wants(EventType.MEDIA)
        seen: dict[int, int] = {}
        for handle in list(self.gateway.handles.values()):
            if handle.media_keys is None:
                continue
            try:
                stats = self.gateway.engine.peer_stats(handle.id)
            except (KeyError, RuntimeError):
                continue
            sent = stats.bytes
            seen[handle.id] = sent
            lastsec = max(0, sent - self._previous.get(handle.id, sent))
            self.bytes_lastsec[handle.id] = lastsec
            if report:
                self._report(handle, stats, lastsec)
        self._previous = seen
        for gone in set(self.bytes_lastsec) - set(seen):
            del self.bytes_lastsec[gone]

    def _report(self, handle: Any, stats: PeerStats, lastsec: int) -> None:
        description = handle.remote_description
        mids = [m.mid for m in description.media if m.port] if description is not None else []
        entry = {
            "mid": ",".join(mid for mid in mids if mid),
            "media": "+".join(sorted({m.kind for m in description.media if m.port})) if description is not None else "",
            "packets-received": 0,
            "packets-sent": stats.packets,
            "bytes-received": 0,
            "bytes-sent": stats.bytes,
            "bytes-received-lastsec": 0,
            "bytes-sent-lastsec": lastsec,
            "nacks-received": stats.nacked,
            "nacks-sent": 0,
            "retransmissions-sent": stats.retransmissions,
            "dropped": stats.dropped,
            "bandwidth-estimate": stats.estimate,  # fanout's: the engine's estimate, bits/s (None: no feedback yet)
        }
        self.gateway.event_bus.emit(
            EventType.MEDIA,
            {"media": [entry]},
            subtype=MediaSubtype.STATS,
            session_id=handle.session.id,
            handle_id=handle.id,
            opaque_id=handle.opaque_id,
        )
