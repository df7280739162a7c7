"""fanout.memory: glibc's free pages go back to the system; what lives from the start leaves
the garbage collector's full collections."""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import pytest

from fanout.memory import freeze_startup_objects, malloc_trim


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_memory_freed_in_another_thread_goes_back_to_the_system() -> None:
    trim = malloc_trim()
    if trim is None:
        pytest.skip("not glibc")
    kept: list[bytes] = []

    def fragment() -> None:  # in its own arena, as the engine's threads and OpenSSL's are
        blocks = [bytes(2048) for _ in range(40_000)]  # 80 MB, each block from malloc (not pymalloc)
        kept.extend(blocks[::400])  # a few stay, scattered, as a long-lived viewer's state does
        del blocks

    thread = threading.Thread(target=fragment)
    thread.start()
    thread.join()
    held = rss_mib()
    trim()
    assert held - rss_mib() > 20, "malloc_trim gave back less than 20 MiB of the 80 MiB freed"
    assert len(kept) == 100


def test_objects_alive_at_startup_leave_full_collections_and_later_garbage_is_still_collected() -> None:
    class Node:
        def __init__(self) -> None:
            self.partner: Node | None = None

    try:
        frozen = freeze_startup_objects()
        assert frozen > 10_000, "the interpreter's and fanout's modules are frozen"
        tracked = len(gc.get_objects())
        assert tracked < frozen / 10, f"{tracked} objects still walked by a full collection"

        first, second = Node(), Node()  # a cycle made after the start, as a viewer's state is
        first.partner, second.partner = second, first
        gone = weakref.ref(first)
        del first, second
        gc.collect()
        assert gone() is None, "a cycle made after the freeze was not collected"
    finally:
        gc.unfreeze()  # the rest of the test session collects as before
