"""One viewer's WebRTC transport, sans-IO: the ICE-lite agent and DTLS-SRTP composed.

Datagrams are told apart by their first byte (RFC 7983): 0..3 STUN, 20..63
DTLS, 128..191 RTP/RTCP. STUN binding requests are answered at once (even
before the remote description is known); DTLS and SRTCP are taken only from
addresses that passed an authenticated check. DTLS starts when the remote
description is set: we are the server when the peer's setup is "active"
(browsers) or "actpass", the client when it is "passive" (a client starts once
ICE is connected). DTLS that arrives before the remote description is kept and
replayed. Chromium starts DTLS on a checked pair before it sends USE-CANDIDATE:
a handshake that completes first makes its address the nominated one, so
IceConnected always comes before DtlsConnected.

Data channels (RFC 8831): once DTLS is up, and the remote description has an
accepted m=application section (or the peer sends SCTP anyway), an SCTP
association (:mod:`fanout.webrtc.sctp`) runs over DTLS application data, with
DCEP (:mod:`fanout.webrtc.datachannel`) on top. The peer (browsers, aiortc)
sends INIT when we are the DTLS server; as the DTLS client we send it.
:meth:`WebRtcPeer.send_data` sends one message on the channel with the given
label, opening it first if neither side has; a message that would push the
association's unacknowledged bytes past ``DATA_SEND_BUFFER_LIMIT`` is dropped
and counted, so a slow viewer costs bounded memory and never holds others up.

After every input the owner sends :meth:`WebRtcPeer.drain_transmits`, handles
:meth:`WebRtcPeer.drain_events` and arms a timer for
:meth:`WebRtcPeer.next_timeout`. ``now`` is the owner's monotonic clock (the
endpoint uses the event loop's ``time()``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fanout.webrtc.datachannel import DEFAULT_LABEL, ChannelMessage, ChannelOpened, DataChannels
from fanout.webrtc.dtls import (
    DtlsCertificate,
    DtlsClosedEvent,
    DtlsConnectedEvent,
    DtlsDataEvent,
    DtlsTransport,
)
from fanout.webrtc.sctp import AssociationClosed, AssociationEstablished, SctpAssociation, SctpError
from fanout.webrtc.ice import CONSENT_TIMEOUT, Address, IceFailed, IceLiteAgent, Nominated
from fanout.webrtc.sdp import Candidate, SessionDescription
from fanout.webrtc.stun import StunError, StunMessage

logger = logging.getLogger(__name__)

DTLS_HANDSHAKE_TIMEOUT = 30.0
EARLY_DTLS_LIMIT = 16
DATA_SEND_BUFFER_LIMIT = 1024 * 1024  # unacknowledged data channel bytes per peer before messages are dropped


@dataclass(frozen=True)
class IceConnected:
    address: tuple[str, int]


@dataclass(frozen=True)
class AddressChanged:
    """The peer nominated another address; media goes there from now on."""

    address: tuple[str, int]


@dataclass(frozen=True)
class DtlsConnected:
    srtp_profile: str  # "AEAD_AES_128_GCM" | "AES_CM_128_HMAC_SHA1_80"
    local_master_key: bytes  # key || salt we protect with
    remote_master_key: bytes  # key || salt the peer protects with
    address: tuple[str, int]


@dataclass(frozen=True)
class RtcpReceived:
    packet: bytes  # SRTCP exactly as received


@dataclass(frozen=True)
class PeerClosed:
    reason: str  # "ICE failed", "consent expired", "DTLS closed", "DTLS alert", "DTLS handshake failed", ...


@dataclass(frozen=True)
class DataChannelsReady:
    """The SCTP association is up: :meth:`WebRtcPeer.send_data` can send."""


@dataclass(frozen=True)
class DataChannelOpened:
    label: str
    stream_id: int
    opened_by_peer: bool


@dataclass(frozen=True)
class DataChannelMessage:
    label: str
    data: str | bytes


PeerEvent = (
    IceConnected
    | AddressChanged
    | DtlsConnected
    | RtcpReceived
    | PeerClosed
    | DataChannelsReady
    | DataChannelOpened
    | DataChannelMessage
)


def is_rtcp(data: bytes) -> bool:
    """RTP/RTCP by the first byte (RFC 7983) and an RTCP packet type (RFC 5761)."""
    return len(data) >= 2 and 128 <= data[0] <= 191 and 192 <= data[1] <= 223


class WebRtcPeer:
    """One viewer's ICE-lite + DTLS-SRTP transport."""

    def __init__(self, certificate: DtlsCertificate, now: float, *, consent_timeout: float = CONSENT_TIMEOUT) -> None:
        """``consent_timeout``: seconds without a valid consent check from the peer's address
        before it is closed ("consent expired"; fanout.ice_consent_timeout)."""
        self.certificate = certificate
        self.created = now
        self.ice_restarting = False  # new local credentials went out; the peer's answer has not come
        self._ice = IceLiteAgent(now, consent_timeout=consent_timeout)
        self.local_ufrag = self._ice.local_ufrag
        self.local_pwd = self._ice.local_pwd
        self.remote_description: SessionDescription | None = None
        self.remote_candidates: list[Candidate] = []
        self.remote_end_of_candidates = False
        self.dtls_state = "new"
        self.srtp_profile: str | None = None
        self.ignored_rtp = 0
        self.dropped_datagrams = 0
        self.data_messages_sent = 0
        self.data_messages_dropped = 0  # no association yet, or the send buffer was full
        self.sctp_malformed = 0
        self.sctp: SctpAssociation | None = None
        self.data_channels: DataChannels | None = None
        self._dtls: DtlsTransport | None = None
        self._dtls_address: Address | None = None
        self._dtls_deadline: float | None = None
        self._early_dtls: list[tuple[bytes, Address]] = []
        self._closed = False
        self._now = now
        self._transmits: list[tuple[bytes, Address]] = []
        self._events: list[PeerEvent] = []

    # Read-only state.

    @property
    def ice_state(self) -> str:
        return self._ice.state

    @property
    def address(self) -> tuple[str, int] | None:
        return self._ice.nominated

    @property
    def consent_timeout(self) -> float:
        """Seconds without a valid consent check before the peer is closed."""
        return self._ice.consent_timeout

    @property
    def valid_addresses(self) -> frozenset[tuple[str, int]]:
        """Addresses that sent an authenticated binding request."""
        return frozenset(self._ice.valid_addresses)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dtls_retransmissions(self) -> int:
        """DTLS handshake flights sent again."""
        return self._dtls.retransmissions if self._dtls is not None else 0

    @property
    def sctp_established(self) -> bool:
        """The SCTP association (data channels) is up."""
        return self.sctp is not None and self.sctp.established

    # Inputs.

    def set_remote_description(self, description: SessionDescription) -> None:
        """Take the peer's ICE credentials, fingerprints and DTLS role; raises ValueError.

        setup "active" (an answer from a browser) or "actpass" (a client's offer, as in
        WHEP: the server's answer then says "passive") makes us the DTLS server;
        "passive" makes us the client.
        """
        if description.setup not in ("active", "passive", "actpass"):
            raise ValueError(f"unsupported setup role {description.setup!r}")
        if not description.fingerprints:
            raise ValueError("no fingerprint")
        previous = self.remote_description
        if previous is not None and (
            previous.fingerprints != description.fingerprints or previous.setup != description.setup
        ):
            raise ValueError("the DTLS fingerprints or setup role changed")
        self.remote_description = description
        self.ice_restarting = False
        self._ice.set_remote_credentials(description.ice_ufrag, description.ice_pwd)
        for candidate in description.candidates:
            self.add_remote_candidate(candidate)
        if description.end_of_candidates:
            self.add_remote_candidate(None)
        if previous is None and not self._closed:
            self._dtls = DtlsTransport(
                self.certificate,
                is_server=description.setup != "passive",
                remote_fingerprints=description.fingerprints,
            )
            self._maybe_start_dtls()
            early, self._early_dtls = self._early_dtls, []
            for data, address in early:
                self._receive_dtls(data, address)

    def restart_ice(self) -> None:
        """Start an ICE restart: new local ICE credentials (for the next offer), same DTLS.

        The peer's next answer brings its new credentials; media keeps flowing to the
        nominated address until the peer nominates another."""
        if self._closed:
            return
        self._ice.restart()
        self.ice_restarting = True
        self.local_ufrag = self._ice.local_ufrag
        self.local_pwd = self._ice.local_pwd
        self.remote_candidates = []
        self.remote_end_of_candidates = False

    def add_remote_candidate(self, candidate: Candidate | None) -> None:
        """Record a trickled candidate (a lite agent sends no checks); None ends the list."""
        if candidate is None:
            self.remote_end_of_candidates = True
        elif candidate not in self.remote_candidates:
            self.remote_candidates.append(candidate)

    def receive(self, data: bytes, address: tuple[str, int], now: float) -> None:
        if self._closed or not data:
            return
        self._now = now
        first = data[0]
        if first < 4:
            self._receive_stun(data, address, now)
        elif 20 <= first <= 63:
            if address not in self._ice.valid_addresses:
                self.dropped_datagrams += 1
            elif self._dtls is None:
                if len(self._early_dtls) < EARLY_DTLS_LIMIT:
                    self._early_dtls.append((data, address))
            else:
                self._receive_dtls(data, address)
        elif 128 <= first <= 191:
            if not is_rtcp(data):
                self.ignored_rtp += 1
            elif address != self._ice.nominated or self.dtls_state != "connected":
                self.dropped_datagrams += 1
            else:
                self._events.append(RtcpReceived(data))
        else:
            self.dropped_datagrams += 1

    def handle_timeout(self, now: float) -> None:
        if self._closed:
            return
        self._now = now
        if self._dtls_deadline is not None and now >= self._dtls_deadline and self.dtls_state != "connected":
            self._close_with("DTLS handshake failed")
            return
        self._handle_ice_events(self._ice.handle_timeout(now))
        if self._closed:
            return
        if self._dtls is not None:
            self._dtls.handle_timeout(now)
            self._after_dtls()
        if self.sctp is not None and not self._closed:
            self.sctp.handle_timeout(now)
            self._after_sctp()

    def send_data(self, data: bytes, now: float, *, binary: bool, label: str = DEFAULT_LABEL) -> bool:
        """Send one data channel message on the channel ``label`` (opened if neither side has
        one); False if it was dropped: no association yet, or the send buffer is full."""
        if not self._closed:
            self._now = now
        sctp, channels = self.sctp, self.data_channels
        if self._closed or sctp is None or channels is None or not sctp.established:
            self.data_messages_dropped += 1
            return False
        if sctp.buffered_amount + len(data) > DATA_SEND_BUFFER_LIMIT:
            self.data_messages_dropped += 1
            return False
        try:
            channel = channels.channel(label) or channels.open(label, self._now)
            channels.send_payload(channel, data, binary=binary, now=self._now)
        except SctpError as error:
            logger.info("peer %s: data channel message dropped: %s", self.local_ufrag, error)
            self.data_messages_dropped += 1
            return False
        self.data_messages_sent += 1
        self._after_sctp()
        return True

    @property
    def data_buffered_amount(self) -> int:
        return self.sctp.buffered_amount if self.sctp is not None else 0

    def next_timeout(self) -> float | None:
        if self._closed:
            return None
        deadlines = [self._ice.next_timeout()]
        if self.dtls_state != "connected":
            deadlines.append(self._dtls_deadline)
        if self._dtls is not None:
            deadlines.append(self._dtls.next_timeout())
        if self.sctp is not None:
            deadlines.append(self.sctp.next_timeout())
        present = [deadline for deadline in deadlines if deadline is not None]
        return min(present) if present else None

    def close(self) -> None:
        """Close locally: a DTLS close_notify is queued; no PeerClosed event."""
        if self._closed:
            return
        if self._dtls is not None:
            if self.sctp is not None:
                self.sctp.abort()
                self._send_sctp()
            self._dtls.close()
            self._send_dtls()
        self._closed = True
        self._ice.close()
        if self.dtls_state not in ("failed", "closed"):
            self.dtls_state = "closed"

    # Outputs.

    def drain_transmits(self) -> list[tuple[bytes, tuple[str, int]]]:
        transmits, self._transmits = self._transmits, []
        return transmits

    def drain_events(self) -> list[PeerEvent]:
        events, self._events = self._events, []
        return events

    # Internals.

    def _receive_stun(self, data: bytes, address: Address, now: float) -> None:
        try:
            message = StunMessage.parse(data)
        except StunError as error:
            logger.debug("bad STUN from %s: %s", address, error)
            self.dropped_datagrams += 1
            return
        response, events = self._ice.receive(message, address, now)
        if response is not None:
            self._transmits.append((response, address))
        self._handle_ice_events(events)

    def _handle_ice_events(self, events: list[Nominated | IceFailed]) -> None:
        for event in events:
            if isinstance(event, IceFailed):
                self._close_with(event.reason, ice_state="failed")
                return
            if self._dtls_deadline is None:
                self._dtls_deadline = self._now + DTLS_HANDSHAKE_TIMEOUT
                self._events.append(IceConnected(event.address))
            else:
                self._events.append(AddressChanged(event.address))
            self._maybe_start_dtls()

    def _maybe_start_dtls(self) -> None:
        dtls = self._dtls
        if dtls is None or dtls.state != "new" or not (dtls.is_server or self._ice.nominated is not None):
            return
        dtls.start(self._now)
        self.dtls_state = "connecting"
        self._after_dtls()

    def _receive_dtls(self, data: bytes, address: Address) -> None:
        assert self._dtls is not None
        self._dtls_address = address
        self._dtls.receive(data, self._now)
        self._after_dtls()

    def _after_dtls(self) -> None:
        assert self._dtls is not None
        self._send_dtls()
        for event in self._dtls.drain_events():
            if isinstance(event, DtlsConnectedEvent):
                if self._ice.nominated is None and self._dtls_address is not None:
                    self._handle_ice_events(self._ice.adopt(self._dtls_address, self._now))
                self.dtls_state = "connected"
                self.srtp_profile = event.keys.profile
                address = self._ice.nominated or self._dtls_address
                assert address is not None
                self._events.append(
                    DtlsConnected(
                        event.keys.profile, event.keys.local_master_key, event.keys.remote_master_key, address
                    )
                )
                if self._wants_data_channels():
                    self._start_sctp()
            elif isinstance(event, DtlsDataEvent):
                self._receive_sctp(event.data)
            elif isinstance(event, DtlsClosedEvent):
                self._close_with(event.reason, dtls_state=self._dtls.state)
                return

    # Data channels.

    def _wants_data_channels(self) -> bool:
        description = self.remote_description
        return description is not None and any(
            media.kind == "application" and media.port != 0 for media in description.media
        )

    def _start_sctp(self) -> None:
        if self.sctp is not None or self._dtls is None:
            return
        self.sctp = SctpAssociation()
        self.data_channels = DataChannels(self.sctp, is_dtls_client=not self._dtls.is_server)
        if not self._dtls.is_server:
            self.sctp.start(self._now)  # as the DTLS client we open; a DTLS client peer sends INIT itself
        self._after_sctp()

    def _receive_sctp(self, data: bytes) -> None:
        if self.sctp is None:
            self._start_sctp()
        assert self.sctp is not None
        try:
            self.sctp.receive(data, self._now)
        except SctpError as error:
            self.sctp_malformed += 1
            logger.debug("peer %s: SCTP packet dropped: %s", self.local_ufrag, error)
        self._after_sctp()

    def _after_sctp(self) -> None:
        sctp, channels = self.sctp, self.data_channels
        assert sctp is not None and channels is not None
        self._send_sctp()
        for event in sctp.drain_events():
            if isinstance(event, AssociationEstablished):
                self._events.append(DataChannelsReady())
            elif isinstance(event, AssociationClosed):
                logger.info("peer %s: SCTP association closed: %s", self.local_ufrag, event.reason)
            else:
                channels.receive(event, self._now)
        self._send_sctp()
        for channel_event in channels.drain_events():
            if isinstance(channel_event, ChannelOpened):
                channel = channel_event.channel
                self._events.append(DataChannelOpened(channel.label, channel.stream_id, channel.opened_by_peer))
            elif isinstance(channel_event, ChannelMessage):
                self._events.append(DataChannelMessage(channel_event.label, channel_event.data))

    def _send_sctp(self) -> None:
        if self.sctp is None or self._dtls is None:
            return
        packets = self.sctp.drain_packets()
        for packet in packets:
            self._dtls.send(packet)
        if packets:
            self._send_dtls()

    def _send_dtls(self) -> None:
        assert self._dtls is not None
        address = self._ice.nominated or self._dtls_address
        for datagram in self._dtls.drain_datagrams():
            if address is not None:
                self._transmits.append((datagram, address))

    def _close_with(self, reason: str, *, ice_state: str = "closed", dtls_state: str = "closed") -> None:
        logger.info("peer %s closed: %s", self.local_ufrag, reason)
        if self._dtls is not None and self._dtls.state in ("connecting", "connected"):
            self._dtls.close()
            self._send_dtls()
        self._closed = True
        self._ice.close()
        self._ice.state = ice_state
        if self.dtls_state not in ("failed", "closed"):
            self.dtls_state = dtls_state
        self._events.append(PeerClosed(reason))
