"""Event handlers: Janus's event envelope and type masks, delivered by HTTP POST or WebSocket."""

from fanout.events.bus import EventBus, EventHandler
from fanout.events.types import EventType, parse_mask

__all__ = ["EventBus", "EventHandler", "EventType", "parse_mask"]
