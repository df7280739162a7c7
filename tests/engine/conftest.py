"""The rig that engine tests share: an engine on a WebRTC socket, and a source socket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fanout._engine import Engine
from tests.engine.test_engine import Rig, udp_socket


@pytest.fixture
def rig() -> Iterator[Rig]:
    webrtc = udp_socket()
    source = udp_socket()
    # These tests count every packet: on a loaded machine a worker may fall behind by more
    # than the default bound, whose drops (dropped_late) have tests of their own.
    engine = Engine(webrtc.fileno(), max_send_delay_ms=10_000)
    yield Rig(engine, webrtc, source)
    engine.close()
    webrtc.close()
    source.close()
