"""``fanout bench control``: the control plane's own budget, and a synchronized burst of consent
checks from every viewer while the engine's worker runs at load on the same core.

fanout runs on one core (``--server-cpu``: its Python control plane, the engine's receiver and
its one worker share it), fed by the load bench's RTP source; ``--viewers`` cheap viewers (the
load bench's: Janus API, ICE, DTLS, RTP dropped by a socket filter) join and receive it. Then,
for each size in ``--receive-buffers`` (fanout.webrtc_receive_buffer; a fresh fanout each):

1. consent bursts: every 5 s for ``--rounds`` rounds (past the 30 s consent timeout), every viewer
   sends its consent check at the same instant and no other (as after a network blip); per round
   the checks answered, when the last answer came, and what the kernel dropped at fanout's
   WebRTC socket; after the rounds, the PeerConnections fanout still holds (a viewer whose checks
   were all lost for 30 s is hung up);
2. budgets: STUN binding requests, then SRTCP receiver reports, sent at ``--flood-rate`` a second
   for a few seconds, and the joins themselves (Janus API + ICE + DTLS); each count divided by
   the CPU time of fanout's main thread (the control plane), i.e. per second of one core.

In this process, DTLS handshakes alone: fanout's server side of the handshake (``DtlsTransport``)
against a client, its thread time only. JSON and a plot in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pylibsrtp

from fanout.webrtc.dtls import DtlsCertificate, DtlsTransport
from fanout.webrtc.stun import BINDING_SUCCESS, StunError, StunMessage
from fanout_bench.load.kernel import CLOCK_TICKS, core_times, process_cpu_seconds
from fanout_bench.load.netns import bench_namespace
from fanout_bench.load.pool import PoolConfig, ViewerPool
from fanout_bench.load.servers import AUDIO_PORT, MOUNTPOINT, VIDEO_PORT, WEBRTC_PORT, FanoutServer, raise_own_nofile
from fanout_bench.load.source import RtpSource, SourceShape
from fanout_bench.load.viewer import Viewer

CONSENT_INTERVAL = 5.0
ANSWER_TIMEOUT = 4.0  # a round's checks not answered by then are counted lost (the next round is at 5 s)
METRICS_PORT = 9464
SRTP_PROFILE = "AEAD_AES_128_GCM"
GCM = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
EMPTY_RECEIVER_REPORT = bytes([0x80, 201, 0, 1])  # RC 0, length 1 (the sender SSRC follows)
FLOOD_SECONDS = 3.0
FLOOD_TICK = 0.005
DRAIN_INTERVAL = 0.1


@dataclass
class BurstRound:
    sent: int
    answered: int
    last_answer_s: float | None  # from the burst to the last answer
    socket_drops: int  # datagrams the kernel dropped at fanout's WebRTC socket during the round
    core_busy: float  # fanout's core, busy fraction over the round


@dataclass
class Budget:
    what: str
    count: int  # handled by fanout (STUN and RTCP the kernel did not drop at its socket; joins)
    offered: int
    wall_s: float
    control_cpu_s: float  # fanout's main thread
    seen_by_viewers: int | None = None  # STUN: the answers the viewers read

    @property
    def per_core_second(self) -> float | None:
        return self.count / self.control_cpu_s if self.control_cpu_s > 0 else None


@dataclass
class Run:
    receive_buffer_asked: int
    receive_buffer_granted: int = 0
    viewers: int = 0
    worker_load: float = 0.0  # the engine worker's busy fraction while the viewers watch
    core_busy_at_load: float = 0.0
    rounds: list[BurstRound] = field(default_factory=list)
    peerconnections_after_rounds: int = 0
    budgets: list[Budget] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["budgets"] = [{**asdict(b), "per_core_second": b.per_core_second} for b in self.budgets]
        return data


def main_thread_cpu(pid: int) -> float:
    """User + system seconds of ``pid``'s main thread: fanout's asyncio loop, the control plane."""
    text = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def metrics(http: aiohttp.ClientSession) -> dict[str, float]:
    async with http.get(f"http://127.0.0.1:{METRICS_PORT}/metrics") as reply:
        text = await reply.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = values.get(name, 0.0) + float(value)
    return values


def worker_busy(values: dict[str, float]) -> float:
    return sum(value for name, value in values.items() if name.startswith("fanout_worker_busy_seconds"))


def stun_answers(viewer: Viewer) -> int:
    """Read what the kernel queued for a cheap viewer (its filter dropped the RTP); the STUN answers in it."""
    answers = 0
    while True:
        try:
            data = viewer.sock.recv(2048)
        except (BlockingIOError, InterruptedError, OSError):
            return answers
        if data and data[0] < 4:
            with contextlib.suppress(StunError):
                answers += StunMessage.parse(data).message_type == BINDING_SUCCESS


async def consent_round(viewers: list[Viewer], pid: int, cpu: int, http: aiohttp.ClientSession) -> BurstRound:
    drops_before = (await metrics(http)).get("fanout_webrtc_socket_drops_total", 0.0)
    core_before = core_times(cpu)
    for viewer in viewers:
        stun_answers(viewer)  # what came before the round
    start = time.monotonic()
    for viewer in viewers:  # at the same instant: no await between them
        viewer.send_consent()
    waiting = set(range(len(viewers)))
    last_answer: float | None = None
    while waiting and time.monotonic() - start < ANSWER_TIMEOUT:
        await asyncio.sleep(0.01)
        for index in list(waiting):
            if stun_answers(viewers[index]):
                waiting.discard(index)
                last_answer = time.monotonic() - start
    core_after = core_times(cpu)
    elapsed = core_after.busy + core_after.idle - core_before.busy - core_before.idle
    drops = (await metrics(http)).get("fanout_webrtc_socket_drops_total", 0.0) - drops_before
    return BurstRound(
        sent=len(viewers),
        answered=len(viewers) - len(waiting),
        last_answer_s=last_answer,
        socket_drops=int(drops),
        core_busy=(core_after.busy - core_before.busy) / elapsed if elapsed > 0 else 0.0,
    )


def receive_queue(port: int) -> int:
    """Bytes waiting in the receive queue of the UDP socket bound to ``port`` (0 if it is not listed)."""
    with open("/proc/net/udp") as lines:
        next(lines)
        for line in lines:
            fields = line.split()
            if len(fields) >= 13 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return int(fields[4].split(":")[1], 16)
    return 0


async def backlog_read(deadline: float) -> None:
    """Until fanout's control plane has read everything queued at its WebRTC socket."""
    end = time.monotonic() + deadline
    while time.monotonic() < end and receive_queue(WEBRTC_PORT) > 0:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # what it read, answered


async def stun_flood(viewers: list[Viewer], pid: int, rate: float, http: aiohttp.ClientSession) -> Budget:
    drops_before = (await metrics(http)).get("fanout_webrtc_socket_drops_total", 0.0)
    cpu_before, start = main_thread_cpu(pid), time.monotonic()
    sent = answered = 0
    drained = start
    while (elapsed := time.monotonic() - start) < FLOOD_SECONDS:
        while sent < elapsed * rate:
            viewers[sent % len(viewers)].send_consent()
            sent += 1
        await asyncio.sleep(FLOOD_TICK)
        if time.monotonic() - drained > DRAIN_INTERVAL:  # before a viewer's socket fills with answers
            answered += sum(stun_answers(viewer) for viewer in viewers)
            drained = time.monotonic()
    await backlog_read(30.0)
    cpu = main_thread_cpu(pid) - cpu_before
    answered += sum(stun_answers(viewer) for viewer in viewers)
    dropped = (await metrics(http)).get("fanout_webrtc_socket_drops_total", 0.0) - drops_before
    # fanout answers every check it reads: those the kernel did not drop at its socket (a viewer's
    # own socket may overflow with answers, so ``answered`` is a floor)
    return Budget("STUN binding requests", sent - int(dropped), sent, time.monotonic() - start, cpu, seen_by_viewers=answered)


async def rtcp_flood(viewers: list[Viewer], pid: int, rate: float, http: aiohttp.ClientSession) -> Budget:
    sessions = []
    for index, viewer in enumerate(viewers):
        assert viewer.keys is not None and viewer.remote is not None
        policy = pylibsrtp.Policy(
            key=viewer.keys.local_master_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=GCM
        )
        sessions.append((viewer, pylibsrtp.Session(policy), (0x10000 + index).to_bytes(4, "big")))
    drops_before = (await metrics(http)).get("fanout_webrtc_socket_drops_total", 0.0)
    cpu_before, start = main_thread_cpu(pid), time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < FLOOD_SECONDS:
        while sent < elapsed * rate:
            viewer, session, ssrc = sessions[sent % len(sessions)]
            assert viewer.remote is not None
            with contextlib.suppress(OSError):
                viewer.sock.sendto(session.protect_rtcp(EMPTY_RECEIVER_REPORT + ssrc), viewer.remote)
            sent += 1
        await asyncio.sleep(FLOOD_TICK)
    await backlog_read(30.0)
    cpu = main_thread_cpu(pid) - cpu_before
    for viewer in viewers:
        stun_answers(viewer)
    dropped = (await metrics(http)).get("fanout_webrtc_socket_drops_total", 0.0) - drops_before
    return Budget("SRTCP receiver reports", sent - int(dropped), sent, time.monotonic() - start, cpu)


def dtls_handshakes(count: int) -> Budget:
    """fanout's server side of ``count`` DTLS handshakes, its thread time alone (the client's left out)."""
    server_certificate, client_certificate = DtlsCertificate.generate(), DtlsCertificate.generate()
    server_time, start = 0.0, time.monotonic()
    for _ in range(count):
        server = DtlsTransport(
            server_certificate, is_server=True, remote_fingerprints=[("sha-256", client_certificate.fingerprint())]
        )
        client = DtlsTransport(
            client_certificate, is_server=False, remote_fingerprints=[("sha-256", server_certificate.fingerprint())]
        )
        client.start(0.0)
        before = time.thread_time()
        server.start(0.0)
        server_time += time.thread_time() - before
        while server.state == "connecting" or client.state == "connecting":
            for datagram in client.drain_datagrams():
                before = time.thread_time()
                server.receive(datagram, 0.0)
                server_time += time.thread_time() - before
            for datagram in server.drain_datagrams():
                client.receive(datagram, 0.0)
        if server.state != "connected":
            raise RuntimeError(f"a DTLS handshake ended {server.state}")
    return Budget("DTLS handshakes (server side, in-process)", count, count, time.monotonic() - start, server_time)


async def run_one(args: argparse.Namespace, receive_buffer: int, folder: Path) -> Run:
    run = Run(receive_buffer_asked=receive_buffer)
    extra = [f"metrics_port = {METRICS_PORT}", f"webrtc_receive_buffer = {receive_buffer}"]
    server = FanoutServer(folder, args.server_cpu, extra)
    server.start()
    source = RtpSource(SourceShape(args.bitrate), ("127.0.0.1", VIDEO_PORT), ("127.0.0.1", AUDIO_PORT), cpu=args.load_cpu)
    source.start()
    pool = ViewerPool(PoolConfig(url=server.url("http"), mountpoint=MOUNTPOINT, host="127.0.0.1", srtp_profile=SRTP_PROFILE))
    label = f"[receive buffer {receive_buffer >> 10} KiB]"
    try:
        await pool.start()
        pool._tasks[0].cancel()  # the pool's staggered consent checks: here the rounds send them
        async with aiohttp.ClientSession() as http:
            run.receive_buffer_granted = int((await metrics(http)).get("fanout_webrtc_receive_buffer_bytes", 0))
            cpu_before, start = main_thread_cpu(server.pid), time.monotonic()
            report = await pool.add(args.viewers, args.join_rate)
            join_cpu = main_thread_cpu(server.pid) - cpu_before
            run.budgets.append(
                Budget("joins (Janus API + ICE + DTLS)", report.joined, args.viewers, time.monotonic() - start, join_cpu)
            )
            viewers = pool.viewers
            run.viewers = len(viewers)
            print(f"{label} {report.joined} viewers joined ({report.failed} failed), granted {run.receive_buffer_granted >> 10} KiB", flush=True)
            busy_before, core_before, wall = worker_busy(await metrics(http)), core_times(args.server_cpu), time.monotonic()
            await asyncio.sleep(3)
            core_after = core_times(args.server_cpu)
            run.worker_load = (worker_busy(await metrics(http)) - busy_before) / (time.monotonic() - wall)
            elapsed = core_after.busy + core_after.idle - core_before.busy - core_before.idle
            run.core_busy_at_load = (core_after.busy - core_before.busy) / elapsed if elapsed > 0 else 0.0
            print(f"{label} at load: worker {run.worker_load:.0%} busy, core {run.core_busy_at_load:.0%}", flush=True)
            for index in range(args.rounds):
                round_start = time.monotonic()
                burst = await consent_round(viewers, server.pid, args.server_cpu, http)
                run.rounds.append(burst)
                last = f"{burst.last_answer_s * 1000:.0f} ms" if burst.last_answer_s is not None else "-"
                print(
                    f"{label} round {index + 1}: {burst.answered}/{burst.sent} answered, the last after {last}, "
                    f"{burst.socket_drops} dropped by the kernel, core {burst.core_busy:.0%} busy",
                    flush=True,
                )
                await asyncio.sleep(max(0.0, CONSENT_INTERVAL - (time.monotonic() - round_start)))
            await asyncio.sleep(2)  # a hangup at consent expiry is seen at the next timer tick
            run.peerconnections_after_rounds = int((await metrics(http)).get("fanout_peerconnections", 0))
            print(f"{label} after {args.rounds} rounds fanout holds {run.peerconnections_after_rounds} of {run.viewers} PeerConnections", flush=True)
            for budget in (
                await stun_flood(viewers, server.pid, args.flood_rate, http),
                await rtcp_flood(viewers, server.pid, args.flood_rate, http),
            ):
                run.budgets.append(budget)
            for budget in run.budgets:
                rate = f"{budget.per_core_second:,.0f}" if budget.per_core_second else "-"
                print(
                    f"{label} {budget.what}: {budget.count:,} of {budget.offered:,} in {budget.wall_s:.1f} s, "
                    f"{budget.control_cpu_s:.2f} s of the control plane's CPU: {rate} per core-second",
                    flush=True,
                )
    finally:
        await pool.close(graceful=False)
        source.stop()
        server.stop()
    return run


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rounds, budgets) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in result["runs"]:
        label = f"receive buffer {run['receive_buffer_granted'] >> 10} KiB granted"
        rounds.plot(range(1, len(run["rounds"]) + 1), [r["answered"] for r in run["rounds"]], marker="o", label=label)
    rounds.axhline(result["runs"][0]["viewers"], color="grey", linestyle=":", label="viewers")
    rounds.set_xlabel("consent burst (every 5 s)")
    rounds.set_ylabel("checks answered")
    rounds.set_ylim(bottom=0)
    rounds.legend()
    rounds.set_title(f"{result['viewers']} viewers' consent checks at once, worker at load")
    last = result["runs"][-1]
    names = [b["what"].split(" (")[0] for b in last["budgets"]] + ["DTLS handshakes (server)"]
    values = [b["per_core_second"] or 0 for b in last["budgets"]] + [result["dtls"]["per_core_second"] or 0]
    budgets.barh(names, values)
    budgets.set_xscale("log")
    budgets.set_xlabel("per second of one core (control plane's thread)")
    budgets.set_title("the control plane's budget")
    figure.tight_layout()
    figure.savefig(path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fanout bench control", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--viewers", type=int, default=500, help="viewers watching, each sending the bursts' checks (default 500)")
    parser.add_argument("--bitrate", type=float, default=2e6, help="the source's video bit/s: the worker's load (default 2e6)")
    parser.add_argument("--rounds", type=int, default=8, help="consent bursts, 5 s apart (default 8: past the 30 s consent timeout)")
    parser.add_argument(
        "--receive-buffers", type=lambda text: [int(size) for size in text.split(",")], default=[0, 8 << 20],
        help="fanout.webrtc_receive_buffer values to compare, bytes (default 0 = the kernel's default, and 8 MiB)",
    )  # fmt: skip
    parser.add_argument("--flood-rate", type=float, default=20_000, help="STUN and SRTCP sent a second in the budget floods (default 20000)")
    parser.add_argument("--join-rate", type=float, default=50, help="viewers joining a second (default 50)")
    parser.add_argument("--dtls-handshakes", type=int, default=300, help="in-process DTLS handshakes timed (default 300)")
    parser.add_argument("--server-cpu", type=int, default=0, help="the core fanout runs on (default 0)")
    parser.add_argument("--load-cpu", type=int, default=1, help="the core of the viewers and the source (default 1)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="where the JSON and PNG go")
    args = parser.parse_args(argv)
    if args.viewers < 1 or args.rounds < 1 or args.flood_rate <= 0 or any(size < 0 for size in args.receive_buffers):
        parser.error("--viewers and --rounds must be at least 1, --flood-rate positive, --receive-buffers not negative")
    dtls = dtls_handshakes(args.dtls_handshakes)
    print(f"DTLS handshakes, fanout's server side: {dtls.per_core_second:,.0f} per core-second", flush=True)
    now = datetime.datetime.now(datetime.UTC)
    result: dict[str, Any] = {
        "meta": {
            "date": now.isoformat(timespec="seconds"),
            "command": "fanout bench control " + " ".join(argv),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
            "rmem_default": int(Path("/proc/sys/net/core/rmem_default").read_text()),
            "rmem_max": int(Path("/proc/sys/net/core/rmem_max").read_text()),
            "server_cpu": args.server_cpu,
            "load_cpu": args.load_cpu,
        },
        "viewers": args.viewers,
        "bitrate": args.bitrate,
        "dtls": {**asdict(dtls), "per_core_second": dtls.per_core_second},
        "runs": [],
    }
    work = Path(tempfile.mkdtemp(prefix="fanout-bench-control-"))
    with bench_namespace():
        raise_own_nofile()
        os.sched_setaffinity(0, {args.load_cpu})
        for receive_buffer in args.receive_buffers:
            run = asyncio.run(run_one(args, receive_buffer, work / f"fanout-{receive_buffer}"))
            result["runs"].append(run.to_json())
    stem = args.out / f"control-{now:%Y-%m-%d}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(result, stem.with_suffix(".png"))
    print(f"results: {stem.with_suffix('.json')}  plot: {stem.with_suffix('.png')}", file=sys.stderr)
    return 0
