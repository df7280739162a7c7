"""The VP8 RTP payload format (RFC 7741).

:class:`Vp8Packetizer` splits one encoded frame into payloads of at most
``max_payload_size`` bytes, each led by a payload descriptor with a 15-bit
picture ID; the first has the S bit set, and every one is in partition 0 (the
frame is not split at partition boundaries, which RFC 7741 allows).
:class:`Vp8Depacketizer` does the reverse for a receiver: RTP packets in, whole
frames out, a frame with a missing packet dropped.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from fanout.sources.rtp import MAX_PAYLOAD_SIZE, RtpPacket, split_evenly

VP8_CLOCK_RATE = 90_000


class Vp8Error(ValueError):
    """A payload that does not start with a well-formed VP8 payload descriptor."""


@dataclass(frozen=True, slots=True)
class Vp8PayloadDescriptor:
    """The descriptor before each VP8 payload (RFC 7741 section 4.2)."""

    start_of_partition: bool
    partition_index: int = 0
    non_reference: bool = False
    picture_id: int | None = None
    picture_id_bits: int = 15
    tl0_picture_index: int | None = None
    temporal_layer: int | None = None
    layer_sync: bool = False
    key_index: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.partition_index < 8:
            raise ValueError(f"partition index {self.partition_index} is not 3 bits")
        if self.picture_id_bits not in (7, 15):
            raise ValueError(f"a picture ID has 7 or 15 bits, not {self.picture_id_bits}")
        if self.picture_id is not None and not 0 <= self.picture_id < 1 << self.picture_id_bits:
            raise ValueError(f"picture ID {self.picture_id} is not {self.picture_id_bits} bits")

    @classmethod
    def parse(cls, payload: bytes) -> tuple[Vp8PayloadDescriptor, int]:
        """The descriptor at the start of ``payload`` and its length in bytes."""
        if not payload:
            raise Vp8Error("empty payload")
        first = payload[0]
        offset = 1
        picture_id = tl0_picture_index = temporal_layer = key_index = None
        picture_id_bits = 15
        layer_sync = False
        if first & 0x80:
            if len(payload) < 2:
                raise Vp8Error("X bit set but no extension byte")
            extension = payload[1]
            offset = 2
            if extension & 0x80:
                if len(payload) < offset + 1:
                    raise Vp8Error("I bit set but no picture ID")
                if payload[offset] & 0x80:
                    if len(payload) < offset + 2:
                        raise Vp8Error("M bit set but no second picture ID byte")
                    picture_id = (payload[offset] & 0x7F) << 8 | payload[offset + 1]
                    offset += 2
                else:
                    picture_id = payload[offset]
                    picture_id_bits = 7
                    offset += 1
            if extension & 0x40:
                if len(payload) < offset + 1:
                    raise Vp8Error("L bit set but no TL0PICIDX")
                tl0_picture_index = payload[offset]
                offset += 1
            if extension & 0x30:
                if len(payload) < offset + 1:
                    raise Vp8Error("T or K bit set but no TID/KEYIDX byte")
                if extension & 0x20:
                    temporal_layer = payload[offset] >> 6
                    layer_sync = bool(payload[offset] & 0x20)
                if extension & 0x10:
                    key_index = payload[offset] & 0x1F
                offset += 1
        descriptor = cls(
            start_of_partition=bool(first & 0x10),
            partition_index=first & 0x07,
            non_reference=bool(first & 0x20),
            picture_id=picture_id,
            picture_id_bits=picture_id_bits,
            tl0_picture_index=tl0_picture_index,
            temporal_layer=temporal_layer,
            layer_sync=layer_sync,
            key_index=key_index,
        )
        return descriptor, offset

    def __bytes__(self) -> bytes:
        extension = (
            (0x80 if self.picture_id is not None else 0)
            | (0x40 if self.tl0_picture_index is not None else 0)
            | (0x20 if self.temporal_layer is not None else 0)
            | (0x10 if self.key_index is not None else 0)
        )
        first = (
            (0x80 if extension else 0)
            | (0x20 if self.non_reference else 0)
            | (0x10 if self.start_of_partition else 0)
            | self.partition_index
        )
        data = bytearray([first])
        if extension:
            data.append(extension)
        if self.picture_id is not None:
            if self.picture_id_bits == 15:
                data += bytes([0x80 | self.picture_id >> 8, self.picture_id & 0xFF])
            else:
                data.append(self.picture_id)
        if self.tl0_picture_index is not None:
            data.append(self.tl0_picture_index)
        if extension & 0x30:
            data.append((self.temporal_layer or 0) << 6 | (0x20 if self.layer_sync else 0) | (self.key_index or 0))
        return bytes(data)


def is_keyframe(frame: bytes) -> bool:
    """Whether an encoded VP8 frame is a key frame (the P bit of its frame tag, RFC 6386 section 9.1)."""
    return bool(frame) and not frame[0] & 0x01


class Vp8Packetizer:
    def __init__(self, max_payload_size: int = MAX_PAYLOAD_SIZE, first_picture_id: int | None = None) -> None:
        self.max_payload_size = max_payload_size
        self.next_picture_id = secrets.randbits(15) if first_picture_id is None else first_picture_id

    def packetize(self, frame: bytes) -> list[bytes]:
        """The RTP payloads of one encoded frame, in order."""
        if not frame:
            raise ValueError("an encoded VP8 frame is never empty")
        picture_id = self.next_picture_id
        self.next_picture_id = (picture_id + 1) & 0x7FFF
        first = bytes(Vp8PayloadDescriptor(start_of_partition=True, picture_id=picture_id))
        rest = bytes(Vp8PayloadDescriptor(start_of_partition=False, picture_id=picture_id))
        pieces = split_evenly(frame, self.max_payload_size - len(first))
        return [first + pieces[0]] + [rest + piece for piece in pieces[1:]]


@dataclass(frozen=True, slots=True)
class Vp8Frame:
    timestamp: int
    picture_id: int | None
    keyframe: bool
    data: bytes


class Vp8Depacketizer:
    """Whole VP8 frames from the RTP packets of one stream, in sequence order.

    A frame starts with the packet whose descriptor has S set and partition 0 and
    ends with the marker bit; a frame with a gap in its sequence numbers, or a
    change of timestamp before its marker, is dropped and counted.
    """

    def __init__(self) -> None:
        self.frames_dropped = 0
        self._pieces: list[bytes] = []
        self._timestamp = 0
        self._picture_id: int | None = None
        self._next_sequence_number = 0

    def push(self, packet: RtpPacket) -> Vp8Frame | None:
        descriptor, offset = Vp8PayloadDescriptor.parse(packet.payload)
        if descriptor.start_of_partition and descriptor.partition_index == 0:
            self._drop()
            self._timestamp = packet.timestamp
            self._picture_id = descriptor.picture_id
        elif not self._pieces:
            return None
        elif packet.sequence_number != self._next_sequence_number or packet.timestamp != self._timestamp:
            self._drop()
            return None
        self._pieces.append(packet.payload[offset:])
        self._next_sequence_number = (packet.sequence_number + 1) & 0xFFFF
        if not packet.marker:
            return None
        data = b"".join(self._pieces)
        self._pieces = []
        return Vp8Frame(self._timestamp, self._picture_id, is_keyframe(data), data)

    def _drop(self) -> None:
        if self._pieces:
            self.frames_dropped += 1
            self._pieces = []
