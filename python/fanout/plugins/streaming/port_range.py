"""The ports a mountpoint gets for ``port = 0``: as Janus's Streaming plugin, a free port of its
``rtp_port_range`` (janus.plugin.streaming.jcfg, ``general``; default 10000-60000), taken in
turn from where the previous pick stopped, for RTP, RTCP and data ports alike."""

from __future__ import annotations

import errno
import ipaddress
import socket

DEFAULT_RTP_PORT_RANGE = (10000, 60000)


class PortRange:
    """Hands out free UDP ports of ``low``-``high`` (both included)."""

    def __init__(self, low: int, high: int) -> None:
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"{low}-{high} is not a range of port numbers")
        self.low = low
        self.high = high
        self._next = low

    def pick(self, host: str) -> int:
        """A port of the range that ``host`` can bind now; OSError (EADDRINUSE) if none can."""
        for _ in range(self.high - self.low + 1):
            port = self._next
            self._next = self.low if port == self.high else port + 1
            if _is_free(host, port):
                return port
        raise OSError(errno.EADDRINUSE, f"no free port in rtp_port_range {self.low}-{self.high}")


def _is_free(host: str, port: int) -> bool:
    try:
        multicast = ipaddress.ip_address(host).is_multicast
    except ValueError:
        multicast = False
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("0.0.0.0" if multicast else host, port))
        except OSError:
            return False
    return True
