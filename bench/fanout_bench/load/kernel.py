"""What the kernel counts: per-socket UDP drops, a process's CPU time, a core's time, softnet drops.

/proc/net/udp is read in the calling thread's network namespace. Its ``drops``
column is the socket's sk_drops: every datagram the kernel would have queued
but could not (receive buffer full), which is how a viewer that never reads
is still counted exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def udp_sockets() -> dict[int, tuple[int, int]]:
    """inode -> (rx_queue bytes, drops) of every UDP socket (IPv4, then IPv6)."""
    sockets: dict[int, tuple[int, int]] = {}
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    if len(fields) < 13:
                        continue
                    rx_queue = int(fields[4].split(":")[1], 16)
                    sockets[int(fields[9])] = (rx_queue, int(fields[12]))
        except FileNotFoundError:  # a kernel without IPv6
            pass
    return sockets


def udp_drops(inodes: set[int], attempts: int = 10) -> dict[int, int]:
    """Drops of the UDP sockets with these inodes.

    /proc/net/udp walks the one hash table every namespace shares, resuming by
    position after each page of text: sockets that other namespaces open and
    close meanwhile make a read skip some of ours. Reads are repeated until
    every socket was seen (a drop counter only grows, so reads a few
    milliseconds apart combine); sockets never seen are left out.
    """
    found: dict[int, int] = {}
    for _ in range(attempts):
        for inode, (_, drops) in udp_sockets().items():
            if inode in inodes and inode not in found:
                found[inode] = drops
        if len(found) == len(inodes):
            break
    return found


def udp_port_drops(ports: set[int]) -> int:
    """Drops of every UDP socket (IPv4 and IPv6) bound to one of ``ports``: a server's RTP inputs."""
    total = 0
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    if len(fields) >= 13 and int(fields[1].rsplit(":", 1)[1], 16) in ports:
                        total += int(fields[12])
        except FileNotFoundError:
            continue
    return total


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


def _thread_stats(pid: int) -> Iterator[tuple[str, list[str]]]:
    """Each of ``pid``'s threads: its name and its /proc stat fields from field 3 on (a thread gone is left out)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        yield text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """User + system time so far of each of ``pid``'s threads, summed by thread name (a thread gone is left out)."""
    times: dict[str, float] = {}
    for name, fields in _thread_stats(pid):
        times[name] = times.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return times


def thread_nice_values(pid: int) -> dict[str, int]:
    """The nice value of each of ``pid``'s threads by name (the lowest among threads of one name)."""
    values: dict[str, int] = {}
    for name, fields in _thread_stats(pid):
        nice = int(fields[19 - 3])  # field 19; the list starts at field 3
        values[name] = min(nice, values.get(name, nice))
    return values
