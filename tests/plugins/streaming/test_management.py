"""Mountpoint management through the Janus API, compared with the real Janus's recorded replies
(record_janus.py), and the requests Janus cannot be recorded on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.plugins.streaming.management_cases import (
    ADMIN_CASES,
    ADMIN_KEY,
    CASES,
    SIMULCAST_CASES,
    STREAMING_CONFIG,
    STRING_ID_CASES,
    run_case,
)
from tests.support.ports import free_ports
from tests.support.server import FanoutProcess, ServerAddresses, write_config

RECORDINGS = json.loads((Path(__file__).parent / "data" / "janus_management.json").read_text())["recordings"]
SIMULCAST_RECORDINGS = json.loads((Path(__file__).parent / "data" / "janus_simulcast.json").read_text())["recordings"]

# Where fanout answers differently on purpose: (case, step) -> fanout's reply.
DELIBERATE_DIFFERENCES: dict[tuple[str, int], Any] = {
    # Janus says "error creating data source stream"; fanout names what is missing.
    ("create_errors", 6): {"streaming": "event", "error_code": 456, "error": "Can't add 'rtp' stream: media[0]: missing 'pt'"},
    # Janus creates a mountpoint for any codec name; fanout refuses the codecs it cannot serve.
    ("create_errors", 7): {"streaming": "event", "error_code": 456, "error": "Can't add 'rtp' stream: media[0]: unknown codec 'theora'"},
}

CREATED_ONLY_BY_JANUS = {105}  # the theora mountpoint above


def by_id(reply: Any) -> Any:
    """Janus lists mountpoints in hash-table order; compare lists sorted by id."""
    if isinstance(reply, dict) and reply.get("streaming") == "list":
        return reply | {"list": sorted(reply["list"], key=lambda entry: str(entry["id"]))}
    return reply


@pytest.fixture(scope="module", params=["plain", "admin_key", "string_ids"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ServerAddresses]]:
    folder = tmp_path_factory.mktemp("config")
    addresses = write_config(folder, "")
    audio_port, video_port = free_ports(2)
    general = {"plain": "", "admin_key": f'\tadmin_key = "{ADMIN_KEY}"', "string_ids": "\tstring_ids = true"}[request.param]
    configured_id = '"one"' if request.param == "string_ids" else "1"
    (folder / "janus.plugin.streaming.jcfg").write_text(
        STREAMING_CONFIG
        % {"general": general, "configured_id": configured_id, "audio_port": audio_port, "video_port": video_port}
    )
    with FanoutProcess(folder):
        yield request.param, addresses


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_management_requests_answer_as_janus(server: tuple[str, ServerAddresses], http: aiohttp.ClientSession) -> None:
    variant, addresses = server
    cases = {"plain": CASES, "admin_key": ADMIN_CASES, "string_ids": STRING_ID_CASES}[variant]
    for case, bodies in cases.items():
        replies = await run_case(http, addresses.janus_url, bodies)
        for step, (body, reply, recorded) in enumerate(zip(bodies, replies, RECORDINGS[variant][case], strict=True)):
            expected = DELIBERATE_DIFFERENCES.get((case, step), recorded)
            if body.get("request") == "list":  # leave out what other cases left behind
                expected = expected | {"list": [e for e in expected["list"] if _compared(e)]}
                reply = reply | {"list": [e for e in reply["list"] if _compared(e)]}
            assert by_id(reply) == by_id(expected), (case, step, body)


async def test_simulcast_mountpoints_answer_as_janus(
    server: tuple[str, ServerAddresses], http: aiohttp.ClientSession
) -> None:
    variant, addresses = server
    if variant != "plain":
        pytest.skip("recorded with the plain configuration only")
    for case, bodies in SIMULCAST_CASES.items():
        replies = await run_case(http, addresses.janus_url, bodies)
        for step, (body, reply, recorded) in enumerate(zip(bodies, replies, SIMULCAST_RECORDINGS[variant][case], strict=True)):
            if body.get("request") == "list":  # leave out what other cases left behind
                recorded = recorded | {"list": [e for e in recorded["list"] if _compared(e)]}
                reply = reply | {"list": [e for e in reply["list"] if _compared(e)]}
            assert by_id(reply) == by_id(recorded), (case, step, body)


def _compared(entry: dict[str, Any]) -> bool:
    return entry["description"] != "no-id" and entry["id"] not in CREATED_ONLY_BY_JANUS
