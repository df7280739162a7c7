"""fanout's data plane: the Rust engine that moves every media packet.

The one door between the planes. Python decides (which viewer watches what,
with which keys, from which address); the engine moves bytes: it receives RTP
from the mountpoints' source ports, rewrites each packet for each viewer
(SSRC, sequence number, timestamp, payload type), SRTP-protects it and sends it
from the shared WebRTC UDP socket. Python never sees an RTP packet from a source.

SRTP profile names are the RFC names: "AEAD_AES_128_GCM" and
"AES_CM_128_HMAC_SHA1_80". A master key is key || salt as exported by
DTLS-SRTP (16 + 12 bytes for GCM, 16 + 14 bytes for CM).
"""

from typing import Literal, NotRequired, Self, TypeAlias, TypedDict, final, type_check_only

SrtpProfile: TypeAlias = Literal["AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80"]
# What a source may use besides (keys given out of band, as SDES does): the
# 32-bit tag suite is for sources only, viewers' DTLS-SRTP never offers it.
SourceSrtpProfile: TypeAlias = SrtpProfile | Literal["AES_CM_128_HMAC_SHA1_32"]
SendMode: TypeAlias = Literal["gso", "sendmmsg", "sendto"]
MediaKind: TypeAlias = Literal["audio", "video", "data"]

@type_check_only
class SourceStream(TypedDict):
    """One RTP input of a mountpoint: a UDP port the engine binds and reads, or,
    without ``port``, a stream fed by the mountpoint's publisher link
    (Engine.attach_publisher). Such a stream takes no ``rtcp_port``,
    ``interface`` or ``srtp_*`` (ValueError): the link brings its SRTP and
    carries its RTCP; its StreamStats.port is 0."""

    index: int  # the stream's position in the mountpoint (its mindex)
    kind: MediaKind
    codec: str  # lower case: "vp8", "vp9", "h264", "opus", ...; the engine finds keyframes of vp8, vp9, h264, h265 and av1
    clock_rate: int  # RTP clock rate, e.g. 90000 for video, 48000 for opus
    host: NotRequired[str]  # the address to bind, e.g. "0.0.0.0" or "127.0.0.1"; needed with port
    port: NotRequired[int]  # 0 lets the kernel pick; absent: fed by the publisher link
    # The stream's RTCP port (Janus's rtcpport), bound on ``host``: None or absent
    # for none, 0 lets the kernel pick (see MountpointStats' rtcp_port). The engine
    # reads the source's RTCP there (sender reports) and sends keyframe requests
    # (RR + PLI) from it: to the address the source's RTCP came from (a port
    # shared with other streams: where a sender report naming the stream's SSRC
    # came from), else to the source's RTP address with its port + 1, else
    # nowhere; at most one per second per stream.
    rtcp_port: NotRequired[int | None]
    # Without an RTCP port of its own: the index of the stream (in the same
    # mountpoint) whose RTCP port this one shares, e.g. a simulcast substream
    # its stream's. An encoder sends each layer from a port of its own: the
    # requests for this stream name its SSRC and go to where its sender reports
    # came from, else to its RTP address with the port + 1. ValueError without
    # ``port``, with ``rtcp_port``, or when that stream has no RTCP port.
    shares_rtcp_port_of: NotRequired[int]
    # When host is a multicast group: the IPv4 address of the interface to join
    # it on (None: the one the routes choose). Both ports join the group.
    interface: NotRequired[str | None]
    # What the receiver does to each datagram before forwarding it:
    # An SRTP source (Janus's srtpsuite/srtpcrypto): both or neither; the key is
    # key || salt (30 bytes for the AES_CM suites, 28 for GCM). Packets that
    # fail authentication or replay checks are dropped and counted (undecryptable).
    srtp_profile: NotRequired[SourceSrtpProfile | None]
    srtp_master_key: NotRequired[bytes | None]
    # Janus's collision: while the SSRC that holds the stream sent a packet in
    # the last collision_ms, packets with another SSRC are dropped and counted
    # (collisions); 0 (default): a new SSRC takes over at once (a source restart).
    # (The Streaming plugin sets 500 unless a mountpoint says otherwise.)
    collision_ms: NotRequired[int]
    # The payload types the source may send (0..127): packets with another are
    # dropped and counted (wrong_payload_type), e.g. RTCP sent to the RTP port or
    # packets injected by someone else. Empty or absent: any payload type.
    payload_types: NotRequired[list[int]]
    # Janus's h264sps: H.264 parameter set NAL units (SPS, then PPS), sent as one
    # STAP-A packet before each keyframe that arrives without an SPS; the
    # packets after it are renumbered, so viewers see no gap.
    h264_parameter_sets: NotRequired[list[bytes]]
    # Janus's skew: follow the source's RTP clock against the server's and
    # correct a drift past 20 ms (audio: drop a packet, renumbering the rest)
    # or 40 ms (video: frames brought closer, at most half a frame interval
    # each, or moved later in one step), so that viewers' jitter buffers do
    # not drift over hours. Counted as skew_dropped and skew_ms.
    skew_compensation: NotRequired[bool]
    # After this many milliseconds without a packet (1..3600000; default 1000)
    # the engine reports the stream silent (SourceSilent), and SourceResumed at
    # its next packet. Changed later with Engine.set_source_silence.
    silence_ms: NotRequired[int]

@type_check_only
class ViewerStream(TypedDict):
    """What one viewer receives of one source stream."""

    index: int  # the SourceStream.index it takes its packets from
    ssrc: int  # the SSRC this viewer sees (announced in its SDP)
    payload_type: int  # the payload type this viewer sees
    # VP8, VP9, AV1: only temporal layers up to this one (0..3) from the first
    # packet on, as if set_stream_temporal_layer came first; absent or None: all.
    temporal_layer: NotRequired[int | None]
    # VP9: only spatial layers up to this one (0..7) from the first packet on,
    # as if set_stream_spatial_layer came first; absent or None: all.
    spatial_layer: NotRequired[int | None]

@type_check_only
class PublisherRoute(TypedDict):
    """Which packets of the publisher link feed one stream of the mountpoint.
    A packet goes to the stream of its SSRC if one was routed (or configured)
    already; else of its rid (and mid, if the route has one) header extensions;
    else of its mid, among routes without a rid; else of its payload type, among
    routes without a rid; else nowhere (unroutable). A match teaches the SSRC.
    A route's payload_types, when given, also filter its mid and rid matches: a
    repair stream (RTX, FEC: the same mid, another payload type) is not taken for
    the media (the engine does not unwrap RTX; answer a publisher without it)."""

    index: int  # the mountpoint's stream (one without a port)
    ssrc: NotRequired[int | None]  # packets with this SSRC (a relay knows them up front)
    mid: NotRequired[str | None]  # packets whose mid header extension is this
    rid: NotRequired[str | None]  # ... and whose rid (rtp-stream-id) extension is this: a simulcast layer
    payload_types: NotRequired[list[int]]  # packets with one of these PTs, when no SSRC/extension decided

# The stats classes: frozen, built by the engine, every field a read-only attribute.

@final
class SenderReportStats:
    """A source's latest sender report."""

    @property
    def ntp_time(self) -> int: ...  # 64-bit NTP timestamp from the source's latest sender report
    @property
    def rtp_timestamp(self) -> int: ...
    @property
    def age_ms(self) -> int: ...  # since it arrived

@final
class KeyframeCacheStats:
    """A video stream's packets since its latest keyframe (vp8, vp9, h264)."""

    @property
    def keyframe(self) -> bool: ...  # it holds one: a viewer starting now starts at once
    @property
    def packets(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def overflows(self) -> int: ...  # groups of pictures let go for growing past 8 MB, 8192 packets or 5 s

@final
class StreamStats:
    """One source stream of a mountpoint."""

    @property
    def index(self) -> int: ...
    @property
    def port(self) -> int: ...
    @property
    def packets(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def malformed(self) -> int: ...  # datagrams that were not RTP, dropped and counted
    @property
    def overruns(self) -> int: ...  # packets a worker could not take (its ring was full: the worker is overloaded)
    @property
    def last_packet_age_ms(self) -> int | None: ...  # None until the first packet arrives
    @property
    def rtcp_port(self) -> int | None: ...  # the bound RTCP port, None without one
    @property
    def rtcp_packets(self) -> int: ...  # RTCP packets received from the source
    @property
    def plis_forwarded(self) -> int: ...  # viewers' PLI/FIR sent on to the source as PLI (rate limited)
    @property
    def keyframe_requests(self) -> int: ...  # PLIs the engine sent because a viewer started with no keyframe cached
    @property
    def rembs_sent(self) -> int: ...  # bitrate estimates sent to the source (send_source_remb)
    @property
    def sender_report(self) -> SenderReportStats | None: ...  # the source's latest, None before one
    @property
    def keyframe_cache(self) -> KeyframeCacheStats | None: ...  # None for streams without one (audio, data, other codecs)
    @property
    def undecryptable(self) -> int: ...  # SRTP packets that failed authentication or replay checks, dropped
    @property
    def collisions(self) -> int: ...  # packets with another SSRC than the one holding the stream, dropped
    @property
    def wrong_payload_type(self) -> int: ...  # packets with a payload type the stream does not take, dropped
    @property
    def parameter_sets_inserted(self) -> int: ...  # H.264 parameter set packets put before keyframes
    @property
    def skew_dropped(self) -> int: ...  # audio packets dropped to pull a fast source clock back
    @property
    def lost(self) -> int: ...  # packets the source sent that never arrived (its sequence gaps, less late ones)
    @property
    def skew_ms(self) -> int: ...  # how far skew compensation has moved the timestamps (negative: back)
    @property
    def temporal_layer_bytes(self) -> list[int]: ...  # VP8, VP9, AV1: bytes of each temporal layer (TID 0-3; higher as 3); zeros otherwise
    @property
    def spatial_layer_bytes(self) -> list[int]: ...  # VP9: bytes of each spatial layer (SID 0-3; higher as 3); zeros otherwise

@final
class MountpointStats:
    @property
    def packets(self) -> int: ...  # received from the sources
    @property
    def bytes(self) -> int: ...
    @property
    def malformed(self) -> int: ...
    @property
    def viewers(self) -> int: ...  # peers subscribed to it
    @property
    def streams(self) -> list[StreamStats]: ...
    @property
    def sent_packets(self) -> int: ...  # RTP packets sent to all its viewers (summed over workers)
    @property
    def sent_bytes(self) -> int: ...  # SRTP bytes sent, retransmissions included
    @property
    def retransmissions(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def dropped_late(self) -> int: ...  # not sent within max_send_delay_ms of arrival (summed over viewers)
    @property
    def send_errors(self) -> int: ...

@final
class PeerStats:
    """What the engine sent one peer; counters only grow."""

    @property
    def packets(self) -> int: ...  # RTP packets sent (retransmissions apart)
    @property
    def bytes(self) -> int: ...  # SRTP bytes sent, retransmissions included
    @property
    def rtcp_packets(self) -> int: ...  # RTCP (sender reports, ...) sent
    @property
    def retransmissions(self) -> int: ...  # RTP packets sent again after a NACK
    @property
    def nacked(self) -> int: ...  # sequence numbers the viewer's NACKs asked for
    @property
    def gso_refused(self) -> int: ...  # GSO sends the kernel refused (the viewer then gets single datagrams)
    @property
    def dropped(self) -> int: ...  # packets not sent (socket buffer full, send error)
    @property
    def dropped_late(self) -> int: ...  # not sent within max_send_delay_ms of arrival (retransmissions included)
    @property
    def send_errors(self) -> int: ...
    @property
    def paused(self) -> bool: ...
    @property
    def worker(self) -> int | None: ...  # the index of the worker that sends it media, None while not subscribed
    @property
    def source_switches(self) -> int: ...  # streams moved to another source stream (set_stream_source), once moved
    @property
    def estimate(self) -> int | None: ...  # bandwidth estimate, bits/s (None: no feedback yet)
    @property
    def transport_feedbacks(self) -> int: ...  # transport-wide feedback messages read
    @property
    def bytes_in_flight(self) -> int | None: ...  # sent, not yet told of by its transport feedback: what its link holds (None: no feedback yet)
    @property
    def retransmissions_over_budget(self) -> int: ...  # not sent: over the pacing budget of the viewer's estimate
    @property
    def nacks_unanswered(self) -> int: ...  # NACKed sequence numbers no longer kept (past the history) or never sent
    @property
    def probes(self) -> int: ...  # probes of its link (padding up to its probe goal) started
    @property
    def probes_carried(self) -> int: ...  # probes that found the link carried the goal

@final
class PublisherStats:
    """A mountpoint's publisher link (Engine.publisher_stats); counters only grow."""

    @property
    def packets(self) -> int: ...  # SRTP packets decrypted and routed
    @property
    def bytes(self) -> int: ...  # their RTP bytes
    @property
    def rtcp_packets(self) -> int: ...  # SRTCP packets from the publisher
    @property
    def undecryptable(self) -> int: ...  # failed SRTP/SRTCP authentication or replay: dropped
    @property
    def unroutable(self) -> int: ...  # decrypted RTP that no route matched: dropped
    @property
    def malformed(self) -> int: ...  # not RTP/RTCP/STUN/DTLS, too short, or STUN/DTLS past 64 a second: dropped
    @property
    def control_datagrams(self) -> int: ...  # STUN/DTLS handed to Python (PublisherDatagram events)
    @property
    def lost(self) -> int: ...  # sequence numbers found missing (video streams)
    @property
    def nacks_sent(self) -> int: ...  # sequence numbers NACKed (Generic NACK, RFC 4585), retries included
    @property
    def recovered(self) -> int: ...  # missing packets that came later (retransmissions)
    @property
    def receiver_reports_sent(self) -> int: ...
    @property
    def ssrcs(self) -> list[int]: ...  # the SSRCs routed so far, in the order of their first packet

@final
class WebRtcSocketStats:
    """What the WebRTC socket's reader has done (Engine.read_webrtc_socket); the counters only grow."""

    @property
    def datagrams(self) -> int: ...  # read
    @property
    def rtcp_read(self) -> int: ...  # peers' RTCP read and acted on in the engine
    @property
    def rtcp_refused(self) -> int: ...  # peers' RTCP that did not unprotect or parse: dropped
    @property
    def forwarded(self) -> int: ...  # handed to the control plane (STUN, DTLS, RTCP of a peer not yet added)
    @property
    def dropped(self) -> int: ...  # larger than a receive buffer (2048 bytes), or past the control plane's queue

@final
class WorkerStats:
    """One worker's load; counters only grow."""

    @property
    def index(self) -> int: ...
    @property
    def core(self) -> int | None: ...  # the core it is pinned to, None if not pinned
    @property
    def viewers(self) -> int: ...  # peers subscribed to it
    @property
    def busy_ns(self) -> int: ...  # time spent working rather than waiting
    @property
    def passes(self) -> int: ...  # wake-ups that found packets
    @property
    def source_packets(self) -> int: ...  # source packets taken (each fans out to its viewers)
    @property
    def messages(self) -> int: ...  # messages handed to the kernel (one GSO message carries many datagrams)
    @property
    def flushes(self) -> int: ...  # sendmmsg calls (sendto mode: batches of single sends)
    @property
    def overruns(self) -> int: ...  # source packets lost because its ring was full
    @property
    def dropped_late(self) -> int: ...  # packets to its viewers not sent within max_send_delay_ms of arrival

@final
class ReceptionReport:
    """A report block of a peer's receiver (or sender) report (RFC 3550 section 6.4.1)."""

    @property
    def ssrc(self) -> int: ...  # the stream it is about
    @property
    def fraction_lost(self) -> int: ...  # since the previous report, in 256ths
    @property
    def packets_lost(self) -> int: ...  # cumulative, signed
    @property
    def highest_sequence(self) -> int: ...  # extended highest sequence number received
    @property
    def jitter(self) -> int: ...  # in RTP timestamp units
    @property
    def last_sr(self) -> int: ...  # middle 32 bits of the NTP time of the last sender report received
    @property
    def delay_since_last_sr(self) -> int: ...  # in 1/65536 s

@final
class Remb:
    """A receiver's bitrate estimate (draft-alvestrand-rmcat-remb)."""

    @property
    def bitrate(self) -> int: ...  # bits per second
    @property
    def ssrcs(self) -> list[int]: ...  # the streams it is about

@final
class RtcpReport:
    """What the engine saw in one RTCP packet from a peer, and what it did about it."""

    @property
    def nacks(self) -> int: ...  # sequence numbers its Generic NACKs asked for (about any SSRC)
    @property
    def retransmitted(self) -> int: ...  # of those, the ones about its streams, handed to its worker to resend
    @property
    def plis_forwarded(self) -> int: ...  # PLIs/FIRs about its streams sent on to a source (rate limited)
    @property
    def keyframe_requests(self) -> int: ...  # PLIs and FIRs in it
    @property
    def receiver_reports(self) -> list[ReceptionReport]: ...  # report blocks of its RR (and SR)
    @property
    def remb(self) -> Remb | None: ...  # its bitrate estimate, if it carried one
    @property
    def other(self) -> int: ...  # packets of other types (SDES, BYE, XR, other feedback...)

@type_check_only
class SendCost(TypedDict):
    packets: int
    bytes: int
    failed: int
    cpu_ns: int  # CPU time of the sending thread
    wall_ns: int

@final
class Engine:
    """The data plane. One per server process.

    ``webrtc_socket_fd`` is the UDP socket that serves every viewer (ICE-lite on
    one port); the engine duplicates it and sends media from the duplicate,
    while the control plane keeps reading STUN, DTLS and SRTCP from the original.

    Threads: one receiver (reads every source socket, copies each RTP packet
    once into a shared buffer) and one worker per core in ``cores`` (default:
    every core the process may run on), pinned to it unless ``pin`` is False.
    Each subscribed peer belongs to the worker with the fewest of them when it
    first subscribes; the worker rewrites, protects and sends its peers' packets
    itself.

    ``send_mode`` is for tests and benchmarks: "gso" (default: sendmmsg, runs
    of equal-size packets to one viewer merged by UDP GSO, falling back to
    single datagrams where the kernel refuses GSO), "sendmmsg" (one datagram
    per message) or "sendto" (one system call per datagram).

    ``max_send_delay_ms`` (default 100): a packet that cannot be sent to a
    viewer within this long of its arrival is dropped and counted
    (``dropped_late``), never sent late; frames nothing refers to (VP8 N bit,
    VP8, VP9 or AV1 temporal layers above the base, H.264 nal_ref_idc 0) go at half of it, and
    retransmissions while a worker is that far behind.

    ``data_plane_nice`` (-20..19; default None: the threads keep the nice value
    of the thread that makes the engine): the nice value the receiver and the
    workers set themselves to as they start, so that below it the control
    plane's stalls (a full garbage collection) on a core they share delay the
    control plane, not the media. Lowering it needs root, CAP_SYS_NICE or an
    RLIMIT_NICE that allows it; refused, the threads keep the one they
    inherited and ``data_plane_nice_refused`` says why.

    After close() every method but close() raises RuntimeError.
    """

    def __new__(
        cls,
        webrtc_socket_fd: int,
        *,
        cores: list[int] | None = None,
        pin: bool = True,
        send_mode: SendMode = "gso",
        max_send_delay_ms: int | None = None,
        data_plane_nice: int | None = None,
    ) -> Engine:
        """Raises OSError (EBADF) for a descriptor that is not open, ValueError
        for one that is not an IPv4/IPv6 UDP socket, for an empty ``cores``, a
        core listed twice or (when pinning) one the process may not run on, for
        an unknown ``send_mode``, for a ``max_send_delay_ms`` outside 1..10000
        and a ``data_plane_nice`` outside -20..19."""
    @property
    def data_plane_nice(self) -> int:
        """The nice value the receiver and the workers run at."""
    @property
    def data_plane_nice_refused(self) -> str | None:
        """Why they could not take ``data_plane_nice`` (e.g. "Permission denied
        (os error 13)"), None if they did or none was asked for."""
    def add_mountpoint(self, mountpoint_id: int, streams: list[SourceStream]) -> list[int]:
        """Bind the source ports and start receiving; returns the bound port of each
        stream (0 for a stream without ``port``: the publisher link feeds it).

        Raises OSError (with errno) if a port cannot be bound, ValueError on a bad
        argument (duplicate id, unknown kind, duplicate stream index, clock_rate
        or port out of range, an SRTP key of the wrong length or a profile
        without a key, empty parameter sets or ones over 1000 bytes); nothing
        is left half-made. Packets of "data"
        streams are counted but not forwarded to viewers."""
    def remove_mountpoint(self, mountpoint_id: int) -> None:
        """Close the source ports (closed when this returns, so the ports can be
        bound again at once); its peers are unsubscribed (they stay). Unknown
        ids are ignored."""
    # Peers: owned by the core, one per WebRTC PeerConnection (id: the handle id),
    # from DTLS up to hangup. A peer without a subscription gets no media but
    # takes and sends RTCP.
    def add_peer(
        self,
        peer_id: int,
        address: tuple[str, int],
        srtp_profile: SrtpProfile,
        local_master_key: bytes,
        remote_master_key: bytes,
        *,
        tcp_socket_fd: int | None = None,
        tcp_stall_ms: int = 5000,
    ) -> None:
        """A peer whose DTLS-SRTP is up: ``local_master_key`` protects what the
        engine sends it, ``remote_master_key`` unprotects the SRTCP it sends.
        With ``tcp_socket_fd`` (its ICE-TCP connection, RFC 6544; the engine keeps a
        duplicate) everything sent to it goes there, framed with a 2-byte length
        (RFC 4571), through a bounded queue (512 KiB; past it packets are dropped
        and counted in PeerStats.dropped); a connection whose queue makes no
        progress for ``tcp_stall_ms`` (or that breaks) is reported once as
        TcpConnectionLost. From then on the caller writes to the connection only
        with send_tcp_frame. ValueError for a duplicate peer id, a bad key length,
        an unknown profile, an address the WebRTC socket cannot send to (or port
        0), or a tcp_socket_fd that is not a connected TCP socket."""
    def remove_peer(self, peer_id: int) -> None:
        """The peer goes, its subscription too. Unknown ids are ignored."""
    def set_peer_address(self, peer_id: int, address: tuple[str, int], *, tcp_socket_fd: int | None = None) -> None:
        """The peer's ICE-nominated address changed: a UDP address, or with
        ``tcp_socket_fd`` an ICE-TCP connection (as add_peer). KeyError for an unknown peer."""
    def send_tcp_frame(self, peer_id: int, packet: bytes) -> bool:
        """Send ``packet`` as it is (the control plane's STUN and DTLS) as one frame on
        the peer's ICE-TCP connection, in order with the engine's media. False if it was
        dropped (the queue is full or the connection lost). KeyError for an unknown
        peer, ValueError for a peer without a TCP connection or an empty or too
        large (over 65535 bytes) packet."""
    # Subscriptions: owned by the plugin; they need a peer.
    def subscribe(self, peer_id: int, mountpoint_id: int, streams: list[ViewerStream]) -> None:
        """Start sending the mountpoint's ``streams`` to the peer, or, if it is
        subscribed already, move it to ``mountpoint_id`` without renegotiation.

        The first subscription puts the peer on the worker with the fewest
        subscribed peers. Each stream's sequence number and timestamp start at
        random values and stay continuous across pauses, moves and source
        restarts; sender reports go out about once a second.

        Instant start: video (vp8, vp9, h264, h265, av1; other video codecs start at once)
        starts with a burst of the stream's keyframe cache (every packet since the
        latest keyframe, in order, sequence numbers contiguous with what follows),
        paced at 8 MB/s after a first 64 KiB (once transport feedback has measured the
        viewer's link: at 2.5 times its estimate, not under 400 kbit/s, 40 ms of it at once;
        its retransmissions likewise, those over the budget dropped and counted in
        PeerStats.retransmissions_over_budget), then the packets that arrived
        meanwhile, then live. The cached pictures' timestamps are moved closer to
        the newest one (which maps to "now" on the viewer's timeline) so that they
        span about the burst's duration and a jitter buffer renders them at once
        rather than seconds behind; live packets keep the source's spacing. With
        no keyframe cached (or a burst that cannot catch up with the live
        stream), video waits for the next keyframe, and the source is asked for
        one if the stream has an RTCP port. Audio starts live.
        Waits until the receiver sends the mountpoint's packets to the peer's
        worker (releases the GIL; microseconds).

        A move (``switch``): the streams become ``streams`` (indexes of the new
        mountpoint, payload types rewritten to the given ones). A stream whose
        ``ssrc`` the peer had goes on with that stream's numbering: same SSRC, the
        next sequence number, the timestamp advanced by the wall-clock time since
        its last packet (as across a source restart); its send switch carries
        over, its layer caps do not (a stream's temporal_layer and spatial_layer
        give them, in place before the first packet). Video starts from the new
        mountpoint's keyframe cache. Keys, address, worker and peer counters
        stay; the mountpoints' counters move.

        KeyError for an unknown peer or mountpoint, ValueError for a stream index
        the mountpoint lacks (or listed twice), an ssrc or payload type out of
        range or listed twice, a layer out of range or for a codec without such
        layers; on error nothing changes."""
    def unsubscribe(self, peer_id: int) -> None:
        """Stop sending media to the peer; the peer stays (its RTCP goes on, and it
        may subscribe again). Unknown or unsubscribed peers are ignored."""
    def set_paused(self, peer_id: int, paused: bool) -> None:
        """Pause or resume sending (kept across subscriptions); resumed video starts
        from the keyframe cache (as subscribe). KeyError for an unknown peer."""
    def set_stream_paused(self, peer_id: int, index: int, paused: bool) -> None:
        """The per-stream send switch (``configure`` with ``streams: [{mid, send}]``):
        stop or resume sending the peer's stream that takes SourceStream
        ``index``. Sequence numbers and timestamps stay continuous (a resumed
        stream goes on at the next sequence number, its timestamp advanced by
        the time paused); resumed video starts from the keyframe cache. No
        sender reports for a paused stream. Independent of set_paused
        (a peer pause stops every stream; its resume leaves paused streams
        paused). KeyError for an unknown peer, ValueError if the peer is not
        subscribed or has no stream ``index``."""
    def set_stream_playout_delay(
        self, peer_id: int, index: int, extension_id: int, min_ms: int | None, max_ms: int | None
    ) -> None:
        """The playout-delay RTP header extension
        (http://www.webrtc.org/experiments/rtp-hdrext/playout-delay) on the peer's
        stream that takes SourceStream ``index``: from the next packet on, every packet
        of it (retransmissions and keyframe-cache bursts too) carries, as its only
        header extension (RFC 8285 one-byte header, id ``extension_id`` as the
        peer's SDP negotiated it), ``min_ms`` and ``max_ms`` rounded down to 10 ms
        units. Both None: no extension. The source's own header extensions never
        reach peers (their ids are the source's). Kept across a move to another
        mountpoint for a stream that keeps its SSRC. KeyError for an unknown peer;
        ValueError if the peer is not subscribed or has no stream ``index``, for an
        id outside 1..14, a delay outside 0..40950 ms, ``min_ms`` above ``max_ms``,
        or only one of them None."""
    def set_transport_cc(self, peer_id: int, extension_id: int | None) -> None:
        """Transport-wide congestion control (draft-holmer-rmcat-transport-wide-cc-extensions-01)
        for the subscribed peer: every packet it is sent (retransmissions and bursts too)
        carries a transport-wide sequence number, header extension id ``extension_id``
        (1..14, as its SDP negotiated it; None: no more); its transport feedback
        (receive_rtcp) drives its bandwidth estimate (PeerStats.estimate, BandwidthEstimate
        events). Kept across a switch. KeyError for an unknown peer; ValueError if not
        subscribed or for an id outside 1..14."""
    def set_probe_goal(self, peer_id: int, bitrate: int | None) -> None:
        """The bitrate (bits/s) worth probing the subscribed peer's link for, as the next layer
        up with headroom (None: none). While its estimate is under it, now and then (2 s after
        a goal follows none and after the estimate last fell, then twice as long after each
        probe that failed, up to 8 s) the
        engine sends padding-only packets on its video stream so that all it gets goes at that
        rate for 0.3 s; a probe the link carried without over-use or loss raises the
        estimate to the rate measured at once (a BandwidthEstimate with ``probed``). Needs
        set_transport_cc and a video stream. KeyError for an unknown peer; ValueError if not
        subscribed."""
    def set_stream_source(self, peer_id: int, index: int, source_index: int, *, at_once: bool = False) -> None:
        """Simulcast (``configure`` with ``substream``): move the peer's stream
        that takes SourceStream ``index`` to SourceStream ``source_index`` of the
        same mountpoint (another encoding of the same video: same kind, codec
        and clock rate); from now on the stream is known by ``source_index``.
        The move happens at the new source's next keyframe (its RTCP port, if
        it has one, is asked for one); the old source goes on until then, and
        PeerStats' source_switches counts the move when it happens. With
        ``at_once`` and a keyframe in the new source's cache, it happens now:
        the old source stops and the new one starts from its cache, paced to
        the peer's estimate, or from its next live keyframe if sending the
        cache would take over 0.1 s at that pace or the peer's link still
        holds a queue (transport feedback tells of less than was sent, by
        over 0.1 s of the estimate: the cached keyframe would lose packets
        from the queue's tail). A move down for a link that no longer
        carries the old source stops its packets filling the queue. A stream
        that sent nothing yet, or is paused, moves at once (started video then
        starts from the new source's keyframe cache, as subscribe); a peer
        paused with set_paused takes a waiting move when resumed. Sequence
        numbers and timestamps stay continuous (the timestamp advanced by the
        time since the last packet); for VP8 and VP9 the picture IDs and TL0PICIDX of
        the new source are renumbered to follow the last ones sent. Moving
        back to the current source before the move happened cancels it.
        KeyError for an unknown peer, ValueError if the peer has no stream
        ``index``, already takes ``source_index`` with another stream, or the
        mountpoint has no such stream of the same kind and codec."""
    def set_stream_temporal_layer(self, peer_id: int, index: int, layer: int | None) -> None:
        """VP8, VP9 and AV1 temporal layers (``configure`` with ``temporal``, VP9's and AV1's
        ``temporal_layer``; the plugin's choice from the estimate): the peer's
        stream that takes SourceStream ``index`` gets only the packets whose
        payload descriptor's TID (RFC 7741, RFC 9628), or AV1 OBU extension
        header's temporal_id (the AV1 RTP specification: a packet that only
        continues an OBU is of its frame's layer), is at most ``layer`` (None:
        every layer); VP8 and AV1 from the next frame of the base layer on, VP9
        lower from the next picture, higher from the next keyframe or switching
        up point (U) of a layer sent. The packets
        sent are renumbered so the peer sees no gap (packets that arrive out of
        order are not); NACKs find their packets across the last 32
        renumberings; picture IDs are kept. Packets without a TID count as
        layer 0. A burst from the keyframe cache leaves the same layers out.
        The cap stays across set_stream_source. KeyError for an
        unknown peer, ValueError if the peer has no stream ``index``, it is
        not VP8, VP9 or AV1, or ``layer`` is outside 0..=3."""
    def set_stream_spatial_layer(self, peer_id: int, index: int, layer: int | None) -> None:
        """VP9 spatial layers (``configure`` with ``spatial_layer``): the peer's
        stream that takes SourceStream ``index`` gets only the packets whose
        payload descriptor's SID (RFC 9628) is at most ``layer`` (None: every
        layer); lower from the next picture on, higher a layer at a time from
        a frame of the next layer up that no earlier picture predicts (a
        keyframe's: the source is asked for one if it has an RTCP port and
        ``layer`` is not 0). The last packet of the top layer sent in each
        picture carries the marker bit; the packets sent are renumbered as
        for temporal layers. KeyError for an unknown peer, ValueError if the
        peer has no stream ``index``, it is not VP9, or ``layer`` is outside
        0..=7."""
    def receive_rtcp(self, peer_id: int, packet: bytes) -> RtcpReport:
        """Take SRTCP from a peer (subscribed or not): unprotect it, act on it and
        report what it carried. Raises ValueError if it fails authentication, is a
        replay, or is not RTCP once unprotected; KeyError for an unknown peer.

        Generic NACKs (RFC 4585) in it about the peer's SSRCs are answered by
        the engine at once: each packet still in the stream's history (the last
        1024 sequence numbers) is sent again as the peer first received it
        (same sequence number, re-protected; no RFC 4588 rtx). PLIs and FIRs
        about its SSRCs go on to the source stream's RTCP port as a PLI, if it has
        one (at most one per stream per second; counted as plis_forwarded). The
        control plane never parses a peer's RTCP itself."""
    def send_rtcp(self, peer_id: int, packet: bytes) -> None:
        """Protect plain (compound) RTCP with the peer's SRTCP context and send it
        (subscribed or not). ValueError if ``packet`` is not RTCP, KeyError for an
        unknown peer."""
    def send_source_remb(self, mountpoint_id: int, index: int, bitrate: int) -> bool:
        """Send a bitrate estimate (RR + REMB, ``bitrate`` in bits per second)
        about the source's SSRC to stream ``index``'s source through its RTCP
        port, where keyframe requests go. False if the source has not shown
        where to send yet (no RTP or RTCP from it). A stream fed by the publisher
        link sends it over the link (False while none is attached). KeyError for an unknown
        mountpoint, ValueError for a stream it lacks or one without an RTCP port,
        OverflowError for a negative bitrate."""
    # The publisher link: a WebRTC publisher (WHIP) or a relay from an origin node.
    def attach_publisher(
        self,
        mountpoint_id: int,
        socket_fd: int,
        srtp_profile: SrtpProfile,
        local_master_key: bytes,
        remote_master_key: bytes,
        routes: list[PublisherRoute],
        mid_extension_id: int | None = None,
        rid_extension_id: int | None = None,
    ) -> None:
        """Feed the mountpoint's streams without a port from a publisher link:
        ``socket_fd`` is a CONNECTED UDP socket, which the engine duplicates (the
        caller closes its own when it likes). The engine reads every datagram on
        it: SRTP (unprotected with ``remote_master_key``) is routed by ``routes``
        (see PublisherRoute; ``mid_extension_id`` and ``rid_extension_id`` are
        the publisher's extmap ids, 1..14, one-byte and two-byte header forms
        both read) and takes the same way as a port's packets (SSRC lock, keyframe
        cache, viewers, silence events); SRTCP's sender reports are kept for the
        stream of their SSRC; STUN and DTLS become PublisherDatagram events (at
        most 64 a second) for the control plane to answer from its own socket.
        Back over the link, SRTCP-protected with ``local_master_key``: keyframe
        requests (every path that asks a port-fed source's RTCP port), REMB
        (send_source_remb), Generic NACKs for the gaps in video streams and a
        receiver report per SSRC once a second.

        Attaching again replaces the link (a publisher that came back): the
        streams go on, and viewers see continuous numbering (the next packet of
        each stream is a source restart). KeyError for an unknown mountpoint;
        ValueError for a socket that is not a connected UDP socket, an unknown
        profile, a key of the wrong length, no routes, a route to a stream the
        mountpoint lacks or one with a port, a route that can match nothing (no
        ssrc, payload_types, rid, or mid with mid_extension_id), a rid without
        ``rid_extension_id``, a mid or rid of 0 or more than 255 bytes, an
        extension id outside 1..14, a payload type outside 0..127, or an SSRC in
        two routes."""
    def detach_publisher(self, mountpoint_id: int) -> None:
        """Stop reading the mountpoint's link; the engine's duplicate of the
        socket is closed when this returns. Its streams fall silent as any source
        does. Unknown mountpoint, or no link: ignored."""
    def publisher_stats(self, mountpoint_id: int) -> PublisherStats | None:
        """None while no link is attached. KeyError for an unknown mountpoint."""
    def peer_stats(self, peer_id: int) -> PeerStats:
        """KeyError for an unknown peer."""
    def mountpoint_stats(self, mountpoint_id: int) -> MountpointStats:
        """KeyError for an unknown mountpoint."""
    def worker_stats(self) -> list[WorkerStats]:
        """One entry per worker, cheap to read (atomic counters)."""
    def close(self) -> None:
        """Stop the engine's threads and close every socket it opened. Idempotent."""

    # --- events: the engine tells the control plane (fanout.engine_events watches them) ---
    def event_fd(self) -> int:
        """An eventfd, readable while events wait: the asyncio loop add_reader()s it.
        Valid until the Engine is garbage collected (close() does not close it)."""
    def drain_events(
        self,
    ) -> list[
        SubstreamMoved
        | SourceSilent
        | SourceResumed
        | SendQueueOverflow
        | KeyframeFromCache
        | PublisherDatagram
        | RecordingStopped
        | BandwidthEstimate
        | TcpConnectionLost
        | ViewerRtcp
    ]:
        """Every event since the last call, oldest first (the fd is no longer readable
        until the next). Events about a mountpoint removed meanwhile are left out;
        nothing once the engine is closed."""
    def events_dropped(self) -> int:
        """Events lost because 65536 were left waiting (nobody drained them)."""

    # --- the WebRTC socket's reader: viewers' RTCP stays in the engine ---
    def read_webrtc_socket(self) -> int:
        """From now on a thread of the engine reads the WebRTC socket (the control plane must
        stop reading it): the RTCP of each peer on UDP it reads and acts on (a ViewerRtcp event
        when it carried more than transport feedback); everything else waits for
        take_webrtc_datagrams(). Returns an fd readable while datagrams wait, valid until the
        Engine is garbage collected. Calling it again returns the same fd."""
    def take_webrtc_datagrams(self) -> list[tuple[bytes, tuple[str, int]]]:
        """The datagrams read that are not peers' RTCP (STUN, DTLS...), oldest first, each with
        its source address (IPv4 in its own form, not v4-mapped)."""
    def webrtc_socket_stats(self) -> WebRtcSocketStats:
        """What the WebRTC socket's reader has done (zeros before read_webrtc_socket)."""
    def set_source_silence(self, mountpoint_id: int, index: int, silence_ms: int) -> None:
        """The stream is reported silent after ``silence_ms`` (1..3600000) without a
        packet, from now on. KeyError for an unknown mountpoint, ValueError for a
        stream it lacks or a threshold out of range."""

    # --- recordings: a writer thread per recording, fed by the receiver ---
    def start_recording(self, mountpoint_id: int, index: int, path: str, codec: str) -> None:
        """Record source stream ``index`` to a Janus .mjr file at ``path`` (created or
        truncated now: OSError if it cannot be, e.g. a missing directory), ``codec``
        being Janus's name for it ("opus", "vp8", "h264"...), from its next packet.
        A recording running on the stream ends first. A write error later ends it
        with a RecordingStopped event. KeyError for an unknown mountpoint,
        ValueError for a stream it lacks."""
    def stop_recording(self, mountpoint_id: int, index: int) -> bool:
        """End the stream's recording; its file is complete when this returns.
        Whether one was running."""

# --- events: one frozen class per kind, from Engine.drain_events() ---

@final
class SubstreamMoved:
    """The viewer's stream that took source stream ``index`` takes ``source_index`` now
    (set_stream_source: at that stream's keyframe, or at once if it had sent
    nothing or was paused)."""

    def __new__(cls, peer_id: int, index: int, source_index: int) -> Self: ...
    @property
    def peer_id(self) -> int: ...
    @property
    def index(self) -> int: ...
    @property
    def source_index(self) -> int: ...

@final
class SourceSilent:
    """Source stream ``index`` of the mountpoint, which sent, has had no packet for
    its silence threshold (SourceStream.silence_ms); ``silent_ms``: since its last
    packet, when the engine noticed. Once per silence; a stream that never sent is
    silent from the start without this event."""

    def __new__(cls, mountpoint_id: int, index: int, silent_ms: int) -> Self: ...
    @property
    def mountpoint_id(self) -> int: ...
    @property
    def index(self) -> int: ...
    @property
    def silent_ms(self) -> int: ...

@final
class SourceResumed:
    """Source stream ``index`` sends: its first packet, or the first after a SourceSilent."""

    def __new__(cls, mountpoint_id: int, index: int) -> Self: ...
    @property
    def mountpoint_id(self) -> int: ...
    @property
    def index(self) -> int: ...

@final
class SendQueueOverflow:
    """``dropped`` of the viewer's packets were dropped: the WebRTC socket's send
    buffer stayed full. Reported at the first drop, then at most once a second
    with the drops since the last report."""

    def __new__(cls, peer_id: int, dropped: int) -> Self: ...
    @property
    def peer_id(self) -> int: ...
    @property
    def dropped(self) -> int: ...

@final
class KeyframeFromCache:
    """The viewer's stream taking source stream ``index`` started from its keyframe
    cache (``packets`` packets), on joining, resuming or switching."""

    def __new__(cls, peer_id: int, index: int, packets: int) -> Self: ...
    @property
    def peer_id(self) -> int: ...
    @property
    def index(self) -> int: ...
    @property
    def packets(self) -> int: ...

@final
class PublisherDatagram:
    """A datagram on the mountpoint's publisher link that is not SRTP/SRTCP: STUN
    (first byte 0..3) or DTLS (20..63), for the control plane's ICE-lite and DTLS,
    which answer it from the shared WebRTC socket (the same local port)."""

    def __new__(cls, mountpoint_id: int, data: bytes) -> Self: ...
    @property
    def mountpoint_id(self) -> int: ...
    @property
    def data(self) -> bytes: ...

@final
class RecordingStopped:
    """The recording of source stream ``index`` ended on its own: its file could not be
    written (``reason``: a full disk...). Viewers are not affected."""

    def __new__(cls, mountpoint_id: int, index: int, reason: str) -> Self: ...
    @property
    def mountpoint_id(self) -> int: ...
    @property
    def index(self) -> int: ...
    @property
    def reason(self) -> str: ...

@final
class BandwidthEstimate:
    """A viewer's bandwidth estimate, ``bitrate`` bits per second, from its transport-wide
    feedback (GCC, delay- and loss-based), REMB (a cap) and receiver reports: at most
    once a second per viewer, or at once when it fell by 15% since the last one.
    ``link_limited``: over-use or loss has told that the link limits the rate; until
    then the estimate is at least the rate sent, and says only that the link carries that.
    ``probed``: a probe (padding sent up to the goal of ``Engine.set_probe_goal``) has just
    measured that the link carries ``bitrate``; reported at once."""

    def __new__(cls, peer_id: int, bitrate: int, link_limited: bool, probed: bool) -> Self: ...
    @property
    def peer_id(self) -> int: ...
    @property
    def bitrate(self) -> int: ...
    @property
    def link_limited(self) -> bool: ...
    @property
    def probed(self) -> bool: ...

# --- RTSP over TCP ---

@final
class InterleavedRelay:
    """The RTP and RTCP an RTSP server interleaves on its connection (RFC 2326 section
    10.12), sent on without Python per packet: each ``(channel, socket_fd, (host, port))``
    route sends its channel's packets from a duplicate of ``socket_fd`` (a non-blocking UDP
    socket) to that address (the engine's port for the track). ValueError for a bad
    address, OSError if the socket cannot be duplicated."""

    def __new__(cls, routes: list[tuple[int, int, tuple[str, int]]]) -> Self: ...
    def relay(self, buffer: bytearray, start: int) -> int:
        """Sends on every whole frame from ``start`` of ``buffer``; where the first thing
        that is not a whole frame starts (an RTSP response, a frame still coming). ValueError
        for a frame longer than the engine takes (1984 bytes)."""
    @property
    def relayed(self) -> int:
        """Packets sent on."""
    @property
    def unknown(self) -> int:
        """Frames on a channel with no route, dropped."""
    @property
    def dropped(self) -> int:
        """Packets the socket would not take (its buffer full), dropped."""

@final
class TcpConnectionLost:
    """A viewer's ICE-TCP connection is lost: ``reason`` "stalled" (its queue made no
    progress for the stall timeout: the viewer stopped reading) or "broken" (the kernel
    refused a write). Reported once; the control plane hangs the viewer up."""

    def __new__(cls, peer_id: int, reason: str) -> Self: ...
    @property
    def peer_id(self) -> int: ...
    @property
    def reason(self) -> str: ...

@final
class ViewerRtcp:
    """What the engine read in a peer's RTCP on the WebRTC socket (read_webrtc_socket) and did
    about it: a packet with report blocks, a REMB, NACKs, PLIs/FIRs or other packets. Packets of
    transport feedback alone make no event: they are counted in the next one's ``other``."""

    def __new__(cls, peer_id: int, report: RtcpReport) -> Self: ...
    @property
    def peer_id(self) -> int: ...
    @property
    def report(self) -> RtcpReport: ...

# bench_protect, bench_send and bench_read_transport_feedback exist only in an engine built with
# the cargo feature "bench" (scripts/setup's development install; src/python_bench.rs), for
# `fanout bench engine` and `fanout bench load`.
def bench_protect(srtp_profile: SrtpProfile, rtp_size: int, count: int) -> float:
    """Benchmarks only, "crypto only": copy and SRTP-protect ``count`` RTP packets
    of ``rtp_size`` bytes as a worker does; CPU nanoseconds per packet."""

def bench_send(
    socket_fd: int,
    addresses: list[tuple[str, int]],
    *,
    send_mode: SendMode,
    run_length: int,
    datagram_size: int,
    seconds: float,
    core: int | None = None,
) -> SendCost:
    """Benchmarks only, "kernel only": for ``seconds``, send ready-made datagrams
    from ``socket_fd`` through the engine's send batch, to each IPv4 address in
    turn a run of ``run_length``, on a thread pinned to ``core`` if given."""

def bench_read_transport_feedback(packet: bytes) -> list[tuple[int, int, list[tuple[int, int | None]]]]:
    """Benchmarks only: the transport feedback messages (RTPFB FMT 15) in a plain compound
    RTCP packet as the engine reads them: (media SSRC, feedback count, each packet's
    (sequence number, arrival in microseconds or None)). ValueError if one is cut short."""
