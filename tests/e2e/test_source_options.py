"""Mountpoint options for awkward sources, created through the Janus API and fed
by real ffmpeg: an SRTP source (``srtpsuite``/``srtpcrypto``) and an H.264
source that announces its SPS and PPS only out of band (``h264sps``). A real
aiortc viewer decodes what fanout forwards."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.encoders import running
from tests.support.janus_client import JanusHttpClient

pytestmark = pytest.mark.usefixtures("loopback_only_ice")

FFMPEG = ["ffmpeg", "-hide_banner", "-loglevel", "error"]
TEST_PATTERN = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"]
# SPS and PPS in the stream's extradata only (global header): the RTP stream
# carries none, and ffmpeg writes them into the SDP's sprop-parameter-sets.
H264_OUT_OF_BAND = ["-c:v", "libx264", "-tune", "zerolatency", "-profile:v", "baseline", "-pix_fmt", "yuv420p",
                    "-g", "30", "-flags", "+global_header"]  # fmt: skip


async def create(janus: JanusHttpClient, body: dict[str, object]) -> int:
    """Creates a one-video-stream mountpoint; its source port."""
    handle = await janus.attach()
    reply = await janus.message(handle, {"request": "create", "type": "rtp"} | body)
    assert reply["janus"] == "success", reply
    created = reply["plugindata"]["data"]
    assert created["streaming"] == "created", created
    return int(created["stream"]["ports"][0]["port"])


async def test_an_srtp_source_is_decrypted_with_the_mountpoints_keys(janus_http: JanusHttpClient) -> None:
    crypto = base64.b64encode(os.urandom(30)).decode()
    vp8 = {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"}
    port = await create(janus_http, {"id": 21, "srtpsuite": 80, "srtpcrypto": crypto, "media": [vp8]})
    wrong_port = await create(
        janus_http, {"id": 22, "srtpsuite": 80, "srtpcrypto": base64.b64encode(os.urandom(30)).decode(), "media": [vp8]}
    )
    encoder = ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k", "-g", "30", "-f", "rtp",
               "-payload_type", "96", "-srtp_out_suite", "AES_CM_128_HMAC_SHA1_80", "-srtp_out_params", crypto]  # fmt: skip
    source = [*FFMPEG, "-re", *TEST_PATTERN, *encoder, f"srtp://127.0.0.1:{port}?pkt_size=1200",
              *encoder, f"srtp://127.0.0.1:{wrong_port}?pkt_size=1200"]  # fmt: skip
    right, wrong = AiortcViewer(janus_http), AiortcViewer(janus_http)
    with running(source):
        try:
            await right.watch(21)
            await wrong.watch(22)
            media = await right.wait_for_frames(video=45, audio=0)
            assert media.video_sizes == {(320, 240)}
            assert wrong.media.video_frames == 0, "a source with other keys is not decrypted"
        finally:
            await right.close()
            await wrong.close()


def sprop_parameter_sets(tmp_path: Path) -> str:
    """The sprop-parameter-sets ffmpeg announces for H264_OUT_OF_BAND (the same for every run)."""
    sdp = tmp_path / "h264.sdp"
    one_frame = [*FFMPEG, *TEST_PATTERN, "-frames:v", "1", *H264_OUT_OF_BAND, "-f", "rtp", "-payload_type", "96",
                 "-sdp_file", str(sdp), "rtp://127.0.0.1:9"]  # fmt: skip
    subprocess.run(one_frame, check=True, timeout=30)
    found = re.search(r"sprop-parameter-sets=([^;\s]+)", sdp.read_text())
    assert found, sdp.read_text()
    return found.group(1)


async def test_parameter_sets_given_out_of_band_make_h264_decodable(
    janus_http: JanusHttpClient, tmp_path: Path
) -> None:
    h264 = {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "h264"}
    with_sps = await create(janus_http, {"id": 23, "media": [h264 | {"h264sps": sprop_parameter_sets(tmp_path)}]})
    without_sps = await create(janus_http, {"id": 24, "media": [h264]})
    encoder = [*H264_OUT_OF_BAND, "-f", "rtp", "-payload_type", "96"]
    source = [*FFMPEG, "-re", *TEST_PATTERN, *encoder, f"rtp://127.0.0.1:{with_sps}?pkt_size=1200",
              *encoder, f"rtp://127.0.0.1:{without_sps}?pkt_size=1200"]  # fmt: skip
    helped, unhelped = AiortcViewer(janus_http), AiortcViewer(janus_http)
    with running(source):
        try:
            await helped.watch(23)
            await unhelped.watch(24)
            media = await helped.wait_for_frames(video=45, audio=0)
            assert media.video_sizes == {(320, 240)}
            assert unhelped.media.video_frames == 0, "without the parameter sets nothing decodes"
        finally:
            await helped.close()
            await unhelped.close()
