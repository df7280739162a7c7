"""Gateway.handle_request against the real Janus's recorded replies, and the Gateway's own
rules: session timeout (on a fake clock), closed connections, claim, api_secret, plugin faults."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fanout.config.settings import Settings
from fanout.core import events
from fanout.core.plugin import PluginAck
from fanout.webrtc.peer import DtlsConnected, PeerClosed

from tests.core.harness import Core, DirectApiClient, EventSink, recording
from tests.core.janus_scenarios import API_SCENARIOS, STREAMING, mask, run_api_scenario

EVENT_WAIT = 0.2  # events are flushed on the next turn of the loop; a missing one is waited for this long


def janus_session_id(message: dict[str, Any]) -> int:
    assert message["janus"] == "success", message
    return int(message["data"]["id"])


# ---------------------------------------------------------------------------
# The recorded scenarios, ids in the body (as over the WebSocket)

@pytest.mark.parametrize("name", list(API_SCENARIOS))
async def test_scenario_as_janus(name: str) -> None:
    core = Core()
    results = await run_api_scenario(DirectApiClient(core.gateway), API_SCENARIOS[name], event_timeout=EVENT_WAIT, stray_window=0.05)
    assert results == recording("janus_api_websocket")[name]


async def test_request_that_is_not_an_object() -> None:
    """An array where an object belongs: Janus finds no transaction (recorded over the WebSocket)."""
    recorded = recording("janus_websocket_raw")
    reply = await Core().gateway.handle_request([1], EventSink())
    assert [reply] == recorded["[1]"] == recorded['[{"janus":"ping","transaction":"p7"}]']


# ---------------------------------------------------------------------------
# info

SAME_AS_JANUS = (
    "janus", "version", "version_string", "commit-hash", "log-to-stdout", "log-to-file", "accepting-new-sessions",
    "session-timeout", "reclaim-session-timeout", "candidates-timeout", "ipv6", "ice-tcp", "ice-keepalive-conncheck",
    "full-trickle", "min-nack-queue", "nack-optimizations", "twcc-period", "dtls-mtu", "static-event-loops",
    "api_secret", "auth_token", "event_handlers", "opaqueid_in_api", "events", "loggers", "data_channels",
)


def test_info_has_janus_fields_in_janus_order() -> None:
    """Every field of Janus's server_info, in its order. Deliberately fanout's own: name, author,
    compile-time, server-name, local-ip (configuration), ice-lite and ice-nomination (fanout is
    ICE-lite), mdns-enabled, dependencies, the transports' and plugins' texts."""
    janus = recording("janus_http_raw")["post_info"]["json"]
    core = Core()
    from fanout.transports.http import INFO as HTTP_INFO
    from fanout.transports.websocket import INFO as WEBSOCKET_INFO

    core.gateway.register_transport(HTTP_INFO)
    core.gateway.register_transport(WEBSOCKET_INFO)
    info = core.gateway.server_info("i")
    assert list(info) == list(janus)
    assert {key: info[key] for key in SAME_AS_JANUS} == {key: janus[key] for key in SAME_AS_JANUS}
    assert info["transaction"] == "i"
    assert info["transports"].keys() == janus["transports"].keys()
    assert info["plugins"].keys() == janus["plugins"].keys()
    for listed in (*info["transports"].values(), *info["plugins"].values()):
        assert list(listed) == ["name", "author", "description", "version_string", "version"]
    assert info["ice-lite"] is True


def test_info_names_the_log_file_as_janus() -> None:
    """Janus 1.1.2 with ``log_to_file`` and ``log_to_stdout = false`` says so, and adds ``log-path``
    after ``log-to-file`` (recorded by tests/admin/record_janus.py, config log_file)."""
    settings = Settings(log_to_stdout=False, log_to_file="/var/log/fanout.log")
    info = Core(settings=settings).gateway.server_info("i")
    keys = list(info)
    assert keys[keys.index("log-to-stdout") : keys.index("data_channels")] == ["log-to-stdout", "log-to-file", "log-path"]
    assert (info["log-to-stdout"], info["log-to-file"], info["log-path"]) == (False, True, "/var/log/fanout.log")
    assert "log-path" not in Core().gateway.server_info("i")


async def test_info_and_ping_at_root() -> None:
    core = Core()
    assert (await core.request(janus="info", transaction="i"))["janus"] == "server_info"
    assert await core.request(janus="ping", transaction="p") == {"janus": "pong", "transaction": "p"}


# ---------------------------------------------------------------------------
# Session timeout, on a fake clock

async def test_session_times_out_as_in_janus() -> None:
    """Janus's recording: a ``timeout`` event, then the session is unknown."""
    core = Core()
    sink = EventSink()
    session_id = await core.session(sink)
    handle = await core.handle(session_id, sink)
    core.clock.advance(59.9)
    core.gateway.check_timeouts()
    assert session_id in core.gateway.sessions
    core.clock.advance(0.1)
    core.gateway.check_timeouts()
    await asyncio.sleep(0)
    received = sink.drain()
    after = await core.request(sink, janus="keepalive", transaction="k", session_id=session_id)
    variables = {"session": session_id, "handle": handle.id}
    assert [mask(event, variables) for event in received] + [{"after": mask(after, variables)}] == recording(
        "janus_lifetime"
    )["session_timeout"]
    assert ("destroy_session", handle.id) in core.plugin.calls
    assert sink.ended == [(session_id, True, False)]
    assert core.gateway.handles == {}


@pytest.mark.parametrize(
    "activity",
    [
        {"janus": "keepalive", "transaction": "k"},
        {"janus": "attach", "transaction": "a", "plugin": STREAMING},
        {"janus": "claim", "transaction": "c"},
        {"janus": "foo", "transaction": "f"},  # even a request Janus refuses counts
    ],
)
async def test_a_request_keeps_the_session(activity: dict[str, Any]) -> None:
    core = Core()
    session_id = await core.session()
    core.clock.advance(50)
    await core.gateway.handle_request({**activity, "session_id": session_id}, None)
    core.clock.advance(50)
    core.gateway.check_timeouts()
    assert session_id in core.gateway.sessions
    core.clock.advance(10)
    core.gateway.check_timeouts()
    assert session_id not in core.gateway.sessions


async def test_a_long_poll_keeps_the_session() -> None:
    core = Core()
    session_id = await core.session()
    core.clock.advance(50)
    assert core.gateway.session_for_poll(session_id) is not None
    core.clock.advance(50)
    core.gateway.check_timeouts()
    assert session_id in core.gateway.sessions
    assert core.gateway.session_for_poll(12345) is None


async def test_no_timeout_when_session_timeout_is_zero() -> None:
    core = Core(settings=Settings(session_timeout=0))
    session_id = await core.session()
    core.clock.advance(10**6)
    core.gateway.check_timeouts()
    assert session_id in core.gateway.sessions


async def test_the_watchdog_times_sessions_out() -> None:
    core = Core(timeout_check_interval=0.01)
    await core.gateway.start()
    try:
        sink = EventSink()
        session_id = await core.session(sink)
        core.clock.advance(61)
        event = await asyncio.wait_for(sink.received.get(), 2)
        assert event == events.timeout(session_id)
        assert session_id not in core.gateway.sessions
    finally:
        await core.gateway.stop()


# ---------------------------------------------------------------------------
# Connections: closed, reclaimed, claimed

async def test_closed_connection_ends_its_sessions_as_in_janus() -> None:
    """Janus's recording: of two sessions of a closed WebSocket, the one claimed by another
    socket before lives on; the other is gone."""
    core = Core()
    closing, keeper = EventSink(), EventSink()
    first, second = await core.session(closing), await core.session(closing)
    claimed = await core.request(keeper, janus="claim", transaction="cl", session_id=second)
    core.gateway.connection_closed(closing)
    replies = [await core.request(None, janus="keepalive", transaction="k", session_id=sid) for sid in (first, second)]
    variables = {"session1": first, "session2": second}
    assert [{"claim": mask(claimed, variables)}] + [mask(reply, variables) for reply in replies] == recording(
        "janus_lifetime"
    )["closed_websocket"]
    assert closing.ended == [(second, False, True)]  # the closed one hears of the claim only


async def test_reclaim_session_timeout_keeps_sessions_to_claim() -> None:
    core = Core(settings=Settings(reclaim_session_timeout=20))
    gone, back = EventSink(), EventSink()
    session_id = await core.session(gone)
    handle = await core.handle(session_id, gone)
    core.gateway.connection_closed(gone)
    core.clock.advance(15)
    core.gateway.check_timeouts()
    reply = await core.request(back, janus="claim", transaction="cl", session_id=session_id)
    assert reply == events.success("cl", session_id=session_id)
    await core.request(back, janus="message", transaction="w", session_id=session_id, handle_id=handle.id, body={"request": "watch"})
    await asyncio.sleep(0)
    assert [event["janus"] for event in back.drain()] == ["event"]
    assert gone.drain() == []


async def test_orphan_session_goes_after_reclaim_session_timeout() -> None:
    core = Core(settings=Settings(reclaim_session_timeout=20))
    gone = EventSink()
    session_id = await core.session(gone)
    core.gateway.connection_closed(gone)
    core.clock.advance(19)
    core.gateway.check_timeouts()
    assert session_id in core.gateway.sessions
    core.clock.advance(1)
    core.gateway.check_timeouts()
    assert session_id not in core.gateway.sessions
    assert gone.drain() == []  # nobody to tell


async def test_claim_moves_the_events() -> None:
    core = Core()
    first, second = EventSink(), EventSink()
    session_id = await core.session(first)
    handle = await core.handle(session_id, first)
    await core.request(second, janus="claim", transaction="cl", session_id=session_id, handle_id=handle.id)
    assert first.ended == [(session_id, False, True)]
    assert second.sessions == {session_id}
    await core.request(second, janus="message", transaction="w", session_id=session_id, handle_id=handle.id, body={"request": "watch"})
    await asyncio.sleep(0)
    assert first.drain() == []
    assert [event["transaction"] for event in second.drain()] == ["w"]
    reply = await core.request(second, janus="claim", transaction="again", session_id=session_id)
    assert reply == events.success("again", session_id=session_id)
    assert second.ended == []


# ---------------------------------------------------------------------------
# api_secret (the HTTP tests replay Janus's recording; these are the rules)

async def test_api_secret() -> None:
    core = Core(settings=Settings(api_secret="s3cret"))
    unauthorized = {"code": 403, "reason": "Unauthorized request (wrong or missing secret/token)"}
    assert await core.request(janus="create", transaction="c") == {"janus": "error", "transaction": "c", "error": unauthorized}
    assert (await core.request(janus="create", transaction="c", apisecret=5))["error"] == unauthorized
    assert (await core.request(janus="ping", transaction="p"))["janus"] == "pong"
    assert (await core.request(janus="info", transaction="i"))["api_secret"] is True
    assert (await core.request(janus="foo", transaction="f"))["error"]["code"] == 457
    session_id = janus_session_id(await core.request(janus="create", transaction="c", apisecret="s3cret"))
    assert await core.request(janus="keepalive", transaction="k", session_id=session_id) == {
        "janus": "error", "session_id": session_id, "transaction": "k", "error": unauthorized,
    }
    assert (await core.request(janus="keepalive", transaction="k", session_id=123))["error"] == unauthorized
    assert (await core.request(janus="keepalive", transaction="k", session_id=session_id, apisecret="s3cret"))["janus"] == "ack"
    assert core.gateway.check_secret("s3cret") and not core.gateway.check_secret(None)


# ---------------------------------------------------------------------------
# Plugins that fail, and what they send

async def test_plugin_refusing_a_handle() -> None:
    core = Core()
    session_id = await core.session()
    core.plugin.fail_create = True
    reply = await core.request(janus="attach", transaction="a", session_id=session_id, plugin=STREAMING)
    assert reply["error"] == {"code": 461, "reason": f"Couldn't attach to plugin '{STREAMING}': no room"}
    assert core.gateway.handles == {}


@pytest.mark.parametrize(
    ("request_name", "reason"),
    [("refuse", "refused"), ("crash", "Plugin returned a severe (unknown) error")],
)
async def test_plugin_failing_a_message(request_name: str, reason: str) -> None:
    core = Core()
    session_id = await core.session()
    handle = await core.handle(session_id)
    reply = await core.request(janus="message", transaction="m", session_id=session_id, handle_id=handle.id, body={"request": request_name})
    assert reply == {"janus": "error", "session_id": session_id, "transaction": "m", "error": {"code": 462, "reason": reason}}


async def test_ack_with_hint() -> None:
    core = Core()
    session_id = await core.session()
    handle = await core.handle(session_id)

    async def hinted(*_: Any) -> PluginAck:
        return PluginAck(hint="soon")

    core.plugin.handle_message = hinted  # type: ignore[method-assign,assignment]
    reply = await core.request(janus="message", transaction="m", session_id=session_id, handle_id=handle.id, body={})
    assert reply == {"janus": "ack", "session_id": session_id, "transaction": "m", "hint": "soon"}


async def test_response_goes_before_the_events_it_caused() -> None:
    core = Core()
    sink = EventSink()
    session_id = await core.session(sink)
    handle = await core.handle(session_id, sink)
    reply = await core.request(sink, janus="message", transaction="w", session_id=session_id, handle_id=handle.id, body={"request": "watch"})
    assert reply["janus"] == "ack"
    assert sink.drain() == []  # not yet: on the next turn of the loop
    await asyncio.sleep(0)
    assert [event["janus"] for event in sink.drain()] == ["event"]


async def test_webrtc_up_and_down() -> None:
    """The peer's events become Janus's: ``webrtcup`` (and the plugin's setup_media), then ``hangup``
    with the peer's reason; a plugin's close_pc hangs up with Janus's "Close PC"."""
    core = Core()
    sink = EventSink()
    session_id = await core.session(sink)
    handle = await core.handle(session_id, sink)
    await core.request(sink, janus="message", transaction="w", session_id=session_id, handle_id=handle.id, body={"request": "watch"})
    assert handle.peer is not None
    handle.on_peer_event(handle.peer, DtlsConnected("AEAD_AES_128_GCM", b"l" * 28, b"r" * 28, ("192.0.2.9", 5000)))
    handle.on_peer_event(handle.peer, PeerClosed("ICE failed"))
    await asyncio.sleep(0)
    assert [event["janus"] for event in sink.drain()] == ["event", "webrtcup", "event", "hangup"]
    assert handle.peer is None and handle.media_keys is None
    await core.request(sink, janus="message", transaction="w2", session_id=session_id, handle_id=handle.id, body={"request": "watch"})
    await core.request(sink, janus="message", transaction="s", session_id=session_id, handle_id=handle.id, body={"request": "stop"})
    await asyncio.sleep(0)
    received = sink.drain()
    assert received[-1] == events.hangup(session_id, handle.id, "Close PC")
    hangups = [event for event in received if event["janus"] == "hangup"]
    assert len(hangups) == 1
    assert [call for call, _ in core.plugin.calls] == ["create_session", "setup_media", "hangup_media", "hangup_media"]


async def test_stopping_hangs_up_every_peerconnection_and_tells_its_client_at_once() -> None:
    """fanout is stopping (SIGTERM): every handle with a PeerConnection hangs up with reason
    "Shutdown" and its client's event is handed to the transport now, not on the next turn of
    the loop (the transports close soon after); a handle without one gets nothing."""
    core = Core()
    sink = EventSink()
    session_id = await core.session(sink)
    watching, idle = await core.handle(session_id, sink), await core.handle(session_id, sink)
    await core.request(sink, janus="message", transaction="w", session_id=session_id, handle_id=watching.id, body={"request": "watch"})
    assert watching.peer is not None
    watching.on_peer_event(watching.peer, DtlsConnected("AEAD_AES_128_GCM", b"l" * 28, b"r" * 28, ("192.0.2.9", 5000)))
    await asyncio.sleep(0)
    sink.drain()
    assert core.gateway.hang_up_everyone() == 1
    assert sink.drain() == [events.hangup(session_id, watching.id, "Shutdown")]
    assert watching.peer is None and idle.peer is None
    assert session_id in core.gateway.sessions  # the sessions themselves end when the gateway stops


async def test_destroy_detaches_silently() -> None:
    """As recorded (destroy_with_live_handles): no hangup, no detached; the plugin frees its handles."""
    core = Core()
    sink = EventSink()
    session_id = await core.session(sink)
    first, second = await core.handle(session_id, sink), await core.handle(session_id, sink)
    await core.request(sink, janus="message", transaction="w", session_id=session_id, handle_id=first.id, body={"request": "watch"})
    await asyncio.sleep(0)
    sink.drain()
    await core.request(sink, janus="destroy", transaction="x", session_id=session_id)
    await asyncio.sleep(0)
    assert sink.drain() == []
    assert {("destroy_session", first.id), ("destroy_session", second.id)} <= set(core.plugin.calls)
    assert core.endpoint.peers == {}
    assert core.gateway.sessions == {} and core.gateway.handles == {}


async def test_plugin_events_while_handles_go_are_not_sent() -> None:
    """In Janus a plugin's events stop when its handle is detached or its session destroyed
    (recorded: ``detached`` alone; nothing on destroy), whatever the plugin pushes then."""
    core = Core()
    core.plugin.tell_stopped = True
    sink = EventSink()
    session_id = await core.session(sink)
    for request in ({"janus": "detach"}, {"janus": "hangup"}):
        handle = await core.handle(session_id, sink)
        await core.request(sink, janus="message", transaction="w", session_id=session_id, handle_id=handle.id, body={"request": "watch"})
        await core.request(sink, transaction="r", session_id=session_id, handle_id=handle.id, **request)
        await asyncio.sleep(0)
        received = [event["janus"] for event in sink.drain()]
        assert received == (["event", "detached"] if request["janus"] == "detach" else ["event", "event", "hangup"])
    await core.request(sink, janus="destroy", transaction="x", session_id=session_id)
    await asyncio.sleep(0)
    assert sink.drain() == []


async def test_stop_destroys_everything() -> None:
    core = Core()
    await core.gateway.start()
    session_id = await core.session()
    handle = await core.handle(session_id)
    await core.gateway.stop()
    assert core.gateway.sessions == {}
    assert ("destroy_session", handle.id) in core.plugin.calls


def test_plugins_register_once() -> None:
    core = Core()
    with pytest.raises(ValueError):
        core.gateway.register_plugin(core.plugin)
