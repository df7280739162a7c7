"""Giving freed memory back to the system.

fanout's threads (the control plane, the engine's receiver and workers, OpenSSL in the DTLS
handshakes) allocate from glibc's per-thread arenas, and glibc keeps the free pages of an
arena whose top is still in use. Over 300 joins and leaves, the Python heap flat, a server's
RSS grew ~4 MiB, of which ``malloc_trim(0)`` gave back a third (the rest grows more slowly
with time: see the soak in bench/results/README.md). :func:`trim_periodically` calls it every
minute (glibc only; elsewhere nothing), so that free pages do not count as a leak.

Python's cyclic garbage collector walks every object it tracks in a full collection, and a
surge of joins triggers several: the control plane stops for each, on the core an engine
worker may share. :func:`freeze_startup_objects` moves what exists once fanout is up (modules,
classes, configuration: ~75,000 objects, 20-30 ms of every full collection) out of the
collector's sight, so that a full collection walks only what viewers brought.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

TRIM_INTERVAL = 60.0


def malloc_trim() -> Callable[[], bool] | None:
    """glibc's ``malloc_trim(0)`` (True if memory went back), or None on another C library."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: bool(trim(0))


def freeze_startup_objects() -> int:
    """Collects, then keeps every object alive now out of future collections (they live as long
    as the process); returns how many were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def trim_periodically(interval: float = TRIM_INTERVAL) -> None:
    """Every ``interval`` seconds, give glibc's free pages back (a few milliseconds each time)."""
    trim = malloc_trim()
    if trim is None:
        logger.debug("no malloc_trim (not glibc): freed memory stays with the allocator")
        return
    while True:
        await asyncio.sleep(interval)
        started = time.perf_counter()
        released = trim()
        logger.debug("malloc_trim: %s in %.1f ms", "released" if released else "nothing", (time.perf_counter() - started) * 1000)
