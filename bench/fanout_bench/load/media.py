"""What a sample viewer measures of the media it decrypts: counts, loss, latency, jitter, first frame.

:class:`MediaMeter` takes every datagram after ICE and DTLS. SRTP is
unprotected with pylibsrtp (the sample pays for decryption; the cheap viewers
do not read at all). Loss is counted per SSRC from sequence numbers (RFC 3550
A.3: expected from the extended highest sequence number), latency from the
source's send stamp to the datagram's arrival at the viewer's socket (the
kernel's receive stamp when the viewer has one, else the moment it was read),
jitter as RFC 3550's smoothed transit difference with the stamp in place of
the RTP timestamp. Beside it: how long the datagram then waited for the
viewer to read it (the load side's own delay, not the server's), and the
latencies of keyframe packets apart from the rest (a keyframe is
``keyframe_factor`` interframes sent back to back: its fan-out to every
viewer is the longest burst of work a server gets).
:meth:`MediaMeter.window` returns what happened since the last call.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pylibsrtp

from fanout_bench.load.source import AUDIO_PT, FPS, Stamp

_PROFILES = {
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
}


def rtp_payload_offset(packet: bytes) -> int:
    """Where the payload starts, past CSRCs and a header extension (RFC 3550 5.1, 5.3.1)."""
    offset = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        length = struct.unpack_from("!H", packet, offset + 2)[0]
        offset += 4 + 4 * length
    return offset


@dataclass
class _Stream:
    base: int = -1
    highest: int = -1  # extended
    received: int = 0

    def add(self, sequence: int) -> None:
        if self.highest < 0:
            self.base = self.highest = sequence
        else:
            cycles = self.highest & ~0xFFFF
            candidate = cycles | sequence
            if candidate < self.highest - 0x8000:
                candidate += 0x10000
            elif candidate > self.highest + 0x8000:
                candidate -= 0x10000
            self.highest = max(self.highest, candidate)
        self.received += 1


@dataclass
class MeterWindow:
    """One sample viewer's counts over a window."""

    rtp_packets: int = 0
    video_packets: int = 0
    audio_packets: int = 0
    other_datagrams: int = 0  # RTCP, STUN, DTLS: what the kernel counts beside RTP
    srtp_bytes: int = 0
    expected: int = 0
    lost: int = 0
    undecryptable: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    keyframe_latencies_ms: list[float] = field(default_factory=list)  # the packets of keyframes
    other_latencies_ms: list[float] = field(default_factory=list)  # interframes and audio
    read_delays_ms: list[float] = field(default_factory=list)  # kernel arrival to the read (kernel-stamped only)
    jitter_ms: float = 0.0


class MediaMeter:
    def __init__(self, profile: str, remote_master_key: bytes) -> None:
        policy = pylibsrtp.Policy(
            key=remote_master_key,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=_PROFILES[profile],
        )
        self._session = pylibsrtp.Session(policy)
        self._streams: dict[int, _Stream] = {}
        self._window_start: dict[int, tuple[int, int]] = {}
        self._current = MeterWindow()
        self._transit: float | None = None
        self._jitter = 0.0
        self.total_rtp = 0
        self.first_frame_ns: int | None = None
        self._frames: dict[int, set[int]] = {}
        self._keyframes: set[int] = set()

    def rtp(self, datagram: bytes, received_ns: int, arrived_ns: int | None = None) -> None:
        """One SRTP datagram read at ``received_ns``; ``arrived_ns``: the kernel's arrival stamp, if any."""
        window = self._current
        try:
            packet = self._session.unprotect(datagram)
        except pylibsrtp.Error:
            window.undecryptable += 1
            return
        window.rtp_packets += 1
        window.srtp_bytes += len(datagram)
        self.total_rtp += 1
        sequence, ssrc = (
            struct.unpack_from("!H", packet, 2)[0],
            struct.unpack_from("!I", packet, 8)[0],
        )
        stream = self._streams.get(ssrc)
        if stream is None:
            stream = self._streams[ssrc] = _Stream()
        stream.add(sequence)
        payload_type = packet[1] & 0x7F
        offset = rtp_payload_offset(packet)
        stamp = Stamp.find(packet[offset:])
        audio = payload_type == AUDIO_PT or (stamp is not None and stamp.count == 1 and len(packet) < 400)
        if audio:
            window.audio_packets += 1
        else:
            window.video_packets += 1
        if stamp is None:
            return
        transit_ms = ((arrived_ns or received_ns) - stamp.sent_ns) / 1e6
        window.latencies_ms.append(transit_ms)
        if not audio and stamp.frame % FPS == 0:  # the source's first frame of each second is its keyframe
            window.keyframe_latencies_ms.append(transit_ms)
        else:
            window.other_latencies_ms.append(transit_ms)
        if arrived_ns is not None:
            window.read_delays_ms.append((received_ns - arrived_ns) / 1e6)
        if self._transit is not None:
            self._jitter += (abs(transit_ms - self._transit) - self._jitter) / 16
        self._transit = transit_ms
        if self.first_frame_ns is None and not audio:
            self._track_frame(packet[offset:], stamp, received_ns)

    def _track_frame(self, payload: bytes, stamp: Stamp, received_ns: int) -> None:
        if stamp.index == 0 and payload[0] & 0x10 and payload[1] & 0x01 == 0:
            self._keyframes.add(stamp.frame)
        received = self._frames.setdefault(stamp.frame, set())
        received.add(stamp.index)
        if stamp.frame in self._keyframes and len(received) == stamp.count:
            self.first_frame_ns = received_ns
            self._frames.clear()

    def other(self) -> None:
        self._current.other_datagrams += 1

    def window(self) -> MeterWindow:
        """The counts since the last call, and start a new window."""
        window, self._current = self._current, MeterWindow()
        for ssrc, stream in self._streams.items():
            highest, received = self._window_start.get(ssrc, (stream.base - 1, 0))
            expected = stream.highest - highest
            window.expected += expected
            window.lost += max(0, expected - (stream.received - received))
            self._window_start[ssrc] = (stream.highest, stream.received)
        window.jitter_ms = self._jitter
        return window
