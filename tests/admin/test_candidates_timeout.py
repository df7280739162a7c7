"""``candidates_timeout``: candidates trickled before their SDP and kept longer than that are
dropped when the SDP comes, as Debian's Janus 1.1.2 does (tests/admin/data/janus_trickles.json,
made by ``record_janus.py trickles``; both run with ``candidates_timeout = 1``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.admin.conftest import AdminAddresses, add_general, admin_config
from tests.admin.trickle_cases import CANDIDATES_TIMEOUT, CASES, run_trickle_case
from tests.support.server import FanoutProcess

RECORDINGS = json.loads((Path(__file__).parent / "data" / "janus_trickles.json").read_text())["recordings"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminAddresses]:
    folder = tmp_path_factory.mktemp("trickles") / "config"
    addresses = admin_config(folder)
    add_general(folder, f"\tcandidates_timeout = {CANDIDATES_TIMEOUT}\n")
    with FanoutProcess(folder):
        yield addresses


@pytest.mark.parametrize("case", list(CASES))
async def test_early_candidates_as_janus(case: str, server: AdminAddresses) -> None:
    async with aiohttp.ClientSession() as http:
        result = await run_trickle_case(http, server.urls["janus_url"], server.urls["admin_url"], CASES[case])
    assert result == RECORDINGS[case]
