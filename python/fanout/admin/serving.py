"""The operator's side of ``fanout serve``: logs, event handlers, the Admin API's transports, metrics.

server.py calls :func:`configure_logs` and :func:`event_bus_for` before it
makes the Gateway, and :func:`start_operations` once the Janus API
transports run; everything started here is stopped by the exit stack.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from fanout.admin.api import AdminApi
from fanout.admin.logs import LOGS
from fanout.config.loader import Config
from fanout.config.settings import Settings
from fanout.core.gateway import Gateway
from fanout.events.bus import EventBus
from fanout.events.config import event_bus_from_config
from fanout.events.stats import MediaStats
from fanout.metrics.collector import make_registry
from fanout.metrics.endpoint import MetricsEndpoint
from fanout.transports.admin import AdminHttpTransport, AdminWebSocketTransport

if TYPE_CHECKING:
    from fanout.cluster.node import ClusterNode

logger = logging.getLogger(__name__)


def configure_logs(settings: Settings) -> None:
    """``general.debug_level`` (unless ``--log-level`` was given), ``log_to_stdout``, ``log_to_file``,
    ``debug_timestamps`` and ``fanout.log_format``. OSError if the log file cannot be opened."""
    level = LOGS.janus_level if LOGS.explicit else settings.debug_level
    LOGS.configure(
        level,
        settings.log_format,
        to_stdout=settings.log_to_stdout,
        path=settings.log_to_file,
        timestamps=settings.debug_timestamps,
    )


def event_bus_for(config: Config) -> EventBus:
    return event_bus_from_config(config)


async def start_operations(
    stack: contextlib.AsyncExitStack, config: Config, gateway: Gateway, cluster: ClusterNode | None = None
) -> list[str]:
    """Event handlers, media stats, Admin API transports and the metrics endpoint; what runs, in words.
    In a cluster, the Admin API lists its nodes and the metrics carry the node's name.
    Raises OSError when a port cannot be bound."""
    settings = config.settings
    said: list[str] = []
    await gateway.event_bus.start()  # server.py stops it after the Gateway (which says "shutdown")
    if gateway.event_bus.handlers:
        said.append(f"{len(gateway.event_bus.handlers)} event handler(s)")
    stats = MediaStats(gateway, settings.stats_period)
    stats.start()
    stack.push_async_callback(stats.stop)
    admin = AdminApi(gateway, bytes_lastsec=lambda: stats.bytes_lastsec, cluster=cluster)
    http = AdminHttpTransport(admin, settings.http)
    if http.listeners:
        await http.start()
        stack.push_async_callback(http.stop)
        said.append(f"Admin API on HTTP port {http.port or http.secure_port}")
    websocket = AdminWebSocketTransport(admin, settings.websocket)
    if websocket.listeners:
        await websocket.start()
        stack.push_async_callback(websocket.stop)
        said.append(f"Admin API on WebSocket port {websocket.port or websocket.secure_port}")
    registry, _ = make_registry(gateway, cluster)
    if settings.metrics_port is not None:
        endpoint = MetricsEndpoint(registry, settings.metrics_host, settings.metrics_port)
        await endpoint.start()
        stack.push_async_callback(endpoint.stop)
        said.append(f"metrics at http://{settings.metrics_host}:{endpoint.port}/metrics")
    return said
