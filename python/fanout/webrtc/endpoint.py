"""The one UDP socket that serves every WebRTC peer (the only I/O in fanout.webrtc).

A STUN binding request goes to the peer whose local ufrag starts its USERNAME
("<local_ufrag>:<remote_ufrag>"); every other datagram goes to the peer that
owns its source address (an address that passed that peer's authenticated
check). After each input the peer's datagrams are sent, its events delivered,
and its timer re-armed with ``loop.call_at`` (peers run on ``loop.time()``).

The socket has SO_REUSEPORT (after a check, without it, that nobody holds the
port), so that :meth:`WebRtcEndpoint.connected_socket` can open a socket on the
same address connected to one peer: Linux then delivers that peer's datagrams to
it (a WHIP publisher's link, read by the engine), the rest still to this one.

Once the engine runs, its own thread reads the socket (:meth:`WebRtcEndpoint.read_through`):
it keeps the viewers' RTCP (their transport feedback alone is tens of packets a second
each) and hands the endpoint the rest, so that the Python loop wakes for STUN and DTLS only.

The socket's receive buffer is sized (``receive_buffer`` bytes, SO_RCVBUFFORCE where the
process may, else SO_RCVBUF up to net.core.rmem_max): after a network blip or a join storm
every viewer's consent check, DTLS flight and RTCP arrive together and wait there for their
reader (the engine's thread, which queues what is the control plane's, or this endpoint);
what does not fit, the kernel drops (:meth:`WebRtcEndpoint.socket_drops`).

Bound to ``::``, the socket is dual-stack (IPV6_V6ONLY off): IPv4 peers arrive as
v4-mapped addresses, which the endpoint hands to peers in their IPv4 form and maps
back when it sends.

ICE-TCP (``ice_tcp``, RFC 6544): a TCP listener on the same port takes viewers
that cannot use UDP; the endpoint advertises a passive TCP candidate beside each
UDP one (ranked below them). Each connection is known by its remote address, so
peers see its frames (:mod:`fanout.webrtc.tcp`) as datagrams from that address
and their answers go back on it. A connection's first frame must be a STUN
check naming a peer's ufrag, and a connection that has not passed an
authenticated check within ``TCP_SETUP_TIMEOUT`` is closed; until then its frames
are at most ``MAX_SETUP_FRAME`` bytes, and past ``MAX_UNPROVEN_CONNECTIONS`` the
oldest such connection is closed for a new one: bounded memory whatever arrives.
Once the peer's DTLS is up the handle gives the engine the connection
(:meth:`TcpConnection.hand_over`): the engine sends the media and everything else
the peer sends from then on (one writer, so frames never interleave); the
endpoint goes on reading it (STUN consent, DTLS, SRTCP).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from fanout.config.network import unmapped
from fanout.webrtc.dtls import DtlsCertificate
from fanout.webrtc.ice import CONSENT_TIMEOUT
from fanout.webrtc.peer import PeerClosed, PeerEvent, WebRtcPeer
from fanout.webrtc.sdp import Candidate
from fanout.webrtc.stun import StunError, StunMessage
from fanout.webrtc.tcp import FrameError, FrameReader, frame, passive_candidate

logger = logging.getLogger(__name__)

HOST_TYPE_PREFERENCE = 126
SOCKET_LISTING_ATTEMPTS = 3
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux: past net.core.rmem_max, with CAP_NET_ADMIN
EventHandler = Callable[[WebRtcPeer, PeerEvent], None]

TCP_SETUP_TIMEOUT = 10.0  # seconds a TCP connection may take to pass an authenticated STUN check
MAX_SETUP_FRAME = 1500  # the largest frame before that (a binding request is a few hundred bytes)
MAX_UNPROVEN_CONNECTIONS = 256  # TCP connections without a passed check; past this the oldest is closed
TCP_BACKLOG = 1024
TCP_READ_BYTES = 65536
# The buffer each UDP read gets: any UDP datagram fits (IPv4 65507, IPv6 65527 bytes of payload).
# asyncio's default, 256 KiB, is past where a fresh process's malloc maps memory: each read then
# mapped and unmapped its buffer, about 12 us (a process that has freed a large block reads as
# fast either way, as fanout's server did in bench/results/load-feedback-2026-12-04-cost).
UDP_READ_BYTES = 65536
# Each connection's kernel send buffer: the engine's own queue (512 KiB) holds the rest, so a viewer that
# stops reading is found stalled after about a second of media, not after the kernel's autotuned megabytes.
TCP_SEND_BUFFER = 128 * 1024


def host_candidate(index: int, ip: str, port: int) -> Candidate:
    """The host candidate for the ``index``-th advertised address (RFC 8445 section 5.1.2.1 priority)."""
    local_preference = 65535 - index
    priority = (HOST_TYPE_PREFERENCE << 24) + (local_preference << 8) + 256 - 1
    return Candidate(str(index + 1), 1, "udp", priority, ip, port, "host")


def _free_port(family: socket.AddressFamily, host: str, port: int) -> int:
    """``port`` (0: one the kernel picks) once bound without SO_REUSEPORT, so that a socket
    with it never shares a port someone else holds; OSError if it is taken."""
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.bind((host, port))
        return int(probe.getsockname()[1])
    finally:
        probe.close()


def size_receive_buffer(sock: socket.socket, wanted: int) -> int:
    """Ask for a ``wanted``-byte receive buffer (0: keep the kernel's default); returns what the
    kernel granted, as getsockopt reports it (Linux doubles the request for its bookkeeping)."""
    if wanted > 0:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, wanted)
        except OSError:  # no CAP_NET_ADMIN: capped at net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


def socket_drops(sock: socket.socket) -> int | None:
    """How many datagrams the kernel dropped at ``sock`` (its receive buffer full), from
    /proc/net/udp and udp6 (the ``drops`` column of the line with its inode); None if unknown."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    for _ in range(SOCKET_LISTING_ATTEMPTS):  # a read may skip sockets opened and closed meanwhile
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) > 12 and fields[9] == inode:
                    return int(fields[-1])
    return None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: WebRtcEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.endpoint.datagram_received(data, (unmapped(addr[0]), addr[1]))

    def error_received(self, exc: Exception) -> None:
        logger.debug("WebRTC socket error: %s", exc)


class TcpConnection:
    """One viewer's ICE-TCP connection, known by its remote address."""

    def __init__(self, sock: socket.socket, address: tuple[str, int], accepted_at: float) -> None:
        self.socket = sock
        self.address = address
        self.accepted_at = accepted_at
        self.reader = FrameReader(MAX_SETUP_FRAME)
        self.peer: WebRtcPeer | None = None  # set once an authenticated check came on it
        self._engine_send: Callable[[bytes], bool] | None = None

    def fileno(self) -> int:
        return self.socket.fileno()

    @property
    def handed_over(self) -> bool:
        return self._engine_send is not None

    def hand_over(self, engine_send: Callable[[bytes], bool]) -> None:
        """From now on the engine writes to the connection: what the endpoint sends on it
        goes through ``engine_send`` (the engine's ``send_tcp_frame`` for this peer)."""
        self._engine_send = engine_send

    def send(self, packet: bytes) -> bool:
        """Send ``packet`` as one frame; False if it was not sent whole (the caller closes a
        connection not handed over yet: a frame cut short would break the stream)."""
        if self._engine_send is not None:
            try:
                return self._engine_send(packet)
            except (KeyError, ValueError, RuntimeError):  # the engine's peer is gone meanwhile
                return False
        data = frame(packet)
        try:
            return self.socket.send(data) == len(data)
        except OSError:
            return False


class WebRtcEndpoint:
    """A UDP socket (and with ICE-TCP a TCP listener on its port), its certificate and the peers it serves."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        certificate: DtlsCertificate,
        advertised_ips: list[str],
        *,
        consent_timeout: float = CONSENT_TIMEOUT,
    ) -> None:
        self.certificate = certificate
        self.consent_timeout = consent_timeout  # seconds: its peers' ICE consent expiry (fanout.ice_consent_timeout)
        self.port: int = sock.getsockname()[1]
        self.advertised_ips = advertised_ips
        self.dropped_unknown = 0
        self.dropped_malformed = 0
        self.receive_buffer = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))  # bytes, as granted
        self._loop = loop
        self._socket = sock
        self.bind_address: tuple[str, int] = sock.getsockname()[:2]
        self._ipv6_socket = sock.family == socket.AF_INET6
        self._transport: asyncio.DatagramTransport | None = None
        self._reading_through: int | None = None  # the fd of the queue the engine hands datagrams through
        self._peers_by_ufrag: dict[str, WebRtcPeer] = {}
        self._peers_by_address: dict[tuple[str, int], WebRtcPeer] = {}
        self._handlers: dict[WebRtcPeer, EventHandler] = {}
        self._timers: dict[WebRtcPeer, asyncio.TimerHandle] = {}
        # Datagrams from these addresses go to their receiver, not to a peer (a cluster relay's SRTCP).
        self._address_routes: dict[tuple[str, int], Callable[[bytes], None]] = {}
        self._tcp_listener: socket.socket | None = None
        self._tcp_connections: dict[tuple[str, int], TcpConnection] = {}
        self._unproven: dict[tuple[str, int], TcpConnection] = {}  # insertion order: oldest first
        self._tcp_sweep: asyncio.TimerHandle | None = None
        self.tcp_accepted = 0
        self.tcp_rejected = 0  # closed before their first check: not STUN, or no such peer
        self.tcp_malformed = 0  # closed for breaking the framing (or a frame too large before a check)
        self.tcp_setup_timeouts = 0  # closed for passing no check within TCP_SETUP_TIMEOUT
        self.tcp_evicted = 0  # closed for a newer one past MAX_UNPROVEN_CONNECTIONS
        self.tcp_write_failures = 0  # closed because a frame could not be written whole before the hand-over
        self.tcp_frames_dropped = 0  # frames the engine's queue did not take after the hand-over

    @classmethod
    async def open(
        cls,
        bind_host: str,
        port: int,
        advertised_ips: list[str],
        *,
        receive_buffer: int = 0,
        ice_tcp: bool = False,
        consent_timeout: float = CONSENT_TIMEOUT,
    ) -> WebRtcEndpoint:
        """The UDP socket on ``bind_host:port`` (0: a free port; ``receive_buffer``: the bytes to ask
        for its receive buffer, 0 = the kernel's default), with ``ice_tcp`` a TCP listener on the same
        port too. Its peers' ICE consent expires ``consent_timeout`` seconds after their last valid
        check. Raises OSError if either cannot be bound, or ValueError if bound to every address
        with none to advertise."""
        if not advertised_ips and ipaddress.ip_address(bind_host).is_unspecified:
            raise ValueError(f"bound to {bind_host}: name the addresses to advertise")
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
        port = _free_port(family, bind_host, port)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((bind_host, port))
            granted = size_receive_buffer(sock, receive_buffer)
        except OSError:
            sock.close()
            raise
        if granted < receive_buffer:
            logger.warning(
                "the WebRTC socket's receive buffer is %d KiB, not the %d KiB asked (fanout.webrtc_receive_buffer): "
                "a burst of consent checks from many viewers may be dropped; raise net.core.rmem_max "
                "(sysctl -w net.core.rmem_max=%d) or give fanout CAP_NET_ADMIN",
                granted >> 10, receive_buffer >> 10, receive_buffer,
            )  # fmt: skip
        endpoint = cls(loop, sock, DtlsCertificate.generate(), advertised_ips or [bind_host], consent_timeout=consent_timeout)
        if ice_tcp:
            try:
                endpoint._listen_tcp(family, bind_host, port)
            except OSError:
                sock.close()
                raise
        endpoint._transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(endpoint), sock=sock)
        if hasattr(endpoint._transport, "max_size"):  # the selector loop's transport: its read buffer
            endpoint._transport.max_size = UDP_READ_BYTES
        logger.info(
            "WebRTC endpoint on %s:%d (UDP%s), advertising %s, receive buffer %d KiB, ICE consent timeout %g s",
            bind_host, endpoint.port, " and TCP" if ice_tcp else "", endpoint.advertised_ips, endpoint.receive_buffer >> 10,
            consent_timeout,
        )  # fmt: skip
        return endpoint

    def _listen_tcp(self, family: socket.AddressFamily, bind_host: str, port: int) -> None:
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setblocking(False)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            listener.bind((bind_host, port))
            listener.listen(TCP_BACKLOG)
        except OSError:
            listener.close()
            raise
        self._tcp_listener = listener
        self._loop.add_reader(listener.fileno(), self._accept)

    @property
    def ice_tcp(self) -> bool:
        return self._tcp_listener is not None

    @property
    def peers(self) -> list[WebRtcPeer]:
        return list(self._handlers)

    def fileno(self) -> int:
        return self._socket.fileno()

    def socket_drops(self) -> int | None:
        """Datagrams the kernel dropped because the receive buffer was full (None: unknown)."""
        return socket_drops(self._socket)

    def read_through(self, ready_fd: int, take: Callable[[], list[tuple[bytes, tuple[str, int]]]]) -> None:
        """Another reader (the engine's thread) reads the socket from now on and keeps what is
        its own (viewers' RTCP); ``take()`` gives the rest, with unmapped source addresses,
        whenever ``ready_fd`` is readable."""
        assert self._transport is not None and self._reading_through is None
        self._transport.pause_reading()  # type: ignore[attr-defined]  # the selector loop's transport has it
        self._reading_through = ready_fd

        def read_ready() -> None:
            for data, address in take():
                try:
                    self.datagram_received(data, address)
                except Exception:
                    logger.exception("datagram from %s failed", address)

        self._loop.add_reader(ready_fd, read_ready)

    def connected_socket(self, remote: tuple[str, int]) -> socket.socket:
        """A new UDP socket on this endpoint's address and port, connected to ``remote``: from
        now on the kernel delivers ``remote``'s datagrams to it instead of to the endpoint.
        The caller owns it (close it when done). Raises OSError."""
        sock = socket.socket(self._socket.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if self._ipv6_socket:  # dual-stack as the endpoint's, so an IPv4 publisher's 4-tuple matches
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                if ":" not in remote[0]:
                    remote = ("::ffff:" + remote[0], remote[1])
            sock.bind(self.bind_address)
            sock.connect(remote)
        except OSError:
            sock.close()
            raise
        return sock

    def candidates(self, *, tcp: bool = True) -> list[Candidate]:
        """The host candidates: one UDP per advertised address, then (ICE-TCP, unless ``tcp`` is
        false) one passive TCP per address."""
        count = len(self.advertised_ips)
        udp = [host_candidate(index, ip, self.port) for index, ip in enumerate(self.advertised_ips)]
        if not (tcp and self.ice_tcp):
            return udp
        return udp + [passive_candidate(index, count, ip, self.port) for index, ip in enumerate(self.advertised_ips)]

    def tcp_connection(self, address: tuple[str, int]) -> TcpConnection | None:
        """The ICE-TCP connection from ``address``, if that is one."""
        return self._tcp_connections.get(address)

    def transport_of(self, address: tuple[str, int]) -> str:
        """"tcp" for an ICE-TCP connection's address, else "udp"."""
        return "tcp" if address in self._tcp_connections else "udp"

    @property
    def tcp_connections(self) -> int:
        return len(self._tcp_connections)

    def add_peer(self, peer: WebRtcPeer, on_event: EventHandler) -> None:
        self._peers_by_ufrag[peer.local_ufrag] = peer
        self._handlers[peer] = on_event
        self._process(peer)

    def restart_ice(self, peer: WebRtcPeer) -> None:
        """Give ``peer`` new ICE credentials (see :meth:`WebRtcPeer.restart_ice`) and route
        checks made with them to it."""
        self._peers_by_ufrag.pop(peer.local_ufrag, None)
        peer.restart_ice()
        self._peers_by_ufrag[peer.local_ufrag] = peer

    def remove_peer(self, peer: WebRtcPeer) -> None:
        if peer not in self._handlers:
            return
        peer.close()
        self._send(peer)
        del self._handlers[peer]
        self._peers_by_ufrag.pop(peer.local_ufrag, None)
        for address in [a for a, p in self._peers_by_address.items() if p is peer]:
            del self._peers_by_address[address]
        for connection in [c for c in self._tcp_connections.values() if c.peer is peer]:
            self._close_tcp(connection)
        timer = self._timers.pop(peer, None)
        if timer is not None:
            timer.cancel()

    def route_address(self, address: tuple[str, int], receiver: Callable[[bytes], None]) -> None:
        """Every datagram from ``address`` goes to ``receiver`` (no ICE or DTLS: a cluster relay's
        SRTCP, whose keys came over the cluster's control channel)."""
        self._address_routes[address] = receiver

    def unroute_address(self, address: tuple[str, int]) -> None:
        self._address_routes.pop(address, None)

    def flush(self, peer: WebRtcPeer) -> None:
        """Send what ``peer`` queued outside an input (e.g. :meth:`WebRtcPeer.send_data`), deliver
        its events and re-arm its timer."""
        if peer in self._handlers:
            self._process(peer)

    def close(self) -> None:
        for peer in self.peers:
            self.remove_peer(peer)
        if self._reading_through is not None:
            self._loop.remove_reader(self._reading_through)
            self._reading_through = None
        if self._transport is not None:
            self._transport.close()
        for connection in list(self._tcp_connections.values()):
            self._close_tcp(connection)
        if self._tcp_listener is not None:
            self._loop.remove_reader(self._tcp_listener.fileno())
            self._tcp_listener.close()
            self._tcp_listener = None
        if self._tcp_sweep is not None:
            self._tcp_sweep.cancel()
            self._tcp_sweep = None

    def datagram_received(self, data: bytes, address: tuple[str, int]) -> None:
        receiver = self._address_routes.get(address)
        if receiver is not None:
            receiver(data)
            return
        peer = self._peers_by_address.get(address)
        if data and data[0] < 4:
            try:
                message = StunMessage.parse(data)
                username = message.username
            except StunError as error:
                logger.debug("malformed STUN from %s: %s", address, error)
                self.dropped_malformed += 1
                return
            if username is not None:
                peer = self._peers_by_ufrag.get(username.split(":", 1)[0])
        if peer is None:
            self.dropped_unknown += 1
            return
        peer.receive(data, address, self._loop.time())
        if address in peer.valid_addresses:
            self._peers_by_address[address] = peer
        self._process(peer)

    def _on_timer(self, peer: WebRtcPeer) -> None:
        self._timers.pop(peer, None)
        if peer in self._handlers:
            peer.handle_timeout(self._loop.time())
            self._process(peer)

    def _send(self, peer: WebRtcPeer) -> None:
        assert self._transport is not None
        for data, address in peer.drain_transmits():
            connection = self._tcp_connections.get(address)
            if connection is not None:
                self._send_tcp(connection, data)
                continue
            if self._ipv6_socket and ":" not in address[0]:
                address = ("::ffff:" + address[0], address[1])
            self._transport.sendto(data, address)

    def _process(self, peer: WebRtcPeer) -> None:
        self._send(peer)
        handler = self._handlers[peer]
        closed = False
        for event in peer.drain_events():
            closed = closed or isinstance(event, PeerClosed)
            try:
                handler(peer, event)
            except Exception:
                logger.exception("WebRTC event handler failed on %s", event)
        if closed:
            self.remove_peer(peer)
            return
        if peer not in self._handlers:
            return
        deadline = peer.next_timeout()
        timer = self._timers.get(peer)
        if timer is not None and timer.when() == deadline:
            return  # most inputs (a viewer's RTCP) leave the deadline as it was: the timer stands
        if timer is not None:
            del self._timers[peer]
            timer.cancel()
        if deadline is not None:
            self._timers[peer] = self._loop.call_at(deadline, self._on_timer, peer)

    # -- ICE-TCP

    def _accept(self) -> None:
        assert self._tcp_listener is not None
        for _ in range(64):  # a burst of connections does not hold the loop for long
            try:
                sock, remote = self._tcp_listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # out of descriptors, ...: the listener's backlog waits
                logger.warning("ICE-TCP accept failed: %s", error)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TCP_SEND_BUFFER)
            address = (unmapped(remote[0]), remote[1])
            old = self._tcp_connections.get(address)
            if old is not None:  # the same 4-tuple again: the old one is gone
                self._close_tcp(old)
            if len(self._unproven) >= MAX_UNPROVEN_CONNECTIONS:
                self.tcp_evicted += 1
                self._close_tcp(next(iter(self._unproven.values())))
            connection = TcpConnection(sock, address, time.monotonic())
            self._tcp_connections[address] = connection
            self._unproven[address] = connection
            self.tcp_accepted += 1
            self._loop.add_reader(sock.fileno(), self._tcp_readable, connection)
            if self._tcp_sweep is None:
                self._tcp_sweep = self._loop.call_later(1.0, self._sweep_unproven)

    def _sweep_unproven(self) -> None:
        """Closes the connections that passed no check within TCP_SETUP_TIMEOUT."""
        self._tcp_sweep = None
        deadline = time.monotonic() - TCP_SETUP_TIMEOUT
        for connection in [c for c in self._unproven.values() if c.accepted_at <= deadline]:
            self.tcp_setup_timeouts += 1
            self._close_tcp(connection)
        if self._unproven:
            self._tcp_sweep = self._loop.call_later(1.0, self._sweep_unproven)

    def _tcp_readable(self, connection: TcpConnection) -> None:
        try:
            data = connection.socket.recv(TCP_READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._tcp_closed_by_viewer(connection)
            return
        try:
            frames = connection.reader.feed(data)
        except FrameError as error:
            logger.debug("ICE-TCP %s: %s", connection.address, error)
            self.tcp_malformed += 1
            self._tcp_closed_by_viewer(connection)
            return
        for packet in frames:
            if connection.address not in self._tcp_connections:
                return  # closed by an earlier frame
            self._tcp_frame_received(connection, packet)

    def _tcp_frame_received(self, connection: TcpConnection, data: bytes) -> None:
        peer = connection.peer
        if peer is None:
            username = None
            if data[0] < 4:
                try:
                    username = StunMessage.parse(data).username
                except StunError:
                    pass
            peer = self._peers_by_ufrag.get(username.split(":", 1)[0]) if username is not None else None
            if peer is None:
                self.tcp_rejected += 1
                self._close_tcp(connection)
                return
        peer.receive(data, connection.address, self._loop.time())
        if connection.peer is None and connection.address in peer.valid_addresses:
            connection.peer = peer
            connection.reader.max_frame = 65535  # DTLS records and SCTP may be large now
            del self._unproven[connection.address]
        self._process(peer)

    def _send_tcp(self, connection: TcpConnection, data: bytes) -> None:
        if connection.send(data):
            return
        if connection.handed_over:
            self.tcp_frames_dropped += 1
            return
        self.tcp_write_failures += 1
        self._tcp_closed_by_viewer(connection)

    def _tcp_closed_by_viewer(self, connection: TcpConnection) -> None:
        """The connection ended (or broke): closed; its peer too if media went over it."""
        peer = connection.peer
        self._close_tcp(connection)
        if peer is not None and peer in self._handlers and peer.address == connection.address:
            self._loop.call_soon(self._close_peer, peer, "TCP connection closed")

    def _close_peer(self, peer: WebRtcPeer, reason: str) -> None:
        handler = self._handlers.get(peer)
        if handler is None:
            return
        try:
            handler(peer, PeerClosed(reason))
        except Exception:
            logger.exception("WebRTC event handler failed on PeerClosed")
        self.remove_peer(peer)

    def close_tcp_peer(self, peer: WebRtcPeer, reason: str) -> None:
        """The engine lost ``peer``'s ICE-TCP connection (stalled, broken): the peer closes."""
        for connection in [c for c in self._tcp_connections.values() if c.peer is peer]:
            self._close_tcp(connection)
        self._close_peer(peer, reason)

    def _close_tcp(self, connection: TcpConnection) -> None:
        if self._tcp_connections.get(connection.address) is not connection:
            return
        del self._tcp_connections[connection.address]
        self._unproven.pop(connection.address, None)
        self._peers_by_address.pop(connection.address, None)
        self._loop.remove_reader(connection.socket.fileno())
        connection.socket.close()
