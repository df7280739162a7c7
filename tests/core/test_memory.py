"""fanout.memory: glibc's free pages go back to the system."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fanout.memory import malloc_trim


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
