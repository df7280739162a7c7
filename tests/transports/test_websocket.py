"""The WebSocket transport against the real Janus's recorded replies: the API scenarios, raw
messages (bad JSON, several requests in one message), subprotocols, origins, the session
timeout (the watchdog on a fake clock) and the sessions of a closed socket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from fanout.config.settings import Settings, WebSocketSettings

from tests.core import lifetime_cases
from tests.core.harness import recording
from tests.core.janus_scenarios import (
    API_SCENARIOS,
    BAD_JSON_BODIES,
    STREAMING,
    WEBSOCKET_BODIES,
    WebSocketApiClient,
    mask,
    run_api_scenario,
    run_websocket_body,
    websocket,
)
from tests.transports.conftest import SECURED, Servers, running

Message = dict[str, Any]


async def receive(socket: aiohttp.ClientWebSocketResponse) -> Message:
    return json.loads((await socket.receive(timeout=2)).data)  # type: ignore[no-any-return]


async def send(socket: aiohttp.ClientWebSocketResponse, **request: Any) -> Message:
    await socket.send_str(json.dumps(request))
    return await receive(socket)


@pytest.mark.parametrize("name", list(API_SCENARIOS))
async def test_scenario_as_janus(name: str, servers: Servers) -> None:
    async with websocket(servers.ws_url) as socket:
        results = await run_api_scenario(WebSocketApiClient(socket), API_SCENARIOS[name], event_timeout=1.0, stray_window=0.05)
    assert results == recording("janus_api_websocket")[name]


async def test_raw_messages_as_janus(servers: Servers) -> None:
    """Every message on its own socket, all at once: bad JSON, several values, arrays."""
    bodies = BAD_JSON_BODIES + WEBSOCKET_BODIES
    replies = await asyncio.gather(*(run_websocket_body(servers.ws_url, body, replies_window=0.3) for body in bodies))
    recorded = recording("janus_websocket_raw")
    assert dict(zip(bodies, replies)) == {body: recorded[body] for body in bodies}


@pytest.mark.parametrize(
    ("label", "protocols"),
    [("no_subprotocol", ()), ("other_subprotocol", ("other",)), ("admin_subprotocol", ("janus-admin-protocol",))],
)
async def test_refuses_other_subprotocols(label: str, protocols: tuple[str, ...], servers: Servers) -> None:
    """Refused as by Janus; but where Janus drops the connection, fanout answers 400 and says why."""
    assert recording("janus_websocket_raw")[label] == {"refused": "ServerDisconnectedError"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with websocket(servers.ws_url, protocols=protocols):
            pass
    assert refused.value.status == 400


async def test_origins_as_janus() -> None:
    """With enforce_cors: a socket from the allowed origin works (here: api_secret refuses the
    create, as recorded); others are refused (Janus drops the connection, fanout answers 403)."""
    recorded = recording("janus_secured")["websocket"]
    async with running(SECURED) as servers:
        for label, origin in (("no_origin", None), ("right_origin", "http://foo.example"), ("wrong_origin", "http://other.example")):
            headers = {"Origin": origin} if origin else {}
            if "accepted" in recorded[label]:
                async with websocket(servers.ws_url, headers=headers) as socket:
                    assert {"accepted": await send(socket, janus="create", transaction="c")} == recorded[label]
            else:
                assert recorded[label] == {"refused": "ServerDisconnectedError"}
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    async with websocket(servers.ws_url, headers=headers):
                        pass
                assert refused.value.status == 403


async def test_session_timeout_as_janus(servers: Servers) -> None:
    """Janus's recording: ``timeout`` arrives, then the session is unknown (60 s on the fake clock)."""
    async with websocket(servers.ws_url) as socket:
        session_id = (await send(socket, janus="create", transaction="c"))["data"]["id"]
        handle_id = (await send(socket, janus="attach", transaction="a", session_id=session_id, plugin=STREAMING))["data"]["id"]
        servers.core.clock.advance(60)
        timeout = await receive(socket)
        after = await send(socket, janus="keepalive", transaction="k", session_id=session_id)
    variables = {"session": session_id, "handle": handle_id}
    assert [mask(timeout, variables), {"after": mask(after, variables)}] == recording("janus_lifetime")["session_timeout"]


async def test_closed_socket_as_janus(servers: Servers, http: aiohttp.ClientSession) -> None:
    """Janus's recording: of two sessions of a closed socket, the one claimed elsewhere lives on."""
    results = await lifetime_cases.closed_websocket(http, servers.base_url, servers.ws_url, settle=0.05)
    assert results == recording("janus_lifetime")["closed_websocket"]


async def test_claim_after_close_with_reclaim_timeout() -> None:
    async with running(Settings(reclaim_session_timeout=30)) as servers:
        async with websocket(servers.ws_url) as first:
            session_id = (await send(first, janus="create", transaction="c"))["data"]["id"]
            handle_id = (await send(first, janus="attach", transaction="a", session_id=session_id, plugin=STREAMING))["data"]["id"]
        await asyncio.sleep(0.05)
        servers.core.clock.advance(20)
        await asyncio.sleep(0.05)
        async with websocket(servers.ws_url) as second:
            claimed = await send(second, janus="claim", transaction="cl", session_id=session_id)
            assert claimed == {"janus": "success", "session_id": session_id, "transaction": "cl"}
            ack = await send(second, janus="message", transaction="w", session_id=session_id, handle_id=handle_id, body={"request": "watch"})
            assert ack["janus"] == "ack"
            assert (await receive(second))["transaction"] == "w"


async def test_events_follow_their_response(servers: Servers) -> None:
    async with websocket(servers.ws_url) as socket:
        session_id = (await send(socket, janus="create", transaction="c"))["data"]["id"]
        handle_id = (await send(socket, janus="attach", transaction="a", session_id=session_id, plugin=STREAMING))["data"]["id"]
        for transaction in ("w1", "w2", "w3"):
            await socket.send_str(json.dumps({"janus": "message", "transaction": transaction, "session_id": session_id, "handle_id": handle_id, "body": {"request": "watch"}}))
        received = [await receive(socket) for _ in range(6)]
    order = [(message["janus"], message["transaction"]) for message in received]
    for transaction in ("w1", "w2", "w3"):
        assert order.index(("ack", transaction)) < order.index(("event", transaction))
    assert [name for name, _ in order if name == "ack"] == ["ack"] * 3
    assert [transaction for name, transaction in order if name == "ack"] == ["w1", "w2", "w3"]


async def test_binary_frames_are_read_as_text(servers: Servers) -> None:
    async with websocket(servers.ws_url) as socket:
        await socket.send_bytes(b'{"janus":"ping","transaction":"p"}')
        assert await receive(socket) == {"janus": "pong", "transaction": "p"}


@pytest.mark.parametrize(
    ("style", "text"),
    [
        ("indented", '{\n   "janus": "pong",\n   "transaction": "p"\n}'),
        ("plain", '{"janus": "pong", "transaction": "p"}'),
        ("compact", '{"janus":"pong","transaction":"p"}'),
    ],
)
async def test_json_style(style: str, text: str) -> None:
    async with running(Settings(websocket=WebSocketSettings(json=style))) as servers:
        async with websocket(servers.ws_url) as socket:
            await socket.send_str('{"janus":"ping","transaction":"p"}')
            assert (await socket.receive(timeout=2)).data == text
