"""The Admin API of a real ``fanout serve``, over HTTP and over WebSocket, against Debian's Janus
1.1.2 answering the same requests (tests/admin/data/janus_admin.json, made by record_janus.py):
secrets, tokens and their error codes, sessions and handles, timeouts, log level, plugin messages."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.admin.admin_scenarios import (
    ADMIN_SECRET,
    API_SECRET,
    SCENARIOS,
    clients,
    run_admin_scenario,
)
from tests.admin.conftest import AdminAddresses, admin_config
from tests.engine.test_priority import may_lower_nice
from tests.support.server import FanoutProcess

DATA = Path(__file__).parent / "data"
CONFIGS: dict[str, dict[str, Any]] = {
    "tokens": {"admin_secret": ADMIN_SECRET, "token_auth": True},
    "secrets": {"admin_secret": ADMIN_SECRET, "api_secret": API_SECRET},
    "open": {},
    "log_file": {"log_file": True},
}
# get_status: Janus's own logging switches; fanout's log lines carry timestamps and no colours; and
# fanout's own: the engine's threads at fanout.data_plane_nice (-5) when the server may lower a nice value
# (tests/admin/test_data_plane_priority.py), the control plane's thread at the one it inherits from this test
CONTROL_PLANE_NICE = os.getpriority(os.PRIO_PROCESS, 0)
FANOUT_STATUS = {
    "log_timestamps": True,
    "log_colors": False,
    "data_plane_nice": -5 if may_lower_nice() else CONTROL_PLANE_NICE,
    "control_plane_nice": CONTROL_PLANE_NICE,
    "data_plane_nice_refused": None if may_lower_nice() else "Permission denied (os error 13)",
}


def recording(name: str) -> dict[str, Any]:
    return json.loads((DATA / "janus_admin.json").read_text())["recordings"][name]  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=list(CONFIGS))
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, AdminAddresses]]:
    name = request.param
    folder = tmp_path_factory.mktemp(name) / "config"
    addresses = admin_config(folder, **CONFIGS[name])
    with FanoutProcess(folder):
        yield name, addresses


def expected_for(step: dict[str, Any], recorded: dict[str, Any]) -> Any:
    """Janus's reply, with fanout's deliberate differences put in (each says why)."""
    response = json.loads(json.dumps(recorded["response"]))
    janus = step["request"].get("janus")
    if janus == "get_status" and response.get("janus") == "success":
        response["status"].update(FANOUT_STATUS)
    return response


def compare_shapes(step: dict[str, Any], got: Any, recorded: Any) -> None:
    janus = step["request"]["janus"]
    if janus == "info":
        # same fields; the dependencies are fanout's own (python, crypto), not glib2/libnice/...
        assert list(got) == list(recorded)
        assert {key: value for key, value in got.items() if key != "dependencies"} == {
            key: value for key, value in recorded.items() if key != "dependencies"
        }
        return
    assert janus == "handle_info"
    assert list(got) == list(recorded)
    info, janus_info = got["info"], recorded["info"]
    # Janus's fields fanout fills, in Janus's order; left out: the ICE "gathered" time (no
    # gathering: ICE-lite), bwe/extensions (no TWCC, no header extensions)
    missing = [key for key in janus_info if key not in info]
    assert missing == [], missing
    assert list(info["flags"]) == list(janus_info["flags"])
    # plugin_specific is each plugin's own (fanout's Streaming plugin reports other fields)
    assert isinstance(info["plugin_specific"], dict)
    if "webrtc" in janus_info:
        webrtc, janus_webrtc = info["webrtc"], janus_info["webrtc"]
        assert set(webrtc["ice"]) >= set(janus_webrtc["ice"]) - {"gathered"}
        assert set(webrtc["dtls"]) >= set(janus_webrtc["dtls"]) - {"stats"}
        assert set(webrtc["media"]) == set(janus_webrtc["media"])
        for mid, media in webrtc["media"].items():
            assert {"type", "mindex", "mid", "direction", "rtcp"} <= set(media), mid


@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_admin_api_answers_as_janus(kind: str, server: tuple[str, AdminAddresses]) -> None:
    name, addresses = server
    steps = SCENARIOS[name]
    async with aiohttp.ClientSession() as http:
        async with clients(kind, http, **addresses.urls) as (admin_client, janus_client):
            results = await run_admin_scenario(admin_client, janus_client, steps)
    recorded = recording(name)[kind]
    assert len(results) == len(recorded)
    for step, got, expected in zip(steps, results, recorded):
        assert got["request"] == expected["request"]
        if step.get("shape"):
            compare_shapes(step, got["response"], expected["response"])
        else:
            assert got["response"] == expected_for(step, expected), json.dumps(step["request"])
