//! The engine handle: the control plane's side of the data plane. It validates
//! every call at once (so a bad call fails where it is made), keeps what the
//! control plane may read without stopping the threads (counters, the inbound
//! SRTCP contexts), and passes the rest as commands over channels, with an
//! eventfd to wake each thread: to the receiver (mountpoints and which worker
//! wants which) and to the workers (subscribed peers).
//!
//! A peer is one WebRTC PeerConnection (keys, address, SRTCP contexts),
//! added by the control plane's core at DTLS up and removed at hangup; it
//! takes and sends RTCP from then on. Media flows to it only while it is
//! subscribed to a mountpoint (the plugin's call): then it belongs to one
//! worker, the one with the fewest subscribed peers when it subscribed (a move
//! to another mountpoint keeps it).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A viewer's first sender report goes out about this long after it is added.
const FIRST_REPORT_DELAY: Duration = Duration::from_secs(1);
/// The WebRTC socket's send buffer (shared with the control plane's descriptor).
const SEND_BUFFER_BYTES: libc::c_int = 4 << 20;

use crate::egress::batch::SendMode;
use crate::egress::congestion::{MAX_BITRATE, MIN_BITRATE};
use crate::egress::tcp::{SharedTcpOutput, TcpOutput, MAX_FRAME};
use crate::egress::viewer::{StreamStart, Viewer, ViewerCounters, ViewerStream};
use crate::egress::worker::{Caches, Command, SendCounters, Worker, WorkerConfig, WorkerLoad};
use crate::events::{EngineEvent, Event, EventQueue, DEFAULT_SILENCE_MS};
use crate::ingest::publisher::{LinkStream, PublisherCounters, PublisherLink, Route, Router, MAX_ID_LEN};
use crate::ingest::receiver::{Receiver, ReceiverCommand, SourceStream, StreamCounters, WorkerDoor, WAKE_KEY};
use crate::ingest::recorder::{RecordingSlot, RecordingTarget};
use crate::ingest::socket_reader::{canonical, Datagram, RtcpTaken, SocketReader, ViewerRtcp};
use crate::ingest::source_rtcp::{for_each_keyframe_request, KeyframeReason, LinkSender, SourceRtcp};
use crate::ingest::IngestOptions;
use crate::media::packet::{GopCache, SLOT_SIZE};
use crate::media::MediaKind;
use crate::ring;
use crate::stats::{
    KeyframeCacheStats, MountpointStats, PeerStats, PublisherStats, SenderReportStats, StreamStats, WebRtcSocketStats,
    WorkerStats,
};
use crate::sys::{
    allowed_cores, bind_source_on, cvt, monotonic_ns, new_eventfd, random_bytes, register, set_receive_buffer,
    set_send_buffer, set_thread_nice, thread_nice, wake, RawAddress, RECEIVE_BUFFER_BYTES,
};
use crate::wire::codec::Codec;
use crate::wire::rtcp::{for_each_nack, is_rtcp, summarize, RtcpReport};
use crate::wire::rtp::PlayoutDelay;
use crate::wire::srtp::{Profile, SrtcpInbound, SrtpInbound, SrtpSession};
use crate::wire::twcc::has_transport_feedback;

/// Source packets waiting for one worker; past this the worker is overloaded and loses packets.
const RING_PACKETS: usize = 8192;

/// How the engine runs: which cores, pinned or not, and how it sends.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// One worker per core listed; None: one per core the process may use.
    pub cores: Option<Vec<usize>>,
    /// Pin each worker to its core.
    pub pin: bool,
    pub send_mode: SendMode,
    /// A packet that cannot be sent within this long of its arrival is dropped
    /// and counted (`dropped_late`), never sent late.
    pub max_send_delay: Duration,
    /// The nice value (-20..=19) the receiver and the workers set themselves
    /// to as they start; None: they keep the one they inherit from the thread
    /// that makes the engine (the control plane's). See [`DataPlanePriority`].
    /// A recording's writer keeps the control plane's: it buffers 4096
    /// packets, seconds of media, so a stall costs it nothing.
    pub data_plane_nice: Option<i32>,
}

/// The nice value the data plane's threads run at, against the one asked for.
///
/// Why a nice value: on the core they share, the control plane's stalls (a
/// full garbage collection of its heap after a surge of joins: ~30 ms + 0.2 ms
/// per viewer, 60-370 ms measured) took the core from a worker that needed
/// 0.73 of it, and at equal weights the scheduler gave the worker half: its
/// packets waited past `max_send_delay` and were dropped (0.68% loss for the
/// median viewer at 80% of capacity, bench/results/overload-2026-12-04-knee-given).
/// The fair scheduler shares a core by weight, 1024 at nice 0 and x1.25 per
/// step down: a data plane 10 steps below the control plane (weight 9548 to
/// 1024) gets up to 90.3% of the core while both want it, and the control
/// plane always gets what the data plane leaves, never less than 9.7%. So
/// below 90% load a stall delays only the control plane, and past it (the
/// workers shedding late packets) the control plane still answers consent
/// checks and requests, slower: it took 0.05 core at 120% and 0.14 at 150%.
/// (EEVDF also gives a woken thread of 9.3 times the weight an earlier
/// virtual deadline, so a worker woken by a packet usually preempts the
/// control plane rather than wait out its slice.)
///
/// Why not SCHED_FIFO or SCHED_RR: a real-time worker runs until it sleeps.
/// Past capacity it never sleeps (it sheds instead), so the control plane
/// would get only the kernel's real-time throttling slack (sched_rt_runtime_us:
/// 50 ms of every second, in one piece): consent checks, ICE and requests
/// answered up to ~950 ms late, viewers lost to consent expiry with a burst of
/// them. Below capacity a real-time worker fans a keyframe out to 2000
/// viewers in one unbroken ~64 ms, where the fair scheduler lets the control
/// plane in every few milliseconds of slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPlanePriority {
    /// What the options asked for (None: nothing asked).
    pub requested: Option<i32>,
    /// What the data plane's threads run at.
    pub nice: i32,
    /// Why the threads could not take `requested`, e.g. "Permission denied
    /// (os error 13)" without CAP_SYS_NICE or an RLIMIT_NICE that allows it.
    pub refused: Option<String>,
}

/// How late a packet may leave by default.
pub const DEFAULT_MAX_SEND_DELAY: Duration = Duration::from_millis(100);

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            cores: None,
            pin: true,
            send_mode: SendMode::Gso,
            max_send_delay: DEFAULT_MAX_SEND_DELAY,
            data_plane_nice: None,
        }
    }
}

#[derive(Debug)]
pub enum EngineError {
    Closed,
    UnknownMountpoint(u64),
    UnknownPeer(u64),
    Invalid(String),
    Os(io::Error),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("the engine is closed"),
            Self::UnknownMountpoint(id) => write!(f, "no mountpoint {id}"),
            Self::UnknownPeer(id) => write!(f, "no peer {id}"),
            Self::Invalid(message) => f.write_str(message),
            Self::Os(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<io::Error> for EngineError {
    fn from(error: io::Error) -> Self {
        Self::Os(error)
    }
}

fn invalid(message: impl Into<String>) -> EngineError {
    EngineError::Invalid(message.into())
}

/// One RTP input of a mountpoint, as the control plane describes it.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    pub index: u32,
    pub kind: MediaKind,
    pub codec: Codec,
    pub clock_rate: u32,
    pub host: String,
    /// The port to bind (0 lets the kernel pick); None: the stream has no
    /// socket, its packets come from the mountpoint's publisher link.
    pub port: Option<u16>,
    /// The stream's RTCP port: None for none, 0 lets the kernel pick.
    pub rtcp_port: Option<u16>,
    /// Without an RTCP port of its own: the index of the stream whose port this
    /// one shares (a simulcast substream: its stream's), so that keyframe
    /// requests for it go to its source too.
    pub shares_rtcp_port_of: Option<u32>,
    /// When `host` is a multicast group: the address of the interface to join it on.
    pub interface: Option<String>,
    /// What the receiver does to each datagram: SRTP, SSRC lock, parameter sets, skew.
    pub ingest: IngestOptions,
    /// After this long without a packet the stream is reported silent (see
    /// [`crate::events`]); None: [`DEFAULT_SILENCE_MS`].
    pub silence_ms: Option<u32>,
}

/// Which packets of a publisher link feed one stream (see [`Router`]).
#[derive(Clone, Debug, Default)]
pub struct PublisherRouteConfig {
    /// A stream of the mountpoint without a port.
    pub index: u32,
    pub ssrc: Option<u32>,
    pub mid: Option<String>,
    pub rid: Option<String>,
    pub payload_types: Vec<u8>,
}

/// A publisher link's keys, routes and header extension ids.
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    pub profile: Profile,
    /// Protects the SRTCP the engine sends the publisher.
    pub local_master_key: Vec<u8>,
    /// Unprotects the publisher's SRTP and SRTCP.
    pub remote_master_key: Vec<u8>,
    pub routes: Vec<PublisherRouteConfig>,
    pub mid_extension_id: Option<u8>,
    pub rid_extension_id: Option<u8>,
}

/// What a viewer receives of one source stream.
#[derive(Clone, Debug, Default)]
pub struct ViewerStreamConfig {
    pub index: u32,
    pub ssrc: u32,
    pub payload_type: u8,
    /// VP8, VP9, AV1: only temporal layers up to this one from the first
    /// packet on (see [`Engine::set_stream_temporal_layer`]); None: all.
    pub temporal_layer: Option<u8>,
    /// VP9: only spatial layers up to this one from the first packet on (see
    /// [`Engine::set_stream_spatial_layer`]); None: all.
    pub spatial_layer: Option<u8>,
}

struct StreamRecord {
    index: u32,
    /// 0 for a stream fed by the publisher link.
    port: u16,
    /// Fed by the mountpoint's publisher link (it has no port).
    linked: bool,
    kind: MediaKind,
    codec: Codec,
    clock_rate: u32,
    starts_at_keyframes: bool,
    counters: Arc<StreamCounters>,
    cache: Option<Arc<Mutex<GopCache>>>,
    rtcp: Option<Arc<SourceRtcp>>,
    /// The stream's silence threshold in milliseconds, shared with the receiver.
    silence_ms: Arc<AtomicU64>,
    /// Its recording to a .mjr file, shared with the receiver.
    recording: Arc<RecordingSlot>,
}

impl StreamRecord {
    /// Asks the source for a keyframe if the cache holds none (rate limited).
    fn request_keyframe_if_uncached(&self) {
        let (Some(cache), Some(rtcp)) = (&self.cache, &self.rtcp) else {
            return;
        };
        let cached = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).has_keyframe();
        if !cached {
            rtcp.request_keyframe(KeyframeReason::Start, Instant::now());
        }
    }
}

struct MountpointRecord {
    streams: Vec<StreamRecord>,
    viewers: HashSet<u64>,
    /// Viewers per worker: the receiver sends packets to the workers with any.
    per_worker: Vec<usize>,
    /// One per worker.
    sent: Vec<Arc<SendCounters>>,
    /// The attached publisher link.
    publisher: Option<PublisherRecord>,
}

/// What the engine handle keeps of an attached publisher link: the receiver
/// reads it, the streams' [`SourceRtcp`]s send over it.
struct PublisherRecord {
    counters: Arc<PublisherCounters>,
}

impl MountpointRecord {
    fn caches(&self) -> Caches {
        self.streams.iter().map(|stream| stream.cache.clone()).collect()
    }
}

impl Running {
    /// Source stream `index` of mountpoint `mountpoint_id`.
    fn source_stream(&self, mountpoint_id: u64, index: u32) -> Result<&StreamRecord, EngineError> {
        let record = self.mountpoints.get(&mountpoint_id).ok_or(EngineError::UnknownMountpoint(mountpoint_id))?;
        record
            .streams
            .iter()
            .find(|stream| stream.index == index)
            .ok_or_else(|| invalid(format!("mountpoint {mountpoint_id} has no stream {index}")))
    }
}

/// A peer: one WebRTC PeerConnection's keys, address and SRTCP contexts,
/// owned by the control plane's core from DTLS up to hangup. It receives
/// media only while subscribed to a mountpoint.
struct PeerRecord {
    address: RawAddress,
    /// Its address while it is on UDP (the socket reader takes its RTCP by it).
    udp_address: Option<SocketAddr>,
    /// Its ICE-TCP connection, when the nominated address is one (see [`crate::egress::tcp`]).
    tcp: Option<SharedTcpOutput>,
    tcp_stall_timeout: Duration,
    profile: Profile,
    /// Protects what is sent to it (each subscription's worker derives its own session from it).
    local_master_key: Vec<u8>,
    /// Protects the RTCP the engine handle sends while no worker holds the peer.
    outbound: SrtpSession,
    /// Unprotects the SRTCP the peer sends.
    srtcp: Arc<Mutex<SrtcpInbound>>,
    counters: Arc<ViewerCounters>,
    subscription: Option<Subscription>,
}

/// What a peer receives: a mountpoint's streams, from one worker.
struct Subscription {
    mountpoint_id: u64,
    worker: usize,
    ssrcs: Vec<u32>,
    /// The source stream index each of its streams takes.
    indexes: Vec<u32>,
}

impl PeerRecord {
    /// The peer's subscription; ValueError-like if it has none.
    fn subscription(&self, peer_id: u64) -> Result<&Subscription, EngineError> {
        self.subscription.as_ref().ok_or_else(|| invalid(format!("peer {peer_id} is not subscribed to a mountpoint")))
    }
}

impl Subscription {
    /// Source stream `index` and the position of the peer's stream that takes it.
    fn stream_taking(&self, peer_id: u64, index: u32) -> Result<(u32, usize), EngineError> {
        let position = self
            .indexes
            .iter()
            .position(|&taken| taken == index)
            .ok_or_else(|| invalid(format!("peer {peer_id} has no stream {index}")))?;
        Ok((index, position))
    }
}

struct WorkerHandle {
    commands: Sender<Command>,
    wake: Arc<OwnedFd>,
    thread: JoinHandle<()>,
    load: Arc<WorkerLoad>,
    core: Option<usize>,
    viewers: usize,
}

struct Running {
    receiver_commands: Sender<ReceiverCommand>,
    receiver: JoinHandle<()>,
    workers: Vec<WorkerHandle>,
    mountpoints: HashMap<u64, MountpointRecord>,
    peers: HashMap<u64, PeerRecord>,
    /// The peers on UDP by their address (see [`canonical`]), for the socket reader.
    udp_peers: HashMap<SocketAddr, u64>,
    next_source_key: u64,
}

impl Running {
    /// The peer's UDP address is `address` now (None: it has none, it is on ICE-TCP or gone).
    fn set_udp_address(&mut self, peer_id: u64, old: Option<SocketAddr>, address: Option<SocketAddr>) {
        if let Some(old) = old {
            if self.udp_peers.get(&old) == Some(&peer_id) {
                self.udp_peers.remove(&old);
            }
        }
        if let Some(address) = address {
            self.udp_peers.insert(address, peer_id);
        }
    }
}

pub struct Engine {
    state: Arc<Mutex<Option<Running>>>,
    /// The thread that reads the WebRTC socket, once the control plane hands it over.
    socket_reader: Mutex<Option<SocketReader>>,
    /// The nice value the data plane's threads were asked to run at.
    nice: Option<i32>,
    /// What the receiver and the workers report (see [`crate::events`]).
    events: Arc<EventQueue>,
    epoll: Arc<OwnedFd>,
    wake: Arc<OwnedFd>,
    /// The engine's duplicate of the WebRTC socket (the workers send from it too).
    socket: Arc<OwnedFd>,
    socket_family: libc::c_int,
    priority: DataPlanePriority,
}

/// The lowest and highest nice values.
const NICE_RANGE: (i32, i32) = (-20, 19);

/// What a data-plane thread does first: takes the nice value `nice` if one
/// is asked for. Returns the thread's nice value then and the refusal, if any.
fn enter_data_plane(nice: Option<i32>) -> (i32, Option<io::Error>) {
    let refused = nice.and_then(|nice| set_thread_nice(nice).err());
    (thread_nice(), refused)
}

/// The data plane's priority from what each of its threads reported as it started.
fn data_plane_priority(
    requested: Option<i32>,
    started: &mpsc::Receiver<(i32, Option<io::Error>)>,
    threads: usize,
) -> DataPlanePriority {
    let mut priority = DataPlanePriority { requested, nice: thread_nice(), refused: None };
    for (nice, refused) in started.iter().take(threads) {
        priority.nice = nice;
        if let Some(error) = refused {
            priority.refused.get_or_insert_with(|| error.to_string());
        }
    }
    priority
}

/// The cores to run workers on, checked.
fn choose_cores(options: &EngineOptions) -> Result<Vec<usize>, EngineError> {
    let allowed = allowed_cores();
    let Some(cores) = &options.cores else {
        return Ok(allowed);
    };
    if cores.is_empty() {
        return Err(invalid("cores must list at least one core"));
    }
    let mut seen = HashSet::new();
    for &core in cores {
        if !seen.insert(core) {
            return Err(invalid(format!("core {core} appears twice")));
        }
        if options.pin && !allowed.contains(&core) {
            return Err(invalid(format!("core {core} is not one this process may run on ({allowed:?})")));
        }
    }
    Ok(cores.clone())
}

/// Duplicates the control plane's UDP socket and finds its address family.
fn duplicate_udp_socket(fd: RawFd) -> Result<(OwnedFd, libc::c_int), EngineError> {
    // SAFETY: fcntl on any integer is defined; it fails with EBADF if `fd` is not open.
    let duplicate = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: `duplicate` is a new descriptor that nothing else owns.
    let duplicate = unsafe { OwnedFd::from_raw_fd(duplicate) };
    let mut socket_type: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `socket_type` and `len` are live and sized for SO_TYPE.
    cvt(unsafe {
        libc::getsockopt(
            duplicate.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut socket_type as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    if socket_type != libc::SOCK_DGRAM {
        return Err(invalid("the WebRTC socket must be a UDP socket"));
    }
    // SAFETY: sockaddr_storage is plain old data and large enough for any address.
    let mut address: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `address` and `len` are live and describe the storage's size.
    cvt(unsafe {
        libc::getsockname(duplicate.as_raw_fd(), (&mut address as *mut libc::sockaddr_storage).cast(), &mut len)
    })?;
    let family = libc::c_int::from(address.ss_family);
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return Err(invalid("the WebRTC socket must be an IPv4 or IPv6 socket"));
    }
    Ok((duplicate, family))
}

/// Duplicates a connected UDP socket (a publisher link's).
fn duplicate_connected_udp_socket(fd: RawFd) -> Result<OwnedFd, EngineError> {
    let (duplicate, _) = duplicate_udp_socket(fd).map_err(|error| match error {
        EngineError::Invalid(_) => invalid("socket_fd must be a UDP socket (IPv4 or IPv6)"),
        other => other,
    })?;
    // SAFETY: sockaddr_storage is plain old data and large enough for any address.
    let mut address: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `address` and `len` are live and describe the storage's size.
    let connected = unsafe {
        libc::getpeername(duplicate.as_raw_fd(), (&mut address as *mut libc::sockaddr_storage).cast(), &mut len)
    };
    if connected < 0 {
        return Err(invalid("socket_fd must be a connected UDP socket (connect() it to the publisher)"));
    }
    Ok(duplicate)
}

/// Duplicates a viewer's connected TCP socket (its ICE-TCP connection), non-blocking.
fn duplicate_tcp_connection(fd: RawFd) -> Result<OwnedFd, EngineError> {
    // SAFETY: fcntl on any integer is defined; it fails with EBADF if `fd` is not open.
    let duplicate = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: `duplicate` is a new descriptor that nothing else owns.
    let duplicate = unsafe { OwnedFd::from_raw_fd(duplicate) };
    let mut socket_type: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `socket_type` and `len` are live and sized for SO_TYPE.
    let typed = unsafe {
        libc::getsockopt(
            duplicate.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut socket_type as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    // SAFETY: sockaddr_storage is plain old data and large enough for any address.
    let mut address: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `address` and `len` are live and describe the storage's size.
    let connected = unsafe {
        libc::getpeername(duplicate.as_raw_fd(), (&mut address as *mut libc::sockaddr_storage).cast(), &mut len)
    };
    if typed < 0 || socket_type != libc::SOCK_STREAM || connected < 0 {
        return Err(invalid("tcp_socket_fd must be a connected TCP socket"));
    }
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    unsafe {
        let flags = cvt(libc::fcntl(duplicate.as_raw_fd(), libc::F_GETFL))?;
        cvt(libc::fcntl(duplicate.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    Ok(duplicate)
}

/// A route's mid or rid: 1 to MAX_ID_LEN bytes.
fn checked_id(value: &Option<String>, what: &str) -> Result<Option<Vec<u8>>, EngineError> {
    match value {
        None => Ok(None),
        Some(value) if value.is_empty() || value.len() > MAX_ID_LEN => {
            Err(invalid(format!("a route's {what} must be 1 to {MAX_ID_LEN} bytes, got {value:?}")))
        }
        Some(value) => Ok(Some(value.as_bytes().to_vec())),
    }
}

/// The longest silence threshold: an hour.
pub const MAX_SILENCE_MS: u32 = 3_600_000;

fn checked_silence_ms(silence_ms: u32) -> Result<u64, EngineError> {
    Ok(u64::from(check_range(silence_ms, "silence_ms", 1, MAX_SILENCE_MS)?))
}

/// A temporal layer cap for `source` (None: all layers), refused for a codec
/// whose temporal layers the engine cannot leave out (VP8, VP9, AV1 only).
fn checked_temporal_cap(source: &StreamRecord, layer: Option<u8>) -> Result<Option<u8>, EngineError> {
    if !matches!(source.codec, Codec::Vp8 | Codec::Vp9 | Codec::Av1) {
        let index = source.index;
        return Err(invalid(format!(
            "stream {index} is not VP8, VP9 or AV1: temporal layers are for VP8, VP9 and AV1 streams"
        )));
    }
    layer.map(|layer| check_range(layer, "temporal layer", 0, 3)).transpose()
}

/// A spatial layer cap for `source` (None: all layers), refused unless it is VP9.
fn checked_spatial_cap(source: &StreamRecord, layer: Option<u8>) -> Result<Option<u8>, EngineError> {
    if source.codec != Codec::Vp9 {
        let index = source.index;
        return Err(invalid(format!("stream {index} is not VP9: spatial layers are for VP9 streams")));
    }
    layer.map(|layer| check_range(layer, "spatial layer", 0, 7)).transpose()
}

/// `value` itself if it lies in `low..=high`.
fn check_range<T: Copy + PartialOrd + fmt::Display>(value: T, what: &str, low: T, high: T) -> Result<T, EngineError> {
    if value < low || value > high {
        return Err(invalid(format!("{what} must be in {low}..={high}, got {value}")));
    }
    Ok(value)
}

/// A peer's address as the WebRTC socket sends to it.
fn peer_address(address: SocketAddr, family: libc::c_int) -> Result<RawAddress, EngineError> {
    check_range(address.port(), "port", 1, u16::MAX)?;
    RawAddress::from_socket_addr(address, family)
        .ok_or_else(|| invalid(format!("the WebRTC socket cannot send to {}", address.ip())))
}

impl Engine {
    /// Starts the receiver and the workers; media goes out from a duplicate of `webrtc_socket_fd`.
    pub fn new(webrtc_socket_fd: RawFd, options: EngineOptions) -> Result<Self, EngineError> {
        let (socket, socket_family) = duplicate_udp_socket(webrtc_socket_fd)?;
        let cores = choose_cores(&options)?;
        let nice = options
            .data_plane_nice
            .map(|nice| check_range(nice, "data_plane_nice", NICE_RANGE.0, NICE_RANGE.1))
            .transpose()?;
        let (started, started_threads) = mpsc::channel();
        set_send_buffer(socket.as_raw_fd(), SEND_BUFFER_BYTES);
        let socket = Arc::new(socket);
        // SAFETY: a plain system call; the result is checked and owned at once.
        let epoll = unsafe { OwnedFd::from_raw_fd(cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        let wake_fd = new_eventfd()?;
        register(epoll.as_raw_fd(), wake_fd.as_raw_fd(), WAKE_KEY)?;
        let (epoll, wake_fd) = (Arc::new(epoll), Arc::new(wake_fd));
        let events = Arc::new(EventQueue::new()?);
        let mut workers = Vec::with_capacity(cores.len());
        let mut doors = Vec::with_capacity(cores.len());
        for (index, &core) in cores.iter().enumerate() {
            let (producer, consumer) = ring::channel(RING_PACKETS);
            let (commands, receiver) = mpsc::channel();
            let worker_wake = Arc::new(new_eventfd()?);
            let load = Arc::new(WorkerLoad::default());
            let core = options.pin.then_some(core);
            let config = WorkerConfig { index, core, mode: options.send_mode, max_send_delay: options.max_send_delay };
            let worker = Worker::new(
                config,
                worker_wake.clone(),
                receiver,
                consumer,
                socket.clone(),
                load.clone(),
                events.clone(),
            );
            let started = started.clone();
            let thread = std::thread::Builder::new().name(format!("fanout-worker-{index}")).spawn(move || {
                let _ = started.send(enter_data_plane(nice));
                worker.run()
            })?;
            doors.push(WorkerDoor { deliveries: producer, wake: worker_wake.clone(), load: load.clone() });
            workers.push(WorkerHandle { commands, wake: worker_wake, thread, load, core, viewers: 0 });
        }
        let (receiver_commands, commands) = mpsc::channel();
        let receiver = Receiver::new(epoll.clone(), wake_fd.clone(), commands, doors, events.clone());
        let receiver = std::thread::Builder::new().name("fanout-receiver".into()).spawn(move || {
            let _ = started.send(enter_data_plane(nice));
            receiver.run()
        })?;
        let priority = data_plane_priority(nice, &started_threads, workers.len() + 1);
        let running = Running {
            receiver_commands,
            receiver,
            workers,
            mountpoints: HashMap::new(),
            peers: HashMap::new(),
            udp_peers: HashMap::new(),
            next_source_key: 0,
        };
        Ok(Self {
            state: Arc::new(Mutex::new(Some(running))),
            socket_reader: Mutex::new(None),
            nice,
            events,
            epoll,
            wake: wake_fd,
            socket,
            socket_family,
            priority,
        })
    }

    /// The nice value the data plane's threads run at, against the one asked for.
    pub fn data_plane_priority(&self) -> &DataPlanePriority {
        &self.priority
    }

    /// Whether the WebRTC socket (IPv4 or IPv6) can send to `address`.
    pub fn can_send_to(&self, address: SocketAddr) -> bool {
        RawAddress::from_socket_addr(address, self.socket_family).is_some()
    }

    // --- the WebRTC socket's reader (see crate::ingest::socket_reader) ---

    /// From now on the engine reads the WebRTC socket (the control plane
    /// stops reading it): its viewers' RTCP stays in the data plane, the rest
    /// waits for [`Engine::take_webrtc_datagrams`]. Returns the eventfd that
    /// is readable while datagrams wait. Calling it again returns the same fd.
    pub fn read_webrtc_socket(&self) -> Result<RawFd, EngineError> {
        let mut reader = self.socket_reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(reader) = reader.as_ref() {
            return Ok(reader.forwarded.fd());
        }
        let worker_wakes = running(&self.state)?
            .as_ref()
            .expect("checked by running()")
            .workers
            .iter()
            .map(|worker| worker.wake.clone())
            .collect();
        let viewers = ViewersOnUdp {
            state: self.state.clone(),
            events: self.events.clone(),
            unreported_feedback: HashMap::new(),
            worker_wakes,
            pending_wakes: Vec::new(),
        };
        let nice = self.nice;
        let started = SocketReader::spawn(self.socket.clone(), viewers, move || {
            let _ = enter_data_plane(nice);
        })?;
        let fd = started.forwarded.fd();
        *reader = Some(started);
        Ok(fd)
    }

    /// The datagrams the engine read on the WebRTC socket that are not its
    /// viewers' RTCP (STUN, DTLS...), oldest first, with their sources.
    pub fn take_webrtc_datagrams(&self) -> Vec<Datagram> {
        let reader = self.socket_reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        reader.as_ref().map(|reader| reader.forwarded.drain()).unwrap_or_default()
    }

    /// What the WebRTC socket's reader has done: datagrams read, viewers' RTCP
    /// read and refused, datagrams handed to the control plane, and dropped
    /// (cut to fit, or past the control plane's queue). Zeros until it reads.
    pub fn webrtc_socket_stats(&self) -> WebRtcSocketStats {
        let reader = self.socket_reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(reader) = reader.as_ref() else {
            return WebRtcSocketStats::default();
        };
        let counters = &reader.counters;
        WebRtcSocketStats {
            datagrams: counters.datagrams.load(Ordering::Relaxed),
            rtcp_read: counters.rtcp_read.load(Ordering::Relaxed),
            rtcp_refused: counters.rtcp_refused.load(Ordering::Relaxed),
            forwarded: counters.forwarded.load(Ordering::Relaxed),
            dropped: counters.truncated.load(Ordering::Relaxed) + reader.forwarded.dropped(),
        }
    }

    // --- events (see crate::events) ---

    /// The eventfd that is readable while events wait for [`Engine::drain_events`].
    pub fn event_fd(&self) -> RawFd {
        self.events.fd()
    }

    /// Every event since the last call, oldest first, with stream indexes;
    /// events about a mountpoint removed meanwhile are left out. Nothing
    /// once the engine is closed.
    pub fn drain_events(&self) -> Vec<EngineEvent> {
        let events = self.events.drain();
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(running) = state.as_ref() else {
            return Vec::new();
        };
        let index_of = |mountpoint_id: u64, position: usize| {
            let mountpoint = running.mountpoints.get(&mountpoint_id)?;
            mountpoint.streams.get(position).map(|stream| stream.index)
        };
        events.into_iter().filter_map(|event| event.resolve(index_of)).collect()
    }

    /// Events lost because the control plane left too many waiting.
    pub fn events_dropped(&self) -> u64 {
        self.events.dropped()
    }

    /// A source stream is reported silent after `silence_ms` without a packet
    /// (from now on; a stream already silent stays so until it sends).
    pub fn set_source_silence(&self, mountpoint_id: u64, index: u32, silence_ms: u32) -> Result<(), EngineError> {
        let state = self.running()?;
        let running = state.as_ref().expect("checked by running()");
        let stream = running.source_stream(mountpoint_id, index)?;
        stream.silence_ms.store(checked_silence_ms(silence_ms)?, Ordering::Relaxed);
        self.to_receiver(running, ReceiverCommand::SilenceChanged)
    }

    // --- end of events ---

    /// Records source stream `index` to a Janus .mjr file at `path` (created
    /// or truncated now; an error such as a missing directory is returned) in
    /// `codec` (Janus's name: "opus", "vp8", "h264"...), from its next packet,
    /// until [`Engine::stop_recording`]. A recording running on the stream ends first.
    pub fn start_recording(&self, mountpoint_id: u64, index: u32, path: &str, codec: &str) -> Result<(), EngineError> {
        let state = self.running()?;
        let running = state.as_ref().expect("checked by running()");
        let stream = running.source_stream(mountpoint_id, index)?;
        if stream.kind == MediaKind::Data {
            return Err(invalid(format!("stream {index} is a data stream")));
        }
        let target = RecordingTarget { mountpoint_id, index, kind: stream.kind, codec: codec.to_owned() };
        stream.recording.start(path, target, self.events.clone())?;
        Ok(())
    }

    /// Ends the recording of source stream `index`: its file is complete when
    /// this returns. Returns whether one was running (it may have stopped on a
    /// write error already, with a RecordingStopped event).
    pub fn stop_recording(&self, mountpoint_id: u64, index: u32) -> Result<bool, EngineError> {
        let recording = {
            let state = self.running()?;
            let running = state.as_ref().expect("checked by running()");
            running.source_stream(mountpoint_id, index)?.recording.clone()
        };
        let was_active = recording.is_active();
        recording.stop();
        Ok(was_active)
    }

    fn running(&self) -> Result<MutexGuard<'_, Option<Running>>, EngineError> {
        running(&self.state)
    }

    fn to_receiver(&self, running: &Running, command: ReceiverCommand) -> Result<(), EngineError> {
        running.receiver_commands.send(command).map_err(|_| EngineError::Closed)?;
        wake(&self.wake);
        Ok(())
    }

    fn to_worker(running: &Running, worker: usize, command: Command) -> Result<(), EngineError> {
        let handle = &running.workers[worker];
        handle.commands.send(command).map_err(|_| EngineError::Closed)?;
        wake(&handle.wake);
        Ok(())
    }

    pub fn add_mountpoint(&self, id: u64, streams: &[SourceConfig]) -> Result<Vec<u16>, EngineError> {
        let mut state = self.running()?;
        let running = state.as_mut().expect("checked by running()");
        if running.mountpoints.contains_key(&id) {
            return Err(invalid(format!("mountpoint {id} already exists")));
        }
        let mut indexes = HashSet::new();
        let mut checked = Vec::with_capacity(streams.len());
        for stream in streams {
            let index = stream.index;
            if !indexes.insert(index) {
                return Err(invalid(format!("stream index {index} appears twice")));
            }
            let clock_rate = check_range(stream.clock_rate, "clock rate", 1, u32::MAX)?;
            if stream.port.is_none() {
                let refused = [
                    ("rtcp_port", stream.rtcp_port.is_some()),
                    ("interface", stream.interface.is_some()),
                    ("srtp_profile", stream.ingest.srtp.is_some()),
                ];
                if let Some((option, _)) = refused.iter().find(|(_, given)| *given) {
                    return Err(invalid(format!(
                        "stream {index} has no port (the publisher link feeds it): {option} is not allowed"
                    )));
                }
            }
            checked.push((index, stream.kind, stream.codec, clock_rate, stream.port, stream.rtcp_port));
        }
        for stream in streams {
            let Some(shared) = stream.shares_rtcp_port_of else { continue };
            let has_port = streams.iter().any(|other| other.index == shared && other.rtcp_port.is_some());
            if stream.port.is_none() || stream.rtcp_port.is_some() || shared == stream.index || !has_port {
                return Err(invalid(format!(
                    "stream {} cannot share stream {shared}'s RTCP port: it needs a port and no RTCP port of its \
                     own, and stream {shared} an RTCP port",
                    stream.index
                )));
            }
        }
        // Bind every port first: on any failure the sockets bound so far close on return.
        let mut sockets = Vec::with_capacity(streams.len());
        for (stream, (_, _, _, _, port, rtcp_port)) in streams.iter().zip(&checked) {
            let interface = stream.interface.as_deref();
            let rtcp = rtcp_port.map(|rtcp_port| bind_source_on(&stream.host, rtcp_port, interface)).transpose()?;
            let socket = port.map(|port| bind_source_on(&stream.host, port, interface)).transpose()?;
            sockets.push((socket, rtcp));
        }
        let mut sockets: Vec<_> = sockets
            .into_iter()
            .map(|(socket, rtcp)| (socket, rtcp.map(|rtcp| Arc::new(SourceRtcp::new(rtcp)))))
            .collect();
        for (position, stream) in streams.iter().enumerate() {
            let Some(shared) = stream.shares_rtcp_port_of else { continue };
            let owner = streams.iter().position(|other| other.index == shared).expect("checked above");
            let port = sockets[owner].1.as_ref().expect("checked above");
            sockets[position].1 = Some(Arc::new(SourceRtcp::sharing(port)));
        }
        let mut records = Vec::with_capacity(streams.len());
        let mut sources = Vec::with_capacity(streams.len());
        for (((socket, rtcp), (index, kind, codec, clock_rate, _, _)), stream) in
            sockets.into_iter().zip(checked).zip(streams)
        {
            let counters = Arc::new(StreamCounters::default());
            let mut source = SourceStream::new(kind, codec, socket, counters.clone());
            let silence_ms = stream.silence_ms.map_or(Ok(DEFAULT_SILENCE_MS), checked_silence_ms)?;
            source.silence.threshold_ms.store(silence_ms, Ordering::Relaxed);
            let silence_ms = source.silence.threshold_ms.clone();
            source
                .set_ingest(&stream.ingest, clock_rate)
                .map_err(|message| invalid(format!("stream {index}: {message}")))?;
            let port = source.local_port()?;
            let linked = source.fd().is_none();
            let starts_at_keyframes = kind == MediaKind::Video && codec.finds_keyframes();
            let cached = starts_at_keyframes && !keyframe_cache_disabled();
            source.cache = cached.then(|| Arc::new(Mutex::new(GopCache::new())));
            source.rtcp = rtcp.or_else(|| linked.then(|| Arc::new(SourceRtcp::for_link())));
            let (cache, rtcp, recording) = (source.cache.clone(), source.rtcp.clone(), source.recording.clone());
            records.push(StreamRecord {
                index,
                port,
                linked,
                kind,
                codec,
                clock_rate,
                starts_at_keyframes,
                counters,
                cache,
                rtcp,
                silence_ms,
                recording,
            });
            sources.push(source);
        }
        let first_key = running.next_source_key;
        let mut rtcp_keys = Vec::new();
        let mut key = first_key;
        for (position, source) in sources.iter().enumerate() {
            if let Some(fd) = source.fd() {
                register(self.epoll.as_raw_fd(), fd, key)?;
            }
            key += 1;
            if let Some(fd) = source.rtcp.as_ref().and_then(|rtcp| rtcp.fd()) {
                register(self.epoll.as_raw_fd(), fd, key)?;
                rtcp_keys.push((key, position));
                key += 1;
            }
        }
        running.next_source_key = key;
        let mut keys = (first_key..).filter(|key| !rtcp_keys.iter().any(|(rtcp_key, _)| rtcp_key == key));
        let keyed = sources.into_iter().map(|source| (keys.next().expect("unbounded"), source)).collect();
        self.to_receiver(running, ReceiverCommand::AddMountpoint { id, streams: keyed, rtcp_keys })?;
        let ports = records.iter().map(|record| record.port).collect();
        let workers = running.workers.len();
        let record = MountpointRecord {
            streams: records,
            viewers: HashSet::new(),
            per_worker: vec![0; workers],
            sent: (0..workers).map(|_| Arc::default()).collect(),
            publisher: None,
        };
        running.mountpoints.insert(id, record);
        Ok(ports)
    }

    /// Closes the mountpoint's sockets (before returning) and ends its
    /// peers' subscriptions (the peers stay). Unknown ids are ignored.
    pub fn remove_mountpoint(&self, id: u64) -> Result<(), EngineError> {
        let mut state = self.running()?;
        let running = state.as_mut().expect("checked by running()");
        let Some(record) = running.mountpoints.remove(&id) else {
            return Ok(());
        };
        for stream in &record.streams {
            stream.recording.stop();
        }
        for peer_id in &record.viewers {
            let subscription = running.peers.get_mut(peer_id).and_then(|peer| peer.subscription.take());
            if let Some(subscription) = subscription {
                running.workers[subscription.worker].viewers -= 1;
            }
        }
        let (done, closed) = mpsc::sync_channel(1);
        self.to_receiver(running, ReceiverCommand::RemoveMountpoint { id, done })?;
        let _ = closed.recv();
        for (worker, &viewers) in record.per_worker.iter().enumerate() {
            if viewers > 0 {
                Self::to_worker(running, worker, Command::RemoveMountpoint { id })?;
            }
        }
        Ok(())
    }

    /// A peer whose DTLS-SRTP is up: `local_master_key` protects what the
    /// engine sends it, `remote_master_key` unprotects the SRTCP it sends.
    /// It gets no media until subscribed. With `tcp_socket_fd` (its ICE-TCP
    /// connection, which the engine duplicates) everything sent to it goes
    /// there, RFC 4571-framed; a connection stuck for `tcp_stall_timeout` is lost.
    #[allow(clippy::too_many_arguments)]
    pub fn add_peer(
        &self,
        peer_id: u64,
        address: SocketAddr,
        profile: Profile,
        local_master_key: &[u8],
        remote_master_key: &[u8],
        tcp_socket_fd: Option<RawFd>,
        tcp_stall_timeout: Duration,
    ) -> Result<(), EngineError> {
        let mut state = self.running()?;
        let running = state.as_mut().expect("checked by running()");
        if running.peers.contains_key(&peer_id) {
            return Err(invalid(format!("peer {peer_id} already exists")));
        }
        if profile == Profile::AesCm128HmacSha1_32 {
            return Err(invalid("AES_CM_128_HMAC_SHA1_32 is for sources only"));
        }
        let outbound = SrtpSession::new(profile, local_master_key).map_err(|e| invalid(format!("local key: {e}")))?;
        let remote = SrtpSession::new(profile, remote_master_key).map_err(|e| invalid(format!("remote key: {e}")))?;
        let udp_address = tcp_socket_fd.is_none().then_some(canonical(address));
        let address = peer_address(address, self.socket_family)?;
        if tcp_stall_timeout.is_zero() {
            return Err(invalid("tcp_stall_ms must be at least 1"));
        }
        let tcp = match tcp_socket_fd {
            Some(fd) => Some(TcpOutput::new(duplicate_tcp_connection(fd)?, tcp_stall_timeout).shared()),
            None => None,
        };
        let record = PeerRecord {
            address,
            udp_address,
            tcp,
            tcp_stall_timeout,
            profile,
            local_master_key: local_master_key.to_vec(),
            outbound,
            srtcp: Arc::new(Mutex::new(SrtcpInbound::new(remote))),
            counters: Arc::default(),
            subscription: None,
        };
        running.peers.insert(peer_id, record);
        running.set_udp_address(peer_id, None, udp_address);
        Ok(())
    }

    /// The peer goes (its subscription too). Unknown ids are ignored.
    pub fn remove_peer(&self, peer_id: u64) -> Result<(), EngineError> {
        let mut state = self.running()?;
        let running = state.as_mut().expect("checked by running()");
        self.end_subscription(running, peer_id)?;
        if let Some(peer) = running.peers.remove(&peer_id) {
            running.set_udp_address(peer_id, peer.udp_address, None);
        }
        Ok(())
    }

    /// Subscribes a peer to a mountpoint's `streams`. The first time, its
    /// worker (the one with the fewest subscribed peers) starts sending them;
    /// when it is subscribed already, it moves to `mountpoint_id` without
    /// renegotiation: a stream whose SSRC it already had goes on with that
    /// stream's sequence numbers and timestamps (as across a source restart),
    /// video from the new mountpoint's keyframe cache. Keys, address, worker
    /// and counters stay.
    pub fn subscribe(
        &self,
        peer_id: u64,
        mountpoint_id: u64,
        streams: &[ViewerStreamConfig],
    ) -> Result<(), EngineError> {
        let mut state = self.running()?;
        let running = state.as_mut().expect("checked by running()");
        let mountpoint =
            running.mountpoints.get(&mountpoint_id).ok_or(EngineError::UnknownMountpoint(mountpoint_id))?;
        let peer = running.peers.get(&peer_id).ok_or(EngineError::UnknownPeer(peer_id))?;
        let (viewer_streams, ssrcs, indexes) = viewer_streams(mountpoint_id, mountpoint, streams)?;
        let (worker, old_mountpoint) = match &peer.subscription {
            Some(subscription) => {
                let worker = subscription.worker;
                let command = Command::SwitchViewer {
                    id: peer_id,
                    mountpoint_id,
                    streams: mountpoint.streams.len(),
                    caches: mountpoint.caches(),
                    viewer_streams,
                    totals: mountpoint.sent[worker].clone(),
                };
                Self::to_worker(running, worker, command)?;
                (worker, Some(subscription.mountpoint_id))
            }
            None => {
                let local = SrtpSession::new(peer.profile, &peer.local_master_key)
                    .map_err(|e| invalid(format!("local key: {e}")))?;
                let first_report_at = Instant::now() + FIRST_REPORT_DELAY;
                let mut viewer = Box::new(Viewer::new(peer_id, peer.address, viewer_streams, local, first_report_at));
                viewer.tcp = peer.tcp.clone();
                viewer.set_counters(peer.counters.clone());
                if peer.counters.paused.load(Ordering::Relaxed) {
                    viewer.set_paused(true);
                }
                let worker = (0..running.workers.len())
                    .min_by_key(|&w| running.workers[w].viewers)
                    .expect("one worker at least");
                let command = Command::AddViewer {
                    mountpoint_id,
                    streams: mountpoint.streams.len(),
                    caches: mountpoint.caches(),
                    viewer,
                    counters: peer.counters.clone(),
                    totals: mountpoint.sent[worker].clone(),
                };
                Self::to_worker(running, worker, command)?;
                running.workers[worker].viewers += 1;
                (worker, None)
            }
        };
        // The worker holds the peer's video until the mountpoint's packets
        // flow to it, then copies the keyframe cache: no packet falls between
        // the cache and the live stream, and none reaches it before the peer.
        if old_mountpoint != Some(mountpoint_id) {
            self.count_viewer(running, mountpoint_id, worker)?;
        }
        Self::to_worker(running, worker, Command::StartViewer { id: peer_id })?;
        let mountpoint = running.mountpoints.get(&mountpoint_id).expect("looked up above");
        for &index in &indexes {
            if let Some(record) = mountpoint.streams.iter().find(|record| record.index == index) {
                record.request_keyframe_if_uncached();
            }
        }
        if let Some(old_mountpoint) = old_mountpoint.filter(|&old| old != mountpoint_id) {
            if let Some(old) = running.mountpoints.get_mut(&old_mountpoint) {
                old.viewers.remove(&peer_id);
            }
            self.uncount_viewer(running, old_mountpoint, worker)?;
        }
        running.mountpoints.get_mut(&mountpoint_id).expect("looked up above").viewers.insert(peer_id);
        let peer = running.peers.get_mut(&peer_id).expect("looked up above");
        peer.subscription = Some(Subscription { mountpoint_id, worker, ssrcs, indexes });
        Ok(())
    }

    /// Stops sending the peer media; the peer stays (it can still send and
    /// receive RTCP, and subscribe again). Unknown ids are ignored.
    pub fn unsubscribe(&self, peer_id: u64) -> Result<(), EngineError> {
        let mut state = self.running()?;
        let running = state.as_mut().expect("checked by running()");
        self.end_subscription(running, peer_id)
    }

    fn end_subscription(&self, running: &mut Running, peer_id: u64) -> Result<(), EngineError> {
        let Some(subscription) = running.peers.get_mut(&peer_id).and_then(|peer| peer.subscription.take()) else {
            return Ok(());
        };
        let worker = subscription.worker;
        running.workers[worker].viewers -= 1;
        Self::to_worker(running, worker, Command::RemoveViewer { id: peer_id })?;
        if let Some(mountpoint) = running.mountpoints.get_mut(&subscription.mountpoint_id) {
            mountpoint.viewers.remove(&peer_id);
        }
        self.uncount_viewer(running, subscription.mountpoint_id, worker)
    }

    /// Counts one more viewer of the mountpoint on `worker`; for its first,
    /// the receiver starts sending it packets (and has, when this returns).
    fn count_viewer(&self, running: &mut Running, mountpoint_id: u64, worker: usize) -> Result<(), EngineError> {
        let mountpoint =
            running.mountpoints.get_mut(&mountpoint_id).ok_or(EngineError::UnknownMountpoint(mountpoint_id))?;
        mountpoint.per_worker[worker] += 1;
        if mountpoint.per_worker[worker] == 1 {
            let (done, subscribed) = mpsc::sync_channel(1);
            let command = ReceiverCommand::Subscribe { mountpoint: mountpoint_id, worker, done: Some(done) };
            self.to_receiver(running, command)?;
            let _ = subscribed.recv();
        }
        Ok(())
    }

    /// Counts one viewer less of the mountpoint on `worker`; after its last, the receiver stops.
    fn uncount_viewer(&self, running: &mut Running, mountpoint_id: u64, worker: usize) -> Result<(), EngineError> {
        let Some(mountpoint) = running.mountpoints.get_mut(&mountpoint_id) else {
            return Ok(());
        };
        mountpoint.per_worker[worker] -= 1;
        if mountpoint.per_worker[worker] == 0 {
            self.to_receiver(running, ReceiverCommand::Unsubscribe { mountpoint: mountpoint_id, worker })?;
        }
        Ok(())
    }

    /// The per-stream send switch: stops or resumes sending the peer's
    /// stream that takes source stream `index`. Resumed video starts from the
    /// keyframe cache (or the next keyframe); numbering stays continuous.
    pub fn set_stream_paused(&self, peer_id: u64, index: u32, paused: bool) -> Result<(), EngineError> {
        let state = self.running()?;
        let running = state.as_ref().expect("checked by running()");
        let peer = running.peers.get(&peer_id).ok_or(EngineError::UnknownPeer(peer_id))?;
        let subscription = peer.subscription(peer_id)?;
        let (index, stream) = subscription.stream_taking(peer_id, index)?;
        Self::to_worker(running, subscription.worker, Command::SetStreamPaused { id: peer_id, stream, paused })?;
        if !paused {
            if let Some(mountpoint) = running.mountpoints.get(&subscription.mountpoint_id) {
                if let Some(source) = mountpoint.streams.iter().find(|source| source.index == index) {
                    source.request_keyframe_if_uncached();
                }
            }
        }
        Ok(())
    }

    /// The playout-delay header extension on every packet of the peer's
    /// stream that takes source stream `index`: `delay_ms` is (min, max) in
    /// milliseconds, None to stop adding it. ValueError-like errors for an
    /// extension id outside 1..=14, a delay past 40950 ms or min above max.
    pub fn set_stream_playout_delay(
        &self,
        peer_id: u64,
        index: u32,
        extension_id: u8,
        delay_ms: Option<(u32, u32)>,
    ) -> Result<(), EngineError> {
        let state = self.running()?;
        let running = state.as_ref().expect("checked by running()");
        let peer = running.peers.get(&peer_id).ok_or(EngineError::UnknownPeer(peer_id))?;
        let subscription = peer.subscription(peer_id)?;
        let (_, stream) = subscription.stream_taking(peer_id, index)?;
        let extension_id = check_range(extension_id, "playout-delay extension id", 1, 14)?;
        let delay = match delay_ms {
            None => None,
            Some((min_ms, max_ms)) => {
                let min_ms = check_range(min_ms, "minimum playout delay", 0, 40_950)?;
                let max_ms = check_range(max_ms, "maximum playout delay", 0, 40_950)?;
                let delay = PlayoutDelay::from_millis(extension_id, min_ms, max_ms).ok_or_else(|| {
                    invalid(format!("minimum playout delay {min_ms} ms above the maximum {max_ms} ms"))
                })?;
                Some(delay)
            }
        };
        Self::to_worker(running, subscription.worker, Command::SetPlayoutDelay { id: peer_id, stream, delay })
    }

    /// Transport-wide congestion control for the subscribed peer: every packet
    /// it is sent carries a transport-wide sequence number with extension id
    /// `extension_id` (1..=14, one-byte header; None: no more), and its
    /// transport feedback (through receive_rtcp) drives its bandwidth estimate.
    pub fn set_transport_cc(&self, peer_id: u64, extension_id: Option<u8>) -> Result<(), EngineError> {
        let state = self.running()?;
        let running = state.as_ref().expect("checked by running()");
        let peer = running.peers.get(&peer_id).ok_or(EngineError::UnknownPeer(peer_id))?;
        let subscription = peer.subscription(peer_id)?;
        let extension_id = match extension_id {
            None => None,
            Some(id) => Some(check_range(id, "transport-cc extension id", 1, 14)?),
        };
        Self::to_worker(running, subscription.worker, Command::SetTransportCc { id: peer_id, extension_id })
    }

    /// The bitrate (bits/s) worth probing the subscribed peer's link for:
    /// while its estimate is under it, padding goes to it now and then so that
    /// all it gets goes at that rate for a moment, and the estimate rises to
    /// what the link carried (see `egress::probe`). None: no probing. Needs
    /// transport-wide congestion control (set_transport_cc) and a video stream.
    pub fn set_probe_goal(&self, peer_id: u64, bitrate: Option<u64>) -> Result<(), EngineError> {
        let state = self.running()?;
        let running = state.as_ref().expect("checked by running()");
        let peer = running.peers.get(&peer_id).ok_or(EngineError::UnknownPeer(peer_id))?;
        let subscription = peer.subscription(peer_id)?;
        let bitrate = bitrate.map(|bitrate| bitrate.clamp(MIN_BITRATE, MAX_BITRATE));
        Self::to_worker(running, subscription.worker, Command::SetProbeGoal { id: peer_id, bitrate })
    }

    /// Simulcast: moves the peer's stream that takes source stream `index`
    /// to source stream `source_index` of the same mountpoint (another
    /// encoding of the same video), at that source's next keyframe, or if
    /// `at_once` and its keyframe cache holds one, now: the current source
    /// stops at once and the new one starts from its cache (paced to the
    /// viewer's estimate, as a join) or, if that would take long or the
    /// viewer's link still holds a queue, from its next live keyframe (see
    /// `egress::worker::MOVE_AT_ONCE_CATCH_UP_SECONDS`).
    /// The stream is known by `source_index`
    /// from now on. The source is asked for a keyframe if it has an RTCP
    /// port. Numbering stays continuous (VP8 and VP9 picture IDs too).
    pub fn set_stream_source(
        &self,
        peer_id: u64,
        index: u32,
        source_index: u32,
        at_once: bool,
    ) -> Result<(), EngineError> {
        let mut state = self.running()?;
        let running = state.as_mut().expect("checked by running()");
        let peer = running.peers.get(&peer_id).ok_or(EngineError::UnknownPeer(peer_id))?;
        let subscription = peer.subscription(peer_id)?;
        let (index, stream) = subscription.stream_taking(peer_id, index)?;
        if source_index != index && subscription.indexes.contains(&source_index) {
            return Err(invalid(format!("peer {peer_id} already takes stream {source_index}")));
        }
        let mountpoint_id = subscription.mountpoint_id;
        let mountpoint = running.mountpoints.get(&mountpoint_id).ok_or(EngineError::Closed)?;
        let find = |wanted: u32| mountpoint.streams.iter().position(|source| source.index == wanted);
        let current = find(index).ok_or_else(|| invalid(format!("no stream {index}")))?;
        let source = find(source_index)
            .ok_or_else(|| invalid(format!("mountpoint {mountpoint_id} has no stream {source_index}")))?;
        let (from, to) = (&mountpoint.streams[current], &mountpoint.streams[source]);
        if from.kind != to.kind || from.codec != to.codec || from.clock_rate != to.clock_rate {
            return Err(invalid(format!("stream {source_index} is not the same kind and codec as stream {index}")));
        }
        let codec = to.codec;
        Self::to_worker(
            running,
            subscription.worker,
            Command::SetStreamSource { id: peer_id, stream, source, codec, at_once },
        )?;
        if let Some(rtcp) = &to.rtcp {
            rtcp.request_keyframe(KeyframeReason::Start, Instant::now());
        }
        let peer = running.peers.get_mut(&peer_id).expect("looked up above");
        peer.subscription.as_mut().expect("looked up above").indexes[stream] = source_index;
        Ok(())
    }

    /// VP8, VP9 or AV1: the peer's stream that takes source stream `index` gets
    /// only temporal layers up to `layer` (None: all), from the next picture
    /// that allows the change (VP8 and AV1: a base-layer frame; VP9: any picture to go
    /// lower, a keyframe or a switching up point to go higher); the packets
    /// sent are renumbered so the peer sees no gap.
    pub fn set_stream_temporal_layer(&self, peer_id: u64, index: u32, layer: Option<u8>) -> Result<(), EngineError> {
        let state = self.running()?;
        let running = state.as_ref().expect("checked by running()");
        let peer = running.peers.get(&peer_id).ok_or(EngineError::UnknownPeer(peer_id))?;
        let subscription = peer.subscription(peer_id)?;
        let (index, stream) = subscription.stream_taking(peer_id, index)?;
        let mountpoint = running.mountpoints.get(&subscription.mountpoint_id).ok_or(EngineError::Closed)?;
        let source = mountpoint.streams.iter().find(|source| source.index == index).ok_or(EngineError::Closed)?;
        let cap = checked_temporal_cap(source, layer)?;
        let codec = source.codec;
        Self::to_worker(running, subscription.worker, Command::SetStreamTemporalCap { id: peer_id, stream, codec, cap })
    }

    /// VP9: the peer's stream that takes source stream `index` gets only
    /// spatial layers up to `layer` (None: all): lower from the next picture
    /// on, higher a layer at a time from a frame of the next layer up that no
    /// earlier picture predicts (a keyframe's; the source is asked for one if
    /// it has an RTCP port and `layer` is not 0). The last packet of the top
    /// layer sent in each picture carries the marker bit; the packets sent are
    /// renumbered so the peer sees no gap.
    pub fn set_stream_spatial_layer(&self, peer_id: u64, index: u32, layer: Option<u8>) -> Result<(), EngineError> {
        let state = self.running()?;
        let running = state.as_ref().expect("checked by running()");
        let peer = running.peers.get(&peer_id).ok_or(EngineError::UnknownPeer(peer_id))?;
        let subscription = peer.subscription(peer_id)?;
        let (index, stream) = subscription.stream_taking(peer_id, index)?;
        let mountpoint = running.mountpoints.get(&subscription.mountpoint_id).ok_or(EngineError::Closed)?;
        let source = mountpoint.streams.iter().find(|source| source.index == index).ok_or(EngineError::Closed)?;
        let cap = checked_spatial_cap(source, layer)?;
        if cap != Some(0) {
            if let Some(rtcp) = &source.rtcp {
                rtcp.request_keyframe(KeyframeReason::Start, Instant::now());
            }
        }
        Self::to_worker(running, subscription.worker, Command::SetStreamSpatialCap { id: peer_id, stream, cap })
    }

    /// The peer's ICE-nominated address changed: a UDP address, or with
    /// `tcp_socket_fd` an ICE-TCP connection (see [`Engine::add_peer`]).
    pub fn set_peer_address(
        &self,
        peer_id: u64,
        address: SocketAddr,
        tcp_socket_fd: Option<RawFd>,
    ) -> Result<(), EngineError> {
        let mut state = self.running()?;
        let running = state.as_mut().expect("checked by running()");
        let udp_address = tcp_socket_fd.is_none().then_some(canonical(address));
        let address = peer_address(address, self.socket_family)?;
        let peer = running.peers.get_mut(&peer_id).ok_or(EngineError::UnknownPeer(peer_id))?;
        let tcp = match tcp_socket_fd {
            Some(fd) => Some(TcpOutput::new(duplicate_tcp_connection(fd)?, peer.tcp_stall_timeout).shared()),
            None => None,
        };
        peer.address = address;
        peer.tcp = tcp.clone();
        let (old, worker) =
            (std::mem::replace(&mut peer.udp_address, udp_address), peer.subscription.as_ref().map(|s| s.worker));
        running.set_udp_address(peer_id, old, udp_address);
        match worker {
            Some(worker) => Self::to_worker(running, worker, Command::SetViewerAddress { id: peer_id, address, tcp }),
            None => Ok(()),
        }
    }

    /// Sends `packet` as it is (STUN, DTLS: the control plane's own) as one
    /// frame on the peer's ICE-TCP connection, in order with the media the
    /// engine sends there. False if it was dropped (the connection's queue is
    /// full, or the connection is lost); ValueError for a peer without one.
    pub fn send_tcp_frame(&self, peer_id: u64, packet: &[u8]) -> Result<bool, EngineError> {
        let state = self.running()?;
        let running = state.as_ref().expect("checked by running()");
        let peer = running.peers.get(&peer_id).ok_or(EngineError::UnknownPeer(peer_id))?;
        let tcp = peer.tcp.as_ref().ok_or_else(|| invalid(format!("peer {peer_id} has no TCP connection")))?;
        if packet.is_empty() || packet.len() > MAX_FRAME {
            return Err(invalid(format!("a frame holds 1..={MAX_FRAME} bytes, got {}", packet.len())));
        }
        Ok(self.write_tcp_frame(peer_id, tcp, packet))
    }

    /// Queues and writes one frame; reports the connection's loss once.
    fn write_tcp_frame(&self, peer_id: u64, tcp: &SharedTcpOutput, packet: &[u8]) -> bool {
        let mut output = tcp.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let queued = output.push_frame(packet);
        if let Some(loss) = output.write(Instant::now()) {
            self.events.push(crate::events::Event::TcpConnectionLost { peer_id, reason: loss.reason() });
        }
        queued
    }

    /// Pauses or resumes sending media to the peer (kept across subscriptions).
    pub fn set_paused(&self, peer_id: u64, paused: bool) -> Result<(), EngineError> {
        let state = self.running()?;
        let running = state.as_ref().expect("checked by running()");
        let peer = running.peers.get(&peer_id).ok_or(EngineError::UnknownPeer(peer_id))?;
        peer.counters.paused.store(paused, Ordering::Relaxed);
        let Some(subscription) = &peer.subscription else {
            return Ok(());
        };
        Self::to_worker(running, subscription.worker, Command::SetViewerPaused { id: peer_id, paused })?;
        if !paused {
            if let Some(mountpoint) = running.mountpoints.get(&subscription.mountpoint_id) {
                for source in mountpoint.streams.iter().filter(|source| subscription.indexes.contains(&source.index)) {
                    source.request_keyframe_if_uncached();
                }
            }
        }
        Ok(())
    }

    /// Takes SRTCP from a peer: unprotects it and acts on it. Generic NACKs
    /// about the peer's streams are answered at once: its worker resends
    /// each packet still in its history, as the peer first received it. PLIs
    /// and FIRs about its streams go on to the source's RTCP port, if it has
    /// one (at most one per stream per second). The report says what it
    /// carried (receiver reports, REMB) and what was done.
    pub fn receive_rtcp(&self, peer_id: u64, packet: &[u8]) -> Result<RtcpReport, EngineError> {
        receive_rtcp(&self.state, peer_id, packet, WorkerWakes::Now)
    }

    /// Protects plain (compound) RTCP with the peer's SRTCP context and sends it:
    /// through its worker while subscribed, from here otherwise.
    pub fn send_rtcp(&self, peer_id: u64, packet: &[u8]) -> Result<(), EngineError> {
        let state = self.running()?;
        let running = state.as_ref().expect("checked by running()");
        let peer = running.peers.get(&peer_id).ok_or(EngineError::UnknownPeer(peer_id))?;
        if !is_rtcp(packet) {
            return Err(invalid("not an RTCP (compound) packet"));
        }
        if packet.len() > SLOT_SIZE - 64 {
            return Err(invalid(format!("RTCP packet of {} bytes is too large", packet.len())));
        }
        if let Some(subscription) = &peer.subscription {
            return Self::to_worker(
                running,
                subscription.worker,
                Command::SendRtcp { id: peer_id, packet: packet.to_vec() },
            );
        }
        let mut buffer = [0u8; SLOT_SIZE];
        buffer[..packet.len()].copy_from_slice(packet);
        let len = peer
            .outbound
            .protect_rtcp(&mut buffer, packet.len(), peer.counters.next_srtcp_index())
            .map_err(|error| invalid(format!("SRTCP to peer {peer_id}: {error}")))?;
        if let Some(tcp) = &peer.tcp {
            let counter = if self.write_tcp_frame(peer_id, tcp, &buffer[..len]) {
                &peer.counters.rtcp_packets
            } else {
                &peer.counters.dropped
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let mut address = peer.address;
        // SAFETY: `buffer[..len]` and `address` are live for the call.
        let sent = unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                buffer.as_ptr().cast(),
                len,
                libc::MSG_DONTWAIT,
                address.as_mut_ptr().cast(),
                address.socklen(),
            )
        };
        let counter = if sent < 0 { &peer.counters.send_errors } else { &peer.counters.rtcp_packets };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends a bitrate estimate (REMB) to a source stream through its RTCP
    /// port; false if the source has not shown where to send yet. ValueError
    /// for a stream without an RTCP port.
    pub fn send_source_remb(&self, mountpoint_id: u64, index: u32, bitrate: u64) -> Result<bool, EngineError> {
        let state = self.running()?;
        let running = state.as_ref().expect("checked by running()");
        let stream = running.source_stream(mountpoint_id, index)?;
        let rtcp = stream.rtcp.as_ref().ok_or_else(|| invalid(format!("stream {index} has no RTCP port")))?;
        Ok(rtcp.send_remb(bitrate))
    }

    // --- the publisher link (see crate::ingest::publisher) ---

    /// Attaches a publisher link to the mountpoint: the engine reads a
    /// duplicate of the connected UDP socket `socket_fd`, unprotects its SRTP
    /// and routes it to the mountpoint's streams without a port; keyframe
    /// requests, REMB, NACKs and receiver reports go back over it. Attaching
    /// again replaces the link (the streams go on: a source restart).
    pub fn attach_publisher(
        &self,
        mountpoint_id: u64,
        socket_fd: RawFd,
        config: &PublisherConfig,
    ) -> Result<(), EngineError> {
        let mut state = self.running()?;
        let running = state.as_mut().expect("checked by running()");
        let record = running.mountpoints.get(&mountpoint_id).ok_or(EngineError::UnknownMountpoint(mountpoint_id))?;
        if config.profile == Profile::AesCm128HmacSha1_32 {
            return Err(invalid("AES_CM_128_HMAC_SHA1_32 is for sources only"));
        }
        let mid_extension = config.mid_extension_id.map(|id| check_range(id, "mid_extension_id", 1, 14)).transpose()?;
        let rid_extension = config.rid_extension_id.map(|id| check_range(id, "rid_extension_id", 1, 14)).transpose()?;
        if config.routes.is_empty() {
            return Err(invalid("routes must list at least one route"));
        }
        let mut routes = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let index = route.index;
            let position = record
                .streams
                .iter()
                .position(|stream| stream.index == index)
                .ok_or_else(|| invalid(format!("mountpoint {mountpoint_id} has no stream {index}")))?;
            if !record.streams[position].linked {
                return Err(invalid(format!(
                    "stream {index} has a port: only streams without one take a publisher's packets"
                )));
            }
            let (mid, rid) = (checked_id(&route.mid, "mid")?, checked_id(&route.rid, "rid")?);
            if rid.is_some() && rid_extension.is_none() {
                return Err(invalid(format!("the route of stream {index} has a rid: rid_extension_id is needed")));
            }
            if let Some(&payload_type) = route.payload_types.iter().find(|&&payload_type| payload_type > 127) {
                return Err(invalid(format!("payload type must be in 0..=127, got {payload_type}")));
            }
            let decides = route.ssrc.is_some()
                || rid.is_some()
                || (mid.is_some() && mid_extension.is_some())
                || !route.payload_types.is_empty();
            if !decides {
                return Err(invalid(format!(
                    "the route of stream {index} matches nothing: give an ssrc, payload_types, a rid, or a mid with mid_extension_id"
                )));
            }
            if route.ssrc.is_some() && config.routes.iter().filter(|other| other.ssrc == route.ssrc).count() > 1 {
                return Err(invalid(format!("ssrc {} appears in two routes", route.ssrc.unwrap_or_default())));
            }
            routes.push(Route { position, ssrc: route.ssrc, mid, rid, payload_types: route.payload_types.clone() });
        }
        let session = |key: &[u8], what: &str| {
            SrtpSession::new(config.profile, key).map_err(|error| invalid(format!("{what} key: {error}")))
        };
        let outbound = session(&config.local_master_key, "local")?;
        let (srtp, srtcp) =
            (session(&config.remote_master_key, "remote")?, session(&config.remote_master_key, "remote")?);
        let socket = duplicate_connected_udp_socket(socket_fd)?;
        // As a source port's: a burst of a publisher's video must not overflow it.
        set_receive_buffer(socket.as_raw_fd(), RECEIVE_BUFFER_BYTES);
        let sender = Arc::new(LinkSender::new(socket, outbound));
        let counters = Arc::new(PublisherCounters::default());
        let router = Router::new(routes, mid_extension, rid_extension);
        let streams = record
            .streams
            .iter()
            .map(|stream| LinkStream { video: stream.kind == MediaKind::Video, clock_rate: stream.clock_rate })
            .collect();
        let (srtp, srtcp) = (SrtpInbound::new(srtp), SrtcpInbound::new(srtcp));
        let link = PublisherLink::new(sender.clone(), srtp, srtcp, router, counters.clone(), streams);
        let key = running.next_source_key;
        running.next_source_key += 1;
        register(self.epoll.as_raw_fd(), sender.fd(), key)?;
        let (done, attached) = mpsc::sync_channel(1);
        let command = ReceiverCommand::AttachPublisher { mountpoint: mountpoint_id, key, link: Box::new(link), done };
        self.to_receiver(running, command)?;
        let _ = attached.recv();
        let record = running.mountpoints.get_mut(&mountpoint_id).expect("looked up above");
        for stream in record.streams.iter().filter(|stream| stream.linked) {
            if let Some(rtcp) = &stream.rtcp {
                rtcp.set_link(Some(sender.clone()));
            }
        }
        for route in config.routes.iter().filter(|route| route.ssrc.is_some()) {
            // Keyframe requests before its first packet name the SSRC the route expects.
            let stream = record.streams.iter().find(|stream| stream.index == route.index);
            if let (Some(rtcp), Some(ssrc)) = (stream.and_then(|stream| stream.rtcp.as_ref()), route.ssrc) {
                rtcp.rtp_seen(None, ssrc);
            }
        }
        record.publisher = Some(PublisherRecord { counters });
        if !record.viewers.is_empty() {
            for stream in record.streams.iter().filter(|stream| stream.linked) {
                stream.request_keyframe_if_uncached();
            }
        }
        Ok(())
    }

    /// Detaches the mountpoint's publisher link and closes the engine's
    /// duplicate of its socket before returning. Unknown ids, or no link: nothing.
    pub fn detach_publisher(&self, mountpoint_id: u64) -> Result<(), EngineError> {
        let mut state = self.running()?;
        let running = state.as_mut().expect("checked by running()");
        let Some(record) = running.mountpoints.get_mut(&mountpoint_id) else {
            return Ok(());
        };
        let Some(publisher) = record.publisher.take() else {
            return Ok(());
        };
        for stream in &record.streams {
            if let Some(rtcp) = &stream.rtcp {
                rtcp.set_link(None);
            }
        }
        let (done, detached) = mpsc::sync_channel(1);
        self.to_receiver(running, ReceiverCommand::DetachPublisher { mountpoint: mountpoint_id, done })?;
        let _ = detached.recv();
        drop(publisher);
        Ok(())
    }

    /// What the mountpoint's publisher link did; None without one.
    pub fn publisher_stats(&self, mountpoint_id: u64) -> Result<Option<PublisherStats>, EngineError> {
        let state = self.running()?;
        let running = state.as_ref().expect("checked by running()");
        let record = running.mountpoints.get(&mountpoint_id).ok_or(EngineError::UnknownMountpoint(mountpoint_id))?;
        Ok(record.publisher.as_ref().map(|publisher| {
            let counters = &publisher.counters;
            let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
            PublisherStats {
                packets: load(&counters.packets),
                bytes: load(&counters.bytes),
                rtcp_packets: load(&counters.rtcp_packets),
                undecryptable: load(&counters.undecryptable),
                unroutable: load(&counters.unroutable),
                malformed: load(&counters.malformed),
                control_datagrams: load(&counters.control_datagrams),
                lost: load(&counters.lost),
                nacks_sent: load(&counters.nacks_sent),
                recovered: load(&counters.recovered),
                receiver_reports_sent: load(&counters.receiver_reports_sent),
                ssrcs: counters.ssrcs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone(),
            }
        }))
    }

    // --- end of the publisher link ---

    pub fn peer_stats(&self, peer_id: u64) -> Result<PeerStats, EngineError> {
        let state = self.running()?;
        let running = state.as_ref().expect("checked by running()");
        let peer = running.peers.get(&peer_id).ok_or(EngineError::UnknownPeer(peer_id))?;
        let counters = &peer.counters;
        Ok(PeerStats {
            packets: counters.packets.load(Ordering::Relaxed),
            bytes: counters.bytes.load(Ordering::Relaxed),
            rtcp_packets: counters.rtcp_packets.load(Ordering::Relaxed),
            retransmissions: counters.retransmissions.load(Ordering::Relaxed),
            nacked: counters.nacked.load(Ordering::Relaxed),
            gso_refused: counters.gso_refused.load(Ordering::Relaxed),
            dropped: counters.dropped.load(Ordering::Relaxed),
            dropped_late: counters.dropped_late.load(Ordering::Relaxed),
            send_errors: counters.send_errors.load(Ordering::Relaxed),
            paused: counters.paused.load(Ordering::Relaxed),
            worker: peer.subscription.as_ref().map(|subscription| subscription.worker),
            source_switches: counters.source_switches.load(Ordering::Relaxed),
            estimate: Some(counters.estimate.load(Ordering::Relaxed)).filter(|&bitrate| bitrate > 0),
            transport_feedbacks: counters.transport_feedbacks.load(Ordering::Relaxed),
            bytes_in_flight: (counters.transport_feedbacks.load(Ordering::Relaxed) > 0)
                .then(|| counters.bytes_in_flight.load(Ordering::Relaxed)),
            retransmissions_over_budget: counters.retransmissions_over_budget.load(Ordering::Relaxed),
            nacks_unanswered: counters.nacks_unanswered.load(Ordering::Relaxed),
            probes: counters.probes.load(Ordering::Relaxed),
            probes_carried: counters.probes_carried.load(Ordering::Relaxed),
        })
    }

    pub fn mountpoint_stats(&self, mountpoint_id: u64) -> Result<MountpointStats, EngineError> {
        let state = self.running()?;
        let running = state.as_ref().expect("checked by running()");
        let record = running.mountpoints.get(&mountpoint_id).ok_or(EngineError::UnknownMountpoint(mountpoint_id))?;
        let now = monotonic_ns(Instant::now());
        let streams: Vec<StreamStats> = record
            .streams
            .iter()
            .map(|stream| {
                let last = stream.counters.last_packet_ns.load(Ordering::Relaxed);
                let rtcp = stream.rtcp.as_ref();
                let load = |counter: Option<&AtomicU64>| counter.map_or(0, |counter| counter.load(Ordering::Relaxed));
                let cache = stream.cache.as_ref().map(|cache| {
                    let cache = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    KeyframeCacheStats {
                        keyframe: cache.has_keyframe(),
                        packets: cache.packets().len(),
                        bytes: cache.bytes(),
                        overflows: cache.overflows,
                    }
                });
                let now_instant = Instant::now();
                StreamStats {
                    rtcp_port: rtcp.and_then(|rtcp| rtcp.local_port()),
                    rtcp_packets: load(rtcp.map(|rtcp| &rtcp.packets)),
                    plis_forwarded: load(rtcp.map(|rtcp| &rtcp.plis_forwarded)),
                    keyframe_requests: load(rtcp.map(|rtcp| &rtcp.keyframe_requests)),
                    rembs_sent: load(rtcp.map(|rtcp| &rtcp.rembs_sent)),
                    sender_report: rtcp.and_then(|rtcp| rtcp.sender_report()).map(|report| SenderReportStats {
                        ntp_time: report.ntp_time,
                        rtp_timestamp: report.rtp_timestamp,
                        age_ms: now_instant.saturating_duration_since(report.received_at).as_millis() as u64,
                    }),
                    keyframe_cache: cache,
                    undecryptable: stream.counters.undecryptable.load(Ordering::Relaxed),
                    collisions: stream.counters.collisions.load(Ordering::Relaxed),
                    wrong_payload_type: stream.counters.wrong_payload_type.load(Ordering::Relaxed),
                    parameter_sets_inserted: stream.counters.parameter_sets_inserted.load(Ordering::Relaxed),
                    skew_dropped: stream.counters.skew_dropped.load(Ordering::Relaxed),
                    lost: stream.counters.lost.load(Ordering::Relaxed),
                    skew_ms: stream.counters.skew_ms.load(Ordering::Relaxed),
                    temporal_layer_bytes: stream
                        .counters
                        .temporal_layer_bytes
                        .iter()
                        .map(|bytes| bytes.load(Ordering::Relaxed))
                        .collect(),
                    spatial_layer_bytes: stream
                        .counters
                        .spatial_layer_bytes
                        .iter()
                        .map(|bytes| bytes.load(Ordering::Relaxed))
                        .collect(),
                    index: stream.index,
                    port: stream.port,
                    packets: stream.counters.packets.load(Ordering::Relaxed),
                    bytes: stream.counters.bytes.load(Ordering::Relaxed),
                    malformed: stream.counters.malformed.load(Ordering::Relaxed),
                    overruns: stream.counters.overruns.load(Ordering::Relaxed),
                    last_packet_age_ms: (last != 0).then(|| now.saturating_sub(last) / 1_000_000),
                }
            })
            .collect();
        let sent = |counter: fn(&SendCounters) -> &AtomicU64| -> u64 {
            record.sent.iter().map(|sent| counter(sent).load(Ordering::Relaxed)).sum()
        };
        Ok(MountpointStats {
            packets: streams.iter().map(|stream| stream.packets).sum(),
            bytes: streams.iter().map(|stream| stream.bytes).sum(),
            malformed: streams.iter().map(|stream| stream.malformed).sum(),
            viewers: record.viewers.len(),
            streams,
            sent_packets: sent(|sent| &sent.packets),
            sent_bytes: sent(|sent| &sent.bytes),
            retransmissions: sent(|sent| &sent.retransmissions),
            dropped: sent(|sent| &sent.dropped),
            dropped_late: sent(|sent| &sent.dropped_late),
            send_errors: sent(|sent| &sent.send_errors),
        })
    }

    pub fn worker_stats(&self) -> Result<Vec<WorkerStats>, EngineError> {
        let state = self.running()?;
        let running = state.as_ref().expect("checked by running()");
        Ok(running
            .workers
            .iter()
            .enumerate()
            .map(|(index, worker)| {
                let load = &worker.load;
                WorkerStats {
                    index,
                    core: worker.core,
                    viewers: worker.viewers,
                    busy_ns: load.busy_ns.load(Ordering::Relaxed),
                    passes: load.passes.load(Ordering::Relaxed),
                    source_packets: load.source_packets.load(Ordering::Relaxed),
                    messages: load.messages.load(Ordering::Relaxed),
                    flushes: load.flushes.load(Ordering::Relaxed),
                    overruns: load.overruns.load(Ordering::Relaxed),
                    dropped_late: load.dropped_late.load(Ordering::Relaxed),
                }
            })
            .collect())
    }

    /// Stops the receiver and the workers and closes every socket the engine opened. Idempotent.
    pub fn close(&self) {
        if let Some(reader) = self.socket_reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).as_mut() {
            reader.stop(); // its eventfd stays open (the control plane may still watch it) until the engine is dropped
        }
        let running = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(running) = running {
            let _ = self.to_receiver(&running, ReceiverCommand::Stop);
            for worker in 0..running.workers.len() {
                let _ = Self::to_worker(&running, worker, Command::Stop);
            }
            let _ = running.receiver.join();
            for worker in running.workers {
                let _ = worker.thread.join();
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
    }
}

/// [`Engine::receive_rtcp`], for the engine handle and the socket reader: takes SRTCP from a peer: unprotects it and acts on it. Generic NACKs
/// about the peer's streams are answered at once: its worker resends
/// each packet still in its history, as the peer first received it. PLIs
/// and FIRs about its streams go on to the source's RTCP port, if it has
/// one (at most one per stream per second). The report says what it
/// carried (receiver reports, REMB) and what was done.
fn receive_rtcp(
    state: &Mutex<Option<Running>>,
    peer_id: u64,
    packet: &[u8],
    mut wakes: WorkerWakes<'_>,
) -> Result<RtcpReport, EngineError> {
    let (srtcp, ssrcs) = {
        let state = running(state)?;
        let running = state.as_ref().expect("checked by running()");
        let peer = running.peers.get(&peer_id).ok_or(EngineError::UnknownPeer(peer_id))?;
        let ssrcs = peer.subscription.as_ref().map(|subscription| subscription.ssrcs.clone()).unwrap_or_default();
        (peer.srtcp.clone(), ssrcs)
    };
    let plain = {
        let mut srtcp = srtcp.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        srtcp.unprotect(packet).map_err(|error| invalid(format!("SRTCP from peer {peer_id}: {error}")))?
    };
    if !is_rtcp(&plain) {
        return Err(invalid(format!("SRTCP from peer {peer_id}: not an RTCP (compound) packet once unprotected")));
    }
    let summary = summarize(&plain);
    let feedback = has_transport_feedback(&plain);
    let fraction_lost = summary
        .receiver_reports
        .iter()
        .filter(|block| ssrcs.contains(&block.ssrc))
        .map(|block| block.fraction_lost)
        .max();
    let remb = summary.remb.as_ref().map(|remb| remb.bitrate);
    if feedback || remb.is_some() || fraction_lost.is_some() {
        let state = running(state)?;
        let running = state.as_ref().expect("checked by running()");
        if let Some(subscription) = running.peers.get(&peer_id).and_then(|peer| peer.subscription.as_ref()) {
            let packet = if feedback { plain.to_vec() } else { Vec::new() };
            let command = Command::CongestionFeedback { id: peer_id, packet, remb, fraction_lost };
            wakes.send(running, subscription.worker, command)?;
        }
    }
    let mut report = RtcpReport {
        nacks: summary.nacks,
        retransmitted: 0,
        plis_forwarded: 0,
        keyframe_requests: summary.keyframe_requests,
        receiver_reports: summary.receiver_reports,
        remb: summary.remb,
        other: summary.other,
    };
    let mut asked = Vec::new();
    for_each_keyframe_request(&plain, |ssrc| {
        if let Some(stream) = ssrcs.iter().position(|&own| own == ssrc) {
            asked.push(stream);
        }
    });
    if !asked.is_empty() {
        let state = running(state)?;
        let running = state.as_ref().expect("checked by running()");
        if let Some(subscription) = running.peers.get(&peer_id).and_then(|peer| peer.subscription.as_ref()) {
            let mountpoint = running.mountpoints.get(&subscription.mountpoint_id);
            for stream in asked {
                let index = subscription.indexes.get(stream);
                let source = mountpoint.and_then(|m| m.streams.iter().find(|s| Some(&s.index) == index));
                if let Some(rtcp) = source.and_then(|source| source.rtcp.as_ref()) {
                    if rtcp.request_keyframe(KeyframeReason::Viewer, Instant::now()) {
                        report.plis_forwarded += 1;
                    }
                }
            }
        }
    }
    let mut lost = Vec::new();
    for_each_nack(&plain, |ssrc, sequence| {
        if ssrcs.contains(&ssrc) {
            lost.push((ssrc, sequence));
        }
    });
    if !lost.is_empty() {
        let state = running(state)?;
        let running = state.as_ref().expect("checked by running()");
        if let Some(peer) = running.peers.get(&peer_id) {
            if let Some(subscription) = &peer.subscription {
                report.retransmitted = lost.len() as u64;
                peer.counters.nacked.fetch_add(lost.len() as u64, Ordering::Relaxed);
                wakes.send(running, subscription.worker, Command::Retransmit { id: peer_id, lost })?;
            }
        }
    }
    Ok(report)
}

/// When a command's worker is woken: at once, or once the caller has sent
/// all it has (the socket reader, after each batch of datagrams).
enum WorkerWakes<'a> {
    Now,
    Later(&'a mut Vec<usize>),
}

impl WorkerWakes<'_> {
    fn send(&mut self, running: &Running, worker: usize, command: Command) -> Result<(), EngineError> {
        match self {
            Self::Now => Engine::to_worker(running, worker, command),
            Self::Later(pending) => {
                running.workers[worker].commands.send(command).map_err(|_| EngineError::Closed)?;
                if !pending.contains(&worker) {
                    pending.push(worker);
                }
                Ok(())
            }
        }
    }
}

/// The engine's state, locked, or Closed.
fn running(state: &Mutex<Option<Running>>) -> Result<MutexGuard<'_, Option<Running>>, EngineError> {
    let state = state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if state.is_none() {
        return Err(EngineError::Closed);
    }
    Ok(state)
}

/// Keeps at most this many viewers' transport feedback counts waiting for their next event.
const UNREPORTED_FEEDBACK_PEERS: usize = 65536;

/// The engine's viewers as the socket reader sees them: it takes the RTCP of
/// each peer on UDP (by its address) and tells the control plane what it
/// carried, except for packets of transport feedback alone (counted into
/// the next report's `other`, so that they never wake the control plane).
struct ViewersOnUdp {
    state: Arc<Mutex<Option<Running>>>,
    events: Arc<EventQueue>,
    unreported_feedback: HashMap<u64, u64>,
    /// Each worker's eventfd, and the workers that got commands since the last batch.
    worker_wakes: Vec<Arc<OwnedFd>>,
    pending_wakes: Vec<usize>,
}

impl ViewerRtcp for ViewersOnUdp {
    fn take(&mut self, source: SocketAddr, packet: &[u8]) -> RtcpTaken {
        let peer_id = {
            let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match state.as_ref().and_then(|running| running.udp_peers.get(&source)) {
                Some(&peer_id) => peer_id,
                None => return RtcpTaken::NotAViewers,
            }
        };
        match receive_rtcp(&self.state, peer_id, packet, WorkerWakes::Later(&mut self.pending_wakes)) {
            Ok(report) if !report.matters_to_the_control_plane() => {
                if self.unreported_feedback.len() >= UNREPORTED_FEEDBACK_PEERS {
                    self.unreported_feedback.clear();
                }
                *self.unreported_feedback.entry(peer_id).or_default() += report.other;
            }
            Ok(mut report) => {
                report.other += self.unreported_feedback.remove(&peer_id).unwrap_or(0);
                self.events.push(Event::ViewerRtcp { peer_id, report });
            }
            Err(_) => return RtcpTaken::Refused,
        }
        RtcpTaken::Read
    }

    fn batch_done(&mut self) {
        for worker in self.pending_wakes.drain(..) {
            wake(&self.worker_wakes[worker]);
        }
    }
}

/// A viewer's streams, their SSRCs and the source stream index each takes.
type CheckedStreams = (Vec<ViewerStream>, Vec<u32>, Vec<u32>);

/// Checks a viewer's stream list against the mountpoint and makes its streams.
fn viewer_streams(
    mountpoint_id: u64,
    mountpoint: &MountpointRecord,
    streams: &[ViewerStreamConfig],
) -> Result<CheckedStreams, EngineError> {
    let mut viewer_streams = Vec::with_capacity(streams.len());
    let mut ssrcs = Vec::with_capacity(streams.len());
    let mut indexes = Vec::with_capacity(streams.len());
    for stream in streams {
        let index = stream.index;
        let position = mountpoint
            .streams
            .iter()
            .position(|record| record.index == index)
            .ok_or_else(|| invalid(format!("mountpoint {mountpoint_id} has no stream {index}")))?;
        if indexes.contains(&index) {
            return Err(invalid(format!("stream index {index} appears twice")));
        }
        let ssrc = stream.ssrc;
        if ssrcs.contains(&ssrc) {
            return Err(invalid(format!("ssrc {ssrc} appears twice")));
        }
        let payload_type = check_range(stream.payload_type, "payload type", 0, 127)?;
        let record = &mountpoint.streams[position];
        let [a, b, c, d, e, f] = random_bytes::<6>();
        let start = StreamStart { sequence: u16::from_be_bytes([a, b]), timestamp: u32::from_be_bytes([c, d, e, f]) };
        // Only a cap given is checked: a stream without one may be of any codec.
        let temporal_layer = match stream.temporal_layer {
            Some(_) => checked_temporal_cap(record, stream.temporal_layer)?,
            None => None,
        };
        let spatial_layer = match stream.spatial_layer {
            Some(_) => checked_spatial_cap(record, stream.spatial_layer)?,
            None => None,
        };
        let mut viewer_stream =
            ViewerStream::new(position, ssrc, payload_type, record.clock_rate, record.starts_at_keyframes, start);
        viewer_stream.start_with_layer_caps(record.codec, temporal_layer, spatial_layer);
        viewer_streams.push(viewer_stream);
        ssrcs.push(ssrc);
        indexes.push(index);
    }
    Ok((viewer_streams, ssrcs, indexes))
}

/// FANOUT_KEYFRAME_CACHE=0 in the environment turns the keyframe cache off
/// (video then waits for the next keyframe): for measuring what it brings.
fn keyframe_cache_disabled() -> bool {
    std::env::var_os("FANOUT_KEYFRAME_CACHE").is_some_and(|value| value == "0")
}
