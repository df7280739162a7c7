"""The STUN and TURN servers fanout hands to viewers, and TURN credentials minted from a shared secret.

fanout is ICE-lite: it gathers no server-reflexive or relayed candidates of its
own. A viewer behind a firewall that lets no UDP through to the server gets to
it through a TURN server, whose relay address is then just another remote
candidate to the server. The servers come from janus.jcfg's ``nat`` group
(:class:`~fanout.config.settings.IceServerSettings`) and reach the viewers as
``RTCIceServer`` dictionaries (the demo page's janus.js) and as WHEP's
``Link: <url>; rel="ice-server"`` headers (RFC 9725 section 4.6).

Time-limited credentials follow the TURN REST API (draft-uberti-behave-turn-rest),
which coturn checks with ``use-auth-secret``: the username is
``"<expiry as Unix time>:<user>"`` and the password is the base64 HMAC-SHA1 of the
username keyed with the shared secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from fanout.config.settings import IceServerSettings

DEFAULT_TURN_USER = "fanout"
_TURN_SCHEMES = {"udp": ("turn", "udp"), "tcp": ("turn", "tcp"), "tls": ("turns", "tcp")}


@dataclass(frozen=True)
class IceServer:
    """One RTCIceServer: its URLs and, for TURN, the credentials."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def as_rtc_ice_server(self) -> dict[str, object]:
        """The dictionary ``RTCPeerConnection``'s ``iceServers`` takes."""
        server: dict[str, object] = {"urls": list(self.urls)}
        if self.username is not None:
            server["username"] = self.username
        if self.credential is not None:
            server["credential"] = self.credential
        return server

    def link_headers(self) -> list[str]:
        """One ``Link`` header value per URL, in RFC 9725's form."""
        parameters = ""
        if self.username is not None and self.credential is not None:
            parameters = (
                f'; username="{_quoted(self.username)}"; credential="{_quoted(self.credential)}"; credential-type="password"'
            )
        return [f'<{url}>; rel="ice-server"{parameters}' for url in self.urls]


def mint_turn_credentials(secret: str, user: str, ttl: int, now: float) -> tuple[str, str]:
    """A username and password valid for ``ttl`` seconds from ``now`` (Unix time), as coturn's
    ``use-auth-secret`` with ``static-auth-secret = secret`` accepts them."""
    username = f"{int(now) + ttl}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(settings: IceServerSettings, now: float) -> list[IceServer]:
    """The servers to hand a viewer at ``now`` (Unix time): STUN first, then TURN with its credentials."""
    servers: list[IceServer] = []
    if settings.stun_server is not None:
        servers.append(IceServer((f"stun:{_url_host(settings.stun_server)}:{settings.stun_port}",)))
    if settings.turn_server is not None:
        host = _url_host(settings.turn_server)
        urls = []
        for turn_type in settings.turn_types:
            scheme, transport = _TURN_SCHEMES[turn_type]
            urls.append(f"{scheme}:{host}:{settings.turn_port}?transport={transport}")
        if settings.turn_secret is not None:
            username, credential = mint_turn_credentials(
                settings.turn_secret, settings.turn_user or DEFAULT_TURN_USER, settings.turn_ttl, now
            )
        else:
            assert settings.turn_user is not None and settings.turn_pwd is not None  # checked by read_settings
            username, credential = settings.turn_user, settings.turn_pwd
        servers.append(IceServer(tuple(urls), username, credential))
    return servers


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def link_header_values(settings: IceServerSettings, now: float) -> list[str]:
    """Every ``Link: <url>; rel="ice-server"`` value (RFC 9725 section 4.6) a WHEP player or a
    WHIP publisher is handed at ``now``, TURN credentials minted afresh."""
    return [link for server in ice_servers(settings, now) for link in server.link_headers()]
