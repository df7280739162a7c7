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
use crate::media::packet::{GopCache, History, Packet};
use crate::ring::Consumer;
use crate::sys::{pin_to_core, RawAddress};
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
    /// `source` (positions), at that source's next keyframe; `vp8`: its
    /// pictures are renumbered to follow on.
    SetStreamSource {
        id: u64,
        stream: usize,
        source: usize,
        vp8: bool,
    },
    /// VP8: the highest temporal layer the viewer's stream at `stream` gets (None: all).
    SetStreamTemporalCap {
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
    viewers: Vec<Viewer>,
    /// Which viewer the next fan-out starts with: it moves on every pass, so that
    /// when the socket cannot take a whole batch the drops fall on different viewers.
    first_viewer: usize,
}

impl Mountpoint {
    fn new(id: u64, streams: usize, caches: Caches) -> Self {
        let histories = (0..streams).map(|_| History::new(HISTORY_PACKETS)).collect();
        Self { id, histories, latest: vec![None; streams], caches, viewers: Vec::new(), first_viewer: 0 }
    }

    /// The viewers in this pass's order: a rotation of the list, one further each pass.
    fn viewers_in_turn(&mut self) -> impl Iterator<Item = &mut Viewer> {
        in_turn(&mut self.viewers, &mut self.first_viewer)
    }
}

/// `items` from `*first` round to the one before it; `*first` moves on by one.
fn in_turn<'a, T>(items: &'a mut [T], first: &mut usize) -> impl Iterator<Item = &'a mut T> {
    let start = if items.is_empty() { 0 } else { *first % items.len() };
    *first = start + 1;
    let (before, from_start) = items.split_at_mut(start);
    from_start.iter_mut().chain(before.iter_mut())
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
fn start_from_caches(viewer: &mut Viewer, caches: &Caches, only: Option<usize>, now: Instant) -> bool {
    if viewer.is_paused() {
        // Started when resumed.
        viewer.streams.iter_mut().filter(|stream| stream.is_held()).for_each(ViewerStream::restart);
        return false;
    }
    let mut started = false;
    // A viewer has a few streams: no allocation until one starts from a cache.
    let mut from_cache = Vec::new();
    for (position, stream) in viewer.streams.iter_mut().enumerate() {
        if only.is_some_and(|only| only != position) || !stream.starts_at_keyframes() || stream.is_paused() {
            continue;
        }
        if let Some(Some(cache)) = caches.get(stream.source) {
            let cache = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if stream.start_from(&cache, now) {
                started = true;
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
                if self.bursts_pending {
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
                mountpoint.viewers.push(*viewer);
            }
            Command::SwitchViewer { id, mountpoint_id, streams, caches, viewer_streams, totals } => {
                self.switch_viewer(id, mountpoint_id, streams, caches, viewer_streams, totals);
            }
            Command::StartViewer { id } => {
                let Some(mountpoint_id) = self.viewer_mountpoints.get(&id).copied() else { return };
                let Some(mountpoint) = self.mountpoints.iter_mut().find(|m| m.id == mountpoint_id) else { return };
                let Some(viewer) = mountpoint.viewers.iter_mut().find(|viewer| viewer.id == id) else { return };
                self.bursts_pending |= start_from_caches(viewer, &mountpoint.caches, None, Instant::now());
            }
            Command::SetStreamPaused { id, stream, paused } => {
                let Some(mountpoint_id) = self.viewer_mountpoints.get(&id).copied() else {
                    return;
                };
                let Some(mountpoint) = self.mountpoints.iter_mut().find(|m| m.id == mountpoint_id) else {
                    return;
                };
                let Some(viewer) = mountpoint.viewers.iter_mut().find(|viewer| viewer.id == id) else {
                    return;
                };
                let Some(viewer_stream) = viewer.streams.get_mut(stream) else {
                    return;
                };
                let resumed = viewer_stream.is_paused() && !paused;
                viewer_stream.set_paused(paused);
                if resumed {
                    self.bursts_pending |= start_from_caches(viewer, &mountpoint.caches, Some(stream), Instant::now());
                }
            }
            Command::SetPlayoutDelay { id, stream, delay } => {
                if let Some(viewer_stream) = self.viewer(id).and_then(|viewer| viewer.streams.get_mut(stream)) {
                    viewer_stream.set_playout_delay(delay);
                }
            }
            Command::SetStreamSource { id, stream, source, vp8 } => {
                let Some(mountpoint_id) = self.viewer_mountpoints.get(&id).copied() else { return };
                let Some(mountpoint) = self.mountpoints.iter_mut().find(|m| m.id == mountpoint_id) else { return };
                let Some(viewer) = mountpoint.viewers.iter_mut().find(|viewer| viewer.id == id) else { return };
                let Some(viewer_stream) = viewer.streams.get_mut(stream) else { return };
                if vp8 {
                    viewer_stream.rewrite_vp8();
                }
                let from = viewer_stream.source;
                let (moved, held) = (viewer_stream.move_to(source), viewer_stream.is_held());
                if moved {
                    viewer.count_source_switch(from, source);
                    if !held {
                        self.bursts_pending |=
                            start_from_caches(viewer, &mountpoint.caches, Some(stream), Instant::now());
                    }
                }
            }
            Command::SetStreamTemporalCap { id, stream, cap } => {
                if let Some(viewer_stream) = self.viewer(id).and_then(|viewer| viewer.streams.get_mut(stream)) {
                    viewer_stream.rewrite_vp8();
                    viewer_stream.set_temporal_cap(cap);
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
                let Some(viewer) = mountpoint.viewers.iter_mut().find(|viewer| viewer.id == id) else {
                    return;
                };
                let resumed = viewer.is_paused() && !paused;
                viewer.set_paused(paused);
                if resumed {
                    self.bursts_pending |= start_from_caches(viewer, &mountpoint.caches, None, Instant::now());
                }
            }
            Command::SendRtcp { id, packet } => self.send_rtcp(id, &packet),
            Command::Retransmit { id, lost } => self.retransmit(id, &lost),
            Command::SetTransportCc { id, extension_id } => {
                if let Some(viewer) = self.viewer(id) {
                    viewer.set_transport_cc(extension_id);
                }
            }
            Command::CongestionFeedback { id, packet, remb, fraction_lost } => {
                if let Some(viewer) = self.viewer(id) {
                    viewer.on_feedback(&packet, remb, fraction_lost, Instant::now());
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
        let viewer =
            mountpoint.viewers.iter().position(|viewer| viewer.id == id).map(|i| mountpoint.viewers.swap_remove(i));
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
        mountpoint.viewers.push(viewer);
    }

    fn remove_viewer(&mut self, id: u64) {
        let Some(mountpoint_id) = self.viewer_mountpoints.remove(&id) else {
            return;
        };
        let Some(position) = self.mountpoints.iter().position(|m| m.id == mountpoint_id) else {
            return;
        };
        let mountpoint = &mut self.mountpoints[position];
        if let Some(index) = mountpoint.viewers.iter().position(|viewer| viewer.id == id) {
            let viewer = mountpoint.viewers.swap_remove(index);
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
        mountpoint.viewers.iter_mut().find(|viewer| viewer.id == id)
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
            return;
        }
        add(&self.load.passes, 1);
        add(&self.load.source_packets, self.pass.len() as u64);
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
                fan_out(mountpoint, &pass[start..end], send, slots, load, fd, now);
            }
            start = end;
        }
        flush(send, fd, slots, load);
        pass.clear();
    }

    /// Sends each bursting viewer as much of its burst as its credit allows.
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

    fn send_rtcp(&mut self, id: u64, packet: &[u8]) {
        let fd = self.socket.as_raw_fd();
        let Some(mountpoint_id) = self.viewer_mountpoints.get(&id).copied() else {
            return;
        };
        let Self { mountpoints, send, slots, load, .. } = self;
        let Some(mountpoint) = mountpoints.iter_mut().find(|m| m.id == mountpoint_id) else {
            return;
        };
        let Some(viewer) = mountpoint.viewers.iter_mut().find(|viewer| viewer.id == id) else {
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

    /// Resends each reported packet still in the history, as the viewer first got it.
    fn retransmit(&mut self, id: u64, lost: &[(u32, u16)]) {
        let fd = self.socket.as_raw_fd();
        let Some(mountpoint_id) = self.viewer_mountpoints.get(&id).copied() else {
            return;
        };
        let Self { mountpoints, send, slots, load, .. } = self;
        let Some(mountpoint) = mountpoints.iter_mut().find(|m| m.id == mountpoint_id) else {
            return;
        };
        let Some(viewer) = mountpoint.viewers.iter_mut().find(|viewer| viewer.id == id) else {
            return;
        };
        if viewer.is_paused() {
            return;
        }
        let now = Instant::now();
        let merge = slots[viewer.slot as usize].as_ref().is_some_and(|slot| slot.gso);
        for &(ssrc, sequence) in lost {
            let Some(stream) = viewer.streams.iter().position(|stream| stream.ssrc() == ssrc) else {
                continue;
            };
            let Some((source_sequence, epoch)) = viewer.streams[stream].source_of(sequence) else {
                continue;
            };
            let source = viewer.streams[stream].source;
            let Some(packet) = mountpoint.histories.get(source).and_then(|h| h.find(source_sequence, epoch)) else {
                continue;
            };
            if !send.has_room() {
                flush(send, fd, slots, load);
            }
            if let Some(len) =
                viewer.write_retransmission(stream, sequence, packet.bytes(), &packet.meta, now, send.next_buffer())
            {
                let tag = SlotTag { viewer: viewer.slot, kind: DatagramKind::Retransmission };
                commit(send, slots, viewer, len, tag, merge);
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
/// pass starts with the next viewer (see `Mountpoint::viewers_in_turn`).
fn fan_out(
    mountpoint: &mut Mountpoint,
    deliveries: &[Delivery],
    send: &mut SendBatch,
    slots: &mut [Option<ViewerSlot>],
    load: &WorkerLoad,
    fd: RawFd,
    now: Instant,
) {
    for viewer in mountpoint.viewers_in_turn() {
        if viewer.is_paused() {
            continue;
        }
        let merge = slots[viewer.slot as usize].as_ref().is_some_and(|slot| slot.gso);
        let tag = SlotTag { viewer: viewer.slot, kind: DatagramKind::Rtp };
        for delivery in deliveries {
            if !send.has_room() {
                flush(send, fd, slots, load);
            }
            let packet = &delivery.packet;
            if let Some(len) = viewer.write_rtp(delivery.stream, packet.bytes(), &packet.meta, now, send.next_buffer())
            {
                commit(send, slots, viewer, len, tag, merge);
            }
        }
        viewer.write_tcp(now);
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
    fn each_pass_starts_with_the_next_viewer() {
        let mut viewers = [1, 2, 3];
        let mut first = 0;
        let orders: Vec<Vec<i32>> =
            (0..4).map(|_| super::in_turn(&mut viewers, &mut first).map(|v| *v).collect()).collect();
        assert_eq!(orders, [[1, 2, 3], [2, 3, 1], [3, 1, 2], [1, 2, 3]]);
        assert_eq!(super::in_turn(&mut [0u8; 0], &mut first).count(), 0);
    }
}
