"""A private network namespace for the whole bench: server, source and viewers.

Inside it nothing else shares loopback, every port is free, and Janus (which
skips loopback interfaces when it gathers candidates) finds a veth interface
carrying 127.0.0.2. The bench process moves itself
in with setns(2) before it starts any thread; its children inherit it.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
JANUS_ADDRESS = "127.0.0.2"
DUMMY_INTERFACE = "fanoutb0"


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@contextmanager
def bench_namespace() -> Iterator[str]:
    """Create the namespace, move this process into it, and delete it on exit."""
    if os.geteuid() != 0:
        raise PermissionError("fanout bench load makes a network namespace and must run as root")
    name = f"fanout-load-{os.getpid()}"
    _run("ip", "netns", "add", name)
    original = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        _run("ip", "-n", name, "link", "set", "lo", "up")
        # A veth pair (these kernels have no dummy interfaces); both ends stay inside.
        _run(
            "ip",
            "-n",
            name,
            "link",
            "add",
            DUMMY_INTERFACE,
            "type",
            "veth",
            "peer",
            "name",
            DUMMY_INTERFACE + "p",
        )
        _run(
            "ip",
            "-n",
            name,
            "addr",
            "add",
            f"{JANUS_ADDRESS}/32",
            "dev",
            DUMMY_INTERFACE,
        )
        _run("ip", "-n", name, "link", "set", DUMMY_INTERFACE + "p", "up")
        _run("ip", "-n", name, "link", "set", DUMMY_INTERFACE, "up")
        _setns(f"/run/netns/{name}")
        yield name
    finally:
        _setns_fd(original)
        os.close(original)
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def steer_receiving_to(namespace: str, cpu: int) -> None:
    """Loopback's receiving half runs on ``cpu`` (RPS on the namespace's lo): the kernel
    work of delivering each datagram to its socket (socket filters, queueing, waking the
    reader), which on loopback otherwise runs on the sender's core, in the sender's time.
    With the viewers on ``cpu``, the server's core then does what a server sending to
    other machines does: its packets' way down to the device, not the viewers' way up."""
    mask = format(1 << cpu, "x")
    _run("ip", "netns", "exec", namespace, "sh", "-c", f"echo {mask} > /sys/class/net/lo/queues/rx-0/rps_cpus")


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        _setns_fd(fd)
    finally:
        os.close(fd)


def _setns_fd(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
