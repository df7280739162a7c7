"""A Janus session: the handles of one client, its timeout, and where its events go."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fanout.core.handle import Handle
    from fanout.core.notifications import Notification

logger = logging.getLogger(__name__)

Message = dict[str, Any]


class Connection(Protocol):
    """A transport's channel to its clients: where the events of the sessions it owns go.

    The WebSocket transport has one per socket. The HTTP transport has one for
    all its sessions, keeping a long-poll queue per session."""

    def send_event(self, session_id: int, message: Message) -> None:
        """An event for a session this connection owns."""

    def session_created(self, session_id: int) -> None:
        """A session now belongs to this connection (``create`` or ``claim``)."""

    def session_over(self, session_id: int, *, timeout: bool, claimed: bool) -> None:
        """The session is gone (destroyed, timed out) or was claimed by another connection."""


def transport_of(connection: Connection | None) -> str | None:
    """The package of the transport a connection belongs to (``janus.transport.http``), if it says."""
    return getattr(connection, "transport_package", None)


class Session:
    """A client's session: its handles, its last activity and its connection.

    Events are queued and sent on the next turn of the event loop, in order,
    so that a request's response always goes out before the events its
    handling caused (as a Janus client expects the ``ack`` first).

    ``observer`` hears what happens to the session's handles (:meth:`notify`; the
    core reports it to the event handlers and the metrics); ``token`` is the
    stored token that made it."""

    def __init__(
        self,
        session_id: int,
        connection: Connection | None,
        now: float,
        *,
        observer: Callable[[Notification], None] | None = None,
        token: str | None = None,
    ) -> None:
        self.id = session_id
        self.connection = connection
        self.handles: dict[int, Handle] = {}
        self.created = now
        self.last_activity = now
        self.destroyed = False
        self.observer = observer
        self.token = token
        self._outbox: list[Message] = []
        self._flush_scheduled = False

    def touch(self, now: float) -> None:
        self.last_activity = now

    def idle_for(self, now: float) -> float:
        return now - self.last_activity

    def send_event(self, message: Message) -> None:
        """Queue an event for the session's connection."""
        if self.destroyed:
            logger.debug("session %d: dropping an event after the session ended: %s", self.id, message.get("janus"))
            return
        self._outbox.append(message)
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self.flush)

    def notify(self, notification: Notification) -> None:
        """Tell the observer what happened to one of the session's handles; nothing once the
        session has ended, as its client hears nothing then either."""
        if self.destroyed or self.observer is None:
            return
        try:
            self.observer(notification)
        except Exception:
            logger.exception("session %d: observer failed on %s", self.id, type(notification).__name__)

    def flush(self) -> None:
        """Send every queued event now."""
        self._flush_scheduled = False
        outbox, self._outbox = self._outbox, []
        if self.connection is None:
            if outbox:
                logger.debug("session %d: no connection, %d events dropped", self.id, len(outbox))
            return
        for message in outbox:
            self.connection.send_event(self.id, message)
