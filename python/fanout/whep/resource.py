"""One WHEP viewer: a Janus session and Streaming handle driven through the Gateway, as a
Janus client would drive them, so WHEP viewers get exactly what janus.js viewers get."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import TYPE_CHECKING, Any

from fanout.whep.sdpfrag import SdpFragment

if TYPE_CHECKING:
    from fanout.core.gateway import Gateway

logger = logging.getLogger(__name__)

Message = dict[str, Any]
STREAMING = "janus.plugin.streaming"
ANSWER_TIMEOUT = 10.0
KEEPALIVE_INTERVAL = 15.0  # at most; a third of the session timeout if that is shorter


class WhepError(Exception):
    """A WHEP request refused: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after  # seconds, for a 503: the node is past its admission limit


# Streaming plugin and core error codes, as WHEP answers them.
_STATUS_OF_ERROR = {455: 404, 457: 403, 403: 401, 458: 404, 459: 404, 461: 400, 465: 400, 454: 400, 453: 400}


class WhepResource:
    """A WHEP viewer's Janus session: made by :meth:`start`, ended by :meth:`stop` or when
    its PeerConnection closes (``on_gone`` is then called)."""

    def __init__(self, gateway: Gateway, credentials: Message, on_gone: Any) -> None:
        self.id = secrets.token_urlsafe(16)
        self.etag = f'"{secrets.token_hex(8)}"'
        self.gateway = gateway
        self.credentials = credentials  # apisecret / token, as the Bearer token gave them
        self.session_id: int | None = None
        self.handle_id: int | None = None
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._on_gone = on_gone
        self._keepalive: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopped = False

    # The gateway's Connection: the events of our session.
    def send_event(self, session_id: int, message: Message) -> None:
        self._events.put_nowait(message)

    def session_created(self, session_id: int) -> None:
        pass

    def session_over(self, session_id: int, *, timeout: bool, claimed: bool) -> None:
        self._events.put_nowait({"janus": "timeout" if timeout else "destroyed"})

    async def start(self, mountpoint_id: int | str, offer_sdp: str) -> str:
        """Watch ``mountpoint_id`` with the player's offer; returns fanout's answer SDP."""
        try:
            created = await self._request({"janus": "create"})
            self.session_id = created["data"]["id"]
            attached = await self._request({"janus": "attach", "plugin": STREAMING, "session_id": self.session_id})
            self.handle_id = attached["data"]["id"]
            await self._request(
                {
                    "janus": "message",
                    "session_id": self.session_id,
                    "handle_id": self.handle_id,
                    "body": {"request": "watch", "id": mountpoint_id},
                    "jsep": {"type": "offer", "sdp": offer_sdp},
                }
            )
            answer = await self._answer()
        except BaseException:
            await self.stop()
            raise
        self._keepalive = asyncio.get_running_loop().create_task(self._keep_alive())
        self._watcher = asyncio.get_running_loop().create_task(self._watch_for_hangup())
        return answer

    async def trickle(self, fragment: SdpFragment) -> None:
        candidates: list[Message] = [
            {"sdpMid": mid, "candidate": candidate} if mid is not None else {"sdpMLineIndex": 0, "candidate": candidate}
            for mid, candidate in fragment.candidates
        ]
        if fragment.end_of_candidates:
            candidates.append({"completed": True})
        if candidates:
            await self._request(
                {"janus": "trickle", "session_id": self.session_id, "handle_id": self.handle_id, "candidates": candidates}
            )

    async def stop(self) -> None:
        """End the viewer: its session is destroyed (the PeerConnection with it)."""
        if self._stopped:
            return
        self._stopped = True
        for task in (self._keepalive, self._watcher):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if self.session_id is not None:
            with contextlib.suppress(WhepError):
                await self._request({"janus": "destroy", "session_id": self.session_id})

    async def _request(self, request: Message) -> Message:
        reply = await self.gateway.handle_request({"transaction": secrets.token_hex(6), **self.credentials, **request}, self)
        if reply.get("janus") == "error":
            error = reply["error"]
            raise WhepError(_STATUS_OF_ERROR.get(error["code"], 500), error["reason"])
        return reply

    async def _answer(self) -> str:
        """The plugin's answer to the watch, or its error as a WhepError."""

        async def wait() -> str:
            while True:
                event = await self._events.get()
                data = event.get("plugindata", {}).get("data", {})
                if "retry_after" in data:  # refused by admission control: the node is overloaded
                    raise WhepError(503, data["error"], retry_after=int(data["retry_after"]))
                if "error_code" in data:
                    raise WhepError(_STATUS_OF_ERROR.get(data["error_code"], 500), data["error"])
                jsep = event.get("jsep")
                if jsep is not None and jsep.get("type") == "answer":
                    return str(jsep["sdp"])

        try:
            return await asyncio.wait_for(wait(), ANSWER_TIMEOUT)
        except TimeoutError:
            raise WhepError(503, "no answer from the Streaming plugin") from None

    async def _keep_alive(self) -> None:
        timeout = self.gateway.settings.session_timeout
        interval = min(KEEPALIVE_INTERVAL, timeout / 3) if timeout > 0 else KEEPALIVE_INTERVAL
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(WhepError):
                await self._request({"janus": "keepalive", "session_id": self.session_id})

    async def _watch_for_hangup(self) -> None:
        """When the player goes away (ICE consent, DTLS close), the resource goes too."""
        while True:
            event = await self._events.get()
            if event.get("janus") in ("hangup", "detached", "timeout", "destroyed"):
                logger.info("WHEP resource %s: %s (%s)", self.id, event.get("janus"), event.get("reason", ""))
                await self.stop()
                self._on_gone(self)
                return
