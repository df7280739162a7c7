"""Admin API scenarios: run against Debian's Janus to record its replies (record_janus.py) and
against fanout to compare (test_admin_http.py, test_admin_websocket.py).

A step goes to the Admin API (``"api": "admin"``) or the Janus API (``"api": "janus"``), at
the root, a session or a handle. Results are masked as tests/core's are (ids to ``{name}``,
SDP to ``<sdp>``); ``"shape": True`` keeps only the structure of a reply (keys, and the
type of each value) where the values are the server's own (versions, clocks, candidates).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from tests.core.janus_scenarios import (
    ApiClient,
    HttpApiClient,
    WebSocketApiClient,
    _target,
    mask,
)

Message = dict[str, Any]
STREAMING = "janus.plugin.streaming"
ADMIN_SECRET = "overlord"
API_SECRET = "s3cret"
ADMIN_SUBPROTOCOL = "janus-admin-protocol"


def admin(janus: str, at: str = "root", *, secret: str | None = ADMIN_SECRET, **fields: Any) -> dict[str, Any]:
    options = {key: fields.pop(key) for key in ("save", "shape", "mask_data", "wait") if key in fields}
    request: Message = {"janus": janus, "transaction": janus}
    if secret is not None:
        request["admin_secret"] = secret
    request.update(fields)
    return {"api": "admin", "at": at, "request": request, **options}


def janus(request: Message, at: str = "root", **options: Any) -> dict[str, Any]:
    return {"api": "janus", "at": at, "request": request, **options}


def tokened(kind: str, token: str | None, **fields: Any) -> Message:
    request: Message = {"janus": kind, "transaction": kind}
    if token is not None:
        request["token"] = token
    request.update(fields)
    return request


# With admin_secret = "overlord" and token_auth = true.
TOKENS: list[dict[str, Any]] = [
    admin("ping", secret=None),
    admin("info", secret=None, shape=True),
    admin("get_status", secret=None),
    admin("get_status", secret="wrong"),
    admin("get_status"),
    admin("foo"),
    admin("create"),
    admin("list_tokens"),
    admin("add_token"),
    admin("add_token", token=5),
    admin("add_token", token="tok1"),
    admin("add_token", token="tok1"),
    admin("add_token", token="tok2", plugins=[STREAMING]),
    admin("add_token", token="tok3", plugins=["janus.plugin.nope"]),
    admin("add_token", token="tok4", plugins="janus.plugin.streaming"),
    admin("list_tokens"),
    admin("disallow_token", token="tok2", plugins=[STREAMING]),
    admin("disallow_token", token="tok2"),
    admin("list_tokens"),
    admin("allow_token", token="tok2", plugins=[STREAMING]),
    admin("allow_token", token="nope", plugins=[STREAMING]),
    admin("remove_token", token="nope"),
    admin("remove_token"),
    janus({"janus": "ping", "transaction": "p"}),
    janus(tokened("create", None)),
    janus(tokened("create", "bad")),
    janus(tokened("create", "tok1"), save={"session": "data.id"}),
    admin("disallow_token", token="tok1", plugins=[STREAMING]),
    janus(tokened("attach", "tok1", plugin=STREAMING), at="session"),
    admin("allow_token", token="tok1", plugins=[STREAMING]),
    janus(tokened("attach", None, plugin=STREAMING), at="session"),
    janus(tokened("attach", "tok1", plugin=STREAMING), at="session", save={"handle": "data.id"}),
    janus(tokened("keepalive", "tok2"), at="session"),
    admin("handle_info", at="handle", shape=True),
    janus(tokened("message", "tok1", body={"request": "watch", "id": 1}), at="handle", wait=0.5),
    admin("list_sessions"),
    admin("list_handles", at="session"),
    admin("list_handles"),
    admin("list_handles", at="session=123"),
    admin("handle_info", at="handle", shape=True),
    admin("handle_info", at="handle=123"),
    admin("hangup_webrtc", at="handle"),
    admin("message_plugin", plugin=STREAMING, request={"request": "list"}, mask_data=True),
    admin("message_plugin", plugin="janus.plugin.nope", request={"request": "list"}),
    admin("message_plugin", plugin=STREAMING),
    admin("message_plugin", request={"request": "list"}),
    admin("set_session_timeout", timeout=120),
    admin("set_session_timeout"),
    admin("set_session_timeout", timeout=-1),
    admin("set_session_timeout", timeout="x"),
    admin("set_log_level", level=5),
    admin("set_log_level", level=9),
    admin("set_log_level"),
    admin("get_status"),
    admin("set_session_timeout", timeout=60),
    admin("set_log_level", level=4),
    admin("accept_new_sessions", accept=False),
    janus(tokened("create", "tok1")),
    admin("accept_new_sessions"),
    admin("accept_new_sessions", accept=True),
    admin("hangup_webrtc", at="handle"),
    admin("detach_handle", at="handle"),
    admin("list_handles", at="session"),
    admin("detach_handle", at="handle"),
    admin("destroy_session", at="session"),
    admin("destroy_session", at="session"),
    admin("list_sessions"),
    admin("remove_token", token="tok1"),
    admin("remove_token", token="tok2"),
    admin("list_tokens"),
]

# With admin_secret = "overlord" and api_secret = "s3cret"; no token_auth.
SECRETS: list[dict[str, Any]] = [
    admin("get_status"),
    admin("add_token", token="tok1"),
    admin("list_tokens"),
    admin("ping", secret=None, apisecret=API_SECRET),
    admin("get_status", secret=None, apisecret=API_SECRET),
    janus(tokened("create", None)),
    janus(tokened("create", "tok1")),
    janus(tokened("create", None, admin_secret=ADMIN_SECRET)),
    janus(tokened("create", None, apisecret=API_SECRET), save={"session": "data.id"}),
    janus(tokened("attach", None, plugin=STREAMING, apisecret=API_SECRET), at="session", save={"handle": "data.id"}),
    admin("list_sessions"),
    admin("destroy_session", at="session"),
]

# Without admin_secret: the Admin API is open.
OPEN: list[dict[str, Any]] = [
    admin("get_status", secret=None),
    admin("list_sessions", secret=None),
    admin("list_tokens", secret=None),
    janus(tokened("create", None), save={"session": "data.id"}),
    janus(tokened("attach", None, plugin=STREAMING), at="session", save={"handle": "data.id"}),
    # a request without transaction or janus: the error carries the session it was for
    {"api": "admin", "at": "session", "request": {"janus": "list_handles"}},
    {"api": "admin", "at": "handle", "request": {"transaction": "nj"}},
    {"api": "admin", "at": "session=123", "request": {"janus": "list_handles"}},
    # a candidate trickled before any SDP waits (candidates_timeout) and handle_info counts it
    janus(tokened("trickle", None, candidate={"candidate": "candidate:1 1 udp 2122260223 192.0.2.9 50000 typ host", "sdpMid": "a"}), at="handle"),
    admin("handle_info", at="handle", secret=None, shape=True),
    admin("destroy_session", at="session", secret=None),
]

# Without admin_secret, logging to a file (log_to_file), not to stdout, with timestamps.
LOG_FILE: list[dict[str, Any]] = [
    admin("get_status", secret=None),
    admin("info", secret=None, shape=True),
]

SCENARIOS = {"tokens": TOKENS, "secrets": SECRETS, "open": OPEN, "log_file": LOG_FILE}


class AdminHttpClient:
    """Admin API requests over HTTP: POST <admin base>[/<session>[/<handle>]]."""

    def __init__(self, http: aiohttp.ClientSession, admin_url: str) -> None:
        self.http = http
        self.admin_url = admin_url.rstrip("/")

    async def request(self, session_id: int | None, handle_id: int | None, body: Any) -> Message:
        path = "".join(f"/{part}" for part in (session_id, handle_id) if part is not None)
        async with self.http.post(self.admin_url + path, data=json.dumps(body)) as response:
            return await response.json(content_type=None)  # type: ignore[no-any-return]


def shape(value: Any) -> Any:
    """The structure of a reply: dicts keep their keys, lists their first item, leaves their type."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def _mask_sdp(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _mask_sdp(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_sdp(item) for item in value]
    if isinstance(value, str) and value.startswith("v=0"):
        return "<sdp>"
    return value


async def run_admin_scenario(admin_client: ApiClient | AdminHttpClient, janus_client: ApiClient, steps: list[dict[str, Any]]) -> list[Message]:
    variables: dict[str, Any] = {"fixed": 4_000_000_000_000 + secrets.randbelow(1_000_000_000_000)}
    results: list[Message] = []
    for item in steps:
        session_id, handle_id = _target(item["at"], variables)
        client = admin_client if item["api"] == "admin" else janus_client
        response = await client.request(session_id, handle_id, dict(item["request"]))
        if item.get("wait"):
            await asyncio.sleep(item["wait"])
        for name, path in item.get("save", {}).items():
            value: Any = response
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if value is not None:
                variables[name] = value
        masked = _mask_sdp(mask(response, variables, mask_data=bool(item.get("mask_data"))))
        if item.get("mask_data") and isinstance(masked.get("response"), dict):
            masked["response"] = "<data>"
        if item.get("shape"):
            masked = shape(masked)
        results.append({"request": item["request"], "at": item["at"], "response": masked})
    return results


@contextlib.asynccontextmanager
async def clients(
    kind: str, http: aiohttp.ClientSession, *, janus_url: str, admin_url: str, ws_url: str, admin_ws_url: str
) -> AsyncIterator[tuple[Any, ApiClient]]:
    """An Admin API client and a Janus API client over HTTP or over WebSocket."""
    if kind == "http":
        janus_client = HttpApiClient(http, janus_url)
        try:
            yield AdminHttpClient(http, admin_url), janus_client
        finally:
            await janus_client.close()
        return
    async with http.ws_connect(admin_ws_url, protocols=(ADMIN_SUBPROTOCOL,)) as admin_socket:
        async with http.ws_connect(ws_url, protocols=("janus-protocol",)) as janus_socket:
            yield WebSocketApiClient(admin_socket), WebSocketApiClient(janus_socket)
