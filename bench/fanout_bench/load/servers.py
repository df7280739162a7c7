"""The servers under test, started from generated configuration and pinned to one core.

:class:`FanoutServer` writes a Janus-style folder for ``fanout serve``;
:class:`JanusServer` copies /etc/janus, writes its own janus.jcfg and
transport and streaming files (only the streaming plugin and the HTTP and
WebSocket transports load; logging at warnings), and runs ``janus -F``. Both
serve one mountpoint (id 1: Opus on :data:`AUDIO_PORT`, VP8 on
:data:`VIDEO_PORT`) on the same ports inside the bench's namespace, under
``taskset -c <cpu>`` (and ``nice``, on a machine whose cores others use
too) with a file-descriptor limit large enough for thousands of viewers.
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Self

from fanout_bench.load.netns import DUMMY_INTERFACE, JANUS_ADDRESS

HTTP_PORT = 8088
WS_PORT = 8188
WEBRTC_PORT = 10000
ADMIN_PORT = 7088
METRICS_PORT = 9100  # fanout's Prometheus endpoint: the engine's counters at each window's ends
ADMIN_SECRET = "bench-admin"  # the Admin API (get_status) answers the overload bench's probes
AUDIO_PORT = 5002
VIDEO_PORT = 5004
MOUNTPOINT = 1

MOUNTPOINT_CONFIG = f"""
bench: {{
	type = "rtp"
	id = {MOUNTPOINT}
	description = "fanout bench load"
	media = (
		{{ type = "audio", mid = "a", port = {AUDIO_PORT}, pt = 111, codec = "opus" }},
		{{ type = "video", mid = "v", port = {VIDEO_PORT}, pt = 96, codec = "vp8" }}
	)
}}
"""

# The same mountpoint with Janus's keyframe buffer on (new viewers get the latest keyframe at once), in
# the legacy keys of Janus 1.1.2's sample janus.plugin.streaming.jcfg, which names `videobufferkf`.
KEYFRAME_BUFFER_MOUNTPOINT_CONFIG = f"""
bench: {{
	type = "rtp"
	id = {MOUNTPOINT}
	description = "fanout bench load, keyframe buffer on"
	audio = true
	audioport = {AUDIO_PORT}
	audiopt = 111
	audiocodec = "opus"
	video = true
	videoport = {VIDEO_PORT}
	videopt = 96
	videocodec = "vp8"
	videobufferkf = true
}}
"""


def raise_own_nofile() -> None:
    """Room for a socket and a connection per viewer in the bench process."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Server:
    name = "server"
    viewer_host = "127.0.0.1"

    nice = 0  # set by the bench: a share of a core used by others too, as close to the whole as it gets

    def __init__(self, folder: Path, cpu: int) -> None:
        self.folder = folder
        self.cpu = cpu
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = folder / "server.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def url(self, transport: str) -> str:
        if transport == "ws":
            return f"ws://127.0.0.1:{WS_PORT}/"
        return f"http://127.0.0.1:{HTTP_PORT}/janus"

    def command(self) -> list[str]:
        raise NotImplementedError

    def write_config(self) -> None:
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> Self:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.write_config()
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # as many as the hard limit allows
        log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the child's life
        self.process = subprocess.Popen(
            [
                "prlimit",
                f"--nofile={nofile}",
                "nice",
                "-n",
                str(self.nice),
                "taskset",
                "-c",
                str(self.cpu),
                *self.command(),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start; its log:\n" + self.log_tail())
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        for port in (HTTP_PORT, WS_PORT):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) != 0:
                    return False
        return True

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def version(self) -> str:
        return ""

    def engine_counters(self) -> dict[str, float]:
        """The server's own counters of its media path so far ({} if it exposes none)."""
        return {}

    def handle_info(self, session_id: int, handle_id: int) -> dict[str, object]:
        """The Admin API's ``handle_info`` about one viewer's handle: its ``info`` ({} if it failed)."""
        body = {"janus": "handle_info", "admin_secret": ADMIN_SECRET, "transaction": f"{random.getrandbits(48):x}"}
        request = urllib.request.Request(
            f"http://127.0.0.1:{ADMIN_PORT}/admin/{session_id}/{handle_id}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(request, timeout=5) as response:
                reply = json.loads(response.read())
        except (OSError, ValueError):
            return {}
        info = reply.get("info") if isinstance(reply, dict) else None
        return info if isinstance(info, dict) else {}

    WRITTEN = ("janus.jcfg", "janus.transport.http.jcfg", "janus.transport.websockets.jcfg", "janus.plugin.streaming.jcfg")

    def settings(self) -> dict[str, str]:
        """The configuration files the bench wrote for this server (the rest are the package's defaults)."""
        return {name: (self.folder / name).read_text() for name in self.WRITTEN if (self.folder / name).exists()}

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class FanoutServer(Server):
    name = "fanout"

    def __init__(
        self,
        folder: Path,
        cpu: int,
        extra: list[str] | None = None,
        *,
        ice_tcp: bool = False,
        ipv6: bool = False,
        transport_cc_everywhere: bool = False,
    ) -> None:
        super().__init__(folder, cpu)
        self.extra = extra or []
        # The streaming plugin's transport_cc = "all": its single-layer mountpoint offers transport-cc, which
        # viewers sending feedback accept and the others decline (so both kinds meet the same configuration).
        self.transport_cc_everywhere = transport_cc_everywhere
        self.ice_tcp = ice_tcp  # nat.ice_tcp: viewers may come over ICE-TCP
        self.ipv6 = ipv6  # media.ipv6 and ::1 advertised: the viewers come over IPv6
        if ipv6:
            self.viewer_host = "::1"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "fanout",
            "serve",
            "--config",
            str(self.folder),
            "--log-level",
            "warning",
        ]

    def write_config(self) -> None:
        own = "\n".join(f"\t{line}" for line in self.extra)
        (self.folder / "janus.jcfg").write_text(
            f"""general: {{
	session_timeout = 60
	admin_secret = "{ADMIN_SECRET}"
}}
nat: {{
	nat_1_1_mapping = "{'127.0.0.1,::1' if self.ipv6 else '127.0.0.1'}"
	ice_tcp = {'true' if self.ice_tcp else 'false'}
}}
media: {{
	ipv6 = {'true' if self.ipv6 else 'false'}
}}
fanout: {{
	webrtc_port = {WEBRTC_PORT}
	webrtc_interface = "{'::' if self.ipv6 else '127.0.0.1'}"
	max_connections_per_address = 0	# every load client connects from 127.0.0.1
	metrics_port = {METRICS_PORT}
{own}
}}
"""
        )
        (self.folder / "janus.transport.http.jcfg").write_text(
            f'general: {{\n\thttp = true\n\tport = {HTTP_PORT}\n\tbase_path = "/janus"\n}}\n'
            f'admin: {{\n\tadmin_http = true\n\tadmin_port = {ADMIN_PORT}\n\tadmin_base_path = "/admin"\n}}\n'
        )
        (self.folder / "janus.transport.websockets.jcfg").write_text(
            f"general: {{\n\tws = true\n\tws_port = {WS_PORT}\n}}\n"
        )
        general = '\ttransport_cc = "all"\n' if self.transport_cc_everywhere else ""
        (self.folder / "janus.plugin.streaming.jcfg").write_text("general: {\n" + general + "}\n" + MOUNTPOINT_CONFIG)

    # Prometheus metric -> the bench's name, summed over labels (workers, mountpoints).
    ENGINE_METRICS = {
        "fanout_worker_busy_seconds_total": "worker_busy_s",
        "fanout_worker_source_packets_total": "worker_source_packets",
        "fanout_worker_messages_total": "worker_messages",
        "fanout_worker_overruns_total": "worker_overruns",
        "fanout_dropped_late_packets_total": "dropped_late",
        "fanout_dropped_packets_total": "dropped",
        "fanout_send_errors_total": "send_errors",
        "fanout_delivered_packets_total": "delivered_packets",
        "fanout_source_packets_total": "source_packets",
    }

    def engine_counters(self) -> dict[str, float]:
        """The engine's counters from fanout's /metrics: worker busy time, late drops, ring overruns, sends."""
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, whatever the environment says
            with opener.open(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return {}
        counters: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            name, _, rest = line.partition("{") if "{" in line.split(" ", 1)[0] else line.partition(" ")
            key = self.ENGINE_METRICS.get(name)
            if key is not None:
                counters[key] = counters.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        return counters

    def version(self) -> str:
        """The package's version; the commit and engine binary are in the results' meta."""
        from importlib.metadata import version

        return f"fanout {version('fanout')}"

    def _ready(self) -> bool:
        try:
            return "fanout: ready" in self.log_path.read_text(errors="replace")
        except OSError:
            return False


class JanusServer(Server):
    name = "janus"
    viewer_host = JANUS_ADDRESS
    PLUGINS_KEPT = ("libjanus_streaming.so",)
    TRANSPORTS_KEPT = ("libjanus_http.so", "libjanus_websockets.so")
    LIB = Path("/usr/lib/x86_64-linux-gnu/janus")

    def __init__(self, folder: Path, cpu: int, event_loops: int = 1, keyframe_buffer: bool = False) -> None:
        super().__init__(folder, cpu)
        self.event_loops = event_loops
        self.keyframe_buffer = keyframe_buffer

    def command(self) -> list[str]:
        return ["janus", "-F", str(self.folder), "-C", str(self.folder / "janus.jcfg")]

    def _disabled(self, kind: str, kept: tuple[str, ...]) -> str:
        names = sorted(p.name for p in (self.LIB / kind).glob("*.so") if p.name not in kept)
        return ",".join(names)

    def write_config(self) -> None:
        for path in Path("/etc/janus").glob("*.jcfg"):
            shutil.copy(path, self.folder / path.name)
        loops = f"\tevent_loops = {self.event_loops}\n" if self.event_loops else ""
        (self.folder / "janus.jcfg").write_text(
            f"""general: {{
	configs_folder = "{self.folder}"
	plugins_folder = "{self.LIB}/plugins"
	transports_folder = "{self.LIB}/transports"
	events_folder = "{self.LIB}/events"
	loggers_folder = "{self.LIB}/loggers"
	debug_level = 3
	session_timeout = 60
	admin_secret = "{ADMIN_SECRET}"
{loops}}}
certificates: {{
}}
media: {{
}}
nat: {{
	nice_debug = false
	ice_enforce_list = "{DUMMY_INTERFACE}"
}}
plugins: {{
	disable = "{self._disabled("plugins", self.PLUGINS_KEPT)}"
}}
transports: {{
	disable = "{self._disabled("transports", self.TRANSPORTS_KEPT)}"
}}
loggers: {{
	disable = "{self._disabled("loggers", ())}"
}}
events: {{
	broadcast = false
	disable = "{self._disabled("events", ())}"
}}
"""
        )
        (self.folder / "janus.transport.http.jcfg").write_text(
            f"""general: {{
	json = "compact"
	base_path = "/janus"
	http = true
	port = {HTTP_PORT}
	ip = "127.0.0.1"
	https = false
}}
admin: {{
	admin_base_path = "/admin"
	admin_http = true
	admin_port = {ADMIN_PORT}
	admin_ip = "127.0.0.1"
	admin_https = false
}}
"""
        )
        (self.folder / "janus.transport.websockets.jcfg").write_text(
            f"""general: {{
	json = "compact"
	ws = true
	ws_port = {WS_PORT}
	ws_ip = "127.0.0.1"
	wss = false
}}
admin: {{
	admin_ws = false
}}
"""
        )
        mountpoint = KEYFRAME_BUFFER_MOUNTPOINT_CONFIG if self.keyframe_buffer else MOUNTPOINT_CONFIG
        (self.folder / "janus.plugin.streaming.jcfg").write_text("general: {\n}\n" + mountpoint)

    def version(self) -> str:
        return janus_version()


def janus_version() -> str:
    """e.g. "Janus version: 1102 (1.1.2); Debian package janus 1.1.2-1" (``--help`` prints the version)."""
    result = subprocess.run(["janus", "--help"], capture_output=True, text=True, check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Janus version")]
    package = subprocess.run(["dpkg-query", "-W", "janus"], capture_output=True, text=True, check=False)
    found = package.stdout.split()
    return "; ".join(lines[:1] + ([f"Debian package {' '.join(found)}"] if found else []))
