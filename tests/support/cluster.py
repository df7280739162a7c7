"""A real cluster for tests: a redis-server on a free loopback port and fanout nodes, each on its own
127.0.0.x address, talked to over plain HTTP (Janus API, Admin API, placement, metrics)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.support.netns import NetworkNamespace
from tests.support.ports import free_ports
from tests.support.server import TEST_MAX_SEND_DELAY_MS, FanoutProcess

SECRET = "a-cluster-secret-for-tests"
ADMIN_SECRET = "admin-for-tests"
HEARTBEAT_INTERVAL = 0.5
NODE_TTL = 1.5
T = TypeVar("T")


class RedisServer:
    """``redis-server`` on 127.0.0.1:<port>, no persistence; stopped and started again on the same port.
    In ``namespace``, if given."""

    def __init__(self, port: int | None = None, namespace: NetworkNamespace | None = None) -> None:
        self.port = port or free_ports(1)[0]
        self.namespace = namespace
        self.process: subprocess.Popen[bytes] | None = None

    def _command(self, *argv: str) -> list[str]:
        return self.namespace.command(*argv) if self.namespace is not None else list(argv)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        command = self._command("redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, timeout=10, what=f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.namespace is not None:
            ping = subprocess.run(self._command("redis-cli", "-p", str(self.port), "PING"), capture_output=True, text=True)
            return ping.stdout.strip() == "PONG"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def keys(self) -> list[str]:
        output = subprocess.run(self._command("redis-cli", "-p", str(self.port), "--raw", "KEYS", "*"), capture_output=True, text=True, check=True)
        return sorted(line for line in output.stdout.splitlines() if line)

    def set(self, key: str, value: str) -> None:
        subprocess.run(self._command("redis-cli", "-p", str(self.port), "SET", key, value, "PX", "60000"), capture_output=True, check=True)


@dataclass(frozen=True)
class NodePorts:
    address: str
    http: int
    ws: int
    webrtc: int
    admin: int
    metrics: int

    @property
    def janus_url(self) -> str:
        return f"http://{self.address}:{self.http}/janus"

    @property
    def public_url(self) -> str:
        return f"http://{self.address}:{self.http}"


def write_node_config(
    folder: Path,
    *,
    name: str,
    address: str,
    redis_url: str,
    mountpoints: str = "",
    secret: str = SECRET,
    accept_viewers: bool = True,
    max_load: float = 0.8,
    heartbeat_interval: float = HEARTBEAT_INTERVAL,
    node_ttl: float = NODE_TTL,
) -> NodePorts:
    http, ws, webrtc, admin, metrics = free_ports(5)
    ports = NodePorts(address, http, ws, webrtc, admin, metrics)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "janus.jcfg").write_text(
        f"""general: {{
	admin_secret = "{ADMIN_SECRET}"
}}
nat: {{
	nat_1_1_mapping = "{address}"
}}
fanout: {{
	webrtc_port = {webrtc}
	webrtc_interface = "{address}"
	metrics_port = {metrics}
	metrics_interface = "{address}"
	max_send_delay_ms = {TEST_MAX_SEND_DELAY_MS}
}}
cluster: {{
	redis_url = "{redis_url}"
	secret = "{secret}"
	node_name = "{name}"
	relay_address = "{address}"
	websocket_url = "ws://{address}:{ws}"
	accept_viewers = {"true" if accept_viewers else "false"}
	max_load = {max_load}
	heartbeat_interval = {heartbeat_interval}
	node_ttl = {node_ttl}
}}
"""
    )
    (folder / "janus.transport.http.jcfg").write_text(
        f"""general: {{
	http = true
	ip = "{address}"
	port = {http}
	base_path = "/janus"
}}
admin: {{
	admin_http = true
	admin_ip = "{address}"
	admin_port = {admin}
}}
"""
    )
    (folder / "janus.transport.websockets.jcfg").write_text(
        f"""general: {{
	ws = true
	ws_ip = "{address}"
	ws_port = {ws}
}}
"""
    )
    (folder / "janus.plugin.streaming.jcfg").write_text("general: {\n}\n" + mountpoints)
    return ports


class ClusterNodeProcess(FanoutProcess):
    def __init__(self, folder: Path, ports: NodePorts, name: str, namespace: NetworkNamespace | None = None) -> None:
        super().__init__(folder, namespace)
        self.folder = folder
        self.ports = ports
        self.name = name

    def start(self, timeout: float = 60.0) -> ClusterNodeProcess:
        super().start(timeout)
        return self

    def kill(self) -> None:
        """SIGKILL: no goodbye to Redis. Its children (the built-in test source) go too."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        self.process.kill()
        self.process.wait()
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGKILL)

    def cluster_nodes(self) -> dict[str, Any]:
        reply = post_json(
            f"http://{self.ports.address}:{self.ports.admin}/admin",
            {"janus": "list_cluster_nodes", "transaction": "t", "admin_secret": ADMIN_SECRET},
        )
        assert reply["janus"] == "success", reply
        return reply

    def node_names(self) -> list[str]:
        return sorted(node["name"] for node in self.cluster_nodes()["nodes"])

    def placement(self, mountpoint: str) -> tuple[int, dict[str, Any]]:
        return get_json(f"{self.ports.public_url}/cluster/placement?mountpoint={mountpoint}")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.ports.address}:{self.ports.metrics}/metrics", timeout=5) as response:
            return response.read().decode()

    def streaming(self, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous Streaming plugin request (list, info) in a session of its own."""
        url = self.ports.janus_url
        session = post_json(url, {"janus": "create", "transaction": "c"})["data"]["id"]
        handle = post_json(f"{url}/{session}", {"janus": "attach", "plugin": "janus.plugin.streaming", "transaction": "a"})["data"]["id"]
        reply = post_json(f"{url}/{session}/{handle}", {"janus": "message", "body": body, "transaction": "m"})
        post_json(f"{url}/{session}", {"janus": "destroy", "transaction": "d"})
        return reply["plugindata"]["data"]  # type: ignore[no-any-return]


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_until(condition: Callable[[], T], *, timeout: float, what: str) -> T:
    """``condition()``'s first truthy value; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (OSError, AssertionError, KeyError) as error:
            last_error = error
        time.sleep(0.05)
    raise AssertionError(f"not seen within {timeout} s: {what}" + (f" (last error: {last_error})" if last_error else ""))
