"""The rig that engine tests share: an engine on a WebRTC socket, and a source socket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fanout._engine import Engine
from tests.engine.test_engine import COUNTED_SEND_DELAY_MS, Rig, udp_socket


@pytest.fixture
def rig() -> Iterator[Rig]:
    webrtc = udp_socket()
    source = udp_socket()
    engine = Engine(webrtc.fileno(), max_send_delay_ms=COUNTED_SEND_DELAY_MS)
    yield Rig(engine, webrtc, source)
    engine.close()
    webrtc.close()
    source.close()
