"""fanout bench cluster --scale: viewers held per edge at equal CPU shares, with 1, 2 and 3 edges.

An origin on 127.0.0.2 (not capped) with an RTP mountpoint fed by ``fanout bench
load``'s source (VP8-shaped video at ``--rate``, 30 fps, a keyframe a second, plus
Opus-sized audio; each packet stamped), and N edges (127.0.0.3, .4, .6) whose relay
mountpoints pull it (configured by hand: no Redis, placement is not what is measured).
Each edge process sits in a CPU cgroup of its own holding it to ``--edge-cpu`` of a
core (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` where v1 mounts the cpu
controller), over a 10 ms period so that a throttled edge stalls for milliseconds, not
for most of a 100 ms period.

``fanout bench load``'s cheap viewers (full ICE, DTLS-SRTP; the kernel counts their RTP)
join every edge alike, step by step. A step *holds* when, on every edge, the RTP lost
over all its viewers is at most 1 % of what the source sent and at least 95 % of its
viewers each lost at most 1 % (the worst-5 % rule), with at most 1 % of the joins
failed; a failing step is measured a second time before it counts. One edge: a coarse
ramp (x``--factor``) to the first failure, then back to the last step held and up in
steps of x``--fine-factor``. N edges: from 0.8 x the one-edge capacity per edge, up in
fine steps. Capacity: viewers of the last step held, over every edge. Reported: N-edge
capacity / (N x one-edge capacity), and the origin's CPU per edge relayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fanout_bench.cluster import Node, edge_mountpoint, free_port, write_node
from fanout_bench.load.pool import PoolConfig, ViewerPool
from fanout_bench.load.servers import raise_own_nofile
from fanout_bench.load.source import RtpSource, SourceShape

ORIGIN_IP = "127.0.0.2"
EDGE_IPS = ("127.0.0.3", "127.0.0.4", "127.0.0.6")
VIEWER_IP = "127.0.0.1"
CGROUP_PERIOD_US = 10_000
LOSS_THRESHOLD = 0.01
WORST_SHARE = 0.05  # the worst 5 % of viewers may each lose more than the threshold, no more


class CpuShare:
    """A CPU cgroup holding its processes to ``cores`` of a core."""

    def __init__(self, name: str, cores: float) -> None:
        try:
            self._make(name, cores)
        except OSError as error:
            raise SystemExit(f"--scale needs a CPU cgroup it can write (root; cgroup v2 with the cpu controller, "
                             f"or v1's /sys/fs/cgroup/cpu): {error}") from None  # fmt: skip

    def _make(self, name: str, cores: float) -> None:
        quota = max(1000, round(cores * CGROUP_PERIOD_US))
        unified = Path("/sys/fs/cgroup/cpu.max").parent
        if (unified / "cgroup.controllers").exists() and "cpu" in (unified / "cgroup.controllers").read_text().split():
            self.path = unified / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.max").write_text(f"{quota} {CGROUP_PERIOD_US}\n")
            self.kind = "cgroup v2 cpu.max"
        else:
            self.path = Path("/sys/fs/cgroup/cpu") / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text(f"{CGROUP_PERIOD_US}\n")
            (self.path / "cpu.cfs_quota_us").write_text(f"{quota}\n")
            self.kind = "cgroup v1 cpu.cfs_quota_us"
        self.setting = f"{quota} us per {CGROUP_PERIOD_US} us"

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def throttled_seconds(self) -> float:
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines() if line.strip())
        if "throttled_usec" in stat:
            return int(stat["throttled_usec"]) / 1e6
        return int(stat.get("throttled_time", 0)) / 1e9

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


@dataclass
class EdgeStep:
    edge: str
    viewers: int
    loss: float
    p95_viewer_loss: float  # the loss of the viewer at the 95th percentile (worst-5 % rule)
    worst_viewer_loss: float
    cpu_cores: float  # the edge process, over the window
    throttled_s: float  # time its cgroup spent throttled over the window
    delivered_gbps: float
    join_failures: int

    def holds(self) -> bool:
        failed = self.join_failures > LOSS_THRESHOLD * max(1, self.viewers)
        return self.loss <= LOSS_THRESHOLD and self.p95_viewer_loss <= LOSS_THRESHOLD and not failed


@dataclass
class ScaleStep:
    edges: int
    viewers_per_edge: int
    per_edge: list[EdgeStep]
    origin_cpu_cores: float
    source_pps: float
    held: bool = False
    remeasured: bool = False


@dataclass
class ScaleResults:
    machine: str
    rate_mbps: float
    edge_cpu: float  # cores per edge
    cpu_share: str = ""
    steps: list[ScaleStep] = field(default_factory=list)
    capacity: dict[int, int] = field(default_factory=dict)  # edges -> viewers held over all of them
    efficiency: dict[int, float] = field(default_factory=dict)  # edges -> capacity / (edges x one edge's)
    origin_cpu_per_edge: float | None = None  # cores per edge relayed (slope over the steps held)
    origin_idle_cpu: float | None = None  # cores, fed by the source, relaying to no edge yet

    def summary(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "per_edge": {n: round(c / n, 1) for n, c in self.capacity.items()},
            "efficiency": self.efficiency,
            "origin_cpu_per_edge_percent": None if self.origin_cpu_per_edge is None else round(100 * self.origin_cpu_per_edge, 3),
            "edge_cpu": self.edge_cpu,
            "cpu_share": self.cpu_share,
        }


def origin_mountpoint(audio_port: int, video_port: int) -> str:
    return (
        'match: { type = "rtp"\n id = 1\n description = "bench"\n media = (\n'
        f' {{ type = "audio", mid = "a", port = {audio_port}, pt = 111, codec = "opus" }},\n'
        f' {{ type = "video", mid = "v", port = {video_port}, pt = 96, codec = "vp8" }}) }}\n'
    )


@contextmanager
def capped_cluster(workdir: Path, edges: int, edge_cpu: float, rate: float) -> Iterator[tuple[Node, list[Node], list[CpuShare], RtpSource]]:
    audio_port, video_port = free_port(), free_port()
    origin = Node(workdir / "origin", ORIGIN_IP,
                  write_node(workdir / "origin", "origin", ORIGIN_IP, origin_mountpoint(audio_port, video_port)))  # fmt: skip
    started: list[Node] = []
    shares: list[CpuShare] = []
    source = RtpSource(SourceShape(rate), (ORIGIN_IP, video_port), (ORIGIN_IP, audio_port)).start()
    try:
        for number in range(edges):
            name, ip = f"edge-{number + 1}", EDGE_IPS[number]
            node = Node(workdir / name, ip, write_node(workdir / name, name, ip, edge_mountpoint(origin.control_url)))
            started.append(node)
            share = CpuShare(f"fanout-bench-{name}", edge_cpu)
            shares.append(share)
            share.add(node.process.pid)
        yield origin, started, shares, source
    finally:
        source.stop()
        for node in started:
            node.stop()
        origin.stop()
        for share in shares:
            share.remove()


class ScaleRun:
    def __init__(self, origin: Node, edges: list[Node], shares: list[CpuShare], source: RtpSource,
                 *, join_rate: float, settle: float, window: float) -> None:  # fmt: skip
        self.origin = origin
        self.edges = edges
        self.shares = shares
        self.source = source
        self.join_rate = join_rate
        self.settle = settle
        self.window = window
        self.pools = [ViewerPool(PoolConfig(url=edge.janus_url, mountpoint=1, host=VIEWER_IP,
                                            srtp_profile="AEAD_AES_128_GCM", concurrency=8)) for edge in edges]  # fmt: skip
        self.failures = [0] * len(edges)

    async def start(self) -> None:
        for pool in self.pools:
            await pool.start()

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close(graceful=False)

    async def set_viewers(self, per_edge: int) -> None:
        async def one(index: int, pool: ViewerPool) -> None:
            missing = per_edge - len(pool.viewers)
            if missing > 0:
                report = await pool.add(missing, self.join_rate)
                self.failures[index] = report.failed
                if report.errors:
                    print(f"  {self.edges[index].ip}: {report.failed} joins failed: {report.errors[0]}")
            while len(pool.viewers) > per_edge:
                viewer = pool.viewers.pop()
                viewer.close()
                await viewer.api.close()

        self.failures = [0] * len(self.edges)
        await asyncio.gather(*(one(index, pool) for index, pool in enumerate(self.pools)))

    async def measure(self, per_edge: int) -> ScaleStep:
        sent0 = self.source.sent()
        delivered0 = [pool.delivered() for pool in self.pools]
        cpu0 = [edge.cpu_seconds() for edge in self.edges]
        throttled0 = [share.throttled_seconds() for share in self.shares]
        origin0, start = self.origin.cpu_seconds(), time.monotonic()
        await asyncio.sleep(self.window)
        sent1 = self.source.sent()
        delivered1 = [pool.delivered() for pool in self.pools]
        elapsed = time.monotonic() - start
        origin_cpu = (self.origin.cpu_seconds() - origin0) / elapsed
        sent = sent1["video_packets"] + sent1["audio_packets"] - sent0["video_packets"] - sent0["audio_packets"]
        mean_size = (sent1["video_bytes"] + sent1["audio_bytes"] - sent0["video_bytes"] - sent0["audio_bytes"]) / max(1, sent)
        per_edge_steps = []
        for index, edge in enumerate(self.edges):
            before, after = delivered0[index], delivered1[index]
            counts = [after[i][0] - before[i][0] for i in before if i in after]
            losses = sorted(max(0.0, 1 - count / sent) for count in counts) if sent else [1.0]
            lost = sum(max(0, sent - count) for count in counts)
            per_edge_steps.append(EdgeStep(
                edge=edge.ip,
                viewers=len(self.pools[index].viewers),
                loss=round(lost / (sent * len(counts)), 5) if sent and counts else 1.0,
                p95_viewer_loss=round(losses[min(len(losses) - 1, math.ceil((1 - WORST_SHARE) * len(losses)) - 1)], 5),
                worst_viewer_loss=round(losses[-1], 5),
                cpu_cores=round((edge.cpu_seconds() - cpu0[index]) / elapsed, 3),
                throttled_s=round(self.shares[index].throttled_seconds() - throttled0[index], 3),
                delivered_gbps=round(sum(counts) * (mean_size + 28) * 8 / elapsed / 1e9, 3),  # SRTP adds ~28 B
                join_failures=self.failures[index],
            ))  # fmt: skip
        return ScaleStep(len(self.edges), per_edge, per_edge_steps, round(origin_cpu, 4), round(sent / elapsed, 1))

    async def step(self, per_edge: int, results: ScaleResults) -> ScaleStep:
        await self.set_viewers(per_edge)
        await asyncio.sleep(self.settle)
        step = await self.measure(per_edge)
        if not all(edge.holds() for edge in step.per_edge):
            step = await self.measure(per_edge)
            step.remeasured = True
        step.held = all(edge.holds() for edge in step.per_edge)
        results.steps.append(step)
        edges = ", ".join(
            f"{edge.edge} loss {100 * edge.loss:.2f}% (p95 viewer {100 * edge.p95_viewer_loss:.2f}%) cpu {edge.cpu_cores:.2f}"
            for edge in step.per_edge
        )
        print(f"{step.edges} edge(s) x {per_edge:4d} viewers: {edges}; origin cpu {step.origin_cpu_cores:.3f} "
              f"{'holds' if step.held else 'FAILS'}{' (measured twice)' if step.remeasured else ''}", flush=True)  # fmt: skip
        return step


def fine_targets(start: int, factor: float, ceiling: int) -> list[int]:
    targets = [start]
    while targets[-1] < ceiling:
        targets.append(max(targets[-1] + 2, math.ceil(targets[-1] * factor)))
    return targets


async def ramp_edges(run: ScaleRun, results: ScaleResults, *, start: int, factor: float, fine_factor: float,
                     coarse: bool, ceiling: int) -> int:  # fmt: skip
    """Viewers per edge of the last step held (0: none)."""
    held = 0
    if coarse:
        target = start
        while target <= ceiling:
            step = await run.step(target, results)
            if not step.held:
                break
            held, target = target, math.ceil(target * factor)
        if not held:
            return 0
    else:
        target = start
        for _ in range(4):  # the first fine step must hold: else start lower
            step = await run.step(target, results)
            if step.held:
                held = target
                break
            target = max(2, round(target * 0.8))
        if not held:
            return 0
    for target in fine_targets(held, fine_factor, ceiling)[1:]:
        step = await run.step(target, results)
        if not step.held:
            break
        held = target
    return held


def run_scale(*, edge_counts: list[int], edge_cpu: float, rate: float, start: int, factor: float, fine_factor: float,
              join_rate: float, settle: float, window: float, ceiling: int, machine: str, out: Path, png: Path) -> ScaleResults:  # fmt: skip
    raise_own_nofile()
    results = ScaleResults(machine=machine, rate_mbps=rate / 1e6, edge_cpu=edge_cpu)
    one_edge: int | None = None

    async def measure(origin: Node, edges: list[Node], shares: list[CpuShare], source: RtpSource) -> int:
        run = ScaleRun(origin, edges, shares, source, join_rate=join_rate, settle=settle, window=window)
        await run.start()
        if results.origin_idle_cpu is None:  # no viewer yet: no edge pulls a relay
            await asyncio.sleep(settle)
            origin0, began = origin.cpu_seconds(), time.monotonic()
            await asyncio.sleep(window)
            results.origin_idle_cpu = round((origin.cpu_seconds() - origin0) / (time.monotonic() - began), 4)
        try:
            if one_edge is None:
                return await ramp_edges(run, results, start=start, factor=factor, fine_factor=fine_factor, coarse=True, ceiling=ceiling)
            return await ramp_edges(run, results, start=max(2, round(0.8 * one_edge)), factor=factor,
                                    fine_factor=fine_factor, coarse=False, ceiling=ceiling)  # fmt: skip
        finally:
            await run.close()

    for count in edge_counts:
        with tempfile.TemporaryDirectory(prefix="fanout-bench-scale-") as workdir, \
                capped_cluster(Path(workdir), count, edge_cpu, rate) as (origin, edges, shares, source):  # fmt: skip
            results.cpu_share = f"{shares[0].kind}: {shares[0].setting}"
            per_edge = asyncio.run(measure(origin, edges, shares, source))
        if one_edge is None:
            one_edge = per_edge
        results.capacity[count] = per_edge * count
        if one_edge:
            results.efficiency[count] = round(per_edge * count / (count * one_edge), 3)
        print(f"{count} edge(s): {per_edge} viewers per edge held, {per_edge * count} in all", flush=True)
    held = [step for step in results.steps if step.held]
    if len({step.edges for step in held}) >= 2:
        # the origin's CPU against the edges it relays to, at the heaviest step held of each
        last = {step.edges: step.origin_cpu_cores for step in held}
        if results.origin_idle_cpu is not None:
            last[0] = results.origin_idle_cpu
        xs = sorted(last)
        results.origin_cpu_per_edge = round(statistics.linear_regression(xs, [last[x] for x in xs]).slope, 5)
    summary = results.summary()
    print(json.dumps(summary, indent=1))
    out.write_text(json.dumps({**asdict(results), "summary": summary}, indent=1) + "\n")
    plot_scale(results, png)
    print(f"wrote {out} and {png}")
    return results


def plot_scale(results: ScaleResults, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss, bars) = plt.subplots(1, 2, figsize=(12, 4.4))
    for count in sorted({step.edges for step in results.steps}):
        steps = sorted((step for step in results.steps if step.edges == count), key=lambda step: step.viewers_per_edge)
        xs = [step.viewers_per_edge for step in steps]
        worst = [100 * max(edge.loss for edge in step.per_edge) for step in steps]
        loss.plot(xs, worst, "o-", label=f"{count} edge(s): the worst edge's loss")
    loss.axhline(100 * LOSS_THRESHOLD, color="grey", linestyle=":", label="1 %")
    loss.set_yscale("symlog", linthresh=0.1)
    loss.set_ylim(bottom=0)
    loss.set_xlabel(f"viewers per edge ({results.rate_mbps:g} Mbit/s each)")
    loss.set_ylabel("RTP loss (%)")
    loss.set_title(f"each edge held to {results.edge_cpu:g} core ({results.cpu_share})", fontsize=9)
    loss.legend(fontsize=8)
    counts = sorted(results.capacity)
    one = results.capacity.get(1, 0)
    bars.bar([str(n) for n in counts], [results.capacity[n] for n in counts], label="viewers held at <= 1 % loss")
    bars.scatter([str(n) for n in counts], [n * one for n in counts], marker="_", s=2000, color="black", label="N x one edge", zorder=3)
    for index, n in enumerate(counts):
        if n in results.efficiency:
            bars.annotate(f"{results.efficiency[n]:.2f}", (index, results.capacity[n]), ha="center", va="bottom")
    bars.set_xlabel("edges")
    bars.set_ylabel("viewers held (all edges)")
    origin = results.origin_cpu_per_edge
    bars.set_title("capacity / (N x one edge)" + (f"; origin {100 * origin:.2f} % of a core per edge" if origin is not None else ""), fontsize=9)
    bars.legend(fontsize=8, loc="upper left")
    figure.suptitle(f"fanout bench cluster --scale ({results.machine})", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
