"""SCTP over DTLS for WebRTC data channels (RFC 9260 subset, RFC 8261, RFC 8841), sans-IO.

:class:`SctpAssociation` is one association: SCTP packets in
(:meth:`~SctpAssociation.receive`, the plaintext of DTLS application data),
SCTP packets out (:meth:`~SctpAssociation.drain_packets`, to be protected by
DTLS), events out (:meth:`~SctpAssociation.drain_events`), and a timer
(:meth:`~SctpAssociation.next_timeout`, :meth:`~SctpAssociation.handle_timeout`).
It opens no socket and reads no clock: ``now`` is always passed in.

Theory of operation
-------------------
Setup (section 5). The passive side (a WebRTC server: browsers send INIT)
answers INIT with INIT-ACK carrying a state cookie: every value the
association needs, authenticated with HMAC-SHA256 under a key of this
association, so nothing is kept until COOKIE-ECHO proves the peer got the
INIT-ACK. A valid COOKIE-ECHO establishes the association and is answered with
COOKIE-ACK. The active side (:meth:`~SctpAssociation.start`) sends INIT and
COOKIE-ECHO itself, retransmitted on the T1 timer. An INIT that arrives while
we wait for our own INIT-ACK (both sides opened at once, as WebRTC peers do)
is answered with our own tag, so whichever cookie arrives first wins.

Data (sections 6 and 7). Messages are split into DATA chunks of at most
``max_payload`` bytes (the B and E flags mark the first and last fragment),
numbered by TSN and, per stream, by SSN. Chunks go out while the congestion
window (slow start, congestion avoidance) and the peer's receive window allow.
Each SACK removes what it acknowledges cumulatively, marks what its gap blocks
acknowledge, and counts a miss for every older chunk still missing: three
misses retransmit the chunk at once (fast retransmit). The T3 timer
retransmits everything outstanding when no acknowledgement arrived for one
RTO (which then doubles; RTT is measured as in section 6.3.1). After
``MAX_RETRANSMISSIONS`` timeouts in a row the association is aborted.
Received DATA is acknowledged at once with a SACK (gap blocks and duplicate
TSNs included), reassembled, and delivered per stream in SSN order (unordered
messages as soon as they are whole). FORWARD-TSN (RFC 3758) from the peer is
honoured; we never send it, since everything we send is reliable.

Teardown (section 9). ABORT closes at once. SHUTDOWN, SHUTDOWN-ACK and
SHUTDOWN-COMPLETE close gracefully once all outstanding data is acknowledged.
HEARTBEAT is answered with HEARTBEAT-ACK.

Errors are the peer's fault or ours: a packet that cannot be parsed (short,
bad checksum, chunk lengths that do not add up) raises :class:`SctpPacketError`
before any state changes; a packet that parses but makes no sense (wrong
verification tag, a SACK for data never sent, a stale cookie) is dropped and
counted in ``dropped_packets``/``dropped_chunks``. Misuse by the caller
(sending before the association is up, on a stream that does not exist)
raises :class:`SctpUsageError`. Both are :class:`SctpError`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import struct
from collections import deque
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# Chunk types (RFC 9260 section 3.2, RFC 3758).
DATA = 0
INIT = 1
INIT_ACK = 2
SACK = 3
HEARTBEAT = 4
HEARTBEAT_ACK = 5
ABORT = 6
SHUTDOWN = 7
SHUTDOWN_ACK = 8
ERROR = 9
COOKIE_ECHO = 10
COOKIE_ACK = 11
SHUTDOWN_COMPLETE = 14
FORWARD_TSN = 192

# DATA chunk flags.
FLAG_END = 0x01
FLAG_BEGIN = 0x02
FLAG_UNORDERED = 0x04
FLAG_TCB_DESTROYED = 0x01  # the T bit of ABORT and SHUTDOWN-COMPLETE

# INIT parameters.
PARAM_STATE_COOKIE = 7
PARAM_SUPPORTED_EXTENSIONS = 0x8008
PARAM_FORWARD_TSN_SUPPORTED = 0xC000

# Protocol parameters (RFC 9260 section 16), with the RTO floor WebRTC stacks use.
RTO_INITIAL = 1.0
RTO_MIN = 0.2
RTO_MAX = 60.0
RTO_ALPHA = 1 / 8
RTO_BETA = 1 / 4
MAX_RETRANSMISSIONS = 10  # Association.Max.Retrans
MAX_INIT_RETRANSMISSIONS = 8
COOKIE_LIFETIME = 60.0
FAST_RETRANSMIT_MISSES = 3

STREAM_COUNT = 65535  # what we offer in both directions
RECEIVE_WINDOW = 1024 * 1024  # a_rwnd we advertise, and the bytes we keep for reassembly
MAX_PACKET_SIZE = 1152  # an SCTP packet plus DTLS overhead fits a 1200-byte datagram
COMMON_HEADER_LENGTH = 12
DATA_HEADER_LENGTH = 16

TSN_MODULUS = 2**32
SSN_MODULUS = 2**16

STATES = (
    "closed",  # nothing yet: a passive side waits for INIT here
    "cookie-wait",  # INIT sent
    "cookie-echoed",  # COOKIE-ECHO sent
    "established",
    "shutdown-pending",  # close() called; SHUTDOWN once everything is acknowledged
    "shutdown-sent",
    "shutdown-received",
    "shutdown-ack-sent",
    "terminated",  # the end: ABORT, SHUTDOWN-COMPLETE, too many retransmissions
)


class SctpError(Exception):
    """Anything the association refuses."""


class SctpPacketError(SctpError):
    """The peer's fault: bytes that are not an SCTP packet (nothing was changed)."""


class SctpUsageError(SctpError):
    """The caller's fault: e.g. sending before the association is established."""


# --- events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AssociationEstablished:
    outbound_streams: int
    inbound_streams: int


@dataclass(frozen=True, slots=True)
class MessageReceived:
    stream_id: int
    ppid: int
    data: bytes
    ordered: bool


@dataclass(frozen=True, slots=True)
class AssociationClosed:
    reason: str  # "aborted by peer", "shut down", "too many retransmissions", "closed", ...


SctpEvent = AssociationEstablished | MessageReceived | AssociationClosed


# --- serial numbers and checksum --------------------------------------------------


def tsn_after(a: int, b: int) -> bool:
    """a > b in 32-bit serial number arithmetic (RFC 1982)."""
    return 0 < (a - b) % TSN_MODULUS < 2**31


def ssn_after(a: int, b: int) -> bool:
    return 0 < (a - b) % SSN_MODULUS < 2**15


def _crc32c_tables() -> tuple[list[int], list[int]]:
    """The byte-at-a-time table of the reflected Castagnoli polynomial, and one that takes two
    bytes (a little-endian 16-bit word) at a time: half the Python-level steps."""
    by_byte = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        by_byte.append(crc)
    by_word = []
    for word in range(65536):
        crc = by_byte[word & 0xFF] ^ (word >> 8)
        by_word.append(by_byte[crc & 0xFF] ^ (crc >> 8))
    return by_byte, by_word


_CRC32C_BY_BYTE, _CRC32C_BY_WORD = _crc32c_tables()


def crc32c(data: bytes) -> int:
    """CRC32c (Castagnoli), as SCTP's checksum (RFC 9260 appendix A)."""
    crc = 0xFFFFFFFF
    by_word = _CRC32C_BY_WORD
    words = len(data) // 2
    for word in struct.unpack_from(f"<{words}H", data):
        crc = by_word[(crc ^ word) & 0xFFFF] ^ (crc >> 16)
    if len(data) % 2:
        crc = _CRC32C_BY_BYTE[(crc ^ data[-1]) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --- wire format --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chunk:
    type: int
    flags: int
    body: bytes

    def __bytes__(self) -> bytes:
        length = 4 + len(self.body)
        return struct.pack("!BBH", self.type, self.flags, length) + self.body + b"\x00" * (-length % 4)


@dataclass(frozen=True, slots=True)
class Packet:
    source_port: int
    destination_port: int
    verification_tag: int
    chunks: tuple[Chunk, ...]

    @classmethod
    def parse(cls, data: bytes) -> Packet:
        """Raises SctpPacketError for anything but a well-formed packet with a good checksum."""
        if len(data) < COMMON_HEADER_LENGTH + 4:
            raise SctpPacketError(f"packet of {len(data)} bytes is too short")
        source_port, destination_port, tag, checksum = struct.unpack_from("!HHII", data)
        expected = crc32c(data[:8] + b"\x00\x00\x00\x00" + data[12:])
        if int.from_bytes(data[8:12], "little") != expected:
            raise SctpPacketError(f"bad checksum {checksum:#010x}")
        chunks = []
        offset = COMMON_HEADER_LENGTH
        while offset < len(data):
            if offset + 4 > len(data):
                raise SctpPacketError("truncated chunk header")
            chunk_type, flags, length = struct.unpack_from("!BBH", data, offset)
            if length < 4 or offset + length > len(data):
                raise SctpPacketError(f"chunk of type {chunk_type} has bad length {length}")
            chunks.append(Chunk(chunk_type, flags, bytes(data[offset + 4 : offset + length])))
            offset += length + (-length % 4)
        return cls(source_port, destination_port, tag, tuple(chunks))

    def __bytes__(self) -> bytes:
        body = b"".join(bytes(chunk) for chunk in self.chunks)
        header = struct.pack("!HHI", self.source_port, self.destination_port, self.verification_tag)
        checksum = crc32c(header + b"\x00\x00\x00\x00" + body)
        return header + checksum.to_bytes(4, "little") + body


def parse_parameters(data: bytes) -> list[tuple[int, bytes]]:
    """TLV parameters (section 3.2.1); raises SctpPacketError on bad lengths."""
    parameters = []
    offset = 0
    while offset + 4 <= len(data):
        kind, length = struct.unpack_from("!HH", data, offset)
        if length < 4 or offset + length > len(data):
            raise SctpPacketError(f"parameter {kind:#06x} has bad length {length}")
        parameters.append((kind, bytes(data[offset + 4 : offset + length])))
        offset += length + (-length % 4)
    return parameters


def encode_parameter(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("!HH", kind, length) + value + b"\x00" * (-length % 4)


@dataclass(frozen=True, slots=True)
class InitChunk:
    """INIT or INIT-ACK (section 3.3.2, 3.3.3)."""

    initiate_tag: int
    a_rwnd: int
    outbound_streams: int
    inbound_streams: int
    initial_tsn: int
    parameters: tuple[tuple[int, bytes], ...]

    @classmethod
    def parse(cls, body: bytes) -> InitChunk:
        if len(body) < 16:
            raise SctpPacketError("INIT too short")
        tag, a_rwnd, outbound, inbound, tsn = struct.unpack_from("!IIHHI", body)
        return cls(tag, a_rwnd, outbound, inbound, tsn, tuple(parse_parameters(body[16:])))

    def body(self) -> bytes:
        fixed = struct.pack(
            "!IIHHI", self.initiate_tag, self.a_rwnd, self.outbound_streams, self.inbound_streams, self.initial_tsn
        )
        return fixed + b"".join(encode_parameter(kind, value) for kind, value in self.parameters)


@dataclass(frozen=True, slots=True)
class DataChunk:
    tsn: int
    stream_id: int
    ssn: int
    ppid: int
    flags: int
    payload: bytes

    @classmethod
    def parse(cls, flags: int, body: bytes) -> DataChunk:
        if len(body) < 12:
            raise SctpPacketError("DATA too short")
        tsn, stream_id, ssn, ppid = struct.unpack_from("!IHHI", body)
        return cls(tsn, stream_id, ssn, ppid, flags, bytes(body[12:]))

    def chunk(self) -> Chunk:
        return Chunk(DATA, self.flags, struct.pack("!IHHI", self.tsn, self.stream_id, self.ssn, self.ppid) + self.payload)


@dataclass(frozen=True, slots=True)
class SackChunk:
    cumulative_tsn: int
    a_rwnd: int
    gaps: tuple[tuple[int, int], ...]  # (start, end) offsets from cumulative_tsn
    duplicates: tuple[int, ...]

    @classmethod
    def parse(cls, body: bytes) -> SackChunk:
        if len(body) < 12:
            raise SctpPacketError("SACK too short")
        cumulative, a_rwnd, gap_count, duplicate_count = struct.unpack_from("!IIHH", body)
        if len(body) < 12 + 4 * gap_count + 4 * duplicate_count:
            raise SctpPacketError("SACK shorter than its blocks")
        gaps = tuple(struct.unpack_from("!HH", body, 12 + 4 * i) for i in range(gap_count))
        offset = 12 + 4 * gap_count
        duplicates = tuple(struct.unpack_from("!I", body, offset + 4 * i)[0] for i in range(duplicate_count))
        return cls(cumulative, a_rwnd, gaps, duplicates)

    def chunk(self) -> Chunk:
        body = struct.pack("!IIHH", self.cumulative_tsn, self.a_rwnd, len(self.gaps), len(self.duplicates))
        body += b"".join(struct.pack("!HH", start, end) for start, end in self.gaps)
        body += b"".join(struct.pack("!I", tsn) for tsn in self.duplicates)
        return Chunk(SACK, 0, body)


# --- the state cookie -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateCookie:
    """What the passive side needs to establish the association, sent to the peer and back."""

    created: float
    local_tag: int
    local_initial_tsn: int
    remote_tag: int
    remote_initial_tsn: int
    remote_a_rwnd: int
    outbound_streams: int
    inbound_streams: int

    FORMAT = "!dIIIIIHH"
    MAC_LENGTH = 32

    def seal(self, key: bytes) -> bytes:
        fields = struct.pack(
            self.FORMAT,
            self.created,
            self.local_tag,
            self.local_initial_tsn,
            self.remote_tag,
            self.remote_initial_tsn,
            self.remote_a_rwnd,
            self.outbound_streams,
            self.inbound_streams,
        )
        return fields + hmac.new(key, fields, hashlib.sha256).digest()

    @classmethod
    def open(cls, key: bytes, sealed: bytes) -> StateCookie | None:
        """The cookie if ``sealed`` is one we made (HMAC checks), else None."""
        size = struct.calcsize(cls.FORMAT)
        if len(sealed) != size + cls.MAC_LENGTH:
            return None
        fields, mac = sealed[:size], sealed[size:]
        if not hmac.compare_digest(mac, hmac.new(key, fields, hashlib.sha256).digest()):
            return None
        return cls(*struct.unpack(cls.FORMAT, fields))


# --- the association -------------------------------------------------------------------


@dataclass(slots=True)
class _SentChunk:
    data: DataChunk
    sent_at: float
    retransmitted: bool = False  # Karn's rule: no RTT sample from it
    gap_acked: bool = False
    misses: int = 0
    needs_retransmit: bool = False
    fast_retransmitted: bool = False

    @property
    def size(self) -> int:
        return len(self.data.payload)


@dataclass(slots=True)
class _InboundMessage:
    stream_id: int
    ssn: int
    ppid: int
    ordered: bool
    data: bytes


@dataclass
class SctpCounters:
    dropped_packets: int = 0  # parsed, but not for us (verification tag) or not now
    dropped_chunks: int = 0  # chunks that made no sense here
    retransmissions: int = 0
    fast_retransmissions: int = 0
    timeouts: int = 0
    duplicate_tsns: int = 0


class SctpAssociation:
    """One SCTP association over DTLS: the passive side by default, active after :meth:`start`."""

    def __init__(
        self,
        *,
        local_port: int = 5000,
        remote_port: int = 5000,
        max_packet_size: int = MAX_PACKET_SIZE,
    ) -> None:
        self.local_port = local_port
        self.remote_port = remote_port
        self.max_packet_size = max_packet_size
        self.max_payload = max_packet_size - COMMON_HEADER_LENGTH - DATA_HEADER_LENGTH
        self.state = "closed"
        self.counters = SctpCounters()
        self.outbound_streams = 0
        self.inbound_streams = 0
        self._cookie_key = secrets.token_bytes(32)
        self._local_tag = 0
        self._remote_tag = 0
        self._next_tsn = 0
        self._local_initial_tsn = 0
        # Sending.
        self._send_queue: deque[DataChunk] = deque()
        self._buffered = 0  # payload bytes queued or in flight
        self._sent: dict[int, _SentChunk] = {}  # by TSN, in TSN order
        self._outbound_ssn: dict[int, int] = {}
        self._last_cumulative_ack = 0  # the peer's cumulative TSN ack (TSN before our first when none)
        self._peer_rwnd = 0
        self._cwnd = 0
        self._ssthresh = 0
        self._partial_bytes_acked = 0
        self._fast_recovery_exit: int | None = None
        self._srtt: float | None = None
        self._rttvar = 0.0
        self.rto = RTO_INITIAL
        self._error_count = 0
        # Receiving.
        self._cumulative_tsn = 0  # the last TSN received in sequence
        self._received_above: set[int] = set()  # TSNs received past a gap
        self._duplicates: list[int] = []
        self._fragments: dict[int, DataChunk] = {}  # by TSN: chunks not yet whole messages
        self._ordered_waiting: dict[int, dict[int, _InboundMessage]] = {}  # stream -> ssn -> message
        self._inbound_next_ssn: dict[int, int] = {}
        self._buffered_inbound = 0
        self._sack_needed = False
        # Setup and teardown.
        self._init_packet: bytes | None = None  # INIT or COOKIE-ECHO, retransmitted on T1
        self._init_retransmissions = 0
        self._pending_cookie: bytes | None = None
        # Timers (absolute deadlines on the caller's clock).
        self._t1: float | None = None
        self._t2: float | None = None
        self._t3: float | None = None
        # Outputs.
        self._control: list[Chunk] = []  # control chunks for the next packet (SACK, COOKIE-ACK, ...)
        self._packets: list[bytes] = []
        self._events: list[SctpEvent] = []

    # --- read-only state -------------------------------------------------------------

    @property
    def established(self) -> bool:
        return self.state == "established"

    @property
    def buffered_amount(self) -> int:
        """Payload bytes handed to :meth:`send` and not yet acknowledged by the peer."""
        return self._buffered

    @property
    def flight_size(self) -> int:
        return sum(s.size for s in self._sent.values() if not s.gap_acked and not s.needs_retransmit)

    # --- inputs ---------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Open actively: send INIT (a passive association just waits for the peer's)."""
        if self.state != "closed":
            return
        self._local_tag = _random_tag()
        self._local_initial_tsn = secrets.randbits(32)
        init = InitChunk(
            self._local_tag,
            RECEIVE_WINDOW,
            STREAM_COUNT,
            STREAM_COUNT,
            self._local_initial_tsn,
            _supported_extension_parameters(),
        )
        self._init_packet = self._packet([Chunk(INIT, 0, init.body())], tag=0)
        self._init_retransmissions = 0
        self.state = "cookie-wait"
        self._packets.append(self._init_packet)
        self._t1 = now + self.rto

    def receive(self, data: bytes, now: float) -> None:
        """An SCTP packet from the peer. Raises SctpPacketError (and changes nothing) if malformed."""
        packet = Packet.parse(data)
        if self.state == "terminated":
            self.counters.dropped_packets += 1
            return
        if not self._tag_acceptable(packet):
            self.counters.dropped_packets += 1
            return
        for chunk in packet.chunks:
            if self.state == "terminated":
                break
            try:
                if not self._handle_chunk(packet, chunk, now):
                    break
            except SctpPacketError:
                self.counters.dropped_chunks += 1
        if self._sack_needed and self.state != "terminated":
            self._sack_needed = False
            self._queue_control(self._sack_chunk())
        self._transmit(now)

    def send(self, stream_id: int, ppid: int, payload: bytes, now: float, *, ordered: bool = True) -> None:
        """Queue one message; it goes out as the windows allow. Raises SctpUsageError."""
        if self.state != "established":
            raise SctpUsageError(f"cannot send in state {self.state}")
        if not 0 <= stream_id < self.outbound_streams:
            raise SctpUsageError(f"stream {stream_id} is not one of the {self.outbound_streams} outbound streams")
        if not payload:
            raise SctpUsageError("SCTP cannot send an empty message")
        if ordered:
            ssn = self._outbound_ssn.get(stream_id, 0)
            self._outbound_ssn[stream_id] = (ssn + 1) % SSN_MODULUS
        else:
            ssn = 0
        pieces = [payload[i : i + self.max_payload] for i in range(0, len(payload), self.max_payload)]
        self._buffered += len(payload)
        for index, piece in enumerate(pieces):
            flags = (0 if ordered else FLAG_UNORDERED) | (FLAG_BEGIN if index == 0 else 0)
            flags |= FLAG_END if index == len(pieces) - 1 else 0
            self._send_queue.append(DataChunk(self._next_tsn, stream_id, ssn, ppid, flags, piece))
            self._next_tsn = (self._next_tsn + 1) % TSN_MODULUS
        self._transmit(now)

    def handle_timeout(self, now: float) -> None:
        if self._t1 is not None and now >= self._t1:
            self._t1 = None
            self._on_t1(now)
        if self._t2 is not None and now >= self._t2:
            self._t2 = None
            self._on_t2(now)
        if self._t3 is not None and now >= self._t3:
            self._t3 = None
            self._on_t3(now)

    def next_timeout(self) -> float | None:
        deadlines = [t for t in (self._t1, self._t2, self._t3) if t is not None]
        return min(deadlines) if deadlines else None

    def close(self, now: float) -> None:
        """Shut down gracefully once everything sent is acknowledged (SHUTDOWN); before
        establishment, just stop."""
        if self.state == "established":
            self.state = "shutdown-pending"
            self._maybe_shutdown(now)
            self._transmit(now)
        elif self.state in ("closed", "cookie-wait", "cookie-echoed"):
            self._terminate("closed", notify=False)

    def abort(self, reason: str = "closed") -> None:
        """Close at once: an ABORT goes to the peer if it knows us; no event."""
        if self.state == "terminated":
            return
        if self._remote_tag:
            self._packets.append(self._packet([Chunk(ABORT, 0, b"")]))
        self._terminate(reason, notify=False)

    # --- outputs ---------------------------------------------------------------------------

    def drain_packets(self) -> list[bytes]:
        packets, self._packets = self._packets, []
        return packets

    def drain_events(self) -> list[SctpEvent]:
        events, self._events = self._events, []
        return events

    # --- receiving ---------------------------------------------------------------------------

    def _tag_acceptable(self, packet: Packet) -> bool:
        """Section 8.5: the verification tag rules."""
        types = [chunk.type for chunk in packet.chunks]
        tag = packet.verification_tag
        if INIT in types:
            return tag == 0 and len(types) == 1
        if types and types[0] in (ABORT, SHUTDOWN_COMPLETE) and packet.chunks[0].flags & FLAG_TCB_DESTROYED:
            return self._remote_tag != 0 and tag == self._remote_tag
        if types and types[0] == COOKIE_ECHO:
            return True  # checked against the tag sealed in the cookie
        return self._local_tag != 0 and tag == self._local_tag

    def _handle_chunk(self, packet: Packet, chunk: Chunk, now: float) -> bool:
        """Handle one chunk; False stops processing the rest of the packet."""
        kind = chunk.type
        if kind == DATA:
            self._on_data(DataChunk.parse(chunk.flags, chunk.body))
        elif kind == SACK:
            self._on_sack(SackChunk.parse(chunk.body), now)
        elif kind == INIT:
            self._on_init(packet, InitChunk.parse(chunk.body), now)
        elif kind == INIT_ACK:
            self._on_init_ack(InitChunk.parse(chunk.body), now)
        elif kind == COOKIE_ECHO:
            return self._on_cookie_echo(packet, chunk.body, now)
        elif kind == COOKIE_ACK:
            if self.state == "cookie-echoed":
                self._t1 = None
                self._init_packet = None
                self._establish()
        elif kind == HEARTBEAT:
            if self._remote_tag:
                self._queue_control(Chunk(HEARTBEAT_ACK, 0, chunk.body))
        elif kind == HEARTBEAT_ACK:
            pass  # we send no heartbeats (ICE consent checks the path)
        elif kind == ABORT:
            logger.info("SCTP association aborted by the peer")
            self._terminate("aborted by peer")
            return False
        elif kind == SHUTDOWN:
            self._on_shutdown(chunk.body, now)
        elif kind == SHUTDOWN_ACK:
            if self.state in ("shutdown-sent", "shutdown-ack-sent"):
                self._packets.append(self._packet([Chunk(SHUTDOWN_COMPLETE, 0, b"")]))
                self._terminate("shut down")
                return False
        elif kind == SHUTDOWN_COMPLETE:
            if self.state == "shutdown-ack-sent":
                self._terminate("shut down")
                return False
        elif kind == FORWARD_TSN:
            self._on_forward_tsn(chunk.body)
        elif kind == ERROR:
            logger.debug("SCTP ERROR chunk from the peer: %s", chunk.body.hex())
        else:
            # Section 3.2: the two upper bits say whether to skip the chunk or the rest.
            self.counters.dropped_chunks += 1
            return bool(kind & 0x80)
        return True

    def _on_init(self, packet: Packet, init: InitChunk, now: float) -> None:
        if init.initiate_tag == 0 or init.outbound_streams == 0 or init.inbound_streams == 0:
            self.counters.dropped_chunks += 1
            return
        if self.state in ("cookie-wait", "cookie-echoed", "established"):
            local_tag, local_tsn = self._local_tag, self._local_initial_tsn  # 5.2.1/5.2.2, simplified
        else:
            if self.state != "closed":
                self.counters.dropped_chunks += 1
                return
            local_tag, local_tsn = _random_tag(), secrets.randbits(32)
        self.remote_port = packet.source_port
        self.local_port = packet.destination_port
        cookie = StateCookie(
            created=now,
            local_tag=local_tag,
            local_initial_tsn=local_tsn,
            remote_tag=init.initiate_tag,
            remote_initial_tsn=init.initial_tsn,
            remote_a_rwnd=init.a_rwnd,
            outbound_streams=min(STREAM_COUNT, init.inbound_streams),
            inbound_streams=min(STREAM_COUNT, init.outbound_streams),
        )
        parameters = ((PARAM_STATE_COOKIE, cookie.seal(self._cookie_key)), *_supported_extension_parameters())
        ack = InitChunk(local_tag, RECEIVE_WINDOW, STREAM_COUNT, STREAM_COUNT, local_tsn, parameters)
        # Stateless until COOKIE-ECHO: the INIT-ACK goes to the tag the INIT named.
        self._packets.append(self._packet([Chunk(INIT_ACK, 0, ack.body())], tag=init.initiate_tag))

    def _on_init_ack(self, ack: InitChunk, now: float) -> None:
        if self.state != "cookie-wait" or ack.initiate_tag == 0:
            self.counters.dropped_chunks += 1
            return
        cookie = next((value for kind, value in ack.parameters if kind == PARAM_STATE_COOKIE), None)
        if cookie is None:
            self.counters.dropped_chunks += 1
            return
        self._remote_tag = ack.initiate_tag
        self._take_peer_parameters(
            ack.initial_tsn, ack.a_rwnd, min(STREAM_COUNT, ack.inbound_streams), min(STREAM_COUNT, ack.outbound_streams)
        )
        self._init_packet = self._packet([Chunk(COOKIE_ECHO, 0, cookie)])
        self._init_retransmissions = 0
        self.state = "cookie-echoed"
        self._packets.append(self._init_packet)
        self._t1 = now + self.rto

    def _on_cookie_echo(self, packet: Packet, sealed: bytes, now: float) -> bool:
        cookie = StateCookie.open(self._cookie_key, sealed)
        if cookie is None or packet.verification_tag != cookie.local_tag:
            self.counters.dropped_chunks += 1
            return False
        if not 0 <= now - cookie.created <= COOKIE_LIFETIME:
            logger.info("SCTP: stale cookie (%.1f s old)", now - cookie.created)
            self.counters.dropped_chunks += 1
            return False
        if self.state in ("closed", "cookie-wait", "cookie-echoed"):
            if self.state != "closed" and cookie.local_tag != self._local_tag:
                self.counters.dropped_chunks += 1
                return False
            self._local_tag = cookie.local_tag
            self._local_initial_tsn = cookie.local_initial_tsn
            self._remote_tag = cookie.remote_tag
            self._take_peer_parameters(
                cookie.remote_initial_tsn, cookie.remote_a_rwnd, cookie.outbound_streams, cookie.inbound_streams
            )
            self._t1 = None
            self._init_packet = None
            self._queue_control(Chunk(COOKIE_ACK, 0, b""))
            self._establish()
            return True
        if cookie.local_tag == self._local_tag and cookie.remote_tag == self._remote_tag:
            self._queue_control(Chunk(COOKIE_ACK, 0, b""))  # our COOKIE-ACK was lost (5.2.4 case D)
            return True
        self.counters.dropped_chunks += 1  # a restart: not supported, the peer will give up
        return False

    def _take_peer_parameters(self, remote_initial_tsn: int, a_rwnd: int, outbound: int, inbound: int) -> None:
        if self._next_tsn == 0 and not self._sent and not self._send_queue:
            self._next_tsn = self._local_initial_tsn
        self._last_cumulative_ack = (self._local_initial_tsn - 1) % TSN_MODULUS
        self._cumulative_tsn = (remote_initial_tsn - 1) % TSN_MODULUS
        self._peer_rwnd = a_rwnd
        self.outbound_streams = outbound
        self.inbound_streams = inbound
        mtu = self.max_packet_size
        self._cwnd = min(4 * mtu, max(2 * mtu, 4380))
        self._ssthresh = a_rwnd

    def _establish(self) -> None:
        self.state = "established"
        self._events.append(AssociationEstablished(self.outbound_streams, self.inbound_streams))

    def _on_data(self, chunk: DataChunk) -> None:
        if self.state not in ("established", "shutdown-pending", "shutdown-sent"):
            self.counters.dropped_chunks += 1
            return
        self._sack_needed = True
        tsn = chunk.tsn
        if not tsn_after(tsn, self._cumulative_tsn) or tsn in self._received_above:
            self._duplicates.append(tsn)
            self.counters.duplicate_tsns += 1
            return
        if (tsn - self._cumulative_tsn) % TSN_MODULUS > 2 * RECEIVE_WINDOW // 16 or (
            self._buffered_inbound + len(chunk.payload) > RECEIVE_WINDOW
        ):
            self.counters.dropped_chunks += 1  # beyond what we advertised: not acknowledged, it comes again
            return
        self._received_above.add(tsn)
        while (self._cumulative_tsn + 1) % TSN_MODULUS in self._received_above:
            self._cumulative_tsn = (self._cumulative_tsn + 1) % TSN_MODULUS
            self._received_above.discard(self._cumulative_tsn)
        if not chunk.payload or chunk.stream_id >= self.inbound_streams:
            self.counters.dropped_chunks += 1  # acknowledged (so never sent again), but not delivered
            return
        self._fragments[tsn] = chunk
        self._buffered_inbound += len(chunk.payload)
        self._reassemble(chunk)

    def _reassemble(self, arrived: DataChunk) -> None:
        """Find the whole message ``arrived`` belongs to, if all its fragments are here."""
        first = arrived.tsn
        while not self._fragments[first].flags & FLAG_BEGIN:
            previous = (first - 1) % TSN_MODULUS
            if previous not in self._fragments:
                return
            first = previous
        pieces = []
        tsn = first
        while True:
            piece = self._fragments.get(tsn)
            if piece is None or piece.stream_id != arrived.stream_id:
                return
            pieces.append(piece)
            if piece.flags & FLAG_END:
                break
            tsn = (tsn + 1) % TSN_MODULUS
            if len(pieces) > RECEIVE_WINDOW:
                return
        head = pieces[0]
        for piece in pieces:
            del self._fragments[piece.tsn]
        message = _InboundMessage(
            head.stream_id,
            head.ssn,
            head.ppid,
            not head.flags & FLAG_UNORDERED,
            b"".join(piece.payload for piece in pieces),
        )
        if not message.ordered:
            self._deliver(message)
            return
        expected = self._inbound_next_ssn.get(message.stream_id, 0)
        if message.ssn != expected and not ssn_after(message.ssn, expected):
            self._buffered_inbound -= len(message.data)  # an SSN already delivered: drop
            self.counters.dropped_chunks += 1
            return
        self._ordered_waiting.setdefault(message.stream_id, {})[message.ssn] = message
        self._deliver_ordered(message.stream_id)

    def _deliver_ordered(self, stream_id: int) -> None:
        waiting = self._ordered_waiting.get(stream_id, {})
        expected = self._inbound_next_ssn.get(stream_id, 0)
        while expected in waiting:
            self._deliver(waiting.pop(expected))
            expected = (expected + 1) % SSN_MODULUS
        self._inbound_next_ssn[stream_id] = expected
        if not waiting:
            self._ordered_waiting.pop(stream_id, None)

    def _deliver(self, message: _InboundMessage) -> None:
        self._buffered_inbound -= len(message.data)
        self._events.append(MessageReceived(message.stream_id, message.ppid, message.data, message.ordered))

    def _on_forward_tsn(self, body: bytes) -> None:
        if len(body) < 4 or self.state not in ("established", "shutdown-pending", "shutdown-sent"):
            self.counters.dropped_chunks += 1
            return
        self._sack_needed = True
        new_cumulative = int.from_bytes(body[:4], "big")
        if not tsn_after(new_cumulative, self._cumulative_tsn):
            return
        if (new_cumulative - self._cumulative_tsn) % TSN_MODULUS > 2 * RECEIVE_WINDOW // 16:
            self.counters.dropped_chunks += 1
            return
        for tsn in [t for t in self._fragments if not tsn_after(t, new_cumulative)]:
            self._buffered_inbound -= len(self._fragments.pop(tsn).payload)
        self._received_above = {t for t in self._received_above if tsn_after(t, new_cumulative)}
        self._cumulative_tsn = new_cumulative
        while (self._cumulative_tsn + 1) % TSN_MODULUS in self._received_above:
            self._cumulative_tsn = (self._cumulative_tsn + 1) % TSN_MODULUS
            self._received_above.discard(self._cumulative_tsn)
        for offset in range(4, len(body) - 3, 4):
            stream_id, ssn = struct.unpack_from("!HH", body, offset)
            expected = self._inbound_next_ssn.get(stream_id, 0)
            if ssn == expected or ssn_after(ssn, expected):
                waiting = self._ordered_waiting.get(stream_id, {})
                for skipped in [s for s in waiting if not ssn_after(s, ssn)]:
                    self._buffered_inbound -= len(waiting.pop(skipped).data)
                self._inbound_next_ssn[stream_id] = (ssn + 1) % SSN_MODULUS
                self._deliver_ordered(stream_id)

    def _sack_chunk(self) -> Chunk:
        gaps: list[tuple[int, int]] = []
        for tsn in sorted(self._received_above, key=lambda t: (t - self._cumulative_tsn) % TSN_MODULUS):
            offset = (tsn - self._cumulative_tsn) % TSN_MODULUS
            if offset > 0xFFFF:
                break
            if gaps and gaps[-1][1] + 1 == offset:
                gaps[-1] = (gaps[-1][0], offset)
            else:
                gaps.append((offset, offset))
        duplicates, self._duplicates = tuple(self._duplicates[:64]), []
        a_rwnd = max(0, RECEIVE_WINDOW - self._buffered_inbound)
        return SackChunk(self._cumulative_tsn, a_rwnd, tuple(gaps[:128]), duplicates).chunk()

    def _on_sack(self, sack: SackChunk, now: float) -> None:
        if self.state not in ("established", "shutdown-pending", "shutdown-sent", "shutdown-received"):
            self.counters.dropped_chunks += 1
            return
        cumulative = sack.cumulative_tsn
        highest_sent = (self._next_tsn - 1) % TSN_MODULUS
        if tsn_after(self._last_cumulative_ack, cumulative):
            return  # an old SACK, overtaken
        if tsn_after(cumulative, highest_sent):
            self.counters.dropped_chunks += 1  # acknowledges data never sent
            return
        advanced = tsn_after(cumulative, self._last_cumulative_ack)
        newly_acked = 0
        rtt_sample: float | None = None
        for tsn in list(self._sent):
            if tsn_after(tsn, cumulative):
                break
            sent = self._sent.pop(tsn)
            self._buffered -= sent.size
            if not sent.gap_acked:
                newly_acked += sent.size
            if not sent.retransmitted:
                rtt_sample = now - sent.sent_at
        self._last_cumulative_ack = cumulative
        highest_gap_acked: int | None = None
        for start, end in sack.gaps:
            if start == 0 or end < start:
                continue
            for offset in range(start, end + 1):
                tsn = (cumulative + offset) % TSN_MODULUS
                gap_acked = self._sent.get(tsn)
                if gap_acked is None:
                    continue
                if not gap_acked.gap_acked:
                    gap_acked.gap_acked = True
                    gap_acked.needs_retransmit = False
                    newly_acked += gap_acked.size
                    if not gap_acked.retransmitted:
                        rtt_sample = now - gap_acked.sent_at
                highest_gap_acked = tsn
        if rtt_sample is not None:
            self._update_rto(rtt_sample)
        if self._fast_recovery_exit is not None and not tsn_after(self._fast_recovery_exit, cumulative):
            self._fast_recovery_exit = None
        self._grow_cwnd(newly_acked, advanced)
        if highest_gap_acked is not None:
            self._count_misses(highest_gap_acked)
        if newly_acked or advanced:
            self._error_count = 0
        self._peer_rwnd = max(0, sack.a_rwnd - self.flight_size)
        if not self._sent:
            self._t3 = None
        elif advanced:
            self._t3 = now + self.rto
        self._maybe_shutdown(now)

    def _count_misses(self, highest_gap_acked: int) -> None:
        entered_recovery = False
        for tsn, sent in self._sent.items():
            if not tsn_after(highest_gap_acked, tsn):
                break
            if sent.gap_acked or sent.fast_retransmitted:
                continue
            sent.misses += 1
            if sent.misses >= FAST_RETRANSMIT_MISSES:
                sent.needs_retransmit = True
                sent.fast_retransmitted = True
                self.counters.fast_retransmissions += 1
                entered_recovery = True
        if entered_recovery and self._fast_recovery_exit is None:
            mtu = self.max_packet_size
            self._ssthresh = max(self._cwnd // 2, 4 * mtu)
            self._cwnd = self._ssthresh
            self._partial_bytes_acked = 0
            self._fast_recovery_exit = (self._next_tsn - 1) % TSN_MODULUS

    def _grow_cwnd(self, newly_acked: int, advanced: bool) -> None:
        if not newly_acked or self._fast_recovery_exit is not None:
            return
        mtu = self.max_packet_size
        if self._cwnd <= self._ssthresh:
            self._cwnd += min(newly_acked, mtu)
        elif advanced:
            self._partial_bytes_acked += newly_acked
            if self._partial_bytes_acked >= self._cwnd:
                self._partial_bytes_acked -= self._cwnd
                self._cwnd += mtu

    def _update_rto(self, rtt: float) -> None:
        rtt = max(rtt, 0.0)
        if self._srtt is None:
            self._srtt = rtt
            self._rttvar = rtt / 2
        else:
            self._rttvar = (1 - RTO_BETA) * self._rttvar + RTO_BETA * abs(self._srtt - rtt)
            self._srtt = (1 - RTO_ALPHA) * self._srtt + RTO_ALPHA * rtt
        self.rto = min(max(self._srtt + 4 * self._rttvar, RTO_MIN), RTO_MAX)

    def _on_shutdown(self, body: bytes, now: float) -> None:
        if len(body) < 4 or self.state not in ("established", "shutdown-pending", "shutdown-received", "shutdown-sent"):
            self.counters.dropped_chunks += 1
            return
        self._on_sack(SackChunk(int.from_bytes(body[:4], "big"), self._peer_rwnd + self.flight_size, (), ()), now)
        if self.state in ("established", "shutdown-pending"):
            self.state = "shutdown-received"
        self._maybe_shutdown(now)

    def _maybe_shutdown(self, now: float) -> None:
        if self._sent or self._send_queue:
            return
        if self.state == "shutdown-pending":
            self.state = "shutdown-sent"
            self._send_shutdown(now)
        elif self.state == "shutdown-received":
            self.state = "shutdown-ack-sent"
            self._packets.append(self._packet([Chunk(SHUTDOWN_ACK, 0, b"")]))
            self._t2 = now + self.rto
            self._init_retransmissions = 0

    def _send_shutdown(self, now: float) -> None:
        self._packets.append(self._packet([Chunk(SHUTDOWN, 0, self._cumulative_tsn.to_bytes(4, "big"))]))
        self._t2 = now + self.rto

    # --- timers -----------------------------------------------------------------------------

    def _on_t1(self, now: float) -> None:
        if self.state not in ("cookie-wait", "cookie-echoed") or self._init_packet is None:
            return
        self._init_retransmissions += 1
        if self._init_retransmissions > MAX_INIT_RETRANSMISSIONS:
            self._terminate("no answer to INIT")
            return
        self.rto = min(self.rto * 2, RTO_MAX)
        self._packets.append(self._init_packet)
        self._t1 = now + self.rto

    def _on_t2(self, now: float) -> None:
        if self.state not in ("shutdown-sent", "shutdown-ack-sent"):
            return
        self._init_retransmissions += 1
        if self._init_retransmissions > MAX_RETRANSMISSIONS:
            self._terminate("no answer to SHUTDOWN")
            return
        self.rto = min(self.rto * 2, RTO_MAX)
        if self.state == "shutdown-sent":
            self._send_shutdown(now)
        else:
            self._packets.append(self._packet([Chunk(SHUTDOWN_ACK, 0, b"")]))
            self._t2 = now + self.rto

    def _on_t3(self, now: float) -> None:
        if not self._sent:
            return
        self.counters.timeouts += 1
        self._error_count += 1
        if self._error_count > MAX_RETRANSMISSIONS:
            logger.info("SCTP: no acknowledgement after %d retransmissions; aborting", MAX_RETRANSMISSIONS)
            self._packets.append(self._packet([Chunk(ABORT, 0, b"")]))
            self._terminate("too many retransmissions")
            return
        mtu = self.max_packet_size
        self._ssthresh = max(self._cwnd // 2, 4 * mtu)
        self._cwnd = mtu
        self._partial_bytes_acked = 0
        self._fast_recovery_exit = None
        self.rto = min(self.rto * 2, RTO_MAX)
        for sent in self._sent.values():
            if not sent.gap_acked:
                sent.needs_retransmit = True
        self._transmit(now, after_timeout=True)
        if self._sent and self._t3 is None:
            self._t3 = now + self.rto

    # --- sending ------------------------------------------------------------------------------

    def _queue_control(self, chunk: Chunk) -> None:
        self._control.append(chunk)

    def _transmit(self, now: float, *, after_timeout: bool = False) -> None:
        """Send queued control chunks, retransmissions, then new data as the windows allow."""
        bundle, self._control = self._control, []
        size = COMMON_HEADER_LENGTH + sum(len(bytes(chunk)) for chunk in bundle)
        packets: list[list[Chunk]] = []

        def add(chunk: Chunk) -> None:
            nonlocal bundle, size
            length = len(bytes(chunk))
            if bundle and size + length > self.max_packet_size:
                packets.append(bundle)
                bundle, size = [], COMMON_HEADER_LENGTH
            bundle.append(chunk)
            size += length

        sending = self.state in ("established", "shutdown-pending", "shutdown-received")
        if sending:
            flight = self.flight_size
            for sent in self._sent.values():
                if not sent.needs_retransmit:
                    continue
                if flight + sent.size > self._cwnd and flight > 0:
                    break
                sent.needs_retransmit = False
                sent.retransmitted = True
                sent.sent_at = now
                flight += sent.size
                self.counters.retransmissions += 1
                add(sent.data.chunk())
                if after_timeout and len(packets) >= 1:
                    break
            while self._send_queue:
                chunk = self._send_queue[0]
                size_needed = len(chunk.payload)
                if flight > 0 and (flight + size_needed > self._cwnd or size_needed > self._peer_rwnd):
                    break
                self._send_queue.popleft()
                self._sent[chunk.tsn] = _SentChunk(chunk, now)
                self._peer_rwnd = max(0, self._peer_rwnd - size_needed)
                flight += size_needed
                add(chunk.chunk())
            if self._sent and self._t3 is None:
                self._t3 = now + self.rto
        if bundle:
            packets.append(bundle)
        for chunks in packets:
            self._packets.append(self._packet(chunks))

    def _packet(self, chunks: list[Chunk], *, tag: int | None = None) -> bytes:
        return bytes(
            Packet(self.local_port, self.remote_port, self._remote_tag if tag is None else tag, tuple(chunks))
        )

    def _terminate(self, reason: str, *, notify: bool = True) -> None:
        self.state = "terminated"
        self._t1 = self._t2 = self._t3 = None
        self._send_queue.clear()
        self._sent.clear()
        self._buffered = 0
        self._fragments.clear()
        self._ordered_waiting.clear()
        self._buffered_inbound = 0
        self._control = []
        if notify:
            self._events.append(AssociationClosed(reason))


def _random_tag() -> int:
    return secrets.randbelow(2**32 - 1) + 1


def _supported_extension_parameters() -> tuple[tuple[int, bytes], ...]:
    """We take FORWARD-TSN (RFC 3758) from the peer; WebRTC peers expect to be allowed it."""
    return ((PARAM_FORWARD_TSN_SUPPORTED, b""), (PARAM_SUPPORTED_EXTENSIONS, bytes([FORWARD_TSN])))
