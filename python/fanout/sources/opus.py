"""The Opus RTP payload format (RFC 7587): one Opus packet is one RTP payload.

The RTP clock is always 48 kHz, whatever rate the encoder ran at, and the
marker bit stays clear (it marks the start of a talkspurt, and the test
source never stops sending).
"""

from __future__ import annotations

from fanout.sources.rtp import MAX_PAYLOAD_SIZE

OPUS_CLOCK_RATE = 48_000


class OpusPacketizer:
    def __init__(self, max_payload_size: int = MAX_PAYLOAD_SIZE) -> None:
        self.max_payload_size = max_payload_size

    def packetize(self, opus_packet: bytes) -> list[bytes]:
        if len(opus_packet) > self.max_payload_size:
            raise ValueError(f"an Opus packet of {len(opus_packet)} bytes does not fit in one RTP payload")
        return [opus_packet]


def depacketize(payload: bytes) -> bytes:
    return payload
