"""Stand-ins for the core's neighbours: a small plugin, the engine, the WebRTC endpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fanout.core.plugin import (
    Jsep,
    LocalOffer,
    Plugin,
    PluginAck,
    PluginError,
    PluginHandle,
    PluginResult,
    PluginSuccess,
)
from fanout.webrtc.dtls import DtlsCertificate
from fanout.webrtc.endpoint import EventHandler, host_candidate
from fanout.webrtc.ice import CONSENT_TIMEOUT
from fanout.webrtc.peer import WebRtcPeer
from fanout.webrtc.rtcp import RtcpPacket, parse_compound
from fanout.webrtc.sdp import Candidate, Codec, OfferMedia

if TYPE_CHECKING:
    from fanout._engine import RtcpReport

_CERTIFICATE: DtlsCertificate | None = None


def certificate() -> DtlsCertificate:
    global _CERTIFICATE
    if _CERTIFICATE is None:
        _CERTIFICATE = DtlsCertificate.generate()
    return _CERTIFICATE


OFFER = LocalOffer(
    media=[
        OfferMedia(mid="a", kind="audio", codec=Codec(111, "opus", 48000, 2), ssrc=1111),
        OfferMedia(mid="v", kind="video", codec=Codec(96, "VP8", 90000, rtcp_feedback=("nack", "nack pli")), ssrc=2222),
    ]
)


def status(name: str) -> dict[str, Any]:
    return {"streaming": "event", "result": {"status": name}}


class EchoStreamingPlugin(Plugin):
    """A Streaming-like plugin: list (sync), watch (offer), start (takes the answer), stop (close_pc).
    Named janus.plugin.streaming so recordings of Janus's Streaming plugin compare."""

    package = "janus.plugin.streaming"
    name = "Test streaming plugin"
    description = "A stand-in for the Streaming plugin"
    author = "fanout tests"
    version = 9
    version_string = "0.0.9"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.messages: list[tuple[int, str, dict[str, Any], Jsep | None]] = []
        self.rtcp: list[tuple[int, RtcpReport]] = []
        self.handles: dict[int, PluginHandle] = {}
        self.fail_create = False
        self.tell_stopped = False  # push "stopped" when the PeerConnection or the handle goes

    def create_session(self, handle: PluginHandle) -> None:
        if self.fail_create:
            raise RuntimeError("no room")
        self.calls.append(("create_session", handle.id))
        self.handles[handle.id] = handle

    async def handle_message(
        self, handle: PluginHandle, transaction: str, body: dict[str, Any], jsep: Jsep | None
    ) -> PluginResult:
        self.messages.append((handle.id, transaction, body, jsep))
        request = body.get("request")
        if request is None:
            return PluginSuccess({"streaming": "event", "error_code": 453, "error": "Missing mandatory element (request)"})
        if request == "list":
            return PluginSuccess({"streaming": "list", "list": []})
        if request == "watch":
            handle.push_event(transaction, status("preparing"), OFFER)
            return PluginAck()
        if request == "start":
            handle.push_event(transaction, status("starting"))
            return PluginAck()
        if request == "stop":
            handle.push_event(transaction, status("stopping"))
            handle.close_pc()
            return PluginAck()
        if request == "refuse":
            return PluginError("refused")
        if request == "crash":
            raise RuntimeError("plugin bug")
        return PluginSuccess({"streaming": "event", "error_code": 452, "error": f"Unknown request '{request}'"})

    def setup_media(self, handle: PluginHandle) -> None:
        self.calls.append(("setup_media", handle.id))
        handle.push_event(None, status("started"))

    def incoming_rtcp(self, handle: PluginHandle, report: RtcpReport) -> None:
        self.rtcp.append((handle.id, report))

    def hangup_media(self, handle: PluginHandle) -> None:
        self.calls.append(("hangup_media", handle.id))
        if self.tell_stopped:
            handle.push_event(None, status("stopped"))

    def destroy_session(self, handle: PluginHandle) -> None:
        self.calls.append(("destroy_session", handle.id))
        self.handles.pop(handle.id, None)
        if self.tell_stopped:
            handle.push_event(None, status("stopped"))


@dataclass
class FakeEndpoint:
    """The WebRtcEndpoint's interface without a socket: peers are kept, nothing is sent."""

    certificate: DtlsCertificate = field(default_factory=certificate)
    port: int = 10000
    advertised_ips: list[str] = field(default_factory=lambda: ["192.0.2.2"])
    peers: dict[WebRtcPeer, EventHandler] = field(default_factory=dict)
    removed: list[WebRtcPeer] = field(default_factory=list)
    restarted: list[WebRtcPeer] = field(default_factory=list)
    consent_timeout: float = CONSENT_TIMEOUT  # the peers' ICE consent expiry (fanout.ice_consent_timeout)

    ice_tcp: bool = False

    def candidates(self, *, tcp: bool = True) -> list[Candidate]:
        return [host_candidate(index, ip, self.port) for index, ip in enumerate(self.advertised_ips)]

    def tcp_connection(self, address: tuple[str, int]) -> None:
        return None

    def transport_of(self, address: tuple[str, int]) -> str:
        return "udp"

    def add_peer(self, peer: WebRtcPeer, on_event: EventHandler) -> None:
        self.peers[peer] = on_event

    def restart_ice(self, peer: WebRtcPeer) -> None:
        peer.restart_ice()
        self.restarted.append(peer)

    def remove_peer(self, peer: WebRtcPeer) -> None:
        if self.peers.pop(peer, None) is not None:
            peer.close()
            self.removed.append(peer)

    def fileno(self) -> int:
        return -1


@dataclass(frozen=True)
class FakeRtcpReport:
    """The fake engine's RtcpReport: the plain packets it 'read'."""

    packets: list[RtcpPacket]


class FakeEngine:
    """The engine calls the core makes, recorded; RTCP 'unprotect' is the identity
    (or raises, for packets the test marks as bad), reported as the packets parsed."""

    def __init__(self) -> None:
        self.addresses: list[tuple[int, tuple[str, int]]] = []
        self.peers: dict[int, str] = {}  # peer id: SRTP profile
        self.removed_peers: list[int] = []
        self.bad_rtcp: set[bytes] = set()
        self.data_plane_nice = 0  # Admin get_status reports it
        self.data_plane_nice_refused: str | None = None

    def add_peer(self, peer_id: int, address: tuple[str, int], srtp_profile: str, local_master_key: bytes,
                 remote_master_key: bytes, *, tcp_socket_fd: int | None = None) -> None:
        self.addresses.append((peer_id, address))
        if peer_id in self.peers:
            raise ValueError(f"peer {peer_id} already exists")
        self.peers[peer_id] = srtp_profile

    def peer_stats(self, peer_id: int) -> object:
        raise KeyError(peer_id)  # the plugin never subscribed a peer of the stand-in engine

    def remove_peer(self, peer_id: int) -> None:
        if self.peers.pop(peer_id, None) is not None:
            self.removed_peers.append(peer_id)

    def set_peer_address(self, peer_id: int, address: tuple[str, int], *, tcp_socket_fd: int | None = None) -> None:
        if peer_id not in self.peers:
            raise KeyError(peer_id)
        self.addresses.append((peer_id, address))

    def receive_rtcp(self, peer_id: int, packet: bytes) -> FakeRtcpReport:
        if peer_id not in self.peers:
            raise KeyError(peer_id)
        if packet in self.bad_rtcp:
            raise ValueError("authentication failed")
        return FakeRtcpReport(parse_compound(packet))  # RtcpError (a ValueError) if malformed
