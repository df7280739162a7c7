"""What happens to a handle, as the core's observers hear it.

A :class:`~fanout.core.handle.Handle` tells its session's observer (the
gateway) each thing that happens to it with one of these frozen events, at the
moment its client is told (the session drops them, as it drops the client's
events, once it has ended). The gateway passes them on to the event handlers
and the metrics; nobody reads the JSON sent to the client back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fanout.core.handle import Handle
    from fanout.core.plugin import Jsep


@dataclass(frozen=True, slots=True)
class JsepReceived:
    """The client's offer or answer, checked and taken (before its plugin sees it)."""

    handle: Handle
    jsep: Jsep


@dataclass(frozen=True, slots=True)
class PluginEventSent:
    """The plugin pushed an event to its client (``{"janus": "event", "plugindata": ...}``)."""

    handle: Handle
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class JsepSent:
    """The offer or answer the core rendered for a plugin's event, as it went to the client."""

    handle: Handle
    jsep: Jsep


@dataclass(frozen=True, slots=True)
class WebRtcUp:
    """ICE and DTLS are up (``webrtcup``). ``join_started`` is when, on the gateway's clock,
    the request that began this PeerConnection came; None if no request began it."""

    handle: Handle
    join_started: float | None


@dataclass(frozen=True, slots=True)
class HungUp:
    """The PeerConnection ended and the client was told why (``hangup``)."""

    handle: Handle
    reason: str


Notification = JsepReceived | PluginEventSent | JsepSent | WebRtcUp | HungUp
