"""A crowd of viewers in one process: joining at a steady rate, consent, keepalives, counts.

:class:`ViewerPool` runs in the bench's main process for the cheap viewers;
:class:`SamplePool` runs a pool of sample (decrypting) viewers in a child
process, so that their reading and latency stamps are not held up by the
main process's handshakes; it answers the main process over a pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from fanout.webrtc.dtls import DtlsCertificate
from fanout_bench.load.feedback import FEEDBACK_INTERVAL
from fanout_bench.load.kernel import udp_drops
from fanout_bench.load.signaling import HttpJanus, JanusApi, WebSocketJanus
from fanout_bench.load.viewer import JoinError, Viewer

logger = logging.getLogger(__name__)

CONSENT_INTERVAL = 5.0
KEEPALIVE_INTERVAL = 25.0
TICK = 0.1
FEEDBACK_GROUPS = 10  # viewers send their feedback in this many groups spread over the interval


@dataclass(frozen=True)
class PoolConfig:
    url: str  # http://host:port/janus or ws://host:port/
    mountpoint: int
    host: str  # the viewers' address
    srtp_profile: str
    sample: bool = False
    concurrency: int = 16
    keepalive: float = KEEPALIVE_INTERVAL
    ice_transport: str = "udp"  # the viewers' media: "udp", or "tcp" (ICE-TCP, RFC 4571 frames)
    feedback: bool = False  # every viewer sends transport-wide feedback (transport-cc) every 100 ms


@dataclass
class JoinReport:
    joined: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    ttf_packet: list[float] = field(default_factory=list)  # seconds from watch to the first media packet
    ttf_frame: list[float] = field(default_factory=list)  # sample viewers: to the first whole keyframe


class ViewerPool:
    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.viewers: list[Viewer] = []
        self.certificate = DtlsCertificate.generate()
        self._http: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0)  # a WebSocket holds its connection: no pool limit
        self._http = aiohttp.ClientSession(connector=connector)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._consent()),
            loop.create_task(self._keepalive()),
        ]
        if self.config.feedback:
            self._tasks.append(loop.create_task(self._feedback()))

    def _api(self) -> JanusApi:
        assert self._http is not None
        if self.config.url.startswith("ws"):
            return WebSocketJanus(self._http, self.config.url)
        return HttpJanus(self._http, self.config.url)

    async def add(self, count: int, rate: float) -> JoinReport:
        """Join ``count`` viewers, starting ``rate`` a second at most, ``concurrency`` at a time."""
        report = JoinReport()
        semaphore = asyncio.Semaphore(self.config.concurrency)

        async def join_one() -> None:
            async with semaphore:
                viewer = Viewer(
                    self._api(),
                    mountpoint=self.config.mountpoint,
                    host=self.config.host,
                    certificate=self.certificate,
                    srtp_profile=self.config.srtp_profile,
                    sample=self.config.sample,
                    transport=self.config.ice_transport,
                    feedback=self.config.feedback,
                )
                try:
                    times = await viewer.join()
                except JoinError as error:
                    report.failed += 1
                    if len(report.errors) < 5:
                        report.errors.append(str(error))
                    self._spawn(viewer.api.close())
                    return
                now = time.monotonic()
                viewer.next_consent = now + random.uniform(0, CONSENT_INTERVAL)
                viewer.next_keepalive = now + random.uniform(0, self.config.keepalive)
                self.viewers.append(viewer)
                report.joined += 1
                report.ttf_packet.append(times.first_packet)
                if times.first_frame is not None:
                    report.ttf_frame.append(times.first_frame)

        tasks = []
        start = time.monotonic()
        for index in range(count):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.get_running_loop().create_task(join_one()))
        await asyncio.gather(*tasks)
        if self.config.sample:
            await self._wait_first_frames(report)
        return report

    async def _wait_first_frames(self, report: JoinReport) -> None:
        deadline = time.monotonic() + 5
        fresh = [v for v in self.viewers if v.times.first_frame is None]
        while fresh and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            fresh = [v for v in fresh if v.times.first_frame is None]
        report.ttf_frame = [v.times.first_frame for v in self.viewers if v.times.first_frame is not None]

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _consent(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            for viewer in self.viewers:
                if viewer.next_consent <= now:
                    viewer.send_consent()
                    viewer.next_consent = now + CONSENT_INTERVAL

    async def _feedback(self) -> None:
        """Each viewer's transport feedback every :data:`FEEDBACK_INTERVAL`: a tenth of them
        each tenth of it, so that the server gets them spread out, as from browsers."""
        group = 0
        while True:
            await asyncio.sleep(FEEDBACK_INTERVAL / FEEDBACK_GROUPS)
            for viewer in self.viewers[group::FEEDBACK_GROUPS]:
                try:
                    viewer.send_feedback()
                except Exception:  # noqa: BLE001 - a bug of one viewer's is reported and stops its feedback only
                    logger.exception("viewer %s: transport feedback failed; it sends no more", viewer.handle_id)
                    viewer.stop_feedback()
            group = (group + 1) % FEEDBACK_GROUPS

    def feedback_counts(self) -> tuple[int, int]:
        """Transport feedback messages sent so far by this pool's viewers, and the packets they reported."""
        messages = sum(viewer.feedback_sent for viewer in self.viewers)
        packets = sum(viewer.feedback_writer.packets_reported for viewer in self.viewers if viewer.feedback_writer)
        return messages, packets

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for viewer in self.viewers:
                if viewer.next_keepalive <= now:
                    viewer.next_keepalive = now + self.config.keepalive
                    self._spawn(self._keepalive_one(viewer))

    async def _keepalive_one(self, viewer: Viewer) -> None:
        with contextlib.suppress(Exception):
            await viewer.api.keepalive()

    def delivered(self) -> dict[int, tuple[int, int]]:
        """Per cheap viewer (by index): (RTP, other datagrams) the kernel delivered to its socket so far.

        RTP is the socket's drop count (its filter drops every RTP datagram);
        the others (RTCP, STUN) are read and counted here; a viewer that sends
        transport feedback adds the RTP samples its filter kept. A viewer whose
        socket the kernel's listing skipped is left out."""
        drops = udp_drops({viewer.inode for viewer in self.viewers if viewer.counter is None})
        counts: dict[int, tuple[int, int]] = {}
        for index, viewer in enumerate(self.viewers):
            if viewer.counter is not None:  # ICE-TCP: the viewer reads and counts every frame
                counts[index] = (viewer.counter.rtp, viewer.counter.other)
                continue
            drained = viewer.drain()
            if viewer.inode in drops:
                counts[index] = (drops[viewer.inode] + viewer.sampled_rtp, drained)
        return counts

    def meter_windows(self) -> list[dict[str, Any]]:
        """Each sample viewer's window, with what its socket dropped meanwhile (the reader fell behind)."""
        drops = udp_drops({viewer.inode for viewer in self.viewers if viewer.meter is not None})
        windows = []
        for viewer in self.viewers:
            if viewer.meter is None:
                continue
            window = viewer.meter.window()
            item = asdict(window)
            latencies = item.pop("latencies_ms")
            item["latency_ms"] = latencies
            dropped = drops.get(viewer.inode, viewer.socket_drops)
            item["socket_drops"] = dropped - viewer.socket_drops
            viewer.socket_drops = dropped
            windows.append(item)
        return windows

    async def close(self, graceful: bool = True) -> None:
        """Close every viewer; ``graceful`` destroys their sessions too (else the server is about to stop)."""
        for task in self._tasks:
            task.cancel()
        for viewer in self.viewers:
            viewer.close()
        closing = [viewer.api.close() for viewer in self.viewers] if graceful else []
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 10)
        for task in list(self._background):
            task.cancel()
        self.viewers.clear()
        if self._http is not None:
            await self._http.close()


# The sample pool, in a child process.


def _sample_main(connection: Connection, config: PoolConfig) -> None:
    logging.basicConfig(level=logging.WARNING)
    try:
        os.nice(-5)
    except OSError:
        pass
    asyncio.run(_sample_serve(connection, config))


async def _sample_serve(connection: Connection, config: PoolConfig) -> None:
    pool = ViewerPool(config)
    await pool.start()
    loop = asyncio.get_running_loop()
    requests: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    loop.add_reader(connection.fileno(), lambda: requests.put_nowait(connection.recv()))
    try:
        while True:
            command, argument = await requests.get()
            if command == "add":
                report = await pool.add(*argument)
                connection.send(asdict(report))
            elif command == "windows":
                connection.send(pool.meter_windows())
            elif command == "stop":
                break
    finally:
        loop.remove_reader(connection.fileno())
        await pool.close()
        connection.send("stopped")


class SamplePool:
    """A :class:`ViewerPool` of sample viewers in a child process."""

    def __init__(self, config: PoolConfig) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_sample_main, args=(child, config), daemon=True)
        self._process.start()
        self._lock = asyncio.Lock()

    async def _ask(self, command: str, argument: Any = None) -> Any:
        async with self._lock:
            self._connection.send((command, argument))
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, self._connection.recv)

    async def add(self, count: int, rate: float) -> JoinReport:
        return JoinReport(**await self._ask("add", (count, rate)))

    async def windows(self) -> list[dict[str, Any]]:
        return await self._ask("windows")  # type: ignore[no-any-return]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._ask("stop"), 20)
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()


def summarize_latency(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50": at(0.5),
        "p90": at(0.9),
        "p99": at(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }
