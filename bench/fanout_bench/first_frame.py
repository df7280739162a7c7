"""fanout bench first-frame: time to first decoded frame in real Chromium with janus.js.

    fanout bench first-frame --joins 20 --intervals 1,4

For each keyframe interval it runs, in a private loopback-only network
namespace (root needed), ``fanout serve`` with one rtp mountpoint fed by the
built-in test source (VP8 + Opus, that keyframe interval), and headless
Chromium opening fanout's demo page, which watches the mountpoint with the
real janus.js and reports ``window.fanoutDemo.firstFrameMs``: from the
``watch`` request to the first video frame presented (requestVideoFrameCallback).
Each join is a fresh page (a new Janus session and PeerConnection), at a
pseudo-random phase of the source's GOP. It prints p50/p95 per interval and
writes a PNG. ``--no-cache`` runs the server with FANOUT_KEYFRAME_CACHE=0
(video then waits for the source's next keyframe), for comparison.

``--server janus`` (or ``both``) runs the same joins against Janus (Debian's
janus, started as ``fanout bench load`` starts it: :class:`JanusServer` in a
namespace whose veth interface carries 127.0.0.2, since Janus skips loopback
for ICE), twice: with its defaults and with its keyframe buffer on
(``videobufferkf``: the latest keyframe sent to a new viewer at once). The
same demo page, served by a small aiohttp server in the bench, talks to
Janus's HTTP API through its ``janus=`` query parameter.

``--json`` keeps every join: its time to first frame, when each phase ended,
the last viewer's playback figures, with the versions of both servers and of
Chromium.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import random
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanout.sources.testsource import testsource_command
from fanout_bench.chromium import CHROMIUM, CHROMIUM_FLAGS
from fanout_bench.load import servers as janus_servers
from fanout_bench.load.command import _engine_build, _git_commit
from fanout_bench.load.netns import bench_namespace

# Inside a private namespace every port is free.
HTTP_PORT, WS_PORT, WEBRTC_PORT, AUDIO_PORT, VIDEO_PORT, METRICS_PORT = 18088, 18188, 18300, 15002, 15004, 19090
# What fanout counted of the mountpoint by the end (its /metrics): where a packet the last viewer
# misses was lost (on the way in, in the send queue) and what the viewers' NACKs brought.
SERVER_COUNTERS = (
    "fanout_source_packets_total",
    "fanout_source_lost_packets_total",
    "fanout_delivered_packets_total",
    "fanout_retransmissions_total",
    "fanout_dropped_packets_total",
    "fanout_dropped_late_packets_total",
)
READY_LINE = "fanout: ready"
FIRST_FRAME_TIMEOUT_MS = 20_000
# The last viewer goes on watching until it has decoded 3 s of video with no video packet missing
# (Chromium counts a packet lost until the server's resend of it comes).
PLAYBACK_FRAMES = 90
PLAYBACK_TIMEOUT_S = 60.0
# Each viewer plays on this long after its first frame: the frames it decoded then (a viewer shown
# a keyframe alone waits for the next one before it decodes more) and Chromium's freezes (counted
# once the next frame came).
PLAYING_ON_S = 3.0
SOURCE_FPS = 30  # the built-in test source's
PHASES = ("offer", "answered", "ice", "webrtcup", "track", "frame")
_namespaces = itertools.count()


@dataclass(frozen=True)
class Joins:
    keyframe_interval: float
    cache: bool  # fanout: its keyframe cache on; Janus: its keyframe buffer (videobufferkf) on
    first_frame_ms: list[float]
    # The last viewer's getStats() once it has decoded PLAYBACK_FRAMES frames and misses no video
    # packet, or at PLAYBACK_TIMEOUT_S if it never does (framesDecoded, videoPacketsLost, ...).
    playback: dict[str, float]
    # Per join, when each phase ended (ms from the watch request): offer, answered, ice, webrtcup, track, frame.
    phases: list[dict[str, float]]
    server: str = "fanout"
    # Per join, PLAYING_ON_S after its first frame: framesDecoded, freezeCount, totalFreezesDurationMs, ...
    playing_on: list[dict[str, float]] = field(default_factory=list)
    # fanout: SERVER_COUNTERS of the mountpoint once the last viewer's playback figures were kept.
    server_counters: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.server == "janus":
            return f"janus, videobufferkf {'on' if self.cache else 'off'}"
        return f"fanout, cache {'on' if self.cache else 'off'}"

    def as_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "keyframe_interval_s": self.keyframe_interval,
            "keyframe_cache" if self.server == "fanout" else "videobufferkf": self.cache,
            "p50_ms": self.p50,
            "p95_ms": self.p95,
            "max_ms": max(self.first_frame_ms),
            "first_frame_ms": self.first_frame_ms,
            "phases_ms": self.phases,
            "playing_on_s": PLAYING_ON_S if self.playing_on else 0,
            "playing_on": self.playing_on,
            "playback": self.playback,
            "server_counters": self.server_counters,
        }

    @property
    def p50(self) -> float:
        return percentile(self.first_frame_ms, 50)

    @property
    def p95(self) -> float:
        return percentile(self.first_frame_ms, 95)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


@contextmanager
def _namespace() -> Iterator[str]:
    if os.geteuid() != 0:
        raise SystemExit("fanout bench first-frame makes a network namespace: run it as root")
    name = f"fanout-ff-{os.getpid()}-{next(_namespaces)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False).stdout
        for pid in pids.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", name], check=False)


def _write_config(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "janus.jcfg").write_text(
        'general: {\n\tsession_timeout = 60\n}\nnat: {\n\tnat_1_1_mapping = "127.0.0.1"\n}\n'
        f'fanout: {{\n\twebrtc_port = {WEBRTC_PORT}\n\twebrtc_interface = "127.0.0.1"\n\tmetrics_port = {METRICS_PORT}\n}}\n'
    )
    (folder / "janus.transport.http.jcfg").write_text(
        f'general: {{\n\thttp = true\n\tport = {HTTP_PORT}\n\tbase_path = "/janus"\n}}\n'
    )
    (folder / "janus.transport.websockets.jcfg").write_text(f"general: {{\n\tws = true\n\tws_port = {WS_PORT}\n}}\n")
    (folder / "janus.plugin.streaming.jcfg").write_text(
        "general: {\n}\n"
        "first-frame: {\n"
        '\ttype = "rtp"\n\tid = 1\n\tdescription = "first frame bench"\n'
        f'\taudio = true\n\taudioport = {AUDIO_PORT}\n\taudiopt = 111\n\taudiocodec = "opus"\n'
        f'\tvideo = true\n\tvideoport = {VIDEO_PORT}\n\tvideopt = 96\n\tvideocodec = "vp8"\n'
        "}\n"
    )


class _Server:
    """``fanout serve`` in the namespace, its output kept."""

    def __init__(self, namespace: str, config: Path, cache: bool) -> None:
        env = {**os.environ, "FANOUT_KEYFRAME_CACHE": "1" if cache else "0"}
        command = ["ip", "netns", "exec", namespace, sys.executable, "-m", "fanout", "serve", "--config", str(config)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(60):
            self.stop()
            raise RuntimeError("fanout did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if READY_LINE in line:
                self.ready.set()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class _PageServer:
    """The demo page (as fanout serves it) from a small aiohttp server in a thread, for Janus runs."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        import asyncio

        from aiohttp import web

        from fanout.demo.routes import demo_routes

        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.add_routes(demo_routes("/janus", None))
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, host, port).start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextmanager
def _fanout_setup(workdir: Path, cache: bool) -> Iterator[tuple[str, str, int, int]]:
    """fanout in its namespace: (namespace, page URL, video port, audio port)."""
    config = workdir / "config"
    _write_config(config)
    with _namespace() as namespace:
        server = _Server(namespace, config, cache)
        try:
            yield namespace, f"http://127.0.0.1:{HTTP_PORT}/?mountpoint=1&transport=http", VIDEO_PORT, AUDIO_PORT
        finally:
            server.stop()


@contextmanager
def _janus_setup(workdir: Path, keyframe_buffer: bool) -> Iterator[tuple[str, str, int, int]]:
    """Janus in the load bench's namespace (veth with 127.0.0.2): (namespace, page URL, video port, audio port)."""
    if os.geteuid() != 0:
        raise SystemExit("fanout bench first-frame makes a network namespace: run it as root")
    with bench_namespace() as namespace:  # this thread (and what it starts) is inside from here
        cpu = max(os.sched_getaffinity(0))
        server = janus_servers.JanusServer(workdir / "janus", cpu, keyframe_buffer=keyframe_buffer).start()
        pages = _PageServer(HTTP_PORT)
        try:
            api = server.url("http")
            yield (
                namespace,
                f"http://127.0.0.1:{HTTP_PORT}/?mountpoint={janus_servers.MOUNTPOINT}&transport=http&janus={api}",
                janus_servers.VIDEO_PORT,
                janus_servers.AUDIO_PORT,
            )
        finally:
            pages.stop()
            server.stop()
            pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False).stdout
            for pid in pids.split():
                if int(pid) == os.getpid():  # this process is inside too
                    continue
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def run_joins(
    keyframe_interval: float,
    joins: int,
    workdir: Path,
    *,
    cache: bool = True,
    seed: int = 1,
    server: str = "fanout",
    playing_on_s: float = PLAYING_ON_S,
) -> Joins:
    """``joins`` viewers, one after another, each a fresh page; their times to first frame in ms.
    ``cache``: fanout's keyframe cache, or Janus's keyframe buffer (videobufferkf), on. Each
    viewer plays on ``playing_on_s`` after its first frame (0: none), its figures then kept."""
    from playwright.sync_api import sync_playwright

    workdir.mkdir(parents=True, exist_ok=True)
    phases = random.Random(seed)
    times: list[float] = []
    phases_of_joins: list[dict[str, float]] = []
    playing_on: list[dict[str, float]] = []
    playback: dict[str, float] = {}
    server_counters: dict[str, float] = {}
    setup = _janus_setup(workdir, cache) if server == "janus" else _fanout_setup(workdir, cache)
    with setup as (namespace, page_url, video_port, audio_port):
        source_command = testsource_command(
            "127.0.0.1", video_port, audio_port, keyframe_interval=keyframe_interval, exit_with_parent=False
        )
        source = subprocess.Popen(["ip", "netns", "exec", namespace, *source_command])
        launcher = workdir / "chromium-in-namespace"
        launcher.write_text(f'#!/bin/sh\nexec ip netns exec {namespace} {CHROMIUM} "$@"\n')
        launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
        try:
            time.sleep(keyframe_interval + 0.5)  # the cache holds a keyframe from now on
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(launcher), headless=True, args=CHROMIUM_FLAGS,
                    env={**os.environ, "HOME": str(workdir)},
                )  # fmt: skip
                try:
                    for join in range(joins):
                        page = browser.new_page()
                        page.goto(page_url)
                        page.wait_for_function(
                            "window.fanoutDemo && window.fanoutDemo.firstFrameMs !== null",
                            timeout=FIRST_FRAME_TIMEOUT_MS,
                        )
                        times.append(float(page.evaluate("window.fanoutDemo.firstFrameMs")))
                        phases_of_joins.append(dict(page.evaluate("window.fanoutDemo.timings")))
                        if playing_on_s:
                            page.wait_for_timeout(playing_on_s * 1000)
                            playing_on.append(dict(page.evaluate("window.fanoutDemo.stats()")))
                        if join == joins - 1:
                            playback = _playback_of(page)
                            if server == "fanout":
                                server_counters = _server_counters(namespace)
                        page.close()
                        time.sleep(phases.uniform(0.2, 0.2 + keyframe_interval))
                finally:
                    browser.close()
        finally:
            source.send_signal(signal.SIGTERM)
            try:
                source.wait(10)
            except subprocess.TimeoutExpired:
                source.kill()
    return Joins(keyframe_interval, cache, times, playback, phases_of_joins, server, playing_on, server_counters)


def _server_counters(namespace: str) -> dict[str, float]:
    """SERVER_COUNTERS of mountpoint 1 from the /metrics of the fanout in ``namespace``."""
    from prometheus_client.parser import text_string_to_metric_families

    read = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    text = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", read, url], capture_output=True, text=True, check=True
    ).stdout
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in SERVER_COUNTERS and sample.labels.get("mountpoint") == "1"
    }


def _playback_of(page: Any) -> dict[str, float]:
    deadline = time.monotonic() + PLAYBACK_TIMEOUT_S
    while True:
        figures = dict(page.evaluate("window.fanoutDemo.stats()"))
        healed = figures["framesDecoded"] >= PLAYBACK_FRAMES and figures["videoPacketsLost"] == 0
        if healed or time.monotonic() > deadline:
            return figures
        page.wait_for_timeout(250)


def plot(results: list[Joins], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_playing_on = [r for r in results if r.playing_on]
    figure, all_axes = plt.subplots(1 + bool(with_playing_on), 1, figsize=(10, 5 + 4 * bool(with_playing_on)),
                                    squeeze=False)  # fmt: skip
    axes = all_axes[0][0]

    def tick(result: Joins) -> str:
        return f"{result.keyframe_interval:g} s GOP\n" + result.label.replace(", ", "\n")

    labels = [tick(r) for r in results]
    axes.boxplot([r.first_frame_ms for r in results], tick_labels=labels, whis=(5, 95))
    for position, result in enumerate(results, start=1):
        axes.scatter([position] * len(result.first_frame_ms), result.first_frame_ms, s=10, alpha=0.5)
    axes.axhline(300, linestyle="--", color="grey", label="target p95 300 ms")
    axes.set_ylabel("watch -> first frame (ms)")
    axes.set_title("time to first frame, Chromium + janus.js (whiskers p5-p95)")
    axes.legend()
    if with_playing_on:
        axes = all_axes[1][0]
        decoded = [[join.get("framesDecoded", 0) for join in r.playing_on] for r in with_playing_on]
        axes.boxplot(decoded, tick_labels=[tick(r) for r in with_playing_on], whis=(5, 95))
        for position, values in enumerate(decoded, start=1):
            axes.scatter([position] * len(values), values, s=10, alpha=0.5)
        axes.axhline(PLAYING_ON_S * SOURCE_FPS, linestyle="--", color="grey", label="the source's frames in that time")
        axes.set_ylabel("frames decoded")
        axes.set_title(f"frames each viewer decoded by {PLAYING_ON_S:g} s after its first frame")
        axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def joins_from_json(path: Path) -> list[Joins]:
    """The runs of a ``--json`` file, to plot again."""
    runs = json.loads(path.read_text())["runs"]
    return [
        Joins(run["keyframe_interval_s"], run.get("keyframe_cache", run.get("videobufferkf", True)), run["first_frame_ms"],
              run["playback"], run["phases_ms"], run["server"], run.get("playing_on", []))
        for run in runs
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fanout bench first-frame", description=__doc__.split("\n\n")[0])
    parser.add_argument("--joins", type=int, default=20, help="viewers per keyframe interval (default 20)")
    parser.add_argument("--intervals", default="1,4", help="keyframe intervals in seconds (default 1,4)")
    parser.add_argument("--no-cache", action="store_true", help="also measure with the keyframe cache off")
    parser.add_argument(
        "--server", choices=("fanout", "janus", "both"), default="fanout", help="server(s) to measure (default fanout)"
    )
    parser.add_argument("--png", type=Path, default=Path("fanout-bench-first-frame.png"))
    parser.add_argument(
        "--json", type=Path, default=Path("fanout-bench-first-frame.json"), help="every join's figures, with versions"
    )
    parser.add_argument("--replot", type=Path, metavar="JSON", help="only draw the plot of an earlier --json (to --png)")
    args = parser.parse_args(argv)
    if args.replot:
        plot(joins_from_json(args.replot), args.png)
        print(f"wrote {args.png}")
        return 0
    started = datetime.datetime.now(datetime.UTC)
    intervals = [float(value) for value in args.intervals.split(",")]
    results: list[Joins] = []
    with tempfile.TemporaryDirectory(prefix="fanout-first-frame-") as workdir:
        for interval in intervals:
            runs: list[tuple[str, bool]] = []
            if args.server in ("fanout", "both"):
                runs += [("fanout", cache) for cache in ([True, False] if args.no_cache else [True])]
            if args.server in ("janus", "both"):
                runs += [("janus", False), ("janus", True)]
            for server, cache in runs:
                folder = Path(workdir) / f"{server}-{interval:g}-{cache}"
                result = run_joins(interval, args.joins, folder, cache=cache, server=server)
                results.append(result)
                print(f"keyframe interval {interval:g} s, {result.label}: "
                      f"p50 {result.p50:.0f} ms, p95 {result.p95:.0f} ms", flush=True)
    print()
    print("| server | keyframe interval | keyframe cache (fanout) / videobufferkf (Janus) | joins | p50 ms | p95 ms | max ms |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for result in results:
        print(f"| {result.server} | {result.keyframe_interval:g} s | {'on' if result.cache else 'off'} "
              f"| {len(result.first_frame_ms)} | {result.p50:.0f} | {result.p95:.0f} | {max(result.first_frame_ms):.0f} |")
    print(f"\nmean of all joins: {statistics.fmean(t for r in results for t in r.first_frame_ms):.0f} ms")
    print("\nwhere the time goes (ms from the watch request, p50 / p95 over the joins):")
    for result in results:
        columns = []
        for phase in PHASES:
            ends = sorted(join[phase] for join in result.phases if phase in join)
            if ends:
                columns.append(f"{phase} {percentile(ends, 50):.0f}/{percentile(ends, 95):.0f}")
        print(f"  {result.keyframe_interval:g} s, {result.label}: " + ", ".join(columns))
    print(f"\nthe first {PLAYING_ON_S:g} s after the first frame (frames decoded p50 / min; joins with a freeze; "
          "frozen p50 / p95 / max ms):")
    for result in results:
        if not result.playing_on:
            continue
        decoded = [join.get("framesDecoded", 0) for join in result.playing_on]
        frozen = [join.get("totalFreezesDurationMs", 0) for join in result.playing_on]
        froze = sum(1 for join in result.playing_on if join.get("freezeCount", 0) > 0)
        print(f"  {result.keyframe_interval:g} s, {result.label}: decoded {percentile(decoded, 50):.0f} / "
              f"{min(decoded):.0f}; {froze} of {len(decoded)} froze; frozen {percentile(frozen, 50):.0f} / "
              f"{percentile(frozen, 95):.0f} / {max(frozen):.0f} ms")
    plot(results, args.png)
    write_results(results, args, started, args.json)
    print(f"wrote {args.png} and {args.json}")
    return 0


def write_results(results: list[Joins], args: argparse.Namespace, started: datetime.datetime, path: Path) -> None:
    from importlib.metadata import version

    chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    meta = {
        "date": started.isoformat(timespec="seconds"),
        "command": "fanout bench first-frame "
        + " ".join(sys.argv[3:] if sys.argv[1:3] == ["bench", "first-frame"] else []),
        "commit": _git_commit(),
        "engine": _engine_build(),
        "fanout_version": version("fanout"),
        "janus_version": janus_servers.janus_version() if args.server != "fanout" else None,
        "chromium_version": chromium,
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "joins": args.joins,
        "intervals_s": args.intervals,
        "first_frame": "from the watch request to the first frame presented (requestVideoFrameCallback)",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "runs": [result.as_json() for result in results]}, indent=1) + "\n")
