"""Ramping viewers up against one server until delivery falls below the loss threshold.

Each step joins viewers at a steady rate, lets the server settle, then
measures a window: what the source sent, what each cheap viewer's socket was
delivered (kernel counters), what the sample viewers decrypted, and the
server's CPU time. A step *holds* when the worst 5% of viewers lose at most
the threshold (the 95th percentile of per-viewer loss), the sample viewers'
p99 added latency (source send stamp to the datagram's arrival at the
viewer's socket, stamped by the kernel) is at most the latency bound, and at
most the loss threshold's share of the step's joins failed; a step that fails
is measured once more before the ramp stops (a neighbour's burst on a shared
core should not end a run). The capacity is the largest step held.

A cheap viewer's RTP is counted by the kernel alone (its socket filter drops
every RTP datagram and the socket's drop counter counts them); the sample
viewers count what they decrypt. Both ends of a window are read while the
source is held (:data:`BOUNDARY_DRAIN`), so a packet still on its way is
never counted as lost.

With transport feedback (``feedback``) every viewer sends it every 100 ms
(:mod:`fanout_bench.load.feedback`); each step records how many messages the
cheap viewers sent and, from the Admin API's ``handle_info`` of one of them,
what the server made of them (the messages its engine read, its estimate).
"""

from __future__ import annotations

import asyncio
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from fanout_bench.load.kernel import (
    core_times,
    process_cpu_seconds,
    softnet_dropped,
    thread_cpu_seconds,
    udp_port_drops,
)
from fanout_bench.load.pool import (
    JoinReport,
    PoolConfig,
    SamplePool,
    ViewerPool,
    summarize_latency,
)
from fanout_bench.load.servers import AUDIO_PORT, MOUNTPOINT, VIDEO_PORT, WEBRTC_PORT, Server
from fanout_bench.load.source import RtpSource


# At each end of a window the source is held this long before the counts are read: a packet not at its
# viewer by then counts as lost (fanout drops what cannot leave within max_send_delay_ms, 100 by default).
BOUNDARY_DRAIN = 0.15


@dataclass(frozen=True)
class RampPlan:
    start: int = 20
    factor: float = 1.25
    min_step: int = 10
    max_viewers: int = 4000
    join_rate: float = 40.0
    samples: int = 4
    settle: float = 3.0
    window: float = 5.0
    loss_threshold: float = 0.01
    latency_bound_ms: float = 50.0
    transport: str = "http"
    keepalive: float = 25.0

    def targets(self) -> list[int]:
        targets = [max(self.start, self.samples + 1)]
        while targets[-1] < self.max_viewers:
            following = max(targets[-1] + self.min_step, math.ceil(targets[-1] * self.factor))
            targets.append(min(following, self.max_viewers))
        return targets


@dataclass
class Step:
    viewers: int
    joined: int = 0
    join_failures: int = 0
    join_errors: list[str] = field(default_factory=list)
    window_s: float = 0.0  # the time the source sent: rates are per second of it
    cpu_wall_s: float = 0.0  # the sending and the drain after it: CPU and core figures are per second of it
    source_pps: float = 0.0
    delivered_pps: float = 0.0
    delivered_gbps: float = 0.0
    loss: float = 0.0
    sample_loss: float = 0.0
    worst_viewer_loss: float = 0.0
    # Per-viewer loss (cheap and sample viewers): p50, p95 (the capacity rule's), p99, max, mean of the worst 5%.
    viewer_loss: dict[str, float] = field(default_factory=dict)
    server_cpu: float = 0.0  # cores, the server process (all its threads), with the softirq work done in its context
    core_softirq: float = 0.0  # cores, irq + softirq on the server's core (tick-sampled: overlaps server_cpu)
    core_busy: float = 0.0  # cores, everything on the server's core
    load_core_busy: float = 0.0  # cores, everything on the load's core (viewers, source, and any neighbour)
    cpu_per_gbps: float | None = None
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    jitter_ms: float | None = None
    ttf_video_packet_s: dict[str, float | None] = field(default_factory=dict)
    ttf_frame_s: list[float] = field(default_factory=list)
    other_per_viewer: float = 0.0
    softnet_drops: int = 0
    viewers_counted: int = 0  # viewers whose counters were read at both ends of the window
    server_input_drops: int = 0  # source RTP the server's input sockets dropped (receive buffer full)
    server_webrtc_drops: int = 0  # what fanout's WebRTC socket dropped (STUN, RTCP in; Janus binds other ports)
    sample_socket_drops: int = 0  # what the sample viewers' sockets dropped (their reader fell behind: the load side)
    # The sample viewers' latency split: keyframe packets (the longest burst to fan out), and the rest.
    latency_keyframes_ms: dict[str, float | None] = field(default_factory=dict)
    latency_rest_ms: dict[str, float | None] = field(default_factory=dict)
    read_delay_ms: dict[str, float | None] = field(default_factory=dict)  # kernel arrival to the sample viewer's read
    server_threads_cpu: dict[str, float] = field(default_factory=dict)  # cores, by thread name
    engine: dict[str, float] = field(default_factory=dict)  # fanout's own counters over the window (see servers)
    # Transport feedback: messages each cheap viewer sent per second of the window, packets per message, and
    # one viewer's handle_info once measured: the messages the server's engine read of it, its estimate (bit/s).
    feedback_per_viewer_s: float = 0.0
    feedback_packets_per_message: float = 0.0
    feedback_probe: dict[str, Any] = field(default_factory=dict)
    held: bool = False
    remeasured: bool = False


@dataclass
class Ramp:
    server: str
    rate: str
    srtp: str
    transport: str
    route: str = "udp/ipv4"  # the viewers' media path: ICE transport and address family
    feedback: str = "off"  # "twcc": every viewer sends transport-wide feedback
    steps: list[Step] = field(default_factory=list)
    capacity: int = 0
    capacity_limited_by: str = ""  # "loss", "latency", "max_viewers", "joins"
    server_version: str = ""
    engine: dict[str, str] = field(default_factory=dict)  # fanout: the engine binary this ramp ran

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    return {
        "p50": ordered[len(ordered) // 2],
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
    }


def _ms(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def loss_distribution(losses: list[float]) -> dict[str, float]:
    """Per-viewer loss: percentiles (nearest rank) and the mean of the worst 5% of viewers."""
    if not losses:
        return {}
    ordered = sorted(losses)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    worst = ordered[-max(1, math.ceil(0.05 * len(ordered))) :]
    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": ordered[-1], "worst_5pct_mean": statistics.fmean(worst)}


def cpu_per_gbps(server_cpu: float, gbps: float) -> float | None:
    """CPU seconds of the server per Gbit delivered.

    The server process's time alone: this kernel samples irq and softirq time
    by tick and also charges it to the task it interrupted, so the softirq work
    of loopback delivery done in the server's context is already in it (adding
    the core's softirq column would count it twice: the two summed exceed one
    core at saturation).
    """
    return server_cpu / gbps if gbps > 0 else None


class RampRunner:
    def __init__(
        self,
        server: Server,
        source: RtpSource,
        plan: RampPlan,
        *,
        srtp_profile: str,
        label: str,
        load_cpu: int,
        ice_transport: str = "udp",
        feedback: bool = False,
    ) -> None:
        self.load_cpu = load_cpu
        self.server = server
        self.source = source
        self.plan = plan
        self.label = label
        self.last_viewer_losses: list[float] = []  # each viewer's loss in the last window measured
        url = server.url(plan.transport)
        self.config = PoolConfig(
            url=url,
            mountpoint=MOUNTPOINT,
            host=server.viewer_host,
            srtp_profile=srtp_profile,
            keepalive=plan.keepalive,
            ice_transport=ice_transport,
            feedback=feedback,
        )

    def progress(self, text: str) -> None:
        print(f"[{self.label}] {text}", file=sys.stderr, flush=True)

    async def run(self, ramp: Ramp) -> Ramp:
        cheap = ViewerPool(self.config)
        await cheap.start()
        samples = SamplePool(PoolConfig(**{**asdict(self.config), "sample": True}))
        try:
            report = await samples.add(self.plan.samples, self.plan.join_rate)
            if report.joined < self.plan.samples:
                raise RuntimeError(f"sample viewers could not join: {report.errors}")
            sample_frames = report.ttf_frame
            for target in self.plan.targets():
                current = self.plan.samples + len(cheap.viewers)
                join = await cheap.add(target - current, self.plan.join_rate) if target > current else JoinReport()
                step = Step(viewers=self.plan.samples + len(cheap.viewers))
                step.joined, step.join_failures, step.join_errors = (
                    join.joined,
                    join.failed,
                    join.errors,
                )
                step.ttf_video_packet_s = _percentiles(join.ttf_packet)
                step.ttf_frame_s = sample_frames
                await asyncio.sleep(self.plan.settle)
                await self._measure(step, cheap, samples)
                if not self._holds(step):
                    step.remeasured = True
                    await self._measure(step, cheap, samples)
                step.held = self._holds(step)
                ramp.steps.append(step)
                self._report(step)
                if step.held:
                    ramp.capacity = step.viewers
                    ramp.capacity_limited_by = "max_viewers"
                else:
                    ramp.capacity_limited_by = self._failed_by(step)
                    break
        finally:
            await samples.close()
            await cheap.close(graceful=False)
        return ramp

    def _holds(self, step: Step) -> bool:
        return self._failed_by(step) == ""

    def _failed_by(self, step: Step) -> str:
        """What the capacity rule finds wrong with a step ("" if it holds)."""
        if step.viewer_loss.get("p95", 1.0) > self.plan.loss_threshold:
            return "loss"
        p99 = step.latency_ms.get("p99")
        if p99 is None or p99 > self.plan.latency_bound_ms:
            return "latency"
        if step.join_failures > self.plan.loss_threshold * max(1, step.joined + step.join_failures):
            return "joins"
        return ""

    async def _quiet(self) -> None:
        """Holds the source and waits :data:`BOUNDARY_DRAIN`: what it sent has reached the viewers or is lost."""
        await self.source.hold()
        await asyncio.sleep(BOUNDARY_DRAIN)

    async def _measure(self, step: Step, cheap: ViewerPool, samples: SamplePool) -> list[dict[str, Any]]:
        """Fills ``step`` from one window; returns the sample viewers' windows (their latencies).

        The window's two ends are read while the source is held (see
        :meth:`_quiet`), so that no packet is on its way between the source's
        count and the viewers' (read at one end and not the other, it would
        count as lost or twice). Rates are over the time the source sent.
        """
        pid, cpu = self.server.pid, self.server.cpu
        await samples.windows()
        await self._quiet()
        try:
            sent0 = self.source.sent()
            delivered0 = cheap.delivered()
            feedback0 = cheap.feedback_counts()
            input0, webrtc0 = udp_port_drops({AUDIO_PORT, VIDEO_PORT}), udp_port_drops({WEBRTC_PORT})
            threads0, engine0 = thread_cpu_seconds(pid), self.server.engine_counters()
            cpu0, core0, softnet0 = process_cpu_seconds(pid), core_times(cpu), softnet_dropped()
            load0 = core_times(self.load_cpu)
        finally:
            self.source.release()
        start = time.monotonic()
        await asyncio.sleep(self.plan.window)
        await self.source.hold()
        elapsed = time.monotonic() - start
        try:
            await asyncio.sleep(BOUNDARY_DRAIN)
            cpu1, core1, softnet1 = process_cpu_seconds(pid), core_times(cpu), softnet_dropped()
            load1 = core_times(self.load_cpu)
            # CPU is over the sending and the drain (the work the window's packets took), per second of that.
            cpu_wall = time.monotonic() - start
            threads1, engine1 = thread_cpu_seconds(pid), self.server.engine_counters()
            input1, webrtc1 = udp_port_drops({AUDIO_PORT, VIDEO_PORT}), udp_port_drops({WEBRTC_PORT})
            windows = await samples.windows()
            sent1 = self.source.sent()
            delivered1 = cheap.delivered()
            feedback1 = cheap.feedback_counts()
        finally:
            self.source.release()
        if self.config.feedback and cheap.viewers:
            messages, packets = feedback1[0] - feedback0[0], feedback1[1] - feedback0[1]
            step.feedback_per_viewer_s = messages / len(cheap.viewers) / elapsed
            step.feedback_packets_per_message = packets / messages if messages else 0.0
            step.feedback_probe = await self._probe(cheap)
        step.load_core_busy = (load1.busy - load0.busy) / cpu_wall
        step.server_input_drops = input1 - input0
        step.server_webrtc_drops = webrtc1 - webrtc0
        step.server_threads_cpu = {
            name: round((seconds - threads0.get(name, 0.0)) / cpu_wall, 4) for name, seconds in sorted(threads1.items())
        }
        step.engine = {key: value - engine0.get(key, 0.0) for key, value in engine1.items()}
        if "worker_busy_s" in step.engine:
            step.engine["worker_busy"] = step.engine.pop("worker_busy_s") / cpu_wall  # cores, summed over workers
        step.cpu_wall_s = cpu_wall

        sent = (sent1["video_packets"] - sent0["video_packets"]) + (sent1["audio_packets"] - sent0["audio_packets"])
        counted = [i for i in delivered0 if i in delivered1]
        rtp_cheap = [float(delivered1[i][0] - delivered0[i][0]) for i in counted]
        others = [delivered1[i][1] - delivered0[i][1] for i in counted]
        others += [w["other_datagrams"] for w in windows]
        other = statistics.fmean(others) if others else 0.0
        rtp_samples = [float(w["rtp_packets"]) for w in windows]
        every = rtp_cheap + rtp_samples
        delivered = sum(every)
        srtp_bytes = sum(w["srtp_bytes"] for w in windows)
        sample_packets = sum(w["rtp_packets"] for w in windows)
        mean_size = srtp_bytes / sample_packets if sample_packets else 0.0
        step.window_s = elapsed
        step.source_pps = sent / elapsed
        step.delivered_pps = delivered / elapsed
        step.delivered_gbps = delivered * mean_size * 8 / elapsed / 1e9
        # Cheap viewers against what the source sent; sample viewers against their own sequence numbers.
        expected = sum(w["expected"] for w in windows)
        lost = sum(w["lost"] for w in windows)
        cheap_lost = sum(max(0.0, sent - count) for count in rtp_cheap)
        total_expected = len(rtp_cheap) * sent + expected
        step.loss = (cheap_lost + lost) / total_expected if total_expected else 1.0
        step.sample_loss = lost / expected if expected else 1.0
        step.sample_socket_drops = sum(w.get("socket_drops", 0) for w in windows)
        step.worst_viewer_loss = max((max(0.0, 1 - count / sent) for count in rtp_cheap), default=0.0) if sent else 1.0
        per_viewer = [max(0.0, 1 - count / sent) if sent else 1.0 for count in rtp_cheap]
        per_viewer += [w["lost"] / w["expected"] if w["expected"] else 1.0 for w in windows]
        step.viewer_loss = loss_distribution(per_viewer)
        step.viewers_counted = len(rtp_cheap) + len(windows)
        step.server_cpu = (cpu1 - cpu0) / cpu_wall
        step.core_softirq = (core1.softirq - core0.softirq) / cpu_wall
        step.core_busy = (core1.busy - core0.busy) / cpu_wall
        step.cpu_per_gbps = cpu_per_gbps((cpu1 - cpu0) / elapsed, step.delivered_gbps)
        latencies = [value for w in windows for value in w["latency_ms"]]
        step.latency_ms = summarize_latency(latencies)
        step.latency_keyframes_ms = summarize_latency([v for w in windows for v in w.get("keyframe_latencies_ms", [])])
        step.latency_rest_ms = summarize_latency([v for w in windows for v in w.get("other_latencies_ms", [])])
        step.read_delay_ms = summarize_latency([v for w in windows for v in w.get("read_delays_ms", [])])
        step.jitter_ms = statistics.fmean(w["jitter_ms"] for w in windows) if windows else None
        step.other_per_viewer = other
        step.softnet_drops = softnet1 - softnet0
        self.last_viewer_losses = sorted(per_viewer)
        return windows

    async def _probe(self, cheap: ViewerPool) -> dict[str, Any]:
        """What the server made of one cheap viewer's feedback (Admin API handle_info)."""
        viewer = cheap.viewers[0]
        if viewer.api.session_id is None or viewer.handle_id is None:
            return {}
        loop = asyncio.get_running_loop()
        info = await loop.run_in_executor(None, self.server.handle_info, viewer.api.session_id, viewer.handle_id)
        plugin = info.get("plugin_specific")
        if not isinstance(plugin, dict):
            return {}
        engine = plugin.get("engine")
        engine = engine if isinstance(engine, dict) else {}
        return {
            "transport_cc": plugin.get("transport_cc"),
            "estimate": plugin.get("estimate"),
            "transport_feedbacks": engine.get("transport_feedbacks"),
            "feedback_sent": viewer.feedback_sent,
        }

    def _report(self, step: Step) -> None:
        latency = step.latency_ms
        p99 = f"{latency['p99']:.1f}" if latency.get("p99") is not None else "-"
        self.progress(
            f"{step.viewers:5d} viewers (+{step.joined}, {step.join_failures} failed) "
            f"{step.delivered_gbps:6.2f} Gbit/s {step.delivered_pps / 1e3:7.1f} kpkt/s "
            f"cpu {step.server_cpu:4.2f} (softirq {step.core_softirq:4.2f}, load core {step.load_core_busy:4.2f}) "
            f"loss {100 * step.loss:6.2f}% (worst 5% {100 * step.viewer_loss.get('p95', 1.0):.2f}%, "
            f"sample {100 * step.sample_loss:.2f}%) p99 {p99} ms "
            f"(keyframe packets {_ms(step.latency_keyframes_ms.get('p99'))}, others {_ms(step.latency_rest_ms.get('p99'))}, "
            f"read delay {_ms(step.read_delay_ms.get('p99'))}; late drops {step.engine.get('dropped_late', '-')}) "
            f"{'holds' if step.held else 'FAILS'}{' (measured twice)' if step.remeasured else ''}"
        )
        if self.config.feedback:
            probe = step.feedback_probe
            estimate = probe.get("estimate")
            estimate_text = f"{estimate / 1e6:.2f}" if isinstance(estimate, int) else "-"
            self.progress(
                f"      feedback: {step.feedback_per_viewer_s:.1f}/s per viewer, "
                f"{step.feedback_packets_per_message:.0f} packets each; one viewer: "
                f"{probe.get('feedback_sent', '-')} sent, {probe.get('transport_feedbacks', '-')} read by the server's "
                f"engine, estimate {estimate_text} Mbit/s"
            )
