"""``fanout bench whip``: the same stream ingested two ways in one run, side by side.

(a) over WHIP into a ``whip`` mountpoint, by a publisher this bench drives: it POSTs an
offer of OBS Studio's shape (Opus and VP8, ``setup:actpass``, no candidates), does ICE
(controlling, against fanout's ICE-lite) and the DTLS handshake as the client with
fanout's own sans-IO code, then sends SRTP protected with libsrtp (pylibsrtp) from a
child process; (b) as plain RTP into an ``rtp`` mountpoint. Both carry the load bench's
stream (:mod:`fanout_bench.load.source`: VP8-shaped video at ``--mbps``, Opus-sized
audio), each payload stamped with its send time just before it is protected (WHIP) or
sent (RTP).

For each viewer count N in ``--viewers`` and each ingest, N of the load bench's viewers
watch (Janus API over WebSocket, ICE, DTLS-SRTP; up to 4 decrypt everything and read the
stamps, the rest are counted by the kernel), then ``--windows`` windows of ``--window``
seconds each measure:

- ingest CPU per Gbit/s: the server process's CPU time (the scheduler's run time of all
  its threads, /proc/<pid>/task/*/schedstat, where /proc/<pid>/stat would count 10 ms
  ticks) over the window divided by the bits of RTP the source sent in it
  (the same RTP bits both ways: SRTP's tag is overhead, not media); with N viewers the
  CPU includes sending to them, the same for both ingests;
- the added latency from the publisher's send stamp to a viewer's read (p50, p99);
- loss at the viewers.

The ingests alternate (RTP, WHIP, RTP, WHIP...) so that a neighbour's load on this
shared machine falls on both. Server and load are pinned to their own cores inside a
private network namespace, as in ``fanout bench load`` (root needed). JSON (every
window) and a PNG plot go to ``--output`` (default bench/results/whip-<date>).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import secrets
import select
import socket
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import aiohttp
import pylibsrtp

from fanout.webrtc.dtls import (
    DtlsCertificate,
    DtlsClosedEvent,
    DtlsConnectedEvent,
    DtlsTransport,
    SrtpKeys,
)
from fanout.webrtc.sdp import parse_description
from fanout_bench.load.command import PROFILES, _cpu_model, _engine_build, _git_commit
from fanout_bench.load.ice import Address, IceClient
from fanout_bench.load.kernel import process_cpu_seconds
from fanout_bench.load.media import _PROFILES as SRTP_POLICIES
from fanout_bench.load.netns import bench_namespace
from fanout_bench.load.pool import PoolConfig, SamplePool, ViewerPool, summarize_latency
from fanout_bench.load.servers import (
    AUDIO_PORT,
    HTTP_PORT,
    MOUNTPOINT,
    VIDEO_PORT,
    WS_PORT,
    FanoutServer,
    raise_own_nofile,
)
from fanout_bench.load.source import AUDIO_PT, VIDEO_PT, RtpSource, SourceShape
from fanout_bench.load.viewer import SRTP_CHOICES

WHIP_MOUNTPOINT = 2
WHIP_TOKEN = "bench-whip-token"
WHIP_CONFIG = f"""
bench-whip: {{
	type = "whip"
	id = {WHIP_MOUNTPOINT}
	description = "fanout bench whip"
	whip_token = "{WHIP_TOKEN}"
	media = (
		{{ type = "audio", mid = "a", codec = "opus", pt = {AUDIO_PT} }},
		{{ type = "video", mid = "v", codec = "vp8", pt = {VIDEO_PT} }}
	)
}}
"""
STEP_TIMEOUT = 20.0
CHECK_INTERVAL = 0.05
CONSENT_INTERVAL = 5.0
MAX_SAMPLES = 4
QUANTILES = [q / 100 for q in range(1, 100)] + [0.995, 0.999]


class WhipBenchServer(FanoutServer):
    """fanout with the load bench's rtp mountpoint (1) and a whip mountpoint (2)."""

    def write_config(self) -> None:
        super().write_config()
        streaming = self.folder / "janus.plugin.streaming.jcfg"
        streaming.write_text(streaming.read_text() + WHIP_CONFIG)


def whip_offer(ice: IceClient, fingerprint: str) -> str:
    """An offer of OBS Studio's shape: Opus then VP8, sendonly, no candidates, no extensions."""
    ssrc_audio, ssrc_video = secrets.randbits(32), secrets.randbits(32)
    lines = [
        "v=0",
        f"o=- {secrets.randbits(62)} 0 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic:WMS *",
        "a=setup:actpass",
        f"a=ice-ufrag:{ice.local_ufrag}",
        f"a=ice-pwd:{ice.local_pwd}",
        f"a=fingerprint:sha-256 {fingerprint}",
        f"m=audio 9 UDP/TLS/RTP/SAVPF {AUDIO_PT}",
        "c=IN IP4 0.0.0.0",
        "a=mid:0",
        "a=sendonly",
        f"a=ssrc:{ssrc_audio} cname:fanout-bench",
        "a=rtcp-mux",
        f"a=rtpmap:{AUDIO_PT} opus/48000/2",
        f"a=fmtp:{AUDIO_PT} stereo=1;useinbandfec=1",
        f"m=video 9 UDP/TLS/RTP/SAVPF {VIDEO_PT}",
        "c=IN IP4 0.0.0.0",
        "a=mid:1",
        "a=sendonly",
        f"a=ssrc:{ssrc_video} cname:fanout-bench",
        "a=rtcp-mux",
        f"a=rtpmap:{VIDEO_PT} VP8/90000",
        f"a=rtcp-fb:{VIDEO_PT} nack",
        f"a=rtcp-fb:{VIDEO_PT} nack pli",
        f"a=rtcp-fb:{VIDEO_PT} goog-remb",
    ]
    return "\r\n".join(lines) + "\r\n"


class SrtpSource(RtpSource):
    """The load bench's source, sending SRTP to one address from a socket it is handed
    (the one the publisher did ICE and DTLS on, so fanout's link receives it)."""

    def __init__(self, shape: SourceShape, sock: socket.socket, remote: Address, session: pylibsrtp.Session,
                 *, cpu: int | None) -> None:  # fmt: skip
        super().__init__(shape, remote, remote, cpu=cpu)
        self._sock = sock
        self._session = session

    def _open_socket(self) -> socket.socket:
        return self._sock  # non-blocking: the flag is the parent's too, which reads it

    def _send(self, sock: socket.socket, packet: bytes, address: tuple[str, int]) -> None:
        datagram = self._session.protect(packet)
        while True:
            try:
                sock.sendto(datagram, address)
                return
            except BlockingIOError:  # the send buffer is full: wait for room, as a blocking send would
                select.select([], [sock], [], 0.01)


class BenchPublisher:
    """A WHIP publisher made of the bench viewer's parts: ICE, DTLS client, SRTP from a child."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str, srtp_profile: str) -> None:
        self.http = http
        self.url = url
        self.token = token
        self.profile = SRTP_CHOICES[srtp_profile]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
        self.sock.bind(("127.0.0.1", 0))
        self.certificate = DtlsCertificate.generate()
        self.ice = IceClient(controlling=True)
        self.dtls: DtlsTransport | None = None
        self.remote: Address | None = None
        self.keys: SrtpKeys | None = None
        self.location: str | None = None
        self.rtcp_datagrams = 0
        self.nacks = 0  # Generic NACK packets fanout sent the publisher (losses on the ingest)
        self._inbound: pylibsrtp.Session | None = None
        self._loop = asyncio.get_running_loop()
        self._nominated: asyncio.Future[Address] = self._loop.create_future()
        self._connected: asyncio.Future[SrtpKeys] = self._loop.create_future()
        self._dtls_timer: asyncio.TimerHandle | None = None
        self._consent: asyncio.Task[None] | None = None

    async def connect(self) -> SrtpKeys:
        offer = whip_offer(self.ice, self.certificate.fingerprint("sha-256"))
        headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {self.token}"}
        async with self.http.post(self.url, data=offer, headers=headers) as reply:
            body = await reply.text()
            if reply.status != 201:
                raise RuntimeError(f"WHIP POST: {reply.status} {body}")
            self.location = reply.headers["Location"]
        answer = parse_description(body)
        self.ice.set_remote(answer.ice_ufrag, answer.ice_pwd)
        candidates = [(c.ip, c.port) for c in answer.candidates
                      if c.transport.lower() == "udp" and c.component == 1 and ":" not in c.ip]  # fmt: skip
        if not candidates:
            raise RuntimeError("the WHIP answer has no IPv4 UDP candidate")
        self.dtls = DtlsTransport(
            self.certificate, is_server=False, remote_fingerprints=answer.fingerprints, profiles=(self.profile,)
        )
        self._loop.add_reader(self.sock.fileno(), self._readable)
        checks = self._loop.create_task(self._send_checks(candidates))
        try:
            self.remote = await asyncio.wait_for(asyncio.shield(self._nominated), STEP_TIMEOUT)
        finally:
            checks.cancel()
        self.dtls.start(self._loop.time())
        self._flush_dtls()
        self.keys = await asyncio.wait_for(asyncio.shield(self._connected), STEP_TIMEOUT)
        policy = SRTP_POLICIES[self.keys.profile]
        self._inbound = pylibsrtp.Session(
            pylibsrtp.Policy(key=self.keys.remote_master_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                             srtp_profile=policy)  # fmt: skip
        )
        self._consent = self._loop.create_task(self._keep_consent())
        return self.keys

    def outbound_session(self) -> pylibsrtp.Session:
        assert self.keys is not None
        return pylibsrtp.Session(
            pylibsrtp.Policy(key=self.keys.local_master_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                             srtp_profile=SRTP_POLICIES[self.keys.profile])  # fmt: skip
        )

    async def _send_checks(self, candidates: list[Address]) -> None:
        while True:
            for address in candidates:
                self._send(self.ice.check_request(address), address)
            await asyncio.sleep(CHECK_INTERVAL)

    async def _keep_consent(self) -> None:
        while True:
            await asyncio.sleep(CONSENT_INTERVAL)
            if self.remote is not None:
                self._send(self.ice.consent_request(), self.remote)

    def _send(self, data: bytes, address: Address) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendto(data, address)

    def _readable(self) -> None:
        for _ in range(64):
            try:
                data, address = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError, OSError):
                return
            if not data:
                continue
            first = data[0]
            if first < 4:
                result = self.ice.receive(data, address)
                if result.response is not None:
                    self._send(result.response, address)
                if result.nominated is not None and not self._nominated.done():
                    self._nominated.set_result(result.nominated)
            elif 20 <= first <= 63 and self.dtls is not None and self.remote is not None:
                self.dtls.receive(data, self._loop.time())
                self._flush_dtls()
            elif 128 <= first <= 191:
                self._rtcp(data)

    def _rtcp(self, data: bytes) -> None:
        self.rtcp_datagrams += 1
        if self._inbound is None:
            return
        try:
            compound = self._inbound.unprotect_rtcp(data)
        except pylibsrtp.Error:
            return
        while len(compound) >= 4:
            length = 4 * (struct.unpack_from("!H", compound, 2)[0] + 1)
            if compound[1] == 205 and compound[0] & 0x1F == 1:
                self.nacks += 1
            compound = compound[length:]

    def _flush_dtls(self) -> None:
        assert self.dtls is not None and self.remote is not None
        for datagram in self.dtls.drain_datagrams():
            self._send(datagram, self.remote)
        for event in self.dtls.drain_events():
            if isinstance(event, DtlsConnectedEvent) and not self._connected.done():
                self._connected.set_result(event.keys)
            elif isinstance(event, DtlsClosedEvent) and not self._connected.done():
                self._connected.set_exception(RuntimeError(f"DTLS: {event.reason}"))
        if self._dtls_timer is not None:
            self._dtls_timer.cancel()
            self._dtls_timer = None
        deadline = self.dtls.next_timeout()
        if deadline is not None:
            self._dtls_timer = self._loop.call_at(deadline, self._dtls_timeout)

    def _dtls_timeout(self) -> None:
        self._dtls_timer = None
        if self.dtls is not None and self.remote is not None:
            self.dtls.handle_timeout(self._loop.time())
            self._flush_dtls()

    async def close(self) -> None:
        if self._consent is not None:
            self._consent.cancel()
        if self._dtls_timer is not None:
            self._dtls_timer.cancel()
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self.sock.fileno())
        if self.location is not None:
            with contextlib.suppress(aiohttp.ClientError):
                async with self.http.delete(
                    f"http://127.0.0.1:{HTTP_PORT}{self.location}", headers={"Authorization": f"Bearer {self.token}"}
                ):
                    pass
        self.sock.close()


def process_run_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` so far, in nanoseconds' precision: the scheduler's
    run time (/proc/<pid>/task/*/schedstat), where /proc/<pid>/stat counts 10 ms ticks."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def progress(text: str) -> None:
    print(f"[whip bench] {text}", file=sys.stderr, flush=True)


def quantiles(values: list[float]) -> list[float]:
    ordered = sorted(values)
    return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in QUANTILES] if ordered else []


async def measure_window(pid: int, source: RtpSource, cheap: ViewerPool, samples: SamplePool,
                         seconds: float) -> tuple[dict[str, Any], list[float]]:  # fmt: skip
    """One window: the server's CPU against the RTP bits ingested, loss, and the raw latencies."""
    await samples.windows()  # the sample viewers' counts start now
    sent0, delivered0, start = source.sent(), cheap.delivered(), time.monotonic()
    cpu0, run0 = process_cpu_seconds(pid), process_run_seconds(pid)
    await asyncio.sleep(seconds)
    windows = await samples.windows()
    sent1, delivered1 = source.sent(), cheap.delivered()
    cpu1, run1 = process_cpu_seconds(pid), process_run_seconds(pid)
    elapsed = time.monotonic() - start
    ingest_bytes = sum(sent1[key] - sent0[key] for key in ("video_bytes", "audio_bytes"))
    packets = sum(sent1[key] - sent0[key] for key in ("video_packets", "audio_packets"))
    ingest_gbps = ingest_bytes * 8 / elapsed / 1e9
    server_cpu = (run1 - run0) / elapsed
    server_cpu_ticks = (cpu1 - cpu0) / elapsed
    counted = [index for index in delivered0 if index in delivered1]
    cheap_lost = sum(max(0, packets - (delivered1[i][0] - delivered0[i][0])) for i in counted)
    sample_expected = sum(w["expected"] for w in windows)
    sample_lost = sum(w["lost"] for w in windows)
    expected = sample_expected + packets * len(counted)
    latencies = [value for w in windows for value in w["latency_ms"]]
    summary = summarize_latency(latencies)
    return {
        "seconds": elapsed,
        "ingest_mbps": ingest_gbps * 1e3,
        "ingest_pps": packets / elapsed,
        "server_cpu": server_cpu,
        "cpu_per_gbps": server_cpu / ingest_gbps if ingest_gbps else None,
        "server_cpu_ticks": server_cpu_ticks,
        "cpu_per_gbps_ticks": server_cpu_ticks / ingest_gbps if ingest_gbps else None,
        "viewers_counted": len(counted) + len(windows),
        "loss": (cheap_lost + sample_lost) / expected if expected else None,
        "latency_ms": summary,
        "latency_samples": len(latencies),
    }, latencies


async def run_one(server: FanoutServer, ingest: str, viewers: int, args: argparse.Namespace,
                  shape: SourceShape) -> dict[str, Any]:  # fmt: skip
    """One ingest with ``viewers`` viewers: join, settle, ``args.windows`` windows."""
    label = f"{ingest} {viewers} viewers"
    mountpoint = WHIP_MOUNTPOINT if ingest == "whip" else MOUNTPOINT
    config = PoolConfig(url=f"ws://127.0.0.1:{WS_PORT}/", mountpoint=mountpoint, host="127.0.0.1",
                        srtp_profile=PROFILES[args.srtp])  # fmt: skip
    sample_count = min(MAX_SAMPLES, viewers)
    result: dict[str, Any] = {"ingest": ingest, "viewers": viewers, "samples": sample_count, "windows": []}
    async with aiohttp.ClientSession() as http:
        publisher: BenchPublisher | None = None
        source: RtpSource
        if ingest == "whip":
            publisher = BenchPublisher(http, f"http://127.0.0.1:{HTTP_PORT}/whip/endpoint/{WHIP_MOUNTPOINT}",
                                       WHIP_TOKEN, PROFILES[args.srtp])  # fmt: skip
            started = time.monotonic()
            keys = await publisher.connect()
            result["publisher_connect_s"] = time.monotonic() - started
            result["publisher_srtp"] = keys.profile
            assert publisher.remote is not None
            source = SrtpSource(shape, publisher.sock, publisher.remote, publisher.outbound_session(),
                                cpu=args.load_cpu)  # fmt: skip
        else:
            source = RtpSource(shape, ("127.0.0.1", VIDEO_PORT), ("127.0.0.1", AUDIO_PORT), cpu=args.load_cpu)
        source.start()
        cheap = ViewerPool(config)
        await cheap.start()
        samples = SamplePool(replace(config, sample=True))
        try:
            report = await samples.add(sample_count, args.join_rate)
            if report.joined < sample_count:
                raise RuntimeError(f"[{label}] sample viewers could not join: {report.errors}")
            if viewers > sample_count:
                report = await cheap.add(viewers - sample_count, args.join_rate)
                if report.failed:
                    raise RuntimeError(f"[{label}] {report.failed} viewers could not join: {report.errors}")
            await asyncio.sleep(args.settle)
            latencies: list[float] = []
            for number in range(args.windows):
                window, raw = await measure_window(server.pid, source, cheap, samples, args.window)
                latencies += raw
                result["windows"].append(window)
                latency = window["latency_ms"]
                progress(
                    f"{label} window {number + 1}/{args.windows}: ingest {window['ingest_mbps']:.2f} Mbit/s, "
                    f"server cpu {window['server_cpu']:.3f} cores = {window['cpu_per_gbps'] or 0:.3f} s/Gbit, "
                    f"latency p50 {latency['p50'] or 0:.2f} ms p99 {latency['p99'] or 0:.2f} ms, "
                    f"loss {100 * (window['loss'] or 0):.3f}%"
                )
            result["latency_ms"] = summarize_latency(latencies)
            result["latency_quantiles_ms"] = quantiles(latencies)
            if publisher is not None:
                result["publisher_rtcp_datagrams"] = publisher.rtcp_datagrams
                result["publisher_nacks"] = publisher.nacks
        finally:
            await samples.close()
            await cheap.close(graceful=True)
            source.stop()
            if publisher is not None:
                await publisher.close()
    cpu = [w["cpu_per_gbps"] for w in result["windows"] if w["cpu_per_gbps"] is not None]
    result["cpu_per_gbps"] = statistics.median(cpu) if cpu else None
    result["server_cpu"] = statistics.median(w["server_cpu"] for w in result["windows"])
    losses = [w["loss"] for w in result["windows"] if w["loss"] is not None]
    result["loss"] = max(losses) if losses else None
    return result


def ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """WHIP / RTP for each viewer count: CPU per Gbit/s (medians of the windows), latency p50 and p99."""
    rows = []
    for viewers in sorted({run["viewers"] for run in runs}):
        by_ingest = {run["ingest"]: run for run in runs if run["viewers"] == viewers}
        rtp, whip = by_ingest.get("rtp"), by_ingest.get("whip")
        if rtp is None or whip is None:
            continue

        def ratio(a: float | None, b: float | None) -> float | None:
            return a / b if a is not None and b else None

        rows.append({
            "viewers": viewers,
            "cpu_per_gbps": {"rtp": rtp["cpu_per_gbps"], "whip": whip["cpu_per_gbps"],
                             "whip_over_rtp": ratio(whip["cpu_per_gbps"], rtp["cpu_per_gbps"])},
            **{f"latency_{q}_ms": {"rtp": rtp["latency_ms"][q], "whip": whip["latency_ms"][q],
                                   "whip_over_rtp": ratio(whip["latency_ms"][q], rtp["latency_ms"][q])}
               for q in ("p50", "p99")},
        })  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["viewers  cpu s/Gbit rtp  whip  ratio   p50 ms rtp  whip  ratio   p99 ms rtp  whip  ratio"]
    for row in rows:
        cells = [f"{row['viewers']:7d}"]
        for key in ("cpu_per_gbps", "latency_p50_ms", "latency_p99_ms"):
            item = row[key]
            cells.append(
                f"{item['rtp'] or 0:14.3f} {item['whip'] or 0:5.3f} {item['whip_over_rtp'] or 0:5.2f}x"
                if key == "cpu_per_gbps"
                else f"{item['rtp'] or 0:10.2f} {item['whip'] or 0:5.2f} {item['whip_over_rtp'] or 0:5.2f}x"
            )
        lines.append("  ".join(cells))
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    counts = sorted({run["viewers"] for run in runs})
    colours = {"rtp": "tab:blue", "whip": "tab:orange"}
    figure, (cpu_axes, latency_axes) = plt.subplots(1, 2, figsize=(12, 5))
    width = 0.35
    for offset, ingest in ((-width / 2, "rtp"), (width / 2, "whip")):
        for position, viewers in enumerate(counts):
            for run in (r for r in runs if r["ingest"] == ingest and r["viewers"] == viewers):
                values = [w["cpu_per_gbps"] for w in run["windows"] if w["cpu_per_gbps"] is not None]
                cpu_axes.bar(position + offset, run["cpu_per_gbps"] or 0, width, color=colours[ingest],
                             label=ingest.upper() if position == 0 else None)  # fmt: skip
                cpu_axes.scatter([position + offset] * len(values), values, color="black", s=8, zorder=3)
                quantile_values = run.get("latency_quantiles_ms") or []
                if quantile_values:
                    style = "-" if viewers == counts[-1] else "--"
                    latency_axes.plot(quantile_values, [100 * q for q in QUANTILES], style, color=colours[ingest],
                                      label=f"{ingest.upper()}, {viewers} viewers")  # fmt: skip
    cpu_axes.set_xticks(range(len(counts)), [f"{n} viewers" for n in counts])
    cpu_axes.set_ylabel("server CPU s per Gbit ingested (bars: median; dots: windows)")
    cpu_axes.set_title(f"ingest CPU, {results['meta']['mbps']} Mbit/s stream")
    cpu_axes.legend()
    latency_axes.set_xscale("log")
    latency_axes.set_xlabel("publisher send -> viewer read (ms)")
    latency_axes.set_ylabel("percentile")
    latency_axes.set_title("added latency")
    latency_axes.grid(True, which="both", alpha=0.3)
    latency_axes.legend()
    figure.suptitle("fanout: WHIP ingest vs plain RTP, same stream, same run")
    figure.tight_layout()
    figure.savefig(path)


async def bench(args: argparse.Namespace, server: FanoutServer, shape: SourceShape) -> list[dict[str, Any]]:
    runs = []
    for viewers in args.viewers:
        for ingest in ("rtp", "whip"):
            progress(f"{ingest}: {viewers} viewers")
            runs.append(await run_one(server, ingest, viewers, args, shape))
    return runs


def idle_cpu(pid: int, seconds: float) -> float:
    """The server's CPU with no source and no viewer (its control plane's timers)."""
    start, cpu0 = time.monotonic(), process_run_seconds(pid)
    time.sleep(seconds)
    return (process_run_seconds(pid) - cpu0) / (time.monotonic() - start)


def viewer_counts(text: str) -> list[int]:
    try:
        counts = [int(value) for value in text.split(",") if value.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: viewer counts separated by commas, e.g. 1,20") from None
    if not counts or any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError(f"{text!r}: each viewer count must be at least 1")
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fanout bench whip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--mbps", type=float, default=10.0, help="video bit rate of the stream, Mbit/s (default 10)")
    parser.add_argument("--viewers", type=viewer_counts, default=[1, 20], help="viewer counts, e.g. 1,20 (default)")
    parser.add_argument("--windows", type=int, default=3, help="measured windows per ingest and viewer count")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per window (default 10)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the joins before measuring")
    parser.add_argument("--join-rate", type=float, default=20.0, help="viewers joining per second")
    parser.add_argument("--srtp", choices=sorted(PROFILES), default="gcm", help="SRTP profile, publisher and viewers")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--server-nice", type=int, default=-10)
    parser.add_argument("--output", type=Path, help="results path without extension (default bench/results/whip-<date>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mbps <= 0 or args.windows < 1 or args.window <= 0:
        parser.error("--mbps and --window must be positive and --windows at least 1")
    now = datetime.datetime.now(datetime.UTC)
    output: Path = args.output or Path("bench/results") / f"whip-{now:%Y-%m-%d}"
    shape = SourceShape(args.mbps * 1e6)
    results: dict[str, Any] = {
        "meta": {
            "date": now.isoformat(timespec="seconds"),
            "commit": _git_commit(),
            "command": "fanout bench whip " + " ".join(sys.argv[3:] if sys.argv[1:3] == ["bench", "whip"] else []),
            "engine": _engine_build(),
            "cpu_model": _cpu_model(),
            "cpus": os.cpu_count(),
            "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
            "mbps": args.mbps,
            "shape": asdict(shape),
            "srtp": PROFILES[args.srtp],
            "server_cpu": args.server_cpu,
            "load_cpu": args.load_cpu,
            "accounting": "cpu_per_gbps: the server process's CPU seconds over a window (the scheduler's run time "
            "of all its threads, /proc/<pid>/task/*/schedstat; *_ticks: user+system from /proc/<pid>/stat, 10 ms "
            "ticks) per Gbit of RTP the source sent in it (RTP bytes, both ingests); latency: the source's send stamp (taken just before "
            "SRTP protection or the RTP send) to a sample viewer's read of the datagram (before it decrypts)",
        },
    }
    work = Path(tempfile.mkdtemp(prefix="fanout-bench-whip-"))
    with bench_namespace():
        raise_own_nofile()
        os.sched_setaffinity(0, {args.load_cpu})
        with contextlib.suppress(OSError):
            os.nice(-5)
        server = WhipBenchServer(work / "fanout", args.server_cpu)
        server.nice = args.server_nice
        progress(f"starting fanout on cpu {args.server_cpu}")
        server.start()
        try:
            results["meta"]["server_idle_cpu"] = idle_cpu(server.pid, 5.0)
            progress(f"fanout idle: {results['meta']['server_idle_cpu']:.4f} cores")
            results["runs"] = asyncio.run(bench(args, server, shape))
        except Exception:
            print(server.log_tail(30), file=sys.stderr)
            raise
        finally:
            server.stop()
    results["ratios"] = ratios(results["runs"])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(results, indent=1))
    plot(results, output.with_suffix(".png"))
    print(table(results["ratios"]))
    print(f"\nresults: {output.with_suffix('.json')}  plot: {output.with_suffix('.png')}")
    return 0
