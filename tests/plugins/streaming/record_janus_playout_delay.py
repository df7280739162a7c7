"""Record the real Janus's playout-delay behaviour (playout_delay_cases.py) over its HTTP
API: Debian's Janus 1.1.2 run as record_janus.py runs it. Writes
tests/plugins/streaming/data/janus_playout_delay.json.

    .venv/bin/python -m tests.plugins.streaming.record_janus_playout_delay
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

from tests.plugins.streaming import playout_delay_cases
from tests.plugins.streaming.record_janus import DATA, HTTP_PORT, make_folder
from tests.support.janus_client import JanusHttpClient


async def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        make_folder(folder, "", "1")
        janus = subprocess.Popen(["janus", "-F", str(folder)], cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
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
            async with aiohttp.ClientSession() as http:
                client = JanusHttpClient(http, f"http://127.0.0.1:{HTTP_PORT}/janus")
                await client.create()
                recording = await playout_delay_cases.run(client)
                await client.close()
        finally:
            janus.terminate()
            janus.wait(10)
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "janus"], capture_output=True, text=True).stdout
    path = DATA / "janus_playout_delay.json"
    path.write_text(json.dumps({"janus": version.strip(), "recording": recording}, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
