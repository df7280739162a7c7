//! What the engine tells about itself: counters read without stopping the
//! threads. Each struct is also the Python class of the same name (frozen,
//! every field a read-only attribute), so a counter is declared once here and
//! typed once in `_engine.pyi`.

use pyo3::pyclass;

/// One peer's sends (the counters only grow).
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStats {
    /// RTP packets sent (retransmissions apart).
    pub packets: u64,
    /// SRTP bytes sent, retransmissions included.
    pub bytes: u64,
    /// RTCP packets (sender reports, ...) sent.
    pub rtcp_packets: u64,
    /// RTP packets sent again after a NACK.
    pub retransmissions: u64,
    /// Sequence numbers the peer's NACKs asked for.
    pub nacked: u64,
    /// GSO sends the kernel refused (the peer then gets single datagrams).
    pub gso_refused: u64,
    /// Packets not sent (socket buffer full, send error).
    pub dropped: u64,
    /// Packets not sent because they could not leave within `max_send_delay`
    /// of their arrival (the worker was behind), retransmissions included.
    pub dropped_late: u64,
    pub send_errors: u64,
    pub paused: bool,
    /// The index of the worker that sends it media, None while not subscribed.
    pub worker: Option<usize>,
    /// Streams moved to another source stream (set_stream_source), once moved.
    pub source_switches: u64,
    /// The peer's bandwidth estimate, bits per second (None: no feedback yet).
    pub estimate: Option<u64>,
    /// Transport feedback messages (transport-wide congestion control) read.
    pub transport_feedbacks: u64,
    /// The bytes sent to the peer that its transport feedback has not told
    /// of yet, received or lost: what its link holds (None: no transport
    /// feedback yet).
    pub bytes_in_flight: Option<u64>,
    /// Retransmissions not sent: over the budget the peer's estimate paces
    /// its retransmissions and keyframe-cache bursts to.
    pub retransmissions_over_budget: u64,
    /// Sequence numbers the peer NACKed that were not kept to send again
    /// (past the history, or never sent to it).
    pub nacks_unanswered: u64,
    /// Probes of the peer's link (padding up to its probe goal) started, and
    /// those that found the link carried the goal.
    pub probes: u64,
    pub probes_carried: u64,
}

/// The latest sender report from a source.
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderReportStats {
    /// The 64-bit NTP timestamp it carried.
    pub ntp_time: u64,
    pub rtp_timestamp: u32,
    /// Since it arrived.
    pub age_ms: u64,
}

/// A video stream's packets since its latest keyframe.
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyframeCacheStats {
    /// It holds one: a peer starting now starts at once.
    pub keyframe: bool,
    pub packets: usize,
    pub bytes: usize,
    /// Groups of pictures let go for growing too large.
    pub overflows: u64,
}

/// One source stream of a mountpoint.
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStats {
    pub index: u32,
    pub port: u16,
    pub packets: u64,
    pub bytes: u64,
    /// Datagrams that were not RTP, dropped.
    pub malformed: u64,
    /// Packets a worker could not take (its ring was full).
    pub overruns: u64,
    /// None until the first packet arrives.
    pub last_packet_age_ms: Option<u64>,
    /// The bound RTCP port, None without one.
    pub rtcp_port: Option<u16>,
    /// RTCP packets received from the source on the RTCP port.
    pub rtcp_packets: u64,
    /// Peers' PLI/FIR sent on to the source as PLI (rate limited).
    pub plis_forwarded: u64,
    /// PLIs sent because a peer started with no keyframe cached.
    pub keyframe_requests: u64,
    /// Bitrate estimates (REMB) sent to the source.
    pub rembs_sent: u64,
    /// The source's latest, None before one.
    pub sender_report: Option<SenderReportStats>,
    /// None for streams without a cache (audio, data, other codecs).
    pub keyframe_cache: Option<KeyframeCacheStats>,
    /// SRTP packets that failed authentication or replay checks, dropped.
    pub undecryptable: u64,
    /// Packets with another SSRC than the one holding the stream, dropped.
    pub collisions: u64,
    /// Packets with a payload type the stream does not take, dropped.
    pub wrong_payload_type: u64,
    /// H.264 parameter set packets put before keyframes.
    pub parameter_sets_inserted: u64,
    /// Audio packets dropped to pull a fast source clock back.
    pub skew_dropped: u64,
    /// Packets the source sent that never arrived (from its sequence numbers).
    pub lost: u64,
    /// How far skew compensation has moved the timestamps (negative: back).
    pub skew_ms: i64,
    /// VP8, VP9 and AV1: the bytes of each temporal layer (TID 0 to 3); zeros for other codecs.
    pub temporal_layer_bytes: Vec<u64>,
    /// VP9: the bytes of each spatial layer (SID 0 to 3); zeros for other codecs.
    pub spatial_layer_bytes: Vec<u64>,
}

/// A mountpoint: what its sources sent, and what the workers sent its peers.
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountpointStats {
    /// Received from the sources.
    pub packets: u64,
    pub bytes: u64,
    pub malformed: u64,
    /// Peers subscribed to it.
    pub viewers: usize,
    pub streams: Vec<StreamStats>,
    /// RTP packets sent to all its peers (summed over workers).
    pub sent_packets: u64,
    /// SRTP bytes sent, retransmissions included.
    pub sent_bytes: u64,
    pub retransmissions: u64,
    pub dropped: u64,
    /// Packets not sent within `max_send_delay` of their arrival (summed over peers).
    pub dropped_late: u64,
    pub send_errors: u64,
}

/// A mountpoint's publisher link ([`crate::engine::Engine::publisher_stats`]); counters only grow.
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublisherStats {
    /// SRTP packets decrypted and routed to a stream.
    pub packets: u64,
    /// Their RTP bytes.
    pub bytes: u64,
    /// SRTCP packets from the publisher.
    pub rtcp_packets: u64,
    /// Failed SRTP/SRTCP authentication or replay: dropped.
    pub undecryptable: u64,
    /// Decrypted RTP that no route matched: dropped.
    pub unroutable: u64,
    /// Not RTP, RTCP, STUN or DTLS, too short, or control datagrams past the rate limit: dropped.
    pub malformed: u64,
    /// STUN and DTLS handed to the control plane (PublisherDatagram events).
    pub control_datagrams: u64,
    /// Sequence numbers found missing (video streams).
    pub lost: u64,
    /// Sequence numbers NACKed (Generic NACK, RFC 4585), retries included.
    pub nacks_sent: u64,
    /// Missing packets that came later (retransmissions).
    pub recovered: u64,
    pub receiver_reports_sent: u64,
    /// The SSRCs routed so far.
    pub ssrcs: Vec<u32>,
}

/// One worker's load; counters only grow.
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerStats {
    pub index: usize,
    /// The core it is pinned to, None if not pinned.
    pub core: Option<usize>,
    pub viewers: usize,
    /// Time spent working rather than waiting.
    pub busy_ns: u64,
    /// Wake-ups that found packets.
    pub passes: u64,
    /// Source packets taken (each fans out to its peers).
    pub source_packets: u64,
    /// Messages handed to the kernel (one GSO message carries many datagrams).
    pub messages: u64,
    /// sendmmsg calls (sendto mode: batches of single sends).
    pub flushes: u64,
    /// Source packets lost because its ring was full.
    pub overruns: u64,
    /// Packets to its viewers not sent within `max_send_delay` of their arrival.
    pub dropped_late: u64,
}

/// What the WebRTC socket's reader has done ([`crate::engine::Engine::webrtc_socket_stats`]).
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebRtcSocketStats {
    /// Datagrams read.
    pub datagrams: u64,
    /// Viewers' RTCP read and acted on in the engine.
    pub rtcp_read: u64,
    /// Viewers' RTCP that did not unprotect or parse (dropped).
    pub rtcp_refused: u64,
    /// Handed to the control plane (STUN, DTLS, RTCP of a peer not yet in the engine...).
    pub forwarded: u64,
    /// Dropped: larger than a receive buffer, or past the control plane's queue.
    pub dropped: u64,
}
