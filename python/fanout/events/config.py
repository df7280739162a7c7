"""Event handlers from Janus's files: ``events`` in janus.jcfg (``broadcast``, ``disable``,
``stats_period``) and janus.eventhandler.sampleevh.jcfg / janus.eventhandler.wsevh.jcfg
(``enabled``, ``events``, ``grouping``, ``json``, ``backend``, ...)."""

from __future__ import annotations

from fanout.config.jcfg import ConfigError, Group
from fanout.config.loader import Config
from fanout.events.bus import EventBus, EventHandler
from fanout.events.http import HttpBackend, HttpEventHandler
from fanout.events.queue import DEFAULT_QUEUE_SIZE
from fanout.events.types import parse_mask
from fanout.events.websocket import WebSocketBackend, WebSocketEventHandler

SAMPLE = "janus.eventhandler.sampleevh"
WEBSOCKETS = "janus.eventhandler.wsevh"
LIBRARIES = {SAMPLE: "libjanus_sampleevh.so", WEBSOCKETS: "libjanus_wsevh.so"}


def event_bus_from_config(config: Config) -> EventBus:
    """The event handlers the folder enables (none unless ``events.broadcast`` is true)."""
    settings = config.settings
    handlers: list[EventHandler] = []
    for package in (SAMPLE, WEBSOCKETS):
        root = config.plugin_file(package)
        if root is None:
            continue
        general = root.get_group("general") or Group("general", root.location)
        enabled = bool(general.get_bool("enabled", False))
        wanted = settings.broadcast and enabled and LIBRARIES[package] not in settings.disabled_event_handlers
        if not wanted:
            for key in list(general):
                general.mark_read(key)
            continue
        handlers.append(_handler(package, general))
    return EventBus(settings.server_name, handlers)


def _handler(package: str, general: Group) -> EventHandler:
    backend = general.get_str("backend")
    if not backend:
        raise ConfigError(f"{general.location_of('backend')}: general.backend is needed")
    try:
        mask = parse_mask(general.get_str("events") or "all")
    except ValueError as error:
        raise ConfigError(f"{general.location_of('events')}: general.events: {error}") from None
    grouping = bool(general.get_bool("grouping", True))
    style = (general.get_str("json") or "indented").lower()
    queue_size = general.get_int("queue_size", DEFAULT_QUEUE_SIZE) or DEFAULT_QUEUE_SIZE
    general.mark_read("enabled")
    if package == SAMPLE:
        return HttpEventHandler(
            HttpBackend(
                url=backend,
                mask=mask,
                grouping=grouping,
                json=style,
                user=general.get_str("backend_user"),
                password=general.get_str("backend_pwd"),
                max_retransmissions=general.get_int("max_retransmissions", 5) or 0,
                backoff_ms=general.get_int("retransmissions_backoff", 100) or 100,
                queue_size=queue_size,
            )
        )
    return WebSocketEventHandler(
        WebSocketBackend(
            url=backend, mask=mask, grouping=grouping, json=style, subprotocol=general.get_str("subprotocol"), queue_size=queue_size
        )
    )
