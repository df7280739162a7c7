"""``fanout bench load --overload``: each server at 80, 100, 120 and 150% of its capacity.

A server's capacity is given (``--capacity fanout=N,janus=M``) or found by
the ordinary ramp, with the capacity rule: a step holds only if the worst 5%
of viewers lose at most 1% (the 95th percentile of per-viewer loss) and the
sample viewers' p99 added latency is at most 50 ms. Then the server starts
afresh and viewers join level by level (never leaving: each level adds to the
last). At each level the bench measures one window, as a ramp step does, and
also: each viewer's loss (the whole distribution is kept), the sample
viewers' added latency from the source's send stamp to the read (p50/p99,
and each sample viewer's own p99), the delivered throughput, and the control
plane's response times (``ping``, Streaming ``info``, Admin ``get_status``,
see :mod:`fanout_bench.load.control`): the probe runs through the window and
on, the level's viewers and source still on, until each request has answered
``control_samples`` times (at most :data:`CONTROL_WAIT_LIMIT` seconds more).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from fanout_bench.load.control import ControlProbe, answers_missing
from fanout_bench.load.kernel import thread_nice_values
from fanout_bench.load.pool import JoinReport, PoolConfig, SamplePool, ViewerPool
from fanout_bench.load.ramp import Ramp, RampPlan, RampRunner, Step
from fanout_bench.load.servers import ADMIN_PORT, ADMIN_SECRET, HTTP_PORT, MOUNTPOINT, Server
from fanout_bench.load.source import RtpSource

LEVELS = (80, 100, 120, 150)  # the default; --levels picks some
CONTROL_SAMPLES = 100  # the default; --control-samples sets it
CONTROL_WAIT_LIMIT = 180.0  # seconds a level's probe may run on after the window for its answers
CONTROL_PROGRESS_EVERY = 5.0  # seconds between two progress lines while it does


@dataclass
class Level:
    percent: int
    step: Step
    # Each viewer's loss in the window, sorted (cheap and sample viewers).
    viewer_losses: list[float] = field(default_factory=list)
    # Each sample viewer's own p99 added latency, ms.
    sample_p99_ms: list[float] = field(default_factory=list)
    # ping / info / get_status: p50, p99, max (ms), answered, failed, every time.
    control_ms: dict[str, Any] = field(default_factory=dict)
    control_wanted: int = 0  # the answers asked for per request (--control-samples)
    control_s: float = 0.0  # how long the probe ran: the window, and on until the answers were there
    # fanout: how long its workers take to give one keyframe to all their viewers at the cost per packet
    # sent measured in the window (see keyframe_fanout_ms); None for Janus (no such counters).
    keyframe_fanout_ms: float | None = None
    holds: bool = False
    failed_by: str = ""


@dataclass
class OverloadRun:
    server: str
    rate: str
    srtp: str
    # fanout: the --fanout-variant this run had (its label and its line in the `fanout` group), "" for none
    variant: str = ""
    variant_option: str = ""
    round: int = 1  # with --rounds: which round of the variants
    server_version: str = ""
    settings: dict[str, str] = field(default_factory=dict)  # the configuration files the bench wrote
    capacity: int = 0
    capacity_source: str = ""  # "given" or "ramp"
    capacity_ramp: Ramp | None = None
    # Each sample viewer's place in the join order (0: the first viewer).
    sample_positions: list[int] = field(default_factory=list)
    # The server's threads' nice values by name at the first level (fanout: engine threads and control plane).
    thread_nice: dict[str, int] = field(default_factory=dict)
    levels: list[Level] = field(default_factory=list)
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


class OverloadRunner(RampRunner):
    """The levels against one running server (its capacity already known)."""

    async def run_levels(
        self, run: OverloadRun, levels: tuple[int, ...] = LEVELS, control_samples: int = CONTROL_SAMPLES
    ) -> None:
        run.thread_nice = thread_nice_values(self.server.pid)
        probe = ControlProbe(HTTP_PORT, ADMIN_PORT, ADMIN_SECRET, MOUNTPOINT)
        cheap = ViewerPool(self.config)
        await cheap.start()
        samples = SamplePool(PoolConfig(**{**asdict(self.config), "sample": True}))
        try:
            await self._join_spread(run, cheap, samples, levels[0])
            for percent in levels:
                target = max(self.plan.samples + 1, round(run.capacity * percent / 100))
                current = self.plan.samples + len(cheap.viewers)
                join = await cheap.add(target - current, self.plan.join_rate) if target > current else JoinReport()
                step = Step(viewers=self.plan.samples + len(cheap.viewers))
                step.joined, step.join_failures, step.join_errors = join.joined, join.failed, join.errors
                await asyncio.sleep(self.plan.settle)
                probe.start()
                probe_started = time.monotonic()
                windows = await self._measure(step, cheap, samples)
                await self._await_control_answers(probe, percent, control_samples)
                control = probe.stop()
                level = Level(percent=percent, step=step, control_ms=control, control_wanted=control_samples)
                level.control_s = round(time.monotonic() - probe_started, 2)
                level.viewer_losses = [round(loss, 5) for loss in self.last_viewer_losses]
                level.sample_p99_ms = [round(_p99(w["latency_ms"]), 2) for w in windows if w["latency_ms"]]
                level.keyframe_fanout_ms = keyframe_fanout_ms(step, self.source.shape.frame_packets()[0])
                level.failed_by = self._failed_by(step)
                level.holds = step.held = level.failed_by == ""
                run.levels.append(level)
                self._report_level(level)
        finally:
            probe.close()
            await samples.close()
            await cheap.close(graceful=False)

    async def _await_control_answers(self, probe: ControlProbe, percent: int, wanted: int) -> None:
        """Keeps the probe running, the level's load on, until each request has ``wanted`` answers.

        Gives up after :data:`CONTROL_WAIT_LIMIT` seconds (the level then
        reports the answers it has); says how far it is when it starts to
        wait and every :data:`CONTROL_PROGRESS_EVERY` seconds."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        reported = started - CONTROL_PROGRESS_EVERY  # the first line at once
        while True:
            counts = await loop.run_in_executor(None, probe.counts)
            missing = answers_missing({name: answered for name, (answered, _) in counts.items()}, wanted)
            now = time.monotonic()
            if not missing:
                return
            if now - started > CONTROL_WAIT_LIMIT:
                self.progress(
                    f"{percent:3d}%: control plane: still short of {wanted} answers after {CONTROL_WAIT_LIMIT:.0f} s "
                    f"more ({_answer_counts(counts, wanted)}); the level reports what it has"
                )
                return
            if now - reported >= CONTROL_PROGRESS_EVERY:
                reported = now
                self.progress(
                    f"{percent:3d}%: control plane: waiting for {wanted} answers each, {now - started:.0f} s "
                    f"after the window: {_answer_counts(counts, wanted)}"
                )
            await asyncio.sleep(0.5)

    async def _join_spread(self, run: OverloadRun, cheap: ViewerPool, samples: SamplePool, first_percent: int) -> None:
        """Joins the sample viewers spread over the first level's join order, cheap viewers between them.

        A server that serves its viewers in join order (and not in turn, as
        fanout's workers do) gives the first ones the shortest delays; sample
        viewers at the front alone would see only those."""
        first_level = max(self.plan.samples + 1, round(run.capacity * first_percent / 100))
        between = (first_level - self.plan.samples) // self.plan.samples
        for index in range(self.plan.samples):
            if index > 0 and between > 0:
                join = await cheap.add(between, self.plan.join_rate)
                if join.failed:
                    raise RuntimeError(f"viewers could not join: {join.errors}")
            run.sample_positions.append(index + len(cheap.viewers))
            report = await samples.add(1, self.plan.join_rate)
            if report.joined < 1:
                raise RuntimeError(f"sample viewers could not join: {report.errors}")

    def _report_level(self, level: Level) -> None:
        step = level.step

        def ms(value: float | None) -> str:
            return f"{value:.1f}" if value is not None else "-"

        control = " ".join(
            f"{name} {ms(times['p50'])}/{ms(times['p99'])}/{ms(times['max'])} (n={times['answered']}"
            + (f", {times['failed']} failed)" if times["failed"] else ")")
            for name, times in level.control_ms.items()
        )
        worst = max(level.sample_p99_ms, default=None)
        threads = _thread_groups(step.server_threads_cpu)
        engine = step.engine
        self.progress(
            f"{level.percent:3d}%: where the time goes: latency p99 keyframe packets "
            f"{ms(step.latency_keyframes_ms.get('p99'))} ms (one keyframe to every viewer takes the worker "
            f"{ms(level.keyframe_fanout_ms)} ms), other packets {ms(step.latency_rest_ms.get('p99'))} ms, "
            f"sample viewers' read delay p99 {ms(step.read_delay_ms.get('p99'))} ms; server cores "
            + " ".join(f"{name} {cores:.2f}" for name, cores in threads.items())
            + f", load core {step.load_core_busy:.2f}; drops: late {engine.get('dropped_late', '-')}, "
            f"ring {engine.get('worker_overruns', '-')}, send {engine.get('dropped', '-')}, "
            f"source sockets {step.server_input_drops}, WebRTC socket {step.server_webrtc_drops}, "
            f"softnet {step.softnet_drops}, sample sockets {step.sample_socket_drops}"
        )
        self.progress(
            f"{level.percent:3d}%: {step.viewers} viewers (+{step.joined}, {step.join_failures} failed) "
            f"{step.delivered_gbps:.2f} Gbit/s, viewer loss p50 {100 * step.viewer_loss.get('p50', 1):.2f}% "
            f"p95 {100 * step.viewer_loss.get('p95', 1):.2f}% max {100 * step.viewer_loss.get('max', 1):.2f}%, "
            f"latency p50/p99 {ms(step.latency_ms.get('p50'))}/{ms(step.latency_ms.get('p99'))} ms "
            f"(worst sample viewer's p99 {ms(worst)}), control p50/p99/max ms over {level.control_s:.0f} s: {control} "
            f"-> {'holds' if level.holds else 'FAILS (' + level.failed_by + ')'}"
        )


def keyframe_fanout_ms(step: Step, keyframe_packets: int) -> float | None:
    """The time a worker takes to give one keyframe's packets to each of its viewers in turn, at the
    worker time per packet sent measured in the window: when the last viewer in its list gets the
    keyframe's last packet if nothing else were waiting. The source sends a keyframe's packets back to
    back, so this is the floor of a keyframe packet's added latency for a viewer at the end of the list,
    and the sample viewers (spread over the list) see about their place in it times this. None
    without the engine's counters (Janus) or packets sent."""
    engine = step.engine
    workers = sum(1 for name in step.server_threads_cpu if name.startswith("fanout-worker-"))
    delivered, busy = engine.get("delivered_packets"), engine.get("worker_busy")
    if not workers or not delivered or busy is None:
        return None
    seconds_per_packet = busy * step.cpu_wall_s / delivered
    return round(1000 * keyframe_packets * step.viewers / workers * seconds_per_packet, 2)


def _answer_counts(counts: dict[str, tuple[int, int]], wanted: int) -> str:
    """"ping 40/100, info 39/100 (2 failed), ...": each request's answers so far against those wanted."""
    return ", ".join(
        f"{name} {answered}/{wanted}" + (f" ({failed} failed)" if failed else "")
        for name, (answered, failed) in counts.items()
    )


def _thread_groups(threads: dict[str, float]) -> dict[str, float]:
    """A server's cores by role: fanout's engine workers, receiver and WebRTC socket reader (its viewers'
    RTCP), and the rest (its Python control plane)."""
    engine_roles = {"fanout-receiver": "receiver", "fanout-socket": "socket"}
    groups: dict[str, float] = {}
    for name, cores in threads.items():
        role = "workers" if name.startswith("fanout-worker") else engine_roles.get(name, "rest")
        groups[role] = groups.get(role, 0.0) + cores
    return groups


def run_overload(
    server: Server,
    run: OverloadRun,
    plan: RampPlan,
    bitrate: float,
    profile: str,
    load_cpu: int,
    capacity: int | None,
    source: RtpSource,
    levels: tuple[int, ...] = LEVELS,
    control_samples: int = CONTROL_SAMPLES,
) -> None:
    """Finds (or takes) the capacity, then measures the levels on a fresh start of the server."""
    label = f"{run_name(run)} {run.rate} {run.srtp} overload"
    if capacity is None:
        ramp = Ramp(server=run.server, rate=run.rate, srtp=run.srtp, transport=plan.transport)
        server.start()
        try:
            runner = RampRunner(server, source, plan, srtp_profile=profile, label=label, load_cpu=load_cpu)
            asyncio.run(runner.run(ramp))
        finally:
            server.stop()
        run.capacity_ramp = ramp
        run.capacity, run.capacity_source = ramp.capacity, "ramp"
        if ramp.capacity == 0:
            raise RuntimeError(f"{run.server} held no step: {ramp.capacity_limited_by}")
    else:
        run.capacity, run.capacity_source = capacity, "given"
    print(f"[{label}] capacity {run.capacity} ({run.capacity_source}); levels {levels} %", file=sys.stderr, flush=True)
    server.start()
    run.settings = server.settings()
    try:
        runner = OverloadRunner(server, source, plan, srtp_profile=profile, label=label, load_cpu=load_cpu)
        asyncio.run(runner.run_levels(run, levels, control_samples))
    finally:
        server.stop()


def run_name(run: OverloadRun | dict[str, Any]) -> str:
    """The server, and its variant and round if it has them: "fanout", "fanout priority #2"."""
    if isinstance(run, OverloadRun):
        server, variant, round_number = run.server, run.variant, run.round
    else:
        server, variant, round_number = run["server"], run.get("variant", ""), int(run.get("round", 1))
    name = f"{server} {variant}" if variant else str(server)
    return f"{name} #{round_number}" if variant or round_number > 1 else name


def overload_table(runs: list[dict[str, Any]]) -> str:
    width = max((len(run_name(run)) for run in runs), default=7)
    rows = [
        f"{'server':{width}s} level viewers  Gbit/s   cpu  loss p50/p95/max %      latency p50/p99 ms  p99 key/other ms  "
        "keyframe fan-out ms  "
        "read p99  late drops  ping p50/p99/max (n)     info p50/p99/max (n)     get_status p50/p99/max (n)  holds"
    ]

    def ms(value: float | None) -> str:
        return f"{value:.1f}" if value is not None else "-"

    for run in runs:
        for level in run["levels"]:
            step, control = level["step"], level["control_ms"]
            loss = step["viewer_loss"]
            latency = step["latency_ms"]
            late = step.get("engine", {}).get("dropped_late")
            rows.append(
                f"{run_name(run):{width}s} {level['percent']:4d}% {step['viewers']:7d}  {step['delivered_gbps']:6.2f}  "
                f"{step['server_cpu']:4.2f}  "
                f"{100 * loss.get('p50', 1):5.2f}/{100 * loss.get('p95', 1):5.2f}/{100 * loss.get('max', 1):6.2f}  "
                f"{ms(latency.get('p50')):>8s}/{ms(latency.get('p99')):<8s}  "
                f"{ms(step.get('latency_keyframes_ms', {}).get('p99')):>7s}/"
                f"{ms(step.get('latency_rest_ms', {}).get('p99')):<8s}  "
                f"{ms(level.get('keyframe_fanout_ms')):>19s}  "
                f"{ms(step.get('read_delay_ms', {}).get('p99')):>8s}  {'-' if late is None else f'{late:.0f}':>10s}  "
                + "  ".join(
                    f"{ms(control[n]['p50']):>6s}/{ms(control[n]['p99']):>6s}/{ms(control[n]['max']):>6s} "
                    f"({control[n].get('answered', '-')}" + (f", {control[n]['failed']} failed)" if control[n].get("failed") else ")")
                    for n in control
                )
                + f"  {'yes' if level['holds'] else 'no (' + level['failed_by'] + ')'}"
            )
    return "\n".join(rows)


def overload_plot(results: dict[str, Any], path: Any) -> None:
    """Four panels against the load level: throughput, per-viewer loss, added latency, control-plane p99."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 5, figsize=(25, 5))
    colors = {"fanout": "tab:blue", "janus": "tab:red"}
    variant_colors = iter(["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"])
    for run in results["overload"]:
        if run.get("variant") and run["variant"] not in colors:
            colors[run["variant"]] = next(variant_colors, "black")
    for run in results["overload"]:
        levels = run["levels"]
        if not levels:
            continue
        x = [level["percent"] for level in levels]
        color = colors.get(run.get("variant") or run["server"], "black")
        name = f"{run_name(run)} (100% = {run['capacity']} viewers)"
        axes[0].plot(x, [level["step"]["delivered_gbps"] for level in levels], "-o", color=color, label=name)
        for key, style in (("p50", ":"), ("p95", "-"), ("max", "--")):
            axes[1].plot(
                x,
                [100 * level["step"]["viewer_loss"].get(key, 1) for level in levels],
                style,
                marker="o",
                color=color,
                label=f"{run_name(run)} viewer loss {key}",
            )
        for key, style in (("p50", ":"), ("p99", "-")):
            axes[2].plot(
                x,
                [level["step"]["latency_ms"].get(key) or float("nan") for level in levels],
                style,
                marker="o",
                color=color,
                label=f"{run_name(run)} {key}",
            )
        axes[2].plot(
            x,
            [level["step"].get("latency_rest_ms", {}).get("p99") or float("nan") for level in levels],
            "--",
            marker="x",
            color=color,
            label=f"{run_name(run)} p99 without keyframe packets",
        )
        for request, style in (("ping", "-"), ("info", "--"), ("get_status", ":")):
            axes[3].plot(
                x,
                [level["control_ms"][request]["p99"] or float("nan") for level in levels],
                style,
                marker="o",
                color=color,
                label=f"{run_name(run)} {request}",
            )
        for role, style in (("workers", "-"), ("receiver", "--"), ("socket", "-."), ("rest", ":")):
            if run["server"] != "fanout" and role != "rest":
                continue
            axes[4].plot(
                x,
                [_thread_groups(level["step"].get("server_threads_cpu", {})).get(role, 0.0) for level in levels],
                style,
                marker="o",
                color=color,
                label=f"{run_name(run)} {'all threads' if run['server'] != 'fanout' else role}",
            )
        axes[4].plot(
            x, [level["step"]["load_core_busy"] for level in levels], "-.", marker="s", color=color,
            label=f"load core ({run_name(run)} run)",
        )  # fmt: skip
    axes[0].set_title("delivered Gbit/s (SRTP)")
    axes[1].set_title("per-viewer RTP loss % (p50, p95, max)")
    axes[1].set_yscale("symlog", linthresh=0.1)
    axes[2].set_title("added latency ms, sample viewers (send to socket arrival)")
    axes[2].set_yscale("log")
    axes[3].set_title("control plane p99 ms (ping, info, get_status; goal < 100)")
    axes[3].set_yscale("log")
    axes[4].set_title("cores: server threads (fanout rest: control plane), load core")
    axes[4].set_ylim(0, 1.1)
    percents = sorted({level["percent"] for run in results["overload"] for level in run["levels"]})
    for axis in axes:
        axis.set_xlabel("load, % of the server's own capacity")
        axis.set_xticks(percents or list(LEVELS))
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    axes[1].axhline(1.0, color="gray", linewidth=0.8)
    axes[2].axhline(50.0, color="gray", linewidth=0.8)
    axes[3].axhline(100.0, color="gray", linewidth=0.8)  # the goal: < 100 ms p99 at 120%
    figure.suptitle(results["meta"]["command"], fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per server: throughput at 150% over 100%, and the worst p99 latency and control-plane p99 at 120 and 150%."""
    out: dict[str, Any] = {}
    for run in runs:
        by_level = {level["percent"]: level for level in run["levels"]}
        if 100 not in by_level:
            continue
        entry: dict[str, Any] = {"capacity": run["capacity"]}
        base = by_level[100]["step"]["delivered_gbps"]
        if 150 in by_level and base:
            entry["throughput_150_over_100"] = by_level[150]["step"]["delivered_gbps"] / base
        for percent in (120, 150):
            if percent in by_level:
                level = by_level[percent]
                entry[f"control_p99_ms_{percent}"] = max(
                    (v["p99"] for v in level["control_ms"].values() if v["p99"] is not None), default=None
                )
                entry[f"worst_sample_p99_ms_{percent}"] = max(level["sample_p99_ms"], default=None)
        mean_losses = [statistics.fmean(level["viewer_losses"]) for level in run["levels"] if level["viewer_losses"]]
        entry["mean_loss_by_level"] = mean_losses
        out[run_name(run)] = entry
    return out
