//! Source sockets: bound non-blocking UDP sockets with large receive buffers,
//! read with recvmmsg in batches, each datagram validated as RTP and counted.
//!
//! The [`Receiver`] thread waits (epoll) on every mountpoint's source sockets,
//! copies each RTP packet once into a shared [`Packet`] from the stream's
//! pool and hands it, through a lock-free ring each, to the workers that have
//! viewers of the mountpoint; then wakes those workers (one eventfd write per
//! worker per wake-up, not per packet). It also reports source streams that
//! fall silent or send again ([`crate::events`]): its wait ends at the
//! earliest silence deadline of the streams that send, so it notices silence
//! without a packet.
//!
//! A mountpoint may also have a publisher link ([`crate::ingest::publisher`]):
//! one connected socket whose SRTP feeds its streams without a port of their
//! own. The receiver reads it like a source socket, routes each packet to its
//! stream, and from there the packet takes the same way as a port-fed one.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver as CommandReceiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::egress::worker::{Delivery, WorkerLoad};
use crate::events::{epoll_timeout, Event, EventQueue, SilenceCheck, SilenceWatch};
use crate::ingest::publisher::{classify, LinkDatagram, PublisherLink};
use crate::ingest::recorder::RecordingSlot;
use crate::ingest::source_rtcp::{for_each_sender_report, SourceRtcp};
use crate::ingest::{Ingest, IngestOptions, Verdict};
use crate::media::packet::{GopCache, Packet, PacketPool, ReceivedPacket, MAX_RTP_LEN, SLOT_SIZE};
use crate::media::MediaKind;
use crate::ring::Producer;
use crate::sys::{monotonic_ns, realtime_ns, socket_addr, unregister};
use crate::wire::codec::{Av1Payload, Codec, Vp8Descriptor, Vp9Descriptor};
use crate::wire::rtp::RtpHeader;

/// Datagrams read per recvmmsg call.
pub const RECEIVE_BATCH: usize = 32;
/// A sequence number jump this large (either way) means the source restarted.
const RESTART_SEQUENCE_JUMP: i16 = 3000;

/// What Python reads about a source stream while the engine runs.
#[derive(Default)]
pub struct StreamCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub malformed: AtomicU64,
    /// Packets some worker could not take (its ring was full: it is overloaded).
    pub overruns: AtomicU64,
    /// [`monotonic_ns`] of the last packet; 0 until the first.
    pub last_packet_ns: AtomicU64,
    /// SRTP packets that failed authentication or replay checks (sources with SRTP keys).
    pub undecryptable: AtomicU64,
    /// Packets dropped because another SSRC holds the stream (the collision time).
    pub collisions: AtomicU64,
    /// Packets dropped for a payload type the stream does not take.
    pub wrong_payload_type: AtomicU64,
    /// Packets of H.264 parameter sets put before keyframes that lacked them.
    pub parameter_sets_inserted: AtomicU64,
    /// Audio packets dropped to bring a fast source clock back in line.
    pub skew_dropped: AtomicU64,
    /// Packets the source sent that never arrived, from its sequence numbers
    /// (RFC 3550's cumulative loss: gaps, less the late packets that filled
    /// them); lost before fanout, so no viewer's NACK can bring them back.
    pub lost: AtomicU64,
    /// How far skew compensation has moved the timestamps, in milliseconds (negative: back).
    pub skew_ms: AtomicI64,
    /// VP8, VP9 and AV1: the bytes forwarded of each temporal layer (TID 0 to
    /// 3, higher TIDs counted as 3; 0 without one; an AV1 packet that continues
    /// an OBU counted in its frame's layer), from which the plugin measures what
    /// a viewer capped at a layer gets.
    pub temporal_layer_bytes: [AtomicU64; TEMPORAL_LAYERS],
    /// VP9: the bytes forwarded of each spatial layer (SID 0 to 3, higher SIDs
    /// counted as 3; 0 without one), from which the plugin measures what a
    /// viewer capped at a spatial layer gets.
    pub spatial_layer_bytes: [AtomicU64; SPATIAL_LAYERS],
}

/// The temporal layers counted and capped: VP8's TID has two bits (VP9's three).
pub const TEMPORAL_LAYERS: usize = 4;
/// The VP9 spatial layers counted.
pub const SPATIAL_LAYERS: usize = 4;

/// One RTP input of a mountpoint.
pub struct SourceStream {
    pub kind: MediaKind,
    pub codec: Codec,
    /// The stream's port; None for a stream fed by the mountpoint's publisher link.
    socket: Option<UdpSocket>,
    pub counters: Arc<StreamCounters>,
    last: Option<(u32, u16)>,
    /// The highest sequence number of the epoch so far (the loss count's reference).
    highest_sequence: Option<u16>,
    epoch: u32,
    /// The next packet starts a new epoch whatever it carries (a publisher came back).
    restart_pending: bool,
    /// Video whose keyframes the engine finds: the packets since the latest one.
    pub cache: Option<Arc<Mutex<GopCache>>>,
    /// The stream's RTCP port, if it has one.
    pub rtcp: Option<Arc<SourceRtcp>>,
    /// Decryption, the SSRC lock, parameter sets, skew compensation.
    pub ingest: Ingest,
    clock_rate: u32,
    /// Per datagram of the last batch: H.264 parameter sets go before it.
    parameter_sets_first: [bool; RECEIVE_BATCH],
    /// Whether the stream is silent, and after how long (see [`crate::events`]).
    pub silence: SilenceWatch,
    /// The stream's recording to a .mjr file, when one runs.
    pub recording: Arc<RecordingSlot>,
    /// AV1: the temporal layer the last packet that names one named (a packet
    /// that only continues an OBU is of the same frame).
    av1_temporal_layer: u8,
}

impl SourceStream {
    pub fn new(kind: MediaKind, codec: Codec, socket: Option<UdpSocket>, counters: Arc<StreamCounters>) -> Self {
        let ingest = Ingest::new(&IngestOptions::default(), kind, 1).expect("the default options are valid");
        Self {
            kind,
            codec,
            socket,
            counters,
            last: None,
            highest_sequence: None,
            epoch: 0,
            restart_pending: false,
            cache: None,
            rtcp: None,
            ingest,
            clock_rate: 1,
            parameter_sets_first: [false; RECEIVE_BATCH],
            silence: SilenceWatch::default(),
            recording: Arc::default(),
            av1_temporal_layer: 0,
        }
    }

    /// The temporal layer of an AV1 packet, or of the frame it continues.
    fn av1_temporal_layer(&mut self, payload: &[u8]) -> u8 {
        match Av1Payload::parse(payload) {
            Some(Av1Payload { layers: Some((temporal, _)), .. }) => self.av1_temporal_layer = temporal,
            Some(Av1Payload { continues: false, .. }) => self.av1_temporal_layer = 0,
            _ => {}
        }
        self.av1_temporal_layer
    }

    /// Sets what the stream does to each datagram before forwarding it.
    pub fn set_ingest(&mut self, options: &IngestOptions, clock_rate: u32) -> Result<(), String> {
        self.ingest = Ingest::new(options, self.kind, clock_rate)?;
        self.clock_rate = clock_rate;
        Ok(())
    }

    /// The port's socket; None for a link-fed stream.
    pub fn fd(&self) -> Option<RawFd> {
        self.socket.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// The bound port; 0 for a link-fed stream.
    pub fn local_port(&self) -> io::Result<u16> {
        self.socket.as_ref().map_or(Ok(0), |socket| Ok(socket.local_addr()?.port()))
    }

    /// The next packet is a source restart (a new epoch), whatever its SSRC
    /// and sequence number: a publisher link was attached again.
    pub fn restart(&mut self) {
        self.restart_pending = self.last.is_some();
    }

    /// Validates the `count` datagrams of `batch` (decrypting and renumbering
    /// them in place as the stream's [`Ingest`] asks), counts them, and fills
    /// `packets` with the ones to forward (None for the rest). Data streams
    /// are counted but not forwarded.
    pub fn accept(
        &mut self,
        batch: &mut ReceiveBatch,
        count: usize,
        now: Instant,
        packets: &mut [Option<ReceivedPacket>],
    ) {
        let now_ns = monotonic_ns(now);
        let now_realtime_ns = realtime_ns();
        let mut good = 0;
        let mut bytes = 0;
        let mut malformed = 0;
        for (i, slot) in packets.iter_mut().enumerate().take(count) {
            *slot = None;
            self.parameter_sets_first[i] = false;
            let (received_len, truncated) = batch.received_len(i);
            let arrival_ns = batch.arrival_ns(i, now_ns, now_realtime_ns);
            match self.accept_datagram(batch.buffer_mut(i), received_len, truncated, now_ns, arrival_ns) {
                Accepted::Forward { packet, len, parameter_sets_first } => {
                    batch.set_len(i, len);
                    good += 1;
                    bytes += len as u64;
                    self.parameter_sets_first[i] = parameter_sets_first;
                    *slot = Some(packet);
                }
                Accepted::Counted { len } => {
                    good += 1;
                    bytes += len as u64;
                }
                Accepted::Malformed => malformed += 1,
                Accepted::Undecryptable => {}
            }
        }
        self.count_accepted(good, bytes, malformed, now_ns);
    }

    /// [`SourceStream::accept`] for one datagram of a publisher link, already
    /// unprotected: `buffer[..len]` is RTP. The packet to forward, if any, and
    /// whether H.264 parameter sets go before it.
    pub fn accept_one(&mut self, buffer: &mut [u8], len: usize, now_ns: u64) -> Option<(ReceivedPacket, bool)> {
        match self.accept_datagram(buffer, len, false, now_ns, now_ns) {
            Accepted::Forward { packet, len, parameter_sets_first } => {
                self.count_accepted(1, len as u64, 0, now_ns);
                Some((packet, parameter_sets_first))
            }
            Accepted::Counted { len } => {
                self.count_accepted(1, len as u64, 0, now_ns);
                None
            }
            Accepted::Malformed => {
                self.count_accepted(0, 0, 1, now_ns);
                None
            }
            Accepted::Undecryptable => None,
        }
    }

    fn count_accepted(&self, good: u64, bytes: u64, malformed: u64, now_ns: u64) {
        let counters = &self.counters;
        counters.packets.fetch_add(good, Ordering::Relaxed);
        counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        counters.malformed.fetch_add(malformed, Ordering::Relaxed);
        if good > 0 {
            counters.last_packet_ns.store(now_ns, Ordering::Relaxed);
        }
        let skew_ms = self.ingest.skew_ticks * 1000 / i64::from(self.clock_rate.max(1));
        counters.skew_ms.store(skew_ms, Ordering::Relaxed);
    }

    /// One datagram through the stream's ingest: decrypted (a source with
    /// SRTP keys), validated, admitted and renumbered in place; it reached the
    /// socket at `arrival_ns` (its send deadline counts from there).
    #[inline]
    fn accept_datagram(
        &mut self,
        buffer: &mut [u8],
        received_len: usize,
        truncated: bool,
        now_ns: u64,
        arrival_ns: u64,
    ) -> Accepted {
        if self.kind == MediaKind::Data {
            return Accepted::Counted { len: received_len };
        }
        if truncated || received_len > MAX_RTP_LEN {
            return Accepted::Malformed;
        }
        let Ok(len) = self.ingest.decrypt(buffer, received_len) else {
            self.counters.undecryptable.fetch_add(1, Ordering::Relaxed);
            return Accepted::Undecryptable;
        };
        let datagram = &mut buffer[..len];
        let Some(mut header) = RtpHeader::parse(datagram) else {
            return Accepted::Malformed;
        };
        let payload = &datagram[header.payload_start..header.payload_end];
        let keyframe_start = self.kind == MediaKind::Video && self.codec.is_keyframe_start(payload);
        let av1_temporal_layer = (self.codec == Codec::Av1).then(|| self.av1_temporal_layer(payload));
        let droppable = self.kind == MediaKind::Video
            && match av1_temporal_layer {
                Some(layer) => layer > 0,
                None => self.codec.is_droppable(payload),
            };
        let restarted = self.restarted(&header);
        let parameter_sets_first = match self.ingest.admit(&header, payload, keyframe_start, restarted, now_ns) {
            Verdict::Collision => {
                self.counters.collisions.fetch_add(1, Ordering::Relaxed);
                return Accepted::Counted { len };
            }
            Verdict::WrongPayloadType => {
                self.counters.wrong_payload_type.fetch_add(1, Ordering::Relaxed);
                return Accepted::Counted { len };
            }
            Verdict::SkewDropped => {
                self.counters.skew_dropped.fetch_add(1, Ordering::Relaxed);
                self.count_loss(header.sequence); // it arrived: fanout dropped it, not the network
                self.last = Some((header.ssrc, header.sequence));
                return Accepted::Counted { len };
            }
            Verdict::Forward { parameter_sets_first } => parameter_sets_first,
        };
        if restarted {
            self.epoch = self.epoch.wrapping_add(1);
            self.restart_pending = false;
            self.highest_sequence = None;
        }
        self.count_loss(header.sequence);
        self.last = Some((header.ssrc, header.sequence));
        let layers = match self.codec {
            Codec::Vp8 => Some((Vp8Descriptor::parse(payload).map_or(0, |descriptor| descriptor.temporal_layer), None)),
            Codec::Vp9 => Some(
                Vp9Descriptor::parse(payload)
                    .map_or((0, Some(0)), |descriptor| (descriptor.temporal_layer, Some(descriptor.spatial_layer))),
            ),
            Codec::Av1 => av1_temporal_layer.map(|layer| (layer, None)),
            _ => None,
        };
        if let Some((temporal_layer, spatial_layer)) = layers {
            let slot = usize::from(temporal_layer).min(TEMPORAL_LAYERS - 1);
            self.counters.temporal_layer_bytes[slot].fetch_add(len as u64, Ordering::Relaxed);
            if let Some(spatial_layer) = spatial_layer {
                let slot = usize::from(spatial_layer).min(SPATIAL_LAYERS - 1);
                self.counters.spatial_layer_bytes[slot].fetch_add(len as u64, Ordering::Relaxed);
            }
        }
        self.ingest.renumber(datagram, &mut header);
        Accepted::Forward {
            packet: ReceivedPacket { header, keyframe_start, epoch: self.epoch, arrival_ns, droppable },
            len,
            parameter_sets_first,
        }
    }

    /// Counts the sequence numbers a forwarded packet skips past the highest so
    /// far as lost, and one late packet (reordered) as one found again.
    fn count_loss(&mut self, sequence: u16) {
        let Some(highest) = self.highest_sequence else {
            self.highest_sequence = Some(sequence);
            return;
        };
        let ahead = sequence.wrapping_sub(highest) as i16;
        if ahead > 0 {
            self.highest_sequence = Some(sequence);
            if ahead > 1 {
                self.counters.lost.fetch_add(ahead as u64 - 1, Ordering::Relaxed);
            }
        } else if ahead < 0 {
            let lost = &self.counters.lost;
            let _ = lost.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |count| count.checked_sub(1));
        }
    }

    /// Whether H.264 parameter sets go before datagram `i` of the last batch.
    pub fn parameter_sets_first(&self, i: usize) -> bool {
        self.parameter_sets_first[i]
    }

    fn restarted(&self, header: &RtpHeader) -> bool {
        if self.restart_pending {
            return true;
        }
        match self.last {
            None => false,
            Some((ssrc, _)) if ssrc != header.ssrc => true,
            Some((_, sequence)) => {
                let jump = header.sequence.wrapping_sub(sequence) as i16;
                !(-RESTART_SEQUENCE_JUMP..=RESTART_SEQUENCE_JUMP).contains(&jump)
            }
        }
    }
}

/// What became of one datagram in [`SourceStream::accept_datagram`].
enum Accepted {
    /// Forward it: `len` bytes of RTP (decrypted); H.264 parameter sets first if asked.
    Forward {
        packet: ReceivedPacket,
        len: usize,
        parameter_sets_first: bool,
    },
    /// Received and counted, not forwarded: a data stream's, or dropped by
    /// the SSRC lock or skew compensation (counted there too).
    Counted {
        len: usize,
    },
    Malformed,
    /// Failed SRTP authentication or replay (counted).
    Undecryptable,
}

/// Buffers and headers for one recvmmsg call, allocated once.
pub struct ReceiveBatch {
    buffers: Box<[[u8; SLOT_SIZE]]>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
    names: Box<[libc::sockaddr_storage]>,
    /// Each datagram's control messages (its kernel arrival stamp), 8-byte aligned.
    controls: Box<[[u64; CONTROL_WORDS]]>,
}

/// Room for one SCM_TIMESTAMPNS control message (a cmsghdr and a timespec: 32 bytes).
const CONTROL_WORDS: usize = 8;

// SAFETY: the raw pointers in iovecs and headers point into the batch's own
// boxes and are rewritten before every use.
unsafe impl Send for ReceiveBatch {}

impl Default for ReceiveBatch {
    fn default() -> Self {
        let empty_iovec = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        // SAFETY: mmsghdr is plain old data (pointers and integers); all zeros is a valid value.
        let empty_header: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Self {
            buffers: vec![[0u8; SLOT_SIZE]; RECEIVE_BATCH].into_boxed_slice(),
            iovecs: vec![empty_iovec; RECEIVE_BATCH].into_boxed_slice(),
            headers: vec![empty_header; RECEIVE_BATCH].into_boxed_slice(),
            // SAFETY: sockaddr_storage is plain old data; all zeros is AF_UNSPEC.
            names: vec![unsafe { std::mem::zeroed() }; RECEIVE_BATCH].into_boxed_slice(),
            controls: vec![[0u64; CONTROL_WORDS]; RECEIVE_BATCH].into_boxed_slice(),
        }
    }
}

impl ReceiveBatch {
    /// Reads up to [`RECEIVE_BATCH`] datagrams without blocking; returns how many.
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        for i in 0..RECEIVE_BATCH {
            self.iovecs[i] = libc::iovec { iov_base: self.buffers[i].as_mut_ptr().cast(), iov_len: SLOT_SIZE };
            let header = &mut self.headers[i];
            header.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = &mut self.iovecs[i];
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = self.controls[i].as_mut_ptr().cast();
            header.msg_hdr.msg_controllen = std::mem::size_of::<[u64; CONTROL_WORDS]>();
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
        // SAFETY: every header points at this batch's own iovec, buffer of
        // SLOT_SIZE bytes and control buffer, which live and stay in place until the call returns.
        let result = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                RECEIVE_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(result as usize)
    }

    /// When datagram `i` of the last receive reached the socket, on the engine's
    /// monotonic clock ([`monotonic_ns`]): its kernel stamp taken back from
    /// `realtime_ns` to `now_ns` (the same moment on both clocks), at most
    /// `now_ns`; `now_ns` when the kernel gave no stamp.
    pub fn arrival_ns(&self, i: usize, now_ns: u64, realtime_ns: u64) -> u64 {
        let header = &self.headers[i].msg_hdr;
        if header.msg_controllen == 0 {
            return now_ns;
        }
        // SAFETY: the kernel wrote msg_controllen bytes of control messages into
        // this datagram's control buffer; CMSG_FIRSTHDR/NXTHDR stay within them.
        unsafe {
            let mut message = libc::CMSG_FIRSTHDR(header);
            while !message.is_null() {
                if (*message).cmsg_level == libc::SOL_SOCKET && (*message).cmsg_type == libc::SO_TIMESTAMPNS {
                    let stamp = std::ptr::read_unaligned(libc::CMSG_DATA(message).cast::<libc::timespec>());
                    let stamped = stamp.tv_sec as u64 * 1_000_000_000 + stamp.tv_nsec as u64;
                    let waited = realtime_ns.saturating_sub(stamped);
                    return now_ns.saturating_sub(waited).max(1);
                }
                message = libc::CMSG_NXTHDR(header, message);
            }
        }
        now_ns
    }

    /// Where datagram `i` of the last receive came from.
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        socket_addr(&self.names[i], self.headers[i].msg_hdr.msg_namelen)
    }

    /// Datagram `i` of the last receive, and whether it was cut to fit.
    pub fn datagram(&self, i: usize) -> (&[u8], bool) {
        let (len, truncated) = self.received_len(i);
        (&self.buffers[i][..len], truncated)
    }

    /// The length of datagram `i`, and whether it was cut to fit.
    pub fn received_len(&self, i: usize) -> (usize, bool) {
        let header = &self.headers[i];
        ((header.msg_len as usize).min(SLOT_SIZE), header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0)
    }

    /// The whole buffer of datagram `i`, for changes in place.
    pub fn buffer_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.buffers[i]
    }

    /// Datagram `i` is now `len` bytes long (after a change in place).
    pub fn set_len(&mut self, i: usize, len: usize) {
        self.headers[i].msg_len = len.min(SLOT_SIZE) as libc::c_uint;
    }
}

/// The epoll key of the receiver's command eventfd; source sockets use keys counted from 0.
pub const WAKE_KEY: u64 = u64::MAX;
const EPOLL_EVENTS: usize = 64;
/// Receive batches taken from one socket per wake-up, so one busy source cannot starve the others.
const BATCHES_PER_WAKE: usize = 4;
/// Packets a stream's pool keeps for reuse: the keyframe cache, the workers'
/// histories and their rings.
const POOL_PACKETS: usize = 16384;

pub enum ReceiverCommand {
    /// Each stream with its epoll key, and the keys of the RTCP ports (key, stream position).
    AddMountpoint {
        id: u64,
        streams: Vec<(u64, SourceStream)>,
        rtcp_keys: Vec<(u64, usize)>,
    },
    /// Closes the mountpoint's sockets, then answers.
    RemoveMountpoint {
        id: u64,
        done: SyncSender<()>,
    },
    /// Worker `worker` has viewers of the mountpoint (or no longer has);
    /// `done` answers once packets go to it.
    Subscribe {
        mountpoint: u64,
        worker: usize,
        done: Option<SyncSender<()>>,
    },
    Unsubscribe {
        mountpoint: u64,
        worker: usize,
    },
    /// A stream's silence threshold changed: look again at every stream's.
    SilenceChanged,
    /// The mountpoint's publisher link, read with epoll key `key` (registered
    /// already); it replaces the one before, whose streams restart.
    AttachPublisher {
        mountpoint: u64,
        key: u64,
        link: Box<PublisherLink>,
        done: SyncSender<()>,
    },
    /// Stops reading the mountpoint's link and lets it go, then answers.
    DetachPublisher {
        mountpoint: u64,
        done: SyncSender<()>,
    },
    Stop,
}

/// The receiver's way to one worker.
pub struct WorkerDoor {
    pub deliveries: Producer<Delivery>,
    pub wake: Arc<OwnedFd>,
    pub load: Arc<WorkerLoad>,
}

struct ReceiverMountpoint {
    streams: Vec<SourceStream>,
    pools: Vec<PacketPool>,
    keys: Vec<u64>,
    rtcp_keys: Vec<u64>,
    subscribers: Vec<usize>,
    /// The publisher link and its epoll key.
    publisher: Option<(u64, Box<PublisherLink>)>,
}

pub struct Receiver {
    epoll: Arc<OwnedFd>,
    wake: Arc<OwnedFd>,
    commands: CommandReceiver<ReceiverCommand>,
    workers: Vec<WorkerDoor>,
    woken: Vec<bool>,
    mountpoints: HashMap<u64, ReceiverMountpoint>,
    sources: HashMap<u64, (u64, usize)>,
    rtcp_sources: HashMap<u64, (u64, usize)>,
    /// Epoll key of a publisher link -> its mountpoint.
    publishers: HashMap<u64, u64>,
    receive: ReceiveBatch,
    received: Vec<Option<ReceivedPacket>>,
    /// Where a packet of H.264 parameter sets is written before it is handed out.
    parameter_sets: Box<[u8; MAX_RTP_LEN]>,
    /// Where the receiver reports source streams falling silent and resuming.
    events: Arc<EventQueue>,
    /// When to look for silent streams next (None: every stream is silent already).
    next_silence_check: Option<Instant>,
    /// When a publisher link has NACKs to ask again or receiver reports to send.
    next_link_check: Option<Instant>,
}

impl Receiver {
    pub fn new(
        epoll: Arc<OwnedFd>,
        wake: Arc<OwnedFd>,
        commands: CommandReceiver<ReceiverCommand>,
        workers: Vec<WorkerDoor>,
        events: Arc<EventQueue>,
    ) -> Self {
        let woken = vec![false; workers.len()];
        Self {
            epoll,
            wake,
            commands,
            workers,
            woken,
            mountpoints: HashMap::new(),
            sources: HashMap::new(),
            rtcp_sources: HashMap::new(),
            publishers: HashMap::new(),
            receive: ReceiveBatch::default(),
            received: vec![None; RECEIVE_BATCH],
            parameter_sets: Box::new([0; MAX_RTP_LEN]),
            events,
            next_silence_check: None,
            next_link_check: None,
        }
    }

    pub fn run(mut self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EPOLL_EVENTS];
        loop {
            // Wakes without a packet when a sending stream may have fallen silent.
            let timeout = epoll_timeout(earliest(self.next_silence_check, self.next_link_check), Instant::now());
            // SAFETY: `events` is a live array of EPOLL_EVENTS entries.
            let count = unsafe {
                libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), EPOLL_EVENTS as libc::c_int, timeout)
            };
            let events = &events[..count.max(0) as usize];
            // Commands first, so packets that arrive after a call see its effect.
            if events.iter().any(|event| event.u64 == WAKE_KEY) && !self.run_commands() {
                return;
            }
            for event in events {
                let key = event.u64;
                if key == WAKE_KEY {
                    continue;
                }
                if let Some(&(id, position)) = self.rtcp_sources.get(&key) {
                    if let Some(rtcp) = self.mountpoints.get(&id).and_then(|m| m.streams[position].rtcp.as_ref()) {
                        rtcp.receive(Instant::now());
                    }
                } else if let Some(&id) = self.publishers.get(&key) {
                    self.receive_link(id);
                } else {
                    self.receive_from(key);
                }
            }
            self.wake_workers();
            if self.next_silence_check.is_some_and(|at| Instant::now() >= at) {
                self.check_silence(Instant::now());
            }
            if self.next_link_check.is_some_and(|at| Instant::now() >= at) {
                self.poll_links(Instant::now());
            }
        }
    }

    /// Reports each sending stream that had no packet for its threshold; the
    /// next check is due at the earliest deadline of the streams still sending
    /// (a scan per threshold at most, not per packet).
    fn check_silence(&mut self, now: Instant) {
        let now_ns = monotonic_ns(now);
        let mut earliest: Option<u64> = None;
        for (&id, mountpoint) in self.mountpoints.iter_mut() {
            for (position, stream) in mountpoint.streams.iter_mut().enumerate() {
                let last_ns = stream.counters.last_packet_ns.load(Ordering::Relaxed);
                match stream.silence.check(last_ns, now_ns) {
                    SilenceCheck::FellSilent { silent_ms } => {
                        self.events.push(Event::SourceSilent { mountpoint_id: id, position, silent_ms })
                    }
                    SilenceCheck::Sending { deadline_ns } => {
                        earliest = Some(earliest.map_or(deadline_ns, |e| e.min(deadline_ns)))
                    }
                    SilenceCheck::Silent => {}
                }
            }
        }
        self.next_silence_check = earliest.map(|deadline| now + Duration::from_nanos(deadline - now_ns));
    }

    /// Gives each publisher link its turn for what is due (NACKs asked again,
    /// receiver reports); the next check is at the earliest thing due.
    fn poll_links(&mut self, now: Instant) {
        let now_ns = monotonic_ns(now);
        let mut next = None;
        for mountpoint in self.mountpoints.values_mut() {
            if let Some((_, link)) = &mut mountpoint.publisher {
                next = earliest(next, link.poll(now_ns).map(|due_ns| at_ns(now, now_ns, due_ns)));
            }
        }
        self.next_link_check = next;
    }

    /// Looks for silent streams at `at` or sooner.
    fn check_silence_by(&mut self, at: Instant) {
        self.next_silence_check = Some(self.next_silence_check.map_or(at, |next| next.min(at)));
    }

    fn run_commands(&mut self) -> bool {
        let mut counter = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `counter`; the eventfd is non-blocking.
        unsafe { libc::read(self.wake.as_raw_fd(), counter.as_mut_ptr().cast(), counter.len()) };
        loop {
            match self.commands.try_recv() {
                Ok(ReceiverCommand::Stop) | Err(TryRecvError::Disconnected) => return false,
                Ok(command) => self.run_command(command),
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn run_command(&mut self, command: ReceiverCommand) {
        match command {
            ReceiverCommand::AddMountpoint { id, streams, rtcp_keys } => {
                let (keys, streams): (Vec<u64>, Vec<SourceStream>) = streams.into_iter().unzip();
                for (position, key) in keys.iter().enumerate() {
                    self.sources.insert(*key, (id, position));
                }
                for &(key, position) in &rtcp_keys {
                    self.rtcp_sources.insert(key, (id, position));
                }
                let rtcp_keys = rtcp_keys.into_iter().map(|(key, _)| key).collect();
                let pools = streams.iter().map(|_| PacketPool::new(POOL_PACKETS)).collect();
                let mountpoint =
                    ReceiverMountpoint { streams, pools, keys, rtcp_keys, subscribers: Vec::new(), publisher: None };
                self.mountpoints.insert(id, mountpoint);
            }
            ReceiverCommand::SilenceChanged => self.check_silence_by(Instant::now()),
            ReceiverCommand::RemoveMountpoint { id, done } => {
                if let Some(mountpoint) = self.mountpoints.remove(&id) {
                    for key in &mountpoint.keys {
                        self.sources.remove(key);
                    }
                    for key in &mountpoint.rtcp_keys {
                        self.rtcp_sources.remove(key);
                    }
                    if let Some((key, link)) = mountpoint.publisher {
                        self.let_link_go(key, &link);
                    }
                }
                // The mountpoint and its sockets are closed by now.
                let _ = done.send(());
            }
            ReceiverCommand::Subscribe { mountpoint, worker, done } => {
                if let Some(mountpoint) = self.mountpoints.get_mut(&mountpoint) {
                    if !mountpoint.subscribers.contains(&worker) {
                        mountpoint.subscribers.push(worker);
                    }
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            ReceiverCommand::Unsubscribe { mountpoint, worker } => {
                if let Some(mountpoint) = self.mountpoints.get_mut(&mountpoint) {
                    mountpoint.subscribers.retain(|&subscriber| subscriber != worker);
                }
            }
            ReceiverCommand::AttachPublisher { mountpoint, key, link, done } => {
                match self.mountpoints.get_mut(&mountpoint) {
                    Some(record) => {
                        // A link attached again, or after a detach (a relay whose origin
                        // restarted), is a new source: its numbering owes nothing to the last.
                        let old = record.publisher.replace((key, link));
                        for stream in record.streams.iter_mut().filter(|stream| stream.fd().is_none()) {
                            stream.restart();
                        }
                        self.publishers.insert(key, mountpoint);
                        if let Some((old_key, old_link)) = old {
                            self.let_link_go(old_key, &old_link);
                        }
                    }
                    None => {
                        let _ = unregister(self.epoll.as_raw_fd(), link.fd());
                    }
                }
                let _ = done.send(());
            }
            ReceiverCommand::DetachPublisher { mountpoint, done } => {
                let link = self.mountpoints.get_mut(&mountpoint).and_then(|record| record.publisher.take());
                if let Some((key, link)) = link {
                    self.let_link_go(key, &link);
                }
                let _ = done.send(());
            }
            ReceiverCommand::Stop => {}
        }
    }

    /// Stops reading a link: out of epoll (the control plane may still hold
    /// the socket, so closing the engine's duplicate would not do it).
    fn let_link_go(&mut self, key: u64, link: &PublisherLink) {
        self.publishers.remove(&key);
        let _ = unregister(self.epoll.as_raw_fd(), link.fd());
    }

    /// Reads a few batches from one source socket and hands every RTP packet to the subscribed workers.
    fn receive_from(&mut self, key: u64) {
        let Some(&(id, position)) = self.sources.get(&key) else {
            return;
        };
        let Some(mountpoint) = self.mountpoints.get_mut(&id) else {
            return;
        };
        let Some(fd) = mountpoint.streams[position].fd() else {
            return;
        };
        let stream = &mut mountpoint.streams[position];
        let pool = &mut mountpoint.pools[position];
        for _ in 0..BATCHES_PER_WAKE {
            let count = match self.receive.receive(fd) {
                Ok(count) if count > 0 => count,
                _ => break,
            };
            let now = Instant::now();
            stream.accept(&mut self.receive, count, now, &mut self.received);
            note_resumed(stream, id, position, now, &self.events, &mut self.next_silence_check);
            if let Some(rtcp) = &stream.rtcp {
                if let Some(last) = self.received[..count].iter().rposition(Option::is_some) {
                    let ssrc = self.received[last].expect("found").header.ssrc;
                    rtcp.rtp_seen(self.receive.source(last), ssrc);
                }
            }
            if !mountpoint.subscribers.is_empty() || stream.cache.is_some() || stream.recording.is_active() {
                let now_ns = monotonic_ns(now);
                let mut outlets = Outlets {
                    id,
                    position,
                    subscribers: &mountpoint.subscribers,
                    workers: &mut self.workers,
                    woken: &mut self.woken,
                    parameter_sets: &mut self.parameter_sets[..],
                };
                for (i, received) in self.received[..count].iter().enumerate() {
                    let Some(meta) = received else { continue };
                    let parameter_sets_first = stream.parameter_sets_first(i);
                    outlets.forward(stream, pool, self.receive.datagram(i).0, *meta, parameter_sets_first, now_ns);
                }
            }
            if count < RECEIVE_BATCH {
                break;
            }
        }
    }

    /// Reads a few batches from a mountpoint's publisher link: RTP is
    /// unprotected, routed and handed out like a port's; RTCP is kept;
    /// STUN and DTLS go to the control plane.
    fn receive_link(&mut self, id: u64) {
        let Some(mountpoint) = self.mountpoints.get_mut(&id) else {
            return;
        };
        let ReceiverMountpoint { streams, pools, subscribers, publisher, .. } = mountpoint;
        let Some((_, link)) = publisher.as_mut() else {
            return;
        };
        for _ in 0..BATCHES_PER_WAKE {
            let count = match self.receive.receive(link.fd()) {
                Ok(count) if count > 0 => count,
                _ => break,
            };
            let now = Instant::now();
            let now_ns = monotonic_ns(now);
            for i in 0..count {
                let (received_len, truncated) = self.receive.received_len(i);
                let kind = if truncated { LinkDatagram::Malformed } else { classify(self.receive.datagram(i).0) };
                match kind {
                    LinkDatagram::Rtp => {
                        let routed = link.receive_rtp(self.receive.buffer_mut(i), received_len, now_ns);
                        let Some((position, len)) = routed else { continue };
                        let stream = &mut streams[position];
                        let accepted = stream.accept_one(self.receive.buffer_mut(i), len, now_ns);
                        note_resumed(stream, id, position, now, &self.events, &mut self.next_silence_check);
                        let Some((meta, parameter_sets_first)) = accepted else { continue };
                        if let Some(rtcp) = &stream.rtcp {
                            rtcp.rtp_seen(None, meta.header.ssrc);
                        }
                        if !subscribers.is_empty() || stream.cache.is_some() {
                            let mut outlets = Outlets {
                                id,
                                position,
                                subscribers,
                                workers: &mut self.workers,
                                woken: &mut self.woken,
                                parameter_sets: &mut self.parameter_sets[..],
                            };
                            let datagram = &self.receive.buffer_mut(i)[..len];
                            outlets.forward(stream, &mut pools[position], datagram, meta, parameter_sets_first, now_ns);
                        }
                    }
                    LinkDatagram::Rtcp => {
                        let Some(plain) = link.receive_rtcp(self.receive.datagram(i).0) else { continue };
                        for_each_sender_report(&plain, now, |report| {
                            link.sender_report(report.ssrc, report.ntp_time, now_ns);
                            let stream = link.router.position_of(report.ssrc).map(|position| &streams[position]);
                            if let Some(rtcp) = stream.and_then(|stream| stream.rtcp.as_ref()) {
                                rtcp.link_sender_report(report);
                            }
                        });
                    }
                    LinkDatagram::Control => {
                        if link.control_allowed(now_ns) {
                            let data = self.receive.datagram(i).0.to_vec();
                            self.events.push(Event::PublisherDatagram { mountpoint_id: id, data });
                        }
                    }
                    LinkDatagram::Malformed => link.count_malformed(),
                }
            }
            if count < RECEIVE_BATCH {
                break;
            }
        }
        let now = Instant::now();
        let due = link.next_due_ns().map(|due_ns| at_ns(now, monotonic_ns(now), due_ns));
        self.next_link_check = earliest(self.next_link_check, due);
    }

    fn wake_workers(&mut self) {
        let one = 1u64.to_ne_bytes();
        for (door, woken) in self.workers.iter().zip(self.woken.iter_mut()) {
            if std::mem::take(woken) {
                // SAFETY: writes 8 bytes from `one` to the worker's eventfd.
                unsafe { libc::write(door.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
            }
        }
    }
}

/// The earlier of two deadlines, if any.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The [`Instant`] of `due_ns` on the monotonic clock, `now` being `now_ns`.
fn at_ns(now: Instant, now_ns: u64, due_ns: u64) -> Instant {
    now + Duration::from_nanos(due_ns.saturating_sub(now_ns))
}

/// Reports a silent stream that has just sent (its latest packet came `now`)
/// as resumed, and looks for its next silence in time.
fn note_resumed(
    stream: &mut SourceStream,
    id: u64,
    position: usize,
    now: Instant,
    events: &EventQueue,
    next_silence_check: &mut Option<Instant>,
) {
    if stream.silence.is_silent() && stream.counters.last_packet_ns.load(Ordering::Relaxed) == monotonic_ns(now) {
        stream.silence.packet();
        events.push(Event::SourceResumed { mountpoint_id: id, position });
        let threshold = Duration::from_millis(stream.silence.threshold_ms.load(Ordering::Relaxed));
        let at = now + threshold;
        *next_silence_check = Some(next_silence_check.map_or(at, |next| next.min(at)));
    }
}

/// Where one stream's packets go: the workers with viewers of its mountpoint.
struct Outlets<'a> {
    id: u64,
    position: usize,
    subscribers: &'a [usize],
    workers: &'a mut [WorkerDoor],
    woken: &'a mut [bool],
    /// Where a packet of H.264 parameter sets is written before it is handed out.
    parameter_sets: &'a mut [u8],
}

impl Outlets<'_> {
    /// Hands out a forwarded packet, after the packet of H.264 parameter sets
    /// the ingest puts before it if asked.
    #[inline]
    fn forward(
        &mut self,
        stream: &SourceStream,
        pool: &mut PacketPool,
        datagram: &[u8],
        meta: ReceivedPacket,
        parameter_sets_first: bool,
        now_ns: u64,
    ) {
        if parameter_sets_first {
            let len = stream.ingest.write_parameter_sets(&meta.header, self.parameter_sets);
            let header = RtpHeader::parse(&self.parameter_sets[..len]).expect("a valid RTP packet");
            let mut packet = pool.take();
            Arc::get_mut(&mut packet)
                .expect("a pool packet is held by nobody else")
                .fill(&self.parameter_sets[..len], ReceivedPacket { header, ..meta });
            self.hand_out(stream, pool, packet, now_ns);
            stream.counters.parameter_sets_inserted.fetch_add(1, Ordering::Relaxed);
        }
        let mut packet = pool.take();
        Arc::get_mut(&mut packet).expect("a pool packet is held by nobody else").fill(datagram, meta);
        self.hand_out(stream, pool, packet, now_ns);
    }

    #[inline]
    fn hand_out(&mut self, stream: &SourceStream, pool: &mut PacketPool, packet: Arc<Packet>, now_ns: u64) {
        // Cached before any worker sees it: a worker that copies the
        // cache then finds every later packet in its ring.
        if let Some(cache) = &stream.cache {
            cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).offer(&packet, now_ns);
        }
        stream.recording.offer(&packet);
        for &worker in self.subscribers {
            let door = &mut self.workers[worker];
            let delivery = Delivery { mountpoint: self.id, stream: self.position, packet: packet.clone() };
            if door.deliveries.push(delivery).is_ok() {
                self.woken[worker] = true;
            } else {
                door.load.overruns.fetch_add(1, Ordering::Relaxed);
                stream.counters.overruns.fetch_add(1, Ordering::Relaxed);
            }
        }
        pool.recycle(packet);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::bind_source;

    fn rtp(sequence: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x80, 96];
        packet.extend_from_slice(&sequence.to_be_bytes());
        packet.extend_from_slice(&[0, 0, 0, 0]);
        packet.extend_from_slice(&ssrc.to_be_bytes());
        packet.extend_from_slice(payload);
        packet
    }

    fn receive_all(stream: &mut SourceStream, batch: &mut ReceiveBatch) -> Vec<Option<ReceivedPacket>> {
        let mut count = 0;
        for _ in 0..100 {
            count = batch.receive(stream.fd().unwrap()).unwrap_or(0);
            if count > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut packets = vec![None; RECEIVE_BATCH];
        stream.accept(batch, count, Instant::now(), &mut packets);
        packets.truncate(count);
        packets
    }

    #[test]
    fn a_packet_s_arrival_is_when_it_reached_the_socket_not_when_it_was_read() {
        let socket = bind_source("127.0.0.1", 0).unwrap();
        let port = socket.local_addr().unwrap().port();
        let mut stream = SourceStream::new(MediaKind::Video, Codec::Vp8, Some(socket), Arc::default());
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        monotonic_ns(Instant::now()); // the engine's clock starts before the packet comes
                                      // The kernel turns receive stamps on a moment after a socket asks (a work item flips a
                                      // static key; other tests' sockets closing can turn them off and on again), and stamps
                                      // a packet that came before then when it is read: try a few packets.
        let mut waits = Vec::new();
        for sequence in 1..=20 {
            sender.send_to(&rtp(sequence, 7, &[0x10, 0x00]), ("127.0.0.1", port)).unwrap();
            // The receiver is busy elsewhere while the packet waits in the socket.
            std::thread::sleep(std::time::Duration::from_millis(50));
            let read_at = monotonic_ns(Instant::now());
            let packets = receive_all(&mut stream, &mut ReceiveBatch::default());
            let waited = read_at.saturating_sub(packets[0].expect("forwarded").arrival_ns);
            if waited >= 50_000_000 {
                return;
            }
            waits.push(waited);
        }
        panic!("no packet's arrival was when it reached the socket: waited {waits:?} ns");
    }

    #[test]
    fn a_source_s_lost_packets_are_its_sequence_gaps_less_the_late_ones() {
        let counters = Arc::new(StreamCounters::default());
        let mut stream = SourceStream::new(MediaKind::Audio, Codec::Other, None, counters.clone());
        let mut lost_after = Vec::new();
        for sequence in [1, 2, 4, 3, 7, 7, 6, 9000, 9002] {
            let mut datagram = rtp(sequence, 7, &[0xf8]);
            let len = datagram.len();
            stream.accept_one(&mut datagram, len, 1).expect("forwarded");
            lost_after.push(counters.lost.load(Ordering::Relaxed));
        }
        // 3 missing, found late; 5 and 6 missing, 6 found late; a duplicate is not a loss; a
        // restart (a jump of 8993) begins again, and 9001 is missing.
        assert_eq!(lost_after, [0, 0, 1, 0, 2, 2, 1, 1, 2]);
    }

    #[test]
    fn receives_validates_and_counts() {
        let socket = bind_source("127.0.0.1", 0).unwrap();
        let port = socket.local_addr().unwrap().port();
        let counters = Arc::new(StreamCounters::default());
        let mut stream = SourceStream::new(MediaKind::Video, Codec::Vp8, Some(socket), counters.clone());
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(&rtp(1, 7, &[0x10, 0x00]), ("127.0.0.1", port)).unwrap();
        sender.send_to(b"not rtp at all", ("127.0.0.1", port)).unwrap();
        sender.send_to(&rtp(2, 7, &[0x00, 0x01]), ("127.0.0.1", port)).unwrap();
        sender.send_to(&rtp(9000, 7, &[0x00, 0x01]), ("127.0.0.1", port)).unwrap();
        sender.send_to(&vec![0x80; MAX_RTP_LEN + 1], ("127.0.0.1", port)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut batch = ReceiveBatch::default();
        let packets = receive_all(&mut stream, &mut batch);
        assert_eq!(packets.len(), 5);
        let first = packets[0].unwrap();
        assert!(first.keyframe_start);
        assert_eq!(first.header.sequence, 1);
        assert!(packets[1].is_none());
        assert!(!packets[2].unwrap().keyframe_start);
        assert_eq!(packets[2].unwrap().epoch, first.epoch);
        assert_ne!(packets[3].unwrap().epoch, first.epoch, "a jump of 8998 is a restart");
        assert!(packets[4].is_none(), "too large");
        assert_eq!(counters.packets.load(Ordering::Relaxed), 3);
        assert_eq!(counters.malformed.load(Ordering::Relaxed), 2);
        assert_eq!(counters.bytes.load(Ordering::Relaxed), 3 * 14);
        assert_ne!(counters.last_packet_ns.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn counts_the_bytes_of_each_vp8_temporal_layer() {
        let socket = bind_source("127.0.0.1", 0).unwrap();
        let port = socket.local_addr().unwrap().port();
        let counters = Arc::new(StreamCounters::default());
        let mut stream = SourceStream::new(MediaKind::Video, Codec::Vp8, Some(socket), counters.clone());
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        // X and S set, then T: the temporal layer byte's top two bits are the TID.
        for (sequence, temporal_layer, padding) in [(1, 0u8, 100), (2, 2, 10), (3, 1, 50), (4, 2, 10)] {
            let mut payload = vec![0x90, 0x20, temporal_layer << 6, 0x01];
            payload.resize(payload.len() + padding, 0);
            sender.send_to(&rtp(sequence, 7, &payload), ("127.0.0.1", port)).unwrap();
        }
        sender.send_to(&rtp(5, 7, &[0x10, 0x01]), ("127.0.0.1", port)).unwrap(); // no descriptor extension: layer 0
        let mut batch = ReceiveBatch::default();
        let mut received = 0;
        for _ in 0..20 {
            received += receive_all(&mut stream, &mut batch).len();
            if received == 5 {
                break;
            }
        }
        assert_eq!(received, 5, "loopback lost a datagram");
        let bytes: Vec<u64> = counters.temporal_layer_bytes.iter().map(|bytes| bytes.load(Ordering::Relaxed)).collect();
        assert_eq!(bytes, vec![(12 + 4 + 100) + (12 + 2), 12 + 4 + 50, 2 * (12 + 4 + 10), 0]);
    }

    #[test]
    fn counts_the_bytes_of_each_vp9_spatial_layer() {
        let socket = bind_source("127.0.0.1", 0).unwrap();
        let port = socket.local_addr().unwrap().port();
        let counters = Arc::new(StreamCounters::default());
        let mut stream = SourceStream::new(MediaKind::Video, Codec::Vp9, Some(socket), counters.clone());
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        // L, B, E: the layer indices' bits 1 to 3 are the SID; SID 6 counts as 3.
        for (sequence, spatial_layer, padding) in [(1, 0u8, 100), (2, 1, 50), (3, 2, 10), (4, 6, 10)] {
            let mut payload = vec![0x2c, spatial_layer << 1, 0x01];
            payload.resize(payload.len() + padding, 0);
            sender.send_to(&rtp(sequence, 7, &payload), ("127.0.0.1", port)).unwrap();
        }
        let mut batch = ReceiveBatch::default();
        let mut received = 0;
        for _ in 0..20 {
            received += receive_all(&mut stream, &mut batch).len();
            if received == 4 {
                break;
            }
        }
        assert_eq!(received, 4, "loopback lost a datagram");
        let bytes: Vec<u64> = counters.spatial_layer_bytes.iter().map(|bytes| bytes.load(Ordering::Relaxed)).collect();
        assert_eq!(bytes, vec![12 + 3 + 100, 12 + 3 + 50, 12 + 3 + 10, 12 + 3 + 10]);
    }

    #[test]
    fn counts_the_bytes_of_each_vp9_temporal_layer() {
        let socket = bind_source("127.0.0.1", 0).unwrap();
        let port = socket.local_addr().unwrap().port();
        let counters = Arc::new(StreamCounters::default());
        let mut stream = SourceStream::new(MediaKind::Video, Codec::Vp9, Some(socket), counters.clone());
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        // L, B, E: the layer indices' top three bits are the TID, then TL0PICIDX; TID 5 counts as 3.
        for (sequence, temporal_layer, padding) in [(1, 0u8, 100), (2, 2, 10), (3, 1, 50), (4, 5, 10)] {
            let mut payload = vec![0x2c, temporal_layer << 5, 0x01];
            payload.resize(payload.len() + padding, 0);
            sender.send_to(&rtp(sequence, 7, &payload), ("127.0.0.1", port)).unwrap();
        }
        sender.send_to(&rtp(5, 7, &[0x0c, 0x01]), ("127.0.0.1", port)).unwrap(); // no layer indices: layer 0
        let mut batch = ReceiveBatch::default();
        let mut received = 0;
        for _ in 0..20 {
            received += receive_all(&mut stream, &mut batch).len();
            if received == 5 {
                break;
            }
        }
        assert_eq!(received, 5, "loopback lost a datagram");
        let bytes: Vec<u64> = counters.temporal_layer_bytes.iter().map(|bytes| bytes.load(Ordering::Relaxed)).collect();
        assert_eq!(bytes, vec![(12 + 3 + 100) + (12 + 2), 12 + 3 + 50, 12 + 3 + 10, 12 + 3 + 10]);
    }

    #[test]
    fn a_new_ssrc_is_a_restart() {
        let socket = bind_source("127.0.0.1", 0).unwrap();
        let port = socket.local_addr().unwrap().port();
        let mut stream = SourceStream::new(MediaKind::Audio, Codec::Other, Some(socket), Arc::default());
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(&rtp(1, 7, b"a"), ("127.0.0.1", port)).unwrap();
        sender.send_to(&rtp(2, 8, b"b"), ("127.0.0.1", port)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let packets = receive_all(&mut stream, &mut ReceiveBatch::default());
        assert_eq!(packets.len(), 2);
        assert_ne!(packets[0].unwrap().epoch, packets[1].unwrap().epoch);
        assert!(!packets[0].unwrap().keyframe_start, "audio");
    }
}
