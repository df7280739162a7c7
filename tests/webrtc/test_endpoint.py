"""WebRtcEndpoint on 127.0.0.1 against a real peer: aiortc's ORTC objects (aioice + pyOpenSSL DTLS)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aioice.ice
import pylibsrtp
import pytest
from aiortc import (
    RTCCertificate,
    RTCDtlsFingerprint,
    RTCDtlsParameters,
    RTCDtlsTransport,
    RTCIceGatherer,
    RTCIceParameters,
    RTCIceTransport,
)
from aiortc.sdp import candidate_from_sdp
from playwright.async_api import async_playwright

from fanout._engine import Engine
from fanout.webrtc.endpoint import WebRtcEndpoint, host_candidate
from fanout.webrtc.ice import CONSENT_TIMEOUT
from fanout.webrtc.peer import DtlsConnected, IceConnected, PeerClosed, PeerEvent, RtcpReceived, WebRtcPeer
from fanout.webrtc.rtcp import GenericNack, PictureLossIndication, ReceiverReport, parse_compound
from fanout.webrtc.sdp import (
    Candidate,
    Codec,
    OfferMedia,
    SessionDescription,
    TransportDescription,
    build_offer,
    parse_description,
)
from fanout.webrtc.stun import BINDING_REQUEST, BINDING_SUCCESS, ICE_CONTROLLING, PRIORITY, USERNAME, StunMessage
from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS

DATA = Path(__file__).parent / "data"
GCM_128 = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM


async def until(condition: Callable[[], object], timeout: float = 20.0) -> None:
    """Waits for ``condition`` to hold (a loaded machine is slow: generous by default)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
def loopback_only_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice leaves 127.0.0.1 out of its host candidates; make it gather only that."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture
async def endpoint() -> AsyncIterator[WebRtcEndpoint]:
    endpoint = await WebRtcEndpoint.open("127.0.0.1", 0, ["127.0.0.1"])
    yield endpoint
    endpoint.close()


@dataclass
class Recorder:
    events: list[PeerEvent] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, peer: WebRtcPeer, event: PeerEvent) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait_for(self, kind: type, count: int = 1) -> list[PeerEvent]:
        async def enough() -> list[PeerEvent]:
            while len(found := [e for e in self.events if isinstance(e, kind)]) < count:
                self.changed.clear()
                await self.changed.wait()
            return found

        return await asyncio.wait_for(enough(), 10.0)

    def rtcp(self) -> list[PeerEvent]:
        return [e for e in self.events if isinstance(e, RtcpReceived)]


@dataclass
class AiortcClient:
    """aiortc as a browser would be: full ICE agent (controlling), DTLS client (setup active)."""

    ice: RTCIceTransport
    dtls: RTCDtlsTransport

    @classmethod
    async def create(cls) -> AiortcClient:
        gatherer = RTCIceGatherer(iceServers=[])
        await gatherer.gather()
        ice = RTCIceTransport(gatherer)
        ice._connection.ice_controlling = True  # as RTCPeerConnection does facing an ice-lite offer
        dtls = RTCDtlsTransport(ice, [RTCCertificate.generateCertificate()])
        dtls._set_role("client")
        return cls(ice, dtls)

    def description(self) -> SessionDescription:
        ice = self.ice.iceGatherer.getLocalParameters()
        return SessionDescription(
            ice_ufrag=str(ice.usernameFragment),
            ice_pwd=str(ice.password),
            fingerprints=[(f.algorithm, f.value) for f in self.dtls.getLocalParameters().fingerprints],
            setup="active",
            media=[],
            candidates=[
                Candidate.parse(
                    f"candidate:{c.foundation} {c.component} {c.protocol} {c.priority} {c.ip} {c.port} typ {c.type}"
                )
                for c in self.ice.iceGatherer.getLocalCandidates()
            ],
            end_of_candidates=True,
            ice_lite=False,
        )

    async def connect(self, peer: WebRtcPeer, endpoint: WebRtcEndpoint) -> None:
        for candidate in endpoint.candidates():
            await self.ice.addRemoteCandidate(candidate_from_sdp(str(candidate).removeprefix("candidate:")))
        await self.ice.addRemoteCandidate(None)
        await self.ice.start(RTCIceParameters(usernameFragment=peer.local_ufrag, password=peer.local_pwd, iceLite=True))
        fingerprint = endpoint.certificate.fingerprint("sha-256")
        await self.dtls.start(
            RTCDtlsParameters(fingerprints=[RTCDtlsFingerprint("sha-256", fingerprint)], role="server")
        )

    async def close(self) -> None:
        await self.dtls.stop()
        await self.ice.stop()


async def connect(endpoint: WebRtcEndpoint) -> tuple[WebRtcPeer, Recorder, AiortcClient, DtlsConnected]:
    client = await AiortcClient.create()
    peer = WebRtcPeer(endpoint.certificate, asyncio.get_running_loop().time())
    recorder = Recorder()
    endpoint.add_peer(peer, recorder)
    peer.set_remote_description(client.description())
    await asyncio.wait_for(client.connect(peer, endpoint), 10.0)
    [connected] = await recorder.wait_for(DtlsConnected)
    assert isinstance(connected, DtlsConnected)
    return peer, recorder, client, connected


def srtcp_session(master_key: bytes, inbound: bool) -> pylibsrtp.Session:
    ssrc_type = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key=master_key, ssrc_type=ssrc_type, srtp_profile=GCM_128))


def test_host_candidates() -> None:
    assert str(host_candidate(0, "127.0.0.1", 10000)) == "candidate:1 1 udp 2130706431 127.0.0.1 10000 typ host"
    assert host_candidate(1, "192.0.2.7", 10000).priority == 2130706175


async def test_candidates_and_port(endpoint: WebRtcEndpoint) -> None:
    assert endpoint.port != 0
    assert endpoint.candidates() == [Candidate("1", 1, "udp", 2130706431, "127.0.0.1", endpoint.port, "host")]
    assert socket.socket(fileno=os.dup(endpoint.fileno())).getsockname() == ("127.0.0.1", endpoint.port)


async def test_the_endpoint_keeps_the_consent_timeout_its_peers_are_made_with(endpoint: WebRtcEndpoint) -> None:
    assert endpoint.consent_timeout == CONSENT_TIMEOUT
    configured = await WebRtcEndpoint.open("127.0.0.1", 0, ["127.0.0.1"], consent_timeout=7.5)
    try:
        assert configured.consent_timeout == 7.5
    finally:
        configured.close()


async def test_unspecified_bind_address_needs_advertised_addresses() -> None:
    with pytest.raises(ValueError, match="bound to 0.0.0.0: name the addresses to advertise"):
        await WebRtcEndpoint.open("0.0.0.0", 0, [])
    endpoint = await WebRtcEndpoint.open("0.0.0.0", 0, ["127.0.0.1", "192.0.2.7"])
    try:
        assert [(c.ip, c.port) for c in endpoint.candidates()] == [
            ("127.0.0.1", endpoint.port),
            ("192.0.2.7", endpoint.port),
        ]
    finally:
        endpoint.close()


async def test_aiortc_connects_and_srtp_keys_match(loopback_only_ice: None, endpoint: WebRtcEndpoint) -> None:
    peer, recorder, client, connected = await connect(endpoint)
    try:
        assert isinstance(recorder.events[0], IceConnected)
        assert connected.srtp_profile == "AEAD_AES_128_GCM"
        assert connected.address == peer.address == recorder.events[0].address
        assert (peer.ice_state, peer.dtls_state) == ("connected", "connected")
        assert client.dtls.state == "connected"

        # aiortc protects RTCP with its key: it unprotects with remote_master_key.
        report = bytes(ReceiverReport(0x12345678))
        await client.dtls._send_rtp(report)
        [received] = await recorder.wait_for(RtcpReceived)
        assert isinstance(received, RtcpReceived) and received.packet != report
        plain = srtcp_session(connected.remote_master_key, inbound=True).unprotect_rtcp(received.packet)
        assert plain == report
        assert parse_compound(plain) == [ReceiverReport(0x12345678)]

        # We protect with local_master_key and send from the endpoint's socket: aiortc unprotects it.
        unprotected: list[bytes] = []

        async def handle_rtcp_data(data: bytes) -> None:
            unprotected.append(data)

        client.dtls._handle_rtcp_data = handle_rtcp_data  # type: ignore[method-assign]
        pli = bytes(PictureLossIndication(0xABCDEF, 0x12345678))
        sender = socket.socket(fileno=os.dup(endpoint.fileno()))
        try:
            sender.sendto(srtcp_session(connected.local_master_key, inbound=False).protect_rtcp(pli), connected.address)
        finally:
            sender.detach()
        await until(lambda: unprotected)
        assert unprotected == [pli]
    finally:
        await client.close()


async def test_garbage_is_dropped_and_counted(loopback_only_ice: None, endpoint: WebRtcEndpoint) -> None:
    peer, recorder, client, _ = await connect(endpoint)
    try:
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind(("127.0.0.1", 0))
        try:
            target = ("127.0.0.1", endpoint.port)
            stranger.sendto(b"\x16\xfe\xfd" + bytes(40), target)  # DTLS-looking, unknown address
            stranger.sendto(b"\x80\xc9" + bytes(6), target)  # RTCP-looking, unknown address
            stranger.sendto(b"\x00\x01\x00\x08" + bytes(8), target)  # STUN-looking, malformed
            stranger.sendto(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12), target)  # STUN, no USERNAME
        finally:
            stranger.close()
        # From the connected client's own address: garbage in every RFC 7983 range.
        protocol = client.ice._connection._protocols[0]
        for garbage in (b"\x17\xfe\xfd" + bytes(30), b"\x45nonsense", b"\x01" + bytes(3), b"\x80\x60" + bytes(12)):
            protocol.transport.sendto(garbage, ("127.0.0.1", endpoint.port))
        await client.dtls._send_rtp(bytes(ReceiverReport(1)))
        await recorder.wait_for(RtcpReceived)
        assert endpoint.dropped_unknown == 3
        assert endpoint.dropped_malformed == 2
        assert peer.ignored_rtp == 1
        assert peer.dropped_datagrams == 1
        assert (peer.ice_state, peer.dtls_state) == ("connected", "connected")
        assert client.dtls.state == "connected"
    finally:
        await client.close()


async def test_remove_peer_sends_close_notify(loopback_only_ice: None, endpoint: WebRtcEndpoint) -> None:
    peer, recorder, client, _ = await connect(endpoint)
    try:
        endpoint.remove_peer(peer)
        endpoint.remove_peer(peer)
        await until(lambda: client.dtls.state == "closed")
        assert peer.closed and endpoint.peers == []
        assert [type(e) for e in recorder.events] == [IceConnected, DtlsConnected]
    finally:
        await client.close()


async def test_first_aioice_check_is_well_formed(loopback_only_ice: None, endpoint: WebRtcEndpoint) -> None:
    """What aioice sends first is the request stored in data/stun_request_aioice.bin (same shape)."""
    seen: list[bytes] = []
    receive = endpoint.datagram_received

    def spy(data: bytes, address: tuple[str, int]) -> None:
        seen.append(data)
        receive(data, address)

    endpoint.datagram_received = spy  # type: ignore[method-assign]
    peer, _, client, _ = await connect(endpoint)
    try:
        first = StunMessage.parse(seen[0])
        assert first.username == f"{peer.local_ufrag}:{client.ice.iceGatherer.getLocalParameters().usernameFragment}"
        assert first.verify_integrity(peer.local_pwd.encode()) and first.verify_fingerprint()
        assert first.ice_controlling is not None and not first.use_candidate
        assert any(StunMessage.parse(d).use_candidate for d in seen if d[0] < 4)
        if os.environ.get("FANOUT_CAPTURE"):
            (DATA / "stun_request_aioice.bin").write_bytes(seen[0])
            (DATA / "stun_request_aioice.pwd").write_text(peer.local_pwd + "\n")
    finally:
        await client.close()


CHROMIUM_PAGE = """
async (offer) => {
  const pc = new RTCPeerConnection({iceServers: []});
  window.pc = pc;
  await pc.setRemoteDescription({type: "offer", sdp: offer});
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  return answer.sdp;
}
"""
CHROMIUM_STATS = """
pc.getStats().then((report) => {
  const found = {};
  report.forEach((stats) => {
    if (stats.type === "inbound-rtp" || stats.type === "transport") found[stats.type] = stats;
  });
  return found;
})
"""


def vp8_rtp(sequence: int) -> bytes:
    """A VP8 inter-frame packet (no keyframe: the browser asks for one) for SSRC 2222."""
    header = bytes((0x80, 0xE0)) + sequence.to_bytes(2, "big") + (sequence * 3000).to_bytes(4, "big")
    return header + (2222).to_bytes(4, "big") + b"\x10\x01" + bytes(100)


async def test_chromium_connects(endpoint: WebRtcEndpoint, tmp_path: Path) -> None:
    """Debian's Chromium (BoringSSL DTLS, libwebrtc ICE) against the endpoint, no namespace needed."""
    loop = asyncio.get_running_loop()
    peer = WebRtcPeer(endpoint.certificate, loop.time())
    recorder = Recorder()
    endpoint.add_peer(peer, recorder)
    video = OfferMedia(
        "v", "video", Codec(96, "VP8", 90000, rtcp_feedback=("nack", "nack pli", "ccm fir", "goog-remb")), ssrc=2222
    )
    transport = TransportDescription(
        peer.local_ufrag,
        peer.local_pwd,
        ("sha-256", endpoint.certificate.fingerprint()),
        "actpass",
        endpoint.candidates(),
    )
    offer = build_offer([video], transport, session_id=1, session_version=1)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS, env={"HOME": str(tmp_path)}
        )
        try:
            page = await browser.new_page()
            peer.set_remote_description(parse_description(await page.evaluate(CHROMIUM_PAGE, offer)))
            [connected] = await recorder.wait_for(DtlsConnected)
            assert isinstance(connected, DtlsConnected)
            assert [type(e) for e in recorder.events] == [IceConnected, DtlsConnected]
            assert connected.srtp_profile == "AEAD_AES_128_GCM"

            protect = srtcp_session(connected.local_master_key, inbound=False)
            sender = socket.socket(fileno=os.dup(endpoint.fileno()))
            try:
                for sequence in range(1, 31):
                    if sequence != 10:
                        sender.sendto(protect.protect(vp8_rtp(sequence)), connected.address)
            finally:
                sender.detach()

            unprotect = srtcp_session(connected.remote_master_key, inbound=True)
            feedback: set[type] = set()
            while not {GenericNack, PictureLossIndication} <= feedback:
                received = await recorder.wait_for(RtcpReceived, count=len(recorder.rtcp()) + 1)
                for event in received[len(received) - 1 :]:
                    assert isinstance(event, RtcpReceived)
                    feedback |= {type(p) for p in parse_compound(unprotect.unprotect_rtcp(event.packet))}
            stats = await page.evaluate(CHROMIUM_STATS)
            assert stats["transport"]["dtlsState"] == "connected"
            assert stats["transport"]["srtpCipher"] == "SRTP_AEAD_AES_128_GCM"
            assert stats["inbound-rtp"]["packetsReceived"] == 29

            await page.evaluate("pc.close()")
            [closed] = await recorder.wait_for(PeerClosed)
            assert closed == PeerClosed("DTLS closed")
            assert endpoint.peers == []
        finally:
            await browser.close()


async def test_a_connected_socket_takes_its_peers_datagrams_and_the_port_stays_ours() -> None:
    endpoint = await WebRtcEndpoint.open("127.0.0.1", 0, [])
    publisher, other = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    try:
        for sock in (publisher, other):
            sock.bind(("127.0.0.1", 0))
        link = endpoint.connected_socket(publisher.getsockname())
        link.settimeout(5)
        publisher.sendto(b"\x80\x60from the publisher", ("127.0.0.1", endpoint.port))
        other.sendto(b"\x80\x60from someone else", ("127.0.0.1", endpoint.port))
        assert link.recv(100) == b"\x80\x60from the publisher"
        # The other datagram reached the endpoint, which knows no such peer.
        await until(lambda: endpoint.dropped_unknown)
        assert endpoint.dropped_unknown == 1
        link.close()
        with pytest.raises(OSError):  # SO_REUSEPORT never lets a second fanout share the port
            await WebRtcEndpoint.open("127.0.0.1", endpoint.port, [])
    finally:
        publisher.close()
        other.close()
        endpoint.close()


async def test_the_largest_udp_datagram_arrives_whole(endpoint: WebRtcEndpoint) -> None:
    """The endpoint reads datagrams into a buffer smaller than asyncio's default (cheaper to
    allocate): still one any UDP datagram fits in."""
    received: list[bytes] = []
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.bind(("127.0.0.1", 0))
        endpoint.route_address(sender.getsockname(), received.append)
        largest = b"\x80\xc9" + os.urandom(65507 - 2)  # IPv4's largest UDP payload
        sender.sendto(largest, ("127.0.0.1", endpoint.port))
        await until(lambda: received)
        assert received == [largest]
    finally:
        sender.close()


@pytest.mark.parametrize("client_address", ["127.0.0.1", "::1"])
async def test_a_dual_stack_endpoint_connects_ipv4_and_ipv6_peers(monkeypatch: pytest.MonkeyPatch, client_address: str) -> None:
    """Bound to "::", one socket serves both families; an IPv4 peer's address is its IPv4 form, not ::ffff:."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [client_address])
    endpoint = await WebRtcEndpoint.open("::", 0, [client_address])
    try:
        peer, _, client, connected = await connect(endpoint)
        try:
            assert connected.address[0] == client_address
            assert peer.address is not None and peer.address[0] == client_address
        finally:
            await client.close()
    finally:
        endpoint.close()


def rmem_max() -> int:
    return int(Path("/proc/sys/net/core/rmem_max").read_text())


async def test_the_socket_gets_the_receive_buffer_asked_or_the_most_the_kernel_allows() -> None:
    asked = 4 << 20
    endpoint = await WebRtcEndpoint.open("127.0.0.1", 0, ["127.0.0.1"], receive_buffer=asked)
    try:
        # As root (CAP_NET_ADMIN) past net.core.rmem_max; else up to it. Linux reports twice the size.
        assert endpoint.receive_buffer >= min(asked, rmem_max())
        assert endpoint.socket_drops() == 0
    finally:
        endpoint.close()


def consent_check(peer: WebRtcPeer, client_ufrag: str) -> bytes:
    """A consent check (a binding request) as a viewer sends it to ``peer``, an ICE-lite agent."""
    message = (
        StunMessage(BINDING_REQUEST, os.urandom(12))
        .with_attribute(USERNAME, f"{peer.local_ufrag}:{client_ufrag}".encode())
        .with_attribute(PRIORITY, (0x6E0001FF).to_bytes(4, "big"))
        .with_attribute(ICE_CONTROLLING, os.urandom(8))
    )
    return bytes(message.with_integrity(peer.local_pwd.encode()).with_fingerprint())


async def answered_burst(receive_buffer: int, checks: int, *, engine: bool = False) -> tuple[int, int, int]:
    """``checks`` consent checks from 1 viewer socket per 100 checks, sent while the control plane
    is busy (the test holds the event loop), then read: how many were answered, and how many the
    kernel dropped at the endpoint's socket, and the receive buffer the kernel granted. With
    ``engine``, an engine's thread reads the socket and hands the endpoint the checks, as in a server."""
    endpoint = await WebRtcEndpoint.open("127.0.0.1", 0, ["127.0.0.1"], receive_buffer=receive_buffer)
    reader = Engine(endpoint.fileno()) if engine else None
    if reader is not None:
        endpoint.read_through(reader.read_webrtc_socket(), reader.take_webrtc_datagrams)
    peer = WebRtcPeer(endpoint.certificate, asyncio.get_running_loop().time())
    endpoint.add_peer(peer, Recorder())
    description = SessionDescription(
        ice_ufrag="viewer", ice_pwd="viewer-password-of-22+chars", fingerprints=[("sha-256", "00" * 32)],
        setup="active", media=[], candidates=[], end_of_candidates=True, ice_lite=False,
    )  # fmt: skip
    peer.set_remote_description(description)
    viewers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(checks // 100)]
    try:
        for viewer in viewers:
            viewer.bind(("127.0.0.1", 0))
            viewer.setblocking(False)
        for index in range(checks):  # all at once: the endpoint cannot read until the loop turns
            viewers[index % len(viewers)].sendto(consent_check(peer, "viewer"), ("127.0.0.1", endpoint.port))
        answered = 0
        deadline = asyncio.get_running_loop().time() + 30
        while answered < checks and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            for viewer in viewers:
                with contextlib.suppress(BlockingIOError):
                    while True:
                        if StunMessage.parse(viewer.recv(2048)).message_type == BINDING_SUCCESS:
                            answered += 1
            if answered + (endpoint.socket_drops() or 0) >= checks:
                break
        return answered, endpoint.socket_drops() or 0, endpoint.receive_buffer
    finally:
        for viewer in viewers:
            viewer.close()
        endpoint.close()
        if reader is not None:
            assert reader.webrtc_socket_stats().dropped == 0
            reader.close()


async def test_a_burst_of_consent_checks_read_by_the_engine_is_answered_whole() -> None:
    checks = 2000
    answered, dropped, _ = await answered_burst(8 << 20, checks, engine=True)
    assert (answered, dropped) == (checks, 0)


async def test_a_burst_of_consent_checks_waits_in_the_sized_receive_buffer_and_every_check_is_answered() -> None:
    checks = 2000
    answered, dropped, granted = await answered_burst(8 << 20, checks)
    if granted < checks * 2048:  # a datagram takes ~1 KiB of it, and Linux reports twice the size
        pytest.skip(f"the kernel granted {granted} bytes: raise net.core.rmem_max or run with CAP_NET_ADMIN")
    assert (answered, dropped) == (checks, 0)
    # The kernel's smallest buffer holds a few dozen: the rest of the burst is dropped, and counted.
    answered, dropped, _ = await answered_burst(1, checks)
    assert dropped > 0 and answered + dropped == checks
