"""A viewer that stops answering is dropped once its ICE consent expires (RFC 7675: 30 s by
default, fanout.ice_consent_timeout; shortened here), not before; its resources are freed, and
the other viewers never notice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import aioice.ice
import pytest

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient
from tests.support.server import DEMO_MOUNTPOINT, FanoutProcess, ServerAddresses, write_config

pytestmark = pytest.mark.usefixtures("loopback_only_ice")

# The tests' fanout.ice_consent_timeout. aioice checks consent every 4 to 6 s (RFC 7675's 5 s
# +-20%): 10 s keeps a viewer that still checks through a late check on a loaded machine.
CONSENT_TIMEOUT = 10.0
# How late past its deadline a timeout may be seen (timers, events, polls on a loaded machine):
# generous, yet under 30 - CONSENT_TIMEOUT, so a fanout that kept RFC 7675's 30 s fails these tests.
EXPIRY_SLACK = 18.0


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[tuple[ServerAddresses, FanoutProcess]]:
    """The e2e conftest's demo server (mountpoint 1, the test source), with consent expiring after CONSENT_TIMEOUT."""
    addresses = write_config(tmp_path / "config", DEMO_MOUNTPOINT, ice_consent_timeout=CONSENT_TIMEOUT)
    with FanoutProcess(tmp_path / "config") as server:
        yield addresses, server


def go_silent(viewer: AiortcViewer) -> None:
    """Close the viewer's UDP sockets without a word: no more STUN, DTLS or RTCP from it."""
    for transceiver in viewer.pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        for protocol in connection._protocols:
            protocol.transport.close()


def last_check_sent(viewer: AiortcViewer, checks_sent: dict[aioice.ice.StunProtocol, float]) -> float:
    """When ``viewer`` last sent fanout a binding request (the ``checks_sent`` fixture's record).
    Take it just before :func:`go_silent`, with no ``await`` between."""
    protocols = {
        protocol
        for transceiver in viewer.pc.getTransceivers()
        for protocol in transceiver.receiver.transport.transport._connection._protocols
    }
    sent = [checks_sent[protocol] for protocol in protocols if protocol in checks_sent]
    assert sent, "no binding request of this viewer was recorded"
    return max(sent)


async def viewers_of(janus: JanusHttpClient, handle_id: int, mountpoint_id: int) -> int:
    reply = await janus.message(handle_id, {"request": "info", "id": mountpoint_id})
    return int(reply["plugindata"]["data"]["info"]["viewers"])


async def test_a_silent_viewer_is_dropped_when_consent_expires(
    janus_http: JanusHttpClient, checks_sent: dict[aioice.ice.StunProtocol, float]
) -> None:
    staying, vanishing = AiortcViewer(janus_http), AiortcViewer(janus_http)
    try:
        await staying.watch(1)
        await vanishing.watch(1)
        await vanishing.wait_for_frames(video=10, audio=10)
        assert await viewers_of(janus_http, staying.handle_id, 1) == 2

        last_check = last_check_sent(vanishing, checks_sent)
        go_silent(vanishing)
        hangup = await janus_http.event(
            lambda e: e.get("janus") == "hangup" and e.get("sender") == vanishing.handle_id,
            timeout=CONSENT_TIMEOUT + EXPIRY_SLACK,
        )
        dropped_after = time.monotonic() - last_check
        assert hangup["reason"] == "consent expired"
        # Not before the configured expiry (its last check refreshed consent), nor long after it.
        assert CONSENT_TIMEOUT <= dropped_after <= CONSENT_TIMEOUT + EXPIRY_SLACK, dropped_after
        assert await viewers_of(janus_http, staying.handle_id, 1) == 1

        # The staying viewer's own checks kept its consent all along (it has watched for more
        # than CONSENT_TIMEOUT) and keep it decoding.
        frames = staying.media.video_frames
        await staying.wait_for_frames(video=frames + 30, audio=0)
    finally:
        await staying.close()
        await vanishing.close()
