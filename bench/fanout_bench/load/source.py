"""The bench's RTP source: VP8-shaped video and Opus-sized audio, stamped.

Video is 30 frames a second, each frame's packets sent back to back, a
keyframe every second (``keyframe_factor`` times the size of an interframe),
1200-byte RTP packets, at an average of ``video_bitrate`` bit/s counting RTP
bytes. The VP8 payload descriptor (RFC 7741) marks the first packet of each
frame (S = 1, partition 0) and the VP8 frame header's P bit tells keyframes
from interframes, so servers that wait for a keyframe (fanout's
src/wire/codec.rs, Janus) let a new viewer in at the next keyframe. Audio is one
Opus-sized packet every 20 ms.

Every payload carries a :class:`Stamp` at :data:`STAMP_OFFSET`: the send time
(CLOCK_MONOTONIC, shared by every process on the machine), the frame number
and the packet's place in its frame, so a viewer measures latency and knows a
whole frame from a partial one. The source runs in its own process and counts
what it sent in shared memory, read by :meth:`RtpSource.sent` at any moment.

A measurement can :meth:`~RtpSource.hold` the source between two packets:
nothing is sent until :meth:`~RtpSource.release`, and the schedule then goes
on shifted by the pause (no catch-up burst; the RTP timestamps go on as if the
encoder had paused). While it is held, what the source sent and what each
viewer got can be read without packets in flight between them.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import random
import socket
import struct
import time
from dataclasses import dataclass

logger = logging.getLogger(__name__)

VIDEO_PT = 96
AUDIO_PT = 111
VIDEO_CLOCK = 90000
AUDIO_CLOCK = 48000
PACKET_SIZE = 1200  # RTP bytes of a full video packet
AUDIO_PAYLOAD_SIZE = 120  # ~48 kbit/s of Opus
AUDIO_INTERVAL = 0.020
FPS = 30
KEYFRAME_FACTOR = 3

STAMP_MAGIC = b"FoLd"
STAMP_OFFSET = 16  # in the RTP payload, past the VP8 descriptor and frame header
_STAMP = struct.Struct("!4sQIHH")  # magic, send time ns, frame, index in frame, packets in frame
STAMP_SIZE = _STAMP.size

# Shared counters: video packets, video bytes, audio packets, audio bytes, frames, keyframes.
VIDEO_PACKETS, VIDEO_BYTES, AUDIO_PACKETS, AUDIO_BYTES, FRAMES, KEYFRAMES = range(6)


@dataclass(frozen=True)
class Stamp:
    sent_ns: int
    frame: int
    index: int
    count: int

    @classmethod
    def find(cls, payload: bytes) -> Stamp | None:
        """The stamp in an RTP payload, or None if it has none."""
        if payload[STAMP_OFFSET : STAMP_OFFSET + 4] != STAMP_MAGIC:
            return None
        _, sent_ns, frame, index, count = _STAMP.unpack_from(payload, STAMP_OFFSET)
        return cls(sent_ns, frame, index, count)


@dataclass(frozen=True)
class SourceShape:
    video_bitrate: float  # bit/s of video RTP
    fps: int = FPS
    keyframe_factor: int = KEYFRAME_FACTOR
    packet_size: int = PACKET_SIZE

    def frame_packets(self) -> list[int]:
        """Packets of each frame over one second (index 0 is the keyframe), averaging the bit rate."""
        units = self.fps - 1 + self.keyframe_factor
        per_unit = self.video_bitrate / 8 / self.packet_size / units
        counts: list[int] = []
        total = 0.0
        for frame in range(self.fps):
            total += per_unit * (self.keyframe_factor if frame == 0 else 1)
            counts.append(max(1, round(total) - sum(counts)))
        return counts

    @property
    def packets_per_second(self) -> int:
        return sum(self.frame_packets()) + round(1 / AUDIO_INTERVAL)


def rtp_header(payload_type: int, marker: bool, sequence: int, timestamp: int, ssrc: int) -> bytes:
    return struct.pack(
        "!BBHII",
        0x80,
        (0x80 if marker else 0) | payload_type,
        sequence & 0xFFFF,
        timestamp & 0xFFFFFFFF,
        ssrc,
    )


def vp8_payload(size: int, first: bool, keyframe: bool) -> bytearray:
    """A VP8-looking payload of ``size`` bytes with room for the stamp."""
    payload = bytearray(size)
    if first:
        payload[0] = 0x10  # S = 1, partition index 0, no extension
        # VP8 frame header (RFC 6386 9.1): P bit 0 for a keyframe, then the start code and 640x360.
        payload[1] = 0x00 if keyframe else 0x01
        payload[4:7] = b"\x9d\x01\x2a"
        payload[7:11] = struct.pack("<HH", 640, 360)
    return payload


class RtpSource:
    """Sends the stream to a server's RTP ports from a child process."""

    def __init__(
        self,
        shape: SourceShape,
        video: tuple[str, int],
        audio: tuple[str, int],
        *,
        cpu: int | None = None,
    ) -> None:
        self.shape = shape
        self.video = video
        self.audio = audio
        self.cpu = cpu
        context = multiprocessing.get_context("fork")
        self._counters = context.Array("q", 6, lock=False)
        self._stop = context.Event()
        self._hold = context.Event()  # asked by the bench: send nothing more
        self._held = context.Event()  # the child's answer: nothing more is sent until released
        self._process = context.Process(target=self._run, name="fanout-bench-source", daemon=True)

    def start(self) -> RtpSource:
        self._process.start()
        return self

    def sent(self) -> dict[str, int]:
        counters = list(self._counters)
        return {
            "video_packets": counters[VIDEO_PACKETS],
            "video_bytes": counters[VIDEO_BYTES],
            "audio_packets": counters[AUDIO_PACKETS],
            "audio_bytes": counters[AUDIO_BYTES],
            "frames": counters[FRAMES],
            "keyframes": counters[KEYFRAMES],
        }

    async def hold(self, timeout: float = 10.0) -> None:
        """Stops sending between two packets; returns once nothing more will be sent."""
        self._hold.set()
        deadline = time.monotonic() + timeout
        while not self._held.is_set():
            if time.monotonic() > deadline or not self._process.is_alive():
                raise RuntimeError("the RTP source did not pause")
            await asyncio.sleep(0.001)

    def release(self) -> None:
        """Sending goes on, the schedule shifted by the pause."""
        self._hold.clear()

    def stop(self) -> None:
        self._stop.set()
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    def _open_socket(self) -> socket.socket:
        """The socket the child sends from (a subclass may hand over one it holds)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
        return sock

    def _send(self, sock: socket.socket, packet: bytes, address: tuple[str, int]) -> None:
        """One RTP packet out, in the child, right after its stamp was written."""
        sock.sendto(packet, address)

    def _paused(self) -> float:
        """In the child: sends nothing until released (or stopped); returns how long that was."""
        began = time.monotonic()
        self._held.set()
        while self._hold.is_set() and not self._stop.is_set():
            time.sleep(0.0005)
        self._held.clear()
        return time.monotonic() - began

    def _run(self) -> None:
        if self.cpu is not None:
            os.sched_setaffinity(0, {self.cpu})
        try:  # pacing matters more than anything else on the load core
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        except (PermissionError, OSError):
            os.nice(-5) if os.geteuid() == 0 else None
        sock = self._open_socket()
        counters = self._counters
        frame_packets = self.shape.frame_packets()
        packet_size = self.shape.packet_size
        payload_size = packet_size - 12
        first_key = vp8_payload(payload_size, True, True)
        first_inter = vp8_payload(payload_size, True, False)
        rest = vp8_payload(payload_size, False, False)
        audio_payload = bytearray(AUDIO_PAYLOAD_SIZE)
        audio_payload[0] = 0x78  # an Opus TOC byte (CELT FB 20 ms)
        video_ssrc, audio_ssrc = random.getrandbits(32), random.getrandbits(32)
        video_seq, audio_seq = random.getrandbits(16), random.getrandbits(16)
        video_ts0, audio_ts0 = random.getrandbits(32), random.getrandbits(32)
        start = time.monotonic()
        frame = 0
        audio_count = 0
        frame_interval = 1 / self.shape.fps
        while not self._stop.is_set():
            if self._hold.is_set():
                start += self._paused()
                continue
            next_video = start + frame * frame_interval
            next_audio = start + audio_count * AUDIO_INTERVAL
            now = time.monotonic()
            wake = min(next_video, next_audio)
            if wake > now and self._hold.wait(wake - now):
                continue  # held before this packet
            if next_audio <= next_video:
                payload = audio_payload
                _STAMP.pack_into(
                    payload,
                    STAMP_OFFSET,
                    STAMP_MAGIC,
                    time.monotonic_ns(),
                    audio_count,
                    0,
                    1,
                )
                header = rtp_header(
                    AUDIO_PT,
                    False,
                    audio_seq,
                    audio_ts0 + audio_count * 960,
                    audio_ssrc,
                )
                self._send(sock, header + payload, self.audio)
                audio_seq += 1
                audio_count += 1
                counters[AUDIO_PACKETS] += 1
                counters[AUDIO_BYTES] += 12 + len(payload)
                continue
            index_in_second = frame % self.shape.fps
            count = frame_packets[index_in_second]
            keyframe = index_in_second == 0
            timestamp = video_ts0 + frame * (VIDEO_CLOCK // self.shape.fps)
            for index in range(count):
                payload = (first_key if keyframe else first_inter) if index == 0 else rest
                _STAMP.pack_into(
                    payload,
                    STAMP_OFFSET,
                    STAMP_MAGIC,
                    time.monotonic_ns(),
                    frame,
                    index,
                    count,
                )
                header = rtp_header(VIDEO_PT, index == count - 1, video_seq, timestamp, video_ssrc)
                try:
                    self._send(sock, header + payload, self.video)
                except OSError:
                    pass  # counted as sent: the server's side of loopback dropped it
                video_seq += 1
            counters[VIDEO_PACKETS] += count
            counters[VIDEO_BYTES] += count * packet_size
            counters[FRAMES] += 1
            counters[KEYFRAMES] += keyframe
            frame += 1
