"""Session: events go out in order, after the response of the request that caused them."""

from __future__ import annotations

import asyncio

from fanout.core.session import Session

from tests.core.harness import EventSink


async def test_events_wait_for_the_next_turn_of_the_loop() -> None:
    sink = EventSink()
    session = Session(1, sink, now=0.0)
    session.send_event({"janus": "event", "n": 1})
    session.send_event({"janus": "event", "n": 2})
    assert sink.drain() == []
    await asyncio.sleep(0)
    assert [event["n"] for event in sink.drain()] == [1, 2]


def test_without_a_loop_events_go_at_once() -> None:
    sink = EventSink()
    Session(1, sink, now=0.0).send_event({"janus": "event"})
    assert sink.drain() == [{"janus": "event"}]


async def test_flush_sends_what_is_queued() -> None:
    sink = EventSink()
    session = Session(1, sink, now=0.0)
    session.send_event({"janus": "event"})
    session.flush()
    assert sink.drain() == [{"janus": "event"}]
    await asyncio.sleep(0)
    assert sink.drain() == []


async def test_no_connection_or_ended_session_drops_events() -> None:
    orphan = Session(1, None, now=0.0)
    orphan.send_event({"janus": "event"})
    await asyncio.sleep(0)
    sink = EventSink()
    ended = Session(2, sink, now=0.0)
    ended.destroyed = True
    ended.send_event({"janus": "event"})
    await asyncio.sleep(0)
    assert sink.drain() == []


def test_idle_time() -> None:
    session = Session(1, None, now=10.0)
    assert session.idle_for(15.0) == 5.0
    session.touch(14.0)
    assert session.idle_for(15.0) == 1.0
