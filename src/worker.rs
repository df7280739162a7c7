//! The fan-out loop: one thread that waits (epoll) on the source sockets and
//! the command eventfd and, for each batch of source packets, rewrites and
//! protects every packet for every viewer of the mountpoint into one send
//! batch, flushed with sendmmsg. No queue and no event loop lie between
//! receiving a packet and sending it to the viewers ("direct transmission").
//!
//! A worker owns its mountpoints' sockets and viewers. Several workers, each
//! pinned to a core and owning a share of the viewers, would each run this
//! loop over shared source packets; today the engine runs one.
//!
//! Invariant: the send batch is empty between two steps of the loop (every
//! step that fills it flushes it before returning), so a slot's viewer index
//! always refers to the mountpoint being worked on.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::batch::{DatagramKind, Outcome, SendBatch, SlotTag};
use crate::receiver::{ReceiveBatch, ReceivedPacket, SourceStream, RECEIVE_BATCH};
use crate::rtcp::{ntp_time, write_sender_report};
use crate::viewer::{RawAddress, Viewer, ViewerCounters};

/// The epoll key of the command eventfd; source sockets use keys counted from 0.
pub const WAKE_KEY: u64 = u64::MAX;
const SEND_BATCH: usize = 128;
const EPOLL_EVENTS: usize = 64;
/// Receive batches taken from one socket per wake-up, so one busy source cannot starve the others.
const BATCHES_PER_WAKE: usize = 4;
const REPORT_TICK: Duration = Duration::from_millis(100);
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

pub enum Command {
    AddMountpoint { id: u64, streams: Vec<(u64, SourceStream)> },
    RemoveMountpoint { id: u64, done: SyncSender<()> },
    AddViewer { mountpoint_id: u64, viewer: Box<Viewer>, counters: Arc<ViewerCounters> },
    RemoveViewer { id: u64 },
    SetViewerAddress { id: u64, address: RawAddress },
    SetViewerPaused { id: u64, paused: bool },
    SendRtcp { id: u64, packet: Vec<u8> },
    Stop,
}

struct Mountpoint {
    id: u64,
    streams: Vec<SourceStream>,
    source_keys: Vec<u64>,
    viewers: Vec<Viewer>,
    /// `counters[i]` belongs to `viewers[i]`, apart so a flush can count while viewers are borrowed.
    counters: Vec<Arc<ViewerCounters>>,
}

impl Mountpoint {
    fn viewer_position(&self, id: u64) -> Option<usize> {
        self.viewers.iter().position(|viewer| viewer.id == id)
    }
}

pub struct Worker {
    epoll: Arc<OwnedFd>,
    wake: Arc<OwnedFd>,
    commands: Receiver<Command>,
    socket: OwnedFd,
    mountpoints: Vec<Option<Mountpoint>>,
    mountpoint_slots: HashMap<u64, usize>,
    sources: HashMap<u64, (usize, usize)>,
    viewer_slots: HashMap<u64, usize>,
    receive: ReceiveBatch,
    received: Vec<Option<ReceivedPacket>>,
    send: SendBatch,
    next_reports_at: Instant,
}

impl Worker {
    pub fn new(epoll: Arc<OwnedFd>, wake: Arc<OwnedFd>, commands: Receiver<Command>, socket: OwnedFd) -> Self {
        Self {
            epoll,
            wake,
            commands,
            socket,
            mountpoints: Vec::new(),
            mountpoint_slots: HashMap::new(),
            sources: HashMap::new(),
            viewer_slots: HashMap::new(),
            receive: ReceiveBatch::default(),
            received: vec![None; RECEIVE_BATCH],
            send: SendBatch::new(SEND_BATCH),
            next_reports_at: Instant::now() + REPORT_TICK,
        }
    }

    pub fn run(mut self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EPOLL_EVENTS];
        loop {
            let wait = self.next_reports_at.saturating_duration_since(Instant::now());
            let timeout = wait.as_millis() as libc::c_int + 1;
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
                if key != WAKE_KEY {
                    self.receive_from(key);
                }
            }
            let now = Instant::now();
            if now >= self.next_reports_at {
                self.send_reports(now);
                self.next_reports_at = now + REPORT_TICK;
            }
        }
    }

    /// Reads a few batches from one source socket and fans each out.
    fn receive_from(&mut self, key: u64) {
        let Some(&(slot, position)) = self.sources.get(&key) else { return };
        let Some(mountpoint) = self.mountpoints[slot].as_mut() else { return };
        let fd = self.socket.as_raw_fd();
        for _ in 0..BATCHES_PER_WAKE {
            let count = match self.receive.receive(mountpoint.streams[position].fd()) {
                Ok(count) if count > 0 => count,
                _ => break,
            };
            let now = Instant::now();
            mountpoint.streams[position].accept(&self.receive, count, now, &mut self.received);
            fan_out(mountpoint, position, &self.receive, &self.received[..count], &mut self.send, fd, now);
            if count < RECEIVE_BATCH {
                break;
            }
        }
    }

    /// Runs every queued command; false once the engine stops.
    fn run_commands(&mut self) -> bool {
        let mut counter = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `counter`; the eventfd is non-blocking.
        unsafe { libc::read(self.wake.as_raw_fd(), counter.as_mut_ptr().cast(), counter.len()) };
        loop {
            match self.commands.try_recv() {
                Ok(Command::Stop) | Err(std::sync::mpsc::TryRecvError::Disconnected) => return false,
                Ok(command) => self.run_command(command),
                Err(std::sync::mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    fn run_command(&mut self, command: Command) {
        match command {
            Command::AddMountpoint { id, streams } => {
                let slot = self.mountpoints.iter().position(Option::is_none).unwrap_or_else(|| {
                    self.mountpoints.push(None);
                    self.mountpoints.len() - 1
                });
                let (source_keys, streams): (Vec<u64>, Vec<SourceStream>) = streams.into_iter().unzip();
                for (position, key) in source_keys.iter().enumerate() {
                    self.sources.insert(*key, (slot, position));
                }
                self.mountpoints[slot] =
                    Some(Mountpoint { id, streams, source_keys, viewers: Vec::new(), counters: Vec::new() });
                self.mountpoint_slots.insert(id, slot);
            }
            Command::RemoveMountpoint { id, done } => {
                if let Some(slot) = self.mountpoint_slots.remove(&id) {
                    if let Some(mountpoint) = self.mountpoints[slot].take() {
                        for key in &mountpoint.source_keys {
                            self.sources.remove(key);
                        }
                        for viewer in &mountpoint.viewers {
                            self.viewer_slots.remove(&viewer.id);
                        }
                        debug_assert_eq!(mountpoint.id, id);
                    }
                }
                // The mountpoint and its sockets are closed by now.
                let _ = done.send(());
            }
            Command::AddViewer { mountpoint_id, viewer, counters } => {
                let Some(&slot) = self.mountpoint_slots.get(&mountpoint_id) else { return };
                let Some(mountpoint) = self.mountpoints[slot].as_mut() else { return };
                self.viewer_slots.insert(viewer.id, slot);
                mountpoint.viewers.push(*viewer);
                mountpoint.counters.push(counters);
            }
            Command::RemoveViewer { id } => {
                let Some(slot) = self.viewer_slots.remove(&id) else { return };
                let Some(mountpoint) = self.mountpoints[slot].as_mut() else { return };
                if let Some(position) = mountpoint.viewer_position(id) {
                    mountpoint.viewers.swap_remove(position);
                    mountpoint.counters.swap_remove(position);
                }
            }
            Command::SetViewerAddress { id, address } => {
                if let Some((viewer, _)) = self.viewer(id) {
                    viewer.address = address;
                }
            }
            Command::SetViewerPaused { id, paused } => {
                if let Some((viewer, _)) = self.viewer(id) {
                    viewer.set_paused(paused);
                }
            }
            Command::SendRtcp { id, packet } => self.send_rtcp(id, &packet),
            Command::Stop => {}
        }
    }

    fn viewer(&mut self, id: u64) -> Option<(&mut Viewer, usize)> {
        let slot = *self.viewer_slots.get(&id)?;
        let mountpoint = self.mountpoints[slot].as_mut()?;
        let position = mountpoint.viewer_position(id)?;
        Some((&mut mountpoint.viewers[position], slot))
    }

    fn send_rtcp(&mut self, id: u64, packet: &[u8]) {
        let fd = self.socket.as_raw_fd();
        let Some(slot) = self.viewer_slots.get(&id).copied() else { return };
        let Some(mountpoint) = self.mountpoints[slot].as_mut() else { return };
        let Some(position) = mountpoint.viewer_position(id) else { return };
        let viewer = &mut mountpoint.viewers[position];
        let buffer = self.send.next_buffer();
        buffer[..packet.len()].copy_from_slice(packet);
        if let Ok(len) = viewer.protect_rtcp(buffer, packet.len()) {
            self.send.commit(len, &viewer.address, SlotTag { viewer: position, kind: DatagramKind::Rtcp });
        }
        flush(&mut self.send, fd, &mountpoint.counters);
    }

    /// Sends a sender report for each stream of each viewer whose report is due.
    fn send_reports(&mut self, now: Instant) {
        let fd = self.socket.as_raw_fd();
        let ntp = ntp_time(SystemTime::now());
        for mountpoint in self.mountpoints.iter_mut().flatten() {
            let Mountpoint { viewers, counters, .. } = mountpoint;
            for (position, viewer) in viewers.iter_mut().enumerate() {
                if viewer.is_paused() || now < viewer.next_report_at {
                    continue;
                }
                viewer.next_report_at = now + REPORT_INTERVAL;
                for stream in 0..viewer.streams.len() {
                    let Some(info) = viewer.streams[stream].sender_info(now, ntp) else { continue };
                    if self.send.is_full() {
                        flush(&mut self.send, fd, counters);
                    }
                    let buffer = self.send.next_buffer();
                    let len = write_sender_report(buffer, &info);
                    if let Ok(len) = viewer.protect_rtcp(buffer, len) {
                        self.send.commit(len, &viewer.address, SlotTag { viewer: position, kind: DatagramKind::Rtcp });
                    }
                }
            }
            flush(&mut self.send, fd, counters);
        }
    }
}

/// Rewrites and protects each received packet for each viewer of the
/// mountpoint that takes the stream at `position`, viewer by viewer, and
/// sends them in batches.
fn fan_out(
    mountpoint: &mut Mountpoint,
    position: usize,
    batch: &ReceiveBatch,
    packets: &[Option<ReceivedPacket>],
    send: &mut SendBatch,
    fd: RawFd,
    now: Instant,
) {
    let Mountpoint { viewers, counters, .. } = mountpoint;
    for (viewer_position, viewer) in viewers.iter_mut().enumerate() {
        if viewer.is_paused() || !viewer.streams.iter().any(|stream| stream.source == position) {
            continue;
        }
        for (i, received) in packets.iter().enumerate() {
            let Some(received) = received else { continue };
            if send.is_full() {
                flush(send, fd, counters);
            }
            let (datagram, _) = batch.datagram(i);
            if let Some(len) = viewer.write_rtp(position, datagram, received, now, send.next_buffer()) {
                send.commit(len, &viewer.address, SlotTag { viewer: viewer_position, kind: DatagramKind::Rtp });
            }
        }
    }
    flush(send, fd, counters);
}

fn flush(send: &mut SendBatch, fd: RawFd, counters: &[Arc<ViewerCounters>]) {
    if send.is_empty() {
        return;
    }
    send.flush(fd, |tag, outcome| {
        let counters = &counters[tag.viewer];
        match (outcome, tag.kind) {
            (Outcome::Sent { bytes }, DatagramKind::Rtp) => {
                ViewerCounters::add(&counters.packets, 1);
                ViewerCounters::add(&counters.bytes, bytes as u64);
            }
            (Outcome::Sent { .. }, DatagramKind::Rtcp) => ViewerCounters::add(&counters.rtcp_packets, 1),
            (Outcome::Dropped, _) => ViewerCounters::add(&counters.dropped, 1),
            (Outcome::Failed, _) => {
                ViewerCounters::add(&counters.dropped, 1);
                ViewerCounters::add(&counters.send_errors, 1);
            }
        }
    });
}
