"""An rtsp mountpoint in process, against GStreamer's RTSP server: the server's RTP and its
sender reports reach the engine's ports, and destroying the mountpoint tears the session down."""

from __future__ import annotations

import asyncio
import socket

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
