"""The door between the Janus core and its plugins.

Mirrors the Janus plugin API in Python terms. The core owns sessions, handles,
transports and the WebRTC transport of each handle (ICE-lite, DTLS-SRTP); a
plugin owns what the handle is for (for the Streaming plugin: which mountpoint
a viewer watches). The core calls a plugin through :class:`Plugin`; a plugin
talks back through the :class:`PluginHandle` it was given.

SDP is split as in Janus: a plugin describes the media it offers
(:class:`LocalOffer`) or answers with (:class:`LocalAnswer`), and the core adds
the transport (ICE credentials, candidates, DTLS fingerprint) when it renders
the SDP. The client's offer or answer is parsed by the core, and its transport
taken, before the plugin sees it (:class:`Jsep`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fanout._engine import RtcpReport
    from fanout.webrtc.sdp import OfferMedia, SessionDescription


@dataclass(frozen=True)
class Jsep:
    """A JSEP object, parsed: the client's, checked by the core before its plugin sees it,
    or the core's own offer or answer as it went to the client."""

    type: str  # "offer" or "answer"
    sdp: str
    description: SessionDescription
    trickle: bool = True


@dataclass(frozen=True)
class LocalOffer:
    """The media a plugin offers; the core renders it to SDP with the transport."""

    media: list[OfferMedia]
    ice_restart: bool = False


@dataclass(frozen=True)
class LocalAnswer:
    """A plugin's answer to the client's offer: for each offered m-line, in order, the
    media the plugin sends on it, or None to reject that m-line."""

    media: list[OfferMedia | None]


LocalDescription = LocalOffer | LocalAnswer


@dataclass(frozen=True)
class PluginSuccess:
    """A synchronous answer: the client gets ``{"janus": "success", "plugindata": ...}``."""

    data: dict[str, Any]


@dataclass(frozen=True)
class PluginAck:
    """The request goes on asynchronously: the client gets ``{"janus": "ack"}`` now and
    an event (``PluginHandle.push_event``) later."""

    hint: str | None = None


@dataclass(frozen=True)
class PluginError:
    """The plugin could not take the message at all (Janus's JANUS_PLUGIN_ERROR):
    the client gets core error 462 (JANUS_ERROR_PLUGIN_MESSAGE) with this reason."""

    reason: str


PluginResult = PluginSuccess | PluginAck | PluginError


@dataclass(frozen=True)
class WebRtcMediaKeys:
    """What the engine needs to serve a handle whose DTLS-SRTP is up."""

    address: tuple[str, int]
    srtp_profile: str
    local_master_key: bytes
    remote_master_key: bytes


class PluginHandle(Protocol):
    """What a plugin may do with a handle the core gave it."""

    @property
    def id(self) -> int: ...

    @property
    def session_id(self) -> int: ...

    @property
    def opaque_id(self) -> str | None: ...

    @property
    def remote_description(self) -> SessionDescription | None:
        """The client's last SDP (answer or offer), parsed."""

    def push_event(
        self, transaction: str | None, data: dict[str, Any], jsep: LocalDescription | None = None
    ) -> None:
        """Send ``{"janus": "event", "plugindata": {"plugin": ..., "data": data}}``,
        with a ``jsep`` offer or answer rendered by the core when one is given."""

    def close_pc(self) -> None:
        """Hang up the handle's PeerConnection: the core frees the WebRTC transport,
        tells the client (``hangup``) and calls ``Plugin.hangup_media``."""

    def send_data(self, data: bytes, *, binary: bool) -> bool:
        """Send one data channel message (as text or binary) on the handle's PeerConnection;
        False if it was dropped (no data channel yet, or the client reads too slowly)."""


class Plugin(abc.ABC):
    """A Janus plugin. The core makes one instance per server."""

    package: str  # e.g. "janus.plugin.streaming"
    name: str
    description: str
    author: str
    version: int
    version_string: str

    async def start(self) -> None:
        """Called once, before the first session."""

    async def stop(self) -> None:
        """Called once at shutdown; free everything."""

    @abc.abstractmethod
    def create_session(self, handle: PluginHandle) -> None:
        """A client attached a handle to this plugin."""

    @abc.abstractmethod
    async def handle_message(
        self, handle: PluginHandle, transaction: str, body: dict[str, Any], jsep: Jsep | None
    ) -> PluginResult:
        """A ``message`` request for this handle."""

    @abc.abstractmethod
    def setup_media(self, handle: PluginHandle) -> None:
        """The handle's PeerConnection is up (ICE and DTLS-SRTP): start media."""

    def incoming_rtcp(self, handle: PluginHandle, report: RtcpReport) -> None:
        """RTCP the client sent (already unprotected and parsed)."""

    def data_ready(self, handle: PluginHandle) -> None:
        """The handle's data channels can carry messages now (``PluginHandle.send_data``)."""

    @abc.abstractmethod
    def hangup_media(self, handle: PluginHandle) -> None:
        """The PeerConnection is gone: stop media, keep the handle."""

    @abc.abstractmethod
    def destroy_session(self, handle: PluginHandle) -> None:
        """The handle is detached: free everything it had."""

    def query_session(self, handle: PluginHandle) -> dict[str, Any]:
        """The plugin's view of a handle, for the Admin API's ``handle_info``."""
        return {}

