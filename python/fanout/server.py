"""``fanout serve``: everything wired together and run until a signal.

Loads the configuration, opens the WebRTC endpoint and the engine on its
socket, opens the Streaming plugin's mountpoints, starts the built-in test
source for mountpoints that ask for it, then the Janus API transports with
the demo page. Prints ``fanout: ready`` once every port is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import NoReturn

from fanout._engine import Engine, TcpConnectionLost, ViewerRtcp
from fanout.admin.serving import configure_logs, event_bus_for, start_operations
from fanout.cluster.node import ClusterNode
from fanout.cluster.relay import RelayEdge, RelayOrigin
from fanout.cluster.routes import ClusterRoutes
from fanout.cluster.sealed import Sealer
from fanout.config.jcfg import ConfigError
from fanout.config.loader import Config, load_config
from fanout.config.settings import Settings
from fanout.core.gateway import Gateway
from fanout.demo.routes import demo_routes
from fanout.engine_events import EngineEvents, log_peer_events
from fanout.memory import freeze_startup_objects, trim_periodically
from fanout.plugins.streaming.admission import AdmissionLimits
from fanout.plugins.streaming.config import (
    MountpointConfig,
    StreamingSettings,
    mountpoints_from_file,
    streaming_settings_from_file,
)
from fanout.plugins.streaming.plugin import StreamingPlugin
from fanout.sources.testsource import testsource_command
from fanout.transports.http import HttpTransport
from fanout.transports.listeners import limit_resource_error_logs
from fanout.transports.websocket import WebSocketTransport
from fanout.webrtc.endpoint import WebRtcEndpoint
from fanout.whep.routes import WhepService
from fanout.whip.routes import WhipService

logger = logging.getLogger("fanout")

READY_LINE = "fanout: ready"
STREAMING_PACKAGE = "janus.plugin.streaming"
TEST_SOURCE_STOP_TIMEOUT = 5.0
HANGUP_DELIVERY_TIMEOUT = 2.0  # stopping: how long the clients get to take their hangup before the transports close


class StartupError(Exception):
    """fanout cannot start; the message says why and what to change."""


async def serve(config_folder: Path | None) -> None:
    """Run fanout with ``config_folder`` (None: the embedded default) until SIGINT or SIGTERM."""
    try:
        config = load_config(config_folder)
        configure_logs(config.settings)  # first: the mountpoints' checks may log
        streaming_settings, mountpoints = _streaming_configuration(config)
    except ConfigError as error:
        _exit_with(f"fanout: configuration error: {error}")
    except OSError as error:
        path = config.settings.log_to_file
        _exit_with(f"fanout: cannot start: the log file {path} cannot be opened ({error}); set general.log_to_file to a writable path")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    limit_resource_error_logs(loop)
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    try:
        async with _running(config, mountpoints, streaming_settings) as ready_message:
            config.report_unsupported(logger)
            frozen = freeze_startup_objects()
            logger.debug("%d objects of the start kept out of garbage collections", frozen)
            print(f"{READY_LINE}: {ready_message}", flush=True)
            await stop.wait()
            logger.info("stopping")
    except StartupError as error:
        _exit_with(f"fanout: cannot start: {error}")


def _streaming_configuration(config: Config) -> tuple[StreamingSettings, list[MountpointConfig]]:
    """The Streaming plugin's settings and mountpoints (janus.plugin.streaming.jcfg, if any).
    Mountpoints created with ``permanent`` are saved to that file, unless fanout runs its
    embedded default."""
    root = config.plugin_file(STREAMING_PACKAGE)
    file = None if config.embedded else config.folder / f"{STREAMING_PACKAGE}.jcfg"
    settings = StreamingSettings(config_file=file) if root is None else streaming_settings_from_file(root, file)
    if settings.admin_key is None:
        logger.warning(
            "%s: no admin_key: anyone who reaches the Janus API can create mountpoints%s; "
            "set general.admin_key in %s.jcfg",
            STREAMING_PACKAGE, " and save them to the file (permanent)" if file is not None else "", STREAMING_PACKAGE,
        )  # fmt: skip
    return settings, [] if root is None else mountpoints_from_file(root, string_ids=settings.string_ids)


def control_plane_nice() -> int:
    """The nice value of the calling thread (Linux keeps one per thread): the control plane's, on its own."""
    return os.getpriority(os.PRIO_PROCESS, 0)


def data_plane_priority_report(wanted: int, nice: int, refused: str | None, control_plane: int) -> tuple[int, str]:
    """The log level and line that say whether the engine's threads run ahead of the control plane."""
    if refused is not None:
        return logging.WARNING, (
            f"the engine's threads could not take fanout.data_plane_nice = {wanted} ({refused}): they run at nice "
            f"{nice}, level with the control plane, so a stall of the control plane (a full garbage collection, a surge "
            "of joins) on a core they share makes them drop packets late. Allow it: run fanout as root, give it "
            "CAP_SYS_NICE (systemd: AmbientCapabilities=CAP_SYS_NICE; docker: --cap-add=SYS_NICE) or an RLIMIT_NICE "
            f"that allows {wanted} (systemd: LimitNICE={wanted}; limits.conf: nice {wanted}), or start it with "
            f"Nice= or nice(1) and set fanout.data_plane_nice 10 below that"
        )
    if nice >= control_plane:
        return logging.WARNING, (
            f"the engine's threads run at nice {nice}, not below the control plane's {control_plane}: a stall of the "
            "control plane on a core they share can make them drop packets late; set fanout.data_plane_nice "
            f"below {control_plane} (e.g. {max(-20, control_plane - 10)})"
        )
    return logging.INFO, f"the engine's threads run at nice {nice}, ahead of the control plane's {control_plane}"


def _viewer_rtcp(gateway: Gateway, event: ViewerRtcp) -> None:
    """What the engine read in a viewer's RTCP: its handle's plugin hears of it."""
    handle = gateway.handles.get(event.peer_id)
    if handle is not None:
        handle.rtcp_read(event.report)


def _tcp_connection_lost(gateway: Gateway, event: TcpConnectionLost) -> None:
    """The engine gave up on a viewer's ICE-TCP connection (it stopped reading, or it broke): hang up."""
    handle = gateway.handles.get(event.peer_id)
    if handle is not None and handle.peer is not None:
        logger.warning("handle %d: ICE-TCP connection %s, hanging up", event.peer_id, event.reason)
        gateway.endpoint.close_tcp_peer(handle.peer, f"TCP connection {event.reason}")


@contextlib.asynccontextmanager
async def _running(
    config: Config, mountpoints: list[MountpointConfig], streaming_settings: StreamingSettings
) -> AsyncIterator[str]:
    settings = config.settings
    async with contextlib.AsyncExitStack() as stack:
        try:
            endpoint = await WebRtcEndpoint.open(
                settings.webrtc_interface,
                settings.webrtc_port,
                list(settings.advertised_ips),
                receive_buffer=settings.webrtc_receive_buffer,
                ice_tcp=settings.ice_tcp,
                consent_timeout=settings.ice_consent_timeout,
            )
        except OSError as error:
            raise StartupError(
                f"the WebRTC port {settings.webrtc_interface}:{settings.webrtc_port} cannot be bound ({error}); "
                "change fanout.webrtc_port in janus.jcfg"
            ) from None
        stack.callback(endpoint.close)
        trimmer = asyncio.get_running_loop().create_task(trim_periodically())
        stack.callback(trimmer.cancel)
        engine = Engine(
            endpoint.fileno(),
            cores=list(settings.engine_cores) if settings.engine_cores is not None else None,
            pin=settings.engine_pin,
            max_send_delay_ms=settings.max_send_delay_ms,
            data_plane_nice=settings.data_plane_nice,
        )
        stack.callback(engine.close)
        level, message = data_plane_priority_report(
            settings.data_plane_nice, engine.data_plane_nice, engine.data_plane_nice_refused, control_plane_nice()
        )
        logger.log(level, "%s", message)
        engine_events = EngineEvents(engine)
        log_peer_events(engine_events)
        engine_events.start()
        stack.callback(engine_events.stop)  # before the engine closes

        admission = AdmissionLimits(max_viewers=settings.max_viewers, max_worker_load=settings.max_worker_load)
        plugin = StreamingPlugin(engine, mountpoints, streaming_settings, events=engine_events, admission=admission)
        relays = _cluster_relays(settings, mountpoints, plugin, endpoint)
        relay_origin = relays[0] if relays is not None else None
        if relays is not None:
            stack.push_async_callback(relays[1].stop)  # after the plugin's stop: the teardowns it began
        try:
            event_bus = event_bus_for(config)
        except ConfigError as error:
            raise StartupError(f"configuration error: {error}") from None
        gateway = Gateway(settings, engine, endpoint, [plugin], event_bus=event_bus)
        engine_events.subscribe(TcpConnectionLost, functools.partial(_tcp_connection_lost, gateway))
        engine_events.subscribe(ViewerRtcp, functools.partial(_viewer_rtcp, gateway))
        endpoint.read_through(engine.read_webrtc_socket(), engine.take_webrtc_datagrams)
        stack.push_async_callback(event_bus.stop)
        try:
            await gateway.start()
        except OSError as error:
            raise StartupError(
                f"a mountpoint's RTP port cannot be bound ({error}); change it in janus.plugin.streaming.jcfg"
            ) from None
        stack.push_async_callback(gateway.stop)

        for mountpoint in mountpoints:
            if mountpoint.testsource:
                stack.enter_context(_test_source(plugin, mountpoint))

        cluster: ClusterNode | None = None
        if settings.cluster is not None and settings.cluster.redis_url:
            janus_url = settings.cluster.public_url + settings.http.base_path
            cluster = ClusterNode(settings.cluster, plugin, engine, janus_url=janus_url, webrtc_port=endpoint.port)
            await cluster.start()  # Redis down: the node starts alone and joins when it answers
            stack.push_async_callback(cluster.stop)

        client_transports: list[HttpTransport | WebSocketTransport] = []
        websocket_port: int | None = None
        if settings.websocket.enabled or settings.websocket.wss:
            websocket = WebSocketTransport(gateway, settings.websocket)
            await _start_transport("WebSocket", websocket.start, settings.websocket.host, settings.websocket.port)
            stack.push_async_callback(websocket.stop)
            client_transports.append(websocket)
            websocket_port = websocket.port
        page = "no demo page (the HTTP transport is off)"
        if settings.http.enabled or settings.http.https:
            cluster_routes = ClusterRoutes(cluster) if cluster is not None else None
            redirect = cluster_routes.whep_redirect if cluster_routes is not None else None
            whep = WhepService(
                gateway,
                string_ids=streaming_settings.string_ids,
                redirect=redirect,
                ice_server_settings=settings.ice_servers,
            )
            stack.push_async_callback(whep.stop)
            whip = WhipService(plugin, endpoint, engine, engine_events, gateway, settings.ice_servers)
            stack.push_async_callback(whip.stop)
            routes = (
                demo_routes(settings.http.base_path, websocket_port, settings.ice_servers, clustered=cluster is not None)
                + whep.routes()
                + whip.routes()
            )
            if cluster_routes is not None:
                routes += cluster_routes.routes()
            if relay_origin is not None:
                routes += relay_origin.routes()
                stack.callback(relay_origin.close)
            http = HttpTransport(gateway, settings.http, routes)
            await _start_transport("HTTP", http.start, settings.http.host, settings.http.port)
            stack.push_async_callback(http.stop)
            client_transports.append(http)
            page = f"demo page at http://{_browsable(settings.http.host)}:{http.port}/"
        try:
            operations = await start_operations(stack, config, gateway, cluster)
        except OSError as error:
            raise StartupError(f"an Admin API or metrics port cannot be bound ({error})") from None
        stack.push_async_callback(_hang_up_everyone, gateway, client_transports)  # the first thing undone
        clustered = [f"node {cluster.name} of cluster {settings.cluster.cluster_name}"] if cluster and settings.cluster else []
        yield ", ".join([f"{page}, WebRTC on {'UDP and TCP' if endpoint.ice_tcp else 'UDP'} {endpoint.port}, {len(mountpoints)} mountpoint(s)", *operations, *clustered])


def _cluster_relays(
    settings: Settings, mountpoints: list[MountpointConfig], plugin: StreamingPlugin, endpoint: WebRtcEndpoint
) -> tuple[RelayOrigin, RelayEdge] | None:
    """With janus.jcfg's cluster group: this node relays its mountpoints to edges that ask
    (POST /cluster/relay), and pulls its relay mountpoints from their origins."""
    cluster = settings.cluster
    if cluster is None:
        relayed = [str(config.id) for config in mountpoints if config.relay is not None]
        if relayed:
            raise StartupError(
                f"relay mountpoint(s) {', '.join(relayed)} need janus.jcfg's cluster group with the cluster's secret"
            )
        return None
    sealer = Sealer(cluster.secret)
    edge = RelayEdge(
        plugin.engine, sealer, node_name=cluster.node_name, relay_address=cluster.relay_address,
        linger=cluster.relay_linger,
    )  # fmt: skip
    plugin.relay_feeder = edge
    webrtc_host = settings.webrtc_interface
    if ipaddress.ip_address(webrtc_host).is_unspecified:
        webrtc_host = cluster.relay_address
    return RelayOrigin(plugin, endpoint, sealer, (webrtc_host, endpoint.port)), edge


async def _hang_up_everyone(gateway: Gateway, transports: list[HttpTransport | WebSocketTransport]) -> None:
    """Stopping: every viewer's PeerConnection hangs up (a DTLS close_notify, which ends a WHEP
    player too) and the Janus API clients get their ``hangup`` before the transports close.
    WHIP publishers are closed the same way when the WHIP service stops."""
    hung_up = gateway.hang_up_everyone()
    if hung_up:
        logger.info("stopping: %d PeerConnection(s) hung up", hung_up)
    await asyncio.gather(*(transport.deliver_queued_events(HANGUP_DELIVERY_TIMEOUT) for transport in transports))


async def _start_transport(name: str, start: Callable[[], Awaitable[None]], host: str, port: int) -> None:
    try:
        await start()
    except OSError as error:
        raise StartupError(f"the {name} transport cannot listen on {host}:{port} ({error})") from None


@contextlib.contextmanager
def _test_source(plugin: StreamingPlugin, mountpoint: MountpointConfig) -> Iterator[None]:
    """The built-in test source, in its own process, sending to the mountpoint's ports."""
    ports = dict(zip((stream.kind for stream in mountpoint.streams), plugin.mountpoints[mountpoint.id].ports))
    payload_types = {stream.kind: stream.payload_type for stream in mountpoint.streams}
    hosts = {stream.host for stream in mountpoint.streams}
    host = "127.0.0.1" if hosts <= {"0.0.0.0", "127.0.0.1", ""} else hosts.pop()
    command = testsource_command(
        host,
        video_port=ports.get("video", 0),
        audio_port=ports.get("audio", 0),
        video_pt=payload_types.get("video", 96),
        audio_pt=payload_types.get("audio", 111),
    )
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    logger.info("test source (pid %d) feeds mountpoint %s", process.pid, mountpoint.id)
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(TEST_SOURCE_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _browsable(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "localhost"
    return host


def _exit_with(message: str) -> NoReturn:
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(1)
