"""``watch`` and ``start`` through the Janus API, compared with the real Janus's recorded replies
and events (record_janus.py watch): ``start`` before the offer's answer, and ``watch``'s
``offer_audio``/``offer_video``/``offer_data``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.plugins.streaming.management_cases import STREAMING_CONFIG
from tests.plugins.streaming.watch_cases import WATCH_CASES, run_watch_case
from tests.support.ports import free_ports
from tests.support.server import FanoutProcess, ServerAddresses, write_config

RECORDINGS = json.loads((Path(__file__).parent / "data" / "janus_watch.json").read_text())["recordings"]["plain"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerAddresses]:
    folder = tmp_path_factory.mktemp("config")
    addresses = write_config(folder, "")
    audio_port, video_port = free_ports(2)
    (folder / "janus.plugin.streaming.jcfg").write_text(
        STREAMING_CONFIG % {"general": "", "configured_id": "1", "audio_port": audio_port, "video_port": video_port}
    )
    with FanoutProcess(folder):
        yield addresses


@pytest.mark.parametrize("case", list(WATCH_CASES))
async def test_watch_answers_as_janus(case: str, server: ServerAddresses) -> None:
    async with aiohttp.ClientSession() as http:
        replies = await run_watch_case(http, server.janus_url, WATCH_CASES[case])
    assert replies == RECORDINGS[case]
