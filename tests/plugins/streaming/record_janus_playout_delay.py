"""Record the real Janus's playout-delay behaviour (playout_delay_cases.py) over its HTTP
API: Debian's Janus 1.1.2 run as record_janus.py runs it. Writes
tests/plugins/streaming/data/janus_playout_delay.json.

    .venv/bin/python -m tests.plugins.streaming.record_janus_playout_delay
"""

from __future__ import annotations

import asyncio
import json

from tests.plugins.streaming import playout_delay_cases
from tests.plugins.streaming.record_janus import DATA, janus_version, running_janus
from tests.support.janus_client import janus_session


async def main() -> None:
    with running_janus() as url:
        async with janus_session(url) as client:
            recording = await playout_delay_cases.run(client)
    path = DATA / "janus_playout_delay.json"
    path.write_text(json.dumps({"janus": janus_version(), "recording": recording}, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
