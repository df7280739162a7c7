"""Private network namespaces whose only interface is loopback.

A browser in such a namespace has exactly one ICE candidate pair,
127.0.0.1 <-> 127.0.0.1: the machine's other addresses are not there to pair
(ARCHITECTURE.md, "Tests and real clients").
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

_counter = itertools.count()


@dataclass(frozen=True)
class NetworkNamespace:
    name: str

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test makes a network namespace and must run as root (as CI does)")


@contextmanager
def loopback_namespace(*, multicast: bool = False) -> Iterator[NetworkNamespace]:
    """A namespace with only ``lo``; with ``multicast``, lo carries multicast (224.0.0.0/4)."""
    require_root()
    name = f"fanout-test-{os.getpid()}-{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        if multicast:
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "multicast", "on"], check=True)
            subprocess.run(["ip", "-n", name, "route", "add", "224.0.0.0/4", "dev", "lo"], check=True)
        yield NetworkNamespace(name)
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", name], check=False)


CLONE_NEWNET = 0x40000000
VETH_ADDRESS = "127.0.0.2"


@contextmanager
def entered_namespace_with_veth() -> Iterator[NetworkNamespace]:
    """This thread (and the processes it starts) moved into a fresh namespace with ``lo`` and a
    veth pair whose end carries 127.0.0.2: libnice (GStreamer's webrtcbin) skips loopback
    interfaces, so a WebRTC client built on it needs an address on another one."""
    import ctypes

    require_root()
    name = f"fanout-test-{os.getpid()}-{next(_counter)}"
    veth = f"fv{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    original = os.open("/proc/self/ns/net", os.O_RDONLY)
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        for argv in (
            ["link", "set", "lo", "up"],
            ["link", "add", veth, "type", "veth", "peer", "name", veth + "p"],
            ["addr", "add", f"{VETH_ADDRESS}/32", "dev", veth],
            ["link", "set", veth + "p", "up"],
            ["link", "set", veth, "up"],
        ):
            subprocess.run(["ip", "-n", name, *argv], check=True)
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the test namespace failed")
        finally:
            os.close(target)
        yield NetworkNamespace(name)
    finally:
        libc.setns(original, CLONE_NEWNET)
        os.close(original)
        subprocess.run(["ip", "netns", "del", name], check=False)
