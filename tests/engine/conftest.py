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
    engine = Engine(webrtc.fileno())
    yield Rig(engine, webrtc, source)
    engine.close()
    webrtc.close()
    source.close()
