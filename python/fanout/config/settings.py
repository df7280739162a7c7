"""Typed settings: what fanout takes from janus.jcfg and the transports' files.

Keys are Janus's own (same names, same meaning, same defaults where fanout
has the feature). fanout's own keys live in a ``fanout`` group of janus.jcfg:
``webrtc_port`` (the one UDP port serving every WebRTC viewer) and
``webrtc_interface`` (the address it binds), ``metrics_port`` and
``metrics_interface`` (the Prometheus endpoint, off unless a port is set),
``log_format`` ("text" or "json"), ``engine_cores`` (the cores the engine's
workers run on, e.g. "0,1"; default: one worker per core) and ``engine_pin``
(pin each worker to its core, default true), ``max_viewers`` and ``max_worker_load``
(admission control: past either, a new viewer is refused; both off unless set, see
fanout.plugins.streaming.admission), ``webrtc_receive_buffer`` (bytes asked for the WebRTC
socket's receive buffer, default 8 MiB, 0 = the kernel's default: a burst of consent checks
from every viewer waits there for the control plane), ``ice_consent_timeout`` (seconds a
viewer's or WHIP publisher's ICE consent lasts without a valid check from its address before it
is hung up, default RFC 7675's 30), ``max_send_delay_ms`` (a media packet
that cannot reach a viewer within this long of its arrival is dropped and counted, never
sent late), ``data_plane_nice`` (the nice value the engine's threads take,
default -5: on a core they share with the control plane, a stall of the control plane
delays it, not the media). The limits every HTTP and
WebSocket listener puts on its clients (:class:`ConnectionLimits`) are
fanout keys too. ``webrtc_interface`` defaults to ``general.interface``'s
address when that is set, else to every address.

The keys that only configure a feature while it is off (``admin_port`` with
``admin_http = false``, the certificates without https/wss) are moot and not
reported.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fanout.config.jcfg import ConfigError, Group, Location
from fanout.config.network import address_of_interface, detect_advertised_ips, detect_advertised_ipv6_ips, is_ip_address
from fanout.webrtc.ice import CONSENT_TIMEOUT

DEFAULT_SESSION_TIMEOUT = 60
DEFAULT_RECLAIM_SESSION_TIMEOUT = 0
DEFAULT_CANDIDATES_TIMEOUT = 45
DEFAULT_SERVER_NAME = "fanout"
DEFAULT_WEBRTC_PORT = 10000
DEFAULT_WEBRTC_RECEIVE_BUFFER = 8 << 20  # ~8,000 consent checks of a synchronized burst (a datagram takes ~1 KiB)
DEFAULT_HTTP_PORT = 8088
DEFAULT_WS_PORT = 8188
DEFAULT_HTTPS_PORT = 8089
DEFAULT_ADMIN_PORT = 7088
DEFAULT_ADMIN_HTTPS_PORT = 7889
DEFAULT_WSS_PORT = 8989
DEFAULT_ADMIN_WS_PORT = 7188
DEFAULT_ADMIN_WSS_PORT = 7989
DEFAULT_DEBUG_LEVEL = 4
DEFAULT_STATS_PERIOD = 5
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 200
DEFAULT_WEBSOCKET_MAX_MESSAGE = 1024 * 1024
DEFAULT_WEBSOCKET_MAX_SEND_QUEUE = 4 * 1024 * 1024
LOG_FORMATS = ("text", "json")
JSON_FORMATS = ("indented", "plain", "compact")


@dataclass(frozen=True)
class TlsFiles:
    """A transport file's ``certificates`` group: PEM certificate (chain) and key files."""

    cert_pem: str
    cert_key: str
    cert_pwd: str | None = None
    ciphers: str | None = None


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client may hold of an HTTP or WebSocket listener (janus.jcfg's ``fanout`` group)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT  # seconds from accept (or from a request's first byte) to its headers
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # seconds a kept-alive connection may wait for its next request
    max_connections_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS  # 0: no cap
    websocket_max_message: int = DEFAULT_WEBSOCKET_MAX_MESSAGE  # bytes; a bigger message closes the socket (1009)
    websocket_max_send_queue: int = DEFAULT_WEBSOCKET_MAX_SEND_QUEUE  # bytes of replies a client has not read


@dataclass(frozen=True)
class HttpSettings:
    """janus.transport.http.jcfg: the Janus API (plain and https) and the Admin API (admin_*)."""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = DEFAULT_HTTP_PORT
    base_path: str = "/janus"
    json: str = "indented"
    allow_origin: str | None = None  # None: "*"
    enforce_cors: bool = False
    acl: tuple[str, ...] = ()  # address prefixes allowed ("127.,192.168.0."); empty: everyone
    https: bool = False
    secure_host: str = "0.0.0.0"
    secure_port: int = DEFAULT_HTTPS_PORT
    tls: TlsFiles | None = None
    admin_http: bool = False
    admin_host: str = "0.0.0.0"
    admin_port: int = DEFAULT_ADMIN_PORT
    admin_base_path: str = "/admin"
    admin_https: bool = False
    admin_secure_host: str = "0.0.0.0"
    admin_secure_port: int = DEFAULT_ADMIN_HTTPS_PORT
    admin_acl: tuple[str, ...] = ()
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)


@dataclass(frozen=True)
class WebSocketSettings:
    """janus.transport.websockets.jcfg"""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = DEFAULT_WS_PORT
    json: str = "indented"
    allow_origin: str | None = None
    enforce_cors: bool = False
    acl: tuple[str, ...] = ()  # ws_acl
    wss: bool = False
    wss_host: str = "0.0.0.0"
    wss_port: int = DEFAULT_WSS_PORT
    tls: TlsFiles | None = None
    admin_ws: bool = False
    admin_host: str = "0.0.0.0"
    admin_port: int = DEFAULT_ADMIN_WS_PORT
    admin_wss: bool = False
    admin_wss_host: str = "0.0.0.0"
    admin_wss_port: int = DEFAULT_ADMIN_WSS_PORT
    admin_acl: tuple[str, ...] = ()  # admin_ws_acl
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)


TURN_TYPES = ("udp", "tcp", "tls")
DEFAULT_STUN_PORT = 3478
DEFAULT_TURN_PORT = 3478
DEFAULT_TURN_TTL = 24 * 3600


@dataclass(frozen=True)
class IceServerSettings:
    """janus.jcfg's ``nat`` group's STUN and TURN servers. fanout is ICE-lite and relays nothing
    itself: it hands these servers to viewers (the demo page, WHEP's ``Link`` headers).

    Janus's keys (``stun_server``, ``stun_port``, ``turn_server``, ``turn_port``, ``turn_type``,
    ``turn_user``, ``turn_pwd``) plus fanout's ``turn_secret`` (coturn's ``static-auth-secret``:
    each viewer gets credentials valid for ``turn_ttl`` seconds, minted as coturn's
    ``use-auth-secret`` checks them). ``turn_type`` may list several, "udp,tcp,tls"."""

    stun_server: str | None = None
    stun_port: int = DEFAULT_STUN_PORT
    turn_server: str | None = None
    turn_port: int = DEFAULT_TURN_PORT
    turn_types: tuple[str, ...] = ("udp",)
    turn_user: str | None = None
    turn_pwd: str | None = None
    turn_secret: str | None = None
    turn_ttl: int = DEFAULT_TURN_TTL


DEFAULT_MAX_SEND_DELAY_MS = 100
MAX_SEND_DELAY_MS = 10_000  # the engine's own limit
DEFAULT_DATA_PLANE_NICE = -5  # the engine's threads weigh 3121 to the control plane's 1024 at nice 0


@dataclass(frozen=True)
class Settings:
    """Everything fanout's core and transports take from the configuration."""

    server_name: str = DEFAULT_SERVER_NAME
    session_timeout: int = DEFAULT_SESSION_TIMEOUT  # seconds, 0 = never
    reclaim_session_timeout: int = DEFAULT_RECLAIM_SESSION_TIMEOUT
    candidates_timeout: int = DEFAULT_CANDIDATES_TIMEOUT
    api_secret: str | None = None
    token_auth: bool = False  # stored tokens (added with the Admin API) authorize Janus API requests
    admin_secret: str | None = None
    debug_level: int = DEFAULT_DEBUG_LEVEL  # Janus's 0 (none) .. 7 (everything)
    log_to_stdout: bool = True
    log_to_file: str | None = None  # a path: log lines are appended to that file too
    debug_timestamps: bool = True  # fanout's lines carry a timestamp unless this is set false
    log_format: str = "text"
    broadcast: bool = False  # events.broadcast: event handlers on
    stats_period: int = DEFAULT_STATS_PERIOD  # seconds between media stats events, 0 = none
    disabled_event_handlers: tuple[str, ...] = ()  # events.disable
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # fanout.metrics_port: the Prometheus endpoint, None = off
    interface: str | None = None  # general.interface: the address for SDP
    nat_1_1_mapping: tuple[str, ...] = ()
    ice_servers: IceServerSettings = field(default_factory=IceServerSettings)  # nat.stun_*/turn_*: handed to viewers
    rtp_port_range: tuple[int, int] | None = None
    webrtc_port: int = DEFAULT_WEBRTC_PORT
    webrtc_interface: str = "0.0.0.0"
    webrtc_receive_buffer: int = DEFAULT_WEBRTC_RECEIVE_BUFFER  # fanout.webrtc_receive_buffer, bytes; 0 = the kernel's default
    ipv6: bool = False  # media.ipv6: dual-stack sockets ("::" takes IPv4 too) and IPv6 host candidates
    ice_tcp: bool = False  # nat.ice_tcp: ICE-TCP (RFC 6544, passive candidates) on the WebRTC port's TCP twin
    ice_consent_timeout: float = CONSENT_TIMEOUT  # fanout.ice_consent_timeout: seconds without a valid check, then hung up
    engine_cores: tuple[int, ...] | None = None  # None: one engine worker per core
    engine_pin: bool = True
    max_viewers: int = 0  # fanout.max_viewers: a new viewer is refused past this many; 0 = no limit
    max_worker_load: float = 0.0  # fanout.max_worker_load: ... while the workers' mean busy fraction is above; 0 = no limit
    max_send_delay_ms: int = DEFAULT_MAX_SEND_DELAY_MS  # fanout.max_send_delay_ms: later than this, a packet is dropped
    data_plane_nice: int = DEFAULT_DATA_PLANE_NICE  # fanout.data_plane_nice: the engine receiver's and workers' nice value
    advertised_ips: tuple[str, ...] = ("127.0.0.1",)  # the addresses in our ICE candidates
    http: HttpSettings = field(default_factory=HttpSettings)
    websocket: WebSocketSettings = field(default_factory=WebSocketSettings)
    cluster: ClusterSettings | None = None  # None: standalone, no Redis


DEFAULT_CLUSTER_NAME = "fanout"
DEFAULT_HEARTBEAT_INTERVAL = 1.0
DEFAULT_NODE_TTL = 3.0
DEFAULT_RELAY_LINGER = 10.0
DEFAULT_MAX_LOAD = 0.8
MIN_CLUSTER_SECRET_LENGTH = 16


@dataclass(frozen=True)
class ClusterSettings:
    """janus.jcfg's ``cluster`` group: this node's place in an origin -> edge cluster
    coordinated through Redis. Present only when ``redis_url`` or ``secret`` is set."""

    redis_url: str  # e.g. "redis://127.0.0.1:6379/0"; "": no registry (relay mountpoints configured by hand)
    secret: str  # shared by every node: seals the nodes' messages to each other (relay keys among them)
    node_name: str  # unique in the cluster; default: the host's name
    relay_address: str  # the IP address this node's relays are sent from and received on
    public_url: str  # where viewers reach this node's HTTP transport, e.g. "http://10.0.0.2:8088"
    websocket_url: str | None = None  # where janus.js reaches its WebSocket transport, e.g. "ws://10.0.0.2:8188"
    cluster_name: str = DEFAULT_CLUSTER_NAME  # the Redis keys' prefix: several clusters may share one Redis
    accept_viewers: bool = True  # placement may send viewers here (false: an origin that only ingests)
    max_load: float = DEFAULT_MAX_LOAD  # above this load (0..1) placement sends no new viewer here
    max_viewers: int = 0  # this node's viewer capacity for the load figure; 0: load from worker CPU alone
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL  # seconds between heartbeats
    node_ttl: float = DEFAULT_NODE_TTL  # a node silent this long is gone (its Redis keys expire)
    relay_linger: float = DEFAULT_RELAY_LINGER  # seconds a relay stays after its last viewer leaves


def read_settings(
    janus: Group,
    http: Group | None,
    websockets: Group | None,
    *,
    detect_ips: Callable[[], list[str]] = detect_advertised_ips,
    detect_ipv6_ips: Callable[[], list[str]] = detect_advertised_ipv6_ips,
) -> tuple[Settings, list[str]]:
    """Settings from the parsed files; also the settings that ask for features fanout lacks,
    as ``"<file>: <key> = <value> is not supported by fanout"`` lines."""
    refused: list[str] = []
    general = _group(janus, "general")
    nat = _group(janus, "nat")
    media = _group(janus, "media")
    own = _group(janus, "fanout")
    events = _group(janus, "events")

    session_timeout = _non_negative(general, "session_timeout", DEFAULT_SESSION_TIMEOUT)
    reclaim = _non_negative(general, "reclaim_session_timeout", DEFAULT_RECLAIM_SESSION_TIMEOUT)
    candidates_timeout = _non_negative(general, "candidates_timeout", DEFAULT_CANDIDATES_TIMEOUT)
    if candidates_timeout == 0:
        candidates_timeout = DEFAULT_CANDIDATES_TIMEOUT  # as Janus: 0 is invalid and ignored
    interface = _get_str(general, "interface")
    nat_mapping = tuple(part.strip() for part in (_get_str(nat, "nat_1_1_mapping") or "").split(",") if part.strip())
    for address in nat_mapping:
        if not is_ip_address(address):
            raise _error(nat, "nat_1_1_mapping", f"'{address}' is not an IP address")
    interface_ip = _resolve_address(general, "interface") if interface else None
    if nat_mapping:
        advertised = nat_mapping
    elif interface_ip:
        advertised = (interface_ip,)
    else:
        advertised = tuple(detect_ips())
    ipv6 = _get_bool(media, "ipv6", False)
    _moot(media, ("ipv6_linklocal",))  # fanout never advertises link-local addresses
    if ipv6 and not nat_mapping and not interface_ip:
        advertised += _ipv6_to_advertise(advertised, detect_ipv6_ips())
    any_host = "::" if ipv6 else "0.0.0.0"
    limits = _connection_limits(own)

    rtp_port_range = _port_range(media, "rtp_port_range")
    if rtp_port_range is not None:  # Janus's range for its WebRTC (ICE) ports
        refused.append(
            f'janus.jcfg: media.rtp_port_range = "{media.get_str("rtp_port_range")}" is not used by fanout: every viewer '
            "is served on fanout.webrtc_port (mountpoints' port = 0 take janus.plugin.streaming.jcfg's rtp_port_range)"
        )

    settings = Settings(
        server_name=_get_str(general, "server_name") or DEFAULT_SERVER_NAME,
        session_timeout=session_timeout,
        reclaim_session_timeout=reclaim,
        candidates_timeout=candidates_timeout,
        api_secret=_get_str(general, "api_secret") or None,
        token_auth=_get_bool(general, "token_auth", False),
        admin_secret=_get_str(general, "admin_secret") or None,
        debug_level=_debug_level(general),
        log_to_stdout=_get_bool(general, "log_to_stdout", True),
        log_to_file=_get_str(general, "log_to_file") or None,
        debug_timestamps=_get_bool(general, "debug_timestamps", True),
        log_format=_choice(own, "log_format", LOG_FORMATS, "text"),
        broadcast=_get_bool(events, "broadcast", False),
        stats_period=_non_negative(events, "stats_period", DEFAULT_STATS_PERIOD),
        disabled_event_handlers=_list(events, "disable"),
        metrics_host=_bind_host(own, "metrics_interface", None, "127.0.0.1"),
        metrics_port=_port(own, "metrics_port", 0, allow_zero=True) if own.get_int("metrics_port") is not None else None,
        interface=interface,
        nat_1_1_mapping=nat_mapping,
        ice_servers=_ice_server_settings(nat),
        rtp_port_range=rtp_port_range,
        webrtc_port=_port(own, "webrtc_port", DEFAULT_WEBRTC_PORT, allow_zero=True),
        webrtc_interface=_bind_host(own, "webrtc_interface", None, interface_ip or any_host),
        webrtc_receive_buffer=_non_negative(own, "webrtc_receive_buffer", DEFAULT_WEBRTC_RECEIVE_BUFFER),
        ipv6=ipv6,
        ice_tcp=_ice_tcp(nat),
        ice_consent_timeout=_positive_seconds(own, "ice_consent_timeout", CONSENT_TIMEOUT),
        engine_cores=_cores(own, "engine_cores"),
        engine_pin=_get_bool(own, "engine_pin", True),
        max_viewers=_non_negative(own, "max_viewers", 0),
        max_worker_load=_fraction(own, "max_worker_load"),
        max_send_delay_ms=_send_delay(own, "max_send_delay_ms"),
        data_plane_nice=_nice(own, "data_plane_nice", DEFAULT_DATA_PLANE_NICE),
        advertised_ips=advertised,
        http=_dual_stack(dataclasses.replace(_http_settings(http, refused), limits=limits), ipv6),
        websocket=_dual_stack(dataclasses.replace(_websocket_settings(websockets, refused), limits=limits), ipv6),
        cluster=_cluster_settings(_group(janus, "cluster"), advertised, http),
    )
    return settings, refused


def _cluster_settings(group: Group, advertised: tuple[str, ...], http: Group | None) -> ClusterSettings | None:
    redis_url = _get_str(group, "redis_url") or ""
    secret = _get_str(group, "secret") or ""
    if not redis_url and not secret:
        return None
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise _error(group, "redis_url", f"must be a redis://, rediss:// or unix:// URL, not '{redis_url}'")
    if len(secret) < MIN_CLUSTER_SECRET_LENGTH:
        raise _error(group, "secret", f"must be at least {MIN_CLUSTER_SECRET_LENGTH} characters (it seals the nodes' messages)")
    node_name = _get_str(group, "node_name") or os.uname().nodename
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", node_name):
        raise _error(group, "node_name", f"must be 1 to 64 letters, digits, '_', '.' or '-', not '{node_name}'")
    relay_address = _get_str(group, "relay_address") or (advertised[0] if advertised else "127.0.0.1")
    if not is_ip_address(relay_address):
        raise _error(group, "relay_address", f"must be an IP address, not '{relay_address}'")
    http_general = _group(http, "general") if http is not None else None
    http_port = http_general.get_int("port", DEFAULT_HTTP_PORT) if http_general is not None else DEFAULT_HTTP_PORT
    public_url = (_get_str(group, "public_url") or f"http://{_url_host(relay_address)}:{http_port}").rstrip("/")
    if not public_url.startswith(("http://", "https://")):
        raise _error(group, "public_url", f"must be an http:// or https:// URL, not '{public_url}'")
    websocket_url = _get_str(group, "websocket_url") or None
    if websocket_url is not None and not websocket_url.startswith(("ws://", "wss://")):
        raise _error(group, "websocket_url", f"must be a ws:// or wss:// URL, not '{websocket_url}'")
    max_load = group.get_float("max_load", DEFAULT_MAX_LOAD)
    assert max_load is not None
    if not 0 < max_load <= 1:
        raise _error(group, "max_load", f"must be in (0, 1], not {max_load}")
    heartbeat_interval = _positive_seconds(group, "heartbeat_interval", DEFAULT_HEARTBEAT_INTERVAL)
    node_ttl = _positive_seconds(group, "node_ttl", DEFAULT_NODE_TTL)
    if node_ttl <= heartbeat_interval:
        raise _error(group, "node_ttl", f"must be longer than heartbeat_interval ({heartbeat_interval} s)")
    return ClusterSettings(
        redis_url=redis_url,
        secret=secret,
        node_name=node_name,
        relay_address=relay_address,
        public_url=public_url,
        websocket_url=websocket_url,
        cluster_name=_get_str(group, "cluster_name") or DEFAULT_CLUSTER_NAME,
        accept_viewers=_get_bool(group, "accept_viewers", True),
        max_load=max_load,
        max_viewers=_non_negative(group, "max_viewers", 0),
        heartbeat_interval=heartbeat_interval,
        node_ttl=node_ttl,
        relay_linger=_positive_seconds(group, "relay_linger", DEFAULT_RELAY_LINGER),
    )


def _ipv6_to_advertise(ipv4: tuple[str, ...], ipv6: list[str]) -> tuple[str, ...]:
    """The IPv6 addresses to add to the IPv4 ones: ``::1`` only beside 127.0.0.1 (a host with only ``lo``)."""
    ipv4_is_loopback = all(address.startswith("127.") for address in ipv4)
    return tuple(address for address in ipv6 if address != "::1" or ipv4_is_loopback)


_Listeners = TypeVar("_Listeners", HttpSettings, WebSocketSettings)


def _dual_stack(listeners: _Listeners, ipv6: bool) -> _Listeners:
    """With ``media.ipv6``, listeners left on every IPv4 address ("0.0.0.0") take every IPv6 one
    too ("::", a dual-stack socket)."""
    if not ipv6:
        return listeners
    hosts: dict[str, Any] = {
        item.name: "::"
        for item in dataclasses.fields(listeners)
        if item.name.endswith("host") and getattr(listeners, item.name) == "0.0.0.0"
    }
    return dataclasses.replace(listeners, **hosts)


def _ice_tcp(nat: Group) -> bool:
    """nat.ice_tcp. Janus takes it only with nat.ice_lite; fanout is always an ICE-lite agent, so
    ice_lite is read and needs no value."""
    _moot(nat, ("ice_lite",))
    return _get_bool(nat, "ice_tcp", False)


def _ice_server_settings(nat: Group) -> IceServerSettings:
    turn_server = _get_str(nat, "turn_server") or None
    turn_user = _get_str(nat, "turn_user") or None
    turn_pwd = _get_str(nat, "turn_pwd") or None
    turn_secret = _get_str(nat, "turn_secret") or None
    turn_types = _list(nat, "turn_type") or ("udp",)
    for turn_type in turn_types:
        if turn_type not in TURN_TYPES:
            raise _error(nat, "turn_type", f"must be one or more of {', '.join(TURN_TYPES)}, not \"{turn_type}\"")
    if turn_secret is not None and turn_pwd is not None:
        raise _error(nat, "turn_secret", "and nat.turn_pwd exclude each other: credentials are minted from the secret")
    if turn_server is not None and turn_secret is None and (turn_user is None or turn_pwd is None):
        raise _error(nat, "turn_server", "needs nat.turn_user and nat.turn_pwd, or nat.turn_secret")
    if turn_server is None:
        _moot(nat, ("turn_port", "turn_type", "turn_user", "turn_pwd", "turn_secret", "turn_ttl"))
    stun_server = _get_str(nat, "stun_server") or None
    if stun_server is None:
        _moot(nat, ("stun_port",))
    return IceServerSettings(
        stun_server=stun_server,
        stun_port=_port(nat, "stun_port", DEFAULT_STUN_PORT),
        turn_server=turn_server,
        turn_port=_port(nat, "turn_port", DEFAULT_TURN_PORT),
        turn_types=turn_types,
        turn_user=turn_user,
        turn_pwd=turn_pwd,
        turn_secret=turn_secret,
        turn_ttl=_positive(nat, "turn_ttl", DEFAULT_TURN_TTL),
    )


def _url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _connection_limits(own: Group) -> ConnectionLimits:
    return ConnectionLimits(
        header_timeout=_positive_seconds(own, "header_timeout", DEFAULT_HEADER_TIMEOUT),
        idle_timeout=_positive_seconds(own, "idle_timeout", DEFAULT_IDLE_TIMEOUT),
        max_connections_per_address=_non_negative(own, "max_connections_per_address", DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
        websocket_max_message=_positive(own, "websocket_max_message", DEFAULT_WEBSOCKET_MAX_MESSAGE),
        websocket_max_send_queue=_positive(own, "websocket_max_send_queue", DEFAULT_WEBSOCKET_MAX_SEND_QUEUE),
    )


def _http_settings(root: Group | None, refused: list[str]) -> HttpSettings:
    if root is None:
        return HttpSettings()
    general = _group(root, "general")
    admin = _group(root, "admin")
    cors = _group(root, "cors")
    https = _get_bool(general, "https", False)
    admin_on = _get_bool(admin, "admin_http", False)
    admin_https = _get_bool(admin, "admin_https", False)
    if not https:
        _moot(general, ("secure_port", "secure_interface", "secure_ip"))
    if not admin_on and not admin_https:
        _moot(admin, ("admin_base_path", "admin_acl"))
    if not admin_on:
        _moot(admin, ("admin_port", "admin_interface", "admin_ip"))
    if not admin_https:
        _moot(admin, ("admin_secure_port", "admin_secure_interface", "admin_secure_ip"))
    base_path = _get_str(general, "base_path") or "/janus"
    if not base_path.startswith("/"):
        raise _error(general, "base_path", "must start with '/'")
    admin_base_path = _get_str(admin, "admin_base_path") or "/admin"
    if not admin_base_path.startswith("/"):
        raise _error(admin, "admin_base_path", "must start with '/'")
    return HttpSettings(
        enabled=_get_bool(general, "http", True),
        host=_bind_host(general, "ip", "interface", "0.0.0.0"),
        port=_port(general, "port", DEFAULT_HTTP_PORT),
        base_path=base_path.rstrip("/") or "/",
        json=_json_format(general),
        allow_origin=_get_str(cors, "allow_origin"),
        enforce_cors=_get_bool(cors, "enforce_cors", False),
        acl=_list(general, "acl"),
        https=https,
        secure_host=_bind_host(general, "secure_ip", "secure_interface", "0.0.0.0"),
        secure_port=_port(general, "secure_port", DEFAULT_HTTPS_PORT),
        tls=_tls_files(root, https or admin_https),
        admin_http=admin_on,
        admin_host=_bind_host(admin, "admin_ip", "admin_interface", "0.0.0.0"),
        admin_port=_port(admin, "admin_port", DEFAULT_ADMIN_PORT),
        admin_base_path=admin_base_path.rstrip("/") or "/",
        admin_https=admin_https,
        admin_secure_host=_bind_host(admin, "admin_secure_ip", "admin_secure_interface", "0.0.0.0"),
        admin_secure_port=_port(admin, "admin_secure_port", DEFAULT_ADMIN_HTTPS_PORT),
        admin_acl=_list(admin, "admin_acl"),
    )


def _websocket_settings(root: Group | None, refused: list[str]) -> WebSocketSettings:
    if root is None:
        return WebSocketSettings()
    general = _group(root, "general")
    admin = _group(root, "admin")
    cors = _group(root, "cors")
    wss = _get_bool(general, "wss", False)
    admin_ws = _get_bool(admin, "admin_ws", False)
    admin_wss = _get_bool(admin, "admin_wss", False)
    if not wss:
        _moot(general, ("wss_port", "wss_interface", "wss_ip"))
    if not admin_ws:
        _moot(admin, ("admin_ws_port", "admin_ws_interface", "admin_ws_ip"))
    if not admin_wss:
        _moot(admin, ("admin_wss_port", "admin_wss_interface", "admin_wss_ip"))
    if not admin_ws and not admin_wss:
        _moot(admin, ("admin_ws_acl",))
    return WebSocketSettings(
        enabled=_get_bool(general, "ws", True),
        host=_bind_host(general, "ws_ip", "ws_interface", "0.0.0.0"),
        port=_port(general, "ws_port", DEFAULT_WS_PORT),
        json=_json_format(general),
        allow_origin=_get_str(cors, "allow_origin"),
        enforce_cors=_get_bool(cors, "enforce_cors", False),
        acl=_list(general, "ws_acl"),
        wss=wss,
        wss_host=_bind_host(general, "wss_ip", "wss_interface", "0.0.0.0"),
        wss_port=_port(general, "wss_port", DEFAULT_WSS_PORT),
        tls=_tls_files(root, wss or admin_wss),
        admin_ws=admin_ws,
        admin_host=_bind_host(admin, "admin_ws_ip", "admin_ws_interface", "0.0.0.0"),
        admin_port=_port(admin, "admin_ws_port", DEFAULT_ADMIN_WS_PORT),
        admin_wss=admin_wss,
        admin_wss_host=_bind_host(admin, "admin_wss_ip", "admin_wss_interface", "0.0.0.0"),
        admin_wss_port=_port(admin, "admin_wss_port", DEFAULT_ADMIN_WSS_PORT),
        admin_acl=_list(admin, "admin_ws_acl"),
    )


def _tls_files(root: Group, needed: bool) -> TlsFiles | None:
    """The ``certificates`` group, when https/wss is on (its files must exist)."""
    certificates = _group(root, "certificates")
    keys = ("cert_pem", "cert_key", "cert_pwd", "ciphers")
    if not needed:
        _moot(certificates, keys)
        return None
    pem = _get_str(certificates, "cert_pem")
    key = _get_str(certificates, "cert_key")
    if not pem or not key:
        raise ConfigError(f"{root.file}: certificates.cert_pem and certificates.cert_key are needed for https/wss")
    for name, path in (("cert_pem", pem), ("cert_key", key)):
        if not os.path.isfile(path):
            raise _error(certificates, name, f"names no readable file: {path}")
    return TlsFiles(pem, key, _get_str(certificates, "cert_pwd") or None, _get_str(certificates, "ciphers") or None)


# Helpers: a missing group reads as an empty one.

def _group(root: Group, name: str) -> Group:
    group = root.get_group(name)
    return group if group is not None else Group(name, Location(root.file, 0))


def _get_str(group: Group, key: str) -> str | None:
    return group.get_str(key)


def _get_bool(group: Group, key: str, default: bool) -> bool:
    value = group.get_bool(key, default)
    assert value is not None
    return value


def _error(group: Group, key: str, message: str) -> ConfigError:
    return ConfigError(f"{group.location_of(key)}: {group.key_path(key)} {message}")


def _non_negative(group: Group, key: str, default: int) -> int:
    value = group.get_int(key, default)
    assert value is not None
    if value < 0:
        raise _error(group, key, "must not be negative")
    return value


def _positive(group: Group, key: str, default: int) -> int:
    value = group.get_int(key, default)
    assert value is not None
    if value <= 0:
        raise _error(group, key, f"must be positive, not {value}")
    return value


def _positive_seconds(group: Group, key: str, default: float) -> float:
    value = group.get_float(key, default)
    assert value is not None
    if not 0 < value < float("inf"):
        raise _error(group, key, f"must be a positive number of seconds, not {value}")
    return value


def _send_delay(group: Group, key: str) -> int:
    value = group.get_int(key, DEFAULT_MAX_SEND_DELAY_MS)
    assert value is not None
    if not 1 <= value <= MAX_SEND_DELAY_MS:
        raise _error(group, key, f"must be between 1 and {MAX_SEND_DELAY_MS} milliseconds, not {value}")
    return value


def _nice(group: Group, key: str, default: int) -> int:
    value = group.get_int(key, default)
    assert value is not None
    if not -20 <= value <= 19:
        raise _error(group, key, f"must be a nice value between -20 and 19, not {value}")
    return value


def _fraction(group: Group, key: str) -> float:
    """A load between 0 (exclusive) and 1 (inclusive); 0 (the default) = no limit."""
    value = group.get_float(key, 0.0)
    assert value is not None
    if not 0 <= value <= 1:
        raise _error(group, key, f"must be a fraction of the workers' time between 0 and 1 (e.g. 0.85), not {value}")
    return value


def _port(group: Group, key: str, default: int, *, allow_zero: bool = False) -> int:
    value = group.get_int(key, default)
    assert value is not None
    if not (0 if allow_zero else 1) <= value <= 65535:
        raise _error(group, key, f"must be a port number, not {value}")
    return value


def _cores(group: Group, key: str) -> tuple[int, ...] | None:
    """A list of CPU numbers, "0,2" or "0-3" or a mix; None when unset."""
    text = group.get_str(key)
    if text is None:
        return None
    cores: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise _error(group, key, f'must list CPU numbers like "0,1" or "0-3", not "{text}"')
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        cores.extend(core for core in range(min(first, last), max(first, last) + 1) if core not in cores)
    available = os.sched_getaffinity(0)
    missing = [core for core in cores if core not in available]
    if missing:
        raise _error(group, key, f"names CPU {missing[0]}, which fanout may not run on (it may use {sorted(available)})")
    return tuple(cores)


def _port_range(group: Group, key: str) -> tuple[int, int] | None:
    text = group.get_str(key)
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if match is None:
        raise _error(group, key, f"must be a range like \"20000-40000\", not \"{text}\"")
    low, high = int(match.group(1)), int(match.group(2))
    if low > high:
        low, high = high, low  # as Janus
    if not 1 <= low <= high <= 65535:
        raise _error(group, key, f"must be a range of port numbers, not \"{text}\"")
    return low, high


def _resolve_address(group: Group, key: str) -> str:
    """An IP address as written, or the address of the interface it names."""
    value = group.get_str(key)
    assert value is not None
    if is_ip_address(value):
        return value
    address = address_of_interface(value)
    if address is None:
        raise _error(group, key, f"'{value}' is neither an IP address nor an interface with an IPv4 address")
    return address


def _bind_host(group: Group, ip_key: str, interface_key: str | None, default: str) -> str:
    if group.get_str(ip_key):
        return _resolve_address(group, ip_key)
    if interface_key is not None and group.get_str(interface_key):
        return _resolve_address(group, interface_key)
    return default


def _list(group: Group, key: str) -> tuple[str, ...]:
    """A comma separated list ("127.,192.168.0.")."""
    return tuple(part.strip() for part in (_get_str(group, key) or "").split(",") if part.strip())


def _choice(group: Group, key: str, choices: tuple[str, ...], default: str) -> str:
    value = (_get_str(group, key) or default).lower()
    if value not in choices:
        raise _error(group, key, f"must be one of {', '.join(choices)}, not \"{value}\"")
    return value


def _debug_level(group: Group) -> int:
    value = group.get_int("debug_level", DEFAULT_DEBUG_LEVEL)
    assert value is not None
    if not 0 <= value <= 7:
        raise _error(group, "debug_level", f"must be between 0 and 7, not {value}")
    return value


def _json_format(group: Group) -> str:
    value = (group.get_str("json") or "indented").lower()
    if value not in JSON_FORMATS:
        raise _error(group, "json", f"must be one of {', '.join(JSON_FORMATS)}, not \"{value}\"")
    return value


def _moot(group: Group, keys: tuple[str, ...]) -> None:
    for key in keys:
        group.mark_read(key)
