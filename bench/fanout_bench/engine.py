"""``fanout bench engine``: the data plane's throughput on this machine.

Drives the real engine (``fanout._engine.Engine``) with N viewers on loopback
that never read, fed by a source shaped like real video: 30 frames a second,
each frame's 1200-byte-payload RTP packets sent back to back (the last one
shorter), plus Opus (50 packets a second). The source is a Python thread in
this process; it sends a few thousand packets a second, so it measures the
engine (which multiplies them by N) and not itself.

Delivery is counted by the kernel, not by the engine: the run happens in a
private network namespace (``ip netns``) where /proc/net/snmp's Udp
InDatagrams + RcvbufErrors count every datagram that reached a socket, minus
the source's own datagrams to the engine and the engine's sender reports.

In the same run it measures the machine's own limits: the same sends of
ready-made datagrams with no engine around them ("kernel only",
``_engine.bench_send``) and SRTP protection alone ("crypto only",
``_engine.bench_protect``). Prints a table and writes a PNG plot.

Gbit/s count UDP payload bytes (the SRTP datagrams: 1228 bytes for GCM,
1222 for CM, for a 1200-byte RTP payload).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fanout import _engine
from fanout._engine import Engine

if TYPE_CHECKING:
    from fanout._engine import SendMode, SrtpProfile

GCM: SrtpProfile = "AEAD_AES_128_GCM"
CM: SrtpProfile = "AES_CM_128_HMAC_SHA1_80"
KEY_LENGTH = {GCM: 28, CM: 30}
SRTP_OVERHEAD = {GCM: 16, CM: 10}
PAYLOAD = 1200
RTP_HEADER = 12
FPS = 30
OPUS_PAYLOAD = 160
NETNS_ENV = "FANOUT_BENCH_NETNS"
NO_BENCH_FEATURE = (
    "fanout bench engine: this engine was built without its bench functions (cargo feature \"bench\"); "
    "./scripts/setup builds it with them, as does MATURIN_PEP517_ARGS='--features bench' pip install -e ."
)


@dataclass
class Result:
    name: str
    kind: str  # "engine", "kernel", "crypto"
    gbps: float = 0.0  # delivered
    pps: float = 0.0
    cpu_cores: float = 0.0  # CPU time / wall time of the threads doing the work
    loss: float = 0.0  # 1 - delivered / offered
    offered_gbps: float = 0.0
    ns_per_packet: float = 0.0  # CPU per delivered (or protected) packet
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def gbps_per_core(self) -> float:
        return self.gbps / self.cpu_cores if self.cpu_cores else 0.0

    @property
    def cpu_per_gbps(self) -> float:
        """Cores busy per Gbit/s delivered."""
        return self.cpu_cores / self.gbps if self.gbps else 0.0


def udp_counters() -> tuple[int, int]:
    """(InDatagrams, RcvbufErrors) of this network namespace."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    values = dict(zip(lines[0][1:], map(int, lines[1][1:])))
    return values["InDatagrams"], values["RcvbufErrors"]


def engine_cpu_ns() -> int:
    """CPU time of the engine's threads (receiver and workers), from schedstat."""
    total = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            if (task / "comm").read_text().startswith("fanout-"):
                total += int((task / "schedstat").read_text().split()[0])
        except OSError:
            continue
    return total


class Source(threading.Thread):
    """30 fps video (frames of back-to-back 1200-byte-payload packets, VP8
    keyframe every second) and Opus at 50 packets a second."""

    def __init__(self, video_port: int, audio_port: int, packets_per_frame: int) -> None:
        super().__init__(name="bench-source", daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.video = ("127.0.0.1", video_port)
        self.audio = ("127.0.0.1", audio_port)
        self.packets_per_frame = packets_per_frame
        self.stopping = threading.Event()
        self.video_packets = 0
        self.audio_packets = 0

    def run(self) -> None:
        sequence = audio_sequence = 0
        frame = 0
        started = time.monotonic()
        next_audio = started
        body = bytes(PAYLOAD - 1)
        while not self.stopping.is_set():
            keyframe = frame % FPS == 0
            for i in range(self.packets_per_frame):
                last = i == self.packets_per_frame - 1
                descriptor = 0x10 if i == 0 else 0x00  # S bit on the first packet of the frame
                vp8 = bytes([descriptor]) + (bytes([0x00 if keyframe else 0x01]) if i == 0 else b"")
                data = vp8 + body[: (PAYLOAD // 3 if last else PAYLOAD) - len(vp8)]
                header = struct.pack("!BBHII", 0x80, (0x80 if last else 0) | 96, sequence & 0xFFFF,
                                     (frame * 3000) & 0xFFFFFFFF, 0x5EED)
                self.sock.sendto(header + data, self.video)
                sequence += 1
            self.video_packets += self.packets_per_frame
            frame += 1
            now = time.monotonic()
            while next_audio <= now:
                header = struct.pack("!BBHII", 0x80, 111, audio_sequence & 0xFFFF, (audio_sequence * 960) & 0xFFFFFFFF,
                                     0xA0D10)
                self.sock.sendto(header + bytes(OPUS_PAYLOAD), self.audio)
                audio_sequence += 1
                self.audio_packets += 1
                next_audio += 0.02
            delay = started + frame / FPS - time.monotonic()
            if delay > 0:
                self.stopping.wait(delay)

    def stop(self) -> None:
        self.stopping.set()
        self.join()
        self.sock.close()


class Rig:
    """The WebRTC socket and the viewers' sockets, never read."""

    def __init__(self, viewers: int) -> None:
        self.webrtc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.webrtc.bind(("127.0.0.1", 0))
        self.sinks = []
        for _ in range(viewers):
            sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a few packets: memory stays small
            sink.bind(("127.0.0.1", 0))
            self.sinks.append(sink)
        self.addresses = [sink.getsockname() for sink in self.sinks]

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.webrtc.close()


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_engine(rig: Rig, name: str, profile: SrtpProfile, send_mode: SendMode, cores: list[int],
                   args: argparse.Namespace, transport_cc: bool = False) -> Result:
    """With ``transport_cc`` every viewer's packets carry a transport-wide sequence number and
    are kept in its send history, as for a viewer whose SDP negotiated transport-cc."""
    packets_per_frame = max(1, round(args.video_mbps * 1e6 / 8 / FPS / PAYLOAD))
    engine = Engine(rig.webrtc.fileno(), cores=cores, pin=not args.no_pin, send_mode=send_mode)
    try:
        video_port, audio_port = engine.add_mountpoint(1, [
            {"index": 0, "kind": "video", "codec": "vp8", "clock_rate": 90000, "host": "127.0.0.1", "port": 0},
            {"index": 1, "kind": "audio", "codec": "opus", "clock_rate": 48000, "host": "127.0.0.1", "port": 0},
        ])
        key = bytes(range(KEY_LENGTH[profile]))
        for viewer_id, (host, port) in enumerate(rig.addresses):
            engine.add_peer(viewer_id, (host, port), profile, key, key)
            engine.subscribe(viewer_id, 1, [
                {"index": 0, "ssrc": 0x1000 + viewer_id, "payload_type": 96},
                {"index": 1, "ssrc": 0x2000 + viewer_id, "payload_type": 111},
            ])
            if transport_cc:
                engine.set_transport_cc(viewer_id, 3)
        source = Source(video_port, audio_port, packets_per_frame)
        source.start()
        try:
            time.sleep(args.warmup)

            def snapshot() -> dict[str, float]:
                stats = engine.mountpoint_stats(1)
                rtcp = sum(engine.peer_stats(v).rtcp_packets for v in range(len(rig.addresses)))
                delivered, dropped = udp_counters()
                return {
                    "time": time.monotonic(), "kernel": delivered + dropped, "cpu": engine_cpu_ns(),
                    "video": source.video_packets, "audio": source.audio_packets, "rtcp": rtcp,
                    "sent_packets": stats.sent_packets, "sent_bytes": stats.sent_bytes,
                    "busy": sum(w.busy_ns for w in engine.worker_stats()),
                    "messages": sum(w.messages for w in engine.worker_stats()),
                    "overruns": sum(s.overruns for s in stats.streams),
                }

            before = snapshot()
            for second in range(1, int(args.seconds) + 1):
                time.sleep(1)
                now = snapshot()
                rate = (now["sent_bytes"] - before["sent_bytes"]) * 8 / (now["time"] - before["time"]) / 1e9
                progress(f"    {second:>2} s: engine sent {rate:6.2f} Gbit/s so far")
            after = snapshot()
        finally:
            source.stop()
    finally:
        engine.close()
    delta = {key: after[key] - before[key] for key in after}
    seconds = delta["time"]
    viewers = len(rig.addresses)
    delivered = delta["kernel"] - delta["video"] - delta["audio"] - delta["rtcp"]
    mean_size = delta["sent_bytes"] / delta["sent_packets"] if delta["sent_packets"] else 0
    offered = (delta["video"] + delta["audio"]) * viewers
    video_size = RTP_HEADER + PAYLOAD + SRTP_OVERHEAD[profile]
    offered_bytes = delta["video"] * viewers * video_size + delta["audio"] * viewers * (RTP_HEADER + OPUS_PAYLOAD)
    cpu_cores = delta["cpu"] / 1e9 / seconds
    return Result(
        name=name, kind="engine",
        gbps=delivered * mean_size * 8 / seconds / 1e9,
        pps=delivered / seconds,
        cpu_cores=cpu_cores,
        loss=max(0.0, 1 - delivered / offered) if offered else 0.0,
        offered_gbps=offered_bytes * 8 / seconds / 1e9,
        ns_per_packet=delta["cpu"] / delivered if delivered else 0.0,
        extra={"busy_cores": delta["busy"] / 1e9 / seconds,
               "packets_per_message": delta["sent_packets"] / delta["messages"] if delta["messages"] else 0.0,
               "overruns": delta["overruns"]},
    )


def measure_kernel(rig: Rig, name: str, send_mode: SendMode, core: int | None, args: argparse.Namespace) -> Result:
    run = max(1, round(args.video_mbps * 1e6 / 8 / FPS / PAYLOAD))
    size = RTP_HEADER + PAYLOAD + SRTP_OVERHEAD[GCM]
    kernel_before = sum(udp_counters())
    cost = _engine.bench_send(rig.webrtc.fileno(), rig.addresses, send_mode=send_mode, run_length=run,
                              datagram_size=size, seconds=args.seconds, core=core)
    delivered = sum(udp_counters()) - kernel_before
    seconds = cost["wall_ns"] / 1e9
    return Result(
        name=name, kind="kernel",
        gbps=delivered * size * 8 / seconds / 1e9, pps=delivered / seconds,
        cpu_cores=cost["cpu_ns"] / cost["wall_ns"],
        loss=max(0.0, 1 - delivered / cost["packets"]) if cost["packets"] else 0.0,
        ns_per_packet=cost["cpu_ns"] / delivered if delivered else 0.0,
    )


def measure_crypto(name: str, profile: SrtpProfile) -> Result:
    ns = _engine.bench_protect(profile, RTP_HEADER + PAYLOAD, 300_000)
    size = RTP_HEADER + PAYLOAD + SRTP_OVERHEAD[profile]
    return Result(name=name, kind="crypto", gbps=size * 8 / ns, pps=1e9 / ns, cpu_cores=1.0, ns_per_packet=ns)


def table(results: list[Result]) -> str:
    header = f"{'scenario':<34} {'Gbit/s':>7} {'Mpkt/s':>7} {'cores':>6} {'Gbit/s/core':>11} "
    lines = [header + f"{'ns/pkt':>7} {'loss':>6} {'offered':>8}"]
    for r in results:
        offered = f"{r.offered_gbps:7.2f}G" if r.kind == "engine" else ""
        lines.append(f"{r.name:<34} {r.gbps:7.2f} {r.pps / 1e6:7.3f} {r.cpu_cores:6.2f} {r.gbps_per_core:11.2f} "
                     f"{r.ns_per_packet:7.0f} {r.loss:6.1%} {offered:>8}")
    return "\n".join(lines)


def limits(results: list[Result]) -> list[str]:
    """The kernel+crypto limit per profile and how close the engine comes."""
    by_name = {r.name: r for r in results}
    kernel = by_name.get("kernel only, gso")
    lines = []
    for profile, short in ((GCM, "GCM"), (CM, "CM")):
        crypto = by_name.get(f"crypto only, {short}")
        engine = by_name.get(f"engine {short}, gso, 1 worker")
        if not (kernel and crypto and engine and kernel.ns_per_packet):
            continue
        size = RTP_HEADER + PAYLOAD + SRTP_OVERHEAD[profile]
        limit = size * 8 / (kernel.ns_per_packet + crypto.ns_per_packet)
        lines.append(f"{short}: kernel+crypto limit {limit:.2f} Gbit/s per core; engine 1 worker delivers "
                     f"{engine.gbps:.2f} Gbit/s ({engine.gbps / limit:.0%} of the limit) at "
                     f"{engine.gbps_per_core:.2f} Gbit/s per core of CPU ({engine.gbps_per_core / limit:.0%})")
        two = by_name.get(f"engine {short}, gso, 2 workers")
        if two and engine.gbps:
            lines.append(f"{short}: 2 workers deliver {two.gbps:.2f} Gbit/s = {two.gbps / engine.gbps:.2f}x one")
    return lines


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"engine": "tab:blue", "kernel": "tab:gray", "crypto": "tab:orange"}
    names = [r.name for r in results]
    panels: list[tuple[str, Callable[[Result], float]]] = [
        ("delivered Gbit/s", lambda r: r.gbps),
        ("packets/s (millions)", lambda r: r.pps / 1e6),
        ("CPU cores per Gbit/s", lambda r: r.cpu_per_gbps),
        ("loss %", lambda r: r.loss * 100),
    ]
    figure, axes = plt.subplots(1, 4, figsize=(20, 0.45 * len(results) + 2), sharey=True)
    for axis, (title, value) in zip(axes, panels):
        axis.barh(names, [value(r) for r in results], color=[colors[r.kind] for r in results])
        axis.set_title(title)
        if axis is axes[0]:
            axis.invert_yaxis()
        axis.grid(axis="x", alpha=0.3)
    figure.suptitle("fanout bench engine: 1200-byte payload, loopback, viewers never read")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


SCENARIOS = ("kernel", "crypto", "sendto", "sendmmsg", "gso", "cm", "workers", "twcc")


def run(args: argparse.Namespace) -> int:
    cores = sorted(os.sched_getaffinity(0))
    one = [cores[-1]]
    two = cores[-2:] if len(cores) >= 2 else cores
    chosen = set(args.only.split(",")) if args.only else set(SCENARIOS)
    rig = Rig(args.viewers)
    results: list[Result] = []
    plan: list[tuple[str, Callable[[], Result]]] = []
    if "kernel" in chosen:
        for mode in ("sendto", "sendmmsg", "gso"):
            plan.append((f"kernel only, {mode}", lambda mode=mode: measure_kernel(  # type: ignore[misc]
                rig, f"kernel only, {mode}", mode, None if args.no_pin else one[0], args)))
    if "crypto" in chosen:
        plan.append(("crypto only, GCM", lambda: measure_crypto("crypto only, GCM", GCM)))
        plan.append(("crypto only, CM", lambda: measure_crypto("crypto only, CM", CM)))
    engine_runs: list[tuple[str, SrtpProfile, SendMode, list[int]]] = []
    for mode in ("sendto", "sendmmsg", "gso"):
        if mode in chosen:
            engine_runs.append((f"engine GCM, {mode}, 1 worker", GCM, mode, one))  # type: ignore[arg-type]
    if "cm" in chosen:
        engine_runs.append(("engine CM, gso, 1 worker", CM, "gso", one))
    if "workers" in chosen and len(two) == 2:
        engine_runs.append(("engine GCM, gso, 2 workers", GCM, "gso", two))
        engine_runs.append(("engine CM, gso, 2 workers", CM, "gso", two))
    for name, profile, mode, worker_cores in engine_runs:
        plan.append((name, lambda n=name, p=profile, m=mode, c=worker_cores: measure_engine(  # type: ignore[misc]
            rig, n, p, m, c, args)))
    if "twcc" in chosen:
        # Transport-wide numbering off and on, alternating, so that both see the same machine.
        for repeat in range(2):
            for on in (False, True):
                name = f"engine GCM, gso, 1 worker, transport-cc {'on' if on else 'off'} ({repeat + 1})"
                plan.append((name, lambda n=name, o=on: measure_engine(  # type: ignore[misc]
                    rig, n, GCM, "gso", one, args, transport_cc=o)))
    try:
        for index, (name, measure) in enumerate(plan, 1):
            progress(f"[{index}/{len(plan)}] {name}")
            results.append(measure())
            progress(f"    -> {results[-1].gbps:.2f} Gbit/s, {results[-1].pps / 1e6:.3f} M packets/s")
    finally:
        rig.close()
    print(f"\n{args.viewers} viewers; video {args.video_mbps:g} Mbit/s at {FPS} fps "
          f"({max(1, round(args.video_mbps * 1e6 / 8 / FPS / PAYLOAD))} packets per frame) + Opus; "
          f"{args.seconds:g} s per run; cores {cores}; pinned: {not args.no_pin}\n")
    print(table(results))
    print()
    for line in limits(results):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    if args.plot:
        plot(results, Path(args.plot))
        print(f"\nplot: {args.plot}")
    return 0


def in_namespace(argv: list[str]) -> int:
    """Runs this command again inside a fresh network namespace whose only interface is lo."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        progress("fanout bench engine: needs root and ip(8) for a private network namespace; "
                 "use --no-netns to run here (kernel counters then include other traffic)")
        return 2
    name = f"fanout-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        command = ["ip", "netns", "exec", name, sys.executable, "-m", "fanout_bench.engine", *argv]
        return subprocess.run(command, check=False, env={**os.environ, NETNS_ENV: name}).returncode
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fanout bench engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--video-mbps", type=float, default=20.0,
                        help="the source's video bitrate; offered load = viewers x bitrate (default 20)")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per run (default 4)")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds before measuring (default 1.5)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--plot", default="fanout-bench-engine.png", help="PNG to write ('' for none)")
    parser.add_argument("--json", help="also write the results as JSON")
    parser.add_argument("--no-pin", action="store_true", help="do not pin workers to cores")
    parser.add_argument("--no-netns", action="store_true", help="run in the current network namespace")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if not hasattr(_engine, "bench_send"):
        progress(NO_BENCH_FEATURE)
        return 2
    if not args.no_netns and os.environ.get(NETNS_ENV) is None:
        return in_namespace(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
