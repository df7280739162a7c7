"""The relay end to end: real fanout processes, an origin on 127.0.0.2 fed by the built-in
test source, an edge on 127.0.0.3 with a relay mountpoint configured by hand (no Redis),
and aiortc viewers on the edge that decode what they get.

Heavy: run under ``flock /tmp/fanout-heavy.lock``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aioice.ice
import pytest

from tests.cluster.lossy_link import LossyLink
from tests.cluster.nodes import (
    EDGE_IP,
    ORIGIN_IP,
    ORIGIN_MOUNTPOINT,
    SECRET,
    Node,
    eventually,
    metric,
    relay_mountpoint,
    write_node,
)
from fanout.sources import testsource
from tests.support.aiortc_viewer import AiortcViewer
from tests.support.encoders import running as running_process
from tests.support.janus_client import janus_session
from tests.support.ports import free_ports
from tests.support.server import FanoutProcess

RELAYS = 'mountpoint="1"'  # the origin's engine peers of mountpoint 1: its relays (no viewer watches there)


@pytest.fixture(autouse=True)
def loopback_only_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice leaves 127.0.0.1 out of its host candidates; make it gather only that."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@contextmanager
def running(node: Node) -> Iterator[FanoutProcess]:
    with FanoutProcess(node.folder) as process:
        yield process


@asynccontextmanager
async def viewer_on(node: Node) -> AsyncIterator[AiortcViewer]:
    async with janus_session(node.janus_url) as client:
        viewer = AiortcViewer(client)
        try:
            yield viewer
        finally:
            await viewer.close()


def origin_node(tmp_path: Path) -> Node:
    return write_node(tmp_path / "origin", "origin", ORIGIN_IP, ORIGIN_MOUNTPOINT)


def edge_node(tmp_path: Path, origin_url: str, *, secret: str = SECRET) -> Node:
    return write_node(tmp_path / "edge", "edge-1", EDGE_IP, relay_mountpoint(origin_url), secret=secret)


async def relays_of(origin: Node) -> float | None:
    return await metric(origin, "fanout_viewers", RELAYS)


async def test_viewers_on_the_edge_decode_the_origins_stream_over_one_relay_which_lingers_then_goes(
    tmp_path: Path,
) -> None:
    origin = origin_node(tmp_path)
    edge = edge_node(tmp_path, origin.control_url)
    with running(origin) as origin_process, running(edge):
        assert await relays_of(origin) == 0  # nobody watches on the edge: nothing is pulled
        async with viewer_on(edge) as first:
            await first.watch(1)
            await first.wait_for_frames(video=30, audio=30)
            async with viewer_on(edge) as second:
                await second.watch(1)
                await second.wait_for_frames(video=30, audio=30)
                assert await relays_of(origin) == 1  # the second viewer rides the same relay
        # Both left: the relay stays relay_linger (2 s), then the edge tears it down.
        await eventually(lambda: relays_of(origin), lambda relays: relays == 0, what="the relay's teardown")
        await eventually(
            _async(lambda: "tore it down" in origin_process.output), bool, what="the origin's teardown log line"
        )


async def test_loss_on_the_relay_link_is_recovered_by_nack_before_the_viewer_sees_it(tmp_path: Path) -> None:
    """Every 20th video packet from the origin is lost on the way: the edge NACKs it, the origin
    sends it again, and the watching viewer counts no loss. (From the viewer's start on: a packet
    still being recovered while the edge bursts its keyframe cache to a joining viewer is not
    sent to that viewer; the engine's burst leaves late packets out.)"""
    origin = origin_node(tmp_path)
    link = LossyLink(origin.control_url, SECRET, "127.0.0.4", drop_every=20)
    edge = edge_node(tmp_path, link.control_url)
    await link.start()
    try:
        with running(origin), running(edge):
            async with viewer_on(edge) as viewer:
                await viewer.watch(1)
                await viewer.wait_for_frames(video=30, audio=30, timeout=40)
                lost_at_start, dropped_at_start = await video_packets_lost(viewer), link.counts.dropped_video
                await eventually(
                    _async(lambda: link.counts.dropped_video - dropped_at_start >= 10), bool, timeout=40,
                    what="ten more video packets lost on the relay link",
                )  # fmt: skip
                frames = viewer.media.video_frames
                await viewer.wait_for_frames(video=frames + 30, audio=0)
                await eventually(
                    lambda: video_packets_lost(viewer), lambda lost: lost <= lost_at_start, what="no new video loss"
                )
    finally:
        await link.stop()


async def test_an_edge_with_another_secret_is_refused_and_relays_nothing(tmp_path: Path) -> None:
    origin = origin_node(tmp_path)
    edge = edge_node(tmp_path, origin.control_url, secret="not the cluster's secret at all")
    with running(origin) as origin_process, running(edge) as edge_process:
        async with viewer_on(edge) as viewer:
            await viewer.watch(1)
            await eventually(
                _async(lambda: "refused a message" in origin_process.output and "unauthentic" in origin_process.output),
                bool, what="the origin's refusal",
            )  # fmt: skip
            await eventually(_async(lambda: "answered 403" in edge_process.output), bool, what="the edge's log line")
            assert await relays_of(origin) == 0
            assert viewer.media.video_frames == 0


async def test_an_origin_restarted_under_a_watching_viewer_resumes_without_renegotiation(tmp_path: Path) -> None:
    origin = origin_node(tmp_path)
    edge = edge_node(tmp_path, origin.control_url)
    with running(edge) as edge_process:
        async with viewer_on(edge) as viewer:
            with running(origin):
                await viewer.watch(1)
                await viewer.wait_for_frames(video=30, audio=30)
            before = viewer.media.video_frames
            with running(origin):
                await viewer.wait_for_frames(video=before + 60, audio=0, timeout=40)
                assert viewer.pc.connectionState == "connected"
                assert await relays_of(origin) == 1
            # Continuous numbering: the packets the origin did not send while it was down are no gap.
            assert await video_packets_lost(viewer) < 50
            assert "asking again" in edge_process.output


async def video_packets_lost(viewer: AiortcViewer) -> int:
    report = await viewer.pc.getStats()
    return sum(stats.packetsLost for stats in report.values() if stats.type == "inbound-rtp" and stats.kind == "video")


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return check()

    return probe


SIZES = [(320, 180), (480, 272), (640, 360)]  # substreams 0, 1, 2


def simulcast_mountpoint(ports: list[int]) -> str:
    return f"""
simulcast: {{
	type = "rtp"
	id = 1
	description = "three encodings"
	media = (
		{{ type = "video", mid = "v", pt = 96, codec = "vp8", port = {ports[0]}, simulcast = true,
		   port2 = {ports[1]}, port3 = {ports[2]} }}
	)
}}
"""


SIMULCAST_RELAY = """
simulcast-relay: {{
	type = "relay"
	id = 1
	relay_url = "{url}"
	media = (
		{{ type = "video", mid = "v", pt = 96, codec = "vp8", simulcast = true }}
	)
}}
"""


async def test_every_simulcast_encoding_crosses_the_relay_and_the_edges_viewer_moves_between_them(
    tmp_path: Path,
) -> None:
    ports = free_ports(3)
    origin = write_node(tmp_path / "origin", "origin", ORIGIN_IP, simulcast_mountpoint(ports))
    edge = write_node(tmp_path / "edge", "edge-1", EDGE_IP, SIMULCAST_RELAY.format(url=origin.control_url))
    encoders = [
        testsource.testsource_command("127.0.0.1", video_port=port, audio_port=0, width=width, height=height, fps=15,
                                      keyframe_interval=1.0, bitrate=bitrate)
        for port, (width, height), bitrate in zip(ports, SIZES, (150_000, 250_000, 400_000), strict=True)
    ]  # fmt: skip
    with running(origin), running(edge), running_process(encoders[0]), running_process(encoders[1]), \
            running_process(encoders[2]):  # fmt: skip
        async with viewer_on(edge) as viewer:
            await viewer.watch(1)
            await viewer.wait_for_frames(video=10, audio=0)
            await sizes_after(viewer, {SIZES[2]})  # the highest by default
            ack = await viewer.client.message(viewer.handle_id, {"request": "configure", "mid": "v", "substream": 0})
            assert ack["janus"] == "ack", ack
            await sizes_after(viewer, {SIZES[0]})
            assert await relays_of(origin) == 1


async def sizes_after(viewer: AiortcViewer, sizes: set[tuple[int, int]]) -> None:
    """Wait until the viewer decodes only frames of ``sizes`` (ten in a row)."""

    async def recent_sizes() -> set[tuple[int, int]]:
        viewer.media.video_sizes.clear()
        await viewer.wait_for_frames(video=viewer.media.video_frames + 10, audio=0)
        return set(viewer.media.video_sizes)

    await eventually(recent_sizes, lambda seen: seen == sizes, what=f"frames of {sizes}")


async def test_an_edge_pulls_from_another_edge_in_a_tree(tmp_path: Path) -> None:
    """origin -> edge-1 -> edge-2: edge-1's relay mountpoint is the origin of edge-2's."""
    origin = origin_node(tmp_path)
    middle = edge_node(tmp_path, origin.control_url)
    leaf = write_node(tmp_path / "leaf", "edge-2", "127.0.0.6", relay_mountpoint(middle.control_url))
    with running(origin), running(middle), running(leaf):
        async with viewer_on(leaf) as viewer:
            await viewer.watch(1)
            await viewer.wait_for_frames(video=30, audio=30)
            assert await relays_of(origin) == 1
            assert await metric(middle, "fanout_viewers", RELAYS) == 1  # edge-2's relay, no viewer of its own
