"""Transport-wide feedback from a bench viewer, as Chromium sends it to a server that numbers its packets.

The server numbers every packet to a viewer in the transport-wide sequence
header extension (draft-holmer-rmcat-transport-wide-cc-extensions-01, section
2; an RFC 8285 one-byte element, in the clear in SRTP). The viewer answers
with RTCP transport feedback (RTPFB, FMT 15, section 3.1): from a base
sequence number on, whether each packet arrived and when, in 250 us deltas
after a reference time in 64 ms units. Chromium sends one every 50 to 250 ms
(100 ms by default, 50 ms at these bit rates); the bench's viewers send one
every :data:`FEEDBACK_INTERVAL`.

A cheap viewer does not read its RTP: its socket filter keeps only the
packets whose transport-wide sequence number is a multiple of
:data:`SAMPLE_EVERY`, cut to their header, each with the kernel's arrival
stamp (see :class:`fanout_bench.load.viewer.SampledRtpFilter`). Its feedback
reports every packet up to the last one sampled as received, at arrival times
interpolated between the samples' stamps: the server reads as many packets
per message as from a browser and finds each in its send history, and the
load side pays for a few datagrams a viewer, not one per packet. A sample
viewer reads every packet, so its feedback is exact. Packets the kernel lost
between two samples are reported as received (the bench's steps lose at most
1%).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

RTPFB = 205
FMT_TRANSPORT_CC = 15
DELTA_MICROS = 250
REFERENCE_MICROS = 64_000
FEEDBACK_INTERVAL = 0.1  # seconds between a viewer's feedback messages (Chromium's default)
SAMPLE_EVERY = 32  # a cheap viewer's filter keeps the packets numbered a multiple of this
MAX_STATUS_COUNT = 0x1FFF  # the most packets one message can report (a run length chunk's count)
# The most packets one of the writer's messages reports: about 1 KB, under any MTU (as a browser, it
# sends several after a long gap; libsrtp takes no packet above 1500 bytes either).
MESSAGE_PACKETS = 1000
SEQUENCE_SPAN = 1 << 16


def transport_sequence(packet: bytes, extension_id: int) -> int | None:
    """The transport-wide sequence number in an RTP packet's one-byte-header extension
    (RFC 8285; SRTP leaves the header in the clear), or None if it has none."""
    if len(packet) < 12 or not packet[0] & 0x10:
        return None
    offset = 12 + 4 * (packet[0] & 0x0F)
    if len(packet) < offset + 4 or packet[offset : offset + 2] != b"\xbe\xde":
        return None
    end = offset + 4 + 4 * struct.unpack_from("!H", packet, offset + 2)[0]
    position = offset + 4
    end = min(end, len(packet))
    while position < end:
        byte = packet[position]
        if byte == 0:  # padding
            position += 1
            continue
        element, length = byte >> 4, (byte & 0x0F) + 1
        if element == 15:
            return None
        if element == extension_id and length == 2 and position + 3 <= end:
            return int(struct.unpack_from("!H", packet, position + 1)[0])
        position += 1 + length
    return None


def build_transport_feedback(
    *,
    sender_ssrc: int,
    media_ssrc: int,
    base_sequence: int,
    arrivals_micros: Sequence[int | None],
    feedback_count: int,
) -> bytes:
    """One RTCP transport feedback packet: the packets from ``base_sequence`` on, each
    received at a time in microseconds on the receiver's clock (non-negative) or not (None).

    The reference time is the first arrival's 64 ms unit, so every delta fits a
    byte unless packets arrive more than 63.75 ms apart (or out of order):
    those take two bytes. Equal status symbols go in run length chunks (seven
    or more in a row), the rest in status vectors of seven two-bit symbols.
    """
    count = len(arrivals_micros)
    if not 1 <= count <= MAX_STATUS_COUNT:
        raise ValueError(f"a feedback message reports 1 to {MAX_STATUS_COUNT} packets, not {count}")
    first = next((at for at in arrivals_micros if at is not None), 0)
    reference = first // REFERENCE_MICROS
    last = reference * REFERENCE_MICROS
    symbols = bytearray(count)
    deltas = bytearray()
    for index, at in enumerate(arrivals_micros):
        if at is None:
            continue
        delta = (at - last) // DELTA_MICROS
        if 0 <= delta <= 0xFF:
            symbols[index] = 1
            deltas.append(delta)
        else:
            delta = max(-0x8000, min(0x7FFF, delta))
            symbols[index] = 2
            deltas += struct.pack("!h", delta)
        last += delta * DELTA_MICROS
    chunks = bytearray()
    position = 0
    while position < count:
        symbol = symbols[position]
        run = position + 1
        while run < count and symbols[run] == symbol:
            run += 1
        if run - position >= 7:
            chunks += struct.pack("!H", (symbol << 13) | (run - position))  # run length chunk
            position = run
            continue
        vector = 0xC000  # two-bit status vector: seven symbols
        for offset, value in enumerate(symbols[position : position + 7]):
            vector |= value << (12 - 2 * offset)
        chunks += struct.pack("!H", vector)
        position += 7
    body = struct.pack(
        "!IIHHI",
        sender_ssrc,
        media_ssrc,
        base_sequence % SEQUENCE_SPAN,
        count,
        ((reference & 0xFFFFFF) << 8) | (feedback_count & 0xFF),
    )
    body += chunks + deltas
    body += bytes(-len(body) % 4)
    return struct.pack("!BBH", 0x80 | FMT_TRANSPORT_CC, RTPFB, len(body) // 4) + body


class FeedbackWriter:
    """One viewer's transport feedback: takes the packets it saw (all, or a sample), and writes
    messages about every packet since the last ones up to the last one seen.

    Sequence numbers are extended past their 16-bit wrap; arrival times are
    microseconds on any clock that starts near zero for this viewer.
    """

    def __init__(self, sender_ssrc: int, media_ssrc: int) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc
        self.written = 0  # messages
        self.packets_reported = 0
        self._highest: int | None = None  # extended, the highest seen
        self._seen: list[tuple[int, int]] = []  # (extended sequence, arrival) since the last message
        self._anchor: tuple[int, int] | None = None  # the last packet reported, with its arrival

    def received(self, sequence: int, arrival_micros: int) -> None:
        if self._highest is None:
            extended = sequence
        else:
            extended = self._highest + ((sequence - self._highest + 0x8000) % SEQUENCE_SPAN) - 0x8000
        if self._anchor is not None and extended <= self._anchor[0]:
            return  # reported already (a late duplicate or a retransmission)
        if self._highest is None or extended > self._highest:
            self._highest = extended
        self._seen.append((extended, arrival_micros))

    def messages(self) -> list[bytes]:
        """Transport feedback about the packets since the last messages (none if none was seen):
        one message, or several of :data:`MESSAGE_PACKETS` after a long gap."""
        if not self._seen:
            return []
        seen = sorted(self._seen)
        self._seen.clear()
        anchor = self._anchor or seen[0]
        base = anchor[0] + 1 if self._anchor is not None else anchor[0]
        top = seen[-1][0]
        if top - base + 1 > MAX_STATUS_COUNT:  # a long silence, or a jump: the latest packets only
            seen = [item for item in seen if item[0] > top - MAX_STATUS_COUNT]
            base, anchor = seen[0][0], seen[0]
        arrivals: list[int | None] = []
        previous_sequence, previous_at = anchor
        if base == anchor[0]:
            arrivals.append(anchor[1])
        for sequence, at in seen:
            if sequence < base:
                continue
            at = max(at, previous_at)
            gap = sequence - previous_sequence
            if gap > 0:
                step = at - previous_at
                arrivals += [previous_at + step * index // gap for index in range(1, gap + 1)]
            previous_sequence, previous_at = sequence, at
        self._anchor = (previous_sequence, previous_at)
        messages = []
        for start in range(0, len(arrivals), MESSAGE_PACKETS):
            part = arrivals[start : start + MESSAGE_PACKETS]
            messages.append(
                build_transport_feedback(
                    sender_ssrc=self.sender_ssrc,
                    media_ssrc=self.media_ssrc,
                    base_sequence=base + start,
                    arrivals_micros=part,
                    feedback_count=self.written,
                )
            )
            self.written += 1
        self.packets_reported += len(arrivals)
        return messages
