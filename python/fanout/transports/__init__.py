"""The transports of the Janus API: HTTP (REST + long poll) and WebSocket."""

from fanout.transports.http import HttpTransport
from fanout.transports.websocket import WebSocketTransport

__all__ = ["HttpTransport", "WebSocketTransport"]
