"""One bench viewer: a real WebRTC client of the Janus Streaming API.

It creates a session, attaches the streaming plugin, watches a mountpoint,
answers the offer, completes ICE (controlling against ICE-lite, controlled
against full ICE) and the DTLS-SRTP handshake as the client (setup:active),
and waits for the first video packet (servers start video at a keyframe).
Then:

- a *cheap* viewer stops reading: a socket filter (:class:`RtpDropFilter`)
  has the kernel drop every RTP datagram on arrival, counting it in the
  socket's drops (/proc/net/udp), and queue the rest (RTCP, STUN), which
  :meth:`Viewer.drain` counts when asked. It keeps sending consent checks (RFC 7675) so an ICE-lite server
  keeps sending;
- a *sample* viewer reads and decrypts everything (:class:`MediaMeter`).

With ``feedback`` a viewer accepts the transport-wide sequence extension in
its answer and sends transport feedback (:mod:`fanout_bench.load.feedback`)
when its pool asks, every 100 ms: a cheap one's filter
(:class:`SampledRtpFilter`) then keeps one RTP packet in
:data:`~fanout_bench.load.feedback.SAMPLE_EVERY`, cut to its header, which it
reads with the kernel's arrival stamp and counts beside the kernel's drops.

Over ICE-TCP (``transport="tcp"``, RFC 6544) the viewer connects to the
server's passive TCP candidate and speaks RFC 4571 frames; a cheap TCP viewer
cannot leave its RTP to a socket filter (a connection nobody reads stalls the
server's sends), so it reads everything and counts the frames by their headers
(:class:`FrameCounter`). The host's family (IPv4 or IPv6) picks the server's
candidates of that family.

Both keep the Janus session alive (see :mod:`fanout_bench.load.pool`).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import socket
import struct
import time
from dataclasses import dataclass

import pylibsrtp

from fanout.webrtc.dtls import (
    SRTP_PROFILES,
    DtlsCertificate,
    DtlsClosedEvent,
    DtlsConnectedEvent,
    DtlsTransport,
    SrtpKeys,
)
from fanout.webrtc.sdp import TRANSPORT_CC_URI, SdpError, parse_description
from fanout.webrtc.tcp import FrameError, FrameReader, frame
from fanout_bench.load.answer import build_answer
from fanout_bench.load.feedback import SAMPLE_EVERY, FeedbackWriter, transport_sequence
from fanout_bench.load.ice import Address, IceClient
from fanout_bench.load.media import _PROFILES as SRTP_POLICIES
from fanout_bench.load.media import MediaMeter
from fanout_bench.load.signaling import JanusApi, JanusError

logger = logging.getLogger(__name__)

SRTP_CHOICES = {profile.name: profile for profile in SRTP_PROFILES}
CHEAP_RCVBUF = 256 << 10  # the few datagrams besides RTP wait there to be counted
SO_ATTACH_FILTER = 26
CHECK_INTERVAL = 0.05
SO_RCVBUFFORCE = 33
SAMPLE_RCVBUF = 4 << 20
STEP_TIMEOUT = 20.0
VIDEO_SIZE = 600  # an SRTP datagram this large is video (audio packets are ~150 bytes)
SO_TIMESTAMPNS = 35  # Linux (asm-generic); the control message's type has the option's number
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
TIMESPEC = struct.Struct("@qq")  # struct timespec: seconds, nanoseconds (CLOCK_REALTIME)
TIMESTAMP_SPACE = socket.CMSG_SPACE(TIMESPEC.size)


class RtpDropFilter:
    """A classic BPF socket filter that drops RTP and keeps everything else (RFC 7983, RFC 5761).

    A socket filter sees the datagram from its UDP header: byte 8 is the first
    payload byte. RTP (first byte 128..191, second byte outside RTCP's
    192..223) is dropped, which the kernel counts in the socket's drops
    (/proc/net/udp): the exact count of RTP datagrams delivered. STUN, DTLS and
    RTCP are queued, and :meth:`Viewer.drain` counts them.
    """

    LDB_ABS, JGE_K, RET_K = 0x30, 0x35, 0x06
    INSTRUCTIONS = (
        (LDB_ABS, 0, 0, 8),  # 0: A = payload[0]
        (JGE_K, 0, 4, 128),  # 1: A >= 128 ? 2 : keep
        (JGE_K, 3, 0, 192),  # 2: A >= 192 ? keep : 3
        (LDB_ABS, 0, 0, 9),  # 3: A = payload[1]
        (JGE_K, 0, 2, 192),  # 4: A >= 192 ? 5 : drop
        (JGE_K, 1, 0, 224),  # 5: A >= 224 ? drop : keep (RTCP)
        (RET_K, 0, 0, 0xFFFFFFFF),  # 6: keep
        (RET_K, 0, 0, 0),  # 7: drop
    )

    def __init__(self) -> None:
        code = b"".join(struct.pack("=HBBI", *instruction) for instruction in self.INSTRUCTIONS)
        self._buffer = ctypes.create_string_buffer(code)
        # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
        self.program = struct.pack("HxxxxxxQ", len(self.INSTRUCTIONS), ctypes.addressof(self._buffer))


RTP_DROP_FILTER = RtpDropFilter()


class SampledRtpFilter:
    """A classic BPF socket filter for a cheap viewer that sends transport feedback: of RTP, it
    keeps only the packets whose transport-wide sequence number is a multiple of
    :data:`SAMPLE_EVERY`, cut to :data:`SAMPLE_BYTES`, and drops the rest (counted in the
    socket's drops); it keeps everything else, as :class:`RtpDropFilter`.

    The number is where fanout writes it when it is the packet's only header extension and
    the source sent no CSRCs (the bench's does not): a one-word RFC 8285 block right after
    the fixed header, its element's id byte, then the number. A dropped packet costs three
    one-byte loads (the committed run of 2026-12-04 took five: loopback runs the filter in
    the sender's context, so its cost showed in fanout's CPU); only the samples are checked
    for the element's id.
    """

    LDB_ABS, JEQ_K, JGE_K, JSET_K, RET_K = 0x30, 0x15, 0x35, 0x45, 0x06
    UDP = 8  # the payload's offset in what a socket filter sees
    ELEMENT = UDP + 12 + 4  # the element's id byte, after the fixed header and the 0xBEDE word
    SAMPLE_BYTES = 40  # RTP header, the extension block, a little payload

    def __init__(self, extension_id: int) -> None:
        keep, drop = 11, 12
        instructions = (
            (self.LDB_ABS, 0, 0, self.UDP),  # 0: A = payload[0]
            (self.JGE_K, 0, keep - 2, 128),  # 1: A >= 128 ? 2 : keep
            (self.JGE_K, keep - 3, 0, 192),  # 2: A >= 192 ? keep : 3
            (self.LDB_ABS, 0, 0, self.UDP + 1),  # 3: A = payload[1]
            (self.JGE_K, 0, 1, 192),  # 4: A >= 192 ? 5 : RTP
            (self.JGE_K, 0, keep - 6, 224),  # 5: A >= 224 ? RTP : keep (RTCP)
            (self.LDB_ABS, 0, 0, self.ELEMENT + 2),  # 6 (RTP): A = the number's low byte
            (self.JSET_K, drop - 8, 0, SAMPLE_EVERY - 1),  # 7: not a multiple ? drop : 8
            (self.LDB_ABS, 0, 0, self.ELEMENT),  # 8: A = the element's id and length
            (self.JEQ_K, 0, drop - 10, (extension_id << 4) | 1),  # 9: the transport-wide number ? sample : drop
            (self.RET_K, 0, 0, self.UDP + self.SAMPLE_BYTES),  # 10: sample, cut short
            (self.RET_K, 0, 0, 0xFFFFFFFF),  # 11: keep
            (self.RET_K, 0, 0, 0),  # 12: drop
        )
        code = b"".join(struct.pack("=HBBI", *instruction) for instruction in instructions)
        self._buffer = ctypes.create_string_buffer(code)
        self.program = struct.pack("HxxxxxxQ", len(instructions), ctypes.addressof(self._buffer))


class FrameCounter:
    """Counts RFC 4571 frames in a TCP byte stream without keeping them: RTP, and the rest."""

    def __init__(self) -> None:
        self.rtp = 0
        self.other = 0
        self._skip = 0  # bytes of the current frame still to come
        self._head = b""  # a cut length or first byte

    def feed(self, data: memoryview) -> None:
        position = 0
        if self._head:
            data = memoryview(self._head + bytes(data))
            self._head = b""
        end = len(data)
        position = min(self._skip, end)
        self._skip -= position
        while position < end:
            if end - position < 4:
                self._head = bytes(data[position:end])
                return
            length = (data[position] << 8) | data[position + 1]
            first, second = data[position + 2], data[position + 3]
            if 128 <= first <= 191 and not 192 <= second <= 223:
                self.rtp += 1
            else:
                self.other += 1
            position += 2 + length
            if position > end:
                self._skip = position - end
                return


class JoinError(RuntimeError):
    """A viewer could not get to media; the message says at which step."""


@dataclass
class JoinTimes:
    """Seconds from the watch request."""

    offer: float = 0.0
    ice: float = 0.0
    dtls: float = 0.0
    first_packet: float = 0.0  # the first video packet: video starts at a keyframe
    first_frame: float | None = None  # sample viewers only


class Viewer:
    def __init__(
        self,
        api: JanusApi,
        *,
        mountpoint: int,
        host: str,
        certificate: DtlsCertificate,
        srtp_profile: str,
        sample: bool,
        transport: str = "udp",
        feedback: bool = False,
    ) -> None:
        self.api = api
        self.mountpoint = mountpoint
        self.host = host
        self.certificate = certificate
        self.profile = SRTP_CHOICES[srtp_profile]
        self.sample = sample
        self.transport = transport
        self.feedback = feedback
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
        self.sock = socket.socket(self.family, kind)
        self.sock.setblocking(False)
        if sample:  # room for a second of 9.6 Mbit/s should the load core stall the reader
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, SAMPLE_RCVBUF)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SAMPLE_RCVBUF)
            if transport == "udp":  # each datagram's arrival, stamped by the kernel: the reader's delay is told apart
                self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.inode = os.fstat(self.sock.fileno()).st_ino
        self.ice: IceClient | None = None
        self.dtls: DtlsTransport | None = None
        self.remote: Address | None = None
        self.meter: MediaMeter | None = None
        self.keys: SrtpKeys | None = None
        self.times = JoinTimes()
        self.state = "new"
        self.drained = 0
        self.socket_drops = 0  # a sample viewer's: what its socket dropped, as last read
        self.next_consent = 0.0
        self.next_keepalive = 0.0
        self._loop = asyncio.get_running_loop()
        self._reading = False
        self._nominated: asyncio.Future[Address] = self._loop.create_future()
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self._first_packet: asyncio.Future[None] = self._loop.create_future()
        self._dtls_timer: asyncio.TimerHandle | None = None
        self._watch_ns = 0
        self._frames = FrameReader()
        self.counter: FrameCounter | None = None  # a cheap TCP viewer's, once up
        self._discard = bytearray(1 << 18)
        self.handle_id: int | None = None
        # Transport feedback (``feedback``): the extension's id in the offer, what writes the
        # messages, the SRTCP session that protects them; a cheap viewer's sampled RTP read.
        self.transport_cc_id: int | None = None
        self.feedback_writer: FeedbackWriter | None = None
        self._srtcp: pylibsrtp.Session | None = None
        self._media_ssrc = 0
        self._sampling = False
        self.sampled_rtp = 0
        self.feedback_sent = 0
        self._sampling_filter: SampledRtpFilter | None = None

    # Joining.

    async def join(self) -> JoinTimes:
        try:
            return await self._join()
        except (
            TimeoutError,
            JoinError,
            JanusError,
            SdpError,
            OSError,
            KeyError,
            ValueError,
        ) as error:
            self.state = "failed"
            self.close()
            raise JoinError(f"{self.state_step}: {type(error).__name__}: {error}") from error

    state_step = "session"

    async def _join(self) -> JoinTimes:
        self.state_step = "session"
        await self.api.create()
        handle = self.handle_id = await self.api.attach()
        self.state_step = "watch"
        start = time.monotonic()
        self._watch_ns = time.monotonic_ns()
        reply = await self.api.message(handle, {"request": "watch", "id": self.mountpoint})
        offer_text = (reply.get("jsep") or {}).get("sdp")
        while offer_text is None:
            event = await self.api.next_event(handle, STEP_TIMEOUT)
            data = event.get("plugindata", {}).get("data", {})
            if "error" in data:
                raise JanusError(f"watch: {data['error']}")
            offer_text = (event.get("jsep") or {}).get("sdp")
        self.times.offer = time.monotonic() - start
        offer = parse_description(offer_text)
        if self.feedback:
            self.transport_cc_id = next(
                (m.header_extension_id(TRANSPORT_CC_URI) for m in offer.media if m.header_extension_id(TRANSPORT_CC_URI)),
                None,
            )
            if self.transport_cc_id is None:
                raise JoinError("offer: no transport-wide sequence extension (fanout: transport_cc = \"all\")")
            if self.transport == "tcp":
                raise JoinError("transport feedback: UDP viewers only")
            self._media_ssrc = next((m.ssrcs[0] for m in offer.media if m.kind == "video" and m.ssrcs), 0)
        self.ice = ice = IceClient(controlling=offer.ice_lite)
        ice.set_remote(offer.ice_ufrag, offer.ice_pwd)
        ipv6 = self.family == socket.AF_INET6
        candidates = [
            (c.ip, c.port)
            for c in offer.candidates
            if c.transport.lower() == self.transport and c.component == 1 and (":" in c.ip) == ipv6
            and (self.transport == "udp" or c.tcptype == "passive")
        ]
        if not candidates:
            raise JoinError(f"offer: no {'IPv6' if ipv6 else 'IPv4'} {self.transport.upper()} candidate")
        if self.transport == "tcp":
            self.state_step = "connect"
            await asyncio.wait_for(self._loop.sock_connect(self.sock, candidates[0]), STEP_TIMEOUT)
            candidates = candidates[:1]
        self.dtls = DtlsTransport(
            self.certificate,
            is_server=False,
            remote_fingerprints=offer.fingerprints,
            profiles=(self.profile,),
        )
        self._start_reading()
        answer = build_answer(
            offer,
            ice_ufrag=ice.local_ufrag,
            ice_pwd=ice.local_pwd,
            fingerprint=self.certificate.fingerprint("sha-256"),
            host=self.host,
            port=self.port,
            transport=self.transport,
            transport_cc=self.feedback,
        )
        self.state_step = "start"
        await self.api.message(handle, {"request": "start"}, {"type": "answer", "sdp": answer})
        await self.api.trickle_completed(handle)
        self.state_step = "ice"
        checks = self._loop.create_task(self._send_checks(candidates))
        try:
            self.remote = await asyncio.wait_for(asyncio.shield(self._nominated), STEP_TIMEOUT)
        finally:
            checks.cancel()
        self.times.ice = time.monotonic() - start
        self.state_step = "dtls"
        self.dtls.start(self._loop.time())
        self._flush_dtls()
        await asyncio.wait_for(asyncio.shield(self._connected), STEP_TIMEOUT)
        self.times.dtls = time.monotonic() - start
        self.state_step = "media"
        await asyncio.wait_for(asyncio.shield(self._first_packet), STEP_TIMEOUT)
        self.times.first_packet = time.monotonic() - start
        self.api.stop_events()
        if not self.sample and self.transport == "tcp":
            self.counter = FrameCounter()
            self.counter.feed(memoryview(self._frames.take_pending()))  # where the frame reader stopped
            self._stop_reading()
            self._loop.add_reader(self.sock.fileno(), self._count_frames)
            self._reading = True
        elif not self.sample and self.transport_cc_id is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CHEAP_RCVBUF)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self._sampling_filter = SampledRtpFilter(self.transport_cc_id)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, self._sampling_filter.program)
            self._stop_reading()
            self._sampling = True
        elif not self.sample:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CHEAP_RCVBUF)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, RTP_DROP_FILTER.program)
            self._stop_reading()
        self.state = "up"
        return self.times

    async def _send_checks(self, candidates: list[Address]) -> None:
        assert self.ice is not None
        while True:
            for address in candidates:
                self._send(self.ice.check_request(address), address)
            await asyncio.sleep(CHECK_INTERVAL)

    # I/O.

    def _send(self, data: bytes, address: Address) -> None:
        try:
            if self.transport == "tcp":
                self.sock.send(frame(data))  # a few small frames: the socket's buffer takes them whole
            else:
                self.sock.sendto(data, address)
        except (BlockingIOError, OSError):
            pass

    def _start_reading(self) -> None:
        if not self._reading:
            self._loop.add_reader(self.sock.fileno(), self._readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.sock.fileno())
            self._reading = False

    def _readable(self) -> None:
        if self.transport == "tcp":
            self._read_frames()
            return
        if self.sample:
            self._read_stamped()
            return
        for _ in range(256):
            try:
                data, address = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self._datagram(data, address, time.monotonic_ns())

    def _read_stamped(self) -> None:
        """A sample viewer's reads: each datagram with the kernel's arrival stamp, as CLOCK_MONOTONIC."""
        realtime_offset = time.time_ns() - time.monotonic_ns()
        for _ in range(256):
            try:
                data, ancillary, _flags, address = self.sock.recvmsg(2048, TIMESTAMP_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            now_ns = time.monotonic_ns()
            arrived_ns = None
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(value) >= TIMESPEC.size:
                    seconds, nanoseconds = TIMESPEC.unpack_from(value)
                    arrived_ns = seconds * 1_000_000_000 + nanoseconds - realtime_offset
            self._datagram(data, address, now_ns, arrived_ns)

    def _read_frames(self) -> None:
        try:
            data = self.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._stop_reading()
            return
        now_ns = time.monotonic_ns()
        try:
            frames = self._frames.feed(data)
        except FrameError:
            self._stop_reading()
            return
        remote = self.sock.getpeername()[:2]
        for packet in frames:
            self._datagram(packet, remote, now_ns)

    def _count_frames(self) -> None:
        assert self.counter is not None
        try:
            size = self.sock.recv_into(self._discard)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            size = 0
        if size == 0:
            self._stop_reading()
            return
        self.counter.feed(memoryview(self._discard)[:size])

    def _datagram(self, data: bytes, address: Address, now_ns: int, arrived_ns: int | None = None) -> None:
        if not data:
            return
        first = data[0]
        if 128 <= first <= 191:
            if len(data) > 1 and 192 <= data[1] <= 223:
                if self.meter is not None:
                    self.meter.other()
                return
            if len(data) >= VIDEO_SIZE and not self._first_packet.done():
                self._first_packet.set_result(None)
            if self.feedback_writer is not None and self.transport_cc_id is not None:
                sequence = transport_sequence(data, self.transport_cc_id)
                if sequence is not None:
                    self.feedback_writer.received(sequence, ((arrived_ns or now_ns) - self._watch_ns) // 1000)
            if self.meter is not None:
                self.meter.rtp(data, now_ns, arrived_ns)
                if self.times.first_frame is None and self.meter.first_frame_ns is not None:
                    self.times.first_frame = (self.meter.first_frame_ns - self._watch_ns) / 1e9
            return
        if self.meter is not None:
            self.meter.other()
        if first < 4 and self.ice is not None:
            result = self.ice.receive(data, address)
            if result.response is not None:
                self._send(result.response, address)
            if result.nominated is not None and not self._nominated.done():
                self._nominated.set_result(result.nominated)
        elif 20 <= first <= 63 and self.dtls is not None and self.remote is not None:
            self.dtls.receive(data, self._loop.time())
            self._flush_dtls()

    def _flush_dtls(self) -> None:
        assert self.dtls is not None and self.remote is not None
        for datagram in self.dtls.drain_datagrams():
            self._send(datagram, self.remote)
        for event in self.dtls.drain_events():
            if isinstance(event, DtlsConnectedEvent) and not self._connected.done():
                self.keys = event.keys
                if self.transport_cc_id is not None:
                    self.feedback_writer = FeedbackWriter(int.from_bytes(os.urandom(4)) or 1, self._media_ssrc)
                    self._srtcp = pylibsrtp.Session(
                        pylibsrtp.Policy(
                            key=event.keys.local_master_key,
                            ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                            srtp_profile=SRTP_POLICIES[event.keys.profile],
                        )
                    )
                if self.sample:
                    self.meter = MediaMeter(event.keys.profile, event.keys.remote_master_key)
                self._connected.set_result(None)
            elif isinstance(event, DtlsClosedEvent) and not self._connected.done():
                self._connected.set_exception(JoinError(f"DTLS: {event.reason}"))
        if self._dtls_timer is not None:
            self._dtls_timer.cancel()
            self._dtls_timer = None
        deadline = self.dtls.next_timeout()
        if deadline is not None:
            self._dtls_timer = self._loop.call_at(deadline, self._dtls_timeout)

    def _dtls_timeout(self) -> None:
        self._dtls_timer = None
        if self.dtls is not None and self.remote is not None:
            self.dtls.handle_timeout(self._loop.time())
            self._flush_dtls()

    # Once up.

    def pause_reading(self) -> None:
        """Read nothing more (a viewer whose window closes: over TCP the server's queue fills)."""
        self._stop_reading()

    def send_consent(self) -> None:
        if self.ice is not None and self.remote is not None:
            self._send(self.ice.consent_request(), self.remote)

    def send_feedback(self) -> None:
        """Transport feedback about the packets since the last one, if any came (a cheap
        viewer reads its samples first)."""
        if self.feedback_writer is None or self._srtcp is None or self.remote is None:
            return
        if self._sampling:
            self._read_samples()
        for message in self.feedback_writer.messages():
            self._send(self._srtcp.protect_rtcp(message), self.remote)
            self.feedback_sent += 1

    def stop_feedback(self) -> None:
        self.feedback_writer = None

    def _read_samples(self) -> None:
        """A sampling cheap viewer's queue: its sampled RTP (with the kernel's arrival stamps)
        to its feedback, the rest counted as :meth:`drain` does."""
        assert self.feedback_writer is not None and self.transport_cc_id is not None
        realtime_offset = time.time_ns() - time.monotonic_ns()
        while True:
            try:
                data, ancillary, _flags, _address = self.sock.recvmsg(SampledRtpFilter.SAMPLE_BYTES, TIMESTAMP_SPACE)
            except (BlockingIOError, InterruptedError, OSError):
                return
            if len(data) < 2 or not 128 <= data[0] <= 191 or 192 <= data[1] <= 223:
                self.drained += 1
                continue
            self.sampled_rtp += 1
            sequence = transport_sequence(data, self.transport_cc_id)
            if sequence is None:
                continue
            arrived_ns = time.monotonic_ns()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(value) >= TIMESPEC.size:
                    seconds, nanoseconds = TIMESPEC.unpack_from(value)
                    arrived_ns = seconds * 1_000_000_000 + nanoseconds - realtime_offset
            self.feedback_writer.received(sequence, (arrived_ns - self._watch_ns) // 1000)

    def drain(self) -> int:
        """Read what the kernel queued (a cheap viewer's RTCP and STUN); returns how many so far."""
        if self.counter is not None:
            return self.counter.other
        if self._sampling and self.feedback_writer is not None:
            self._read_samples()
            return self.drained
        while True:
            try:
                self.sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return self.drained
            except OSError:
                return self.drained
            self.drained += 1

    def close(self) -> None:
        self._stop_reading()
        if self._dtls_timer is not None:
            self._dtls_timer.cancel()
        for future in (self._nominated, self._connected, self._first_packet):
            if not future.done():
                future.cancel()
        self.sock.close()
        self.state = "closed"
