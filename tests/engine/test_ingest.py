"""What the engine does to a source's datagrams before forwarding them
(src/ingest/mod.rs): SRTP sources, the SSRC lock, H.264 parameter sets, clock
skew. Real sockets; libsrtp (pylibsrtp) encrypts the sources and decrypts what
the viewers receive."""

from __future__ import annotations

import itertools
import os
import time
from typing import TYPE_CHECKING

import pytest
from pylibsrtp import Policy, Session

from tests.engine.test_engine import Rig, rtp, wait_until

if TYPE_CHECKING:
    from fanout._engine import SourceSrtpProfile, SourceStream

SPS = bytes([0x67, 0x42, 0xC0, 0x1F, 0xDA, 0x01])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])
IDR_START = bytes([0x7C, 0x85, 0x88, 0x80])
IDR_END = bytes([0x7C, 0x45, 0x11])
NON_IDR = bytes([0x41, 0x9A, 0x00])
LIBSRTP_SOURCE_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}


def stream(kind: str = "audio", codec: str = "opus", clock_rate: int = 48000, **ingest: object) -> SourceStream:
    return {"index": 0, "kind": kind, "codec": codec, "clock_rate": clock_rate, "host": "127.0.0.1", "port": 0,
            **ingest}  # type: ignore[typeddict-item]


@pytest.mark.parametrize("profile", ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"])
def test_an_srtp_source_is_decrypted_and_forgeries_are_counted(rig: Rig, profile: SourceSrtpProfile) -> None:
    key = os.urandom(30)
    [port] = rig.engine.add_mountpoint(1, [stream(srtp_profile=profile, srtp_master_key=key)])
    viewer = rig.viewer(7, 1)
    source = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=LIBSRTP_SOURCE_PROFILES[profile]))
    intruder = Session(Policy(key=os.urandom(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                              srtp_profile=LIBSRTP_SOURCE_PROFILES[profile]))
    payloads = [f"packet {i}".encode() for i in range(4)]
    protected = [source.protect(rtp(100 + i, 960 * i, payload)) for i, payload in enumerate(payloads)]
    rig.send(port, protected[0], intruder.protect(rtp(500, 0, b"forged")), protected[1], rtp(501, 0, b"plain RTP"),
             protected[1], protected[2], protected[3])

    packets = viewer.wait_rtp(4)

    assert [packet.payload for packet in packets] == payloads
    wait_until(lambda: rig.engine.mountpoint_stats(1).streams[0].undecryptable == 3)
    stats = rig.engine.mountpoint_stats(1)
    assert (stats.packets, stats.malformed) == (4, 0), "forged, plain and replayed packets are not counted as received"


def test_srtp_source_options_are_checked(rig: Rig) -> None:
    with pytest.raises(ValueError, match="master key must be 30 bytes"):
        rig.engine.add_mountpoint(1, [stream(srtp_profile="AES_CM_128_HMAC_SHA1_80", srtp_master_key=bytes(16))])
    with pytest.raises(ValueError, match="go together"):
        rig.engine.add_mountpoint(1, [stream(srtp_profile="AES_CM_128_HMAC_SHA1_80")])
    with pytest.raises(ValueError, match="unknown SRTP profile"):
        rig.engine.add_mountpoint(1, [stream(srtp_profile="NULL", srtp_master_key=bytes(30))])
    with pytest.raises(ValueError, match="parameter set is empty"):
        rig.engine.add_mountpoint(1, [stream("video", "h264", 90000, h264_parameter_sets=[SPS, b""])])
    rig.engine.add_mountpoint(1, [stream()])  # nothing was left half-made by the refusals
    with pytest.raises(ValueError, match="unknown SRTP profile"):
        rig.engine.add_peer(2, ("127.0.0.1", 9), "AES_CM_128_HMAC_SHA1_32", bytes(30), bytes(30))  # type: ignore[arg-type]


def test_a_second_ssrc_is_dropped_until_the_first_falls_silent(rig: Rig) -> None:
    [port] = rig.engine.add_mountpoint(1, [stream(collision_ms=300)])
    viewer = rig.viewer(7, 1)
    rig.send(port, rtp(1, 0, b"first 1", ssrc=1), rtp(900, 0, b"second 1", ssrc=2), rtp(2, 960, b"first 2", ssrc=1),
             rtp(901, 960, b"second 2", ssrc=2))
    viewer.wait_rtp(2)
    time.sleep(0.45)
    rig.send(port, rtp(902, 1920, b"second 3", ssrc=2), rtp(3, 1920, b"first 3", ssrc=1))

    packets = viewer.wait_rtp(3)

    assert [packet.payload for packet in packets] == [b"first 1", b"first 2", b"second 3"]
    assert packets[2].sequence == (packets[1].sequence + 1) & 0xFFFF, "the takeover is a source restart"
    wait_until(lambda: rig.engine.mountpoint_stats(1).streams[0].collisions == 3)


def test_parameter_sets_go_before_keyframes_that_lack_them(rig: Rig) -> None:
    [port] = rig.engine.add_mountpoint(1, [stream("video", "h264", 90000, h264_parameter_sets=[SPS, PPS])])
    viewer = rig.viewer(7, 1, payload_type=102)
    rig.send(port, rtp(10, 3000, IDR_START), rtp(11, 3000, IDR_END, marker=True),
             rtp(12, 6000, NON_IDR, marker=True))
    # Live or, if the viewer's worker started it late, from the keyframe cache: either way
    # from this keyframe on (a second keyframe sent now could come first and take the cache).
    viewer.wait_rtp(4)
    # A keyframe that brings its own SPS and PPS gets nothing added.
    rig.send(port, rtp(13, 9000, SPS), rtp(14, 9000, PPS), rtp(15, 9000, IDR_START), rtp(16, 9000, IDR_END, marker=True))

    packets = viewer.wait_rtp(8)

    stap_a = bytes([0x78, 0, len(SPS)]) + SPS + bytes([0, len(PPS)]) + PPS
    assert [packet.payload for packet in packets] == [stap_a, IDR_START, IDR_END, NON_IDR, SPS, PPS, IDR_START,
                                                      IDR_END]
    assert [(packet.sequence - packets[0].sequence) & 0xFFFF for packet in packets] == list(range(8))
    assert packets[0].timestamp == packets[1].timestamp
    assert not packets[0].marker
    assert rig.engine.mountpoint_stats(1).streams[0].parameter_sets_inserted == 1


def test_a_fast_audio_clock_is_pulled_back_in_line(rig: Rig) -> None:
    """A source whose clock runs 10% fast: packets are dropped so that what the
    viewer gets keeps pace with the wall clock, without gaps in the numbering."""
    [port] = rig.engine.add_mountpoint(1, [stream(skew_compensation=True)])
    viewer = rig.viewer(7, 1)
    start = time.monotonic()
    count = 125  # 2.5 s of 20 ms packets, stamped 22 ms apart
    for i in range(count):
        time.sleep(max(0.0, start + i * 0.02 - time.monotonic()))
        rig.send(port, rtp(i, i * 1056, i.to_bytes(2, "big")))
    elapsed = time.monotonic() - start

    wait_until(lambda: rig.engine.mountpoint_stats(1).streams[0].skew_dropped > 0)
    stats = rig.engine.mountpoint_stats(1).streams[0]
    packets = viewer.wait_rtp(count - stats.skew_dropped)
    assert len(packets) == count - stats.skew_dropped
    assert {(b.sequence - a.sequence) & 0xFFFF for a, b in itertools.pairwise(packets)} == {1}
    assert {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)} == {1056}
    assert stats.lost == 0, "a packet skew compensation dropped reached fanout: not lost on the way in"
    # Uncorrected, the timestamps would run 10% (250 ms) ahead; corrected, within about a window's drift.
    media_seconds = ((packets[-1].timestamp - packets[0].timestamp) & 0xFFFFFFFF) / 48000
    assert abs(media_seconds - elapsed) < 0.12, (media_seconds, elapsed)
    assert stats.skew_ms < -100
