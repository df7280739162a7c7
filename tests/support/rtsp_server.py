"""Start GStreamer's RTSP server (tests/support/gst_rtsp_server.py) for a test."""

from __future__ import annotations

import select
import subprocess
import time
from pathlib import Path

from tests.support.ports import free_ports

SCRIPT = Path(__file__).with_name("gst_rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # it has python3-gi; the virtualenv does not
READY_LINE = "rtsp-server: ready"


class RtspServerProcess:
    """A live test pattern at ``url``; stop() and start() again to restart it on the same port."""

    def __init__(
        self,
        codec: str = "vp8",
        *,
        audio: bool = False,
        user: str | None = None,
        password: str | None = None,
        digest: bool = False,
        transport: str = "udp",
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """``transport``: the lower transports it takes ("udp", "tcp", "both"); ``tls``: a
        certificate and key to serve rtsps:// with."""
        (self.port,) = free_ports(1)
        self.scheme = "rtsps" if tls else "rtsp"
        self.command = [SYSTEM_PYTHON, str(SCRIPT), "--port", str(self.port), "--codec", codec, "--transport", transport]
        if tls is not None:
            self.command += ["--tls", str(tls[0]), str(tls[1])]
        if audio:
            self.command.append("--audio")
        if user is not None:
            self.command += ["--user", user, "--password", password or ""] + (["--digest"] if digest else [])
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/stream"

    def start(self, timeout: float = 20.0) -> RtspServerProcess:
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.process.stdout.readline()
        if READY_LINE not in line or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"the RTSP server did not start: {line!r}")
        return self

    def wait_for_line(self, text: str, timeout: float = 5.0) -> None:
        """Waits until the server prints a line containing ``text`` (TimeoutError if it does not)."""
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        ready, _, _ = select.select([stdout], [], [], timeout)
        deadline = time.monotonic() + timeout
        while ready and time.monotonic() < deadline:
            line = stdout.readline()
            if text in line:
                return
            if not line:
                break
            ready, _, _ = select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))
        raise TimeoutError(f"the RTSP server did not say {text!r}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> RtspServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
