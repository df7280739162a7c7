"""Debian's coturn (``turnserver``) for a test: TURN over UDP, TCP and TLS on one loopback port.

coturn takes TLS on its plain listening port too, so one port serves ``turn:...?transport=udp``,
``turn:...?transport=tcp`` and ``turns:...?transport=tcp``. Credentials are checked the TURN REST
API way (``use-auth-secret``), as fanout's ``nat.turn_secret`` mints them. Loopback peers are
allowed (coturn refuses them by default), since the server it relays to is on 127.0.0.1.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.netns import NetworkNamespace

TURNSERVER = "/usr/bin/turnserver"
REALM = "fanout.test"


@dataclass(frozen=True)
class TurnServer:
    host: str
    port: int
    secret: str
    log: Path

    def allocations(self) -> int:
        """Relay allocations coturn has logged so far (each viewer through it makes one or more)."""
        return self.log.read_text(errors="replace").count("ALLOCATE processed, success")


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "turn-cert.pem", folder / "turn-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@contextmanager
def coturn(namespace: NetworkNamespace | None, folder: Path, *, host: str = "127.0.0.1", port: int = 3478,
           secret: str = "turn-shared-secret") -> Iterator[TurnServer]:  # fmt: skip
    """coturn listening on ``host:port`` inside ``namespace`` (None: this one), relaying from ``host``."""
    if shutil.which(TURNSERVER) is None:
        pytest.fail("coturn is not installed: run ./scripts/setup (Debian package coturn)")
    cert, key = self_signed_certificate(folder)
    log = folder / "turnserver.log"
    command = _in(
        namespace,
        TURNSERVER, "-n", "-v", "--no-cli", "--simple-log", "--log-file", str(log), "--no-stdout-log",
        "--listening-ip", host, "--relay-ip", host, "--listening-port", str(port),
        "--use-auth-secret", "--static-auth-secret", secret, "--realm", REALM,
        "--allow-loopback-peers", "--cert", str(cert), "--pkey", str(key),
        "--min-port", "49152", "--max-port", "49999", "--pidfile", str(folder / "turnserver.pid"),
    )  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_for_tcp(namespace, host, port, process)
        yield TurnServer(host, port, secret, log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _in(namespace: NetworkNamespace | None, *argv: str) -> list[str]:
    return namespace.command(*argv) if namespace is not None else list(argv)


def _wait_for_tcp(namespace: NetworkNamespace | None, host: str, port: int, process: subprocess.Popen[bytes]) -> None:
    probe = f"import socket; socket.create_connection(({host!r}, {port}), timeout=1).close()"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"turnserver exited with {process.returncode}")
        if subprocess.run(_in(namespace, "python3", "-c", probe), capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"turnserver did not listen on {host}:{port}")

