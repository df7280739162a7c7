"""Event handlers through the real protocols: a real aiortc viewer's whole life reaches an HTTP
collector in Janus's envelope; a collector that never answers does not hold up a running stream."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fanout.events.types import EventType, MediaSubtype, WebRtcSubtype
from prometheus_client.parser import text_string_to_metric_families

from tests.events.conftest import Collector, events_config
from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient
from tests.support.server import FanoutProcess

pytestmark = pytest.mark.usefixtures("loopback_only_ice")
ENVELOPE_KEYS = ["emitter", "type", "subtype", "timestamp", "session_id", "handle_id", "opaque_id", "event"]


def of(event_type: int, subtype: int | None = None, **fields: Any) -> Any:
    def matches(event: dict[str, Any]) -> bool:
        if event.get("type") != event_type or (subtype is not None and event.get("subtype") != subtype):
            return False
        return all(event["event"].get(key) == value for key, value in fields.items())

    return matches


async def test_a_viewers_whole_life_reaches_the_collector(tmp_path: Path, collector: Collector) -> None:
    addresses, _ = events_config(tmp_path / "config", collector.url)
    server = FanoutProcess(tmp_path / "config").start()
    try:
        async with aiohttp.ClientSession() as http:
            client = JanusHttpClient(http, addresses.janus_url)
            session_id = await client.create()
            viewer = AiortcViewer(client)
            try:
                await viewer.watch(1)
                await viewer.wait_for_frames(video=10, audio=10)
                stats = await collector.wait_for(of(EventType.MEDIA, MediaSubtype.STATS))
            finally:
                await viewer.close()
            await client.close()  # destroys the session
            handle_id = viewer.handle_id
            await collector.wait_for(of(EventType.SESSION, name="destroyed"))
    finally:
        await asyncio.to_thread(server.stop)  # the collector (on this loop) takes the last events meanwhile

    mine = [e for e in collector.events if e.get("session_id") == session_id]
    for event in mine:
        assert list(event) == [key for key in ENVELOPE_KEYS if key in event]
        assert event["emitter"] == "fanout"
        assert isinstance(event["timestamp"], int)
    names = [(e["type"], e.get("subtype"), e["event"].get("name") or e["event"].get("owner") or e["event"].get("connection")
              or e["event"].get("ice") or e["event"].get("dtls") or (e["event"].get("data") or {}).get("result", {}).get("status"))
             for e in mine if e["type"] != EventType.MEDIA]
    expected_order = [
        (EventType.SESSION, None, "created"),
        (EventType.HANDLE, None, "attached"),
        (EventType.PLUGIN, None, "preparing"),
        (EventType.JSEP, None, "local"),
        (EventType.JSEP, None, "remote"),
        (EventType.PLUGIN, None, "starting"),
        (EventType.WEBRTC, WebRtcSubtype.ICE_STATE, "connected"),
        (EventType.WEBRTC, WebRtcSubtype.DTLS_STATE, "connected"),
        (EventType.WEBRTC, WebRtcSubtype.PC_STATE, "webrtcup"),
        (EventType.PLUGIN, None, "started"),
        (EventType.HANDLE, None, "detached"),
        (EventType.SESSION, None, "destroyed"),
    ]
    positions = [names.index(item) for item in expected_order]
    assert positions == sorted(positions), names
    created = next(e for e in mine if e["type"] == EventType.SESSION)
    assert created["event"]["transport"]["transport"] == "janus.transport.http"
    attached = next(e for e in mine if e["type"] == EventType.HANDLE)
    assert (attached["handle_id"], attached["event"]["plugin"]) == (handle_id, "janus.plugin.streaming")
    pair = next(e for e in mine if e.get("subtype") == WebRtcSubtype.SELECTED_PAIR and e["type"] == EventType.WEBRTC)
    assert pair["event"]["selected-pair"].startswith("127.0.0.1:")
    remote = next(e for e in mine if e["type"] == EventType.JSEP and e["event"]["owner"] == "remote")
    assert remote["event"]["jsep"]["type"] == "answer" and remote["event"]["jsep"]["sdp"].startswith("v=0")
    assert stats["handle_id"] == handle_id and stats["event"]["media"][0]["packets-sent"] > 0
    assert "bandwidth-estimate" in stats["event"]["media"][0], "the viewer's estimate, null before its first feedback"
    core = [e for e in collector.events if e["type"] == EventType.CORE]
    assert core[0]["event"]["status"] == "started" and core[-1]["event"]["status"] == "shutdown"
    assert collector.refused == 0


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A collector that takes connections and never answers (the kernel accepts into its backlog)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/events"
    sock.close()


async def test_a_collector_that_never_answers_does_not_hold_up_the_stream(tmp_path: Path, black_hole: str) -> None:
    """Events pile up in a queue of 5, the rest are dropped and counted; viewers join and play."""
    addresses, metrics_port = events_config(tmp_path / "config", black_hole, queue_size=5)
    with FanoutProcess(tmp_path / "config"):
        async with aiohttp.ClientSession() as http:
            client = JanusHttpClient(http, addresses.janus_url)
            await client.create()
            viewers = [AiortcViewer(client), AiortcViewer(client)]
            try:
                for viewer in viewers:
                    await viewer.watch(1)
                for viewer in viewers:
                    media = await viewer.wait_for_frames(video=60, audio=50)
                    assert media.video_sizes == {(640, 360)}
            finally:
                for viewer in viewers:
                    await viewer.close()
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                text = await response.text()
            await client.close()
    samples = {
        (sample.name, sample.labels.get("handler")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    handler = "janus.eventhandler.sampleevh"
    assert samples[("fanout_events_dropped_total", handler)] > 0
    assert samples[("fanout_events_sent_total", handler)] == 0
