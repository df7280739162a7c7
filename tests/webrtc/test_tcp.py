"""RFC 4571 framing and the passive TCP candidate, sans-IO."""

from __future__ import annotations

import pytest

from fanout.webrtc.endpoint import host_candidate
from fanout.webrtc.sdp import Candidate
from fanout.webrtc.tcp import FrameError, FrameReader, frame, passive_candidate


def test_frames_come_out_whole_whatever_the_cuts() -> None:
    stream = frame(b"hello") + frame(bytes(300)) + frame(b"x")
    for cut in range(1, len(stream) + 1):
        reader = FrameReader()
        frames = []
        for start in range(0, len(stream), cut):
            frames += reader.feed(stream[start : start + cut])
        assert frames == [b"hello", bytes(300), b"x"], cut
        assert reader.pending == 0


def test_a_length_over_the_limit_is_refused_before_its_body() -> None:
    reader = FrameReader(max_frame=1500)
    assert reader.feed(b"\x05\xdc") == []  # 1500: allowed, the body is awaited
    assert reader.pending == 2
    reader = FrameReader(max_frame=1500)
    with pytest.raises(FrameError, match="frame length 65535"):
        reader.feed(b"\xff\xff")
    assert reader.pending == 0, "nothing is kept"


def test_an_empty_frame_is_refused() -> None:
    with pytest.raises(FrameError, match="frame length 0"):
        FrameReader().feed(frame(b"ok") + b"\x00\x00")


def test_frame_checks_its_size() -> None:
    assert frame(b"ab") == b"\x00\x02ab"
    for bad in (b"", bytes(65536)):
        with pytest.raises(ValueError):
            frame(bad)


def test_the_passive_candidate_ranks_below_every_udp_host_candidate() -> None:
    tcp = passive_candidate(0, 2, "192.0.2.1", 10000)
    assert str(tcp) == f"candidate:3 1 tcp {tcp.priority} 192.0.2.1 10000 typ host tcptype passive"
    assert tcp.priority < min(host_candidate(index, "192.0.2.1", 10000).priority for index in range(2))
    assert tcp.priority > passive_candidate(1, 2, "192.0.2.2", 10000).priority
    assert Candidate.parse(str(tcp)) == tcp


def test_a_browsers_active_candidate_parses() -> None:
    candidate = Candidate.parse("candidate:2 1 tcp 1518280447 192.0.2.9 9 typ host tcptype active generation 0")
    assert (candidate.transport, candidate.port, candidate.tcptype) == ("tcp", 9, "active")
