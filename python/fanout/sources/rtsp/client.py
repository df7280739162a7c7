"""The RTSP client's state machine, sans-IO (as h11's Connection).

Theory of operation. :meth:`RtspClient.start` queues OPTIONS; every response
given to :meth:`RtspClient.receive_data` moves the client on and queues the
next request, which :meth:`RtspClient.data_to_send` hands out:

    OPTIONS -> DESCRIBE -> (Described event; the caller binds ports and calls
    setup()) -> SETUP per track -> PLAY -> (Playing event) -> PLAYING

SETUP asks for RTP over UDP to the engine's ports (``client_port``), or, with
``interleaved``, for RTP/AVP/TCP on the control connection (``interleaved=<n>-<n+1>``,
RFC 2326 section 10.12): the server's frames then come out of
:meth:`RtspClient.receive_data` as :class:`~fanout.sources.rtsp.messages.InterleavedFrame`
events (or go to the relay given to :meth:`RtspClient.relay_frames_to`),
:attr:`RtspClient.channels` says whose they are, and
:meth:`RtspClient.send_frame` sends RTCP back the same way. A server that takes only
the other lower transport answers SETUP 461 Unsupported Transport
(:class:`RtspRequestError`, ``status`` 461).

In PLAYING, :meth:`RtspClient.keepalive` sends GET_PARAMETER (or OPTIONS, if the
server did not list GET_PARAMETER) within the session timeout, and
:meth:`RtspClient.teardown` ends the session. A 401 is answered once with the
credentials (Digest preferred over Basic); a DESCRIBE that gets 404 is tried
again with the URL's path only when ``quirk`` is set (Janus's rtsp_quirk). Any
other failure raises an :class:`~fanout.sources.rtsp.messages.RtspError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from fanout.sources.rtsp.auth import Challenge, Credentials, RtspAuthError, authorization
from fanout.sources.rtsp.description import Track, base_url, parse_tracks, path_only
from fanout.sources.rtsp.messages import (
    FrameRelay,
    InterleavedFrame,
    ResponseParser,
    RtspError,
    RtspProtocolError,
    RtspRequest,
    RtspResponse,
    header_parameters,
    is_number,
)

USER_AGENT = "fanout"
DEFAULT_SESSION_TIMEOUT = 60  # seconds, RFC 2326 section 12.37
# Answers to a keep-alive that mean "not this method", not "no session": 405 Method Not
# Allowed, 451 Parameter Not Understood, 501 Not Implemented.
KEEPALIVE_REFUSALS = (405, 451, 501)
UNSUPPORTED_TRANSPORT = 461  # RFC 2326 section 7.1.1


class RtspRequestError(RtspError):
    """The server answered a request with an error status."""

    def __init__(self, method: str, url: str, status: int, reason: str) -> None:
        super().__init__(f"{method} {url} answered {status} {reason}".rstrip())
        self.method = method
        self.status = status


class State(enum.Enum):
    IDLE = "idle"
    OPTIONS = "options sent"
    DESCRIBE = "describe sent"
    DESCRIBED = "described"  # waiting for setup()
    SETUP = "setup sent"
    PLAY = "play sent"
    PLAYING = "playing"
    TEARDOWN = "teardown sent"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Described:
    """DESCRIBE answered: the presentation's tracks."""

    tracks: tuple[Track, ...]
    sdp: str


@dataclass(frozen=True, slots=True)
class Playing:
    """PLAY answered: the server sends media to the ports given to setup()."""

    session: str
    timeout: int  # seconds without a request after which the server may end the session


@dataclass(frozen=True, slots=True)
class TransportRequest:
    """What setup() asks for one track: RTP to ``rtp_port``, RTCP to ``rtcp_port``."""

    track: Track
    rtp_port: int
    rtcp_port: int


@dataclass(frozen=True, slots=True)
class Channel:
    """Whose an interleaved channel is: the ``track``-th track set up, RTP or RTCP."""

    track: int
    rtcp: bool


Event = Described | Playing | InterleavedFrame


class RtspClient:
    def __init__(self, url: str, *, credentials: Credentials | None = None, quirk: bool = False) -> None:
        self.url = url
        self.credentials = credentials
        self.quirk = quirk
        self.state = State.IDLE
        self.session: str | None = None
        self.session_timeout = DEFAULT_SESSION_TIMEOUT
        self.server_methods: set[str] = set()
        self.tracks: tuple[Track, ...] = ()  # once described
        self._parser = ResponseParser()
        self._outgoing = bytearray()
        self._cseq = 0
        self._pending: RtspRequest | None = None
        self._pending_extra: tuple[tuple[str, str], ...] = ()  # its method-specific headers, to send it again
        self._authenticated_retry = False
        self._challenges: list[Challenge] = []
        self._nonce_count = 0
        self._describe_url = url
        self._setups: list[TransportRequest] = []
        self._setup_index = 0
        self._presentation_url = url
        self._tried_path_only = False
        self.interleaved = False  # RTP/AVP/TCP on this connection rather than RTP over UDP
        self.channels: dict[int, Channel] = {}  # once set up interleaved

    # --- the caller's side ---------------------------------------------------

    def start(self) -> None:
        self._expect(State.IDLE)
        self._send("OPTIONS", self.url)
        self.state = State.OPTIONS

    def setup(self, transports: list[TransportRequest], *, interleaved: bool = False) -> None:
        """SETUP each track (in order) with its ports, or ``interleaved`` on this
        connection (channels 2i and 2i+1 asked for the i-th), then PLAY."""
        self._expect(State.DESCRIBED)
        if not transports:
            raise ValueError("setup() needs at least one track")
        self.interleaved = interleaved
        self._setups = list(transports)
        self._setup_index = 0
        self._send_setup()
        self.state = State.SETUP

    def keepalive(self) -> None:
        """Keep the session alive (no-op while another request is outstanding)."""
        self._expect(State.PLAYING)
        if self._pending is None:
            method = "GET_PARAMETER" if "GET_PARAMETER" in self.server_methods else "OPTIONS"
            self._send(method, self._presentation_url)

    def teardown(self) -> None:
        """End the session (if one was set up); the client is closed after it."""
        if self.session is not None and self.state not in (State.TEARDOWN, State.CLOSED):
            self._pending = None
            self._send("TEARDOWN", self._presentation_url)
            self.state = State.TEARDOWN
        else:
            self.state = State.CLOSED

    @property
    def keepalive_interval(self) -> float:
        """Seconds between keep-alives: half the session timeout, as most clients do."""
        return max(1.0, self.session_timeout / 2)

    def relay_frames_to(self, relay: FrameRelay | None) -> None:
        """Runs of interleaved frames go to ``relay`` (which sends their packets on) rather
        than out of :meth:`receive_data` as events."""
        self._parser.frame_relay = relay

    def send_frame(self, frame: InterleavedFrame) -> None:
        """Queue an interleaved frame (the engine's RTCP for the server)."""
        self._outgoing += bytes(frame)

    def data_to_send(self) -> bytes:
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for message in self._parser.feed_all(data):
            if isinstance(message, InterleavedFrame):
                events.append(message)
                continue
            event = self._handle(message)
            if event is not None:
                events.append(event)
        return events

    # --- transitions ---------------------------------------------------------

    def _handle(self, response: RtspResponse) -> Event | None:
        request = self._pending
        if request is None or response.cseq != request.cseq:
            if self.state in (State.TEARDOWN, State.CLOSED):
                return None
            raise RtspProtocolError(f"response with CSeq {response.cseq} to no request outstanding")
        self._pending = None
        if response.status == 401 and self.state is not State.TEARDOWN:
            self._answer_challenge(request, response)
            return None
        if self.state is State.TEARDOWN:
            self.state = State.CLOSED
            return None
        if response.status == 404 and self.state is State.DESCRIBE and self.quirk and not self._tried_path_only:
            self._tried_path_only = True
            self._describe_url = path_only(self.url)
            self._send("DESCRIBE", self._describe_url, ("Accept", "application/sdp"))
            return None
        refused = not 200 <= response.status < 300
        if refused and self.state is State.PLAYING and response.status in KEEPALIVE_REFUSALS:
            # A server that does not take this keep-alive method: the other one next time.
            self.server_methods.discard(request.method)
            return None
        if refused and self.state is not State.OPTIONS:  # OPTIONS only tells what the server takes
            raise RtspRequestError(request.method, request.url, response.status, response.reason)
        self._authenticated_retry = False
        if self.state is State.OPTIONS:
            public = response.header("Public") or ""
            self.server_methods = {method.strip().upper() for method in public.split(",") if method.strip()}
            self._send("DESCRIBE", self._describe_url, ("Accept", "application/sdp"))
            self.state = State.DESCRIBE
            return None
        if self.state is State.DESCRIBE:
            return self._described(response)
        if self.state is State.SETUP:
            self._take_session(response)
            self._setup_index += 1
            if self._setup_index < len(self._setups):
                self._send_setup()
                return None
            self._send("PLAY", self._presentation_url, ("Range", "npt=0.000-"))
            self.state = State.PLAY
            return None
        if self.state is State.PLAY:
            self.state = State.PLAYING
            assert self.session is not None
            return Playing(self.session, self.session_timeout)
        return None  # a keep-alive answered

    def _described(self, response: RtspResponse) -> Described:
        content_type = (response.header("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/sdp":
            raise RtspProtocolError(f"DESCRIBE answered with {content_type or 'no Content-Type'}, not application/sdp")
        try:
            sdp = response.body.decode("utf-8")
        except UnicodeDecodeError:
            raise RtspProtocolError("DESCRIBE's SDP is not UTF-8") from None
        request_url = self.url  # relative URLs resolve against the full URL even after the path-only quirk
        base = base_url(request_url, response)
        tracks = parse_tracks(sdp, base)
        self._presentation_url = base
        self.tracks = tuple(tracks)
        self.state = State.DESCRIBED
        return Described(tuple(tracks), sdp)

    def _take_session(self, response: RtspResponse) -> None:
        value = response.header("Session")
        if value is None:
            if self.session is None:
                raise RtspProtocolError("SETUP answered without a Session header")
            return
        session, parameters = header_parameters(value)
        if not session:
            raise RtspProtocolError(f"invalid Session header {value!r}")
        if self.session is not None and session != self.session:
            raise RtspProtocolError(f"the server changed the session from {self.session!r} to {session!r}")
        self.session = session
        timeout = parameters.get("timeout")
        if timeout is not None:
            if not is_number(timeout) or int(timeout) == 0:
                raise RtspProtocolError(f"invalid session timeout in {value!r}")
            self.session_timeout = int(timeout)
        transport = response.header("Transport")
        if transport is None:
            raise RtspProtocolError("SETUP answered without a Transport header")
        over_tcp = "tcp" in transport.split(";")[0].lower()
        if over_tcp != self.interleaved:
            asked = "RTP/AVP/TCP interleaved" if self.interleaved else "RTP over UDP"
            raise RtspProtocolError(f"the server chose the transport {transport!r}, not the {asked} asked for")
        if self.interleaved:
            self._take_channels(transport)

    def _take_channels(self, transport: str) -> None:
        """The channels the server gave the track just set up (those asked for if it did not say)."""
        rtp_channel = 2 * self._setup_index
        rtcp_channel = rtp_channel + 1
        _, parameters = header_parameters(transport)
        value = parameters.get("interleaved")
        if value is not None:
            first, _, second = value.partition("-")
            if not is_number(first) or (second and not is_number(second)):
                raise RtspProtocolError(f"invalid interleaved channels in {transport!r}")
            rtp_channel = int(first)
            rtcp_channel = int(second) if second else rtp_channel + 1
        if max(rtp_channel, rtcp_channel) > 255 or rtp_channel == rtcp_channel:
            raise RtspProtocolError(f"invalid interleaved channels in {transport!r}")
        if rtp_channel in self.channels or rtcp_channel in self.channels:
            raise RtspProtocolError(f"the server gave channels already in use ({transport!r})")
        self.channels[rtp_channel] = Channel(self._setup_index, rtcp=False)
        self.channels[rtcp_channel] = Channel(self._setup_index, rtcp=True)

    def _answer_challenge(self, request: RtspRequest, response: RtspResponse) -> None:
        if self.credentials is None:
            raise RtspAuthError(f"{request.method} {request.url}: the server asks for credentials (401) and none are set")
        if self._authenticated_retry:
            raise RtspAuthError(f"{request.method} {request.url}: the server refused the credentials (401)")
        challenges = [Challenge.parse(value) for value in response.all_headers("WWW-Authenticate")]
        if not challenges:
            raise RtspProtocolError("401 without a WWW-Authenticate header")
        self._challenges = challenges
        self._nonce_count = 0
        self._authenticated_retry = True
        self._send(request.method, request.url, *self._pending_extra)

    # --- requests --------------------------------------------------------------

    def _send_setup(self) -> None:
        transport = self._setups[self._setup_index]
        if self.interleaved:
            channel = 2 * self._setup_index
            header = f"RTP/AVP/TCP;unicast;interleaved={channel}-{channel + 1}"
        else:
            header = f"RTP/AVP;unicast;client_port={transport.rtp_port}-{transport.rtcp_port}"
        self._send("SETUP", transport.track.control_url, ("Transport", header))

    def _send(self, method: str, url: str, *headers: tuple[str, str]) -> None:
        self._cseq += 1
        all_headers = [*headers, ("User-Agent", USER_AGENT)]
        if self.session is not None:
            all_headers.append(("Session", self.session))
        if self._challenges and self.credentials is not None:
            self._nonce_count += 1
            all_headers.append(
                ("Authorization", authorization(self._challenges, self.credentials, method, url, nonce_count=self._nonce_count))
            )
        request = RtspRequest(method, url, self._cseq, tuple(all_headers))
        self._pending = request
        self._pending_extra = headers
        self._outgoing += bytes(request)

    def _expect(self, state: State) -> None:
        if self.state is not state:
            raise RuntimeError(f"RTSP client is {self.state.value}, not {state.value}")
