"""rtsp mountpoints against a real RTSP server (GStreamer's gst-rtsp-server): fanout
DESCRIBEs, SETUPs and PLAYs, the server sends RTP straight to the engine, and a real
aiortc viewer decodes it."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient
from tests.support.rtsp_server import RtspServerProcess
from tests.support.server import FanoutProcess, ServerAddresses, write_config

pytestmark = pytest.mark.usefixtures("loopback_only_ice")


async def create_rtsp(janus: JanusHttpClient, body: dict[str, Any]) -> dict[str, Any]:
    handle = await janus.attach()
    reply = await janus.message(handle, {"request": "create", "type": "rtsp", "video": True} | body)
    assert reply["janus"] == "success", reply
    return reply["plugindata"]["data"]  # type: ignore[no-any-return]


async def test_a_vp8_and_opus_camera_is_pulled_and_decoded(janus_http: JanusHttpClient) -> None:
    with RtspServerProcess("vp8", audio=True) as camera:
        created = await create_rtsp(janus_http, {"id": 31, "url": camera.url, "audio": True})
        assert created["streaming"] == "created", created
        assert created["stream"] == {"id": 31, "type": "live", "description": "mp-31", "is_private": False}
        handle = await janus_http.attach()
        info = (await janus_http.message(handle, {"request": "info", "id": 31}))["plugindata"]["data"]["info"]
        assert (info["type"], info["rtsp"], info["url"]) == ("live", True, camera.url)
        assert [(m["type"], m["codec"]) for m in info["media"]] == [("audio", "opus"), ("video", "vp8")]
        viewer = AiortcViewer(janus_http)
        try:
            await viewer.watch(31)
            media = await viewer.wait_for_frames(video=30, audio=30)
            assert media.video_sizes == {(320, 240)}
            assert media.audio_sample_rates == {48000}
        finally:
            await viewer.close()


async def test_h264_with_parameter_sets_only_in_the_sdp_behind_digest_authentication(
    janus_http: JanusHttpClient,
) -> None:
    with RtspServerProcess("h264", user="viewer", password="s3cret", digest=True) as camera:
        refused = await create_rtsp(janus_http, {"id": 32, "url": camera.url, "rtsp_user": "viewer", "rtsp_pwd": "wrong"})
        assert (refused["error_code"], refused["error"]) == (456, "Error creating 'RTSP' stream")
        created = await create_rtsp(janus_http, {"id": 33, "url": camera.url, "rtsp_user": "viewer", "rtsp_pwd": "s3cret"})
        assert created["streaming"] == "created", created
        viewer = AiortcViewer(janus_http)
        try:
            await viewer.watch(33)
            media = await viewer.wait_for_frames(video=30, audio=0)
            assert media.video_sizes == {(320, 240)}
        finally:
            await viewer.close()


async def test_basic_authentication_with_credentials_in_the_url(janus_http: JanusHttpClient) -> None:
    with RtspServerProcess("vp8", user="viewer", password="s3cret") as camera:
        url_with_credentials = camera.url.replace("rtsp://", "rtsp://viewer:s3cret@")
        created = await create_rtsp(janus_http, {"id": 34, "url": url_with_credentials, "secret": "admin"})
        assert created["streaming"] == "created", created
        handle = await janus_http.attach()
        public = (await janus_http.message(handle, {"request": "info", "id": 34}))["plugindata"]["data"]["info"]
        assert public["rtsp"] is True and "url" not in public, "credentials stay with the secret's holders"
        private = await janus_http.message(handle, {"request": "info", "id": 34, "secret": "admin"})
        assert private["plugindata"]["data"]["info"]["url"] == url_with_credentials


async def test_viewers_get_frames_again_after_the_server_restarts(janus_http: JanusHttpClient) -> None:
    camera = RtspServerProcess("vp8").start()
    viewer = AiortcViewer(janus_http)
    try:
        created = await create_rtsp(janus_http, {"id": 35, "url": camera.url, "rtsp_reconnect_delay": 1})
        assert created["streaming"] == "created", created
        await viewer.watch(35)
        await viewer.wait_for_frames(video=20, audio=0)
        camera.stop()
        await viewer.wait_until_video_stops()
        camera.start()
        await viewer.wait_for_frames(video=viewer.media.video_frames + 30, audio=0, timeout=15)
        assert viewer.media.video_sizes == {(320, 240)}
    finally:
        await viewer.close()
        camera.stop()


async def test_media_that_stops_while_the_connection_stays_open_makes_fanout_start_again(
    janus_http: JanusHttpClient, demo_server: tuple[ServerAddresses, FanoutProcess]
) -> None:
    camera = RtspServerProcess("vp8").start()
    viewer = AiortcViewer(janus_http)
    try:
        body = {"id": 39, "url": camera.url, "rtsp_reconnect_delay": 1, "rtsp_timeout": 1}
        assert (await create_rtsp(janus_http, body))["streaming"] == "created"
        await viewer.watch(39)
        await viewer.wait_for_frames(video=20, audio=0)
        assert camera.process is not None
        camera.process.send_signal(signal.SIGSTOP)  # frozen: its connection stays open, its media stops
        await asyncio.sleep(3.0)
        camera.process.send_signal(signal.SIGCONT)
        await viewer.wait_for_frames(video=viewer.media.video_frames + 30, audio=0, timeout=15)
        _, server = demo_server
        assert "mountpoint 39: RTSP source" in server.output and "no media from the RTSP server" in server.output
    finally:
        if camera.process is not None:
            camera.process.send_signal(signal.SIGCONT)
        await viewer.close()
        camera.stop()


async def test_a_server_that_cannot_be_reached_fails_the_creation(janus_http: JanusHttpClient) -> None:
    dead = RtspServerProcess("vp8")  # a free port nobody listens on
    failed = await create_rtsp(janus_http, {"id": 36, "url": dead.url})
    assert (failed["error_code"], failed["error"]) == (456, "Error creating 'RTSP' stream")
    missing_url = await create_rtsp(janus_http, {"id": 37})
    assert (missing_url["error_code"], missing_url["error"]) == (453, "Missing mandatory element (url)")


async def test_without_failcheck_a_mountpoint_waits_for_its_server(janus_http: JanusHttpClient) -> None:
    camera = RtspServerProcess("vp8")
    viewer = AiortcViewer(janus_http)
    try:
        body = {"id": 38, "url": camera.url, "rtsp_failcheck": False, "videocodec": "vp8", "rtsp_reconnect_delay": 1}
        created = await create_rtsp(janus_http, body)
        assert created["streaming"] == "created", created
        await viewer.watch(38)
        camera.start()
        media = await viewer.wait_for_frames(video=30, audio=0, timeout=15)
        assert media.video_sizes == {(320, 240)}
    finally:
        await viewer.close()
        camera.stop()


async def test_a_configured_rtsp_mountpoint_is_pulled_at_start_and_a_created_one_saved(tmp_path: Path) -> None:
    with RtspServerProcess("vp8") as camera:
        # rtspiface "lo": the media ports and the control connection on the loopback interface's address
        configured = f'camera: {{\n\ttype = "rtsp"\n\tid = 40\n\tvideo = true\n\turl = "{camera.url}"\n\trtspiface = "lo"\n}}\n'
        addresses = write_config(tmp_path / "config", configured)
        with FanoutProcess(tmp_path / "config"):
            async with aiohttp.ClientSession() as http:
                janus = JanusHttpClient(http, addresses.janus_url)
                await janus.create()
                viewer = AiortcViewer(janus)
                try:
                    await viewer.watch(40)
                    media = await viewer.wait_for_frames(video=30, audio=0)
                    assert media.video_sizes == {(320, 240)}
                    saved = await create_rtsp(janus, {"id": 41, "name": "saved", "url": camera.url, "permanent": True})
                    assert saved["permanent"] is True, saved
                finally:
                    await viewer.close()
                    await janus.close()
        text = (tmp_path / "config" / "janus.plugin.streaming.jcfg").read_text()
        assert "saved: {" in text and 'type = "rtsp"' in text and camera.url in text
