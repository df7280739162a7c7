"""RTP packets (RFC 3550 section 5.1) and the sending side of one RTP stream.

:class:`RtpPacket` is a frozen dataclass: ``RtpPacket.parse(data)`` reads a whole
packet (CSRCs, header extension and padding included) and ``bytes(packet)``
writes the fixed header, CSRCs, extension and payload back. :class:`RtpStream`
numbers the payloads of one source (one SSRC) without touching a socket or a
clock: the caller passes the media timestamp of every frame.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass

RTP_VERSION = 2
HEADER_LENGTH = 12
MAX_PAYLOAD_SIZE = 1200


class RtpError(ValueError):
    """Bytes that are not a well-formed RTP packet; the message says why."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type < 128:
            raise ValueError(f"payload type {self.payload_type} is not 7 bits")
        if not 0 <= self.sequence_number < 1 << 16:
            raise ValueError(f"sequence number {self.sequence_number} is not 16 bits")
        if not 0 <= self.timestamp < 1 << 32:
            raise ValueError(f"timestamp {self.timestamp} is not 32 bits")
        if not 0 <= self.ssrc < 1 << 32:
            raise ValueError(f"SSRC {self.ssrc} is not 32 bits")
        if len(self.csrcs) > 15:
            raise ValueError(f"{len(self.csrcs)} CSRCs, at most 15 fit")
        if len(self.extension) % 4:
            raise ValueError(f"header extension of {len(self.extension)} bytes is not a multiple of 4")

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < HEADER_LENGTH:
            raise RtpError(f"{len(data)} bytes is too short for an RTP header")
        first, second, sequence_number, timestamp, ssrc = struct.unpack_from("!BBHII", data)
        if first >> 6 != RTP_VERSION:
            raise RtpError(f"RTP version {first >> 6}, expected 2")
        offset = HEADER_LENGTH + 4 * (first & 0x0F)
        if len(data) < offset:
            raise RtpError(f"{len(data)} bytes is too short for {first & 0x0F} CSRCs")
        csrcs = struct.unpack_from(f"!{first & 0x0F}I", data, HEADER_LENGTH)
        extension_profile = None
        extension = b""
        if first & 0x10:
            if len(data) < offset + 4:
                raise RtpError("too short for the header extension header")
            extension_profile, words = struct.unpack_from("!HH", data, offset)
            offset += 4
            if len(data) < offset + 4 * words:
                raise RtpError(f"too short for a header extension of {words} words")
            extension = bytes(data[offset : offset + 4 * words])
            offset += 4 * words
        end = len(data)
        if first & 0x20:
            padding = data[-1]
            if padding == 0 or offset + padding > end:
                raise RtpError(f"padding of {padding} bytes does not fit")
            end -= padding
        return cls(
            payload_type=second & 0x7F,
            sequence_number=sequence_number,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(second & 0x80),
            csrcs=csrcs,
            extension_profile=extension_profile,
            extension=extension,
        )

    def __bytes__(self) -> bytes:
        has_extension = self.extension_profile is not None
        first = RTP_VERSION << 6 | (0x10 if has_extension else 0) | len(self.csrcs)
        second = (0x80 if self.marker else 0) | self.payload_type
        parts = [
            struct.pack("!BBHII", first, second, self.sequence_number, self.timestamp, self.ssrc),
            struct.pack(f"!{len(self.csrcs)}I", *self.csrcs),
        ]
        if self.extension_profile is not None:
            parts.append(struct.pack("!HH", self.extension_profile, len(self.extension) // 4) + self.extension)
        parts.append(self.payload)
        return b"".join(parts)


def split_evenly(data: bytes, max_size: int) -> list[bytes]:
    """``data`` in the fewest pieces of at most ``max_size`` bytes, their sizes differing by at most one."""
    count = max(1, -(-len(data) // max_size))
    size, larger = divmod(len(data), count)
    pieces = []
    start = 0
    for index in range(count):
        end = start + size + (1 if index < larger else 0)
        pieces.append(data[start:end])
        start = end
    return pieces


def random_ssrc() -> int:
    return secrets.randbits(32)


class RtpStream:
    """Consecutive RTP packets of one SSRC.

    Sequence numbers and timestamps start at random values (RFC 3550 section 5.1);
    ``packetize`` adds that offset to the media timestamp it is given, in units of
    the payload format's clock rate.
    """

    def __init__(
        self,
        payload_type: int,
        ssrc: int | None = None,
        first_sequence_number: int | None = None,
        timestamp_offset: int | None = None,
    ) -> None:
        self.payload_type = payload_type
        self.ssrc = random_ssrc() if ssrc is None else ssrc
        self.next_sequence_number = secrets.randbits(16) if first_sequence_number is None else first_sequence_number
        self.timestamp_offset = secrets.randbits(32) if timestamp_offset is None else timestamp_offset

    def packetize(self, payloads: Sequence[bytes], media_timestamp: int, marker_on_last: bool) -> list[bytes]:
        """The packets carrying one frame's payloads; the marker bit goes on the last if asked."""
        timestamp = (self.timestamp_offset + media_timestamp) & 0xFFFFFFFF
        packets = []
        for index, payload in enumerate(payloads):
            marker = marker_on_last and index == len(payloads) - 1
            packet = RtpPacket(self.payload_type, self.next_sequence_number, timestamp, self.ssrc, payload, marker)
            packets.append(bytes(packet))
            self.next_sequence_number = (self.next_sequence_number + 1) & 0xFFFF
        return packets
