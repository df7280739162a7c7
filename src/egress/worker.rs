//! A worker: one thread, pinned to one core, that owns a share of the
//! viewers. It takes the shared source packets the receiver hands it (a
//! lock-free ring, an eventfd to wake it) and, for each of its viewers,
//! rewrites and protects each packet straight into one send batch, flushed
//! with sendmmsg and UDP GSO. No queue per viewer and no event loop lie
//! between the receiver and the viewers ("direct transmission").
//!
//! Batching is natural: each pass takes everything the ring holds (at most
//! [`MAX_PASS_PACKETS`]), so under load the batches grow and when idle a
//! packet goes out at once; no timer waits for more.
//!
//! Time-aware dropping: every source packet carries its arrival time. A
//! packet that cannot leave within `max_send_delay` of it is dropped for the
//! viewers still waiting for it and counted (`dropped_late`), never sent late,
//! so a worker past its capacity sheds load instead of queueing seconds of
//! delay. Packets of frames nothing refers to (`droppable`) go first, at half
//! the bound, and so do retransmissions while the worker is behind (its last
//! pass found packets waiting longer than that). Which viewers lose is fair:
//! each pass starts with the next viewer.
//!
//! A viewer on ICE-TCP takes the same rewrite and SRTP; its packets go to
//! its connection's bounded queue instead of the batch, written (non-blocking)
//! after its share of each pass, so a slow reader drops its own packets only.
//!
//! Invariant: the send batch is empty between passes and commands (every
//! step that fills it flushes it before returning), so a tag's viewer slot
//! always refers to a live viewer.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::egress::batch::{DatagramKind, Outcome, SendBatch, SendMode, SlotTag};
use crate::egress::tcp::SharedTcpOutput;
use crate::egress::viewer::{Viewer, ViewerCounters, ViewerStream};
use crate::events::{Event, EventQueue, OVERFLOW_REPORT_INTERVAL};
use crate::media::packet::{GopCache, History, Packet, ReceivedPacket};
use crate::ring::Consumer;
use crate::sys::{monotonic_ns, pin_to_core, RawAddress};
use crate::wire::codec::Codec;
use crate::wire::rtcp::{ntp_time, write_sender_report};
use crate::wire::rtp::PlayoutDelay;

/// Source packets taken from the ring in one pass.
pub const MAX_PASS_PACKETS: usize = 512;
/// Sequence numbers of each source stream kept for retransmission.
pub const HISTORY_PACKETS: usize = 1024;
const REPORT_TICK: Duration = Duration::from_millis(100);
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// While a viewer receives a burst from a keyframe cache, the worker wakes this often to send more.
const BURST_TICK: Duration = Duration::from_millis(1);

/// A mountpoint's keyframe caches, by source stream (None: no cache).
pub type Caches = Vec<Option<Arc<Mutex<GopCache>>>>;

/// A move at once starts from the new source's keyframe cache only if the
/// cache goes out at the viewer's pace within this long; else the stream
/// waits for the next live keyframe. Live packets queue behind the cached
/// ones, and on a link that barely carries the new layer (a move down) the
/// viewer falls behind by about the cache's sending time (and freezes while
/// it catches up), where the wait for a live keyframe is at most a GOP. A
/// move down comes right after a fall, when the estimate is still above the
/// link and the link still holds the old layer's queue: `fanout bench
/// adaptive` froze 1.03 s at the fall three times in three with 0.1 s, and
/// 3.72, 2.12 and 1.03 s with 0.25 (the cache sent into that queue). Nor does
/// a cache that goes out at once start while the link holds a queue
/// ([`Viewer::link_holds_a_queue`]): its keyframe's last packets are lost
/// from the queue's tail (1.69-2.17 s of freezes in 5 runs of 5 of that
/// bench); the next live keyframe, a GOP later at most, finds it drained.
pub const MOVE_AT_ONCE_CATCH_UP_SECONDS: f64 = 0.1;

/// A source packet for a worker's viewers of one mountpoint.
pub struct Delivery {
    pub mountpoint: u64,
    /// The source stream's position in its mountpoint.
    pub stream: usize,
    pub packet: Arc<Packet>,
}

pub enum Command {
    /// `streams` is the number of the mountpoint's source streams.
    AddViewer {
        mountpoint_id: u64,
        streams: usize,
        caches: Caches,
        viewer: Box<Viewer>,
        counters: Arc<ViewerCounters>,
        totals: Arc<SendCounters>,
    },
    /// Moves a viewer to another mountpoint with new streams; streams with an
    /// SSRC the viewer had go on with its numbering.
    SwitchViewer {
        id: u64,
        mountpoint_id: u64,
        streams: usize,
        caches: Caches,
        viewer_streams: Vec<ViewerStream>,
        totals: Arc<SendCounters>,
    },
    /// The mountpoint's packets flow to this worker now: start the viewer's
    /// held video streams from the keyframe caches.
    StartViewer {
        id: u64,
    },
    /// The send switch of the viewer's stream at `stream` (its position in the viewer's streams).
    SetStreamPaused {
        id: u64,
        stream: usize,
        paused: bool,
    },
    /// The playout delay the viewer's stream at `stream` carries (None: no extension).
    SetPlayoutDelay {
        id: u64,
        stream: usize,
        delay: Option<PlayoutDelay>,
    },
    /// Simulcast: moves the viewer's stream at `stream` to the source stream at
    /// `source` (positions), at that source's next keyframe, or if `at_once`
    /// and its keyframe cache holds one, now (the current source stops at
    /// once): from the cache if it is sent in [`MOVE_AT_ONCE_CATCH_UP_SECONDS`]
    /// at the viewer's pace and the viewer's link holds no queue, else from
    /// the next live keyframe; VP8's and
    /// VP9's pictures (by `codec`) are renumbered to follow on.
    SetStreamSource {
        id: u64,
        stream: usize,
        source: usize,
        codec: Codec,
        at_once: bool,
    },
    /// VP8, VP9 or AV1 (`codec`): the highest temporal layer the viewer's stream at `stream` gets (None: all).
    SetStreamTemporalCap {
        id: u64,
        stream: usize,
        codec: Codec,
        cap: Option<u8>,
    },
    /// VP9: the highest spatial layer the viewer's stream at `stream` gets (None: all).
    SetStreamSpatialCap {
        id: u64,
        stream: usize,
        cap: Option<u8>,
    },
    RemoveViewer {
        id: u64,
    },
    RemoveMountpoint {
        id: u64,
    },
    /// The viewer's nominated address, and its ICE-TCP connection if it is one.
    SetViewerAddress {
        id: u64,
        address: RawAddress,
        tcp: Option<SharedTcpOutput>,
    },
    SetViewerPaused {
        id: u64,
        paused: bool,
    },
    SendRtcp {
        id: u64,
        packet: Vec<u8>,
    },
    /// Numbers every packet to the viewer with the transport-wide sequence
    /// extension `extension_id` (None: no more).
    SetTransportCc {
        id: u64,
        extension_id: Option<u8>,
    },
    /// The bitrate worth probing the viewer's link for (see [`crate::egress::probe`]; None: none).
    SetProbeGoal {
        id: u64,
        bitrate: Option<u64>,
    },
    /// What the viewer's RTCP says about its link: `packet` is its plain
    /// compound RTCP when it holds transport feedback (else empty).
    CongestionFeedback {
        id: u64,
        packet: Vec<u8>,
        remb: Option<u64>,
        fraction_lost: Option<u8>,
    },
    /// Resend what the viewer reported lost: (media SSRC, sequence number) pairs.
    Retransmit {
        id: u64,
        lost: Vec<(u32, u16)>,
    },
    Stop,
}

/// One worker's sends for one mountpoint (the engine sums them over workers).
#[derive(Default)]
pub struct SendCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub retransmissions: AtomicU64,
    pub dropped: AtomicU64,
    /// Not sent within `max_send_delay` of arrival.
    pub dropped_late: AtomicU64,
    pub send_errors: AtomicU64,
}

/// How busy a worker is, for metrics.
#[derive(Default)]
pub struct WorkerLoad {
    /// Time spent working (not waiting), in nanoseconds.
    pub busy_ns: AtomicU64,
    pub passes: AtomicU64,
    pub source_packets: AtomicU64,
    /// Messages handed to the kernel (a GSO message carries many datagrams).
    pub messages: AtomicU64,
    /// sendmmsg (or, in sendto mode, per-datagram) flushes.
    pub flushes: AtomicU64,
    /// Source packets lost because this worker's ring was full.
    pub overruns: AtomicU64,
    /// Packets to its viewers not sent within `max_send_delay` of their arrival.
    pub dropped_late: AtomicU64,
}

/// When a packet is too late to send: past `max_delay_ns` since its arrival,
/// or past half of that for a droppable packet (a frame nothing refers to).
#[derive(Clone, Copy, Debug)]
pub struct SendDeadline {
    pub max_delay_ns: u64,
}

impl SendDeadline {
    pub fn new(max_delay: Duration) -> Self {
        Self { max_delay_ns: max_delay.as_nanos() as u64 }
    }

    /// Whether `packet`, sent at `now_ns` ([`monotonic_ns`]), would leave too late.
    #[inline]
    pub fn is_late(self, packet: &ReceivedPacket, now_ns: u64) -> bool {
        if packet.arrival_ns == 0 {
            return false;
        }
        let waited = now_ns.saturating_sub(packet.arrival_ns);
        waited > if packet.droppable { self.max_delay_ns / 2 } else { self.max_delay_ns }
    }

    /// Whether a worker whose oldest packet waited `waited_ns` is behind: it
    /// sheds retransmissions (and droppable frames) from then on.
    fn is_behind(self, waited_ns: u64) -> bool {
        waited_ns > self.max_delay_ns / 2
    }
}

fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

struct ViewerSlot {
    counters: Arc<ViewerCounters>,
    totals: Arc<SendCounters>,
    /// Whether this viewer's runs may be merged (false once the kernel refused).
    gso: bool,
    overflow: OverflowReport,
}

/// A viewer's dropped packets, reported as [`Event::SendQueueOverflow`]: the
/// first drop at once, then at most once per [`OVERFLOW_REPORT_INTERVAL`],
/// each report with the drops since the last.
struct OverflowReport {
    peer_id: u64,
    events: Arc<EventQueue>,
    unreported: u64,
    reported_at: Option<Instant>,
}

impl OverflowReport {
    fn dropped(&mut self, packets: u64, now: Instant) {
        self.unreported += packets;
        if self.reported_at.is_some_and(|at| now.saturating_duration_since(at) < OVERFLOW_REPORT_INTERVAL) {
            return;
        }
        self.reported_at = Some(now);
        let dropped = std::mem::take(&mut self.unreported);
        self.events.push(Event::SendQueueOverflow { peer_id: self.peer_id, dropped });
    }
}

struct Mountpoint {
    id: u64,
    histories: Vec<History>,
    /// The newest packet this worker got of each source stream: (epoch, sequence number).
    latest: Vec<Option<(u32, u16)>>,
    caches: Caches,
    /// Change only through `add_viewer` and `remove_viewer`: `viewer_ids` follows it.
    viewers: Vec<Viewer>,
    /// `viewers[i].id` at `i`: finding a viewer by id (each RTCP message does) reads these
    /// few cache lines, not a line of every `Viewer` before it.
    viewer_ids: Vec<u64>,
    /// Which viewer the next fan-out starts with: it moves on every pass (see
    /// [`in_turn`]), so that when a pass cannot reach every viewer in time the
    /// drops and the delay fall on different viewers.
    first_viewer: usize,
}

impl Mountpoint {
    fn new(id: u64, streams: usize, caches: Caches) -> Self {
        let histories = (0..streams).map(|_| History::new(HISTORY_PACKETS)).collect();
        Self {
            id,
            histories,
            latest: vec![None; streams],
            caches,
            viewers: Vec::new(),
            viewer_ids: Vec::new(),
            first_viewer: 0,
        }
    }

    fn add_viewer(&mut self, viewer: Viewer) {
        self.viewer_ids.push(viewer.id);
        self.viewers.push(viewer);
    }

    fn remove_viewer(&mut self, id: u64) -> Option<Viewer> {
        let index = self.viewer_index(id)?;
        self.viewer_ids.swap_remove(index);
        Some(self.viewers.swap_remove(index))
    }

    fn viewer_index(&self, id: u64) -> Option<usize> {
        self.viewer_ids.iter().position(|&viewer| viewer == id)
    }

    /// The viewers in this pass's order: a rotation of the list (see [`in_turn`]).
    fn viewers_in_turn(&mut self) -> impl Iterator<Item = &mut Viewer> {
        in_turn(&mut self.viewers, &mut self.first_viewer)
    }
}

/// `items` from `*first` round to the one before it; `*first` moves on by
/// [`turn_stride`]: over `items.len()` passes each item starts one, and a few
/// passes in a row start far apart in the list. (Moving on by one, with a
/// pass per source frame or audio packet at most, an overloaded worker with
/// 3000 viewers took most of a minute to bring a viewer from the end of its
/// passes to the front: over a few seconds the late drops fell from 0% on
/// some viewers to 50% on others, by their place in the list.)
fn in_turn<'a, T>(items: &'a mut [T], first: &mut usize) -> impl Iterator<Item = &'a mut T> {
    let start = if items.is_empty() { 0 } else { *first % items.len() };
    *first = start + turn_stride(items.len());
    let (before, from_start) = items.split_at_mut(start);
    from_start.iter_mut().chain(before.iter_mut())
}

/// The step between two passes' first viewers among `len`: the integer
/// nearest `len / φ` (the golden ratio) that has no common divisor with `len`,
/// so the starts go round every position (a full cycle) and any run of
/// consecutive passes spreads its starts evenly (Weyl's golden sequence).
fn turn_stride(len: usize) -> usize {
    if len < 3 {
        return 1;
    }
    let nearest = (len as f64 / 1.618_033_988_749_895).round() as usize;
    (0..len)
        .flat_map(|distance| [nearest.saturating_sub(distance), nearest + distance])
        .find(|&stride| stride > 0 && stride < len && gcd(stride, len) == 1)
        .unwrap_or(1)
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Holds the viewer's video streams that have a keyframe cache until StartViewer.
fn hold_video(viewer: &mut Viewer, caches: &Caches) {
    for stream in viewer.streams.iter_mut() {
        if stream.starts_at_keyframes() && !stream.is_paused() && caches.get(stream.source).is_some_and(Option::is_some)
        {
            stream.hold();
        }
    }
}

/// Starts the viewer's video streams (all, or the one at `only`) from their
/// keyframe caches; a stream whose cache holds no keyframe waits for the next one.
fn start_from_caches(
    viewer: &mut Viewer,
    caches: &Caches,
    histories: &mut [History],
    only: Option<usize>,
    now: Instant,
) -> bool {
    if viewer.is_paused() {
        // Started when resumed.
        viewer.streams.iter_mut().filter(|stream| stream.is_held()).for_each(ViewerStream::restart);
        return false;
    }
    let mut started = false;
    // A viewer has a few streams: no allocation until one starts from a cache.
    let mut from_cache = Vec::new();
    let budget = *viewer.budget();
    for (position, stream) in viewer.streams.iter_mut().enumerate() {
        if only.is_some_and(|only| only != position) || !stream.starts_at_keyframes() || stream.is_paused() {
            continue;
        }
        if let Some(Some(cache)) = caches.get(stream.source) {
            let cache = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if stream.start_from(&cache, &budget, now) {
                started = true;
                // The burst's packets may predate this worker's subscription: NACKs must find them.
                if let Some(history) = histories.get_mut(stream.source) {
                    cache.packets().iter().for_each(|packet| history.backfill(packet));
                }
                from_cache.push((position, cache.packets().len()));
            }
        }
    }
    for (position, packets) in from_cache {
        viewer.report_start_from_cache(position, packets);
    }
    if started {
        viewer.reset_burst_credit(now);
    }
    started
}

pub struct WorkerConfig {
    pub index: usize,
    pub core: Option<usize>,
    pub mode: SendMode,
    /// See [`SendDeadline`].
    pub max_send_delay: Duration,
}

pub struct Worker {
    config: WorkerConfig,
    wake: Arc<OwnedFd>,
    commands: Receiver<Command>,
    deliveries: Consumer<Delivery>,
    socket: Arc<OwnedFd>,
    mountpoints: Vec<Mountpoint>,
    viewer_mountpoints: HashMap<u64, u64>,
    slots: Vec<Option<ViewerSlot>>,
    free_slots: Vec<u32>,
    pass: Vec<Delivery>,
    send: SendBatch,
    load: Arc<WorkerLoad>,
    next_reports_at: Instant,
    /// Some viewer is receiving a burst from a keyframe cache.
    bursts_pending: bool,
    /// Some viewer's link is being probed (see [`crate::egress::probe`]).
    probes_pending: bool,
    deadline: SendDeadline,
    /// The last pass found packets that had waited past half the bound: retransmissions are dropped.
    behind: bool,
    /// The time packets are sent at, as [`monotonic_ns`] (tests hold the worker up by moving it on).
    clock: fn() -> u64,
    /// Where the worker reports what its viewers' streams do (see [`crate::events`]).
    events: Arc<EventQueue>,
}

impl Worker {
    pub fn new(
        config: WorkerConfig,
        wake: Arc<OwnedFd>,
        commands: Receiver<Command>,
        deliveries: Consumer<Delivery>,
        socket: Arc<OwnedFd>,
        load: Arc<WorkerLoad>,
        events: Arc<EventQueue>,
    ) -> Self {
        let send = SendBatch::new(config.mode);
        let deadline = SendDeadline::new(config.max_send_delay);
        Self {
            config,
            wake,
            commands,
            deliveries,
            socket,
            mountpoints: Vec::new(),
            viewer_mountpoints: HashMap::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            pass: Vec::with_capacity(MAX_PASS_PACKETS),
            send,
            load,
            next_reports_at: Instant::now() + REPORT_TICK,
            bursts_pending: false,
            probes_pending: false,
            deadline,
            behind: false,
            clock: engine_clock,
            events,
        }
    }

    pub fn run(mut self) {
        if let Some(core) = self.config.core {
            // Pinning is best effort: a core taken away by cgroups leaves the thread free.
            let _ = pin_to_core(core);
        }
        loop {
            if self.deliveries.is_empty() {
                let mut wait = self.next_reports_at.saturating_duration_since(Instant::now());
                if self.bursts_pending || self.probes_pending {
                    wait = wait.min(BURST_TICK);
                }
                let mut poll_fd = libc::pollfd { fd: self.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd for the duration of the call.
                let ready = unsafe { libc::poll(&mut poll_fd, 1, wait.as_millis() as libc::c_int + 1) };
                if ready > 0 {
                    let mut counter = [0u8; 8];
                    // SAFETY: reads at most 8 bytes into `counter`; the eventfd is non-blocking.
                    unsafe { libc::read(self.wake.as_raw_fd(), counter.as_mut_ptr().cast(), counter.len()) };
                }
            }
            let started = Instant::now();
            if !self.run_commands() {
                return;
            }
            self.run_pass(started);
            if self.bursts_pending {
                self.run_bursts(Instant::now());
            }
            if self.probes_pending {
                self.run_probes(Instant::now());
            }
            if started >= self.next_reports_at {
                self.send_reports(started);
                self.next_reports_at = started + REPORT_TICK;
            }
            add(&self.load.busy_ns, started.elapsed().as_nanos() as u64);
        }
    }

    /// Runs every queued command; false once the engine stops.
    fn run_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return false,
                Ok(command) => self.run_command(command),
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn run_command(&mut self, command: Command) {
        match command {
            Command::AddViewer { mountpoint_id, streams, caches, mut viewer, counters, totals } => {
                let slot = self.free_slots.pop().unwrap_or_else(|| {
                    self.slots.push(None);
                    (self.slots.len() - 1) as u32
                });
                let overflow = OverflowReport {
                    peer_id: viewer.id,
                    events: self.events.clone(),
                    unreported: 0,
                    reported_at: None,
                };
                self.slots[slot as usize] = Some(ViewerSlot { counters, totals, gso: true, overflow });
                viewer.slot = slot;
                viewer.mountpoint_id = mountpoint_id;
                viewer.set_events(self.events.clone());
                self.viewer_mountpoints.insert(viewer.id, mountpoint_id);
                let position = self.mountpoint_position(mountpoint_id, streams, caches);
                let mountpoint = &mut self.mountpoints[position];
                hold_video(&mut viewer, &mountpoint.caches);
                mountpoint.add_viewer(*viewer);
            }
            Command::SwitchViewer { id, mountpoint_id, streams, caches, viewer_streams, totals } => {
                self.switch_viewer(id, mountpoint_id, streams, caches, viewer_streams, totals);
            }
            Command::StartViewer { id } => {
                let Some(mountpoint_id) = self.viewer_mountpoints.get(&id).copied() else { return };
                let Some(mountpoint) = self.mountpoints.iter_mut().find(|m| m.id == mountpoint_id) else { return };
                let Some(viewer) = mountpoint.viewer_index(id).map(|index| &mut mountpoint.viewers[index]) else {
                    return;
                };
                self.bursts_pending |=
                    start_from_caches(viewer, &mountpoint.caches, &mut mountpoint.histories, None, Instant::now());
            }
            Command::SetStreamPaused { id, stream, paused } => {
                let Some(mountpoint_id) = self.viewer_mountpoints.get(&id).copied() else {
                    return;
                };
                let Some(mountpoint) = self.mountpoints.iter_mut().find(|m| m.id == mountpoint_id) else {
                    return;
                };
                let Some(viewer) = mountpoint.viewer_index(id).map(|index| &mut mountpoint.viewers[index]) else {
                    return;
                };
                let Some(viewer_stream) = viewer.streams.get_mut(stream) else {
                    return;
                };
                let resumed = viewer_stream.is_paused() && !paused;
                viewer_stream.set_paused(paused);
                if resumed {
                    self.bursts_pending |= start_from_caches(
                        viewer,
                        &mountpoint.caches,
                        &mut mountpoint.histories,
                        Some(stream),
                        Instant::now(),
                    );
                }
            }
            Command::SetPlayoutDelay { id, stream, delay } => {
                if let Some(viewer_stream) = self.viewer(id).and_then(|viewer| viewer.streams.get_mut(stream)) {
                    viewer_stream.set_playout_delay(delay);
                }
            }
            Command::SetStreamSource { id, stream, source, codec, at_once } => {
                let Some(mountpoint_id) = self.viewer_mountpoints.get(&id).copied() else { return };
                let Some(mountpoint) = self.mountpoints.iter_mut().find(|m| m.id == mountpoint_id) else { return };
                let Some(viewer) = mountpoint.viewer_index(id).map(|index| &mut mountpoint.viewers[index]) else {
                    return;
                };
                let paced_bytes_per_second = viewer.budget().bytes_per_second();
                let link_holds_a_queue = viewer.link_holds_a_queue();
                let Some(viewer_stream) = viewer.streams.get_mut(stream) else { return };
                viewer_stream.rewrite_pictures(codec);
                let from = viewer_stream.source;
                let cached_bytes = mountpoint.caches.get(source).and_then(Option::as_ref).and_then(|cache| {
                    let cache = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    (!cache.packets().is_empty()).then(|| cache.bytes())
                });
                let (moved, from_cache) = match cached_bytes.filter(|_| at_once) {
                    Some(bytes) => {
                        // The cached pictures go at the viewer's pace and the live ones wait behind
                        // them: a long catch-up freezes it longer than the next keyframe would. Into
                        // a queue the link still holds of the old source, the cached keyframe would
                        // lose packets from its tail; the next one comes once it drained.
                        let catch_up = bytes as f64 / paced_bytes_per_second.max(1) as f64;
                        let from_cache = catch_up <= MOVE_AT_ONCE_CATCH_UP_SECONDS && !link_holds_a_queue;
                        (viewer_stream.move_now(source), from_cache)
                    }
                    None => (viewer_stream.move_to(source), true),
                };
                let held = viewer_stream.is_held();
                if moved {
                    viewer.count_source_switch(from, source);
                    if !held && from_cache {
                        self.bursts_pending |= start_from_caches(
                            viewer,
                            &mountpoint.caches,
                            &mut mountpoint.histories,
                            Some(stream),
                            Instant::now(),
                        );
                    }
                }
            }
            Command::SetStreamTemporalCap { id, stream, codec, cap } => {
                if let Some(viewer_stream) = self.viewer(id).and_then(|viewer| viewer.streams.get_mut(stream)) {
                    viewer_stream.rewrite_pictures(codec);
                    viewer_stream.set_temporal_cap(cap);
                }
            }
            Command::SetStreamSpatialCap { id, stream, cap } => {
                if let Some(viewer_stream) = self.viewer(id).and_then(|viewer| viewer.streams.get_mut(stream)) {
                    viewer_stream.rewrite_pictures(Codec::Vp9);
                    viewer_stream.set_spatial_cap(cap);
                }
            }
            Command::RemoveViewer { id } => self.remove_viewer(id),
            Command::RemoveMountpoint { id } => {
                let ids: Vec<u64> = self
                    .mountpoints
                    .iter()
                    .filter(|m| m.id == id)
                    .flat_map(|m| m.viewers.iter().map(|v| v.id))
                    .collect();
                for viewer in ids {
                    self.remove_viewer(viewer);
                }
            }
            Command::SetViewerAddress { id, address, tcp } => {
                if let Some(viewer) = self.viewer(id) {
                    viewer.address = address;
                    viewer.tcp = tcp;
                }
            }
            Command::SetViewerPaused { id, paused } => {
                let Some(mountpoint_id) = self.viewer_mountpoints.get(&id).copied() else {
                    return;
                };
                let Some(mountpoint) = self.mountpoints.iter_mut().find(|m| m.id == mountpoint_id) else {
                    return;
                };
                let Some(viewer) = mountpoint.viewer_index(id).map(|index| &mut mountpoint.viewers[index]) else {
                    return;
                };
                let resumed = viewer.is_paused() && !paused;
                viewer.set_paused(paused);
                if resumed {
                    self.bursts_pending |=
                        start_from_caches(viewer, &mountpoint.caches, &mut mountpoint.histories, None, Instant::now());
                }
            }
            Command::SendRtcp { id, packet } => self.send_rtcp(id, &packet),
            Command::Retransmit { id, lost } => self.retransmit(id, &lost, Instant::now()),
            Command::SetTransportCc { id, extension_id } => {
                if let Some(viewer) = self.viewer(id) {
                    viewer.set_transport_cc(extension_id);
                }
            }
            Command::SetProbeGoal { id, bitrate } => {
                if let Some(viewer) = self.viewer(id) {
                    viewer.set_probe_goal(bitrate, Instant::now());
                }
            }
            Command::CongestionFeedback { id, packet, remb, fraction_lost } => {
                if let Some(viewer) = self.viewer(id) {
                    viewer.on_feedback(&packet, remb, fraction_lost, Instant::now());
                    self.probes_pending |= viewer.is_probing();
                }
            }
            Command::Stop => {}
        }
    }

    /// The position of the mountpoint in this worker's list, added if new.
    fn mountpoint_position(&mut self, id: u64, streams: usize, caches: Caches) -> usize {
        match self.mountpoints.iter().position(|m| m.id == id) {
            Some(position) => position,
            None => {
                self.mountpoints.push(Mountpoint::new(id, streams, caches));
                self.mountpoints.len() - 1
            }
        }
    }

    /// Takes the viewer out of its mountpoint (dropping the mountpoint with its last viewer).
    fn take_viewer(&mut self, id: u64) -> Option<Viewer> {
        let mountpoint_id = self.viewer_mountpoints.remove(&id)?;
        let position = self.mountpoints.iter().position(|m| m.id == mountpoint_id)?;
        let mountpoint = &mut self.mountpoints[position];
        let viewer = mountpoint.remove_viewer(id);
        if mountpoint.viewers.is_empty() {
            self.mountpoints.swap_remove(position);
        }
        viewer
    }

    fn switch_viewer(
        &mut self,
        id: u64,
        mountpoint_id: u64,
        streams: usize,
        caches: Caches,
        mut viewer_streams: Vec<ViewerStream>,
        totals: Arc<SendCounters>,
    ) {
        let Some(mut viewer) = self.take_viewer(id) else { return };
        for stream in viewer_streams.iter_mut() {
            if let Some(old) = viewer.streams.iter().find(|old| old.ssrc() == stream.ssrc()) {
                stream.continue_from(old);
            }
        }
        let transport_cc = viewer.transport_cc_id();
        viewer.streams = viewer_streams;
        if transport_cc.is_some() {
            viewer.set_transport_cc(transport_cc);
        }
        if let Some(slot) = self.slots[viewer.slot as usize].as_mut() {
            slot.totals = totals;
        }
        self.viewer_mountpoints.insert(id, mountpoint_id);
        viewer.mountpoint_id = mountpoint_id;
        let position = self.mountpoint_position(mountpoint_id, streams, caches);
        let mountpoint = &mut self.mountpoints[position];
        hold_video(&mut viewer, &mountpoint.caches);
        mountpoint.add_viewer(viewer);
    }

    fn remove_viewer(&mut self, id: u64) {
        let Some(mountpoint_id) = self.viewer_mountpoints.remove(&id) else {
            return;
        };
        let Some(position) = self.mountpoints.iter().position(|m| m.id == mountpoint_id) else {
            return;
        };
        let mountpoint = &mut self.mountpoints[position];
        if let Some(viewer) = mountpoint.remove_viewer(id) {
            self.slots[viewer.slot as usize] = None;
            self.free_slots.push(viewer.slot);
        }
        if mountpoint.viewers.is_empty() {
            // Its history goes too; the receiver stops sending once told.
            self.mountpoints.swap_remove(position);
        }
    }

    fn viewer(&mut self, id: u64) -> Option<&mut Viewer> {
        let mountpoint_id = *self.viewer_mountpoints.get(&id)?;
        let mountpoint = self.mountpoints.iter_mut().find(|m| m.id == mountpoint_id)?;
        let index = mountpoint.viewer_index(id)?;
        mountpoint.viewers.get_mut(index)
    }

    /// Takes what the ring holds and sends it to every viewer.
    fn run_pass(&mut self, now: Instant) {
        while self.pass.len() < MAX_PASS_PACKETS {
            match self.deliveries.pop() {
                Some(delivery) => self.pass.push(delivery),
                None => break,
            }
        }
        if self.pass.is_empty() {
            self.behind = false;
            return;
        }
        add(&self.load.passes, 1);
        add(&self.load.source_packets, self.pass.len() as u64);
        let (deadline, clock) = (self.deadline, self.clock);
        let Self { pass, mountpoints, send, slots, socket, load, .. } = self;
        let fd = socket.as_raw_fd();
        let mut start = 0;
        while start < pass.len() {
            let id = pass[start].mountpoint;
            let end = start + pass[start..].iter().take_while(|delivery| delivery.mountpoint == id).count();
            if let Some(mountpoint) = mountpoints.iter_mut().find(|m| m.id == id) {
                for delivery in &pass[start..end] {
                    if let Some(history) = mountpoint.histories.get_mut(delivery.stream) {
                        history.store(&delivery.packet);
                        let meta = &delivery.packet.meta;
                        let latest = &mut mountpoint.latest[delivery.stream];
                        let newer = latest.is_none_or(|(epoch, sequence)| {
                            epoch != meta.epoch || meta.header.sequence.wrapping_sub(sequence) as i16 > 0
                        });
                        if newer {
                            *latest = Some((meta.epoch, meta.header.sequence));
                        }
                    }
                }
                fan_out(mountpoint, &pass[start..end], send, slots, load, fd, now, deadline, clock);
            }
            start = end;
        }
        flush(send, fd, slots, load);
        let oldest = pass[0].packet.meta.arrival_ns;
        self.behind = oldest != 0 && deadline.is_behind(clock().saturating_sub(oldest));
        self.pass.clear();
    }

    /// Sends each bursting viewer as much of its burst as its credit allows
    /// (paced to its estimate once measured: see [`crate::egress::viewer::SendBudget`]).
    fn run_bursts(&mut self, now: Instant) {
        let fd = self.socket.as_raw_fd();
        let Self { mountpoints, send, slots, load, .. } = self;
        let mut pending = false;
        for mountpoint in mountpoints.iter_mut() {
            let Mountpoint { histories, latest, viewers, .. } = mountpoint;
            for viewer in viewers.iter_mut() {
                if !viewer.is_bursting() {
                    continue;
                }
                let merge = slots[viewer.slot as usize].as_ref().is_some_and(|slot| slot.gso);
                let tag = SlotTag { viewer: viewer.slot, kind: DatagramKind::Rtp };
                while viewer.refill_burst_credit(now) {
                    let Some((stream, packet)) = viewer.next_burst_packet(histories, latest) else {
                        break;
                    };
                    if !send.has_room() {
                        flush(send, fd, slots, load);
                    }
                    if let Some(len) = viewer.write_burst(stream, &packet, now, send.next_buffer()) {
                        commit(send, slots, viewer, len, tag, merge);
                    }
                }
                viewer.write_tcp(now);
                pending |= viewer.is_bursting();
            }
        }
        flush(send, fd, slots, load);
        self.bursts_pending = pending;
    }

    /// Sends each probing viewer the padding its probe is owed (see
    /// [`crate::egress::probe`]); none while the worker is behind (live packets
    /// first: the probes then carry less than their goals and fail).
    fn run_probes(&mut self, now: Instant) {
        let fd = self.socket.as_raw_fd();
        let Self { mountpoints, send, slots, load, behind, .. } = self;
        let mut pending = false;
        for viewer in mountpoints.iter_mut().flat_map(|mountpoint| mountpoint.viewers.iter_mut()) {
            if !viewer.is_probing() {
                continue;
            }
            if *behind {
                viewer.forgo_padding(now);
                pending |= viewer.is_probing();
                continue;
            }
            let merge = slots[viewer.slot as usize].as_ref().is_some_and(|slot| slot.gso);
            let tag = SlotTag { viewer: viewer.slot, kind: DatagramKind::Rtp };
            loop {
                if !send.has_room() {
                    flush(send, fd, slots, load);
                }
                let Some(len) = viewer.write_padding(now, send.next_buffer()) else {
                    break;
                };
                commit(send, slots, viewer, len, tag, merge);
            }
            viewer.write_tcp(now);
            pending |= viewer.is_probing();
        }
        flush(send, fd, slots, load);
        self.probes_pending = pending;
    }

    fn send_rtcp(&mut self, id: u64, packet: &[u8]) {
        let fd = self.socket.as_raw_fd();
        let Some(mountpoint_id) = self.viewer_mountpoints.get(&id).copied() else {
            return;
        };
        let Self { mountpoints, send, slots, load, .. } = self;
        let Some(mountpoint) = mountpoints.iter_mut().find(|m| m.id == mountpoint_id) else {
            return;
        };
        let Some(viewer) = mountpoint.viewer_index(id).map(|index| &mut mountpoint.viewers[index]) else {
            return;
        };
        let buffer = send.next_buffer();
        buffer[..packet.len()].copy_from_slice(packet);
        if let Ok(len) = viewer.protect_rtcp(buffer, packet.len()) {
            commit(send, slots, viewer, len, SlotTag { viewer: viewer.slot, kind: DatagramKind::Rtcp }, false);
        }
        viewer.write_tcp(Instant::now());
        flush(send, fd, slots, load);
    }

    /// Resends each reported packet still in the history, as the viewer first
    /// got it, within the viewer's pacing budget once its estimate is measured.
    fn retransmit(&mut self, id: u64, lost: &[(u32, u16)], now: Instant) {
        let fd = self.socket.as_raw_fd();
        let Some(mountpoint_id) = self.viewer_mountpoints.get(&id).copied() else {
            return;
        };
        let Self { mountpoints, send, slots, load, behind, .. } = self;
        let behind = *behind;
        let Some(mountpoint) = mountpoints.iter_mut().find(|m| m.id == mountpoint_id) else {
            return;
        };
        let Some(viewer) = mountpoint.viewer_index(id).map(|index| &mut mountpoint.viewers[index]) else {
            return;
        };
        if viewer.is_paused() {
            return;
        }
        let merge = slots[viewer.slot as usize].as_ref().is_some_and(|slot| slot.gso);
        for &(ssrc, sequence) in lost {
            let Some(stream) = viewer.streams.iter().position(|stream| stream.ssrc() == ssrc) else {
                continue;
            };
            let Some((source_sequence, epoch)) = viewer.streams[stream].source_of(sequence) else {
                // A probe's padding-only packet: sent again, so the viewer's sequence has no hole.
                if !send.has_room() {
                    flush(send, fd, slots, load);
                }
                if let Some(len) = viewer.write_padding_again(stream, sequence, now, send.next_buffer()) {
                    let tag = SlotTag { viewer: viewer.slot, kind: DatagramKind::Retransmission };
                    commit(send, slots, viewer, len, tag, merge);
                } else {
                    viewer.count_unanswered_nack();
                }
                continue;
            };
            let source = viewer.streams[stream].source;
            let Some(packet) = mountpoint.histories.get(source).and_then(|h| h.find(source_sequence, epoch)) else {
                viewer.count_unanswered_nack();
                continue;
            };
            if behind {
                // Live packets first: a worker past its bound sheds retransmissions before them.
                count_late(slots, viewer.slot, load, 1);
                continue;
            }
            if !viewer.may_retransmit(now) {
                continue; // over the viewer's pacing budget: dropped and counted (see SendBudget)
            }
            if !send.has_room() {
                flush(send, fd, slots, load);
            }
            if let Some(len) =
                viewer.write_retransmission(stream, sequence, packet.bytes(), &packet.meta, now, send.next_buffer())
            {
                let tag = SlotTag { viewer: viewer.slot, kind: DatagramKind::Retransmission };
                commit(send, slots, viewer, len, tag, merge);
            } else {
                viewer.count_unanswered_nack();
            }
        }
        viewer.write_tcp(now);
        flush(send, fd, slots, load);
    }

    /// Sends a sender report for each stream of each viewer whose report is due;
    /// writes what ICE-TCP viewers' queues hold and finds those that stalled.
    fn send_reports(&mut self, now: Instant) {
        let fd = self.socket.as_raw_fd();
        let ntp = ntp_time(SystemTime::now());
        let Self { mountpoints, send, slots, load, .. } = self;
        for mountpoint in mountpoints.iter_mut() {
            for viewer in mountpoint.viewers.iter_mut() {
                viewer.write_tcp(now);
                if viewer.is_paused() || now < viewer.next_report_at {
                    continue;
                }
                viewer.next_report_at = now + REPORT_INTERVAL;
                for stream in 0..viewer.streams.len() {
                    let Some(info) = viewer.streams[stream].sender_info(now, ntp) else {
                        continue;
                    };
                    if !send.has_room() {
                        flush(send, fd, slots, load);
                    }
                    let buffer = send.next_buffer();
                    let len = write_sender_report(buffer, &info);
                    if let Ok(len) = viewer.protect_rtcp(buffer, len) {
                        let tag = SlotTag { viewer: viewer.slot, kind: DatagramKind::Rtcp };
                        commit(send, slots, viewer, len, tag, false);
                    }
                }
                viewer.write_tcp(now);
            }
        }
        flush(send, fd, slots, load);
    }
}

/// Rewrites and protects each delivered packet for each viewer of the
/// mountpoint that takes its stream, viewer by viewer, into the send batch,
/// so each viewer's packets lie together (runs for GSO) and in order. Each
/// pass starts with another viewer (see `Mountpoint::viewers_in_turn`).
/// A packet that would leave past its deadline is left out for the viewers
/// still waiting for it and counted; `clock` ([`monotonic_ns`]) is read before
/// each viewer (a viewer's share of a pass takes well under a millisecond).
#[allow(clippy::too_many_arguments)]
fn fan_out(
    mountpoint: &mut Mountpoint,
    deliveries: &[Delivery],
    send: &mut SendBatch,
    slots: &mut [Option<ViewerSlot>],
    load: &WorkerLoad,
    fd: RawFd,
    now: Instant,
    deadline: SendDeadline,
    mut clock: impl FnMut() -> u64,
) {
    for viewer in mountpoint.viewers_in_turn() {
        if viewer.is_paused() {
            continue;
        }
        let now_ns = clock();
        let merge = slots[viewer.slot as usize].as_ref().is_some_and(|slot| slot.gso);
        let tag = SlotTag { viewer: viewer.slot, kind: DatagramKind::Rtp };
        let mut late = 0;
        for delivery in deliveries {
            let packet = &delivery.packet;
            if deadline.is_late(&packet.meta, now_ns) {
                late += u64::from(viewer.takes(delivery.stream));
                continue;
            }
            if !send.has_room() {
                flush(send, fd, slots, load);
            }
            if let Some(len) = viewer.write_rtp(delivery.stream, packet.bytes(), &packet.meta, now, send.next_buffer())
            {
                commit(send, slots, viewer, len, tag, merge);
            }
        }
        viewer.write_tcp(now);
        if late > 0 {
            count_late(slots, viewer.slot, load, late);
        }
    }
}

fn engine_clock() -> u64 {
    monotonic_ns(Instant::now())
}

fn count_late(slots: &[Option<ViewerSlot>], slot: u32, load: &WorkerLoad, packets: u64) {
    add(&load.dropped_late, packets);
    if let Some(slot) = slots[slot as usize].as_ref() {
        add(&slot.counters.dropped_late, packets);
        add(&slot.totals.dropped_late, packets);
    }
}

fn flush(send: &mut SendBatch, fd: RawFd, slots: &mut [Option<ViewerSlot>], load: &WorkerLoad) {
    if send.is_empty() {
        return;
    }
    add(&load.flushes, 1);
    add(&load.messages, send.len() as u64);
    send.flush(fd, |tag, outcome| {
        if let Some(slot) = slots[tag.viewer as usize].as_mut() {
            count_outcome(slot, tag.kind, outcome);
        }
    });
}

/// Counts what became of a viewer's datagrams (or, on ICE-TCP, frames).
fn count_outcome(slot: &mut ViewerSlot, kind: DatagramKind, outcome: Outcome) {
    let (counters, totals) = (&slot.counters, &slot.totals);
    match (outcome, kind) {
        (Outcome::Sent { packets, bytes }, DatagramKind::Rtp) => {
            add(&counters.packets, u64::from(packets));
            add(&counters.bytes, bytes as u64);
            add(&totals.packets, u64::from(packets));
            add(&totals.bytes, bytes as u64);
        }
        (Outcome::Sent { packets, bytes }, DatagramKind::Retransmission) => {
            add(&counters.retransmissions, u64::from(packets));
            add(&counters.bytes, bytes as u64);
            add(&totals.retransmissions, u64::from(packets));
            add(&totals.bytes, bytes as u64);
        }
        (Outcome::Sent { packets, .. }, DatagramKind::Rtcp) => add(&counters.rtcp_packets, u64::from(packets)),
        (Outcome::Dropped { packets }, _) => {
            add(&counters.dropped, u64::from(packets));
            add(&totals.dropped, u64::from(packets));
            slot.overflow.dropped(u64::from(packets), Instant::now());
        }
        (Outcome::Failed { packets }, _) => {
            add(&counters.dropped, u64::from(packets));
            add(&counters.send_errors, u64::from(packets));
            add(&totals.dropped, u64::from(packets));
            add(&totals.send_errors, u64::from(packets));
        }
        (Outcome::GsoRefused, _) => {
            slot.gso = false;
            add(&counters.gso_refused, 1);
        }
    }
}

/// Hands the `len` bytes written at the batch's next buffer to the viewer's
/// transport: the send batch (UDP), or the queue of its ICE-TCP connection
/// (counted at once: queued is sent, a full queue drops).
fn commit(
    send: &mut SendBatch,
    slots: &mut [Option<ViewerSlot>],
    viewer: &Viewer,
    len: usize,
    tag: SlotTag,
    merge: bool,
) {
    let Some(tcp) = &viewer.tcp else {
        send.commit(len, &viewer.address, tag, merge);
        return;
    };
    let queued = tcp.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push_frame(&send.next_buffer()[..len]);
    let outcome = if queued { Outcome::Sent { packets: 1, bytes: len } } else { Outcome::Dropped { packets: 1 } };
    if let Some(slot) = slots[tag.viewer as usize].as_mut() {
        count_outcome(slot, tag.kind, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::viewer::StreamStart;
    use crate::media::packet::Packet;
    use crate::ring::{self, Producer};
    use crate::sys::new_eventfd;
    use crate::wire::rtp::RtpHeader;
    use crate::wire::srtp::{Profile, SrtpSession};
    use std::net::UdpSocket;
    use std::os::fd::FromRawFd;
    use std::sync::mpsc;

    const MS: u64 = 1_000_000;

    thread_local! {
        /// The test's clock (each test runs on a thread of its own).
        static NOW_NS: std::cell::Cell<u64> = const { std::cell::Cell::new(1_000 * MS) };
    }

    fn test_clock() -> u64 {
        NOW_NS.with(std::cell::Cell::get)
    }

    fn set_clock(now_ns: u64) {
        NOW_NS.with(|now| now.set(now_ns));
    }

    /// A source packet of stream 0 that arrived at `arrival_ns`.
    fn delivery(sequence: u16, arrival_ns: u64, droppable: bool) -> Delivery {
        sized_delivery(sequence, arrival_ns, droppable, 100, false)
    }

    fn sized_delivery(sequence: u16, arrival_ns: u64, droppable: bool, payload: usize, keyframe: bool) -> Delivery {
        let mut datagram = vec![0x80, 96];
        datagram.extend_from_slice(&sequence.to_be_bytes());
        datagram.extend_from_slice(&(u32::from(sequence) * 3000).to_be_bytes());
        datagram.extend_from_slice(&0x1234_5678_u32.to_be_bytes());
        datagram.extend_from_slice(&vec![0x5a; payload]);
        let header = RtpHeader::parse(&datagram).unwrap();
        let mut packet = Arc::new(Packet::empty());
        let meta = ReceivedPacket { header, keyframe_start: keyframe, epoch: 0, arrival_ns, droppable };
        Arc::get_mut(&mut packet).unwrap().fill(&datagram, meta);
        Delivery { mountpoint: 1, stream: 0, packet }
    }

    /// A viewer of stream 0 on `sink`, with the counters its worker slot shares.
    fn viewer(id: u64, sink: &UdpSocket) -> (Box<Viewer>, Arc<ViewerCounters>) {
        let address = RawAddress::from_socket_addr(sink.local_addr().unwrap(), libc::AF_INET).unwrap();
        let stream =
            ViewerStream::new(0, 1000 + id as u32, 96, 90_000, false, StreamStart { sequence: 0, timestamp: 0 });
        let session = SrtpSession::new(Profile::AeadAes128Gcm, &[id as u8; 28]).unwrap();
        let mut viewer = Box::new(Viewer::new(id, address, vec![stream], session, Instant::now() + REPORT_INTERVAL));
        let counters = Arc::new(ViewerCounters::default());
        viewer.set_counters(counters.clone());
        (viewer, counters)
    }

    struct TestWorker {
        worker: Worker,
        ring: Producer<Delivery>,
        sink: UdpSocket,
        counters: Vec<Arc<ViewerCounters>>,
        totals: Arc<SendCounters>,
    }

    /// A worker (not running: the test calls its passes) with `viewers` viewers of mountpoint 1.
    fn test_worker(viewers: u64, max_send_delay: Duration) -> TestWorker {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        // SAFETY: the worker owns the descriptor from here on.
        let socket = Arc::new(unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(sender)) });
        let (ring, consumer) = ring::channel(1024);
        let (_commands, receiver) = mpsc::channel();
        let config = WorkerConfig { index: 0, core: None, mode: SendMode::Sendmmsg, max_send_delay };
        let events = Arc::new(EventQueue::new().unwrap());
        let load = Arc::new(WorkerLoad::default());
        let mut worker =
            Worker::new(config, Arc::new(new_eventfd().unwrap()), receiver, consumer, socket, load, events);
        worker.clock = test_clock;
        let totals = Arc::new(SendCounters::default());
        let mut counters = Vec::new();
        for id in 0..viewers {
            let (viewer, viewer_counters) = viewer(id, &sink);
            counters.push(viewer_counters.clone());
            worker.run_command(Command::AddViewer {
                mountpoint_id: 1,
                streams: 1,
                caches: vec![None],
                viewer,
                counters: viewer_counters,
                totals: totals.clone(),
            });
        }
        TestWorker { worker, ring, sink, counters, totals }
    }

    fn sent_and_late(counters: &[Arc<ViewerCounters>]) -> Vec<(u64, u64)> {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        counters.iter().map(|c| (load(&c.packets), load(&c.dropped_late))).collect()
    }

    #[test]
    fn packets_older_than_the_bound_are_dropped_and_counted_never_sent() {
        let mut test = test_worker(3, Duration::from_millis(50));
        let now = Instant::now();
        let now_ns = test_clock();
        // The worker was held busy: two packets waited 80 ms (a source's
        // clock may lie: their order does not matter), two arrived just now.
        for (sequence, arrival) in [(1, now_ns), (2, now_ns - 80 * MS), (3, now_ns - 80 * MS), (4, now_ns)] {
            assert!(test.ring.push(delivery(sequence, arrival, false)).is_ok());
        }
        test.worker.run_pass(now);
        assert_eq!(
            sent_and_late(&test.counters),
            [(2, 2); 3],
            "each viewer: the 2 fresh packets sent, 2 late ones dropped"
        );
        assert_eq!(test.totals.dropped_late.load(Ordering::Relaxed), 6);
        assert_eq!(test.worker.load.dropped_late.load(Ordering::Relaxed), 6);
        assert_eq!(test.totals.dropped.load(Ordering::Relaxed), 0, "late drops are not socket drops");
        // What reached the sink is the fresh packets alone.
        test.sink.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buffer = [0u8; 2048];
        let sequences: Vec<u16> = (0..6)
            .map(|_| {
                let len = test.sink.recv(&mut buffer).unwrap();
                let header = RtpHeader::parse(&buffer[..len]).unwrap();
                header.sequence
            })
            .collect();
        // Each viewer numbers from its own start (0): the late packets left a gap of two.
        assert_eq!(sequences, [0, 3, 0, 3, 0, 3]);
        test.sink.set_nonblocking(true).unwrap();
        assert!(test.sink.recv(&mut buffer).is_err(), "nothing else was sent");
    }

    #[test]
    fn a_late_worker_drops_retransmissions_until_it_has_caught_up() {
        let mut test = test_worker(1, Duration::from_millis(50));
        let now = Instant::now();
        let now_ns = test_clock();
        // Fresh packets: sent, and kept for retransmission.
        for sequence in 1..=3 {
            assert!(test.ring.push(delivery(sequence, now_ns, false)).is_ok());
        }
        test.worker.run_pass(now);
        assert!(!test.worker.behind);
        // Then packets that waited 30 ms (past half the bound): sent, but the worker is behind.
        for sequence in 4..=5 {
            assert!(test.ring.push(delivery(sequence, now_ns - 30 * MS, false)).is_ok());
        }
        test.worker.run_pass(now);
        assert!(test.worker.behind);
        assert_eq!(sent_and_late(&test.counters), [(5, 0)]);
        test.worker.retransmit(0, &[(1000, 1), (1000, 2)], now);
        let retransmissions = |test: &TestWorker| test.counters[0].retransmissions.load(Ordering::Relaxed);
        assert_eq!(retransmissions(&test), 0);
        assert_eq!(sent_and_late(&test.counters), [(5, 2)], "both retransmissions shed");
        // Caught up: retransmissions go again.
        set_clock(now_ns + 100 * MS);
        assert!(test.ring.push(delivery(6, now_ns + 100 * MS, false)).is_ok());
        test.worker.run_pass(now);
        assert!(!test.worker.behind);
        test.worker.retransmit(0, &[(1000, 1)], now);
        assert_eq!(retransmissions(&test), 1);
    }

    #[test]
    fn a_viewer_is_found_by_its_id_after_others_leave() {
        let mut test = test_worker(4, Duration::from_millis(50));
        test.worker.remove_viewer(0); // the last viewer (3) takes its place
        let taken = test.worker.take_viewer(2).map(|viewer| viewer.id);
        assert_eq!(taken, Some(2));
        for id in [1, 3] {
            assert_eq!(test.worker.viewer(id).map(|viewer| viewer.id), Some(id));
        }
        for id in [0, 2] {
            assert!(test.worker.viewer(id).is_none(), "viewer {id} left");
        }
        let mountpoint = &test.worker.mountpoints[0];
        let ids: Vec<u64> = mountpoint.viewers.iter().map(|viewer| viewer.id).collect();
        assert_eq!(mountpoint.viewer_ids, ids);
    }

    #[test]
    fn droppable_frames_go_at_half_the_bound_reference_frames_at_the_bound() {
        let deadline = SendDeadline::new(Duration::from_millis(100));
        let packet = |arrival_ns, droppable| delivery(1, arrival_ns, droppable).packet.meta;
        let now = 1_000 * MS;
        assert!(!deadline.is_late(&packet(now - 60 * MS, false), now));
        assert!(deadline.is_late(&packet(now - 60 * MS, true), now));
        assert!(!deadline.is_late(&packet(now - 40 * MS, true), now));
        assert!(deadline.is_late(&packet(now - 101 * MS, false), now));
        assert!(!deadline.is_late(&packet(0, true), now), "no arrival time: never late");
    }

    #[test]
    fn when_a_slow_worker_sheds_the_loss_rotates_over_its_viewers() {
        // Each viewer's share takes 10 ms of a 25 ms bound: in every pass the
        // last of four viewers is too late. Over four passes each loses once.
        let mut test = test_worker(4, Duration::from_millis(25));
        let fd = test.worker.socket.as_raw_fd();
        let deadline = test.worker.deadline;
        let start = test_clock();
        for pass in 0..4u64 {
            let arrival = start + pass * 100 * MS;
            let deliveries: Vec<Delivery> = (0..5).map(|i| delivery((pass * 5 + i) as u16, arrival, false)).collect();
            let mut viewer_turn = 0;
            let clock = || {
                viewer_turn += 1;
                arrival + (viewer_turn - 1) * 10 * MS
            };
            let Worker { mountpoints, send, slots, load, .. } = &mut test.worker;
            fan_out(&mut mountpoints[0], &deliveries, send, slots, load, fd, Instant::now(), deadline, clock);
            flush(send, fd, slots, load);
        }
        assert_eq!(sent_and_late(&test.counters), [(15, 5); 4], "every viewer lost one pass of five packets");
    }

    #[test]
    fn droppable_packets_are_shed_before_reference_packets() {
        // The third viewer's turn comes 30 ms after arrival: past half of the 50 ms bound.
        let mut test = test_worker(3, Duration::from_millis(50));
        let fd = test.worker.socket.as_raw_fd();
        let deadline = test.worker.deadline;
        let arrival = test_clock();
        let deliveries: Vec<Delivery> = (0..4).map(|i| delivery(i, arrival, i % 2 == 1)).collect();
        let mut viewer_turn = 0;
        let clock = || {
            viewer_turn += 1;
            arrival + viewer_turn * 15 * MS
        };
        let Worker { mountpoints, send, slots, load, .. } = &mut test.worker;
        fan_out(&mut mountpoints[0], &deliveries, send, slots, load, fd, Instant::now(), deadline, clock);
        flush(send, fd, slots, load);
        assert_eq!(sent_and_late(&test.counters), [(4, 0), (2, 2), (2, 2)], "15 ms: all; 30 and 45 ms: reference only");
    }

    #[test]
    fn drops_are_reported_at_once_then_at_most_once_an_interval() {
        let events = Arc::new(EventQueue::new().unwrap());
        let mut report = OverflowReport { peer_id: 7, events: events.clone(), unreported: 0, reported_at: None };
        let start = Instant::now();
        report.dropped(3, start);
        assert_eq!(events.drain(), [Event::SendQueueOverflow { peer_id: 7, dropped: 3 }]);
        report.dropped(2, start + Duration::from_millis(10));
        report.dropped(4, start + Duration::from_millis(500));
        assert!(events.drain().is_empty(), "within the interval: counted, not reported");
        report.dropped(1, start + OVERFLOW_REPORT_INTERVAL);
        assert_eq!(events.drain(), [Event::SendQueueOverflow { peer_id: 7, dropped: 7 }], "the drops since the last");
    }

    #[test]
    fn each_pass_starts_with_another_viewer_and_each_viewer_starts_one_pass_in_turn() {
        let mut viewers = [1, 2, 3];
        let mut first = 0;
        let orders: Vec<Vec<i32>> =
            (0..4).map(|_| super::in_turn(&mut viewers, &mut first).map(|v| *v).collect()).collect();
        assert_eq!(orders, [[1, 2, 3], [3, 1, 2], [2, 3, 1], [1, 2, 3]]);
        assert_eq!(super::in_turn(&mut [0u8; 0], &mut first).count(), 0);
        let mut one = [7];
        assert_eq!(super::in_turn(&mut one, &mut first).map(|v| *v).collect::<Vec<_>>(), [7]);
    }

    #[test]
    fn a_few_passes_in_a_row_spread_their_first_viewers_over_the_whole_list() {
        for len in [2, 4, 10, 64, 1000, 3021] {
            let mut items: Vec<usize> = (0..len).collect();
            let mut first = 0;
            let starts: Vec<usize> =
                (0..len).map(|_| *super::in_turn(&mut items, &mut first).next().unwrap()).collect();
            let mut seen = starts.clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..len).collect::<Vec<_>>(), "{len} viewers: each starts one pass of {len}");
            // Any 20 passes in a row leave no stretch of the list longer than a quarter of it without a start
            // (moving on by one, 20 passes covered 20 neighbours).
            if len >= 64 {
                for window in starts.windows(20) {
                    let mut sorted = window.to_vec();
                    sorted.sort_unstable();
                    let wrap = sorted[0] + len - sorted[sorted.len() - 1];
                    let widest = sorted.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap().max(wrap);
                    assert!(widest <= len / 4, "{len} viewers: a gap of {widest} among the starts of {window:?}");
                }
            }
        }
    }

    /// Each packet 12 + 1000 bytes of RTP and SRTP's 16-byte tag.
    const PACKET_ON_THE_WIRE: i64 = 1028;

    /// A worker whose one viewer (`estimate`: its measured estimate) has a video
    /// stream started from a keyframe cache of `packets` packets; the time it started.
    fn bursting_viewer(packets: u16, estimate: Option<u64>) -> (TestWorker, Instant) {
        let mut test = test_worker(0, Duration::from_secs(5));
        let mut cache = GopCache::new();
        for sequence in 0..packets {
            cache.offer(&sized_delivery(sequence, 0, false, 1000, sequence == 0).packet, 0);
        }
        let (mut viewer, counters) = viewer(0, &test.sink);
        viewer.streams[0] = ViewerStream::new(0, 1000, 96, 90_000, true, StreamStart { sequence: 0, timestamp: 0 });
        viewer.pace_to(estimate, Instant::now());
        test.counters.push(counters.clone());
        let caches = vec![Some(Arc::new(Mutex::new(cache)))];
        let totals = test.totals.clone();
        test.worker.run_command(Command::AddViewer { mountpoint_id: 1, streams: 1, caches, viewer, counters, totals });
        test.worker.run_command(Command::StartViewer { id: 0 });
        assert!(test.worker.bursts_pending);
        (test, Instant::now())
    }

    /// The packets the viewer was sent after each step of `step` from `start` until `until`.
    fn burst_progress(test: &mut TestWorker, start: Instant, step: Duration, until: Duration) -> Vec<u64> {
        let steps = (until.as_micros() / step.as_micros()) as u32;
        (0..=steps)
            .map(|n| {
                test.worker.run_bursts(start + step * n);
                test.counters[0].packets.load(Ordering::Relaxed)
            })
            .collect()
    }

    #[test]
    fn a_burst_goes_at_line_rate_while_the_viewer_has_no_measured_estimate() {
        let (mut test, start) = bursting_viewer(60, None);
        let sent = burst_progress(&mut test, start, Duration::from_millis(1), Duration::ZERO);
        assert_eq!(sent, [60], "60 kB within the first 64 KiB of credit: at once");
        assert!(!test.worker.bursts_pending);
    }

    #[test]
    fn a_burst_is_paced_to_the_viewers_estimate() {
        // 600 kbit/s: 187.5 kB/s (2.5 times), 7.5 kB at once; 60 packets (61.7 kB) take about 290 ms.
        let (mut test, start) = bursting_viewer(60, Some(600_000));
        let sent = burst_progress(&mut test, start, Duration::from_millis(10), Duration::from_millis(500));
        let expected = |ms: i64| (7_500 + 187_500 * ms / 1000) / PACKET_ON_THE_WIRE + 1;
        for (step, &packets) in sent.iter().enumerate() {
            let ms = step as i64 * 10;
            let due = expected(ms).min(60) as u64;
            // Real time passes between the start and the first step: a packet or two ahead at most.
            assert!(packets >= due && packets <= due + 2, "{packets} packets sent after {ms} ms, {due} due");
        }
        let done = sent.iter().position(|&packets| packets == 60).unwrap() as i64 * 10;
        assert!((250..=330).contains(&done), "the burst took {done} ms");
        assert!(!test.worker.bursts_pending);
    }

    /// A worker whose one viewer got `packets` live packets of 1000 bytes; the time they were sent.
    fn viewer_with_live_packets(packets: u16, estimate: Option<u64>) -> (TestWorker, Instant) {
        let mut test = test_worker(1, Duration::from_secs(5));
        let now = Instant::now();
        if let Some(viewer) = test.worker.viewer(0) {
            viewer.pace_to(estimate, now);
        }
        for sequence in 1..=packets {
            assert!(test.ring.push(sized_delivery(sequence, test_clock(), false, 1000, false)).is_ok());
        }
        test.worker.run_pass(now);
        (test, now)
    }

    fn retransmitted(test: &TestWorker) -> (u64, u64) {
        let counters = &test.counters[0];
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        (load(&counters.retransmissions), load(&counters.retransmissions_over_budget))
    }

    #[test]
    fn retransmissions_over_the_budget_of_the_estimate_are_dropped_and_counted() {
        let (mut test, now) = viewer_with_live_packets(20, Some(600_000));
        // 20 live packets (20.6 kB) spent the 7.5 kB bucket and left the most debt it allows.
        let all: Vec<(u32, u16)> = (0..20).map(|sequence| (1000, sequence)).collect();
        test.worker.retransmit(0, &all, now);
        assert_eq!(retransmitted(&test), (0, 20), "nothing left for retransmissions");
        // 80 ms later the debt is paid and the bucket full again (187.5 kB/s): 7.5 kB of them go.
        test.worker.retransmit(0, &all, now + Duration::from_millis(80));
        let sent = 7_500 / PACKET_ON_THE_WIRE as u64 + 1;
        assert_eq!(retransmitted(&test), (sent, 40 - sent));
        assert_eq!(test.counters[0].dropped_late.load(Ordering::Relaxed), 0, "not counted as late");
    }

    #[test]
    fn retransmissions_are_not_limited_without_a_measured_estimate() {
        let (mut test, now) = viewer_with_live_packets(20, None);
        let all: Vec<(u32, u16)> = (0..20).map(|sequence| (1000, sequence)).collect();
        test.worker.retransmit(0, &all, now);
        assert_eq!(retransmitted(&test), (20, 0));
    }
}
