"""A mountpoint's data port: UDP datagrams that become data channel messages.

The control plane, not the engine, reads this port. Data streams carry a few
messages a second (subtitles, song titles, scores), each one sent to every
viewer over its SCTP association, which lives in Python (fanout.webrtc.sctp):
handing the datagrams to the engine would only bring them back. The media
path is untouched; the socket is read by the asyncio event loop
(``loop.add_reader``), all pending datagrams at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from fanout.plugins.streaming.config import DataStreamConfig

logger = logging.getLogger(__name__)

MAX_DATAGRAM = 65535
READS_PER_WAKEUP = 64  # then let the loop run other work; the reader fires again at once


class DataSource:
    """The bound data port of one mountpoint; ``on_message`` gets each datagram's bytes."""

    def __init__(self, config: DataStreamConfig, on_message: Callable[[bytes], None]) -> None:
        """Binds the port at once (OSError if it is taken) and reads it from the running loop."""
        self.config = config
        self.messages = 0
        self.bytes = 0
        self.last_message_at: float | None = None  # time.monotonic()
        self._on_message = on_message
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._socket.setblocking(False)
            self._socket.bind((config.host, config.port))
        except OSError:
            self._socket.close()
            raise
        self.port: int = self._socket.getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._socket.fileno(), self._read)

    def close(self) -> None:
        if self._socket.fileno() >= 0:
            self._loop.remove_reader(self._socket.fileno())
            self._socket.close()

    def _read(self) -> None:
        for _ in range(READS_PER_WAKEUP):
            try:
                data = self._socket.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                logger.debug("data port %d: %s", self.port, error)
                return
            if not data:
                continue  # an empty datagram is no message
            self.messages += 1
            self.bytes += len(data)
            self.last_message_at = time.monotonic()
            try:
                self._on_message(data)
            except Exception:
                logger.exception("data port %d: relaying a message failed", self.port)
