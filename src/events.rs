//! The engine's events: what the data plane tells the control plane, so that
//! Python never polls the engine's counters to decide something.
//!
//! The receiver and the workers [`EventQueue::push`] an [`Event`] when a state
//! changes (a source falls silent, a simulcast move takes effect, a viewer's
//! packets start to be dropped...), never per packet. The queue is a mutex
//! around a deque, preallocated: events are rare, so the lock is never
//! contended on the fast path, and a push allocates only past the first
//! [`PREALLOCATED_EVENTS`]. The first event into an empty queue writes the
//! queue's eventfd, which the asyncio loop watches (`loop.add_reader`);
//! [`EventQueue::drain`] resets it and takes everything. Past [`MAX_EVENTS`]
//! waiting (a control plane that stopped reading) events are dropped and
//! counted in [`EventQueue::dropped`].
//!
//! Events name source streams by their position in the mountpoint, as the
//! threads know them; the engine handle turns positions into the control
//! plane's stream indexes when it drains ([`crate::engine::Engine::drain_events`]).
//!
//! Source silence ([`SilenceWatch`]): each source stream has a threshold in
//! milliseconds, chosen by the control plane (per stream, when the mountpoint
//! is added, and changed later with `set_source_silence`). The receiver reports
//! [`Event::SourceSilent`] once a stream that sent has had no packet for its
//! threshold (it wakes for it without a packet: its epoll wait times out at
//! the earliest deadline), and [`Event::SourceResumed`] at the first packet
//! after that, or the first packet ever. A stream starts silent: nothing is
//! reported until it sends. The engine decides nothing with it: the control
//! plane chooses what a silence means (a simulcast viewer's `fallback`, an RTSP
//! pull's reconnect) with the timestamps the events give it.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sys::{new_eventfd, wake};
use crate::wire::rtcp::RtcpReport;

/// Events waiting past this are dropped (and counted): the control plane stopped reading.
pub const MAX_EVENTS: usize = 65536;
/// Room the queue starts with, so that pushes on the threads do not allocate.
pub const PREALLOCATED_EVENTS: usize = 1024;
/// A source stream's silence threshold when the control plane does not choose one.
pub const DEFAULT_SILENCE_MS: u64 = 1000;
/// A viewer whose packets keep being dropped gets at most one event per this.
pub const OVERFLOW_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Something that happened in the data plane. Source streams are known by
/// their position in their mountpoint (see the module's doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A viewer's stream moved (`set_viewer_stream_source`) from source stream
    /// `from` to `to`: it took `to`'s keyframe, or it moved at once (it had
    /// sent nothing yet, or was paused).
    SubstreamMoved { peer_id: u64, mountpoint_id: u64, from: usize, to: usize },
    /// The source stream sent nothing for its threshold; `silent_ms`: since its last packet.
    SourceSilent { mountpoint_id: u64, position: usize, silent_ms: u64 },
    /// The source stream sends (again, or for the first time).
    SourceResumed { mountpoint_id: u64, position: usize },
    /// The WebRTC socket could not take `dropped` of the viewer's packets
    /// (its send buffer was full). Reported at the first drop, then at most
    /// once per [`OVERFLOW_REPORT_INTERVAL`] with the drops since the last report.
    SendQueueOverflow { peer_id: u64, dropped: u64 },
    /// A viewer's video stream started with the `packets` of the source stream's keyframe cache.
    KeyframeFromCache { peer_id: u64, mountpoint_id: u64, position: usize, packets: usize },
    /// A datagram on the mountpoint's publisher link that is STUN or DTLS: the control plane answers it.
    PublisherDatagram { mountpoint_id: u64, data: Vec<u8> },
    /// A recording of source stream `index` ended on its own: its file could not be written.
    RecordingStopped { mountpoint_id: u64, index: u32, reason: String },
    /// A viewer's bandwidth estimate (bits per second), after a feedback: at
    /// most once a second per viewer, or at once when it fell by 15%.
    /// `link_limited`: over-use or loss has told that the link limits the
    /// rate (before, the estimate only says the link carries at least that).
    /// `probed`: a probe just measured that the link carries it (reported at once).
    BandwidthEstimate { peer_id: u64, mountpoint_id: u64, bitrate: u64, link_limited: bool, probed: bool },
    /// A viewer's ICE-TCP connection is lost: its queue made no progress for the
    /// stall timeout ("stalled"), or the kernel refused a write ("broken").
    TcpConnectionLost { peer_id: u64, reason: &'static str },
    /// What the engine read in a viewer's RTCP on the WebRTC socket (see
    /// [`crate::ingest::socket_reader`]): a packet with report blocks, a
    /// REMB, NACKs, PLIs/FIRs or other packets. Packets of transport feedback
    /// alone make no event; they are counted in the next one's `other`.
    ViewerRtcp { peer_id: u64, report: RtcpReport },
}

/// An [`Event`] as the control plane sees it: source streams known by their
/// index (the one `add_mountpoint` gave), not their position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineEvent {
    /// The viewer's stream that took source stream `index` takes `source_index` now.
    SubstreamMoved {
        peer_id: u64,
        index: u32,
        source_index: u32,
    },
    SourceSilent {
        mountpoint_id: u64,
        index: u32,
        silent_ms: u64,
    },
    SourceResumed {
        mountpoint_id: u64,
        index: u32,
    },
    SendQueueOverflow {
        peer_id: u64,
        dropped: u64,
    },
    KeyframeFromCache {
        peer_id: u64,
        index: u32,
        packets: usize,
    },
    PublisherDatagram {
        mountpoint_id: u64,
        data: Vec<u8>,
    },
    RecordingStopped {
        mountpoint_id: u64,
        index: u32,
        reason: String,
    },
    BandwidthEstimate {
        peer_id: u64,
        bitrate: u64,
        link_limited: bool,
        probed: bool,
    },
    TcpConnectionLost {
        peer_id: u64,
        reason: String,
    },
    ViewerRtcp {
        peer_id: u64,
        report: RtcpReport,
    },
}

impl Event {
    /// The event with stream indexes for positions: `index_of(mountpoint_id,
    /// position)`. None if the mountpoint is gone meanwhile (nobody to tell).
    pub fn resolve(self, index_of: impl Fn(u64, usize) -> Option<u32>) -> Option<EngineEvent> {
        Some(match self {
            Self::SubstreamMoved { peer_id, mountpoint_id, from, to } => EngineEvent::SubstreamMoved {
                peer_id,
                index: index_of(mountpoint_id, from)?,
                source_index: index_of(mountpoint_id, to)?,
            },
            Self::SourceSilent { mountpoint_id, position, silent_ms } => {
                EngineEvent::SourceSilent { mountpoint_id, index: index_of(mountpoint_id, position)?, silent_ms }
            }
            Self::SourceResumed { mountpoint_id, position } => {
                EngineEvent::SourceResumed { mountpoint_id, index: index_of(mountpoint_id, position)? }
            }
            Self::SendQueueOverflow { peer_id, dropped } => EngineEvent::SendQueueOverflow { peer_id, dropped },
            Self::KeyframeFromCache { peer_id, mountpoint_id, position, packets } => {
                EngineEvent::KeyframeFromCache { peer_id, index: index_of(mountpoint_id, position)?, packets }
            }
            Self::PublisherDatagram { mountpoint_id, data } => EngineEvent::PublisherDatagram { mountpoint_id, data },
            Self::RecordingStopped { mountpoint_id, index, reason } => {
                EngineEvent::RecordingStopped { mountpoint_id, index, reason }
            }
            Self::BandwidthEstimate { peer_id, bitrate, link_limited, probed, .. } => {
                EngineEvent::BandwidthEstimate { peer_id, bitrate, link_limited, probed }
            }
            Self::TcpConnectionLost { peer_id, reason } => {
                EngineEvent::TcpConnectionLost { peer_id, reason: reason.to_string() }
            }
            Self::ViewerRtcp { peer_id, report } => EngineEvent::ViewerRtcp { peer_id, report },
        })
    }
}

/// A queue shared by the engine's threads and the control plane, with its
/// eventfd: the first item into an empty queue makes the eventfd readable;
/// past its limit items are dropped and counted.
pub struct SignalledQueue<T> {
    items: Mutex<VecDeque<T>>,
    ready: OwnedFd,
    dropped: AtomicU64,
    limit: usize,
}

/// The engine's events for the control plane.
pub type EventQueue = SignalledQueue<Event>;

impl EventQueue {
    pub fn new() -> io::Result<Self> {
        Self::with_limit(MAX_EVENTS, PREALLOCATED_EVENTS)
    }
}

impl<T> SignalledQueue<T> {
    /// At most `limit` items wait; room for `preallocated` is taken at once.
    pub fn with_limit(limit: usize, preallocated: usize) -> io::Result<Self> {
        Ok(Self {
            items: Mutex::new(VecDeque::with_capacity(preallocated)),
            ready: new_eventfd()?,
            dropped: AtomicU64::new(0),
            limit,
        })
    }

    /// The eventfd: readable while items wait.
    pub fn fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }

    /// Items lost because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues `item`; the first into an empty queue makes the eventfd readable.
    pub fn push(&self, item: T) {
        let was_empty = {
            let mut items = self.items.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if items.len() >= self.limit {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let was_empty = items.is_empty();
            items.push_back(item);
            was_empty
        };
        if was_empty {
            wake(&self.ready);
        }
    }

    /// Every waiting item, oldest first; the eventfd is no longer readable
    /// (until the next push). Resetting the eventfd before taking the items
    /// means an item pushed meanwhile is either taken now or signals again.
    pub fn drain(&self) -> Vec<T> {
        let mut counter = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `counter`; the eventfd is non-blocking.
        unsafe { libc::read(self.ready.as_raw_fd(), counter.as_mut_ptr().cast(), counter.len()) };
        let mut items = self.items.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        items.drain(..).collect()
    }
}

/// What [`SilenceWatch::check`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SilenceCheck {
    /// The stream sends: look again at `deadline_ns` (its last packet + its threshold).
    Sending { deadline_ns: u64 },
    /// It has just been silent for its threshold: `silent_ms` since its last packet (to report).
    FellSilent { silent_ms: u64 },
    /// It was silent already (or never sent): nothing to report or to look for.
    Silent,
}

/// A source stream's silence: its threshold (shared with the engine handle,
/// which changes it) and whether the receiver has reported it silent.
pub struct SilenceWatch {
    pub threshold_ms: Arc<AtomicU64>,
    silent: bool,
}

impl Default for SilenceWatch {
    fn default() -> Self {
        Self { threshold_ms: Arc::new(AtomicU64::new(DEFAULT_SILENCE_MS)), silent: true }
    }
}

impl SilenceWatch {
    pub fn is_silent(&self) -> bool {
        self.silent
    }

    fn threshold_ns(&self) -> u64 {
        self.threshold_ms.load(Ordering::Relaxed).max(1) * 1_000_000
    }

    /// A packet came: true if the stream was silent (the caller reports it resumed).
    pub fn packet(&mut self) -> bool {
        std::mem::replace(&mut self.silent, false)
    }

    /// Checks the stream at `now_ns`, its last packet having come at `last_ns`
    /// (0: never; both on the receiver's monotonic clock).
    pub fn check(&mut self, last_ns: u64, now_ns: u64) -> SilenceCheck {
        if self.silent || last_ns == 0 {
            self.silent = true;
            return SilenceCheck::Silent;
        }
        let deadline_ns = last_ns.saturating_add(self.threshold_ns());
        if now_ns >= deadline_ns {
            self.silent = true;
            return SilenceCheck::FellSilent { silent_ms: (now_ns - last_ns) / 1_000_000 };
        }
        SilenceCheck::Sending { deadline_ns }
    }
}

/// How long until `deadline` (an [`Instant`]) as an epoll timeout in whole
/// milliseconds, rounded up so the wait does not end just before it; -1 for none.
pub fn epoll_timeout(deadline: Option<Instant>, now: Instant) -> libc::c_int {
    match deadline {
        None => -1,
        Some(deadline) => {
            let wait = deadline.saturating_duration_since(now);
            wait.as_micros().div_ceil(1000).min(libc::c_int::MAX as u128) as libc::c_int
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(queue: &EventQueue) -> bool {
        let mut poll_fd = libc::pollfd { fd: queue.fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut poll_fd, 1, 0) == 1 }
    }

    fn resumed(position: usize) -> Event {
        Event::SourceResumed { mountpoint_id: 1, position }
    }

    #[test]
    fn the_first_event_makes_the_fd_readable_and_draining_resets_it() {
        let queue = EventQueue::new().unwrap();
        assert!(!readable(&queue));
        assert!(queue.drain().is_empty());
        queue.push(resumed(0));
        queue.push(resumed(1));
        assert!(readable(&queue));
        assert_eq!(queue.drain(), [resumed(0), resumed(1)]);
        assert!(!readable(&queue));
        queue.push(resumed(2));
        assert!(readable(&queue), "readable again after a drain");
        assert_eq!(queue.drain(), [resumed(2)]);
    }

    #[test]
    fn past_the_bound_events_are_dropped_and_counted() {
        let queue = EventQueue::new().unwrap();
        for position in 0..MAX_EVENTS + 3 {
            queue.push(resumed(position));
        }
        assert_eq!(queue.dropped(), 3);
        let events = queue.drain();
        assert_eq!(events.len(), MAX_EVENTS);
        assert_eq!(events.last(), Some(&resumed(MAX_EVENTS - 1)), "the newest are the ones dropped");
        queue.push(resumed(0));
        assert_eq!(queue.drain().len(), 1, "room again once drained");
    }

    #[test]
    fn events_from_other_threads_all_arrive() {
        let queue = Arc::new(EventQueue::new().unwrap());
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    for dropped in 0..100 {
                        queue.push(Event::SendQueueOverflow { peer_id: thread, dropped });
                    }
                })
            })
            .collect();
        let mut events = Vec::new();
        for thread in threads {
            thread.join().unwrap();
        }
        events.extend(queue.drain());
        assert_eq!(events.len(), 400);
        for thread in 0..4 {
            let mine: Vec<u64> = events
                .iter()
                .filter_map(|event| match event {
                    Event::SendQueueOverflow { peer_id, dropped } if *peer_id == thread => Some(*dropped),
                    _ => None,
                })
                .collect();
            assert_eq!(mine, (0..100).collect::<Vec<_>>(), "in order per thread");
        }
    }

    #[test]
    fn a_stream_is_silent_until_it_sends_then_after_its_threshold() {
        let mut watch = SilenceWatch::default();
        watch.threshold_ms.store(250, Ordering::Relaxed);
        let ms = 1_000_000;
        assert_eq!(watch.check(0, 5 * ms), SilenceCheck::Silent, "never sent: silent, nothing to report");
        assert!(watch.packet(), "the first packet resumes it");
        assert!(!watch.packet(), "later packets do not");
        let look_again = SilenceCheck::Sending { deadline_ns: 350 * ms };
        assert_eq!(watch.check(100 * ms, 300 * ms), look_again, "at the last packet + the threshold");
        assert_eq!(watch.check(100 * ms, 362 * ms), SilenceCheck::FellSilent { silent_ms: 262 });
        assert_eq!(watch.check(100 * ms, 900 * ms), SilenceCheck::Silent, "reported once");
        assert!(watch.packet());
        watch.threshold_ms.store(50, Ordering::Relaxed);
        let fell = SilenceCheck::FellSilent { silent_ms: 60 };
        assert_eq!(watch.check(1000 * ms, 1060 * ms), fell, "a new threshold applies at once");
    }

    #[test]
    fn positions_become_indexes_and_events_of_a_gone_mountpoint_are_dropped() {
        let index_of = |mountpoint_id: u64, position: usize| (mountpoint_id == 1).then(|| [5, 65541][position]);
        let moved = Event::SubstreamMoved { peer_id: 9, mountpoint_id: 1, from: 1, to: 0 };
        assert_eq!(
            moved.resolve(index_of),
            Some(EngineEvent::SubstreamMoved { peer_id: 9, index: 65541, source_index: 5 })
        );
        let silent = Event::SourceSilent { mountpoint_id: 1, position: 1, silent_ms: 300 };
        assert_eq!(
            silent.resolve(index_of),
            Some(EngineEvent::SourceSilent { mountpoint_id: 1, index: 65541, silent_ms: 300 })
        );
        assert_eq!(
            Event::SourceResumed { mountpoint_id: 2, position: 0 }.resolve(index_of),
            None,
            "mountpoint 2 is gone"
        );
        let overflow = Event::SendQueueOverflow { peer_id: 3, dropped: 7 };
        assert_eq!(overflow.resolve(index_of), Some(EngineEvent::SendQueueOverflow { peer_id: 3, dropped: 7 }));
    }

    #[test]
    fn timeouts_round_up_to_the_millisecond() {
        let now = Instant::now();
        assert_eq!(epoll_timeout(None, now), -1);
        assert_eq!(epoll_timeout(Some(now), now), 0);
        assert_eq!(epoll_timeout(Some(now + Duration::from_micros(1500)), now), 2);
        assert_eq!(epoll_timeout(Some(now - Duration::from_secs(1)), now), 0);
    }
}
