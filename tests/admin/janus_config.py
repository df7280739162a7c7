"""A folder of Janus configuration for recording Debian's Janus 1.1.2 with its Admin API on.

A copy of /etc/janus with only the Streaming plugin (one RTP mountpoint), the HTTP and
WebSocket transports (Janus API and Admin API on their own loopback ports), no event
handlers, and the secrets each recording asks for.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

HTTP_PORT = 18092
WS_PORT = 18192
ADMIN_PORT = 17092
ADMIN_WS_PORT = 17192
AUDIO_PORT = 36002
VIDEO_PORT = 36004
KEPT = {"libjanus_streaming.so", "libjanus_http.so", "libjanus_websockets.so"}
STREAMING_CONFIG = f"""general: {{
}}
rtp-sample: {{
	type = "rtp"
	id = 1
	description = "Opus/VP8 live stream"
	audio = true
	audioport = {AUDIO_PORT}
	audiopt = 111
	audiocodec = "opus"
	video = true
	videoport = {VIDEO_PORT}
	videopt = 100
	videocodec = "vp8"
}}
"""


def _disabled(folder: str) -> str:
    return ",".join(sorted(p.name for p in Path(folder).glob("libjanus_*.so") if p.name not in KEPT))


def _set(text: str, key: str, value: str) -> str:
    """Set ``key = value`` on its (possibly commented) line of a stock .jcfg."""
    pattern = re.compile(rf"^(\s*)#?{re.escape(key)} = [^\t\n#]*", re.MULTILINE)
    replaced, count = pattern.subn(lambda m: f"{m.group(1)}{key} = {value}", text, count=1)
    if count != 1:
        raise ValueError(f"no line for {key}")
    return replaced


def make_config(
    folder: Path,
    *,
    admin_secret: str | None,
    api_secret: str | None = None,
    token_auth: bool = False,
    log_file: bool = False,
    candidates_timeout: int | None = None,
) -> None:
    """``log_file``: log to <folder>/janus.log (with timestamps), not to stdout."""
    folder.mkdir(parents=True)
    for name in ("janus.jcfg", "janus.transport.http.jcfg", "janus.transport.websockets.jcfg"):
        shutil.copy(f"/etc/janus/{name}", folder / name)
    (folder / "janus.plugin.streaming.jcfg").write_text(STREAMING_CONFIG)
    core = (folder / "janus.jcfg").read_text()
    core = core.replace('configs_folder = "/etc/janus"', f'configs_folder = "{folder}"')
    core = core.replace('#disable = "libjanus_voicemail.so,libjanus_recordplay.so"', f'disable = "{_disabled("/usr/lib/x86_64-linux-gnu/janus/plugins")}"')
    core = core.replace('#disable = "libjanus_rabbitmq.so"', f'disable = "{_disabled("/usr/lib/x86_64-linux-gnu/janus/transports")}"')
    core = core.replace('#disable = "libjanus_jsonlog.so"', 'disable = "libjanus_jsonlog.so"')
    if admin_secret is None:
        core = core.replace('\tadmin_secret = "janusoverlord"', '\t#admin_secret = "janusoverlord"')
    else:
        core = core.replace('admin_secret = "janusoverlord"', f'admin_secret = "{admin_secret}"')
    if api_secret is not None:
        core = core.replace('#api_secret = "janusrocks"', f'api_secret = "{api_secret}"')
    if token_auth:
        core = core.replace("#token_auth = true", "token_auth = true")
    if candidates_timeout is not None:
        core = _set(core, "candidates_timeout", str(candidates_timeout))
    if log_file:
        core = _set(core, "log_to_file", f'"{folder}/janus.log"')
        core = _set(core, "log_to_stdout", "false")
        core = _set(core, "debug_timestamps", "true")
    (folder / "janus.jcfg").write_text(core)
    http = (folder / "janus.transport.http.jcfg").read_text()
    http = _set(http, "port", str(HTTP_PORT))
    http = _set(http, "ip", '"127.0.0.1"')
    http = _set(http, "admin_http", "true")
    http = _set(http, "admin_port", str(ADMIN_PORT))
    http = _set(http, "admin_ip", '"127.0.0.1"')
    (folder / "janus.transport.http.jcfg").write_text(http)
    ws = (folder / "janus.transport.websockets.jcfg").read_text()
    ws = _set(ws, "ws_port", str(WS_PORT))
    ws = _set(ws, "ws_ip", '"127.0.0.1"')
    ws = _set(ws, "admin_ws", "true")
    ws = _set(ws, "admin_ws_port", str(ADMIN_WS_PORT))
    ws = _set(ws, "admin_ws_ip", '"127.0.0.1"')
    (folder / "janus.transport.websockets.jcfg").write_text(ws)


class Janus:
    """``janus -F <folder>``, run from a temporary working folder (core dumps land there)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        self._cwd = tempfile.TemporaryDirectory()
        self.log = Path(self._cwd.name) / "janus.log"

    def __enter__(self) -> Janus:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(["janus", "-F", str(self.folder)], stdout=log, stderr=subprocess.STDOUT, cwd=self._cwd.name)
        deadline = time.monotonic() + 15
        for port in (HTTP_PORT, WS_PORT, ADMIN_PORT, ADMIN_WS_PORT):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise RuntimeError("janus did not start:\n" + self.log.read_text(errors="replace")) from None
                    time.sleep(0.1)
        return self

    def __exit__(self, *_: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(10)
        self._cwd.cleanup()
