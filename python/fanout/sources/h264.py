"""The H.264 RTP payload format (RFC 6184), packetization mode 1.

:class:`H264Packetizer` takes one access unit in Annex B form (start codes
before each NAL unit) and gives RTP payloads of at most ``max_payload_size``
bytes: a NAL unit that fits goes alone (single NAL unit packet), runs of small
ones such as SPS and PPS go together (STAP-A) when ``aggregate`` is set, and a
NAL unit too large for one packet is cut into FU-A fragments.
:class:`H264Depacketizer` does the reverse: RTP packets in, Annex B access
units out, an access unit with a missing packet dropped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from fanout.sources.rtp import MAX_PAYLOAD_SIZE, RtpPacket, split_evenly

H264_CLOCK_RATE = 90_000

IDR_SLICE = 5
SPS = 7
PPS = 8
STAP_A = 24
FU_A = 28

START_CODE = b"\x00\x00\x00\x01"


class H264Error(ValueError):
    """A payload that is not a well-formed packetization mode 1 payload; the message says why."""


def nal_unit_type(nal_unit: bytes) -> int:
    return nal_unit[0] & 0x1F


def split_annex_b(access_unit: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream, without start codes or trailing zero bytes."""
    nal_units = []
    start = access_unit.find(b"\x00\x00\x01")
    while start >= 0:
        start += 3
        end = access_unit.find(b"\x00\x00\x01", start)
        nal_unit = access_unit[start : len(access_unit) if end < 0 else end].rstrip(b"\x00")
        if nal_unit:
            nal_units.append(nal_unit)
        start = end
    return nal_units


def join_annex_b(nal_units: list[bytes]) -> bytes:
    return b"".join(START_CODE + nal_unit for nal_unit in nal_units)


def stap_a(nal_units: list[bytes]) -> bytes:
    forbidden = max(nal_unit[0] & 0x80 for nal_unit in nal_units)
    importance = max(nal_unit[0] & 0x60 for nal_unit in nal_units)
    header = bytes([forbidden | importance | STAP_A])
    return header + b"".join(struct.pack("!H", len(nal_unit)) + nal_unit for nal_unit in nal_units)


def fu_a(nal_unit: bytes, max_payload_size: int) -> list[bytes]:
    indicator = nal_unit[0] & 0xE0 | FU_A
    fragments = split_evenly(nal_unit[1:], max_payload_size - 2)
    payloads = []
    for index, fragment in enumerate(fragments):
        start = 0x80 if index == 0 else 0
        end = 0x40 if index == len(fragments) - 1 else 0
        payloads.append(bytes([indicator, start | end | nal_unit_type(nal_unit)]) + fragment)
    return payloads


class H264Packetizer:
    def __init__(self, max_payload_size: int = MAX_PAYLOAD_SIZE, aggregate: bool = True) -> None:
        self.max_payload_size = max_payload_size
        self.aggregate = aggregate

    def packetize(self, access_unit: bytes) -> list[bytes]:
        """The RTP payloads of one Annex B access unit, in order."""
        payloads: list[bytes] = []
        group: list[bytes] = []
        group_size = 1
        for nal_unit in split_annex_b(access_unit):
            if self.aggregate and group_size + 2 + len(nal_unit) <= self.max_payload_size:
                group.append(nal_unit)
                group_size += 2 + len(nal_unit)
                continue
            payloads += self._flush(group)
            group, group_size = [], 1
            if self.aggregate and 1 + 2 + len(nal_unit) <= self.max_payload_size:
                group, group_size = [nal_unit], 1 + 2 + len(nal_unit)
            elif len(nal_unit) <= self.max_payload_size:
                payloads.append(nal_unit)
            else:
                payloads += fu_a(nal_unit, self.max_payload_size)
        return payloads + self._flush(group)

    @staticmethod
    def _flush(group: list[bytes]) -> list[bytes]:
        if not group:
            return []
        return [group[0]] if len(group) == 1 else [stap_a(group)]


@dataclass(frozen=True, slots=True)
class H264AccessUnit:
    timestamp: int
    nal_units: tuple[bytes, ...]

    @property
    def keyframe(self) -> bool:
        return any(nal_unit_type(nal_unit) == IDR_SLICE for nal_unit in self.nal_units)

    @property
    def annex_b(self) -> bytes:
        return join_annex_b(list(self.nal_units))


def unpack_stap_a(payload: bytes) -> list[bytes]:
    nal_units = []
    offset = 1
    while offset < len(payload):
        if offset + 2 > len(payload):
            raise H264Error("STAP-A ends inside a NAL unit size")
        (size,) = struct.unpack_from("!H", payload, offset)
        offset += 2
        if size == 0 or offset + size > len(payload):
            raise H264Error(f"STAP-A NAL unit of {size} bytes does not fit")
        nal_units.append(payload[offset : offset + size])
        offset += size
    return nal_units


class H264Depacketizer:
    """Access units from the RTP packets of one stream, in sequence order.

    An access unit is the packets of one timestamp up to the marker bit. One
    with a gap in sequence numbers, a broken fragment or a malformed payload is
    dropped and counted, and so is the next unless the gap can only have been
    the previous one's last packet.
    """

    def __init__(self) -> None:
        self.access_units_dropped = 0
        self._nal_units: list[bytes] = []
        self._fragment: bytearray | None = None
        self._timestamp: int | None = None
        self._next_sequence_number: int | None = None
        self._ended = True
        self._broken = False

    def push(self, packet: RtpPacket) -> H264AccessUnit | None:
        lost = 0
        if self._next_sequence_number is not None:
            lost = (packet.sequence_number - self._next_sequence_number) & 0xFFFF
        self._next_sequence_number = (packet.sequence_number + 1) & 0xFFFF
        if self._ended or packet.timestamp != self._timestamp:
            lost_only_the_previous_marker = not self._ended and lost == 1
            if not self._ended:
                self.access_units_dropped += 1
            self._nal_units, self._fragment = [], None
            self._timestamp = packet.timestamp
            self._ended = False
            self._broken = lost > 0 and not lost_only_the_previous_marker
        elif lost:
            self._broken = True
        if not self._broken:
            try:
                self._add(packet.payload)
            except H264Error:
                self._broken = True
        if not packet.marker:
            return None
        self._ended = True
        if self._broken or self._fragment is not None or not self._nal_units:
            self.access_units_dropped += 1
            return None
        return H264AccessUnit(packet.timestamp, tuple(self._nal_units))

    def _add(self, payload: bytes) -> None:
        if not payload:
            raise H264Error("empty payload")
        kind = nal_unit_type(payload)
        if 1 <= kind <= 23:
            self._nal_units.append(payload)
        elif kind == STAP_A:
            self._nal_units += unpack_stap_a(payload)
        elif kind == FU_A:
            self._add_fragment(payload)
        else:
            raise H264Error(f"payload type {kind} is not allowed in packetization mode 1")

    def _add_fragment(self, payload: bytes) -> None:
        if len(payload) < 2:
            raise H264Error("FU-A without an FU header")
        indicator, header = payload[0], payload[1]
        if header & 0x80:
            if self._fragment is not None:
                raise H264Error("FU-A start inside a fragmented NAL unit")
            self._fragment = bytearray([indicator & 0xE0 | header & 0x1F])
        elif self._fragment is None:
            raise H264Error("FU-A continuation without a start")
        self._fragment += payload[2:]
        if header & 0x40:
            self._nal_units.append(bytes(self._fragment))
            self._fragment = None
