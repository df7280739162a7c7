"""The HTTP transport against the real Janus's recorded replies: the API scenarios over REST and
long poll, raw requests (paths, methods, CORS headers, bad JSON), the long poll's maxev and
keepalive, api_secret with enforced CORS. Timers are short: a long poll waits 0.3 s, not 30."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from fanout.config.settings import HttpSettings, Settings

from tests.core import lifetime_cases
from tests.core.harness import recording
from tests.core.janus_scenarios import (
    API_SCENARIOS,
    STREAMING,
    HttpApiClient,
    http_cases,
    run_api_scenario,
    run_http_case,
    secured_http_cases,
)
from tests.transports.conftest import LONG_POLL, SECURED, Servers, running

Message = dict[str, Any]
INFO_CASES = ("get_info", "post_info")
# Janus's Streaming plugin lists its mountpoint here; the stand-in plugin has none
MOUNTPOINT_LIST_CASES = ("post_trailing_slash_handle", "post_handle_in_body_at_session")
# Janus (libmicrohttpd) drops a PATCH that has a body; fanout answers it as Janus answers DELETE
PATCH_CASE = "patch_root"


async def post(http: aiohttp.ClientSession, url: str, body: Message, headers: dict[str, str] | None = None) -> Message:
    async with http.post(url, data=json.dumps(body), headers=headers) as response:
        return await response.json(content_type=None)  # type: ignore[no-any-return]


async def session_and_handle(
    http: aiohttp.ClientSession, servers: Servers, headers: dict[str, str] | None = None, **extra: Any
) -> dict[str, int]:
    created = await post(http, servers.base_url, {"janus": "create", "transaction": "c", **extra}, headers)
    session_id = created["data"]["id"]
    attach = {"janus": "attach", "transaction": "a", "plugin": STREAMING, **extra}
    attached = await post(http, f"{servers.base_url}/{session_id}", attach, headers)
    return {"session": session_id, "handle": attached["data"]["id"]}


def without_plugin_data(result: dict[str, Any]) -> dict[str, Any]:
    result = json.loads(json.dumps(result))
    result["json"]["plugindata"]["data"] = "<data>"
    return result


# ---------------------------------------------------------------------------
# The recorded scenarios

@pytest.mark.parametrize("name", list(API_SCENARIOS))
async def test_scenario_as_janus(name: str, servers: Servers, http: aiohttp.ClientSession) -> None:
    client = HttpApiClient(http, servers.base_url)
    results = await run_api_scenario(client, API_SCENARIOS[name], event_timeout=1.0, stray_window=0.05)
    assert results == recording("janus_api_http")[name]


@pytest.mark.parametrize("name", [name for name in http_cases() if name not in INFO_CASES])
async def test_raw_request_as_janus(name: str, servers: Servers, http: aiohttp.ClientSession) -> None:
    variables = await session_and_handle(http, servers)
    result = await run_http_case(http, servers.origin, http_cases()[name], variables)
    recorded = recording("janus_http_raw")[name]
    if name in MOUNTPOINT_LIST_CASES:
        result, recorded = without_plugin_data(result), without_plugin_data(recorded)
    if name == PATCH_CASE:
        assert recorded == {"closed": "ServerDisconnectedError"}
        recorded = recording("janus_http_raw")["delete_session"]
        recorded["json"]["error"]["reason"] = "Unsupported method PATCH"
    assert result == recorded


@pytest.mark.parametrize("name", INFO_CASES)
async def test_info_as_janus(name: str, servers: Servers, http: aiohttp.ClientSession) -> None:
    """Status, headers and fields as Janus's (test_gateway checks the values)."""
    result = await run_http_case(http, servers.origin, http_cases()[name], {})
    recorded = recording("janus_http_raw")[name]
    assert (result["status"], result["headers"]) == (recorded["status"], recorded["headers"])
    assert list(result["json"]) == list(recorded["json"])
    assert list(result["json"]["transports"]) == ["janus.transport.http", "janus.transport.websockets"]
    if name == "get_info":
        assert len(result["json"]["transaction"]) == len(recorded["json"]["transaction"])  # Janus makes one up
    else:
        assert result["json"]["transaction"] == "i"


# ---------------------------------------------------------------------------
# The long poll

async def test_long_poll_as_janus(servers: Servers, http: aiohttp.ClientSession) -> None:
    """Queued events taken one by one, by maxev, as an array when maxev > 1; a keepalive when
    nothing comes (after 0.3 s here, 30 s in Janus)."""
    results = await lifetime_cases.long_poll(http, servers.base_url, keepalive_wait=LONG_POLL)
    assert results == recording("janus_lifetime")["long_poll"]


async def test_long_poll_waits_for_an_event(servers: Servers, http: aiohttp.ClientSession) -> None:
    ids = await session_and_handle(http, servers)
    poll = asyncio.ensure_future(http.get(f"{servers.base_url}/{ids['session']}"))
    await asyncio.sleep(0.05)
    assert not poll.done()
    await post(http, f"{servers.base_url}/{ids['session']}/{ids['handle']}", {"janus": "message", "transaction": "w", "body": {"request": "watch"}})
    async with await poll as response:
        event = await response.json(content_type=None)
    assert (event["janus"], event["transaction"], event["jsep"]["type"]) == ("event", "w", "offer")


async def test_abandoned_long_poll_keeps_its_events(servers: Servers, http: aiohttp.ClientSession) -> None:
    """A client that gives up on a poll finds the events that came after in its next poll."""
    async with running(long_poll_timeout=5.0) as slow:
        ids = await session_and_handle(http, slow)
        with pytest.raises(asyncio.TimeoutError):
            async with http.get(f"{slow.base_url}/{ids['session']}", timeout=aiohttp.ClientTimeout(total=0.1)):
                pass
        await post(http, f"{slow.base_url}/{ids['session']}/{ids['handle']}", {"janus": "detach", "transaction": "d"})
        await asyncio.sleep(0.05)
        async with http.get(f"{slow.base_url}/{ids['session']}") as response:
            event = await response.json(content_type=None)
        assert event == {"janus": "detached", "session_id": ids["session"], "sender": ids["handle"]}


async def test_two_long_polls_share_the_events(servers: Servers, http: aiohttp.ClientSession) -> None:
    """One takes the event; the other waits on for the next (or its keepalive)."""
    ids = await session_and_handle(http, servers)
    url = f"{servers.base_url}/{ids['session']}"
    polls = [asyncio.ensure_future(http.get(url)) for _ in range(2)]
    await asyncio.sleep(0.05)
    await post(http, f"{url}/{ids['handle']}", {"janus": "message", "transaction": "w", "body": {"request": "watch"}})
    replies = []
    for poll in polls:
        async with await poll as response:
            replies.append((await response.json(content_type=None))["janus"])
    assert sorted(replies) == ["event", "keepalive"]


async def test_long_poll_ends_with_the_session(servers: Servers, http: aiohttp.ClientSession) -> None:
    async with running(long_poll_timeout=5.0) as slow:
        ids = await session_and_handle(http, slow)
        url = f"{slow.base_url}/{ids['session']}"
        poll = asyncio.ensure_future(http.get(url))
        await asyncio.sleep(0.05)
        await post(http, url, {"janus": "destroy", "transaction": "x"})
        async with await asyncio.wait_for(poll, 1.0) as response:
            assert (await response.json(content_type=None)) == {"janus": "keepalive"}
        async with http.get(url) as response:
            assert response.status == 404


async def test_long_poll_on_a_websocket_session(servers: Servers, http: aiohttp.ClientSession) -> None:
    """A session made over the WebSocket: its events go there; the poll only keeps it alive."""
    async with http.ws_connect(servers.ws_url, protocols=("janus-protocol",)) as socket:
        await socket.send_str(json.dumps({"janus": "create", "transaction": "c"}))
        session_id = json.loads((await socket.receive()).data)["data"]["id"]
        servers.core.clock.advance(50)
        async with http.get(f"{servers.base_url}/{session_id}") as response:
            assert (await response.json(content_type=None)) == {"janus": "keepalive"}
        servers.core.clock.advance(50)
        servers.core.gateway.check_timeouts()
        assert session_id in servers.core.gateway.sessions


async def test_session_timeout_over_http(servers: Servers, http: aiohttp.ClientSession) -> None:
    """The Gateway's watchdog (on the fake clock) times the session out; the poll hears it."""
    ids = await session_and_handle(http, servers)
    url = f"{servers.base_url}/{ids['session']}"
    poll = asyncio.ensure_future(http.get(url))
    await asyncio.sleep(0.05)
    servers.core.clock.advance(61)
    async with await poll as response:
        assert (await response.json(content_type=None)) == {"janus": "timeout", "session_id": ids["session"]}
    reply = await post(http, url, {"janus": "keepalive", "transaction": "k"})
    assert reply["error"] == {"code": 458, "reason": f"No such session {ids['session']}"}


# ---------------------------------------------------------------------------
# api_secret and enforced CORS

async def test_secured_as_janus(http: aiohttp.ClientSession) -> None:
    recorded = recording("janus_secured")["http"]
    async with running(SECURED) as servers:
        variables = await session_and_handle(http, servers, {"Origin": "http://foo.example"}, apisecret="s3cret")
        for name, case in secured_http_cases().items():
            result = await run_http_case(http, servers.origin, case, variables)
            expected = recorded[name]
            if name == "info_without_secret":
                assert list(result["json"]) == list(expected["json"])
                assert result["json"]["api_secret"] is True
                result, expected = result["headers"], expected["headers"]
            elif name == "create_with_secret":
                assert isinstance(result["json"]["data"]["id"], int)
                result["json"]["data"]["id"] = expected["json"]["data"]["id"]
            assert result == expected, name


# ---------------------------------------------------------------------------
# Configuration

async def test_base_path_and_extra_routes(http: aiohttp.ClientSession) -> None:
    from aiohttp import web
    from fanout.transports.http import HttpTransport

    from tests.core.harness import Core

    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hello")

    core = Core()
    transport = HttpTransport(core.gateway, HttpSettings(host="127.0.0.1", port=0, base_path="/api/"), [web.get("/demo", hello)])
    await transport.start()
    try:
        origin = f"http://127.0.0.1:{transport.port}"
        assert (await post(http, f"{origin}/api", {"janus": "ping", "transaction": "p"}))["janus"] == "pong"
        async with http.get(f"{origin}/demo") as response:
            assert await response.text() == "hello"
        async with http.post(f"{origin}/janus", data="{}") as response:
            assert response.status == 404
            assert response.headers["Access-Control-Allow-Origin"] == "*"
    finally:
        await transport.stop()


@pytest.mark.parametrize(
    ("style", "text"),
    [
        ("indented", '{\n   "janus": "pong",\n   "transaction": "p"\n}'),
        ("plain", '{"janus": "pong", "transaction": "p"}'),
        ("compact", '{"janus":"pong","transaction":"p"}'),
    ],
)
async def test_json_style(style: str, text: str, http: aiohttp.ClientSession) -> None:
    async with running(Settings(http=HttpSettings(json=style))) as servers:
        async with http.post(servers.base_url, data='{"janus":"ping","transaction":"p"}') as response:
            assert await response.text() == text
