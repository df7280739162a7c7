"""An rtsp mountpoint in process, against GStreamer's RTSP server: the server's RTP and its
sender reports reach the engine's ports, and destroying the mountpoint tears the session down.
Against a scripted server interleaving RTP on the RTSP connection: a bad frame is dropped and
counted, and only its own pull starts again."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable

import pytest

from fanout._engine import Engine, StreamStats
from fanout.plugins.streaming.config import parse_mountpoint
from fanout.plugins.streaming.plugin import StreamingPlugin

from tests.support.rtsp_server import RtspServerProcess


async def test_rtp_and_sender_reports_come_to_the_engines_ports_and_destroying_tears_down() -> None:
    webrtc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    webrtc.bind(("127.0.0.1", 0))
    engine = Engine(webrtc.fileno(), cores=[0], pin=False)
    plugin = StreamingPlugin(engine, [])
    try:
        with RtspServerProcess("vp8") as camera:
            config, _ = parse_mountpoint("camera", {"type": "rtsp", "id": 7, "video": True, "url": camera.url})
            mountpoint = await plugin.open_rtsp_mountpoint(config)
            (stream,) = mountpoint.config.streams
            assert (stream.codec.name, stream.rtcp_port) == ("vp8", 0)

            async def stats() -> StreamStats:
                return engine.mountpoint_stats(mountpoint.engine_id).streams[0]

            for _ in range(100):  # GStreamer's first sender report comes within a few seconds
                if (await stats()).sender_report is not None:
                    break
                await asyncio.sleep(0.1)
            received = await stats()
            assert received.packets > 0 and received.malformed == 0
            assert received.rtcp_packets > 0 and received.sender_report is not None
            plugin.remove_mountpoint(7)
            await asyncio.get_running_loop().run_in_executor(None, camera.wait_for_line, "rtsp-server: teardown")
    finally:
        await plugin.stop()
        engine.close()
        webrtc.close()


class InterleavingCamera:
    """A scripted RTSP server sending VP8 RTP interleaved (channel 0) at 50 packets a second
    on every PLAY; ``/bad`` ends its first session with ``bad_bytes`` instead of a frame."""

    SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=control:track0\r\n"

    def __init__(self, bad_bytes: bytes) -> None:
        self.bad_bytes = bad_bytes
        self.sessions: dict[str, int] = {"/bad": 0, "/good": 0}
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def url(self, path: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sender: asyncio.Task[None] | None = None
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                request_line, *lines = head.decode().split("\r\n")
                method, url, _ = request_line.split(" ")
                path = "/" + url.split("/", 3)[3].split("/")[0]
                cseq = next(line.split(":")[1].strip() for line in lines if line.lower().startswith("cseq"))
                headers, body = [f"CSeq: {cseq}", "Session: 1;timeout=60"], b""
                if method == "OPTIONS":
                    headers.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN")
                elif method == "DESCRIBE":
                    body = self.SDP.encode()
                    headers += ["Content-Type: application/sdp", f"Content-Base: {self.url(path)}/"]
                elif method == "SETUP":
                    headers.append("Transport: RTP/AVP/TCP;unicast;interleaved=0-1")
                head_out = "RTSP/1.0 200 OK\r\n" + "\r\n".join(headers)
                if body:
                    head_out += f"\r\nContent-Length: {len(body)}"
                writer.write(head_out.encode() + b"\r\n\r\n" + body)
                if method == "PLAY":
                    self.sessions[path] += 1
                    bad = path == "/bad" and self.sessions[path] == 1
                    sender = asyncio.create_task(self._send(writer, self.bad_bytes if bad else None))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if sender is not None:
                sender.cancel()
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, bad_bytes: bytes | None) -> None:
        for sequence in itertools.count():
            rtp = bytes([0x80, 96]) + (sequence & 0xFFFF).to_bytes(2, "big") + (sequence * 1800).to_bytes(4, "big")
            rtp += (0x1234).to_bytes(4, "big") + b"\x10\x00\x9d\x01\x2a" + bytes(100)
            writer.write(b"$\x00" + len(rtp).to_bytes(2, "big") + rtp)
            if bad_bytes is not None and sequence == 20:
                writer.write(bad_bytes)
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    "bad_bytes",
    [b"$\x00\xff\xff" + bytes(100), b"GARBAGE, NOT A FRAME\r\n"],
    ids=["oversized frame", "bytes that are no frame"],
)
async def test_a_bad_interleaved_frame_is_dropped_and_counted_and_only_its_pull_reconnects(bad_bytes: bytes) -> None:
    webrtc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    webrtc.bind(("127.0.0.1", 0))
    engine = Engine(webrtc.fileno(), cores=[0], pin=False)
    plugin = StreamingPlugin(engine, [])
    camera = InterleavingCamera(bad_bytes)
    await camera.start()
    try:
        mountpoints = {}
        # /good: 10 s without a packet before its pull would start again (not under load).
        for mountpoint_id, path, delay in ((8, "/bad", 1), (9, "/good", 10)):
            group = {"type": "rtsp", "id": mountpoint_id, "video": True, "url": camera.url(path),
                     "rtsp_transport": "tcp", "rtsp_reconnect_delay": delay}  # fmt: skip
            config, _ = parse_mountpoint(path, group)
            mountpoints[path] = await plugin.open_rtsp_mountpoint(config)

        def packets(path: str) -> int:
            return engine.mountpoint_stats(mountpoints[path].engine_id).streams[0].packets

        async def until(condition: Callable[[], bool]) -> None:
            async def check() -> None:
                while not condition():
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(check(), 20)

        await until(lambda: camera.sessions["/bad"] == 2)  # dropped, then pulled again
        assert mountpoints["/bad"].rtsp_dropped_frames == 1
        reconnected_at = packets("/bad")
        await until(lambda: packets("/bad") > reconnected_at + 20)
        assert (camera.sessions["/good"], mountpoints["/good"].rtsp_dropped_frames) == (1, 0)
        good_before = packets("/good")
        await until(lambda: packets("/good") > good_before + 20)
        assert engine.mountpoint_stats(mountpoints["/bad"].engine_id).streams[0].malformed == 0
    finally:
        await plugin.stop()
        engine.close()
        webrtc.close()
        if camera.server is not None:
            camera.server.close()
