"""``fanout bench load``: the command line, and one run of every server x rate x SRTP profile asked for.

The whole run happens inside a private network namespace (root needed): the
server under test pinned to ``--server-cpu`` with taskset, the source and the
viewers on ``--load-cpu``. For each combination the server is started from a
generated configuration, the source starts, and :class:`RampRunner` ramps
viewers until the loss threshold; then everything stops before the next.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fanout_bench.load.control import INTERVAL as CONTROL_INTERVAL
from fanout_bench.load.netns import bench_namespace, steer_receiving_to
from fanout_bench.load.overload import (
    CONTROL_SAMPLES,
    LEVELS,
    OverloadRun,
    overload_plot,
    overload_table,
    run_name,
    run_overload,
    summary,
)
from fanout_bench.load.ramp import Ramp, RampPlan, RampRunner, cpu_per_gbps
from fanout_bench.load.report import capacity_table, feedback_comparison, plot, ratios, write_json
from fanout_bench.load.servers import (
    AUDIO_PORT,
    VIDEO_PORT,
    FanoutServer,
    JanusServer,
    Server,
    raise_own_nofile,
)
from fanout_bench.load.source import RtpSource, SourceShape

RATES = {"2M": 2.0e6, "9.6M": 9.6e6}
PROFILES = {"gcm": "AEAD_AES_128_GCM", "cm": "AES_CM_128_HMAC_SHA1_80"}
# The viewers' feedback: none (as the bench always ran), or transport-wide feedback every 100 ms from every viewer.
FEEDBACK = {"off": False, "twcc": True}


def _choices(allowed: dict[str, Any]) -> Any:
    def parse(text: str) -> list[str]:
        values = [value.strip() for value in text.split(",") if value.strip()]
        for value in values:
            if value not in allowed:
                raise argparse.ArgumentTypeError(f"{value!r}: choose from {', '.join(allowed)}")
        return values

    return parse


API_TRANSPORTS = ("http", "ws")
MEDIA_TRANSPORTS = ("udp", "tcp")


def _transports(text: str) -> list[str]:
    values = [value.strip() for value in text.split(",") if value.strip()]
    for value in values:
        if value not in API_TRANSPORTS + MEDIA_TRANSPORTS:
            raise argparse.ArgumentTypeError(f"{value!r}: choose from {', '.join(API_TRANSPORTS + MEDIA_TRANSPORTS)}")
    if sum(value in API_TRANSPORTS for value in values) > 1:
        raise argparse.ArgumentTypeError("one Janus API transport: http or ws")
    return values


def routes(args: argparse.Namespace, server: str) -> list[tuple[str, str]]:
    """The (ICE transport, family) each ramp of ``server`` takes: UDP/IPv4 first, then what was asked (fanout only)."""
    chosen = [("udp", "ipv4")]
    if server == "fanout":
        if "tcp" in args.transport:
            chosen.append(("tcp", "ipv4"))
        if args.ipv6:
            chosen.append(("udp", "ipv6"))
    return chosen


def feedback_modes(args: argparse.Namespace, server: str, route: tuple[str, str]) -> list[str]:
    """The feedback of each ramp of ``server`` on ``route``: what was asked for fanout's UDP/IPv4 ramps, else off."""
    if server == "fanout" and route == ("udp", "ipv4"):
        return list(args.feedback)
    return ["off"]


def build_parser(
    parser: argparse.ArgumentParser | None = None,
) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="fanout bench load")
    parser.description = (
        "Ramp real WebRTC viewers (Janus API, ICE, DTLS-SRTP) up against fanout and/or Debian's Janus, "
        "each pinned to one core, to find how many viewers it holds at the loss threshold."
    )
    parser.add_argument("--server", choices=["fanout", "janus", "both"], default="fanout")
    parser.add_argument(
        "--rate",
        type=_choices(RATES),
        default=["9.6M"],
        help="video bit rate(s): 2M, 9.6M or 2M,9.6M",
    )
    parser.add_argument(
        "--srtp",
        type=_choices(PROFILES),
        default=["gcm"],
        help="SRTP profile(s): gcm, cm or gcm,cm",
    )
    parser.add_argument(
        "--transport",
        type=_transports,
        default=["ws"],
        help="the viewers' Janus API transport (http or ws) and/or, for fanout, a media transport ramped "
        "beside UDP in the same run: tcp (ICE-TCP), e.g. ws,tcp",
    )
    parser.add_argument(
        "--ipv6",
        action="store_true",
        help="fanout: a ramp of UDP viewers over IPv6 (::1, media.ipv6) beside the IPv4 one",
    )
    parser.add_argument(
        "--feedback",
        type=_choices(FEEDBACK),
        default=["off"],
        help="fanout's UDP/IPv4 viewers: off (no RTCP) and/or twcc (every viewer sends transport-wide feedback every "
        "100 ms; the mountpoint offers transport-cc), one ramp each in the order given, e.g. off,twcc",
    )
    parser.add_argument("--start", type=int, default=20, help="viewers in the first step")
    parser.add_argument(
        "--start-for",
        type=_capacities,
        default={},
        metavar="SERVER=VIEWERS,...",
        help="the first step of one server's ramp (e.g. janus=20), instead of --start",
    )
    parser.add_argument(
        "--factor",
        type=float,
        default=1.25,
        help="each step has this many times the viewers",
    )
    parser.add_argument(
        "--min-step",
        type=int,
        default=10,
        help="at least this many more viewers per step",
    )
    parser.add_argument("--max-viewers", type=int, default=4000)
    parser.add_argument("--join-rate", type=float, default=40.0, help="viewers joining per second")
    parser.add_argument(
        "--samples",
        type=int,
        default=4,
        help="viewers that decrypt everything and measure latency",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds after the joins before measuring",
    )
    parser.add_argument("--window", type=float, default=5.0, help="seconds measured per step")
    parser.add_argument(
        "--loss",
        type=float,
        default=0.01,
        help="the loss a step may have and still hold",
    )
    parser.add_argument(
        "--keepalive",
        type=float,
        default=25.0,
        help="seconds between a session's keepalives",
    )
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument(
        "--server-nice",
        type=int,
        default=-10,
        help="niceness of the server under test (negative: its core's other tenants yield to it)",
    )
    parser.add_argument(
        "--janus-event-loops",
        type=int,
        default=1,
        help="Janus's event_loops (0: a thread per handle)",
    )
    parser.add_argument(
        "--fanout-option",
        action="append",
        default=[],
        metavar="'KEY = VALUE'",
        help="a line for fanout's `fanout` group",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="results path without extension (default bench/results/load-<date>)",
    )
    parser.add_argument(
        "--replot",
        type=Path,
        metavar="JSON",
        help="run nothing: recompute the derived figures of a results file, rewrite it and its plot, print the table",
    )
    parser.add_argument(
        "--latency-bound",
        type=float,
        default=50.0,
        metavar="MS",
        help="a step holds only if the sample viewers' p99 added latency is at most this",
    )
    parser.add_argument(
        "--overload",
        action="store_true",
        help="measure each server at 80/100/120/150%% of its capacity (per-viewer loss, latency, "
        "throughput, control-plane response times); the first --rate and --srtp only",
    )
    parser.add_argument(
        "--capacity",
        type=_capacities,
        default={},
        metavar="SERVER=VIEWERS,...",
        help="with --overload: the capacity of a server (e.g. fanout=800,janus=90) instead of ramping to find it",
    )
    parser.add_argument(
        "--levels",
        type=_levels,
        default=LEVELS,
        metavar="PERCENT,...",
        help="with --overload: the levels to measure, in %% of the capacity (default 80,100,120,150)",
    )
    parser.add_argument(
        "--control-samples",
        type=_control_samples,
        default=CONTROL_SAMPLES,
        metavar="N",
        help="with --overload: keep each level's load on and its control-plane probe asking until ping, info and "
        f"get_status have each answered N times (default {CONTROL_SAMPLES}; 0: the measurement window only)",
    )
    parser.add_argument(
        "--fanout-variant",
        type=_variant,
        action="append",
        default=[],
        metavar="'LABEL: KEY = VALUE'",
        help="with --overload: run fanout once per variant, with its line added to the `fanout` group "
        "(e.g. 'priority: data_plane_nice = -20' and 'level: data_plane_nice = -10'), all in the same run",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="with --overload: run the variants (or fanout) this many times, alternating",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' folders and logs")
    parser.add_argument(
        "--receive-on-load-cpu",
        action="store_true",
        help="loopback's receiving half (the viewers' kernels' work: socket filters, queueing, wake-ups) "
        "runs on --load-cpu (RPS), not in the server's time on its core, as when viewers are other machines",
    )
    return parser


def _levels(text: str) -> tuple[int, ...]:
    values = [value.strip() for value in text.split(",") if value.strip()]
    if not values or not all(value.isdigit() and int(value) > 0 for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: write percents of the capacity, e.g. 80,100")
    return tuple(int(value) for value in values)


def _control_samples(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: write how many answers each request needs, e.g. 100 (0: no wait)")
    return int(text)


def _variant(text: str) -> tuple[str, str]:
    label, _, line = text.partition(":")
    if not label.strip() or " " in label.strip() or "=" not in line:
        raise argparse.ArgumentTypeError(f"{text!r}: write 'LABEL: KEY = VALUE', e.g. 'priority: data_plane_nice = -20'")
    return label.strip(), line.strip()


def _capacities(text: str) -> dict[str, int]:
    capacities: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in ("fanout", "janus") or not value.strip().isdigit() or int(value) <= 0:
            raise argparse.ArgumentTypeError(f"{item!r}: write SERVER=VIEWERS, e.g. fanout=800,janus=90")
        capacities[name] = int(value)
    return capacities


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.overload and args.feedback != ["off"]:
        parser.error("--feedback is for ramps; --overload runs without it")
    if args.replot is not None:
        return replot(args.replot)
    return run(args)


def replot(path: Path) -> int:
    results = json.loads(path.read_text())
    for ramp in results["ramps"]:
        for step in ramp["steps"]:
            cpu_seconds = step["server_cpu"] * step.get("cpu_wall_s", step["window_s"])  # older runs: one interval
            step["cpu_per_gbps"] = cpu_per_gbps(cpu_seconds / step["window_s"], step["delivered_gbps"])
    results["ratios"] = ratios(results)
    if any(ramp.get("feedback", "off") != "off" for ramp in results["ramps"]):
        results["feedback"] = feedback_comparison(results)
    write_json(results, path)
    plot(results, path.with_suffix(".png"))
    print(capacity_table(results))
    return 0


def _git_commit() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent,
    )
    commit = result.stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent,
    ).stdout.strip()
    return commit + ("+dirty" if commit and dirty else "")


def _engine_build() -> dict[str, str]:
    """Which engine binary fanout runs: its file, hash and build time (the source tree may be ahead of it)."""
    import hashlib

    import fanout._engine as engine

    path = Path(engine.__file__ or "")
    try:
        data = path.read_bytes()
    except OSError:
        return {"path": str(path)}
    built = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC)
    return {"path": str(path), "sha256": hashlib.sha256(data).hexdigest(), "built": built.isoformat(timespec="seconds")}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run(args: argparse.Namespace) -> int:
    servers = ["fanout", "janus"] if args.server == "both" else [args.server]
    now = datetime.datetime.now(datetime.UTC)
    output: Path = args.output or Path("bench/results") / f"load-{now:%Y-%m-%d-%H%M}"
    api_transport = next((value for value in args.transport if value in API_TRANSPORTS), "ws")
    plan = RampPlan(
        start=args.start,
        factor=args.factor,
        min_step=args.min_step,
        max_viewers=args.max_viewers,
        join_rate=args.join_rate,
        samples=args.samples,
        settle=args.settle,
        window=args.window,
        loss_threshold=args.loss,
        latency_bound_ms=args.latency_bound,
        transport=api_transport,
        keepalive=args.keepalive,
    )
    results: dict[str, Any] = {
        "meta": {
            "date": now.isoformat(timespec="seconds"),
            "commit": _git_commit(),
            "command": "fanout bench load " + " ".join(sys.argv[3:] if sys.argv[1:3] == ["bench", "load"] else []),
            "engine": _engine_build(),
            "cpu_model": _cpu_model(),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "server_cpu": args.server_cpu,
            "server_nice": args.server_nice,
            "load_cpu": args.load_cpu,
            "receive_on_load_cpu": args.receive_on_load_cpu,
            "janus_event_loops": args.janus_event_loops,
            "fanout_options": args.fanout_option,
            "feedback": args.feedback,
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
            "accounting": "cheap viewers: RTP dropped by their socket filter, counted by the kernel "
            "(/proc/net/udp, udp6 drops); ICE-TCP cheap viewers read every frame and count them by their "
            "headers; sample viewers: decrypted RTP",
        },
        "plan": asdict(plan),
        "ramps": [],
    }
    if args.overload:
        return _run_overload(args, servers, plan, results, output)
    work = Path(tempfile.mkdtemp(prefix="fanout-bench-load-"))
    with bench_namespace() as namespace:
        if args.receive_on_load_cpu:
            steer_receiving_to(namespace, args.load_cpu)
        raise_own_nofile()
        os.sched_setaffinity(0, {args.load_cpu})
        with contextlib.suppress(OSError):
            os.nice(-5)  # the viewers' side must keep up, whatever else shares its core
        for rate in args.rate:
            for srtp in args.srtp:
                for name in servers:
                    for ice_transport, family in routes(args, name):
                        for feedback in feedback_modes(args, name, (ice_transport, family)):
                            server: Server
                            folder = work / f"{name}-{rate}-{srtp}-{ice_transport}-{family}-{feedback}"
                            if name == "fanout":
                                server = FanoutServer(
                                    folder,
                                    args.server_cpu,
                                    args.fanout_option,
                                    ice_tcp=ice_transport == "tcp",
                                    ipv6=family == "ipv6",
                                    transport_cc_everywhere="twcc" in args.feedback,
                                )
                            else:
                                server = JanusServer(folder, args.server_cpu, args.janus_event_loops)
                            server.nice = args.server_nice
                            route = f"{ice_transport}/{family}"
                            ramp = Ramp(
                                server=name, rate=rate, srtp=srtp, transport=api_transport, route=route, feedback=feedback
                            )
                            ramp.server_version = server.version()
                            if name == "fanout":  # the binary at this server's start: others may rebuild it between ramps
                                ramp.engine = _engine_build()
                            server_plan = dataclasses.replace(plan, start=args.start_for.get(name, plan.start))
                            _run_one(
                                server,
                                ramp,
                                server_plan,
                                RATES[rate],
                                PROFILES[srtp],
                                args.load_cpu,
                                ice_transport,
                                FEEDBACK[feedback],
                            )
                            results["ramps"].append(ramp.to_json())
                            write_json(results, output.with_suffix(".json"))
    results["ratios"] = ratios(results)
    if "twcc" in args.feedback:
        results["feedback"] = feedback_comparison(results)
    write_json(results, output.with_suffix(".json"))
    plot(results, output.with_suffix(".png"))
    print(capacity_table(results))
    print(f"\nresults: {output.with_suffix('.json')}  plot: {output.with_suffix('.png')}")
    if not args.keep_logs:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    else:
        print(f"server folders and logs: {work}")
    return 0


def _run_overload(
    args: argparse.Namespace, servers: list[str], plan: RampPlan, results: dict[str, Any], output: Path
) -> int:
    from fanout.config.settings import DEFAULT_MAX_SEND_DELAY_MS

    rate, srtp = args.rate[0], args.srtp[0]
    results["meta"]["fanout_default_max_send_delay_ms"] = DEFAULT_MAX_SEND_DELAY_MS  # unless --fanout-option sets it
    results["meta"]["capacity_rule"] = (
        f"per-viewer loss p95 <= {100 * plan.loss_threshold:g}% and sample viewers' p99 added latency <= "
        f"{plan.latency_bound_ms:g} ms (and <= {100 * plan.loss_threshold:g}% failed joins)"
    )
    results["meta"]["control_samples"] = args.control_samples  # answers wanted per request per level
    results["meta"]["control_interval_s"] = CONTROL_INTERVAL  # the probe's one request at a time, at most this often
    results["overload"] = []
    work = Path(tempfile.mkdtemp(prefix="fanout-bench-overload-"))
    with bench_namespace() as namespace:
        if args.receive_on_load_cpu:
            steer_receiving_to(namespace, args.load_cpu)
        raise_own_nofile()
        os.sched_setaffinity(0, {args.load_cpu})
        with contextlib.suppress(OSError):
            os.nice(-5)
        for round_number, name, (variant, variant_option) in _overload_runs(args, servers):
            folder = work / f"{name}-{variant or 'default'}-{round_number}"
            server: Server
            if name == "fanout":
                server = FanoutServer(folder, args.server_cpu, [*args.fanout_option, *filter(None, [variant_option])])
            else:
                server = JanusServer(folder, args.server_cpu, args.janus_event_loops)
            server.nice = args.server_nice
            run = OverloadRun(
                server=name,
                rate=rate,
                srtp=srtp,
                variant=variant,
                variant_option=variant_option,
                round=round_number,
                server_version=server.version(),
            )
            source = RtpSource(SourceShape(RATES[rate]), ("127.0.0.1", VIDEO_PORT), ("127.0.0.1", AUDIO_PORT), cpu=args.load_cpu)
            source.start()
            server_plan = dataclasses.replace(plan, start=args.start_for.get(name, plan.start))
            try:
                run_overload(
                    server,
                    run,
                    server_plan,
                    RATES[rate],
                    PROFILES[srtp],
                    args.load_cpu,
                    args.capacity.get(name),
                    source,
                    args.levels,
                    args.control_samples,
                )
            except Exception as error:  # noqa: BLE001 - reported; the other server still runs
                print(f"[{run_name(run)} overload] failed: {type(error).__name__}: {error}\n{server.log_tail(20)}", file=sys.stderr)
                run.error = f"{type(error).__name__}: {error}"
            finally:
                source.stop()
            results["overload"].append(run.to_json())
            write_json(results, output.with_suffix(".json"))
    results["summary"] = summary(results["overload"])
    write_json(results, output.with_suffix(".json"))
    overload_plot(results, output.with_suffix(".png"))
    print(overload_table(results["overload"]))
    print(json.dumps(results["summary"], indent=1))
    print(f"\nresults: {output.with_suffix('.json')}  plot: {output.with_suffix('.png')}")
    if not args.keep_logs:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    else:
        print(f"server folders and logs: {work}")
    return 0


def _overload_runs(args: argparse.Namespace, servers: list[str]) -> list[tuple[int, str, tuple[str, str]]]:
    """(round, server, (variant label, its line)) for each overload run, the variants alternating within a round."""
    runs: list[tuple[int, str, tuple[str, str]]] = []
    for round_number in range(1, args.rounds + 1):
        for name in servers:
            variants = args.fanout_variant if name == "fanout" and args.fanout_variant else [("", "")]
            runs.extend((round_number, name, variant) for variant in variants)
    return runs


def _run_one(
    server: Server,
    ramp: Ramp,
    plan: RampPlan,
    bitrate: float,
    profile: str,
    load_cpu: int,
    ice_transport: str = "udp",
    feedback: bool = False,
) -> None:
    label = f"{ramp.server} {ramp.rate} {ramp.srtp} {ramp.route}" + (" feedback" if feedback else "")
    print(
        f"[{label}] starting {ramp.server} on cpu {server.cpu}",
        file=sys.stderr,
        flush=True,
    )
    server.start()
    source = RtpSource(
        SourceShape(bitrate),
        ("127.0.0.1", VIDEO_PORT),
        ("127.0.0.1", AUDIO_PORT),
        cpu=load_cpu,
    )
    source.start()
    try:
        runner = RampRunner(
            server,
            source,
            plan,
            srtp_profile=profile,
            label=label,
            load_cpu=load_cpu,
            ice_transport=ice_transport,
            feedback=feedback,
        )
        asyncio.run(runner.run(ramp))
    except Exception as error:  # noqa: BLE001 - a ramp that breaks is reported; the others still run
        print(
            f"[{label}] failed: {type(error).__name__}: {error}\n{server.log_tail(20)}",
            file=sys.stderr,
            flush=True,
        )
        ramp.capacity_limited_by = f"error: {type(error).__name__}: {error}"
    finally:
        source.stop()
        server.stop()
    print(
        f"[{label}] holds {ramp.capacity} viewers ({ramp.capacity_limited_by})",
        file=sys.stderr,
        flush=True,
    )
