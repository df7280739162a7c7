"""RTCP packets (RFC 3550), feedback (RFC 4585 NACK and PLI, RFC 5104 FIR) and REMB
(draft-alvestrand-rmcat-remb).

Each packet type is a frozen dataclass whose ``parse`` takes one whole packet,
header included, and whose ``__bytes__`` writes it back:
``bytes(X.parse(data)) == data`` for what browsers send. :func:`parse_compound`
splits a compound packet (or a reduced-size one, RFC 5506).
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

SR = 200
RR = 201
SDES = 202
BYE = 203
APP = 204
RTPFB = 205
PSFB = 206

NACK_FMT = 1
PLI_FMT = 1
FIR_FMT = 4
AFB_FMT = 15


class RtcpError(ValueError):
    """Bytes that are not a well-formed RTCP packet; the message says why."""


def _header(packet_type: int, count: int, payload_length: int) -> bytes:
    if payload_length % 4:
        raise ValueError(f"RTCP payload of {payload_length} bytes is not a multiple of 4")
    return struct.pack("!BBH", 0x80 | count, packet_type, payload_length // 4)


def _unpack(data: bytes, packet_type: int | tuple[int, ...], name: str) -> tuple[int, int, bytes]:
    """(count, packet type, payload without padding) of one whole packet; raises RtcpError."""
    if len(data) < 4:
        raise RtcpError(f"{name}: {len(data)} bytes is too short for an RTCP header")
    first, actual_type, words = struct.unpack_from("!BBH", data)
    if first >> 6 != 2:
        raise RtcpError(f"{name}: RTCP version {first >> 6}, expected 2")
    if actual_type not in (packet_type if isinstance(packet_type, tuple) else (packet_type,)):
        raise RtcpError(f"{name}: packet type {actual_type}")
    if 4 + words * 4 != len(data):
        raise RtcpError(f"{name}: length field says {4 + words * 4} bytes, got {len(data)}")
    payload = data[4:]
    if first & 0x20:
        if not payload or payload[-1] == 0 or payload[-1] > len(payload):
            raise RtcpError(f"{name}: bad padding")
        payload = payload[: -payload[-1]]
    return first & 0x1F, actual_type, payload


@dataclass(frozen=True)
class ReceptionReport:
    """A report block of SR and RR (RFC 3550 section 6.4.1)."""

    ssrc: int
    fraction_lost: int
    packets_lost: int  # cumulative, signed 24 bits
    highest_sequence: int
    jitter: int
    last_sr: int
    delay_since_last_sr: int

    LENGTH = 24

    @classmethod
    def parse(cls, data: bytes) -> ReceptionReport:
        if len(data) != cls.LENGTH:
            raise RtcpError(f"report block of {len(data)} bytes, expected 24")
        ssrc, lost_word, highest, jitter, last_sr, delay = struct.unpack("!IIIIII", data)
        packets_lost = lost_word & 0xFFFFFF
        if packets_lost & 0x800000:
            packets_lost -= 0x1000000
        return cls(ssrc, lost_word >> 24, packets_lost, highest, jitter, last_sr, delay)

    def __bytes__(self) -> bytes:
        lost_word = (self.fraction_lost << 24) | (self.packets_lost & 0xFFFFFF)
        return struct.pack(
            "!IIIIII",
            self.ssrc,
            lost_word,
            self.highest_sequence,
            self.jitter,
            self.last_sr,
            self.delay_since_last_sr,
        )


def _parse_reports(data: bytes, count: int, name: str) -> tuple[list[ReceptionReport], bytes]:
    end = count * ReceptionReport.LENGTH
    if len(data) < end:
        raise RtcpError(f"{name}: {len(data)} bytes is too short for {count} report blocks")
    reports = [
        ReceptionReport.parse(data[i : i + ReceptionReport.LENGTH]) for i in range(0, end, ReceptionReport.LENGTH)
    ]
    return reports, data[end:]


@dataclass(frozen=True)
class SenderReport:
    """SR (RFC 3550 section 6.4.1)."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReceptionReport] = field(default_factory=list)
    extension: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> SenderReport:
        count, _, payload = _unpack(data, SR, "SR")
        if len(payload) < 24:
            raise RtcpError(f"SR: {len(payload)} bytes is too short for sender info")
        ssrc, ntp, rtp, packets, octets = struct.unpack_from("!IQIII", payload)
        reports, extension = _parse_reports(payload[24:], count, "SR")
        return cls(ssrc, ntp, rtp, packets, octets, reports, extension)

    def __bytes__(self) -> bytes:
        payload = struct.pack(
            "!IQIII", self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        )
        payload += b"".join(bytes(report) for report in self.reports) + self.extension
        return _header(SR, len(self.reports), len(payload)) + payload


@dataclass(frozen=True)
class ReceiverReport:
    """RR (RFC 3550 section 6.4.2)."""

    ssrc: int
    reports: list[ReceptionReport] = field(default_factory=list)
    extension: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> ReceiverReport:
        count, _, payload = _unpack(data, RR, "RR")
        if len(payload) < 4:
            raise RtcpError("RR: no SSRC")
        reports, extension = _parse_reports(payload[4:], count, "RR")
        return cls(int.from_bytes(payload[:4], "big"), reports, extension)

    def __bytes__(self) -> bytes:
        payload = self.ssrc.to_bytes(4, "big") + b"".join(bytes(r) for r in self.reports) + self.extension
        return _header(RR, len(self.reports), len(payload)) + payload


@dataclass(frozen=True)
class SdesChunk:
    """One SSRC's items in an SDES packet: (item type, value), e.g. (1, b"cname")."""

    ssrc: int
    items: list[tuple[int, bytes]] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        data = self.ssrc.to_bytes(4, "big")
        for item_type, value in self.items:
            data += bytes((item_type, len(value))) + value
        return data + bytes(4 - len(data) % 4)


@dataclass(frozen=True)
class SourceDescription:
    """SDES (RFC 3550 section 6.5)."""

    chunks: list[SdesChunk] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes) -> SourceDescription:
        count, _, payload = _unpack(data, SDES, "SDES")
        chunks: list[SdesChunk] = []
        offset = 0
        for _ in range(count):
            if offset + 4 > len(payload):
                raise RtcpError(f"SDES: chunk {len(chunks) + 1} truncated")
            start = offset
            ssrc = int.from_bytes(payload[offset : offset + 4], "big")
            offset += 4
            items: list[tuple[int, bytes]] = []
            while True:
                if offset >= len(payload):
                    raise RtcpError(f"SDES: chunk {len(chunks) + 1} has no end")
                item_type = payload[offset]
                if item_type == 0:
                    offset += 4 - (offset - start) % 4
                    break
                if offset + 2 > len(payload) or offset + 2 + payload[offset + 1] > len(payload):
                    raise RtcpError(f"SDES: item {item_type} truncated")
                length = payload[offset + 1]
                items.append((item_type, payload[offset + 2 : offset + 2 + length]))
                offset += 2 + length
            chunks.append(SdesChunk(ssrc, items))
        if offset != len(payload):
            raise RtcpError(f"SDES: {len(payload) - offset} bytes after {count} chunks")
        return cls(chunks)

    def __bytes__(self) -> bytes:
        payload = b"".join(bytes(chunk) for chunk in self.chunks)
        return _header(SDES, len(self.chunks), len(payload)) + payload


@dataclass(frozen=True)
class Bye:
    """BYE (RFC 3550 section 6.6)."""

    ssrcs: list[int] = field(default_factory=list)
    reason: bytes | None = None

    @classmethod
    def parse(cls, data: bytes) -> Bye:
        count, _, payload = _unpack(data, BYE, "BYE")
        if len(payload) < 4 * count:
            raise RtcpError(f"BYE: {len(payload)} bytes is too short for {count} SSRCs")
        ssrcs = list(struct.unpack_from(f"!{count}I", payload))
        rest = payload[4 * count :]
        reason = None
        if rest:
            if 1 + rest[0] > len(rest):
                raise RtcpError("BYE: reason truncated")
            reason = rest[1 : 1 + rest[0]]
        return cls(ssrcs, reason)

    def __bytes__(self) -> bytes:
        payload = struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        if self.reason is not None:
            text = bytes((len(self.reason),)) + self.reason
            payload += text + bytes(-len(text) % 4)
        return _header(BYE, len(self.ssrcs), len(payload)) + payload


def _feedback(data: bytes, packet_type: int, fmt: int, name: str) -> tuple[int, int, bytes]:
    """(sender SSRC, media SSRC, FCI) of an RTPFB/PSFB packet."""
    actual_fmt, _, payload = _unpack(data, packet_type, name)
    if actual_fmt != fmt:
        raise RtcpError(f"{name}: feedback message type {actual_fmt}, expected {fmt}")
    if len(payload) < 8:
        raise RtcpError(f"{name}: {len(payload)} bytes is too short for the SSRCs")
    sender, media = struct.unpack_from("!II", payload)
    return sender, media, payload[8:]


def _feedback_bytes(packet_type: int, fmt: int, sender_ssrc: int, media_ssrc: int, fci: bytes) -> bytes:
    return _header(packet_type, fmt, 8 + len(fci)) + struct.pack("!II", sender_ssrc, media_ssrc) + fci


@dataclass(frozen=True)
class GenericNack:
    """Generic NACK (RFC 4585 section 6.2.1): the sequence numbers the receiver lost."""

    sender_ssrc: int
    media_ssrc: int
    lost: list[int] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes) -> GenericNack:
        sender, media, fci = _feedback(data, RTPFB, NACK_FMT, "NACK")
        if not fci:
            raise RtcpError("NACK: no FCI")
        lost: list[int] = []
        for pid, blp in struct.iter_unpack("!HH", fci):
            lost.append(pid)
            lost += [(pid + bit + 1) & 0xFFFF for bit in range(16) if blp & (1 << bit)]
        return cls(sender, media, lost)

    def __bytes__(self) -> bytes:
        fci = b""
        index = 0
        while index < len(self.lost):
            pid = self.lost[index]
            blp = 0
            index += 1
            while index < len(self.lost) and 1 <= (self.lost[index] - pid) & 0xFFFF <= 16:
                blp |= 1 << (((self.lost[index] - pid) & 0xFFFF) - 1)
                index += 1
            fci += struct.pack("!HH", pid, blp)
        return _feedback_bytes(RTPFB, NACK_FMT, self.sender_ssrc, self.media_ssrc, fci)


@dataclass(frozen=True)
class PictureLossIndication:
    """PLI (RFC 4585 section 6.3.1)."""

    sender_ssrc: int
    media_ssrc: int

    @classmethod
    def parse(cls, data: bytes) -> PictureLossIndication:
        sender, media, fci = _feedback(data, PSFB, PLI_FMT, "PLI")
        if fci:
            raise RtcpError(f"PLI: {len(fci)} unexpected bytes of FCI")
        return cls(sender, media)

    def __bytes__(self) -> bytes:
        return _feedback_bytes(PSFB, PLI_FMT, self.sender_ssrc, self.media_ssrc, b"")


@dataclass(frozen=True)
class FullIntraRequest:
    """FIR (RFC 5104 section 4.3.1): entries of (media SSRC, command sequence number)."""

    sender_ssrc: int
    media_ssrc: int = 0
    entries: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes) -> FullIntraRequest:
        sender, media, fci = _feedback(data, PSFB, FIR_FMT, "FIR")
        if not fci or len(fci) % 8:
            raise RtcpError(f"FIR: FCI of {len(fci)} bytes is not a list of 8-byte entries")
        return cls(sender, media, [(ssrc, word >> 24) for ssrc, word in struct.iter_unpack("!II", fci)])

    def __bytes__(self) -> bytes:
        fci = b"".join(struct.pack("!IBxxx", ssrc, sequence) for ssrc, sequence in self.entries)
        return _feedback_bytes(PSFB, FIR_FMT, self.sender_ssrc, self.media_ssrc, fci)


@dataclass(frozen=True)
class Remb:
    """Receiver Estimated Maximum Bitrate (draft-alvestrand-rmcat-remb), bits per second."""

    sender_ssrc: int
    bitrate: int
    ssrcs: list[int] = field(default_factory=list)
    media_ssrc: int = 0

    @classmethod
    def parse(cls, data: bytes) -> Remb:
        sender, media, fci = _feedback(data, PSFB, AFB_FMT, "REMB")
        if len(fci) < 8 or fci[:4] != b"REMB":
            raise RtcpError("REMB: FCI does not start with 'REMB'")
        count = fci[4]
        if len(fci) != 8 + 4 * count:
            raise RtcpError(f"REMB: FCI of {len(fci)} bytes for {count} SSRCs")
        exponent = fci[5] >> 2
        mantissa = int.from_bytes(fci[5:8], "big") & 0x3FFFF
        return cls(sender, mantissa << exponent, list(struct.unpack_from(f"!{count}I", fci, 8)), media)

    def __bytes__(self) -> bytes:
        exponent, mantissa = 0, self.bitrate
        while mantissa >= 1 << 18:
            mantissa >>= 1
            exponent += 1
        fci = b"REMB" + bytes((len(self.ssrcs),)) + ((exponent << 18) | mantissa).to_bytes(3, "big")
        fci += struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        return _feedback_bytes(PSFB, AFB_FMT, self.sender_ssrc, self.media_ssrc, fci)


@dataclass(frozen=True)
class UnknownRtcp:
    """Any other packet (APP, XR, transport-cc...): kept as its header fields and payload."""

    packet_type: int
    count: int
    payload: bytes

    @classmethod
    def parse(cls, data: bytes) -> UnknownRtcp:
        count, packet_type, payload = _unpack(data, tuple(range(192, 224)), "RTCP")
        return cls(packet_type, count, payload)

    def __bytes__(self) -> bytes:
        return _header(self.packet_type, self.count, len(self.payload)) + self.payload


RtcpPacket = (
    SenderReport
    | ReceiverReport
    | SourceDescription
    | Bye
    | GenericNack
    | PictureLossIndication
    | FullIntraRequest
    | Remb
    | UnknownRtcp
)


def parse_packet(data: bytes) -> RtcpPacket:
    """One whole RTCP packet, by its type (and feedback message type)."""
    if len(data) < 4:
        raise RtcpError(f"{len(data)} bytes is too short for an RTCP header")
    fmt, packet_type = data[0] & 0x1F, data[1]
    if packet_type == SR:
        return SenderReport.parse(data)
    if packet_type == RR:
        return ReceiverReport.parse(data)
    if packet_type == SDES:
        return SourceDescription.parse(data)
    if packet_type == BYE:
        return Bye.parse(data)
    if packet_type == RTPFB and fmt == NACK_FMT:
        return GenericNack.parse(data)
    if packet_type == PSFB and fmt == PLI_FMT:
        return PictureLossIndication.parse(data)
    if packet_type == PSFB and fmt == FIR_FMT:
        return FullIntraRequest.parse(data)
    if packet_type == PSFB and fmt == AFB_FMT and data[12:16] == b"REMB":
        return Remb.parse(data)
    return UnknownRtcp.parse(data)


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Every packet of a compound (or reduced-size) RTCP packet; raises RtcpError."""
    if not data:
        raise RtcpError("empty RTCP packet")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 4:
            raise RtcpError(f"packet {len(packets) + 1}: {len(data) - offset} bytes left, too short for a header")
        if data[offset] >> 6 != 2:
            raise RtcpError(f"packet {len(packets) + 1}: RTCP version {data[offset] >> 6}, expected 2")
        if not 192 <= data[offset + 1] <= 223:
            raise RtcpError(f"packet {len(packets) + 1}: packet type {data[offset + 1]} is not RTCP")
        length = 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
        if offset + length > len(data):
            raise RtcpError(f"packet {len(packets) + 1}: length field says {length} bytes, {len(data) - offset} left")
        try:
            packets.append(parse_packet(data[offset : offset + length]))
        except RtcpError as error:
            raise RtcpError(f"packet {len(packets) + 1}: {error}") from error
        offset += length
    return packets
