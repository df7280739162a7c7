"""Record Debian's Janus 1.1.2 answering the Admin API scenarios of admin_scenarios.py.

    .venv/bin/python -m tests.admin.record_janus

Runs ``janus -F <folder>`` (a copy of /etc/janus, see janus_config.py) once per
scenario's configuration, in a temporary working folder, with the Admin API on
its own HTTP and WebSocket ports; each scenario runs over HTTP and over
WebSocket. Writes tests/admin/data/janus_admin.json; with ``trickles``, trickle_cases.py's
cases (``candidates_timeout = 1``) into tests/admin/data/janus_trickles.json instead.

    .venv/bin/python -m tests.admin.record_janus trickles
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from tests.admin.admin_scenarios import (
    ADMIN_SECRET,
    API_SECRET,
    SCENARIOS,
    clients,
    run_admin_scenario,
)
from tests.admin import trickle_cases
from tests.admin.janus_config import (
    ADMIN_PORT,
    ADMIN_WS_PORT,
    HTTP_PORT,
    WS_PORT,
    Janus,
    make_config,
)
from tests.admin.trickle_cases import run_trickle_case

DATA = Path(__file__).parent / "data"
CONFIGS: dict[str, dict[str, Any]] = {
    "tokens": {"admin_secret": ADMIN_SECRET, "token_auth": True},
    "secrets": {"admin_secret": ADMIN_SECRET, "api_secret": API_SECRET},
    "open": {"admin_secret": None},
    "log_file": {"admin_secret": None, "log_file": True},
}


async def record(name: str) -> dict[str, Any]:
    urls = {
        "janus_url": f"http://127.0.0.1:{HTTP_PORT}/janus",
        "admin_url": f"http://127.0.0.1:{ADMIN_PORT}/admin",
        "ws_url": f"ws://127.0.0.1:{WS_PORT}/",
        "admin_ws_url": f"ws://127.0.0.1:{ADMIN_WS_PORT}/",
    }
    results: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        for kind in ("http", "websocket"):
            async with clients(kind, http, **urls) as (admin_client, janus_client):
                results[kind] = await run_admin_scenario(admin_client, janus_client, SCENARIOS[name])
    return results


async def record_trickles() -> dict[str, Any]:
    janus_url, admin_url = f"http://127.0.0.1:{HTTP_PORT}/janus", f"http://127.0.0.1:{ADMIN_PORT}/admin"
    async with aiohttp.ClientSession() as http:
        return {name: await run_trickle_case(http, janus_url, admin_url, waits) for name, waits in trickle_cases.CASES.items()}


def main() -> None:
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "janus"], capture_output=True, text=True).stdout.strip()
    if sys.argv[1:] == ["trickles"]:
        with tempfile.TemporaryDirectory() as temporary:
            folder = Path(temporary) / "trickles"
            make_config(folder, admin_secret=None, candidates_timeout=trickle_cases.CANDIDATES_TIMEOUT)
            with Janus(folder):
                recorded = asyncio.run(record_trickles())
        path = DATA / "janus_trickles.json"
        path.write_text(json.dumps({"janus": version, "recordings": recorded}, indent=1) + "\n")
        print(f"wrote {path}")
        return
    recordings: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as temporary:
        for name, options in CONFIGS.items():
            folder = Path(temporary) / name
            make_config(folder, **options)
            with Janus(folder):
                recordings[name] = asyncio.run(record(name))
    DATA.mkdir(exist_ok=True)
    path = DATA / "janus_admin.json"
    path.write_text(json.dumps({"janus": version, "recordings": recordings}, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
