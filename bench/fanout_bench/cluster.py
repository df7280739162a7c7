"""fanout bench cluster: joins through an edge, cold and warm, and the origin's CPU per relay.

    fanout bench cluster --joins 12 --relays 0,1,2,4,8,16 --seconds 10
    fanout bench cluster --failover --viewers 30 --edges 3   (see fanout_bench.cluster_failover)
    fanout bench cluster --scale --edge-cpu 0.25             (see fanout_bench.cluster_scale; root)

On this machine's loopback, without Redis (relay mountpoints configured by hand): an
origin ``fanout serve`` on 127.0.0.2 with one mountpoint fed by the built-in test
source (VP8 1 Mbit/s + Opus, a keyframe a second), an edge on 127.0.0.3 whose
relay mountpoint pulls it (``relay_linger`` 0.5 s). Then:

- **join**: bench viewers (``fanout bench load``'s: ICE-lite, DTLS-SRTP, no decoding)
  join one at a time and time the first video packet from the ``watch`` request
  (servers start video at a keyframe, from their keyframe cache): at the origin
  directly; at the edge with its relay *cold* (torn down: the join pulls it); at the
  edge with it *warm* (another viewer holds it).
- **relays**: the bench itself plays N edges (sealed relay requests with the cluster
  secret, refreshed every second; its sockets read and count the SRTP) and reads the
  origin process's CPU time (/proc/<pid>/stat, the test source's own process apart)
  over ``--seconds`` at each N: the slope is the origin's CPU per edge relayed.

Writes a JSON and a PNG (``--out``, ``--png``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
from fanout.cluster.relay import (
    PURPOSE_GRANTED,
    PURPOSE_REFRESH,
    PURPOSE_REQUEST,
    PURPOSE_TEARDOWN,
    RelayGranted,
    RelayRequest,
    RelayStream,
)
from fanout.cluster.sealed import CONTENT_TYPE, Sealer
from fanout.webrtc.dtls import DtlsCertificate
from fanout_bench.load.signaling import HttpJanus
from fanout_bench.load.viewer import JoinError, Viewer

SECRET = "fanout bench cluster secret"
ORIGIN_IP, EDGE_IP, RELAYS_IP, VIEWER_IP = "127.0.0.2", "127.0.0.3", "127.0.0.5", "127.0.0.1"
READY_LINE = "fanout: ready"
MOUNTPOINT = 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class NodePorts:
    http: int
    webrtc: int
    metrics: int
    ws: int = 0  # 0: no WebSocket transport


@dataclass
class RelayLevel:
    relays: int
    origin_cpu_percent: float  # of one core
    mbit_per_relay: float  # what each emulated edge received


@dataclass
class Results:
    machine: str
    keyframe_interval: float = 1.0  # the test source's
    joins: dict[str, list[float]] = field(default_factory=dict)  # seconds to the first video packet, by kind
    relay_levels: list[RelayLevel] = field(default_factory=list)
    cpu_percent_per_relay: float | None = None

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            kind: {"p50_ms": percentile(values, 50) * 1000, "p95_ms": percentile(values, 95) * 1000}
            for kind, values in self.joins.items()
            if values
        }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def free_port() -> int:
    with socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        return int(tcp.getsockname()[1])


def write_node(folder: Path, name: str, ip: str, mountpoints: str, *, redis_url: str = "", cluster: str = "") -> NodePorts:
    """A node's configuration; with ``redis_url``, a WebSocket transport too and the cluster's
    registry (``cluster``: more lines for the cluster group)."""
    ports = NodePorts(free_port(), free_port(), free_port(), free_port() if redis_url else 0)
    folder.mkdir(parents=True, exist_ok=True)
    registry = f' redis_url = "{redis_url}"\n websocket_url = "ws://{ip}:{ports.ws}"\n' if redis_url else ""
    (folder / "janus.jcfg").write_text(
        f'general: {{ session_timeout = 60 }}\nnat: {{ nat_1_1_mapping = "{ip}" }}\n'
        f'fanout: {{ webrtc_port = {ports.webrtc}\n webrtc_interface = "{ip}"\n'
        f' metrics_port = {ports.metrics}\n metrics_interface = "{ip}" }}\n'
        f'cluster: {{ secret = "{SECRET}"\n node_name = "{name}"\n relay_address = "{ip}"\n relay_linger = 0.5\n'
        f'{registry}{cluster} }}\n'
    )
    (folder / "janus.transport.http.jcfg").write_text(
        f'general: {{ http = true\n ip = "{ip}"\n port = {ports.http}\n base_path = "/janus" }}\n'
    )
    websocket = f'general: {{ ws = true\n ws_ip = "{ip}"\n ws_port = {ports.ws} }}\n' if ports.ws else "general: { ws = false }\n"
    (folder / "janus.transport.websockets.jcfg").write_text(websocket)
    (folder / "janus.plugin.streaming.jcfg").write_text("general: {\n}\n" + mountpoints)
    return ports


def origin_mountpoint() -> str:
    return (
        'match: { type = "rtp"\n id = 1\n description = "bench"\n testsource = true\n media = (\n'
        ' { type = "audio", mid = "a", port = 0, pt = 111, codec = "opus" },\n'
        ' { type = "video", mid = "v", port = 0, pt = 96, codec = "vp8" }) }\n'
    )


def edge_mountpoint(origin_url: str) -> str:
    return (
        f'match: {{ type = "relay"\n id = 1\n relay_url = "{origin_url}"\n relay_node = "origin"\n media = (\n'
        ' { type = "audio", mid = "a", pt = 111, codec = "opus" },\n'
        ' { type = "video", mid = "v", pt = 96, codec = "vp8" }) }\n'
    )


class Node:
    """One ``fanout serve`` process."""

    def __init__(self, folder: Path, ip: str, ports: NodePorts) -> None:
        self.ip = ip
        self.ports = ports
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fanout", "serve", "--config", str(folder)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(60):
            self.stop()
            raise SystemExit("fanout did not start:\n" + "\n".join(self.lines[-30:]))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if READY_LINE in line:
                self._ready.set()

    @property
    def janus_url(self) -> str:
        return f"http://{self.ip}:{self.ports.http}/janus"

    @property
    def control_url(self) -> str:
        return f"http://{self.ip}:{self.ports.http}"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    async def engine_peers(self, http: aiohttp.ClientSession) -> float:
        """The engine's peers of the mountpoint (viewers and relays), from /metrics."""
        async with http.get(f"http://{self.ip}:{self.ports.metrics}/metrics") as response:
            for line in (await response.text()).splitlines():
                if line.startswith(f'fanout_viewers{{mountpoint="{MOUNTPOINT}"}}'):
                    return float(line.split()[-1])
        return 0.0

    @property
    def websocket_url(self) -> str:
        return f"ws://{self.ip}:{self.ports.ws}"

    def kill(self) -> None:
        """SIGKILL: no goodbye to Redis nor to anyone."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def cluster(workdir: Path) -> Iterator[tuple[Node, Node]]:
    origin_ports = write_node(workdir / "origin", "origin", ORIGIN_IP, origin_mountpoint())
    origin = Node(workdir / "origin", ORIGIN_IP, origin_ports)
    try:
        edge_ports = write_node(workdir / "edge", "edge-1", EDGE_IP, edge_mountpoint(origin.control_url))
        edge = Node(workdir / "edge", EDGE_IP, edge_ports)
        try:
            yield origin, edge
        finally:
            edge.stop()
    finally:
        origin.stop()


async def join_once(http: aiohttp.ClientSession, node: Node, certificate: DtlsCertificate) -> tuple[float, Viewer, HttpJanus]:
    api = HttpJanus(http, node.janus_url)
    viewer = Viewer(api, mountpoint=MOUNTPOINT, host=VIEWER_IP, certificate=certificate,
                    srtp_profile="AEAD_AES_128_GCM", sample=False)  # fmt: skip
    times = await viewer.join()
    return times.first_packet, viewer, api


async def leave(viewer: Viewer, api: HttpJanus) -> None:
    viewer.close()
    await api.close()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.05)


async def wait_until(probe: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("the cluster did not settle in time")
        await asyncio.sleep(0.1)


async def measure_joins(origin: Node, edge: Node, joins: int, results: Results) -> None:
    certificate = DtlsCertificate.generate()
    async with aiohttp.ClientSession() as http:
        async def no_peers() -> bool:
            return await origin.engine_peers(http) == 0

        for kind in ("origin", "edge_cold", "edge_warm"):
            results.joins[kind] = []
        for _ in range(joins):  # direct joins at the origin: the baseline
            await wait_until(no_peers)
            seconds, viewer, api = await join_once(http, origin, certificate)
            results.joins["origin"].append(seconds)
            await leave(viewer, api)
        for _ in range(joins):  # the edge's relay torn down (after its 0.5 s linger) before each
            await wait_until(no_peers)
            seconds, viewer, api = await join_once(http, edge, certificate)
            results.joins["edge_cold"].append(seconds)
            await leave(viewer, api)
        await wait_until(no_peers)
        _, holder, holder_api = await join_once(http, edge, certificate)
        for _ in range(joins):  # another viewer holds the relay
            seconds, viewer, api = await join_once(http, edge, certificate)
            results.joins["edge_warm"].append(seconds)
            await leave(viewer, api)
            await asyncio.sleep(0.3)
        await leave(holder, holder_api)


class EmulatedEdge:
    """A relay asked for by the bench: a socket that reads and counts what the origin sends."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind((RELAYS_IP, 0))
        self.bytes = 0
        self.relay_id = f"bench/{secrets.token_hex(6)}"
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                self.bytes += len(self.sock.recv(4096))
            except (BlockingIOError, InterruptedError):
                return

    def request(self) -> RelayRequest:
        return RelayRequest(
            relay_id=self.relay_id, edge="bench", mountpoint=MOUNTPOINT, address=self.sock.getsockname(),
            srtp_profile="AEAD_AES_128_GCM", origin_key=os.urandom(28), edge_key=os.urandom(28),
            streams=(RelayStream("a", 0, secrets.randbits(31) + 1, "opus", 111),
                     RelayStream("v", 0, secrets.randbits(31) + 1, "vp8", 96)),
        )  # fmt: skip

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


async def post(http: aiohttp.ClientSession, sealer: Sealer, url: str, purpose: str, body: dict[str, object]) -> tuple[int, bytes]:
    sealed = sealer.seal(purpose, body, time.time())
    async with http.post(url, data=sealed, headers={"Content-Type": CONTENT_TYPE}) as response:
        return response.status, await response.read()


async def measure_relays(origin: Node, levels: list[int], seconds: float, results: Results) -> None:
    sealer = Sealer(SECRET)
    edges: list[EmulatedEdge] = []
    async with aiohttp.ClientSession() as http:
        async def refresh_forever() -> None:
            while True:
                await asyncio.sleep(1.0)
                for edge in list(edges):
                    await post(http, sealer, origin.control_url + "/cluster/relay/refresh", PURPOSE_REFRESH,
                               {"relay_id": edge.relay_id})  # fmt: skip

        refresher = asyncio.get_running_loop().create_task(refresh_forever())
        try:
            for level in levels:
                while len(edges) < level:
                    edge = EmulatedEdge()
                    status, body = await post(http, sealer, origin.control_url + "/cluster/relay", PURPOSE_REQUEST,
                                              edge.request().to_body())  # fmt: skip
                    if status != 200:
                        raise SystemExit(f"the origin refused a relay: {status} {body!r}")
                    RelayGranted.parse(sealer.open(PURPOSE_GRANTED, body, time.time()))
                    edges.append(edge)
                await asyncio.sleep(2.0)  # settle: keyframe bursts to the new relays
                received = [edge.bytes for edge in edges]
                cpu, start = origin.cpu_seconds(), time.monotonic()
                await asyncio.sleep(seconds)
                elapsed = time.monotonic() - start
                cpu_percent = (origin.cpu_seconds() - cpu) / elapsed * 100
                mbit = [(edge.bytes - before) * 8 / elapsed / 1e6 for edge, before in zip(edges, received)]
                level_result = RelayLevel(level, round(cpu_percent, 2), round(statistics.mean(mbit), 3) if mbit else 0.0)
                results.relay_levels.append(level_result)
                print(f"relays {level:3d}: origin CPU {cpu_percent:5.1f} % of a core, {level_result.mbit_per_relay} Mbit/s each")
        finally:
            refresher.cancel()
            for edge in edges:
                await post(http, sealer, origin.control_url + "/cluster/relay/teardown", PURPOSE_TEARDOWN,
                           {"relay_id": edge.relay_id})  # fmt: skip
                edge.close()
    if len(results.relay_levels) >= 2:
        xs = [level.relays for level in results.relay_levels]
        ys = [level.origin_cpu_percent for level in results.relay_levels]
        results.cpu_percent_per_relay = round(statistics.linear_regression(xs, ys).slope, 3)


def plot(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (joins, cpu) = plt.subplots(1, 2, figsize=(11, 4.2))
    kinds = [kind for kind in ("origin", "edge_warm", "edge_cold") if results.joins.get(kind)]
    joins.boxplot([[value * 1000 for value in results.joins[kind]] for kind in kinds], showfliers=True)
    joins.set_xticks(range(1, len(kinds) + 1), [kind.replace("_", ", ") for kind in kinds])
    joins.set_ylabel("watch -> first video packet (ms)")
    joins.set_title("join: direct, through a warm relay, pulling a cold one")
    xs = [level.relays for level in results.relay_levels]
    cpu.plot(xs, [level.origin_cpu_percent for level in results.relay_levels], "o-")
    rates = [level.mbit_per_relay for level in results.relay_levels if level.relays]
    each = f", {statistics.mean(rates):.2f} Mbit/s each" if rates else ""
    cpu.set_xlabel(f"edges relayed (the test source's VP8 + Opus{each})")
    cpu.set_ylabel("origin CPU (% of one core)")
    slope = results.cpu_percent_per_relay
    cpu.set_title("origin CPU per edge" + (f": {slope:.2f} % of a core per relay" if slope is not None else ""))
    figure.suptitle(f"fanout bench cluster ({results.machine})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fanout bench cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--joins", type=int, default=12, help="joins of each kind (direct, cold, warm)")
    parser.add_argument("--relays", default="0,1,2,4,8,16", help="numbers of edges the bench plays, in order")
    parser.add_argument("--seconds", type=float, default=10.0, help="CPU measurement window per number of relays")
    parser.add_argument("--out", type=Path, default=Path("fanout-bench-cluster.json"))
    parser.add_argument("--png", type=Path, default=Path("fanout-bench-cluster.png"))
    parser.add_argument("--failover", action="store_true", help="run the failover measurement (Redis, an origin, --edges edges) instead")
    parser.add_argument("--viewers", type=int, default=20, help="failover: viewers on the edge that is killed")
    parser.add_argument("--edges", type=int, default=3, choices=(2, 3), help="failover: edges")
    parser.add_argument("--heartbeat-interval", type=float, help="failover: the nodes' cluster.heartbeat_interval (default: fanout's)")
    parser.add_argument("--node-ttl", type=float, help="failover: the nodes' cluster.node_ttl (default: fanout's)")
    parser.add_argument("--modes", default="kill,freeze,freeze-no-avoid",
                        help="failover: how the edge is lost (kill: SIGKILL; freeze: SIGSTOP; freeze-no-avoid: SIGSTOP, "
                             "viewers asking placement without avoid)")  # fmt: skip
    parser.add_argument("--scale", action="store_true", help="run the scale measurement (edges at equal CPU shares) instead")
    parser.add_argument("--edge-counts", default="1,2,3", help="scale: numbers of edges, in order (the first must be 1)")
    parser.add_argument("--edge-cpu", type=float, default=0.25, help="scale: cores each edge process may use")
    parser.add_argument("--rate", type=float, default=9.6, help="scale: the stream's video Mbit/s")
    parser.add_argument("--start", type=int, default=40, help="scale: viewers per edge at the first step of one edge")
    parser.add_argument("--factor", type=float, default=1.3, help="scale: one edge's coarse steps")
    parser.add_argument("--fine-factor", type=float, default=1.05, help="scale: the fine steps")
    parser.add_argument("--join-rate", type=float, default=20.0, help="scale: joins per second per edge")
    parser.add_argument("--window", type=float, default=5.0, help="scale: seconds each step is measured")
    parser.add_argument("--ceiling", type=int, default=1500, help="scale: at most this many viewers per edge")
    args = parser.parse_args(argv)
    levels = [int(value) for value in args.relays.split(",")]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    if args.failover:
        from fanout_bench.cluster_failover import MODES, run_failover

        modes = tuple(args.modes.split(","))
        if not modes or not set(modes) <= set(MODES):
            parser.error(f"--modes: some of {','.join(MODES)}")

        failover = run_failover(viewers=args.viewers, edges=args.edges, heartbeat_interval=args.heartbeat_interval,
                                node_ttl=args.node_ttl, machine=machine, out=args.out, png=args.png, modes=modes)  # fmt: skip
        return 0 if all(run.failovers and not run.failed for run in failover) else 1
    if args.scale:
        from fanout_bench.cluster_scale import run_scale

        counts = [int(value) for value in args.edge_counts.split(",")]
        if counts[0] != 1 or not all(1 <= count <= 3 for count in counts):
            parser.error("--edge-counts: 1 first, then 2 and/or 3")
        run_scale(edge_counts=counts, edge_cpu=args.edge_cpu, rate=args.rate * 1e6, start=args.start, factor=args.factor,
                  fine_factor=args.fine_factor, join_rate=args.join_rate, settle=3.0, window=args.window,
                  ceiling=args.ceiling, machine=machine, out=args.out, png=args.png)  # fmt: skip
        return 0
    results = Results(machine=machine)

    async def run(origin: Node, edge: Node) -> None:
        try:
            await measure_joins(origin, edge, args.joins, results)
        except JoinError as error:
            raise SystemExit(f"a join failed: {error}") from None
        print(json.dumps(results.summary(), indent=1))
        await measure_relays(origin, levels, args.seconds, results)

    with tempfile.TemporaryDirectory(prefix="fanout-bench-cluster-") as workdir, cluster(Path(workdir)) as (origin, edge):
        asyncio.run(run(origin, edge))
    document = asdict(results) | {"summary": results.summary()}
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    plot(results, args.png)
    print(f"wrote {args.out} and {args.png}")
    return 0
