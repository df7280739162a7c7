"""Free ports for servers started by tests.

A port is chosen below the kernel's ephemeral range: a port the kernel hands out for
``bind(0)`` can be taken by any client socket (a browser's, aiortc's, a cluster node's
outgoing connection) between the moment a test picks it and the moment its server binds
it, and the server then fails with "address already in use". Below the ephemeral range
only an explicit bind takes a port, and this module never hands out one port twice (nor one
that another pytest-xdist worker may hand out)."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

LOWEST_TEST_PORT = 20000  # above the streaming plugin's first ports for port = 0 mountpoints (10000 up)
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")

_handed_out: set[int] = set()


def _this_process_share() -> tuple[int, int]:
    """(k, n): under pytest-xdist, worker k of n takes only ports p with p % n == k, so two
    processes never hand out the same port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return int(worker.removeprefix("gw")) % count, count


def _first_ephemeral_port() -> int:
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    """Free for TCP and UDP on every IPv4 address (servers bind 0.0.0.0 or one loopback address)."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that are free for both TCP and UDP right now and that no
    client socket can take before the test's server binds them."""
    highest = _first_ephemeral_port() - 1
    if highest - LOWEST_TEST_PORT < 1000:
        highest = LOWEST_TEST_PORT + 10000
    mine, share = _this_process_share()
    ports: list[int] = []
    for _attempt in range(10 * (highest - LOWEST_TEST_PORT)):
        if len(ports) == count:
            return ports
        port = random.randint(LOWEST_TEST_PORT, highest)
        if port % share != mine or port in _handed_out or not _bindable(port):
            continue
        _handed_out.add(port)
        ports.append(port)
    if len(ports) == count:
        return ports
    raise RuntimeError(f"no {count} free ports between {LOWEST_TEST_PORT} and {highest}")
