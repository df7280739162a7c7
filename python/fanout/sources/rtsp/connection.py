"""The asyncio side of the RTSP client: one TCP control connection (TLS for
``rtsps://``) carrying an :class:`~fanout.sources.rtsp.client.RtspClient`'s bytes,
with Janus's timeouts; with RTSP over TCP, the interleaved media handed to a
:class:`~fanout.sources.rtsp.relay.MediaRelay`."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any
from urllib.parse import urlsplit

from fanout.sources.rtsp.auth import Credentials
from fanout.sources.rtsp.client import Described, Event, Playing, RtspClient, TransportRequest
from fanout.sources.rtsp.description import Track
from fanout.sources.rtsp.messages import InterleavedFrame, RtspError
from fanout.sources.rtsp.relay import MediaRelay

DEFAULT_PORT = 554
DEFAULT_TLS_PORT = 322  # rtsps (IANA)
TEARDOWN_TIMEOUT = 1.0  # seconds a TEARDOWN may take when the mountpoint goes


class MediaStalled(RtspError):
    """The session is up but no media arrived for too long."""


class RtspConnection:
    """OPTIONS + DESCRIBE with :meth:`describe`, SETUP + PLAY with :meth:`play`, then
    :meth:`maintain` keeps the session alive until it ends; :meth:`close` tears it down.

    ``timeout`` bounds each request (Janus's rtsp_timeout), ``connect_timeout`` the TCP
    connect (rtsp_conn_timeout). Failures raise RtspError, OSError or TimeoutError."""

    def __init__(
        self,
        url: str,
        *,
        credentials: Credentials | None = None,
        quirk: bool = False,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        session_timeout: float = 0.0,
        local_address: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.client = RtspClient(url, credentials=credentials, quirk=quirk)
        self.url = url
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.session_timeout = session_timeout  # Janus's rtsp_session_timeout: caps the keep-alive interval if > 0
        # The address to connect from (rtspiface): a server sends the media to the address
        # the control connection comes from, so it must be the one the media ports are bound on.
        self.local_address = local_address
        self.tls = tls  # an rtsps:// URL's: how the server's certificate is checked
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def describe(self) -> tuple[Track, ...]:
        parts = urlsplit(self.url)
        secure = parts.scheme.lower() == "rtsps"
        if secure and self.tls is None:
            raise RtspError("an rtsps:// URL needs a TLS context")
        host, port = parts.hostname or "", parts.port or (DEFAULT_TLS_PORT if secure else DEFAULT_PORT)
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, local_addr=(self.local_address, 0) if self.local_address else None,
                ssl=self.tls if secure else None, server_hostname=host if secure else None,
            ),
            self.connect_timeout,
        )  # fmt: skip
        self.client.start()
        described = await self._until(Described)
        assert isinstance(described, Described)
        return described.tracks

    async def play(self, transports: list[TransportRequest], relay: MediaRelay | None = None) -> Playing:
        """SETUP and PLAY: RTP over UDP to the transports' ports, or, given a ``relay``,
        interleaved on this connection and handed to the relay."""
        if relay is not None:
            relay.send_frame = self._send_frame
            relay.channels = self.client.channels  # filled in as each SETUP is answered
            self.client.relay_frames_to(relay.relay_frames)
        self.client.setup(transports, interleaved=relay is not None)
        playing = await self._until(Playing)
        assert isinstance(playing, Playing)
        return playing

    def _send_frame(self, frame: InterleavedFrame) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(bytes(frame))

    async def maintain(self, stalled: asyncio.Event) -> None:
        """Keep-alives within the session timeout until the server closes the connection
        (RtspError), answers badly, or ``stalled`` is set: media stopped (MediaStalled)."""
        reader = self._reader
        assert reader is not None
        interval = self.client.keepalive_interval
        if self.session_timeout > 0:
            interval = min(interval, self.session_timeout / 2)
        loop = asyncio.get_running_loop()
        next_keepalive = loop.time() + interval
        stall: asyncio.Future[Any] = asyncio.ensure_future(stalled.wait())
        read: asyncio.Future[Any] | None = None
        try:
            while True:
                if read is None:
                    read = asyncio.ensure_future(reader.read(65536))
                timeout = max(next_keepalive - loop.time(), 0.0)
                await asyncio.wait({read, stall}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if read.done():
                    data, read = read.result(), None
                    if data == b"":
                        raise RtspError("the server closed the RTSP connection")
                    self._without_frames(self.client.receive_data(data))
                if stall.done():
                    raise MediaStalled("no media from the RTSP server")
                if loop.time() >= next_keepalive:
                    self.client.keepalive()
                    await self._flush()
                    next_keepalive = loop.time() + interval
        finally:
            stall.cancel()
            if read is not None:
                read.cancel()

    async def close(self) -> None:
        """TEARDOWN (if a session was set up; waiting briefly for its answer), then close."""
        writer = self._writer
        if writer is None:
            return
        self._writer = None
        with contextlib.suppress(OSError, RtspError, TimeoutError, RuntimeError):
            self.client.teardown()
            data = self.client.data_to_send()
            if data and not writer.is_closing():
                writer.write(data)
                await asyncio.wait_for(writer.drain(), TEARDOWN_TIMEOUT)
                if self._reader is not None:
                    await asyncio.wait_for(self._reader.read(4096), TEARDOWN_TIMEOUT)
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), TEARDOWN_TIMEOUT)

    async def _flush(self) -> None:
        assert self._writer is not None
        data = self.client.data_to_send()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def _until(self, wanted: type) -> Event:
        """Send what the client queued and feed it the server's bytes until it gives ``wanted``."""
        assert self._reader is not None
        while True:
            await self._flush()
            data = await asyncio.wait_for(self._reader.read(65536), self.timeout)
            if not data:
                raise RtspError(f"the server closed the RTSP connection ({self.client.state.value})")
            found: Event | None = None
            for event in self._without_frames(self.client.receive_data(data)):
                if isinstance(event, wanted) and found is None:
                    found = event
            if found is not None:
                await self._flush()
                return found

    @staticmethod
    def _without_frames(events: list[Event]) -> list[Event]:
        """The events but interleaved frames (which a relay, if set up, has taken already)."""
        return [event for event in events if not isinstance(event, InterleavedFrame)]
