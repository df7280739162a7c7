"""``fanout bench stall``: a stall of the control plane on the worker's core, with the engine's
threads ahead of it (``data_plane_nice`` ``--ahead`` steps below, 10 by default) and level with it,
alternating.

One process pinned to one core holds the engine (one worker on that core, N viewers on
loopback that never read, fed by the engine bench's video + Opus source running in another
process on ``--source-cpu``) and plays the control plane: once a second its thread runs a full
garbage collection of a heap of ``--heap-objects`` objects (what a surge of joins leaves to
collect; the same work in every run, timed alone first). Each run counts the packets the engine
dropped because they could not leave within ``max_send_delay_ms`` (100) of their arrival, and
how long each collection took in wall time (the control plane's side of the trade).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fanout._engine import Engine
from fanout_bench.engine import FPS, GCM, KEY_LENGTH, PAYLOAD, Rig, progress
from fanout_bench.load.command import _engine_build, _git_commit

SOURCE = """
import sys, time
from fanout_bench.engine import Source
source = Source(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
source.start()
time.sleep(float(sys.argv[4]))
source.stop()
"""


class Heap:
    """Objects the collector walks, as the control plane's viewers' state: small dicts and lists."""

    def __init__(self, objects: int) -> None:
        self.objects = [{"id": index, "streams": [index]} for index in range(objects // 2)]

    def collect(self) -> float:
        """One full collection; its wall time in ms."""
        started = time.perf_counter()
        gc.collect()
        return (time.perf_counter() - started) * 1000


def measure(rig: Rig, heap: Heap, nice: int, args: argparse.Namespace) -> dict[str, Any]:
    packets_per_frame = max(1, round(args.video_mbps * 1e6 / 8 / FPS / PAYLOAD))
    engine = Engine(rig.webrtc.fileno(), cores=[args.core], data_plane_nice=nice)
    source: subprocess.Popen[bytes] | None = None
    try:
        video_port, audio_port = engine.add_mountpoint(1, [
            {"index": 0, "kind": "video", "codec": "vp8", "clock_rate": 90000, "host": "127.0.0.1", "port": 0},
            {"index": 1, "kind": "audio", "codec": "opus", "clock_rate": 48000, "host": "127.0.0.1", "port": 0},
        ])  # fmt: skip
        key = bytes(range(KEY_LENGTH[GCM]))
        for viewer_id, address in enumerate(rig.addresses):
            engine.add_peer(viewer_id, address, GCM, key, key)
            engine.subscribe(viewer_id, 1, [
                {"index": 0, "ssrc": 0x1000 + viewer_id, "payload_type": 96},
                {"index": 1, "ssrc": 0x2000 + viewer_id, "payload_type": 111},
            ])  # fmt: skip
        seconds = args.warmup + args.seconds + 1
        source = subprocess.Popen(
            ["taskset", "-c", str(args.source_cpu), sys.executable, "-c", SOURCE,
             str(video_port), str(audio_port), str(packets_per_frame), str(seconds)]
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while engine.mountpoint_stats(1).packets == 0:  # the source's interpreter is up and sending
            if time.monotonic() > deadline or source.poll() is not None:
                raise RuntimeError("the source sent nothing")
            time.sleep(0.05)
        time.sleep(args.warmup)

        def counters() -> tuple[float, int, int, int, int]:
            stats = engine.mountpoint_stats(1)
            busy = sum(w.busy_ns for w in engine.worker_stats())
            return time.monotonic(), stats.dropped_late, stats.sent_packets, busy, stats.packets

        before = counters()
        stalls = []
        for second in range(int(args.seconds)):
            stalls.append(heap.collect())
            time.sleep(max(0.0, before[0] + second + 1 - time.monotonic()))
        after = counters()
        elapsed, late, sent, busy = (b - a for a, b in zip(before[:4], after[:4]))
        return {
            "data_plane_nice": engine.data_plane_nice,
            "control_plane_nice": os.getpriority(os.PRIO_PROCESS, 0),
            "seconds": round(elapsed, 3),
            "dropped_late": late,
            "sent_packets": sent,
            "source_packets": after[4] - before[4],
            "late_fraction": late / (late + sent) if late + sent else 0.0,
            "worker_busy": busy / 1e9 / elapsed,
            "stall_ms": [round(ms, 1) for ms in stalls],
        }
    finally:
        if source is not None:
            source.wait()
        engine.close()


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    names = [f"{run['variant']} #{run['round']}" for run in runs]
    colors = ["tab:blue" if run["variant"] == "priority" else "tab:orange" for run in runs]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    axes[0].bar(names, [100 * run["late_fraction"] for run in runs], color=colors)
    axes[0].set_title("packets dropped late (% of the packets to viewers)")
    axes[1].bar(names, [statistics.median(run["stall_ms"]) for run in runs], color=colors, label="median")
    axes[1].plot(names, [max(run["stall_ms"]) for run in runs], "k_", markersize=20, label="max")
    axes[1].axhline(results["stall_alone_ms"], color="gray", linewidth=0.8, label="alone")
    axes[1].set_title("the control plane's full collection, wall ms")
    axes[1].legend(fontsize=8)
    for axis in axes:
        axis.tick_params(axis="x", rotation=30)
        axis.grid(True, axis="y", alpha=0.3)
    figure.suptitle(results["meta"]["command"], fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fanout bench stall", description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=1600, help="as the overload bench's 80%% of 2000 (default)")
    parser.add_argument("--video-mbps", type=float, default=2.0, help="the source's video bitrate (default 2)")
    parser.add_argument("--heap-objects", type=int, default=2_000_000, help="objects each full collection walks")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run, a collection in each")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2, help="each round runs priority, then level")
    parser.add_argument(
        "--ahead", type=int, default=5, choices=range(1, 21), metavar="1..20",
        help="nice steps the engine's threads are ahead of the control plane in the priority runs (default 5, as fanout's data_plane_nice)",
    )
    parser.add_argument("--core", type=int, default=0, help="the core of the worker and the control plane")
    parser.add_argument("--source-cpu", type=int, default=1)
    parser.add_argument("--output", type=Path, default=Path("bench/results/stall"), help="path without extension")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    os.sched_setaffinity(0, {args.core})  # this thread: the control plane; the engine's receiver inherits it
    base = os.getpriority(os.PRIO_PROCESS, 0)
    heap = Heap(args.heap_objects)
    alone = statistics.median(heap.collect() for _ in range(5))
    progress(f"a full collection of {args.heap_objects} objects alone: {alone:.0f} ms")
    results: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": "fanout bench stall " + " ".join(sys.argv[3:] if sys.argv[1:3] == ["bench", "stall"] else []),
            "commit": _git_commit(),
            "engine": _engine_build(),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
            **{key: value for key, value in vars(args).items() if key != "output"},
        },
        "stall_alone_ms": round(alone, 1),
        "runs": [],
    }
    rig = Rig(args.viewers)
    try:
        for round_number in range(1, args.rounds + 1):
            for variant, nice in (("priority", base - args.ahead), ("level", base)):
                run = {"variant": variant, "round": round_number, **measure(rig, heap, nice, args)}
                results["runs"].append(run)
                progress(
                    f"{variant} #{round_number} (engine at nice {run['data_plane_nice']}, control plane "
                    f"{run['control_plane_nice']}): worker busy {run['worker_busy']:.2f}, dropped late "
                    f"{run['dropped_late']} of {run['dropped_late'] + run['sent_packets']} "
                    f"({100 * run['late_fraction']:.2f}%), collections {statistics.median(run['stall_ms']):.0f} ms "
                    f"median, {max(run['stall_ms']):.0f} max"
                )
    finally:
        rig.close()
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.output.with_suffix(".png"))
    progress(f"results: {args.output.with_suffix('.json')}  plot: {args.output.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
