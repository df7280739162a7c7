import dataclasses

import pytest

from fanout.webrtc.datachannel import ChannelMessage, ChannelOpened, DataChannels
from fanout.webrtc.dtls import DtlsCertificate, DtlsClosedEvent, DtlsDataEvent, DtlsTransport
from fanout.webrtc.ice import CONSENT_TIMEOUT
from fanout.webrtc.peer import (
    DATA_SEND_BUFFER_LIMIT,
    AddressChanged,
    DataChannelsReady,
    DtlsConnected,
    IceConnected,
    PeerClosed,
    RtcpReceived,
    WebRtcPeer,
)
from fanout.webrtc.rtcp import PictureLossIndication
from fanout.webrtc.sctp import MessageReceived, SctpAssociation
from fanout.webrtc.sdp import Candidate, SessionDescription, MediaDescription
from fanout.webrtc.stun import (
    BINDING_REQUEST,
    BINDING_SUCCESS,
    ICE_CONTROLLING,
    PRIORITY,
    USE_CANDIDATE,
    USERNAME,
    StunMessage,
)

SERVER_CERTIFICATE = DtlsCertificate.generate()
BROWSER_CERTIFICATE = DtlsCertificate.generate()
BROWSER = ("127.0.0.1", 50000)
STRANGER = ("127.0.0.1", 60000)
CANDIDATE = Candidate("1", 1, "udp", 2113937151, "127.0.0.1", 50000, "host")


def description(setup: str = "active", fingerprint: str | None = None, candidates: bool = False) -> SessionDescription:
    return SessionDescription(
        ice_ufrag="brws",
        ice_pwd="browser-password-0123456789",
        fingerprints=[("sha-256", fingerprint or BROWSER_CERTIFICATE.fingerprint())],
        setup=setup,
        media=[],
        candidates=[CANDIDATE] if candidates else [],
        end_of_candidates=candidates,
        ice_lite=False,
    )


def check(peer: WebRtcPeer, *, nominate: bool = True, transaction: int = 1) -> bytes:
    message = (
        StunMessage(BINDING_REQUEST, transaction.to_bytes(12, "big"))
        .with_attribute(USERNAME, f"{peer.local_ufrag}:brws".encode())
        .with_attribute(PRIORITY, (1853824767).to_bytes(4, "big"))
        .with_attribute(ICE_CONTROLLING, (42).to_bytes(8, "big"))
    )
    if nominate:
        message = message.with_attribute(USE_CANDIDATE, b"")
    return bytes(message.with_integrity(peer.local_pwd.encode()).with_fingerprint())


class Browser:
    """The far side: our own DtlsTransport as the DTLS client, wired to a peer in memory."""

    def __init__(self, peer: WebRtcPeer, is_server: bool = False) -> None:
        self.peer = peer
        self.dtls = DtlsTransport(
            BROWSER_CERTIFICATE,
            is_server=is_server,
            remote_fingerprints=[("sha-256", SERVER_CERTIFICATE.fingerprint())],
        )
        self.received: list[bytes] = []

    def exchange(self, now: float, address: tuple[str, int] = BROWSER) -> None:
        for _ in range(10):
            sent = self.dtls.drain_datagrams()
            for datagram in sent:
                self.peer.receive(datagram, address, now)
            transmits = self.peer.drain_transmits()
            for data, destination in transmits:
                assert destination == address
                self.received.append(data)
                if 20 <= data[0] <= 63:
                    self.dtls.receive(data, now)
            if not sent and not transmits:
                return


def connected_peer(consent_timeout: float = CONSENT_TIMEOUT) -> tuple[WebRtcPeer, Browser, DtlsConnected]:
    peer = WebRtcPeer(SERVER_CERTIFICATE, now=0.0, consent_timeout=consent_timeout)
    peer.receive(check(peer), BROWSER, now=1.0)
    peer.set_remote_description(description())
    browser = Browser(peer)
    browser.dtls.start(1.0)
    browser.exchange(1.0)
    events = peer.drain_events()
    assert events[0] == IceConnected(BROWSER)
    assert isinstance(events[1], DtlsConnected)
    return peer, browser, events[1]


def test_binding_request_is_answered_before_the_remote_description() -> None:
    peer = WebRtcPeer(SERVER_CERTIFICATE, now=0.0)
    assert len(peer.local_ufrag) >= 4 and len(peer.local_pwd) >= 22
    peer.receive(check(peer, nominate=False), BROWSER, now=1.0)
    [(response, address)] = peer.drain_transmits()
    assert address == BROWSER
    message = StunMessage.parse(response)
    assert message.message_type == BINDING_SUCCESS
    assert message.xor_mapped_address == BROWSER
    assert message.verify_integrity(peer.local_pwd.encode())
    assert peer.drain_events() == []
    assert peer.ice_state == "checking" and peer.address is None


def test_connects_as_dtls_server_and_reports_the_keys() -> None:
    peer, browser, connected = connected_peer()
    assert browser.dtls.keys is not None
    assert connected == DtlsConnected(
        srtp_profile="AEAD_AES_128_GCM",
        local_master_key=browser.dtls.keys.remote_master_key,
        remote_master_key=browser.dtls.keys.local_master_key,
        address=BROWSER,
    )
    assert (peer.ice_state, peer.dtls_state, peer.address, peer.srtp_profile) == (
        "connected",
        "connected",
        BROWSER,
        "AEAD_AES_128_GCM",
    )
    assert peer.next_timeout() == 1.0 + 30.0  # consent


def test_rtcp_is_delivered_and_rtp_is_ignored() -> None:
    peer, _, _ = connected_peer()
    rtcp = bytes(PictureLossIndication(1, 2)) + bytes(10)  # SRTCP: trailer bytes follow
    peer.receive(rtcp, BROWSER, now=2.0)
    peer.receive(b"\x80\x60" + bytes(20), BROWSER, now=2.0)  # RTP, payload type 96
    peer.receive(rtcp, STRANGER, now=2.0)
    peer.receive(b"\x40garbage", BROWSER, now=2.0)
    assert peer.drain_events() == [RtcpReceived(rtcp)]
    assert peer.ignored_rtp == 1
    assert peer.dropped_datagrams == 2


def test_dtls_from_an_unchecked_address_is_dropped() -> None:
    peer = WebRtcPeer(SERVER_CERTIFICATE, now=0.0)
    peer.set_remote_description(description())
    browser = Browser(peer)
    browser.dtls.start(0.0)
    browser.exchange(0.5, address=STRANGER)
    assert peer.drain_transmits() == []
    assert peer.dropped_datagrams == 1
    assert peer.dtls_state == "connecting"


def test_dtls_before_the_remote_description_is_replayed() -> None:
    peer = WebRtcPeer(SERVER_CERTIFICATE, now=0.0)
    peer.receive(check(peer), BROWSER, now=1.0)
    peer.drain_transmits()
    browser = Browser(peer)
    browser.dtls.start(1.0)
    browser.exchange(1.0)  # the ClientHello waits: no answer yet
    assert peer.dtls_state == "new"
    peer.set_remote_description(description(candidates=True))
    assert peer.remote_candidates == [CANDIDATE] and peer.remote_end_of_candidates
    browser.exchange(1.5)
    assert peer.dtls_state == "connected"
    assert [type(e) for e in peer.drain_events()] == [IceConnected, DtlsConnected]


def test_dtls_before_nomination_adopts_the_address() -> None:
    """Chromium's order: a check without USE-CANDIDATE, the whole handshake, then the nomination."""
    peer = WebRtcPeer(SERVER_CERTIFICATE, now=0.0)
    peer.set_remote_description(description())
    peer.receive(check(peer, nominate=False), BROWSER, now=1.0)
    peer.drain_transmits()
    browser = Browser(peer)
    browser.dtls.start(1.0)
    browser.exchange(1.0)
    events = peer.drain_events()
    assert [type(e) for e in events] == [IceConnected, DtlsConnected]
    assert events[0] == IceConnected(BROWSER)
    assert peer.address == BROWSER and peer.ice_state == "connected"
    peer.receive(check(peer, transaction=2), BROWSER, now=2.0)
    assert peer.drain_events() == []
    assert peer.next_timeout() == 32.0


def test_a_client_offer_with_actpass_makes_us_the_dtls_server() -> None:
    peer = WebRtcPeer(SERVER_CERTIFICATE, now=0.0)
    peer.receive(check(peer), BROWSER, now=1.0)
    peer.set_remote_description(description(setup="actpass"))
    browser = Browser(peer)
    browser.dtls.start(1.0)
    browser.exchange(1.0)
    assert peer.dtls_state == "connected"


def test_connects_as_dtls_client_once_nominated() -> None:
    peer = WebRtcPeer(SERVER_CERTIFICATE, now=0.0)
    peer.set_remote_description(description(setup="passive"))
    assert peer.drain_transmits() == []
    assert peer.dtls_state == "new"
    browser = Browser(peer, is_server=True)
    browser.dtls.start(0.0)
    peer.receive(check(peer), BROWSER, now=1.0)
    transmits = peer.drain_transmits()
    assert [t[0][0] for t in transmits] == [0x01, 0x16]  # STUN response, then the ClientHello
    for data, _ in transmits[1:]:
        browser.dtls.receive(data, 1.0)
    browser.exchange(1.0)
    assert peer.dtls_state == "connected"
    events = peer.drain_events()
    assert isinstance(events[1], DtlsConnected) and browser.dtls.keys is not None
    assert events[1].local_master_key == browser.dtls.keys.remote_master_key


def test_fingerprint_mismatch_closes_the_peer() -> None:
    peer = WebRtcPeer(SERVER_CERTIFICATE, now=0.0)
    peer.receive(check(peer), BROWSER, now=1.0)
    peer.set_remote_description(description(fingerprint=SERVER_CERTIFICATE.fingerprint()))
    browser = Browser(peer)
    browser.dtls.start(1.0)
    browser.exchange(1.0)
    assert peer.drain_events() == [IceConnected(BROWSER), PeerClosed("fingerprint mismatch")]
    assert (peer.ice_state, peer.dtls_state) == ("closed", "failed")
    assert browser.dtls.drain_events() == [DtlsClosedEvent("DTLS handshake failed")]  # it got our alert
    assert peer.next_timeout() is None


def test_ice_timeout() -> None:
    peer = WebRtcPeer(SERVER_CERTIFICATE, now=100.0)
    peer.set_remote_description(description())
    peer.receive(check(peer, nominate=False), BROWSER, now=101.0)
    assert len(peer.drain_transmits()) == 1
    assert peer.next_timeout() == 130.0
    peer.handle_timeout(129.0)
    assert peer.drain_events() == []
    peer.handle_timeout(130.0)
    assert peer.drain_events() == [PeerClosed("ICE failed")]
    assert peer.ice_state == "failed"
    assert peer.next_timeout() is None
    peer.receive(check(peer), BROWSER, now=131.0)
    assert peer.drain_transmits() == [] and peer.drain_events() == []


def test_consent_expiry() -> None:
    peer, browser, _ = connected_peer()
    peer.receive(check(peer, nominate=False, transaction=2), BROWSER, now=20.0)
    peer.handle_timeout(49.0)
    assert peer.drain_events() == []
    assert peer.next_timeout() == 50.0
    peer.handle_timeout(50.0)
    assert peer.drain_events() == [PeerClosed("consent expired")]
    assert (peer.ice_state, peer.dtls_state) == ("failed", "closed")
    [(close_notify, address)] = [t for t in peer.drain_transmits() if t[0][0] == 0x15]
    assert address == BROWSER
    browser.dtls.drain_events()
    browser.dtls.receive(close_notify, 50.0)
    assert browser.dtls.drain_events() == [DtlsClosedEvent("DTLS closed")]


def test_consent_expires_after_the_peers_own_consent_timeout() -> None:
    assert WebRtcPeer(SERVER_CERTIFICATE, now=0.0).consent_timeout == CONSENT_TIMEOUT
    peer, _, _ = connected_peer(consent_timeout=5.0)
    assert peer.consent_timeout == 5.0
    assert peer.next_timeout() == 1.0 + 5.0
    peer.receive(check(peer, nominate=False, transaction=2), BROWSER, now=4.0)
    peer.handle_timeout(8.9)
    assert peer.drain_events() == []
    assert peer.next_timeout() == 9.0
    peer.handle_timeout(9.0)
    assert peer.drain_events() == [PeerClosed("consent expired")]


def test_dtls_handshake_timeout() -> None:
    peer = WebRtcPeer(SERVER_CERTIFICATE, now=0.0)
    peer.set_remote_description(description())
    peer.receive(check(peer), BROWSER, now=1.0)
    assert peer.next_timeout() == 31.0
    peer.handle_timeout(31.0)
    assert peer.drain_events() == [IceConnected(BROWSER), PeerClosed("DTLS handshake failed")]


def test_address_change() -> None:
    peer, _, _ = connected_peer()
    peer.receive(check(peer, transaction=3), STRANGER, now=5.0)
    assert peer.drain_events() == [AddressChanged(STRANGER)]
    assert peer.address == STRANGER


def test_local_close_sends_close_notify_without_an_event() -> None:
    peer, browser, _ = connected_peer()
    browser.dtls.drain_events()
    peer.close()
    assert peer.drain_events() == []
    assert (peer.ice_state, peer.dtls_state, peer.next_timeout()) == ("closed", "closed", None)
    for data, _ in peer.drain_transmits():
        browser.dtls.receive(data, 2.0)
    assert browser.dtls.drain_events() == [DtlsClosedEvent("DTLS closed")]


def test_remote_close_notify() -> None:
    peer, browser, _ = connected_peer()
    browser.dtls.close()
    browser.exchange(2.0)
    assert peer.drain_events() == [PeerClosed("DTLS closed")]
    assert peer.dtls_state == "closed"


def test_remote_description_rules() -> None:
    peer = WebRtcPeer(SERVER_CERTIFICATE, now=0.0)
    with pytest.raises(ValueError, match="unsupported setup role 'holdconn'"):
        peer.set_remote_description(description(setup="holdconn"))
    peer.set_remote_description(description())
    peer.set_remote_description(description())  # the same again: no change
    with pytest.raises(ValueError, match="fingerprints or setup role changed"):
        peer.set_remote_description(description(fingerprint=SERVER_CERTIFICATE.fingerprint()))
    peer.add_remote_candidate(CANDIDATE)
    peer.add_remote_candidate(CANDIDATE)
    peer.add_remote_candidate(None)
    assert peer.remote_candidates == [CANDIDATE] and peer.remote_end_of_candidates


# --- data channels ---------------------------------------------------------------------------


def data_channel_peer() -> tuple[WebRtcPeer, Browser, SctpAssociation, DataChannels]:
    """A connected peer whose remote description has an m=application, and a browser whose
    SCTP association (ours, active) runs over its DTLS."""
    peer = WebRtcPeer(SERVER_CERTIFICATE, now=0.0)
    peer.receive(check(peer), BROWSER, now=1.0)
    peer.set_remote_description(
        dataclasses.replace(description(), media=[MediaDescription("d", "application", 9, "sendrecv", [])])
    )
    browser = Browser(peer)
    browser.dtls.start(1.0)
    browser.exchange(1.0)
    association = SctpAssociation()
    channels = DataChannels(association, is_dtls_client=True)
    association.start(1.0)
    assert not peer.sctp_established
    pump_sctp(peer, browser, association, channels)
    assert association.established and peer.sctp_established  # handle_info's "sctp-association"
    assert DataChannelsReady() in peer.drain_events()
    return peer, browser, association, channels


def pump_sctp(
    peer: WebRtcPeer, browser: Browser, association: SctpAssociation, channels: DataChannels, *, deliver: bool = True
) -> None:
    for _ in range(20):
        for packet in association.drain_packets():
            browser.dtls.send(packet)
        browser.exchange(1.0)
        moved = False
        for event in browser.dtls.drain_events():
            if isinstance(event, DtlsDataEvent) and deliver:
                association.receive(event.data, 1.0)
                moved = True
        for sctp_event in association.drain_events():
            if isinstance(sctp_event, MessageReceived):
                channels.receive(sctp_event, 1.0)
        if not moved:
            return


def test_data_channel_messages_reach_the_browser() -> None:
    peer, browser, association, channels = data_channel_peer()
    assert peer.send_data(b"caption 1", 1.0, binary=False)
    assert peer.send_data(b"\x00\xff", 1.0, binary=True)
    pump_sctp(peer, browser, association, channels)
    [opened, *messages] = channels.drain_events()
    assert isinstance(opened, ChannelOpened) and opened.channel.label == "JanusDataChannel"
    assert messages == [
        ChannelMessage(1, "JanusDataChannel", "caption 1"),
        ChannelMessage(1, "JanusDataChannel", b"\x00\xff"),
    ]
    assert peer.data_messages_sent == 2


def test_data_is_dropped_before_the_association_and_past_the_buffer_limit() -> None:
    peer, _, _ = connected_peer()
    assert not peer.send_data(b"too early", 1.0, binary=False)
    assert peer.data_messages_dropped == 1

    peer, browser, association, channels = data_channel_peer()
    message = bytes(10_000)
    sent = 0
    while peer.send_data(message, 1.0, binary=True):  # the browser never acknowledges: a stalled viewer
        sent += 1
        assert sent < 1000
    assert sent * len(message) <= DATA_SEND_BUFFER_LIMIT
    assert peer.data_buffered_amount <= DATA_SEND_BUFFER_LIMIT
    assert peer.data_messages_dropped == 1


def test_a_message_long_after_the_last_input_is_timed_from_now() -> None:
    peer, browser, association, channels = data_channel_peer()
    assert peer.send_data(b"much later", 100.0, binary=False)
    assert peer.sctp is not None
    deadline = peer.sctp.next_timeout()
    assert deadline is not None and deadline > 100.0  # not retransmitted at once
