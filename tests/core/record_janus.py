"""Record the real Janus's replies to the scenarios in janus_scenarios.py and lifetime_cases.py.

Runs Debian's Janus 1.1.2 (`janus -F <folder>`) with a copy of /etc/janus: only the
Streaming plugin (one RTP mountpoint, id 1) and the HTTP and WebSocket transports,
on ports 18090/18190, admin off. A second run adds api_secret and enforced CORS.
Writes tests/core/data/janus_*.json; the tests compare fanout's replies to them.

    .venv/bin/python -m tests.core.record_janus [--slow]

``--slow`` also records what takes Janus's own time: the 30 s long-poll keepalive
and the 60 s session timeout.

The RTP ports of the mountpoint (35002, 35004) must be free: if they are taken, Janus
starts without mountpoint 1, every ``watch`` gets error 455 ("No such mountpoint") and
the recorder stops rather than write that down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.core import lifetime_cases
from tests.core.janus_scenarios import (
    API_SCENARIOS,
    BAD_JSON_BODIES,
    WEBSOCKET_BODIES,
    HttpApiClient,
    WebSocketApiClient,
    http_cases,
    run_api_scenario,
    run_http_case,
    run_websocket_body,
    secured_http_cases,
    websocket,
)

DATA = Path(__file__).parent / "data"
HTTP_PORT = 18090
WS_PORT = 18190
ORIGIN = f"http://127.0.0.1:{HTTP_PORT}"
BASE_URL = f"{ORIGIN}/janus"
WS_URL = f"ws://127.0.0.1:{WS_PORT}/"
PLUGINS_KEPT = {"libjanus_streaming.so"}
TRANSPORTS_KEPT = {"libjanus_http.so", "libjanus_websockets.so"}
STREAMING_CONFIG = """general: {
}
rtp-sample: {
	type = "rtp"
	id = 1
	description = "Opus/VP8 live stream"
	audio = true
	audioport = 35002
	audiopt = 111
	audiocodec = "opus"
	video = true
	videoport = 35004
	videopt = 100
	videocodec = "vp8"
}
"""


def _disable_list(folder: str, kept: set[str]) -> str:
    names = sorted(p.name for p in Path(folder).glob("libjanus_*.so") if p.name not in kept)
    return ",".join(names)


def make_config(folder: Path, *, secured: bool) -> None:
    folder.mkdir(parents=True)
    for name in ("janus.jcfg", "janus.transport.http.jcfg", "janus.transport.websockets.jcfg"):
        shutil.copy(f"/etc/janus/{name}", folder / name)
    (folder / "janus.plugin.streaming.jcfg").write_text(STREAMING_CONFIG)
    core = (folder / "janus.jcfg").read_text()
    core = core.replace('configs_folder = "/etc/janus"', f'configs_folder = "{folder}"')
    plugins = _disable_list("/usr/lib/x86_64-linux-gnu/janus/plugins", PLUGINS_KEPT)
    transports = _disable_list("/usr/lib/x86_64-linux-gnu/janus/transports", TRANSPORTS_KEPT)
    core = core.replace('#disable = "libjanus_voicemail.so,libjanus_recordplay.so"', f'disable = "{plugins}"')
    core = core.replace('#disable = "libjanus_rabbitmq.so"', f'disable = "{transports}"')
    core = core.replace('#disable = "libjanus_jsonlog.so"', 'disable = "libjanus_jsonlog.so"')
    core = core.replace("#session_timeout = 60", "session_timeout = 60")
    if secured:
        core = core.replace('#api_secret = "janusrocks"', 'api_secret = "s3cret"')
    (folder / "janus.jcfg").write_text(core)
    for name, port_key, ip_key in (
        ("janus.transport.http.jcfg", "port = 8088", "#ip = "),
        ("janus.transport.websockets.jcfg", "ws_port = 8188", "#ws_ip = "),
    ):
        text = (folder / name).read_text()
        port = HTTP_PORT if "http" in name else WS_PORT
        text = text.replace(port_key, port_key.split("=")[0] + f"= {port}")
        text = re.sub(rf"^\t{re.escape(ip_key)}\"[^\"]*\"", "\t" + ip_key[1:] + '"127.0.0.1"', text, flags=re.MULTILINE)
        if secured:
            text = text.replace('#allow_origin = "http://foo.example"', 'allow_origin = "http://foo.example"')
            text = text.replace("#enforce_cors = true", "enforce_cors = true")
        (folder / name).write_text(text)


class Janus:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Janus:
        self.process = subprocess.Popen(["janus", "-F", str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        for port in (HTTP_PORT, WS_PORT):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("janus did not start") from None
                    time.sleep(0.1)
        return self

    def __exit__(self, *_: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(10)


def janus_version() -> str:
    output = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "janus"], capture_output=True, text=True)
    return output.stdout.strip()


def write(name: str, recordings: Any) -> None:
    if "No such mountpoint" in json.dumps(recordings):
        raise RuntimeError("Janus ran without mountpoint 1 (are its RTP ports 35002, 35004 taken?)")
    path = DATA / name
    path.write_text(json.dumps({"janus": janus_version(), "recordings": recordings}, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


async def make_session_and_handle(http: aiohttp.ClientSession, secret: str | None = None, origin: str | None = None) -> dict[str, Any]:
    headers = {"Origin": origin} if origin else {}
    extra = {"apisecret": secret} if secret else {}
    async with http.post(BASE_URL, data=json.dumps({"janus": "create", "transaction": "c", **extra}), headers=headers) as response:
        session_id = (await response.json(content_type=None))["data"]["id"]
    body = {"janus": "attach", "transaction": "a", "plugin": "janus.plugin.streaming", **extra}
    async with http.post(f"{BASE_URL}/{session_id}", data=json.dumps(body), headers=headers) as response:
        handle_id = (await response.json(content_type=None))["data"]["id"]
    return {"session": session_id, "handle": handle_id}


RACY = '"reason": "Detach"'
ATTEMPTS = 5


async def _settled(name: str, run: Callable[[], Awaitable[list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """A scenario's recording without Janus's race: detaching a handle whose answer it took,
    Janus sometimes sends ``hangup`` ("Detach") before ``detached``, mostly not. Run again
    until it does not."""
    for _ in range(ATTEMPTS):
        results = await run()
        if RACY not in json.dumps(results):
            return results
        print(f"{name}: Janus sent hangup (Detach) this time; again")
    raise RuntimeError(f"{name}: Janus sent hangup (Detach) {ATTEMPTS} times")


async def record_default(slow: bool) -> None:
    async with aiohttp.ClientSession() as http:
        api_http = {}
        api_websocket = {}
        for name, steps in API_SCENARIOS.items():

            async def over_http(steps: list[dict[str, Any]] = steps) -> list[dict[str, Any]]:
                return await run_api_scenario(HttpApiClient(http, BASE_URL), steps, stray_window=2.0)

            api_http[name] = await _settled(name, over_http)

            async def over_websocket(steps: list[dict[str, Any]] = steps) -> list[dict[str, Any]]:
                async with websocket(WS_URL) as socket:
                    return await run_api_scenario(WebSocketApiClient(socket), steps, stray_window=2.0)

            api_websocket[name] = await _settled(name, over_websocket)
        write("janus_api_http.json", api_http)
        write("janus_api_websocket.json", api_websocket)

        variables = await make_session_and_handle(http)
        raw = {name: await run_http_case(http, ORIGIN, case, variables) for name, case in http_cases().items()}
        write("janus_http_raw.json", raw)

        websocket_raw: dict[str, Any] = {}
        for body in BAD_JSON_BODIES + WEBSOCKET_BODIES:
            websocket_raw[body] = await run_websocket_body(WS_URL, body)
        for label, protocols in (("no_subprotocol", ()), ("other_subprotocol", ("other",)), ("admin_subprotocol", ("janus-admin-protocol",))):
            try:
                async with websocket(WS_URL, protocols=protocols) as socket:
                    websocket_raw[label] = {"accepted": socket.protocol}
            except (aiohttp.ClientError, aiohttp.WSServerHandshakeError) as error:
                websocket_raw[label] = {"refused": type(error).__name__}
        write("janus_websocket_raw.json", websocket_raw)

        lifetime: dict[str, Any] = {"closed_websocket": await lifetime_cases.closed_websocket(http, BASE_URL, WS_URL)}
        if slow:
            long_poll_task = asyncio.create_task(lifetime_cases.long_poll(http, BASE_URL, keepalive_wait=30))
            lifetime["session_timeout"] = await lifetime_cases.session_timeout(WS_URL, wait=66)
            lifetime["long_poll"] = await long_poll_task
        else:
            previous = json.loads((DATA / "janus_lifetime.json").read_text())["recordings"]
            lifetime.update({key: previous[key] for key in ("session_timeout", "long_poll") if key in previous})
        write("janus_lifetime.json", lifetime)


async def record_secured() -> None:
    async with aiohttp.ClientSession() as http:
        variables = await make_session_and_handle(http, secret="s3cret", origin="http://foo.example")
        raw = {name: await run_http_case(http, ORIGIN, case, variables) for name, case in secured_http_cases().items()}
        origins: dict[str, Any] = {}
        for label, origin in (("no_origin", None), ("right_origin", "http://foo.example"), ("wrong_origin", "http://other.example")):
            try:
                async with websocket(WS_URL, headers={"Origin": origin} if origin else {}) as socket:
                    await socket.send_str(json.dumps({"janus": "create", "transaction": "c"}))
                    origins[label] = {"accepted": json.loads((await socket.receive(timeout=5)).data)}
            except (aiohttp.ClientError, aiohttp.WSServerHandshakeError) as error:
                origins[label] = {"refused": type(error).__name__}
        write("janus_secured.json", {"http": raw, "websocket": origins})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slow", action="store_true", help="also record the 30 s keepalive and the 60 s session timeout")
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as temporary:
        default = Path(temporary) / "default"
        make_config(default, secured=False)
        with Janus(default):
            asyncio.run(record_default(args.slow))
        secured = Path(temporary) / "secured"
        make_config(secured, secured=True)
        with Janus(secured):
            asyncio.run(record_secured())


if __name__ == "__main__":
    main()
