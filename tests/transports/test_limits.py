"""A real fanout attacked on loopback as an attacker would, before any authentication: the
limits hold, and the Janus and Admin APIs go on answering well-behaved clients.

The server runs with a small file descriptor limit, so that an attack which
used to exhaust it shows: without the limits, the well-behaved client could
not connect. Each attack comes from its own loopback address (127.0.0.x), so
that the per-address caps of one test do not touch another's. Last, the
WebRTC port binds ``general.interface`` rather than every address.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import os
import re
import socket
import struct
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from fanout.transports.listeners import RateLimitedLog, limit_resource_error_logs

from tests.support.ports import free_ports
from tests.support.server import FanoutProcess, ServerAddresses, write_config

UDP_TABLES = ("/proc/net/udp", "/proc/net/udp6")
FILE_LIMIT = 192  # the server's RLIMIT_NOFILE: about 60 are its own at start
PER_ADDRESS = 16  # max_connections_per_address
HEADER_TIMEOUT = 1.0
MAX_MESSAGE = 65536
MAX_SEND_QUEUE = 256 * 1024
DEADLINE = 20.0  # seconds to wait for what must happen
JANUS_PROTOCOL = "janus-protocol"
ADMIN_PROTOCOL = "janus-admin-protocol"
MESSAGE_TOO_BIG = 1009


@dataclass(frozen=True)
class Target:
    addresses: ServerAddresses
    admin_ws_port: int
    metrics_port: int
    process: FanoutProcess


def start_limited(folder: Path) -> Target:
    """fanout with low limits, an Admin API WebSocket, metrics, and FILE_LIMIT descriptors."""
    addresses = write_config(folder, "")
    admin_ws_port, metrics_port = free_ports(2)
    (folder / "janus.jcfg").write_text(
        f"""general: {{
	session_timeout = 60
}}
nat: {{
	nat_1_1_mapping = "127.0.0.1"
}}
fanout: {{
	webrtc_port = {addresses.webrtc_port}
	webrtc_interface = "127.0.0.1"
	metrics_port = {metrics_port}
	header_timeout = {HEADER_TIMEOUT}
	max_connections_per_address = {PER_ADDRESS}
	websocket_max_message = {MAX_MESSAGE}
	websocket_max_send_queue = {MAX_SEND_QUEUE}
}}
"""
    )
    with (folder / "janus.transport.websockets.jcfg").open("a") as file:
        file.write(f"admin: {{\n\tadmin_ws = true\n\tadmin_ws_port = {admin_ws_port}\n\tadmin_ws_interface = \"127.0.0.1\"\n}}\n")
    process = FanoutProcess(folder)
    limit = f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({FILE_LIMIT}, {FILE_LIMIT})); os.execv(sys.argv[1], sys.argv[1:])"
    process.command = [sys.executable, "-c", limit, *process.command]
    process.start()
    return Target(addresses, admin_ws_port, metrics_port, process)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    started = start_limited(tmp_path_factory.mktemp("limits") / "config")
    try:
        yield started
    finally:
        started.process.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def janus_info(http: aiohttp.ClientSession, target: Target) -> str:
    """The Janus API's answer to a well-behaved client (from 127.0.0.1)."""
    timeout = aiohttp.ClientTimeout(total=DEADLINE)
    async with http.post(target.addresses.janus_url, json={"janus": "info", "transaction": "t"}, timeout=timeout) as response:
        return str((await response.json(content_type=None))["janus"])


async def closed_by_limit(http: aiohttp.ClientSession, target: Target, limit: str) -> float:
    """``fanout_connections_closed_by_limit_total{limit=...}`` from /metrics."""
    async with http.get(f"http://127.0.0.1:{target.metrics_port}/metrics") as response:
        text = await response.text()
    match = re.search(rf'^fanout_connections_closed_by_limit_total{{limit="{limit}"}} (\S+)$', text, re.MULTILINE)
    assert match is not None, text
    return float(match.group(1))


async def wait_for_count(http: aiohttp.ClientSession, target: Target, limit: str, at_least: float) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while await closed_by_limit(http, target, limit) < at_least:
        assert asyncio.get_running_loop().time() < deadline, f"{limit} never reached {at_least}"
        await asyncio.sleep(0.05)


async def connect(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_by_server(reader: asyncio.StreamReader) -> None:
    """Returns once the server closed the connection (FIN or RST); fails on data."""
    try:
        data = await reader.read(1)
    except ConnectionError:
        return
    assert data == b"", f"the server sent {data!r}"


async def websocket_handshake(port: int, protocol: str, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket opened by hand, so the test can write any frame."""
    reader, writer = await connect(port, source)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def text_frame_header(length: int) -> bytes:
    """A client's (masked) text frame header announcing ``length`` bytes; the mask is zero."""
    if length < 126:
        return bytes([0x81, 0x80 | length]) + bytes(4)
    if length < 65536:
        return bytes([0x81, 0x80 | 126]) + struct.pack("!H", length) + bytes(4)
    return bytes([0x81, 0x80 | 127]) + struct.pack("!Q", length) + bytes(4)


async def close_code(reader: asyncio.StreamReader) -> int:
    """The code of the server's close frame (the next frame must be one)."""
    opcode, length = await asyncio.wait_for(reader.readexactly(2), DEADLINE)
    assert opcode == 0x88, f"not a close frame: {opcode:#x}"
    payload = await reader.readexactly(length & 0x7F)
    return int(struct.unpack("!H", payload[:2])[0])


@pytest.mark.parametrize("api", ["janus", "admin"])
async def test_a_4_gib_frame_header_closes_the_websocket_with_1009(api: str, target: Target, http: aiohttp.ClientSession) -> None:
    """The frame is refused from its header, nothing of it buffered; other clients are served."""
    port, protocol, source = {
        "janus": (target.addresses.ws_port, JANUS_PROTOCOL, "127.0.0.2"),
        "admin": (target.admin_ws_port, ADMIN_PROTOCOL, "127.0.0.3"),
    }[api]
    before = await closed_by_limit(http, target, "websocket_messages_too_big")
    reader, writer = await websocket_handshake(port, protocol, source)
    writer.write(text_frame_header(4 * 2**30) + b"x" * 4096)
    assert await close_code(reader) == MESSAGE_TOO_BIG
    writer.close()
    assert await closed_by_limit(http, target, "websocket_messages_too_big") == before + 1
    assert await janus_info(http, target) == "server_info"


async def test_a_message_of_the_cap_is_served(target: Target) -> None:
    reader, writer = await websocket_handshake(target.addresses.ws_port, JANUS_PROTOCOL, "127.0.0.4")
    request = b'{"janus":"ping","transaction":"' + b"p" * (MAX_MESSAGE - 33) + b'"}'
    assert len(request) == MAX_MESSAGE
    writer.write(text_frame_header(len(request)) + request)
    opcode, length = await asyncio.wait_for(reader.readexactly(2), DEADLINE)
    assert opcode == 0x81  # a text reply (the pong), not a close
    writer.close()


async def test_a_websocket_client_that_never_reads_is_dropped(target: Target, http: aiohttp.ClientSession) -> None:
    """It asks for replies as fast as it can and reads none: once websocket_max_send_queue bytes wait
    for it, its connection is closed; its replies do not pile up in the server."""
    before = await closed_by_limit(http, target, "websocket_slow_readers")
    _, writer = await websocket_handshake(target.addresses.ws_port, JANUS_PROTOCOL, "127.0.0.5")
    request = b'{"janus":"info","transaction":"i"}'
    frame = text_frame_header(len(request)) + request
    deadline = asyncio.get_running_loop().time() + DEADLINE
    with pytest.raises(ConnectionError):
        while True:
            assert asyncio.get_running_loop().time() < deadline, "the server still takes requests from a client that reads nothing"
            writer.write(frame * 100)
            await writer.drain()
    writer.close()
    assert await closed_by_limit(http, target, "websocket_slow_readers") == before + 1
    assert await janus_info(http, target) == "server_info"


async def test_idle_connections_are_capped_per_address_and_timed_out(target: Target, http: aiohttp.ClientSession) -> None:
    """200 connections that never send a byte (more than the server's descriptors allow): past the
    cap they are closed at once, the API answers, and the header timeout closes the rest. (On a
    busy machine opening them can outlast the header timeout, which then frees places under the
    cap for later ones: each is closed by one limit or the other.)"""
    refused_before = await closed_by_limit(http, target, "refused_over_address_cap")
    timed_out_before = await closed_by_limit(http, target, "header_timeouts")
    connections = [await connect(target.addresses.http_port, "127.0.0.6") for _ in range(200)]
    assert await janus_info(http, target) == "server_info"
    closed = [asyncio.ensure_future(closed_by_server(reader)) for reader, _ in connections]
    done, pending = await asyncio.wait(closed, timeout=DEADLINE)
    assert not pending, f"{len(pending)} idle connections still open"
    for task in done:
        task.result()
    for _, writer in connections:
        writer.close()
    refused = await closed_by_limit(http, target, "refused_over_address_cap") - refused_before
    timed_out = await closed_by_limit(http, target, "header_timeouts") - timed_out_before
    assert refused > 0, "the cap refused none"
    assert refused + timed_out == 200, f"{refused} refused, {timed_out} timed out: each is closed by one limit"
    assert await janus_info(http, target) == "server_info"


async def test_a_slowloris_is_closed_after_the_header_timeout(target: Target, http: aiohttp.ClientSession) -> None:
    """Headers sent one byte at a time, never finished: closed (header_timeout) though bytes keep coming."""
    before = await closed_by_limit(http, target, "header_timeouts")
    reader, writer = await connect(target.addresses.http_port, "127.0.0.7")
    writer.write(b"POST /janus HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    closed = asyncio.ensure_future(closed_by_server(reader))
    deadline = asyncio.get_running_loop().time() + DEADLINE
    try:
        while not closed.done():
            assert asyncio.get_running_loop().time() < deadline, "the slowloris connection is still open"
            writer.write(b"X")  # the attack: one more byte of a header that never ends
            await asyncio.wait([closed], timeout=0.1)
    except ConnectionError:
        pass  # the server closed it while the byte was on its way
    await asyncio.wait_for(closed, DEADLINE)
    writer.close()
    await wait_for_count(http, target, "header_timeouts", before + 1)


async def test_a_post_body_that_never_ends_gets_408(target: Target) -> None:
    """The headers promise a body that never comes in full: 408 after header_timeout, not a request held forever."""
    reader, writer = await connect(target.addresses.http_port, "127.0.0.8")
    writer.write(b"POST /janus HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{")
    status = await asyncio.wait_for(reader.readline(), DEADLINE)
    assert status.startswith(b"HTTP/1.1 408"), status
    writer.close()


async def test_many_addresses_exhausting_descriptors_log_no_tracebacks(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """Idle connections from many addresses, each under the cap, take every descriptor: asyncio's
    accept fails (EMFILE) and says so in one line, not a traceback per retry; once the header
    timeout frees them the API answers again."""
    target = start_limited(tmp_path / "config")
    try:
        connections = []
        for address in range(10, 10 + (FILE_LIMIT + 32) // PER_ADDRESS):  # more than the descriptors, less than the backlog
            for _ in range(PER_ADDRESS):
                connections.append(await connect(target.addresses.http_port, f"127.0.0.{address}"))
        deadline = asyncio.get_running_loop().time() + DEADLINE
        while "out of system resource" not in target.process.output:
            assert asyncio.get_running_loop().time() < deadline, "the descriptors never ran out"
            await asyncio.sleep(0.05)
        assert await janus_info(http, target) == "server_info"
        for _, writer in connections:
            writer.close()
        assert "Traceback" not in target.process.output
    finally:
        target.process.stop()


def udp_addresses_bound_to(port: int) -> list[str]:
    """The local addresses of this network namespace's UDP sockets on ``port`` (as ``ss -lun`` shows)."""
    found = []
    for table in UDP_TABLES:
        for line in Path(table).read_text().splitlines()[1:]:
            address, bound_port = line.split()[1].split(":")
            if int(bound_port, 16) == port:
                found.append(socket.inet_ntoa(struct.pack("<I", int(address, 16))) if len(address) == 8 else address)
    return found


def test_the_webrtc_port_binds_the_general_interface(tmp_path: Path) -> None:
    """``general.interface`` set and no ``fanout.webrtc_interface``: the WebRTC port is not open on every address."""
    addresses = write_config(tmp_path / "config", "")
    (tmp_path / "config" / "janus.jcfg").write_text(
        f'general: {{\n\tinterface = "127.0.0.1"\n}}\nfanout: {{\n\twebrtc_port = {addresses.webrtc_port}\n}}\n'
    )
    with FanoutProcess(tmp_path / "config"):
        assert udp_addresses_bound_to(addresses.webrtc_port) == ["127.0.0.1"]


def test_a_repeated_warning_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RateLimitedLog(interval=10.0, clock=lambda: now[0])
    for second in range(25):
        now[0] = float(second)
        log.warning("emfile", "accept failed")
    assert [record.getMessage() for record in caplog.records] == [
        "accept failed",
        "accept failed (and 9 more times since the last report)",
        "accept failed (and 9 more times since the last report)",
    ]


async def test_accept_errors_for_lack_of_descriptors_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    others: list[str] = []
    loop.set_exception_handler(lambda loop, context: others.append(context["message"]))
    try:
        limit_resource_error_logs(loop)
        for _ in range(100):
            error = OSError(errno.EMFILE, "Too many open files")
            loop.call_exception_handler({"message": "socket.accept() out of system resource", "exception": error})
        loop.call_exception_handler({"message": "something else", "exception": ValueError("x")})
    finally:
        loop.set_exception_handler(previous)
    assert [record.getMessage() for record in caplog.records] == [
        "socket.accept() out of system resource: [Errno 24] Too many open files"
    ]
    assert others == ["something else"]
