"""fanout bench cluster --failover: viewers of an edge killed with SIGKILL, watching again elsewhere.

A redis-server on 127.0.0.1, an origin on 127.0.0.2 (the built-in test source, VP8 +
Opus, a keyframe a second; it takes no viewers) and ``--edges`` edges on 127.0.0.3,
127.0.0.4, 127.0.0.6, every node with the cluster settings' defaults (heartbeat,
node_ttl) unless given. ``--viewers`` bench viewers (``fanout bench load``'s: ICE,
DTLS-SRTP, SRTP decrypted) each do what the demo page does: ask the origin's
``/cluster/placement``, watch on the node it names over the Janus API's WebSocket.
Placement puts them all on the edge that already relays the mountpoint; that edge
is then lost, two ways, each on a fresh cluster:

- ``kill``: SIGKILL, the process gone; its kernel closes its TCP connections, so the
  viewers' WebSockets close at once;
- ``freeze``: SIGSTOP, a node that hangs or drops off the network: no FIN, no media,
  so the viewers notice from the media's silence alone;
- ``freeze-no-avoid``: the same, the viewers asking placement without ``avoid`` (as a
  WHEP player that POSTs again and follows the 307 does): placement may name the hung
  node until its record expires (``node_ttl``) and the nodes read the registry again
  (``heartbeat_interval``); a watch there times out after ``JOIN_TIMEOUT``.

Each viewer notices the loss as a real client does (its
WebSocket closes, or no media for ``MEDIA_TIMEOUT``), asks placement again with
``avoid=<lost node>`` and watches on the node named, until video flows. Recorded per
viewer, from the kill: noticed, placed, first video packet (servers start video at
a keyframe: the first packet is the start of a decodable frame).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from fanout.webrtc.dtls import DtlsCertificate
from fanout_bench.cluster import Node, free_port, origin_mountpoint, wait_for, write_node
from fanout_bench.load.signaling import WebSocketJanus
from fanout_bench.load.viewer import JoinError, Viewer

MOUNTPOINT = 1
VIEWER_IP = "127.0.0.1"
ORIGIN_IP = "127.0.0.2"
EDGE_IPS = ("127.0.0.3", "127.0.0.4", "127.0.0.6")
MEDIA_TIMEOUT = 1.0  # seconds without a packet before a viewer gives its node up
WATCH_TICK = 0.02
CONSENT_INTERVAL = 2.0
RETRY_DELAY = 0.25  # as the demo page's RECONNECT_DELAY_MS
GIVE_UP = 60.0
JOIN_TIMEOUT = 3.0  # a watch on a node that does not answer is given up after this long
MODES = ("kill", "freeze", "freeze-no-avoid")


@dataclass
class Failover:
    """One viewer's way back, seconds from the kill."""

    noticed: float  # its WebSocket closed or its media stopped
    how: str  # "websocket" or "media"
    placed: float  # placement answered with a surviving node
    playing: float  # the first video packet from that node
    node: str
    attempts: int


@dataclass
class FailoverResults:
    mode: str  # "kill" or "freeze"
    viewers: int
    edges: int
    heartbeat_interval: float | None
    node_ttl: float | None
    killed: str = ""
    failovers: list[Failover] = field(default_factory=list)
    failed: int = 0

    def summary(self) -> dict[str, Any]:
        back = [failover.playing for failover in self.failovers]
        if not back:
            return {"failed": self.failed}
        return {
            "viewers_back": len(back),
            "failed": self.failed,
            "p50_s": round(statistics.median(back), 3),
            "p95_s": round(percentile(back, 95), 3),
            "max_s": round(max(back), 3),
            "noticed_p50_s": round(statistics.median(f.noticed for f in self.failovers), 3),
            "placed_p50_s": round(statistics.median(f.placed for f in self.failovers), 3),
            "moved_to": sorted({f.node for f in self.failovers}),
        }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


class RedisProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._answers, 10, "redis-server")

    def _answers(self) -> bool:
        reply = subprocess.run(["redis-cli", "-p", str(self.port), "PING"], capture_output=True, text=True)
        return reply.stdout.strip() == "PONG"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@contextmanager
def redis_cluster(workdir: Path, edges: int, cluster_options: str) -> Iterator[tuple[Node, list[Node]]]:
    """redis-server, the origin and ``edges`` edges, all registered in Redis."""
    redis = RedisProcess()
    started: list[Node] = []
    try:
        ports = write_node(workdir / "origin", "origin", ORIGIN_IP, origin_mountpoint(), redis_url=redis.url,
                           cluster=f" accept_viewers = false\n{cluster_options}")  # fmt: skip
        origin = Node(workdir / "origin", ORIGIN_IP, ports)
        started.append(origin)
        for number in range(edges):
            name, ip = f"edge-{number + 1}", EDGE_IPS[number]
            ports = write_node(workdir / name, name, ip, "", redis_url=redis.url, cluster=cluster_options)
            started.append(Node(workdir / name, ip, ports))
        yield origin, started[1:]
    finally:
        for node in reversed(started):
            node.stop()
        redis.stop()


class FailoverViewer:
    """A bench viewer that follows placement, as the demo page does."""

    def __init__(self, http: aiohttp.ClientSession, placement_url: str, certificate: DtlsCertificate, *, avoid_lost: bool = True) -> None:
        self.http = http
        self.avoid_lost = avoid_lost
        self.placement_url = placement_url
        self.certificate = certificate
        self.viewer: Viewer | None = None
        self.api: WebSocketJanus | None = None
        self.node = ""
        self._last_count = 0
        self._last_packet = 0.0

    async def place(self, avoid: str = "") -> dict[str, Any] | None:
        url = self.placement_url + (f"&avoid={avoid}" if avoid else "")
        try:
            async with self.http.get(url) as response:
                if response.status != 200:
                    return None
                placement: dict[str, Any] = await response.json()
                return placement
        except aiohttp.ClientError:
            return None

    async def watch(self, placement: dict[str, Any]) -> None:
        """Watch on the node placed (JoinError if it fails)."""
        self.api = WebSocketJanus(self.http, placement["websocket_url"], timeout=JOIN_TIMEOUT)
        self.viewer = Viewer(self.api, mountpoint=MOUNTPOINT, host=VIEWER_IP, certificate=self.certificate,
                             srtp_profile="AEAD_AES_128_GCM", sample=True)  # fmt: skip
        await self.viewer.join()
        self.node = placement["node"]
        self._last_count = 0
        self._last_packet = time.monotonic()

    async def join(self) -> None:
        placement = await self.place()
        if placement is None:
            raise JoinError("placement did not answer")
        await self.watch(placement)

    def packets(self) -> int:
        meter = self.viewer.meter if self.viewer is not None else None
        return meter.total_rtp if meter is not None else 0

    def lost(self, now: float) -> str | None:
        """Why this viewer's node is lost, if it is."""
        if self.api is not None and self.api.closed:
            return "websocket"
        count = self.packets()
        if count != self._last_count:
            self._last_count, self._last_packet = count, now
        elif now - self._last_packet > MEDIA_TIMEOUT:
            return "media"
        return None

    async def fail_over(self, killed_at: float) -> Failover:
        """Wait for the loss, then placement and watch again until video flows; seconds from ``killed_at``."""
        next_consent = 0.0
        while (how := self.lost(time.monotonic())) is None:
            if time.monotonic() > next_consent and self.viewer is not None:
                self.viewer.send_consent()
                next_consent = time.monotonic() + CONSENT_INTERVAL
            await asyncio.sleep(WATCH_TICK)
        noticed = time.monotonic() - killed_at
        lost_node, attempts = self.node, 0
        self.close()
        while time.monotonic() - killed_at < GIVE_UP:
            attempts += 1
            placement = await self.place(avoid=lost_node if self.avoid_lost else "")
            if placement is None or (self.avoid_lost and placement["node"] == lost_node):
                await asyncio.sleep(RETRY_DELAY)
                continue
            placed = time.monotonic() - killed_at
            try:
                await asyncio.wait_for(self.watch(placement), JOIN_TIMEOUT)
            except (JoinError, TimeoutError):
                self.close()
                await asyncio.sleep(RETRY_DELAY)
                continue
            return Failover(round(noticed, 4), how, round(placed, 4), round(time.monotonic() - killed_at, 4), self.node, attempts)
        raise JoinError(f"not watching again within {GIVE_UP} s")

    def close(self) -> None:
        if self.viewer is not None:
            self.viewer.close()
        if self.api is not None:
            api, self.api = self.api, None
            asyncio.get_running_loop().create_task(api.close())


async def measure_failover(origin: Node, edges: list[Node], results: FailoverResults) -> None:
    """Viewers on, the edge with the most of them lost (``results.mode``), their way back timed."""
    certificate = DtlsCertificate.generate()
    placement_url = f"{origin.control_url}/cluster/placement?mountpoint={MOUNTPOINT}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        viewers: list[FailoverViewer] = []
        deadline = time.monotonic() + 30
        while len(viewers) < results.viewers:  # one at a time, as people arrive: they join the relaying edge
            viewer = FailoverViewer(http, placement_url, certificate, avoid_lost=results.mode != "freeze-no-avoid")
            try:
                await viewer.join()
            except JoinError as error:
                viewer.close()
                if time.monotonic() > deadline:
                    raise SystemExit(f"viewers could not join: {error}") from None
                await asyncio.sleep(0.5)  # the edges are not in the registry yet
                continue
            viewers.append(viewer)
        by_node: dict[str, int] = {}
        for viewer in viewers:
            by_node[viewer.node] = by_node.get(viewer.node, 0) + 1
        print(f"viewers by node: {by_node}")
        killed = max(by_node, key=lambda name: by_node[name])
        results.killed = killed
        await asyncio.sleep(2.0)  # watching steadily
        victims = [viewer for viewer in viewers if viewer.node == killed]
        lost = next(edge for edge in edges if edge.ip == edge_ip(killed))
        if results.mode == "kill":
            lost.kill()
        else:
            os.kill(lost.process.pid, signal.SIGSTOP)
        killed_at = time.monotonic()
        outcomes = await asyncio.gather(*(viewer.fail_over(killed_at) for viewer in victims), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Failover):
                results.failovers.append(outcome)
            else:
                results.failed += 1
                print(f"a viewer did not come back: {outcome}")
        for viewer in viewers:
            viewer.close()
        await asyncio.sleep(0.5)  # the WebSocket closes go out
        lost.kill()


def edge_ip(name: str) -> str:
    return EDGE_IPS[int(name.removeprefix("edge-")) - 1]


def plot_failover(results: FailoverResults, axes: Any) -> None:
    failovers = sorted(results.failovers, key=lambda failover: failover.playing)
    ranks = range(1, len(failovers) + 1)
    axes.step([f.playing for f in failovers], ranks, where="post", label="video again (first packet, a keyframe)")
    axes.step(sorted(f.placed for f in failovers), ranks, where="post", label="placed on a surviving edge")
    axes.step(sorted(f.noticed for f in failovers), ranks, where="post", label="noticed the loss")
    summary = results.summary()
    if "p95_s" in summary:
        axes.axvline(summary["p95_s"], color="grey", linestyle=":", label=f"p95 {summary['p95_s']:.2f} s")
    axes.set_xlabel("seconds from the loss of the edge")
    axes.set_ylabel("viewers")
    how = {"kill": "SIGKILL", "freeze": "SIGSTOP (hung)", "freeze-no-avoid": "SIGSTOP, placement without avoid"}[results.mode]
    axes.set_title(f"{results.killed} lost by {how}: {len(failovers)} viewers, {results.edges} edges", fontsize=9)
    axes.set_xlim(left=0)
    axes.legend(loc="center", fontsize=8)


def run_failover(*, viewers: int, edges: int, heartbeat_interval: float | None, node_ttl: float | None,
                 machine: str, out: Path, png: Path, modes: tuple[str, ...] = MODES) -> list[FailoverResults]:  # fmt: skip
    """Both ways of losing the edge, each on a fresh cluster; JSON and PNG written."""
    options = "".join(
        f" {name} = {value}\n" for name, value in (("heartbeat_interval", heartbeat_interval), ("node_ttl", node_ttl)) if value is not None
    )
    runs = []
    for mode in modes:
        results = FailoverResults(mode, viewers, edges, heartbeat_interval, node_ttl)
        with tempfile.TemporaryDirectory(prefix="fanout-bench-failover-") as workdir, \
                redis_cluster(Path(workdir), edges, options) as (origin, edge_nodes):  # fmt: skip
            asyncio.run(measure_failover(origin, edge_nodes, results))
        print(f"{mode}: {json.dumps(results.summary())}", flush=True)
        runs.append(results)
    document = {"machine": machine, "media_timeout_s": MEDIA_TIMEOUT, "retry_delay_s": RETRY_DELAY,
                "runs": [asdict(results) | {"summary": results.summary()} for results in runs]}  # fmt: skip
    out.write_text(json.dumps(document, indent=1) + "\n")

    plot_runs(runs, machine, png)
    print(f"wrote {out} and {png}")
    return runs


def plot_runs(runs: list[FailoverResults], machine: str, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.2), squeeze=False)
    for results, each in zip(runs, axes[0], strict=True):
        plot_failover(results, each)
    figure.suptitle(f"fanout bench cluster --failover ({machine})", fontsize=10)
    figure.tight_layout()
    figure.savefig(png, dpi=110)
