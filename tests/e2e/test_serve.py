"""``fanout serve`` as an operator meets it: what it says about the configuration, how it
fails when it cannot start, how it stops."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import DEMO_MOUNTPOINT, FanoutProcess, rtp_mountpoint, write_config


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    """Run ``fanout serve`` that is expected to stop by itself."""
    return subprocess.run(
        [sys.executable, "-m", "fanout", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unsupported_keys_are_named_at_start(tmp_path: Path) -> None:
    config = tmp_path / "config"
    write_config(config, rtp_mountpoint(2, 0, 0).replace('type = "rtp"', 'type = "rtp"\n\tthreads = 4'))
    with (config / "janus.jcfg").open("a") as janus:
        janus.write("media: {\n\tdtls_mtu = 1200\n}\n")
    with FanoutProcess(config) as server:
        pass
    assert "janus.jcfg: media.dtls_mtu is not supported by fanout and is ignored" in server.output
    assert "janus.plugin.streaming.jcfg: rtp-2.threads is not supported by fanout and is ignored" in server.output


def test_a_broken_file_stops_fanout_with_its_name_and_line(tmp_path: Path) -> None:
    config = tmp_path / "config"
    write_config(config, rtp_mountpoint(2, 0, 0))
    streaming = config / "janus.plugin.streaming.jcfg"
    lines = streaming.read_text().splitlines()
    lines.insert(4, "\tid = = 3")
    streaming.write_text("\n".join(lines) + "\n")
    result = serve(config)
    assert result.returncode == 1
    assert "fanout: configuration error: janus.plugin.streaming.jcfg:5:" in result.stderr, result.stderr


def test_a_bad_mountpoint_stops_fanout_with_its_name(tmp_path: Path) -> None:
    config = tmp_path / "config"
    write_config(config, rtp_mountpoint(2, 0, 0).replace('videocodec = "vp8"', 'videocodec = "theora"'))
    result = serve(config)
    assert result.returncode == 1
    assert "janus.plugin.streaming.jcfg" in result.stderr and "rtp-2" in result.stderr, result.stderr


@pytest.mark.parametrize("taken", ["http", "mountpoint"])
def test_a_taken_port_stops_fanout_with_a_clear_error(tmp_path: Path, taken: str) -> None:
    kind = socket.SOCK_STREAM if taken == "http" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("0.0.0.0", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        port = holder.getsockname()[1]
        config = tmp_path / "config"
        write_config(config, rtp_mountpoint(2, 0, port if taken == "mountpoint" else 0))
        if taken == "http":
            http_file = config / "janus.transport.http.jcfg"
            http_file.write_text(http_file.read_text().replace("port = ", f"port = {port}\n\t#port = ", 1))
        result = serve(config)
    assert result.returncode == 1
    expected = {"http": "the HTTP transport cannot listen on", "mountpoint": "a mountpoint's RTP port cannot be bound"}
    assert f"fanout: cannot start: {expected[taken]}" in result.stderr, result.stderr


def test_sigterm_stops_fanout_and_its_test_source(tmp_path: Path) -> None:
    config = tmp_path / "config"
    write_config(config, DEMO_MOUNTPOINT)
    server = FanoutProcess(config).start()
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    assert len(children) == 1  # the test source
    assert server.stop() == 0
    assert not Path(f"/proc/{children[0]}").exists()
