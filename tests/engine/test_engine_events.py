"""fanout.engine_events: the asyncio loop watches the engine's event fd and hands each
event to the handlers of its class. A real engine and a real source socket."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from fanout._engine import Engine, SourceResumed, SourceSilent
from fanout.engine_events import EngineEvents
from tests.engine.test_engine import COUNTED_SEND_DELAY_MS, WAIT_SECONDS, rtp, source_stream


@dataclass
class Watched:
    engine: Engine
    events: EngineEvents
    source: socket.socket
    port: int

    def send(self, sequence: int) -> None:
        self.source.sendto(rtp(sequence, sequence * 960, b"audio"), ("127.0.0.1", self.port))


@pytest.fixture
async def watched() -> AsyncIterator[Watched]:
    webrtc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    webrtc.bind(("127.0.0.1", 0))
    source = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    engine = Engine(webrtc.fileno(), cores=[0], pin=False, max_send_delay_ms=COUNTED_SEND_DELAY_MS)
    (port,) = engine.add_mountpoint(1, [source_stream()])
    events = EngineEvents(engine)
    events.start()
    yield Watched(engine, events, source, port)
    events.stop()
    engine.close()
    webrtc.close()
    source.close()


async def test_each_event_goes_to_the_handlers_of_its_class(watched: Watched) -> None:
    resumed: asyncio.Future[SourceResumed] = asyncio.get_running_loop().create_future()
    silent: list[SourceSilent] = []
    watched.events.subscribe(SourceResumed, resumed.set_result)
    watched.events.subscribe(SourceSilent, silent.append)
    watched.send(1)
    assert await asyncio.wait_for(resumed, WAIT_SECONDS) == SourceResumed(mountpoint_id=1, index=0)
    assert silent == []


async def test_a_handler_that_raises_is_logged_and_the_next_still_gets_the_event(
    watched: Watched, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: SourceResumed) -> None:
        raise RuntimeError("a bug in a handler")

    after: asyncio.Future[SourceResumed] = asyncio.get_running_loop().create_future()
    watched.events.subscribe(SourceResumed, broken)
    watched.events.subscribe(SourceResumed, after.set_result)
    with caplog.at_level(logging.ERROR, logger="fanout.engine_events"):
        watched.send(1)
        await asyncio.wait_for(after, WAIT_SECONDS)
    assert "handling SourceResumed(mountpoint_id=1, index=0)" in caplog.text and "a bug in a handler" in caplog.text


async def test_once_stopped_the_loop_no_longer_watches_the_fd(watched: Watched) -> None:
    watched.events.stop()
    watched.events.stop()  # idempotent
    assert not asyncio.get_running_loop().remove_reader(watched.engine.event_fd())
    watched.send(1)
    loop = asyncio.get_running_loop()
    readable = await loop.run_in_executor(None, _wait_readable, watched.engine.event_fd())
    assert readable and watched.engine.drain_events() == [SourceResumed(mountpoint_id=1, index=0)], "left waiting"


def _wait_readable(fd: int) -> bool:
    import select

    ready, _, _ = select.select([fd], [], [], WAIT_SECONDS)
    return bool(ready)
