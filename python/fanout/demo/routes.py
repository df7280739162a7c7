"""The demo page's routes, served by the HTTP transport next to the Janus API.

``/`` is the page, ``/demo.js`` its script, ``/config.js`` tells the script
where the Janus API is (HTTP base path, WebSocket port) and which STUN/TURN
servers to use (TURN credentials minted afresh for each load of the page). ``/janus.js`` and
``/adapter.js`` are the real janus.js and webrtc-adapter from Debian's
libjs-janus-gateway and libjs-webrtc-adapter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from fanout.config.settings import IceServerSettings
from fanout.webrtc.ice_servers import ice_servers

PAGE_FOLDER = Path(__file__).parent / "page"
JANUS_JS = Path("/usr/share/javascript/janus-gateway/janus.js")
ADAPTER_JS = Path("/usr/share/javascript/webrtc-adapter/adapter.js")
Handler = Callable[[web.Request], Awaitable[web.Response]]
MISSING_SCRIPT_HINT = "not installed: run ./scripts/setup (Debian packages libjs-janus-gateway, libjs-webrtc-adapter)"


def demo_routes(
    janus_base_path: str,
    websocket_port: int | None,
    ice_server_settings: IceServerSettings | None = None,
    *,
    clustered: bool = False,
) -> list[web.RouteDef]:
    """The demo page's routes for a Janus API at ``janus_base_path`` (and WebSocket port, if any);
    in a cluster, the page asks placement which node serves the mountpoint it watches."""
    server_settings = ice_server_settings or IceServerSettings()

    async def config_js(_: web.Request) -> web.Response:
        page_config = {
            "janusPath": janus_base_path,
            "websocketPort": websocket_port,
            "clustered": clustered,
            "iceServers": [server.as_rtc_ice_server() for server in ice_servers(server_settings, time.time())],
        }
        config_script = f"window.fanoutDemoConfig = {json.dumps(page_config)};\n"
        return web.Response(text=config_script, content_type="application/javascript", headers={"Cache-Control": "no-store"})

    return [
        web.get("/", _file(PAGE_FOLDER / "index.html", "text/html")),
        web.get("/demo.js", _file(PAGE_FOLDER / "demo.js", "application/javascript")),
        web.get("/demo.css", _file(PAGE_FOLDER / "demo.css", "text/css")),
        web.get("/config.js", config_js),
        web.get("/janus.js", _file(JANUS_JS, "application/javascript")),
        web.get("/adapter.js", _file(ADAPTER_JS, "application/javascript")),
        web.get("/favicon.ico", _no_content),
    ]


async def _no_content(_: web.Request) -> web.Response:
    return web.Response(status=204)


def _file(path: Path, content_type: str) -> Handler:
    async def serve(_: web.Request) -> web.Response:
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            return web.Response(status=404, text=f"{path}: {MISSING_SCRIPT_HINT}\n")
        return web.Response(body=body, content_type=content_type, headers={"Cache-Control": "no-cache"})

    return serve
