"""fanout bench adaptive: janus.js in Chromium on a link whose rate changes, fanout against Janus.

    fanout bench adaptive --server both

Two private network namespaces joined by a veth pair: the server's (fanout, or
Debian's Janus with its defaults; three VP8 simulcast layers on its loopback,
unshaped: ffmpeg sending them encoded beforehand, or with ``--source live``
GStreamer encoding them live, which makes a keyframe when the server asks for
one) and the viewer's (headless Chromium opening the demo
page, which watches the mountpoint with the real janus.js). tc's token bucket
(tbf: this kernel has no netem) on the server's end of the veth limits what
reaches the viewer: 3 Mbit/s (the join), then 600 kbit/s, then 5 Mbit/s. Every
``--sample-ms`` the page's getStats() (inbound video: frameWidth, framesDecoded,
packetsLost, freezeCount, totalFreezesDuration, bytesReceived) is sampled.

Per phase it reports the time to settle on the highest layer that fits the
link (the first sample from which the frame width stays that layer's to the
end of the phase), the freeze time and count, the packets lost and the frames
decoded; it prints a table, writes every sample as JSON and plots the runs
side by side. Goals (issue 12): settled within 5 s of a drop and 15 s of a
rise, at most 1 s of freezes per change.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fanout_bench.chromium import CHROMIUM, CHROMIUM_FLAGS
from fanout_bench.first_frame import _PageServer
from fanout_bench.load import servers

SERVER_ADDRESS, VIEWER_ADDRESS = "10.213.7.1", "10.213.7.2"
SERVER_LINK, VIEWER_LINK = "fanout-ad0", "fanout-ad1"
PAGE_PORT = 18090  # the demo page for Janus runs (fanout serves its own)
PORTS = (5004, 5006, 5008)
# The live source's: the server's RTCP port for the stream (keyframe requests leave from it),
# and the encoder's own ports, each layer's RTP leaving from one and its RTCP heard at the next.
SOURCE_RTCP_PORT = 5010
ENCODER_PORTS = (5104, 5106, 5108)
FPS = 30
MOUNTPOINT = 1


@dataclass(frozen=True)
class Layer:
    width: int
    height: int
    kbps: int


LAYERS = (Layer(320, 180, 150), Layer(640, 360, 400), Layer(1280, 720, 1500))
# A layer fits a link when its bitrate is at most this share of the link's rate (RTP/UDP/IP
# overhead, keyframes above the average, audio-free but not loss-free).
FITS_SHARE = 0.8


@dataclass(frozen=True)
class Phase:
    rate_kbps: int
    seconds: float

    @property
    def tc_rate(self) -> str:
        return f"{self.rate_kbps}kbit"

    @property
    def fitting_width(self) -> int:
        fitting = [layer for layer in LAYERS if layer.kbps <= self.rate_kbps * FITS_SHARE]
        return (fitting[-1] if fitting else LAYERS[0]).width


@dataclass(frozen=True)
class Sample:
    seconds: float  # since the watch began
    phase: int
    frame_width: int
    frames_decoded: int
    packets_lost: int
    freeze_count: int
    freezes_seconds: float
    bytes_received: int


@dataclass
class PhaseSummary:
    rate_kbps: int
    fitting_width: int
    settle_seconds: float | None  # None: never settled on the fitting layer in the phase
    freezes_seconds: float  # Chromium's totalFreezesDuration: a freeze counts once a frame ends it
    freeze_count: int
    stalled_seconds: float  # between samples with no frame decoded, whether or not a frame ended it
    packets_lost: int
    frames_decoded: int
    received_kbps: float
    widths: list[int] = field(default_factory=list)  # the frame widths seen, in order of appearance


@dataclass
class Run:
    server: str
    version: str
    samples: list[Sample]
    phase_starts: list[float]  # seconds since the watch began
    phases: list[PhaseSummary]
    estimates: list[tuple[float, int]]  # fanout's: (seconds since the watch began, bits/s)
    source: str = "files"  # "files": encoded beforehand (ffmpeg); "live": encoded live (GStreamer), keyframes on request


def summarize(samples: list[Sample], phases: list[Phase], starts: list[float]) -> list[PhaseSummary]:
    """Per phase: settling, freezes, loss and decoding from the samples (counters as deltas
    from the last sample before the phase)."""
    summaries = []
    for index, phase in enumerate(phases):
        own = [sample for sample in samples if sample.phase == index]
        before = [sample for sample in samples if sample.phase < index]
        base = before[-1] if before else Sample(0.0, -1, 0, 0, 0, 0, 0.0, 0)
        last = own[-1] if own else base
        settled_at = None
        for position, sample in enumerate(own):
            if all(later.frame_width == phase.fitting_width for later in own[position:]):
                settled_at = sample.seconds
                break
        widths: list[int] = []
        for sample in own:
            if sample.frame_width and sample.frame_width not in widths:
                widths.append(sample.frame_width)
        elapsed = last.seconds - base.seconds if own else 0.0
        stalled = sum(after.seconds - before.seconds for before, after in zip([base, *own], own, strict=False)
                      if before.phase >= 0 and after.frames_decoded == before.frames_decoded)  # fmt: skip
        summaries.append(
            PhaseSummary(
                rate_kbps=phase.rate_kbps,
                fitting_width=phase.fitting_width,
                settle_seconds=None if settled_at is None else round(max(0.0, settled_at - starts[index]), 2),
                freezes_seconds=round(last.freezes_seconds - base.freezes_seconds, 3),
                freeze_count=last.freeze_count - base.freeze_count,
                stalled_seconds=round(stalled, 2),
                packets_lost=last.packets_lost - base.packets_lost,
                frames_decoded=last.frames_decoded - base.frames_decoded,
                received_kbps=round((last.bytes_received - base.bytes_received) * 8 / 1000 / elapsed, 1)
                if elapsed > 0
                else 0.0,
                widths=widths,
            )
        )
    return summaries


# --- the network --------------------------------------------------------------------------------


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def _kill_inside(namespace: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False).stdout
    for pid in pids.split():
        if int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextmanager
def shaped_link(run_name: str) -> Iterator[str]:
    """The server's namespace (this process moves in; what it starts runs there) joined by a
    veth pair to the viewer's; yields the viewer's namespace name."""
    if os.geteuid() != 0:
        raise SystemExit("fanout bench adaptive makes network namespaces and shapes a link: run it as root")
    server, viewer = f"fanout-ad-{os.getpid()}-{run_name}", f"fanout-adv-{os.getpid()}-{run_name}"
    original = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        for name in (server, viewer):
            _run("ip", "netns", "add", name)
            _run("ip", "-n", name, "link", "set", "lo", "up")
        _run("ip", "-n", server, "link", "add", SERVER_LINK, "type", "veth", "peer", "name", VIEWER_LINK,
             "netns", viewer)  # fmt: skip
        for name, device, address in ((server, SERVER_LINK, SERVER_ADDRESS), (viewer, VIEWER_LINK, VIEWER_ADDRESS)):
            _run("ip", "-n", name, "addr", "add", f"{address}/30", "dev", device)
            _run("ip", "-n", name, "link", "set", device, "up")
        fd = os.open(f"/run/netns/{server}", os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        yield viewer
    finally:
        _setns(original)
        os.close(original)
        for name in (viewer, server):
            _kill_inside(name)
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def shape(phase: Phase, *, first: bool) -> None:
    """What the server sends the viewer goes at the phase's rate (a 200 ms queue, then drops)."""
    _run("tc", "qdisc", "add" if first else "change", "dev", SERVER_LINK, "root", "tbf", "rate", phase.tc_rate,
         "burst", "32kb", "latency", "200ms")  # fmt: skip


# --- the servers and the source -----------------------------------------------------------------


MEDIA_SECONDS = 20
MEDIA_FOLDER = Path(tempfile.gettempdir()) / "fanout-bench-adaptive-media"


def layer_files() -> list[Path]:
    """Each layer encoded once (kept for the next run): a noisy test pattern (so that the
    encoder reaches its bitrate) in VP8 at the layer's size and constant bitrate, a keyframe
    a second. (``--source live`` encodes with GStreamer instead, about half a core here.) The first
    second is cut: libvpx's first keyframe is some 25 times the others (330 KB at 1.5 Mbit/s),
    and the loop would send it every time round."""
    MEDIA_FOLDER.mkdir(exist_ok=True)
    top = LAYERS[-1]
    files = []
    for layer in LAYERS:
        path = MEDIA_FOLDER / f"{layer.width}x{layer.height}-{layer.kbps}k-{MEDIA_SECONDS}s-cut.webm"
        if not path.exists():
            print(f"encoding {path.name} (once)", flush=True)
            rate = f"{layer.kbps}k"
            partial = path.with_suffix(".partial.webm")
            subprocess.run([
                "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                "-f", "lavfi", "-i", f"testsrc2=size={top.width}x{top.height}:rate={FPS}", "-t", str(MEDIA_SECONDS + 1),
                "-vf", f"scale={layer.width}:{layer.height},noise=alls=12:allf=t",
                "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "4",
                "-b:v", rate, "-minrate", rate, "-maxrate", rate, "-g", str(FPS), "-an", str(partial),
            ], check=True)  # fmt: skip
            cut = path.with_suffix(".cut.webm")
            subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-ss", "1", "-i", str(partial),
                            "-c", "copy", str(cut)], check=True)  # fmt: skip
            partial.unlink()
            cut.rename(path)
        files.append(path)
    return files


def source_command(files: list[Path]) -> list[str]:
    """ffmpeg sending the layers, looped in real time, as RTP to their ports on loopback (one
    process, so the layers keep pace with each other)."""
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error"]
    for path in files:
        command += ["-re", "-stream_loop", "-1", "-i", str(path)]
    for index, port in enumerate(PORTS):
        command += ["-map", f"{index}:v", "-c", "copy", "-f", "rtp", "-payload_type", "96",
                    f"rtp://127.0.0.1:{port}?pkt_size=1200"]  # fmt: skip
    return command


def live_source_command() -> list[str]:
    """GStreamer encoding a moving test pattern live at each layer's size and bitrate (VP8, a
    keyframe a second unless asked for one sooner), one rtpbin session per layer, as a
    GStreamer sender usually is: each layer's RTP leaves from a port of its own, and its
    session hears RTCP at the port plus one and makes a keyframe on a PLI naming its SSRC."""
    top = LAYERS[-1]
    pipeline = (
        f"rtpbin name=rtp videotestsrc is-live=true pattern=smpte horizontal-speed=2 "
        f"! video/x-raw,width={top.width},height={top.height},framerate={FPS}/1 ! tee name=frames"
    )
    for index, (layer, port, own_port) in enumerate(zip(LAYERS, PORTS, ENCODER_PORTS, strict=True)):
        pipeline += (
            f" frames. ! queue ! videoscale ! video/x-raw,width={layer.width},height={layer.height}"
            f" ! vp8enc deadline=1 cpu-used=8 end-usage=cbr target-bitrate={layer.kbps * 1000} keyframe-max-dist={FPS}"
            f" ! rtpvp8pay pt=96 mtu=1200 ssrc={0x5100 + index} ! rtp.send_rtp_sink_{index}"
            f" rtp.send_rtp_src_{index} ! udpsink host=127.0.0.1 port={port} bind-port={own_port}"
            f" udpsrc port={own_port + 1} ! rtp.recv_rtcp_sink_{index}"
        )
    return ["gst-launch-1.0", "-q", *pipeline.split()]


def fanout_mountpoint(*, rtcp: bool) -> str:
    rtcp_port = f" rtcpport = {SOURCE_RTCP_PORT}" if rtcp else ""
    return f"""
simulcast: {{
	type = "rtp"
	id = {MOUNTPOINT}
	description = "fanout bench adaptive"
	media = (
		{{ type = "video" mid = "v" port = {PORTS[0]} port2 = {PORTS[1]} port3 = {PORTS[2]}{rtcp_port} simulcast = true pt = 96 codec = "vp8" }}
	)
}}
"""


def janus_mountpoint(*, rtcp: bool) -> str:
    """Janus's own (legacy, single-stream) keys for the same mountpoint, as its sample
    configuration documents them."""
    rtcp_port = f"\n\tvideortcpport = {SOURCE_RTCP_PORT}" if rtcp else ""
    return f"""
simulcast: {{
	type = "rtp"
	id = {MOUNTPOINT}
	description = "fanout bench adaptive"
	video = true
	videoport = {PORTS[0]}
	videoport2 = {PORTS[1]}
	videoport3 = {PORTS[2]}{rtcp_port}
	videosimulcast = true
	videopt = 96
	videocodec = "vp8"
}}
"""


class AdaptiveFanout(servers.FanoutServer):
    """fanout with its defaults, advertising the veth's address; its HTTP port serves the demo page."""

    def __init__(self, folder: Path, cpu: int, *, source_rtcp: bool) -> None:
        super().__init__(folder, cpu)
        self.source_rtcp = source_rtcp

    def write_config(self) -> None:
        super().write_config()
        jcfg = self.folder / "janus.jcfg"
        jcfg.write_text(jcfg.read_text().replace('"127.0.0.1"', f'"{SERVER_ADDRESS}"'))
        mountpoint = fanout_mountpoint(rtcp=self.source_rtcp)
        (self.folder / "janus.plugin.streaming.jcfg").write_text("general: {\n}\n" + mountpoint)

    def command(self) -> list[str]:
        return [*super().command()[:-1], "debug"]  # its estimates of the viewer, for the plot

    def page_url(self) -> str:
        return f"http://{SERVER_ADDRESS}:{servers.HTTP_PORT}/?mountpoint={MOUNTPOINT}&transport=http"


class AdaptiveJanus(servers.JanusServer):
    """Debian's Janus with its defaults (the load bench's configuration), ICE on the veth, the
    HTTP API on every address; the demo page comes from a page server of the bench's."""

    def __init__(self, folder: Path, cpu: int, *, source_rtcp: bool) -> None:
        super().__init__(folder, cpu)
        self.source_rtcp = source_rtcp

    def write_config(self) -> None:
        super().write_config()
        jcfg = self.folder / "janus.jcfg"
        jcfg.write_text(jcfg.read_text().replace(f'"{servers.DUMMY_INTERFACE}"', f'"{SERVER_LINK}"'))
        http = self.folder / "janus.transport.http.jcfg"
        http.write_text(http.read_text().replace('\tip = "127.0.0.1"\n', ""))
        mountpoint = janus_mountpoint(rtcp=self.source_rtcp)
        (self.folder / "janus.plugin.streaming.jcfg").write_text("general: {\n}\n" + mountpoint)

    def page_url(self) -> str:
        api = f"http://{SERVER_ADDRESS}:{servers.HTTP_PORT}/janus"
        return f"http://{SERVER_ADDRESS}:{PAGE_PORT}/?mountpoint={MOUNTPOINT}&transport=http&janus={api}"


# --- the viewer ---------------------------------------------------------------------------------

VIDEO_STATS = """async () => {
    const figures = {};
    if (!streaming || !streaming.webrtcStuff.pc) return figures;
    (await streaming.webrtcStuff.pc.getStats()).forEach((entry) => {
        if (entry.type === "inbound-rtp" && entry.kind === "video") {
            for (const key of ["frameWidth", "framesDecoded", "packetsLost", "freezeCount",
                               "totalFreezesDuration", "bytesReceived"]) {
                figures[key] = entry[key] || 0;
            }
        }
    });
    return figures;
}"""


def watch(
    server: AdaptiveFanout | AdaptiveJanus, viewer: str, phases: list[Phase], sample_seconds: float, workdir: Path
) -> tuple[list[Sample], list[float], float]:
    """Chromium in the viewer's namespace watches; the link follows ``phases``. The samples, each
    phase's start (seconds since the watch began) and when the watch began (time.time())."""
    from playwright.sync_api import sync_playwright

    launcher = workdir / "chromium-in-namespace"
    launcher.write_text(f'#!/bin/sh\nexec ip netns exec {viewer} {CHROMIUM} "$@"\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    samples: list[Sample] = []
    starts: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(launcher), headless=True, args=CHROMIUM_FLAGS, env={**os.environ, "HOME": str(workdir)}
        )
        try:
            page = browser.new_page()
            shape(phases[0], first=True)
            began, began_wall = time.monotonic(), time.time()
            page.goto(server.page_url())
            for index, phase in enumerate(phases):
                if index:
                    shape(phase, first=False)
                start = time.monotonic() - began
                starts.append(round(start, 3))
                print(f"  {server.name}: {phase.tc_rate} from {start:.1f} s", flush=True)
                while (now := time.monotonic() - began) < start + phase.seconds:
                    figures: dict[str, Any] = page.evaluate(VIDEO_STATS)
                    samples.append(
                        Sample(
                            seconds=round(now, 3),
                            phase=index,
                            frame_width=int(figures.get("frameWidth", 0)),
                            frames_decoded=int(figures.get("framesDecoded", 0)),
                            packets_lost=int(figures.get("packetsLost", 0)),
                            freeze_count=int(figures.get("freezeCount", 0)),
                            freezes_seconds=float(figures.get("totalFreezesDuration", 0.0)),
                            bytes_received=int(figures.get("bytesReceived", 0)),
                        )
                    )
                    time.sleep(max(0.0, sample_seconds - (time.monotonic() - began - now)))
            state = page.evaluate("window.fanoutDemo.state + ' ' + (window.fanoutDemo.error || '')")
            if not samples or samples[-1].frames_decoded == 0:
                raise RuntimeError(f"{server.name}: the viewer decoded nothing (page: {state}); server log:\n"
                                   + server.log_tail())  # fmt: skip
        finally:
            browser.close()
    return samples, starts, began_wall


def run(server_name: str, phases: list[Phase], sample_seconds: float, workdir: Path, *, live: bool) -> Run:
    folder = workdir / server_name
    folder.mkdir(parents=True, exist_ok=True)
    cpu = max(os.sched_getaffinity(0))
    with shaped_link(server_name) as viewer:
        server_type = AdaptiveFanout if server_name == "fanout" else AdaptiveJanus
        server: AdaptiveFanout | AdaptiveJanus = server_type(folder, cpu, source_rtcp=live)
        server.start()
        pages = _PageServer(PAGE_PORT, host=SERVER_ADDRESS) if server_name == "janus" else None
        command = live_source_command() if live else source_command(layer_files())
        source = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            time.sleep(2.0)  # a keyframe of each layer has reached the server
            samples, starts, began = watch(server, viewer, phases, sample_seconds, folder)
        finally:
            source.send_signal(signal.SIGTERM)
            try:
                source.wait(10)
            except subprocess.TimeoutExpired:
                source.kill()
                source.wait()
            if pages is not None:
                pages.stop()
            server.stop()
    estimates = estimates_logged(server.log_path, began) if isinstance(server, AdaptiveFanout) else []
    return Run(server_name, server.version() or server_name, samples, starts, summarize(samples, phases, starts),
               estimates, "live" if live else "files")  # fmt: skip


ESTIMATE_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*viewer \d+: estimate (\d+) bit/s")


def estimates_logged(log: Path, began: float) -> list[tuple[float, int]]:
    """fanout's estimates of the viewer (its debug log), as (seconds since the watch began, bits/s)."""
    estimates = []
    for line in log.read_text(errors="replace").splitlines():
        if match := ESTIMATE_LINE.match(line):
            at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            estimates.append((round(at - began, 3), int(match[2])))
    return estimates


# --- the report ---------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def table(runs: list[Run]) -> str:
    lines = [
        "| server | link | fitting layer | settled after (s) | freezes (s) | freezes | stalled (s) | packets lost "
        "| frames decoded | received kbit/s | widths seen |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for result in runs:
        for summary in result.phases:
            widths = ", ".join(str(width) for width in summary.widths)
            lines.append(
                f"| {result.server} | {summary.rate_kbps} kbit/s | {summary.fitting_width} "
                f"| {_seconds(summary.settle_seconds)} | {summary.freezes_seconds:.2f} | {summary.freeze_count} "
                f"| {summary.stalled_seconds:.1f} "
                f"| {summary.packets_lost} | {summary.frames_decoded} | {summary.received_kbps:.0f} | {widths} |"
            )
    return "\n".join(lines)


def plot(runs: list[Run], phases: list[Phase], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (widths, rates, decoded) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    colours = {"fanout": "tab:blue", "janus": "tab:red"}
    for result in runs:
        times = [sample.seconds for sample in result.samples]
        colour = colours.get(result.server, "tab:grey")
        widths.step(times, [sample.frame_width for sample in result.samples], where="post", color=colour,
                    label=result.server)  # fmt: skip
        received, fps = [0.0], [0.0]
        for before, after in zip(result.samples, result.samples[1:], strict=False):
            elapsed = after.seconds - before.seconds
            received.append((after.bytes_received - before.bytes_received) * 8 / 1000 / elapsed if elapsed else 0.0)
            fps.append((after.frames_decoded - before.frames_decoded) / elapsed if elapsed else 0.0)
        rates.plot(times, received, color=colour, linewidth=0.8, label=f"{result.server} received")
        if result.estimates:
            rates.step([at for at, _ in result.estimates], [bits / 1000 for _, bits in result.estimates], where="post",
                       color=colour, linestyle=":", label=f"{result.server}'s estimate")  # fmt: skip
        decoded.plot(times, fps, color=colour, linewidth=0.8, label=result.server)
    # The link's rate from the first run's phase starts (the runs' phases start within a second of each other).
    link_times: list[float] = []
    link_rates: list[float] = []
    for start, phase in zip(runs[0].phase_starts, phases, strict=True):
        link_times += [start, start + phase.seconds]
        link_rates += [phase.rate_kbps, phase.rate_kbps]
    rates.plot(link_times, link_rates, color="black", linestyle="--", label="link (tc tbf)")
    widths.set_ylabel("frame width (px)")
    widths.set_yticks([layer.width for layer in LAYERS])
    widths.legend(loc="lower right")
    widths.set_title("janus.js in Chromium on a shaped link: 3 Mbit/s, 600 kbit/s, 5 Mbit/s")
    rates.set_ylim(0, max(phase.rate_kbps for phase in phases) * 1.6)
    rates.set_ylabel("kbit/s")
    rates.legend(loc="upper left", fontsize="small")
    decoded.set_ylabel("frames decoded per s")
    decoded.set_xlabel("seconds since the watch request")
    decoded.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fanout bench adaptive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("fanout", "janus", "both"), default="both")
    parser.add_argument("--phases", default="3000:25,600:25,5000:30",
                        help="link rate in kbit/s and seconds, per phase (default 3000:25,600:25,5000:30)")  # fmt: skip
    parser.add_argument("--source", choices=("files", "live"), default="files",
                        help="files: layers encoded beforehand, sent by ffmpeg (no keyframe on request); "
                             "live: GStreamer encoding them live, a keyframe on request (default files)")  # fmt: skip
    parser.add_argument("--sample-ms", type=int, default=300, help="getStats() every this many ms (default 300)")
    parser.add_argument("--json", type=Path, default=Path("fanout-bench-adaptive.json"))
    parser.add_argument("--png", type=Path, default=Path("fanout-bench-adaptive.png"))
    args = parser.parse_args(argv)
    try:
        phases = [Phase(int(rate), float(seconds)) for rate, seconds in (part.split(":") for part in args.phases.split(","))]
    except ValueError:
        parser.error(f"--phases: expected rate_kbps:seconds,..., got {args.phases!r}")
    encoder = "gst-launch-1.0" if args.source == "live" else "ffmpeg"
    for tool in (encoder, "tc", CHROMIUM) + (("janus",) if args.server != "fanout" else ()):
        if shutil.which(tool) is None:
            raise SystemExit(f"fanout bench adaptive needs {tool}")
    names = ["fanout", "janus"] if args.server == "both" else [args.server]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="fanout-adaptive-") as workdir:
        for name in names:
            print(f"{name}: watching through {', '.join(phase.tc_rate for phase in phases)}", flush=True)
            runs.append(run(name, phases, args.sample_ms / 1000, Path(workdir), live=args.source == "live"))
    print()
    print(table(runs))
    args.json.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "machine": platform.processor() or platform.machine(),
                "python": sys.version.split()[0],
                "source": args.source,
                "layers": [asdict(layer) for layer in LAYERS],
                "fits_share": FITS_SHARE,
                "phases": [asdict(phase) for phase in phases],
                "runs": [asdict(result) for result in runs],
            },
            indent=1,
        )
    )
    plot(runs, phases, args.png)
    print(f"wrote {args.json} and {args.png}")
    return 0
