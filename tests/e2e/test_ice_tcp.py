"""ICE-TCP (``nat.ice_tcp = true``, RFC 6544 passive candidates, RFC 4571 framing) end to end.

Chromium and janus.js watch with UDP blocked by an nftables rule inside their network
namespace, so the only pair that works is TCP; the bench's Janus-API viewer speaks ICE-TCP
too, and watches while the TCP port takes garbage, a 64 KiB length with no body, thousands of
half-open connections and a viewer that stops reading. aiortc (aioice) has no ICE-TCP, so it
has no test here.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fanout_bench.load.signaling import HttpJanus
from fanout_bench.load.viewer import Viewer

from fanout.webrtc.dtls import DtlsCertificate
from fanout.webrtc.stun import BINDING_REQUEST, USERNAME, StunMessage
from fanout.webrtc.tcp import frame
from tests.support.browser import chromium_in
from tests.support.netns import NetworkNamespace, loopback_namespace
from tests.support.ports import free_ports
from tests.support.server import DEMO_MOUNTPOINT, FanoutProcess, ServerAddresses, write_config

FRAMES = 90
GCM = "AEAD_AES_128_GCM"
HALF_OPEN = 2000


def ice_tcp_config(folder: Path) -> tuple[ServerAddresses, str, str]:
    """A loopback fanout with ICE-TCP, /metrics and the Admin API: its addresses and those two URLs."""
    addresses = write_config(folder, DEMO_MOUNTPOINT)
    metrics_port, admin_port = free_ports(2)
    janus = folder / "janus.jcfg"
    text = janus.read_text().replace("nat: {\n", "nat: {\n\tice_lite = true\n\tice_tcp = true\n", 1)
    text = text.replace("fanout: {\n", f"fanout: {{\n\tmetrics_port = {metrics_port}\n", 1)
    janus.write_text(text.replace("general: {\n", 'general: {\n\tadmin_secret = "overlord"\n', 1))
    with (folder / "janus.transport.http.jcfg").open("a") as http:
        http.write(f"admin: {{\n\tadmin_http = true\n\tadmin_port = {admin_port}\n}}\n")
    return addresses, f"http://127.0.0.1:{metrics_port}/metrics", f"http://127.0.0.1:{admin_port}/admin"


def block_udp_port(namespace: NetworkNamespace, port: int) -> None:
    """Drop every UDP datagram to ``port`` inside the namespace (its only interface is lo)."""
    for rule in (
        ["add", "table", "inet", "fanout_test"],
        ["add", "chain", "inet", "fanout_test", "input", "{ type filter hook input priority 0; policy accept; }"],
        ["add", "rule", "inet", "fanout_test", "input", "udp", "dport", str(port), "counter", "drop"],
    ):
        subprocess.run(namespace.command("nft", *rule), check=True)


def udp_dropped(namespace: NetworkNamespace) -> int:
    ruleset = subprocess.run(namespace.command("nft", "list", "ruleset"), check=True, capture_output=True, text=True)
    match = re.search(r"counter packets (\d+)", ruleset.stdout)
    assert match is not None, ruleset.stdout
    return int(match.group(1))


def test_chromium_watches_over_ice_tcp_when_udp_is_blocked(tmp_path: Path) -> None:
    addresses, metrics_url, admin_url = ice_tcp_config(tmp_path / "config")
    with loopback_namespace() as namespace, FanoutProcess(tmp_path / "config", namespace) as server:
        block_udp_port(namespace, addresses.webrtc_port)
        with chromium_in(namespace, tmp_path) as browser:
            errors: list[str] = []
            page = browser.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"http://127.0.0.1:{addresses.http_port}/?mountpoint=1&transport=http")
            page.wait_for_function("window.fanoutDemo && window.fanoutDemo.state === 'playing'", timeout=60_000)
            page.wait_for_function(
                f"window.fanoutDemo.stats().then(s => s.framesDecoded >= {FRAMES})", polling=250, timeout=60_000
            )
            figures = page.evaluate("window.fanoutDemo.stats()")
            pair = page.evaluate("window.fanoutDemo.selectedPair()")
            metrics = namespace_get(namespace, metrics_url)
            ice = admin_ice(namespace, admin_url)
        assert errors == []
        assert figures["frameWidth"] == 640 and figures["packetsLost"] == 0, figures
        assert pair["remote"]["protocol"] == "tcp" and pair["remote"]["port"] == addresses.webrtc_port, pair
        assert pair["local"]["protocol"] == "tcp", pair
        assert udp_dropped(namespace) > 0, "Chromium tried UDP first and the rule dropped it"
        assert 'fanout_peerconnections_by_route{family="ipv4",transport="tcp"} 1.0' in metrics, metrics
        assert 'fanout_peerconnections_by_route{family="ipv4",transport="udp"} 0.0' in metrics, metrics
        assert ice["selected-transport"] == "tcp", ice
        assert f"127.0.0.1:{addresses.webrtc_port} [host,tcp] <-> 127.0.0.1:" in str(ice["selected-pair"]), ice
        assert "WebRTC on UDP and TCP" in server.output


def namespace_get(namespace: NetworkNamespace, url: str, body: dict[str, object] | None = None) -> str:
    """GET (or POST ``body`` to) ``url`` from inside the namespace, where the server listens."""
    command = ["curl", "-s", "--max-time", "10", url]
    if body is not None:
        command += ["-d", json.dumps(body)]
    return subprocess.run(namespace.command(*command), check=True, capture_output=True, text=True).stdout


def admin_ice(namespace: NetworkNamespace, admin_url: str) -> dict[str, object]:
    """handle_info's ICE part for the only handle of the only session."""

    def ask(path: str, request: str) -> Any:
        body: dict[str, object] = {"janus": request, "transaction": "t", "admin_secret": "overlord"}
        return json.loads(namespace_get(namespace, admin_url + path, body))

    sessions = ask("", "list_sessions")["sessions"]
    handles = ask(f"/{sessions[0]}", "list_handles")["handles"]
    assert len(sessions) == len(handles) == 1, (sessions, handles)
    return ask(f"/{sessions[0]}/{handles[0]}", "handle_info")["info"]["webrtc"]["ice"]  # type: ignore[no-any-return]


# -- bad input on the TCP port, with viewers watching


@pytest.fixture(scope="module")
def ice_tcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FanoutProcess, ServerAddresses, str]]:
    folder = tmp_path_factory.mktemp("ice-tcp") / "config"
    addresses, metrics_url, _ = ice_tcp_config(folder)
    with FanoutProcess(folder) as server:
        yield server, addresses, metrics_url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def watching(http: aiohttp.ClientSession, addresses: ServerAddresses, transport: str, *,
                   sample: bool = True, receive_buffer: int = 0) -> Viewer:
    api = HttpJanus(http, f"http://127.0.0.1:{addresses.http_port}/janus")
    viewer = Viewer(api, mountpoint=1, host="127.0.0.1", certificate=DtlsCertificate.generate(),
                    srtp_profile=GCM, sample=sample, transport=transport)
    if receive_buffer:  # before the connection: its window follows
        viewer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await viewer.join()
    return viewer


async def received(viewer: Viewer, more: int, timeout: float = 30.0) -> None:
    """Waits until the sample viewer has decrypted ``more`` RTP packets beyond what it had."""
    assert viewer.meter is not None
    target = viewer.meter.total_rtp + more
    deadline = time.monotonic() + timeout
    while viewer.meter.total_rtp < target:
        assert time.monotonic() < deadline, f"{viewer.transport} viewer: {viewer.meter.total_rtp} of {target}"
        await asyncio.sleep(0.05)


async def metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    async with http.get(url) as response:
        text = await response.text()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def wait_metric(http: aiohttp.ClientSession, url: str, name: str, at_least: float, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (value := await metric(http, url, name)) < at_least:
        assert time.monotonic() < deadline, f"{name} = {value}, waited for {at_least}"
        await asyncio.sleep(0.2)


def rss_kib(server: FanoutProcess) -> int:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


async def test_a_tcp_viewer_decodes_with_no_loss_beside_a_udp_one(
    ice_tcp_server: tuple[FanoutProcess, ServerAddresses, str], http: aiohttp.ClientSession
) -> None:
    _, addresses, metrics_url = ice_tcp_server
    tcp = await watching(http, addresses, "tcp")
    udp = await watching(http, addresses, "udp")
    try:
        await received(tcp, 300)
        await received(udp, 300)
        assert await metric(http, metrics_url, 'fanout_peerconnections_by_route{family="ipv4",transport="tcp"}') == 1
        assert tcp.meter is not None and tcp.meter.window().lost == 0, "TCP retransmits what the network loses"
    finally:
        for viewer in (tcp, udp):
            viewer.close()
            await viewer.api.close()


async def test_bad_input_on_the_tcp_port_disturbs_no_viewer(
    ice_tcp_server: tuple[FanoutProcess, ServerAddresses, str], http: aiohttp.ClientSession
) -> None:
    server, addresses, metrics_url = ice_tcp_server
    tcp = await watching(http, addresses, "tcp")
    udp = await watching(http, addresses, "udp")
    port = addresses.webrtc_port
    refused = "fanout_ice_tcp_refused_total{{reason=\"{}\"}}"
    try:
        rss_before = rss_kib(server)
        # Garbage: an HTTP request's first bytes read as a 18245-byte length, past what a check may be.
        await send_and_wait_closed(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await wait_metric(http, metrics_url, refused.format("bad_framing"), 1)
        # A 64 KiB length and no body: refused at once, without waiting for the body.
        await send_and_wait_closed(port, b"\xff\xff")
        await wait_metric(http, metrics_url, refused.format("bad_framing"), 2)
        # A well-framed STUN check for a ufrag nobody has.
        check = StunMessage(BINDING_REQUEST, b"123456789012").with_attribute(USERNAME, b"nobody:x")
        await send_and_wait_closed(port, frame(bytes(check.with_fingerprint())))
        await wait_metric(http, metrics_url, refused.format("not_stun"), 1)
        # Thousands of connections that send nothing: the oldest make room, the rest time out.
        writers = []
        for _ in range(HALF_OPEN):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
        await received(tcp, 100)
        await received(udp, 100)
        deadline = time.monotonic() + 60
        while (closed := sum([await metric(http, metrics_url, refused.format(r)) for r in ("evicted", "setup_timeout")])) < HALF_OPEN:
            assert time.monotonic() < deadline, f"{closed} of {HALF_OPEN} half-open connections closed"
            await asyncio.sleep(0.2)
        assert await metric(http, metrics_url, refused.format("evicted")) >= HALF_OPEN - 256 - 1, "at most 256 held"
        assert rss_kib(server) - rss_before < 64 * 1024, "bounded memory"
        for writer in writers:
            writer.close()
        # A viewer that stops reading: hung up once its queue stalls, the others go on.
        stuck = await watching(http, addresses, "tcp", sample=False, receive_buffer=16 << 10)
        stuck.pause_reading()
        await wait_metric(http, metrics_url, 'fanout_hangups_total{reason="TCP connection stalled"}', 1)
        await received(tcp, 200)
        await received(udp, 200)
        stuck.close()
        await stuck.api.close()
        assert tcp.meter is not None and tcp.meter.window().lost == 0
        assert await metric(http, metrics_url, "fanout_ice_tcp_accepted_total") >= HALF_OPEN + 4
    finally:
        for viewer in (tcp, udp):
            viewer.close()
            await viewer.api.close()


async def send_and_wait_closed(port: int, data: bytes) -> None:
    """Connects, sends ``data`` and waits (30 s at most) for the server to close the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 30) == b"", "closed without an answer"
    writer.close()
