"""A real ``fanout serve`` with its Admin API on (HTTP and WebSocket), configured as the recorded Janus was."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_ports
from tests.support.server import ServerAddresses, rtp_mountpoint, write_config


@dataclass(frozen=True)
class AdminAddresses:
    server: ServerAddresses
    admin_port: int
    admin_ws_port: int

    @property
    def urls(self) -> dict[str, str]:
        return {
            "janus_url": self.server.janus_url,
            "admin_url": f"http://127.0.0.1:{self.admin_port}/admin",
            "ws_url": self.server.ws_url,
            "admin_ws_url": f"ws://127.0.0.1:{self.admin_ws_port}/",
        }


def add_general(folder: Path, lines: str) -> None:
    """Add settings to janus.jcfg's ``general`` group."""
    path = folder / "janus.jcfg"
    path.write_text(path.read_text().replace("general: {\n", "general: {\n" + lines, 1))


def admin_config(
    folder: Path,
    *,
    admin_secret: str | None = None,
    api_secret: str | None = None,
    token_auth: bool = False,
    janus_extra: str = "",
    http_admin_extra: str = "",
    mountpoints: str | None = None,
    log_file: bool = False,
) -> AdminAddresses:
    """write_config's fanout (default: mountpoint 1, Opus + VP8 on free ports) plus the Admin API on free ports;
    ``log_file``: logs go to <folder>/fanout.log (with timestamps), not to stdout."""
    audio, video, admin_port, admin_ws_port = free_ports(4)
    server = write_config(folder, mountpoints if mountpoints is not None else rtp_mountpoint(1, audio, video))
    general = ""
    if admin_secret is not None:
        general += f'\tadmin_secret = "{admin_secret}"\n'
    if api_secret is not None:
        general += f'\tapi_secret = "{api_secret}"\n'
    if token_auth:
        general += "\ttoken_auth = true\n"
    if log_file:
        general += f'\tlog_to_file = "{folder}/fanout.log"\n\tlog_to_stdout = false\n\tdebug_timestamps = true\n'
    add_general(folder, general)
    if janus_extra:
        with (folder / "janus.jcfg").open("a") as janus:
            janus.write(janus_extra)
    with (folder / "janus.transport.http.jcfg").open("a") as http:
        http.write(f'admin: {{\n\tadmin_http = true\n\tadmin_port = {admin_port}\n\tadmin_ip = "127.0.0.1"\n{http_admin_extra}}}\n')
    with (folder / "janus.transport.websockets.jcfg").open("a") as ws:
        ws.write(f'admin: {{\n\tadmin_ws = true\n\tadmin_ws_port = {admin_ws_port}\n\tadmin_ws_ip = "127.0.0.1"\n}}\n')
    return AdminAddresses(server, admin_port, admin_ws_port)
