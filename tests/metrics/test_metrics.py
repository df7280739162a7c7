"""The Prometheus endpoint of a real ``fanout serve`` while a real aiortc viewer watches:
parsed with prometheus-client's own text-format parser."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import aiohttp
import aioice.ice
import pytest
from fanout.metrics.collector import make_registry
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.core.harness import Core
from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient
from tests.support.ports import free_ports
from tests.support.server import DEMO_MOUNTPOINT, FanoutProcess, write_config

if TYPE_CHECKING:
    from fanout.cluster.node import ClusterNode


@pytest.fixture
def loopback_only_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def until_sampled(
    http: aiohttp.ClientSession, url: str, key: tuple[str, tuple[tuple[str, str], ...]], timeout: float = 20.0
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples once ``key`` is above zero (within ``timeout`` seconds)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with http.get(url) as response:
            sampled = samples(await response.text())
        if sampled.get(key, 0) > 0:
            return sampled
        assert asyncio.get_running_loop().time() < deadline, f"{key} still 0 after {timeout} s"
        await asyncio.sleep(0.2)


@pytest.mark.usefixtures("loopback_only_ice")
async def test_metrics_show_a_watching_viewer(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    (metrics_port,) = free_ports(1)
    addresses = write_config(folder, DEMO_MOUNTPOINT)
    path = folder / "janus.jcfg"
    path.write_text(path.read_text().replace("fanout: {\n", f"fanout: {{\n\tmetrics_port = {metrics_port}\n", 1))
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with FanoutProcess(folder):
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as response:
                assert response.headers["Content-Type"].startswith("text/plain; version=")
                before = samples(await response.text())
            client = JanusHttpClient(http, addresses.janus_url)
            await client.create()
            viewer = AiortcViewer(client)
            try:
                await viewer.watch(1)
                await viewer.wait_for_frames(video=30, audio=30)
                during = await until_sampled(http, url, ("fanout_webrtc_socket_datagrams_total", (("fate", "rtcp_read"),)))
            finally:
                await viewer.close()
                await client.close()
    mountpoint = (("mountpoint", "1"),)
    assert before[("fanout_viewers", mountpoint)] == 0
    assert during[("fanout_viewers", mountpoint)] == 1
    assert during[("fanout_delivered_packets_total", mountpoint)] > 0
    assert during[("fanout_delivered_bits_total", mountpoint)] > 8 * 1000
    assert during[("fanout_source_packets_total", mountpoint)] > 0
    assert during[("fanout_dropped_packets_total", mountpoint)] == 0
    assert ("fanout_dropped_late_packets_total", mountpoint) in during
    assert ("fanout_worker_dropped_late_total", (("worker", "0"),)) in during
    assert ("fanout_retransmissions_total", mountpoint) in during
    assert ("fanout_send_errors_total", mountpoint) in during
    for ingest_counter in ("source_undecryptable", "source_collisions", "h264_parameter_sets_inserted",
                           "skew_dropped_packets", "source_lost_packets"):  # fmt: skip
        assert during[(f"fanout_{ingest_counter}_total", mountpoint)] == 0
    assert during[("fanout_sessions", ())] == 1
    assert during[("fanout_peerconnections", ())] == 1
    assert during[("fanout_join_latency_seconds_count", ())] == 1
    assert during[("fanout_webrtc_up_total", ())] == 1
    assert during[("fanout_dtls_handshake_failures_total", ())] == 0
    assert sum(value for (name, _), value in during.items() if name == "fanout_worker_viewers") == 1
    assert any(name == "fanout_worker_busy_seconds_total" for name, _ in during)
    # The viewer's consent checks and DTLS went to the control plane; its RTCP stayed in the engine.
    assert during[("fanout_webrtc_socket_datagrams_total", (("fate", "forwarded"),))] > 0
    assert during[("fanout_webrtc_socket_datagrams_total", (("fate", "rtcp_refused"),))] == 0
    assert during[("fanout_webrtc_socket_datagrams_total", (("fate", "dropped"),))] == 0


async def test_dtls_failures_and_hangups_are_counted_by_reason() -> None:
    core = Core()
    registry, metrics = make_registry(core.gateway)
    session = await core.session()
    handle = await core.handle(session)
    metrics.webrtc_hangup(handle, "DTLS handshake failed")
    metrics.webrtc_hangup(handle, "Close PC")
    text = samples(generate_latest(registry).decode())
    assert text[("fanout_dtls_handshake_failures_total", ())] == 1
    assert text[("fanout_hangups_total", (("reason", "Close PC"),))] == 1
    assert text[("fanout_handles", ())] == 1


class FakeClusterNode:
    """What make_registry takes of a cluster node: its name and its own metrics."""

    name = "edge-1"

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("fanout_cluster_nodes", "nodes in the cluster view", value=3)


async def test_in_a_cluster_every_sample_carries_the_node_name() -> None:
    core = Core()
    registry, metrics = make_registry(core.gateway, cast("ClusterNode", FakeClusterNode()))
    session = await core.session()
    metrics.webrtc_hangup(await core.handle(session), "Close PC")
    text = samples(generate_latest(registry).decode())
    assert text[("fanout_cluster_nodes", (("node", "edge-1"),))] == 3
    assert text[("fanout_hangups_total", (("node", "edge-1"), ("reason", "Close PC")))] == 1
    assert text[("fanout_handles", (("node", "edge-1"),))] == 1
    assert all(("node", "edge-1") in labels for _, labels in text)


async def test_a_standalone_node_has_no_node_label_and_no_cluster_metrics() -> None:
    registry, _ = make_registry(Core().gateway)
    text = samples(generate_latest(registry).decode())
    assert not [name for name, labels in text if name.startswith("fanout_cluster") or "node" in dict(labels)]
