from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aioice.ice
import aioice.stun
import pytest

from tests.support.janus_client import JanusHttpClient, janus_session
from tests.support.server import DEMO_MOUNTPOINT, FanoutProcess, ServerAddresses, write_config


@pytest.fixture
def loopback_only_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice leaves 127.0.0.1 out of its host candidates; make it gather only that."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture
def checks_sent(monkeypatch: pytest.MonkeyPatch) -> dict[aioice.ice.StunProtocol, float]:
    """When each of the test's aioice sockets last sent a binding request (a connectivity or
    consent check, a retransmission too), on the monotonic clock fanout's timers run on. fanout
    refreshes a peer's consent when such a check arrives, so it cannot expire sooner than this
    plus fanout.ice_consent_timeout."""
    sent: dict[aioice.ice.StunProtocol, float] = {}
    send_stun = aioice.ice.StunProtocol.send_stun

    def recording_send_stun(protocol: aioice.ice.StunProtocol, message: aioice.stun.Message, addr: tuple[str, int]) -> None:
        if message.message_method == aioice.stun.Method.BINDING and message.message_class == aioice.stun.Class.REQUEST:
            sent[protocol] = time.monotonic()
        send_stun(protocol, message, addr)

    monkeypatch.setattr(aioice.ice.StunProtocol, "send_stun", recording_send_stun)
    return sent


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[tuple[ServerAddresses, FanoutProcess]]:
    """fanout with mountpoint 1 fed by the built-in test source."""
    addresses = write_config(tmp_path / "config", DEMO_MOUNTPOINT)
    with FanoutProcess(tmp_path / "config") as server:
        yield addresses, server


@pytest.fixture
async def janus_http(demo_server: tuple[ServerAddresses, FanoutProcess]) -> AsyncIterator[JanusHttpClient]:
    addresses, _ = demo_server
    async with janus_session(addresses.janus_url) as client:
        yield client


@pytest.fixture
async def janus(server: ServerAddresses) -> AsyncIterator[JanusHttpClient]:
    """A Janus API session on the ``server`` fixture of the test's module."""
    async with janus_session(server.janus_url) as client:
        yield client
