"""One WHIP publisher: its WebRTC transport on the shared endpoint, and its link in the engine.

The publisher's ICE-lite and DTLS run as a viewer's do (a :class:`WebRtcPeer` on
the shared endpoint; fanout answers ``passive``, so it is the DTLS server). When
DTLS is up, a socket on the endpoint's own address and port is connected to the
publisher's address (the kernel then hands that address's datagrams to it) and
given to the engine with the SRTP keys and the routes from the SDP
(``attach_publisher``): the engine decrypts the media, feeds the mountpoint's
streams and answers with RTCP; Python never sees a media packet. The STUN consent
checks and DTLS the publisher keeps sending arrive as the engine's
``PublisherDatagram`` events and go back into the endpoint as if read from its
socket (:meth:`WhipPublisher.datagram_received`), so its answers leave from the
same port. Once a second, the publisher's video gets a REMB with the mountpoint's
cap (``whip_bitrate``), so that a browser ramps up to it, or with the lowest estimate
its viewers sent lately when that is lower (a stream that is not simulcast: a simulcast
publisher keeps its cap, viewers take the layer that fits them).

When the publisher goes (DELETE, ICE consent lost, DTLS closed) its link is
detached; the mountpoint and its viewers stay, and the next publisher's link
continues the same streams (the engine treats it as a source restart, viewers
see continuous numbering).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from fanout.plugins.streaming.bitrate_feedback import publisher_bitrate
from fanout.plugins.streaming.mountpoint import SUBSTREAM_INDEX_STRIDE
from fanout.webrtc.peer import AddressChanged, DtlsConnected, IceConnected, PeerClosed, PeerEvent, RtcpReceived, WebRtcPeer
from fanout.webrtc.sdp import Candidate, TransportDescription
from fanout.whip.answer import build_answer, ice_restart_fragment
from fanout.whip.offer import MID_URI, RID_URI, PublisherOffer

if TYPE_CHECKING:
    from fanout._engine import Engine
    from fanout.plugins.streaming.mountpoint import Mountpoint
    from fanout.webrtc.endpoint import WebRtcEndpoint
    from fanout.whep.sdpfrag import SdpFragment

logger = logging.getLogger(__name__)

REMB_INTERVAL = 1.0  # seconds between two REMBs to the publisher
# A publisher whose link is not up this long after its POST no longer holds the
# mountpoint: another may take it; nor does one whose link has been up this long and
# whose streams are all silent (the engine reports a stream silent after 1 s).
CONNECT_GRACE = 10.0
FIRST_PACKET_GRACE = 2.0
SDP_SESSION_ID_LIMIT = 2**62


def new_etag() -> str:
    return f'"{secrets.token_hex(8)}"'


class WhipPublisher:
    """A WHIP resource: made by :meth:`start`, ended by :meth:`stop` or when its
    PeerConnection closes (``on_gone`` is then called)."""

    def __init__(
        self,
        mountpoint: Mountpoint,
        offer: PublisherOffer,
        endpoint: WebRtcEndpoint,
        engine: Engine,
        on_gone: Callable[[WhipPublisher], None],
        viewer_estimate: Callable[[Mountpoint, int], int | None] | None = None,
    ) -> None:
        self.id = secrets.token_urlsafe(16)
        self.etag = new_etag()
        self.mountpoint = mountpoint
        self.offer = offer
        self.endpoint = endpoint
        self.engine = engine
        self._loop = asyncio.get_running_loop()
        self.created = self._loop.time()
        self.peer = WebRtcPeer(endpoint.certificate, self.created, consent_timeout=endpoint.consent_timeout)
        self.address: tuple[str, int] | None = None  # where the link is connected
        self.attached = False
        self.attached_at: float | None = None
        self.stray_rtcp = 0  # RTCP that reached the shared socket instead of the link
        self._keys: DtlsConnected | None = None
        self._on_gone = on_gone
        self._viewer_estimate = viewer_estimate  # (mountpoint, mindex) -> its viewers' lowest estimate
        self._remb: asyncio.Task[None] | None = None
        self._stopped = False
        self._sdp_session_id = secrets.randbelow(SDP_SESSION_ID_LIMIT) + 1
        self._sdp_version = 1

    @property
    def stopped(self) -> bool:
        return self._stopped

    def start(self) -> str:
        """Take the offer (ValueError if the peer refuses it) and return the answer SDP."""
        self.peer.set_remote_description(self.offer.description)
        self.endpoint.add_peer(self.peer, self._on_peer_event)
        return build_answer(
            self.offer, self._transport(), session_id=self._sdp_session_id, session_version=self._sdp_version
        )

    def holds_mountpoint(self) -> bool:
        """Whether this publisher still counts as the mountpoint's (another POST gets 409): its
        link is coming up, or it is up and a stream of it sent lately."""
        if self._stopped:
            return False
        now = self._loop.time()
        if not self.attached:
            return now - self.created < CONNECT_GRACE
        assert self.attached_at is not None
        return now - self.attached_at < FIRST_PACKET_GRACE or not self.mountpoint.silence.all_silent()

    def trickle(self, fragment: SdpFragment) -> None:
        """Candidates the publisher trickled (an ICE-lite server only notes them)."""
        for _, text in fragment.candidates:
            try:
                self.peer.add_remote_candidate(Candidate.parse(text))
            except ValueError as error:
                logger.info("WHIP resource %s: trickled candidate ignored: %s", self.id, error)
        if fragment.end_of_candidates:
            self.peer.add_remote_candidate(None)

    def restart_ice(self, ice_ufrag: str, ice_pwd: str) -> str:
        """An ICE restart (RFC 9725 section 4.3.2): the publisher's new credentials, fanout's
        new ones; returns the sdpfrag body of the answer. The ETag changes."""
        self.endpoint.restart_ice(self.peer)
        description = self.peer.remote_description or self.offer.description
        self.peer.set_remote_description(
            dataclasses.replace(description, ice_ufrag=ice_ufrag, ice_pwd=ice_pwd, candidates=[], end_of_candidates=False)
        )
        self.endpoint.flush(self.peer)
        self.etag = new_etag()
        return ice_restart_fragment(self.offer, self._transport())

    def datagram_received(self, data: bytes) -> None:
        """A STUN or DTLS datagram the engine read on the link: the endpoint answers it."""
        if self.address is not None and not self._stopped:
            self.endpoint.datagram_received(data, self.address)

    def stop(self, reason: str = "deleted") -> None:
        """End the publisher: its PeerConnection is closed and its link detached; viewers stay."""
        if self._stopped:
            return
        self._stopped = True
        logger.info("WHIP publisher %s of mountpoint %s gone: %s", self.id, self.mountpoint.id, reason)
        if self._remb is not None:
            self._remb.cancel()
        self.endpoint.remove_peer(self.peer)
        self._detach()

    # -- the peer's events
    def _on_peer_event(self, peer: WebRtcPeer, event: PeerEvent) -> None:
        if isinstance(event, DtlsConnected):
            self._keys = event
            self._attach(event.address)
        elif isinstance(event, AddressChanged):
            if self._keys is not None:
                self._attach(event.address)
        elif isinstance(event, IceConnected):
            logger.debug("WHIP publisher %s: ICE connected from %s", self.id, event.address)
        elif isinstance(event, RtcpReceived):
            self.stray_rtcp += 1
        elif isinstance(event, PeerClosed):
            self.stop(event.reason)
            self._on_gone(self)

    def _attach(self, address: tuple[str, int]) -> None:
        keys = self._keys
        assert keys is not None
        try:
            link = self.endpoint.connected_socket(address)
        except OSError as error:
            logger.error("WHIP publisher %s: no socket for %s: %s", self.id, address, error)
            self._loop.call_soon(self._fail, "no socket for the link")
            return
        try:
            self.engine.attach_publisher(
                self.mountpoint.engine_id,
                link.fileno(),
                keys.srtp_profile,  # type: ignore[arg-type]
                keys.local_master_key,
                keys.remote_master_key,
                self.offer.routes(),
                mid_extension_id=self.offer.extension_id(MID_URI),
                rid_extension_id=self.offer.extension_id(RID_URI),
            )
        except (KeyError, ValueError, RuntimeError) as error:
            logger.error("WHIP publisher %s: the engine refused the link: %s", self.id, error)
            self._loop.call_soon(self._fail, "the engine refused the link")
            return
        finally:
            link.close()  # the engine has its own duplicate
        self.address = address
        if not self.attached:
            self.attached = True
            self.attached_at = self._loop.time()
            self.mountpoint.publisher_attached = True
            self._remb = self._loop.create_task(self._send_rembs())
        logger.info(
            "WHIP publisher %s feeds mountpoint %s from %s (%s)", self.id, self.mountpoint.id, address, keys.srtp_profile
        )

    def _fail(self, reason: str) -> None:
        if not self._stopped:
            self.stop(reason)
            self._on_gone(self)

    def _detach(self) -> None:
        if not self.attached:
            return
        self.attached = False
        self.mountpoint.publisher_attached = False
        try:
            self.engine.detach_publisher(self.mountpoint.engine_id)
        except RuntimeError:  # the engine closed first (shutdown)
            pass

    async def _send_rembs(self) -> None:
        """Once a second, to the publisher's video: the mountpoint's bitrate cap, or its
        viewers' lowest estimate when lower (not for simulcast, whose layers serve them)."""
        cap = self.mountpoint.config.whip.bitrate if self.mountpoint.config.whip is not None else 0
        streams = {stream.mindex: stream for stream in self.mountpoint.config.streams}
        indexes = self.offer.video_indexes()
        while True:
            for index in indexes:
                stream = streams[index % SUBSTREAM_INDEX_STRIDE]
                lowest = None
                if self._viewer_estimate is not None and not stream.simulcast:
                    lowest = self._viewer_estimate(self.mountpoint, stream.mindex)
                try:
                    self.engine.send_source_remb(self.mountpoint.engine_id, index, publisher_bitrate(cap, lowest))
                except KeyError:  # the mountpoint was destroyed
                    self._fail("the mountpoint was destroyed")
                    return
                except (ValueError, RuntimeError) as error:
                    logger.debug("WHIP publisher %s: no REMB: %s", self.id, error)
            await asyncio.sleep(REMB_INTERVAL)

    def _transport(self) -> TransportDescription:
        return TransportDescription(
            ice_ufrag=self.peer.local_ufrag,
            ice_pwd=self.peer.local_pwd,
            fingerprint=("sha-256", self.endpoint.certificate.fingerprint()),
            setup="passive",
            candidates=self.endpoint.candidates(tcp=False),  # the publisher link is a UDP socket
        )
