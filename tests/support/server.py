"""Run a real fanout server (``python -m fanout serve``) for a test."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.netns import NetworkNamespace
from tests.support.ports import free_ports

READY_LINE = "fanout: ready"
# Tests share a loaded machine: a packet held up by a scheduling hiccup is still sent. Shedding
# late packets (fanout.max_send_delay_ms, 100 ms by default) is tested in tests/engine and
# measured by `fanout bench load --overload`.
TEST_MAX_SEND_DELAY_MS = 5000

DEMO_MOUNTPOINT = """
fanout-demo: {
	type = "rtp"
	id = 1
	description = "test pattern"
	testsource = true
	media = (
		{ type = "audio", mid = "a", port = 0, pt = 111, codec = "opus" },
		{ type = "video", mid = "v", port = 0, pt = 96, codec = "vp8" }
	)
}
"""


def rtp_mountpoint(mountpoint_id: int, audio_port: int, video_port: int, video_codec: str = "vp8") -> str:
    """A legacy-keys mountpoint fed from outside (ffmpeg, GStreamer, a test)."""
    return f"""
rtp-{mountpoint_id}: {{
	type = "rtp"
	id = {mountpoint_id}
	description = "rtp input {mountpoint_id}"
	audio = true
	audioport = {audio_port}
	audiopt = 111
	audiocodec = "opus"
	video = true
	videoport = {video_port}
	videopt = 96
	videocodec = "{video_codec}"
}}
"""


@dataclass(frozen=True)
class ServerAddresses:
    http_port: int
    ws_port: int
    webrtc_port: int

    @property
    def janus_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/janus"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/"

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"


def write_config(
    folder: Path,
    mountpoints: str,
    *,
    session_timeout: int = 60,
    nat_1_1_mapping: str | None = "127.0.0.1",
    ice_consent_timeout: float | None = None,
) -> ServerAddresses:
    """A Janus-style configuration folder for a fanout on loopback, on free ports.

    ``nat_1_1_mapping`` None leaves fanout to detect the addresses to advertise;
    ``ice_consent_timeout`` None leaves fanout.ice_consent_timeout at its default (30 s)."""
    http_port, ws_port, webrtc_port = free_ports(3)
    folder.mkdir(parents=True, exist_ok=True)
    nat = f'nat: {{\n\tnat_1_1_mapping = "{nat_1_1_mapping}"\n}}\n' if nat_1_1_mapping else ""
    consent = f"\tice_consent_timeout = {ice_consent_timeout}\n" if ice_consent_timeout is not None else ""
    (folder / "janus.jcfg").write_text(
        f"""general: {{
	session_timeout = {session_timeout}
}}
{nat}fanout: {{
	webrtc_port = {webrtc_port}
	webrtc_interface = "127.0.0.1"
	max_send_delay_ms = {TEST_MAX_SEND_DELAY_MS}
{consent}}}
"""
    )
    (folder / "janus.transport.http.jcfg").write_text(
        f"""general: {{
	http = true
	port = {http_port}
	base_path = "/janus"
}}
cors: {{
	allow_origin = "*"
}}
"""
    )
    (folder / "janus.transport.websockets.jcfg").write_text(
        f"""general: {{
	ws = true
	ws_port = {ws_port}
}}
"""
    )
    (folder / "janus.plugin.streaming.jcfg").write_text("general: {\n}\n" + mountpoints)
    return ServerAddresses(http_port, ws_port, webrtc_port)


class FanoutProcess:
    """``fanout serve --config <folder>`` (the embedded default if None), optionally inside a network namespace."""

    def __init__(self, config_folder: Path | None, namespace: NetworkNamespace | None = None) -> None:
        command = [sys.executable, "-m", "fanout", "serve"]
        if config_folder is not None:
            command += ["--config", str(config_folder)]
        self.command = namespace.command(*command) if namespace else command
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 60.0) -> FanoutProcess:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        threading.Thread(target=self._read_output, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fanout did not start:\n" + self.output)
        return self

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if READY_LINE in line:
                self._ready.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> FanoutProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
