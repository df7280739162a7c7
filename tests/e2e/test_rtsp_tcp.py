"""RTSP over TCP against GStreamer's RTSP server: RTP and RTCP interleaved on the RTSP
connection (rtsp_transport = "tcp"), the fallback from UDP (a server that takes only TCP
answers 461; a firewall that lets no UDP through), and rtsps:// (RTSP over TLS). An aiortc
viewer decodes each, and again after the server restarts."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient
from tests.support.rtsp_server import RtspServerProcess
from tests.support.server import FanoutProcess, ServerAddresses, write_config

pytestmark = pytest.mark.usefixtures("loopback_only_ice")


@pytest.fixture(scope="module")
def fanout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerAddresses, FanoutProcess]]:
    folder = tmp_path_factory.mktemp("config")
    addresses = write_config(folder, "")
    with FanoutProcess(folder) as process:
        yield addresses, process


@pytest.fixture(scope="module")
def server(fanout: tuple[ServerAddresses, FanoutProcess]) -> ServerAddresses:
    return fanout[0]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def request(janus: JanusHttpClient, body: dict[str, Any]) -> dict[str, Any]:
    handle = await janus.attach()
    reply = await janus.message(handle, body)
    assert reply["janus"] == "success", reply
    return reply["plugindata"]["data"]  # type: ignore[no-any-return]


async def create_rtsp(janus: JanusHttpClient, body: dict[str, Any]) -> dict[str, Any]:
    return await request(janus, {"request": "create", "type": "rtsp", "video": True, "secret": "s3cret"} | body)


async def info(janus: JanusHttpClient, mountpoint_id: int) -> dict[str, Any]:
    return (await request(janus, {"request": "info", "id": mountpoint_id, "secret": "s3cret"}))["info"]  # type: ignore[no-any-return]


async def logged(process: FanoutProcess, pattern: str, timeout: float = 20.0) -> None:
    async def written() -> None:
        while re.search(pattern, process.output) is None:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(written(), timeout)


async def test_interleaved_tcp_is_decoded_and_the_pull_reconnects_after_a_server_restart(janus: JanusHttpClient) -> None:
    camera = RtspServerProcess("vp8", transport="tcp").start()
    viewer = AiortcViewer(janus)
    try:
        created = await create_rtsp(janus, {"id": 51, "url": camera.url, "rtsp_transport": "tcp", "rtsp_reconnect_delay": 1})
        assert created["streaming"] == "created", created
        await viewer.watch(51)
        media = await viewer.wait_for_frames(video=30, audio=0)
        assert media.video_sizes == {(320, 240)}
        shown = await info(janus, 51)
        assert (shown["rtsp_transport"], shown["rtsp_dropped_frames"]) == ("tcp", 0)
        camera.stop()
        camera.start()
        await viewer.wait_for_frames(video=viewer.media.video_frames + 30, audio=0, timeout=30)
        assert viewer.media.video_sizes == {(320, 240)}
    finally:
        await viewer.close()
        camera.stop()


async def test_a_server_refusing_udp_is_pulled_over_tcp(
    janus: JanusHttpClient, fanout: tuple[ServerAddresses, FanoutProcess]
) -> None:
    with RtspServerProcess("h264", transport="tcp") as camera:
        created = await create_rtsp(janus, {"id": 52, "url": camera.url, "rtsp_reconnect_delay": 1})
        assert created["streaming"] == "created", created
        viewer = AiortcViewer(janus)
        try:
            await viewer.watch(52)
            media = await viewer.wait_for_frames(video=30, audio=0, timeout=30)
            assert media.video_sizes == {(320, 240)}
            assert (await info(janus, 52))["rtsp_transport"] == "tcp"
            await logged(fanout[1], r"mountpoint 52: the server refused RTP over UDP \(461\); pulling .* over TCP")
            # Told to take UDP only, a mountpoint keeps asking for UDP, and says why it gets nothing.
            udp_only = await create_rtsp(janus, {"id": 57, "url": camera.url, "rtsp_transport": "udp", "rtsp_reconnect_delay": 1})
            assert udp_only["streaming"] == "created", udp_only
            await logged(fanout[1], r"mountpoint 57: RTSP source .*: SETUP .* answered 461")
            assert (await info(janus, 57))["rtsp_transport"] == "udp"
        finally:
            await viewer.close()


class UdpBlockingProxy:
    """An RTSP proxy that rewrites each SETUP's client_port to a port nobody reads: as a
    firewall that lets the RTSP connection through but none of the server's UDP."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rewrite: bool) -> None:
            try:
                while data := await reader.read(65536):
                    if rewrite:  # port 9 (discard): nothing listens there
                        data = re.sub(rb"client_port=\d+-\d+", b"client_port=9-10", data)
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, server_writer, True), pipe(server_reader, client_writer, False))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def udp_blocking_proxy() -> AsyncIterator[tuple[RtspServerProcess, str]]:
    with RtspServerProcess("vp8", transport="both") as camera:
        proxy = UdpBlockingProxy(camera.port)
        port = await proxy.start()
        yield camera, f"rtsp://127.0.0.1:{port}/stream"
        await proxy.close()


async def test_no_media_over_udp_makes_the_pull_change_to_tcp(
    janus: JanusHttpClient, fanout: tuple[ServerAddresses, FanoutProcess],
    udp_blocking_proxy: tuple[RtspServerProcess, str],
) -> None:  # fmt: skip
    _, url = udp_blocking_proxy
    created = await create_rtsp(janus, {"id": 53, "url": url, "rtsp_reconnect_delay": 1})
    assert created["streaming"] == "created", created
    viewer = AiortcViewer(janus)
    try:
        await viewer.watch(53)
        media = await viewer.wait_for_frames(video=30, audio=0, timeout=30)
        assert media.video_sizes == {(320, 240)}
        assert (await info(janus, 53))["rtsp_transport"] == "tcp"
        await logged(fanout[1], r"mountpoint 53: no RTP came over UDP; pulling .* over TCP")
    finally:
        await viewer.close()


async def test_rtsps_over_tls_is_decoded_and_reconnects(janus: JanusHttpClient, certificate: tuple[Path, Path]) -> None:
    cert, _ = certificate
    camera = RtspServerProcess("vp8", transport="tcp", tls=certificate).start()
    viewer = AiortcViewer(janus)
    try:
        assert camera.url.startswith("rtsps://")
        untrusted = await create_rtsp(janus, {"id": 54, "url": camera.url})  # the system's CAs do not know it
        assert (untrusted["error_code"], untrusted["error"]) == (456, "Error creating 'RTSP' stream")
        body = {"id": 55, "url": camera.url, "rtsp_cafile": str(cert), "rtsp_reconnect_delay": 1}
        created = await create_rtsp(janus, body)
        assert created["streaming"] == "created", created
        await viewer.watch(55)
        media = await viewer.wait_for_frames(video=30, audio=0, timeout=30)
        assert media.video_sizes == {(320, 240)}
        assert (await info(janus, 55))["rtsp_transport"] == "tcp"
        camera.stop()
        camera.start()
        await viewer.wait_for_frames(video=viewer.media.video_frames + 30, audio=0, timeout=30)
        unchecked = await create_rtsp(janus, {"id": 56, "url": camera.url, "rtsp_tls_verify": False})
        assert unchecked["streaming"] == "created", unchecked
    finally:
        await viewer.close()
        camera.stop()
