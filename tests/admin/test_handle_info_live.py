"""``handle_info`` of a real aiortc viewer watching the built-in test source, and the log level
changed at run time, through a real ``fanout serve``'s Admin API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
import pytest

from tests.admin.conftest import admin_config
from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient
from tests.support.server import DEMO_MOUNTPOINT, FanoutProcess


@pytest.fixture
def loopback_only_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


async def admin(http: aiohttp.ClientSession, url: str, janus: str, path: str = "", **fields: Any) -> dict[str, Any]:
    body = {"janus": janus, "transaction": janus, "admin_secret": "overlord", **fields}
    async with http.post(url + path, data=json.dumps(body)) as response:
        return await response.json(content_type=None)  # type: ignore[no-any-return]


@pytest.mark.usefixtures("loopback_only_ice")
async def test_handle_info_of_a_watching_viewer_and_log_level(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    addresses = admin_config(folder, admin_secret="overlord", mountpoints=DEMO_MOUNTPOINT)
    url = addresses.urls["admin_url"]
    with FanoutProcess(folder) as server:
        async with aiohttp.ClientSession() as http:
            client = JanusHttpClient(http, addresses.server.janus_url)
            session_id = await client.create()
            viewer = AiortcViewer(client)
            try:
                await viewer.watch(1)
                await viewer.wait_for_frames(video=20, audio=20)
                await asyncio.sleep(1.2)  # one more second of sending, for bytes_lastsec
                reply = await admin(http, url, "handle_info", f"/{session_id}/{viewer.handle_id}")
                info = reply["info"]
                webrtc = info["webrtc"]
                assert webrtc["ice"]["state"] == "connected"
                assert webrtc["ice"]["selected-pair"].startswith("127.0.0.1:")
                assert webrtc["dtls"]["dtls-state"] == "connected"
                assert webrtc["dtls"]["srtp-profile"] in ("SRTP_AEAD_AES_128_GCM", "SRTP_AES128_CM_SHA1_80")
                assert webrtc["dtls"]["valid"] is True
                assert sorted(webrtc["media"]) == ["a", "v"]
                assert webrtc["stats"]["out"]["packets"] > 0 and webrtc["stats"]["out"]["bytes_lastsec"] > 0
                assert webrtc["stats"]["out"]["dropped_late"] >= 0
                assert info["flags"]["ready"] is True and info["flags"]["got-answer"] is True
                assert 0 < info["agent-created"] <= info["current_time"]
                assert (info["flags"]["ice-restart"], info["flags"]["data-channels"]) == (False, False)
                assert webrtc["dtls"]["sctp-association"] is False and webrtc["dtls"]["retransmissions"] >= 0
                assert info["plugin_specific"]["mountpoint"] == 1
                assert info["plugin_specific"]["engine"]["dropped_late"] >= 0
                assert info["sdps"]["local"].startswith("v=0") and info["sdps"]["remote"].startswith("v=0")

                for _ in range(50):  # the viewer's receiver reports answer our sender reports
                    video_rtcp = webrtc["media"]["v"]["rtcp"]["main"]
                    if "rtt" in video_rtcp:
                        break
                    await asyncio.sleep(0.2)
                    webrtc = (await admin(http, url, "handle_info", f"/{session_id}/{viewer.handle_id}"))["info"]["webrtc"]
                assert 0 <= video_rtcp["rtt"] < 1000, video_rtcp
                assert video_rtcp["lost-by-remote"] == 0 and video_rtcp["jitter-remote"] >= 0, video_rtcp

                assert (await admin(http, url, "set_log_level", level=7))["level"] == 7
                assert (await admin(http, url, "get_status"))["status"]["log_level"] == 7
                hangup = await admin(http, url, "hangup_webrtc", f"/{session_id}/{viewer.handle_id}")
                assert hangup == {"janus": "success", "session_id": session_id, "transaction": "hangup_webrtc"}
                event = await client.event(lambda e: e.get("janus") == "hangup" and e.get("sender") == viewer.handle_id)
                assert event["reason"] == "Janus API"
                await admin(http, url, "set_log_level", level=3)
            finally:
                await viewer.close()
                await client.close()
    assert " DEBUG " in server.output  # level 7 let debug lines out at run time
