"""What the kernel counts: per-socket UDP drops, a process's CPU time, a core's time, softnet drops.

/proc/net/udp is read in the calling thread's network namespace. Its ``drops``
column is the socket's sk_drops: every datagram the kernel would have queued
but could not (receive buffer full), which is how a viewer that never reads
is still counted exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def udp_sockets() -> dict[int, tuple[int, int]]:
    """inode -> (rx_queue bytes, drops) of every IPv4 UDP socket."""
    sockets: dict[int, tuple[int, int]] = {}
    with open("/proc/net/udp") as lines:
        next(lines)
        for line in lines:
            fields = line.split()
            if len(fields) < 13:
                continue
            rx_queue = int(fields[4].split(":")[1], 16)
            sockets[int(fields[9])] = (rx_queue, int(fields[12]))
    return sockets


def process_cpu_seconds(pid: int) -> float:
    """User + system time of every thread of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(frozen=True)
class CoreTimes:
    """Seconds a core spent, from /proc/stat."""

    busy: float
    softirq: float  # irq + softirq: on loopback, receiving is charged to the sending core
    idle: float


def core_times(cpu: int) -> CoreTimes:
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(f"cpu{cpu} "):
                values = [int(v) / CLOCK_TICKS for v in line.split()[1:]]
                user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
                return CoreTimes(
                    busy=user + nice + system + irq + softirq + steal,
                    softirq=irq + softirq,
                    idle=idle + iowait,
                )
    raise ValueError(f"no cpu{cpu} in /proc/stat")


def softnet_dropped() -> int:
    """Packets every core's input backlog dropped (netdev_max_backlog)."""
    total = 0
    with open("/proc/net/softnet_stat") as lines:
        for line in lines:
            total += int(line.split()[1], 16)
    return total
