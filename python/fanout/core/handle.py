"""A handle: a client's attachment to a plugin, and the WebRTC transport it owns.

The plugin describes the media it offers; the handle creates the WebRTC
transport (a :class:`~fanout.webrtc.peer.WebRtcPeer` on the shared endpoint),
renders the SDP offer, takes the client's answer and trickled candidates, and
turns the peer's events into Janus events (``webrtcup``, ``hangup``) and
plugin calls (``setup_media``, ``incoming_rtcp``, ``hangup_media``).

The handle owns what is known about it: when it was made, the last SDP each
side sent (text and parsed, :attr:`Handle.local_jsep` and
:attr:`Handle.remote_jsep`), and it tells its session's observer what happens
to it (:mod:`fanout.core.notifications`).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fanout.config.settings import DEFAULT_CANDIDATES_TIMEOUT
from fanout.core import events
from fanout.core.errors import JanusError, JanusErrorCode
from fanout.core.notifications import HungUp, JsepReceived, JsepSent, PluginEventSent, WebRtcUp
from fanout.core.plugin import Jsep, LocalAnswer, LocalDescription, LocalOffer, Plugin, WebRtcMediaKeys
from fanout.webrtc import sdp
from fanout.webrtc.peer import (
    AddressChanged,
    DataChannelsReady,
    DtlsConnected,
    IceConnected,
    PeerClosed,
    PeerEvent,
    RtcpReceived,
    WebRtcPeer,
)

if TYPE_CHECKING:
    from fanout._engine import Engine, RtcpReport
    from fanout.core.session import Session
    from fanout.webrtc.endpoint import TcpConnection, WebRtcEndpoint

logger = logging.getLogger(__name__)

Errors = JanusErrorCode
HANGUP_JANUS_API = "Janus API"
HANGUP_CLOSE_PC = "Close PC"
HANGUP_DETACH = "Detach"
HANGUP_SHUTDOWN = "Shutdown"  # fanout stops (SIGTERM, SIGINT): every viewer is told
SDP_SESSION_ID_LIMIT = 2**62
SDP_PROCESSING_ERROR = "Error processing SDP"


class Handle:
    """One plugin handle of a session (the core side of :class:`fanout.core.plugin.PluginHandle`)."""

    def __init__(
        self,
        handle_id: int,
        session: Session,
        plugin: Plugin,
        opaque_id: str | None,
        *,
        endpoint: WebRtcEndpoint,
        engine: Engine,
        clock: Callable[[], float],
        created: float,
        candidates_timeout: float = DEFAULT_CANDIDATES_TIMEOUT,
    ) -> None:
        """``clock`` is the WebRTC peers' clock; ``created`` is on the gateway's."""
        self._id = handle_id
        self.session = session
        self.plugin = plugin
        self._opaque_id = opaque_id
        self.endpoint = endpoint
        self.engine = engine
        self.clock = clock
        self.peer: WebRtcPeer | None = None
        self.offer_pending = False  # an offer went out and its answer has not come back
        self.detached = False
        self.rtcp_dropped = 0
        self.created = created
        # when (on the gateway's clock) the request that began the coming PeerConnection came
        self.join_started: float | None = None
        # the last SDP each side sent, kept after a hangup (the Admin API's handle_info shows them)
        self.local_jsep: Jsep | None = None
        self.remote_jsep: Jsep | None = None
        self._media_keys: WebRtcMediaKeys | None = None
        self._remote_description: sdp.SessionDescription | None = None
        self._early_trickles: list[tuple[float, dict[str, Any]]] = []  # (when it came, the request)
        self.candidates_timeout = candidates_timeout  # seconds early trickles wait for the SDP
        self._sdp_session_id = 0
        self._sdp_version = 0

    # -- PluginHandle
    @property
    def id(self) -> int:
        return self._id

    @property
    def session_id(self) -> int:
        return self.session.id

    @property
    def opaque_id(self) -> str | None:
        return self._opaque_id

    @property
    def media_keys(self) -> WebRtcMediaKeys | None:
        return self._media_keys

    @property
    def remote_description(self) -> sdp.SessionDescription | None:
        return self._remote_description

    def push_event(
        self, transaction: str | None, data: dict[str, Any], jsep: LocalDescription | None = None
    ) -> None:
        if self.detached:  # as in Janus: a plugin's events while (or after) its handle goes are not sent
            logger.debug("handle %d: %s pushed an event after detach; dropped", self.id, self.plugin.package)
            return
        sent: Jsep | None = None
        if isinstance(jsep, LocalOffer):
            sent = _outgoing_jsep("offer", self._make_offer(jsep))
        elif isinstance(jsep, LocalAnswer):
            sent = _outgoing_jsep("answer", self._make_answer(jsep))
        rendered = None if sent is None else {"type": sent.type, "sdp": sent.sdp}
        self.session.send_event(
            events.plugin_event(self.session.id, self.id, self.plugin.package, data, transaction=transaction, jsep=rendered)
        )
        self.session.notify(PluginEventSent(self, data))
        if sent is not None:
            self.local_jsep = sent
            self.session.notify(JsepSent(self, sent))

    def note_join_request(self, now: float) -> None:
        """A request came while the handle has no PeerConnection: the join that the metrics
        time to ``webrtcup`` starts ``now`` (gateway clock), unless an earlier request began it."""
        if self.peer is None and self.join_started is None:
            self.join_started = now

    def close_pc(self) -> None:
        self.hangup(HANGUP_CLOSE_PC, notify=True)

    def send_data(self, data: bytes, *, binary: bool) -> bool:
        peer = self.peer
        if peer is None:
            return False
        sent = peer.send_data(data, self.clock(), binary=binary)
        if sent:
            self.endpoint.flush(peer)
        return sent

    # -- the offer
    def _make_offer(self, offer: LocalOffer) -> str:
        if self.peer is not None and offer.ice_restart:
            self.endpoint.restart_ice(self.peer)
        peer = self._ensure_peer()
        self.offer_pending = True
        return sdp.build_offer(
            offer.media,
            self._transport(peer, "actpass"),
            session_id=self._sdp_session_id,
            session_version=self._next_sdp_version(),
        )

    def _make_answer(self, answer: LocalAnswer) -> str:
        if self.peer is None or self._remote_description is None:
            raise RuntimeError(f"handle {self.id}: an answer without the client's offer")
        setup = "active" if self._remote_description.setup == "passive" else "passive"
        return sdp.build_answer(
            self._remote_description,
            answer.media,
            self._transport(self.peer, setup),
            session_id=self._sdp_session_id,
            session_version=self._next_sdp_version(),
        )

    def _ensure_peer(self) -> WebRtcPeer:
        if self.peer is None:
            self.peer = WebRtcPeer(self.endpoint.certificate, self.clock(), consent_timeout=self.endpoint.consent_timeout)
            self.endpoint.add_peer(self.peer, self.on_peer_event)
            self._sdp_session_id = secrets.randbelow(SDP_SESSION_ID_LIMIT) + 1
            self._sdp_version = 0
        return self.peer

    def _next_sdp_version(self) -> int:
        self._sdp_version += 1
        return self._sdp_version

    def _transport(self, peer: WebRtcPeer, setup: str) -> sdp.TransportDescription:
        return sdp.TransportDescription(
            ice_ufrag=peer.local_ufrag,
            ice_pwd=peer.local_pwd,
            fingerprint=("sha-256", self.endpoint.certificate.fingerprint()),
            setup=setup,
            candidates=self.endpoint.candidates(),
        )

    # -- the client's JSEP
    def take_jsep(self, jsep: Any) -> Jsep:
        """Check a ``message``'s ``jsep`` as Janus does; an answer goes to the peer. Raises JanusError."""
        if not isinstance(jsep, dict):
            raise JanusError(Errors.INVALID_JSON_OBJECT, "Invalid jsep object")
        kind = _jsep_field(jsep, "type", str, "a string")
        text = _jsep_field(jsep, "sdp", str, "a string")
        trickle = jsep.get("trickle", True)
        if not isinstance(trickle, bool):
            raise JanusError(Errors.INVALID_ELEMENT_TYPE, "JSEP error: invalid element type (trickle should be a boolean)")
        kind_lower = kind.lower()
        if kind_lower not in ("offer", "answer"):
            raise JanusError(Errors.JSEP_UNKNOWN_TYPE, f"JSEP error: unknown message type '{kind}'")
        _check_sdp_syntax(text)
        if kind_lower == "answer" and self.peer is None:
            raise JanusError(Errors.UNEXPECTED_ANSWER, "Unexpected ANSWER (did we offer?)")
        description = self._process_sdp(text)
        peer = self._ensure_peer()  # an offer from the client makes the peer, an answer finds ours
        try:
            peer.set_remote_description(description)
        except ValueError as error:
            logger.info("handle %d: %s refused: %s", self.id, kind_lower, error)
            raise JanusError(Errors.JSEP_INVALID_SDP, SDP_PROCESSING_ERROR) from error
        self.offer_pending = False
        self._remote_description = description
        for trickle_request in self._take_early_trickles():
            try:
                self._apply_trickle(trickle_request)
            except JanusError as error:
                logger.info("handle %d: early trickle dropped: %s", self.id, error.reason)
        self.remote_jsep = Jsep(type=kind_lower, sdp=text, description=description, trickle=trickle)
        self.session.notify(JsepReceived(self, self.remote_jsep))
        return self.remote_jsep

    def _process_sdp(self, text: str) -> sdp.SessionDescription:
        """The client's SDP parsed for its transport; Janus's codes when it lacks one."""
        attributes = {line.split(":", 1)[0] for line in _sdp_lines(text) if line.startswith("a=")}
        if not {"a=ice-ufrag", "a=ice-pwd"} <= attributes:
            raise JanusError(Errors.JSEP_INVALID_SDP, SDP_PROCESSING_ERROR)
        if "a=fingerprint" not in attributes:
            raise JanusError(Errors.UNEXPECTED_ANSWER, SDP_PROCESSING_ERROR)  # sic: Janus's code for this
        try:
            return sdp.parse_description(text)
        except sdp.SdpError as error:
            logger.info("handle %d: SDP refused: %s", self.id, error)
            raise JanusError(Errors.JSEP_INVALID_SDP, SDP_PROCESSING_ERROR) from error

    # -- trickle
    def trickle(self, request: dict[str, Any]) -> None:
        """A ``trickle`` request: kept until the answer arrives, then checked as Janus does."""
        if "candidate" not in request and "candidates" not in request:
            raise JanusError(Errors.MISSING_MANDATORY_ELEMENT, "Missing mandatory element (candidate|candidates)")
        if "candidate" in request and "candidates" in request:
            raise JanusError(Errors.INVALID_JSON, "Can't have both candidate and candidates")
        if self._remote_description is None:
            self._early_trickles.append((self.clock(), request))
            return
        self._apply_trickle(request)

    @property
    def pending_trickles(self) -> int:
        """Trickled candidates waiting for the SDP they belong to (those older than ``candidates_timeout`` included)."""
        return len(self._early_trickles)

    def _take_early_trickles(self) -> list[dict[str, Any]]:
        """The trickles that waited for the SDP, but those that waited ``candidates_timeout`` or
        longer: as Janus, those are dropped (when the SDP comes, not before); none wait now."""
        now = self.clock()
        early, self._early_trickles = self._early_trickles, []
        fresh = [request for at, request in early if now - at < self.candidates_timeout]
        if len(fresh) < len(early):
            logger.info(
                "handle %d: %d trickled candidate(s) dropped: they waited more than candidates_timeout (%g s) for the SDP",
                self.id, len(early) - len(fresh), self.candidates_timeout,
            )
        return fresh

    def _apply_trickle(self, request: dict[str, Any]) -> None:
        if "candidates" in request:
            candidates = request["candidates"]
            if not isinstance(candidates, list):
                raise JanusError(Errors.INVALID_ELEMENT_TYPE, "candidates is not an array")
            for candidate in candidates:
                try:
                    self._add_candidate(candidate)
                except JanusError as error:
                    logger.info("handle %d: trickled candidate ignored: %s", self.id, error.reason)
            return
        self._add_candidate(request.get("candidate"))

    def _add_candidate(self, candidate: Any) -> None:
        if not isinstance(candidate, dict):
            logger.info("handle %d: trickled candidate is not an object; ignored", self.id)
            return
        if "completed" in candidate:
            if candidate["completed"] is True:
                self._give_peer_candidate(None)
            return
        if "sdpMid" not in candidate and "sdpMLineIndex" not in candidate:
            raise JanusError(
                Errors.MISSING_MANDATORY_ELEMENT, "Trickle error: missing mandatory element (sdpMid or sdpMLineIndex)"
            )
        if "sdpMid" in candidate and not isinstance(candidate["sdpMid"], str):
            raise JanusError(Errors.INVALID_ELEMENT_TYPE, "Trickle error: invalid element type (sdpMid should be a string)")
        if "sdpMLineIndex" in candidate and not _is_index(candidate["sdpMLineIndex"]):
            raise JanusError(
                Errors.INVALID_ELEMENT_TYPE, "Trickle error: invalid element type (sdpMLineIndex should be a positive integer)"
            )
        if "candidate" not in candidate:
            raise JanusError(Errors.MISSING_MANDATORY_ELEMENT, "Trickle error: missing mandatory element (candidate)")
        text = candidate["candidate"]
        if not isinstance(text, str):
            raise JanusError(Errors.INVALID_ELEMENT_TYPE, "Trickle error: invalid element type (candidate should be a string)")
        if text == "":
            self._give_peer_candidate(None)
            return
        try:
            parsed = sdp.Candidate.parse(text)
        except sdp.SdpError as error:
            logger.info("handle %d: unusable trickled candidate: %s", self.id, error)
            return
        self._give_peer_candidate(parsed)

    def _give_peer_candidate(self, candidate: sdp.Candidate | None) -> None:
        if self.peer is not None:
            self.peer.add_remote_candidate(candidate)

    # -- the peer's events
    def on_peer_event(self, peer: WebRtcPeer, event: PeerEvent) -> None:
        if peer is not self.peer:
            return
        if isinstance(event, DtlsConnected):
            if self._media_keys is None:  # the engine's peer lives from the first DTLS up to hangup
                self._add_engine_peer(event)
            self._media_keys = WebRtcMediaKeys(
                address=event.address,
                srtp_profile=event.srtp_profile,
                local_master_key=event.local_master_key,
                remote_master_key=event.remote_master_key,
            )
            logger.info("handle %d: WebRTC up (%s, %s)", self.id, event.address, event.srtp_profile)
            self.session.send_event(events.webrtcup(self.session.id, self.id))
            join_started, self.join_started = self.join_started, None
            self.session.notify(WebRtcUp(self, join_started))
            self._call_plugin("setup_media", self.plugin.setup_media, self)
        elif isinstance(event, RtcpReceived):
            self._receive_rtcp(event.packet)
        elif isinstance(event, AddressChanged):
            if self._media_keys is not None:
                self._media_keys = dataclasses.replace(self._media_keys, address=event.address)
            connection = self.endpoint.tcp_connection(event.address)
            try:
                self.engine.set_peer_address(
                    self.id, event.address, tcp_socket_fd=connection.fileno() if connection is not None else None
                )
            except KeyError:
                return
            except ValueError as error:
                logger.error("handle %d: the engine refused the new address: %s", self.id, error)
                return
            self._hand_over(connection)
        elif isinstance(event, PeerClosed):
            logger.info("handle %d: PeerConnection closed: %s", self.id, event.reason)
            self.hangup(event.reason, notify=True)
        elif isinstance(event, DataChannelsReady):
            logger.debug("handle %d: data channels ready", self.id)
            self._call_plugin("data_ready", self.plugin.data_ready, self)
        elif isinstance(event, IceConnected):
            logger.debug("handle %d: ICE connected from %s", self.id, event.address)

    def _add_engine_peer(self, keys: DtlsConnected) -> None:
        """The engine learns the peer's keys and address: it can take its RTCP, and the plugin
        can subscribe it to media."""
        connection = self.endpoint.tcp_connection(keys.address)  # ICE-TCP: the engine writes to it from now on
        try:
            self.engine.add_peer(
                self.id, keys.address, keys.srtp_profile, keys.local_master_key, keys.remote_master_key,  # type: ignore[arg-type]
                tcp_socket_fd=connection.fileno() if connection is not None else None,
            )  # fmt: skip
        except (ValueError, RuntimeError) as error:
            logger.error("handle %d: the engine refused the peer: %s", self.id, error)
            return
        self._hand_over(connection)

    def _hand_over(self, connection: TcpConnection | None) -> None:
        if connection is not None:
            connection.hand_over(lambda packet: self.engine.send_tcp_frame(self.id, packet))

    def _receive_rtcp(self, packet: bytes) -> None:
        """SRTCP the endpoint read (before the engine reads the socket, or over ICE-TCP)."""
        try:
            report = self.engine.receive_rtcp(self.id, packet)  # the engine reads and acts on it
        except (KeyError, ValueError) as error:
            self.rtcp_dropped += 1
            logger.debug("handle %d: RTCP dropped: %s", self.id, error)
            return
        self.rtcp_read(report)

    def rtcp_read(self, report: RtcpReport) -> None:
        """The engine read the peer's RTCP (and answered its NACKs, forwarded its PLIs): the plugin hears."""
        self._call_plugin("incoming_rtcp", self.plugin.incoming_rtcp, self, report)

    # -- ending
    def hangup(self, reason: str, *, notify: bool) -> bool:
        """Free the WebRTC transport; the plugin hears ``hangup_media``, the client (if ``notify``)
        a ``hangup`` event. False if there was none."""
        if self.peer is None:
            return False
        self._drop_peer()
        self._early_trickles = []
        self._remote_description = None
        self.offer_pending = False
        self.join_started = None
        self._call_plugin("hangup_media", self.plugin.hangup_media, self)
        if notify and not self.detached:
            self.session.send_event(events.hangup(self.session.id, self.id, reason))
            self.session.notify(HungUp(self, reason))
        return True

    def _drop_peer(self) -> None:
        peer, self.peer = self.peer, None
        if peer is not None:
            self.endpoint.remove_peer(peer)
        if self._media_keys is not None:
            self._remove_engine_peer()
        self._media_keys = None

    def _remove_engine_peer(self) -> None:
        try:
            self.engine.remove_peer(self.id)
        except RuntimeError:  # the engine closed first (shutdown)
            pass

    def detach(self, *, notify: bool) -> None:
        """The handle goes: its WebRTC transport hangs up silently, the client gets ``detached``
        (if ``notify``: a ``detach`` request, not a session's end), and the plugin frees its state;
        what the plugin pushes meanwhile is not sent."""
        if self.detached:
            return
        self.detached = True
        self.hangup(HANGUP_DETACH, notify=False)
        if notify:
            self.session.send_event(events.detached(self.session.id, self.id))
        self._call_plugin("destroy_session", self.plugin.destroy_session, self)

    def _call_plugin(self, name: str, method: Callable[..., Any], *args: Any) -> None:
        try:
            method(*args)
        except Exception:
            logger.exception("handle %d: %s.%s failed", self.id, self.plugin.package, name)


def _outgoing_jsep(kind: str, text: str) -> Jsep:
    """The core's own offer or answer, read back into the one SDP model."""
    return Jsep(type=kind, sdp=text, description=sdp.parse_description(text))


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _sdp_lines(text: str) -> list[str]:
    return [line.rstrip("\r") for line in text.split("\n") if line.rstrip("\r")]


def _check_sdp_syntax(text: str) -> None:
    """Janus's first look at a client's SDP, before it checks that an answer was expected:
    the lines' form and the mandatory ones, with Janus's texts."""
    if not text.startswith("v="):
        raise JanusError(Errors.JSEP_INVALID_SDP, "Invalid SDP (doesn't start with v=)")
    kinds = set()
    for line in _sdp_lines(text):
        if line[1:2] != "=":
            raise JanusError(Errors.JSEP_INVALID_SDP, f"Invalid line (2nd char is not '='): {line}")
        if line[0] == "m":
            fields = line[2:].split()
            if len(fields) < 3 or not fields[1].split("/")[0].isdigit():
                raise JanusError(Errors.JSEP_INVALID_SDP, f"Invalid m= line: {line}")
        kinds.add(line[0])
    if not {"o", "s", "m"} <= kinds:
        raise JanusError(Errors.JSEP_INVALID_SDP, "Missing mandatory lines (o=, s= or m=)")


def _jsep_field(jsep: dict[str, Any], key: str, kind: type, described: str) -> Any:
    """A field of a ``jsep`` object, as Janus checks it: absent is missing, null is of the wrong type."""
    if key not in jsep:
        raise JanusError(Errors.MISSING_MANDATORY_ELEMENT, f"JSEP error: missing mandatory element ({key})")
    value = jsep[key]
    if not isinstance(value, kind):
        raise JanusError(Errors.INVALID_ELEMENT_TYPE, f"JSEP error: invalid element type ({key} should be {described})")
    return value
