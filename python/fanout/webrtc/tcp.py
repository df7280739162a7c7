"""ICE-TCP, sans-IO: RFC 4571 framing and the passive host candidate (RFC 6544).

On an ICE-TCP connection every STUN message, DTLS record and SRTP/SRTCP packet
travels as one frame: a 2-byte big-endian length, then that many bytes.
:class:`FrameReader` takes the bytes a connection delivers, in any cuts, and
gives whole frames; :func:`frame` makes one. A reader refuses a length above
its ``max_frame`` at once (without waiting for the body), so a connection that
has not proven itself (no authenticated STUN check yet) holds at most one
small frame's bytes.

fanout's TCP candidates are passive (it accepts; the viewer connects, RFC 6544
section 4.5) and rank below every UDP candidate (section 4.2), so a viewer whose
UDP works uses it.
"""

from __future__ import annotations

from fanout.webrtc.sdp import Candidate

MAX_FRAME = 65535
# RFC 8445 type preferences are 126 (host UDP), 110 (peer reflexive), 100 (server reflexive), 0 (relay):
# a host TCP candidate sits below every UDP path but a relay (RFC 6544 section 4.2 lets each agent choose).
TCP_HOST_TYPE_PREFERENCE = 90
# RFC 6544 section 4.2: local preference = 2^13 * direction-pref + other-pref; a passive host candidate's
# direction preference is 4 (of active 6, passive 4, simultaneous-open 2 for a host not behind a NAT).
PASSIVE_DIRECTION_PREFERENCE = 4


class FrameError(Exception):
    """The peer broke the framing (a length over the limit, or an empty frame)."""


def frame(packet: bytes) -> bytes:
    """``packet`` as one RFC 4571 frame; ValueError if it does not fit one."""
    if not 0 < len(packet) <= MAX_FRAME:
        raise ValueError(f"a frame holds 1..{MAX_FRAME} bytes, got {len(packet)}")
    return len(packet).to_bytes(2, "big") + packet


class FrameReader:
    """Cuts a TCP byte stream into RFC 4571 frames."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held: the start of a frame not yet complete."""
        return len(self._buffer)

    def take_pending(self) -> bytes:
        """The start of a frame not yet complete, which the reader forgets (another reader goes on)."""
        pending = bytes(self._buffer)
        self._buffer.clear()
        return pending

    def feed(self, data: bytes) -> list[bytes]:
        """The frames ``data`` completes, in order; raises FrameError on a length of 0 or over ``max_frame``."""
        self._buffer += data
        frames: list[bytes] = []
        start = 0
        while len(self._buffer) - start >= 2:
            length = int.from_bytes(self._buffer[start : start + 2], "big")
            if length == 0 or length > self.max_frame:
                self._buffer.clear()
                raise FrameError(f"frame length {length} (1..{self.max_frame} allowed)")
            if len(self._buffer) - start - 2 < length:
                break
            frames.append(bytes(self._buffer[start + 2 : start + 2 + length]))
            start += 2 + length
        del self._buffer[:start]
        return frames


def passive_candidate(index: int, count: int, ip: str, port: int) -> Candidate:
    """The passive TCP host candidate for the ``index``-th of ``count`` advertised addresses
    (foundations after the UDP candidates' 1..count)."""
    local_preference = (PASSIVE_DIRECTION_PREFERENCE << 13) + 8191 - index
    priority = (TCP_HOST_TYPE_PREFERENCE << 24) + (local_preference << 8) + 256 - 1
    return Candidate(str(count + index + 1), 1, "tcp", priority, ip, port, "host", tcptype="passive")
