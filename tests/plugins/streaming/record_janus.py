"""Record the real Janus Streaming plugin's replies to management_cases.py.

Runs Debian's Janus 1.1.2 (`janus -F <folder>`) with only the Streaming plugin
and the HTTP transport on 127.0.0.1:18095, twice: without and with an
``admin_key``. Writes tests/plugins/streaming/data/janus_management.json; with
``simulcast``, records SIMULCAST_CASES into janus_simulcast.json instead; with ``watch``,
watch_cases.py's WATCH_CASES into janus_watch.json; with ``hostile``, HOSTILE_CASES into
janus_hostile.json (as root: one binds port 22).

    .venv/bin/python -m tests.plugins.streaming.record_janus [simulcast|watch|hostile]
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.plugins.streaming.management_cases import (
    ADMIN_CASES,
    ADMIN_KEY,
    CASES,
    HOSTILE_CASES,
    SIMULCAST_CASES,
    STREAMING_CONFIG,
    STRING_ID_CASES,
    run_case,
)
from tests.plugins.streaming.watch_cases import WATCH_CASES, run_watch_case

DATA = Path(__file__).parent / "data"
HTTP_PORT = 18095
AUDIO_PORT, VIDEO_PORT = 35012, 35014
LIBRARIES = Path("/usr/lib/x86_64-linux-gnu/janus")


def make_folder(folder: Path, general: str, configured_id: str) -> None:
    for name in ("janus.jcfg", "janus.transport.http.jcfg"):
        shutil.copy(f"/etc/janus/{name}", folder / name)
    (folder / "janus.plugin.streaming.jcfg").write_text(
        STREAMING_CONFIG
        % {"general": general, "configured_id": configured_id, "audio_port": AUDIO_PORT, "video_port": VIDEO_PORT}
    )
    plugins = ",".join(p.name for p in sorted((LIBRARIES / "plugins").glob("*.so")) if p.name != "libjanus_streaming.so")
    transports = ",".join(p.name for p in sorted((LIBRARIES / "transports").glob("*.so")) if p.name != "libjanus_http.so")
    core = (folder / "janus.jcfg").read_text()
    core = core.replace('configs_folder = "/etc/janus"', f'configs_folder = "{folder}"')
    core = core.replace('#disable = "libjanus_voicemail.so,libjanus_recordplay.so"', f'disable = "{plugins}"')
    core = core.replace('#disable = "libjanus_rabbitmq.so"', f'disable = "{transports}"')
    core = core.replace('#disable = "libjanus_jsonlog.so"', 'disable = "libjanus_jsonlog.so"')
    (folder / "janus.jcfg").write_text(core)
    http = (folder / "janus.transport.http.jcfg").read_text()
    http = http.replace("port = 8088", f"port = {HTTP_PORT}")
    http = re.sub(r'^\t#ip = "[^"]*"', '\tip = "127.0.0.1"', http, flags=re.MULTILINE)
    (folder / "janus.transport.http.jcfg").write_text(http)


@contextmanager
def running_janus(general: str = "", configured_id: str = "1") -> Iterator[str]:
    """Debian's Janus in a temporary configuration folder; yields its HTTP API URL once it answers."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        make_folder(folder, general, configured_id)
        janus = subprocess.Popen(
            ["janus", "-F", str(folder)], cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection(("127.0.0.1", HTTP_PORT), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("janus did not start") from None
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{HTTP_PORT}/janus"
        finally:
            janus.terminate()
            janus.wait(10)


async def record(general: str, cases: dict[str, list[dict[str, Any]]], configured_id: str = "1") -> dict[str, Any]:
    with running_janus(general, configured_id) as url:
        async with aiohttp.ClientSession() as http:
            return {case: await run_case(http, url, bodies) for case, bodies in cases.items()}


def janus_version() -> str:
    return subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "janus"], capture_output=True, text=True).stdout.strip()


def write(name: str, recordings: dict[str, Any]) -> None:
    DATA.mkdir(exist_ok=True)
    path = DATA / name
    path.write_text(json.dumps({"janus": janus_version(), "recordings": recordings}, indent=1) + "\n")
    print(f"wrote {path}")


async def main(arguments: list[str]) -> None:
    if arguments == ["simulcast"]:
        write("janus_simulcast.json", {"plain": await record("", SIMULCAST_CASES)})
        return
    if arguments == ["watch"]:
        with running_janus() as url:
            async with aiohttp.ClientSession() as http:
                write("janus_watch.json", {"plain": {case: await run_watch_case(http, url, bodies) for case, bodies in WATCH_CASES.items()}})
        return
    if arguments == ["hostile"]:
        write("janus_hostile.json", {"plain": await record("", HOSTILE_CASES)})
        return
    recordings = {
        "plain": await record("", CASES),
        "admin_key": await record(f'\tadmin_key = "{ADMIN_KEY}"', ADMIN_CASES),
        "string_ids": await record("\tstring_ids = true", STRING_ID_CASES, configured_id='"one"'),
    }
    write("janus_management.json", recordings)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
