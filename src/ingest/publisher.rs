//! The publisher link: one connected UDP socket carrying SRTP for several
//! streams of one mountpoint (a WebRTC publisher, WHIP; or a relay from an
//! origin node), which the receiver reads like a source socket.
//!
//! Per datagram, by its first byte (RFC 7983): 128..=191 is RTP or RTCP (RTCP
//! when the second byte is 192..=223), 0..=3 STUN and 20..=63 DTLS go to the
//! control plane (at most [`CONTROL_PER_SECOND`] a second), anything else is
//! malformed. SRTP is unprotected with the publisher's key (one context for
//! the link, replay state per SSRC), then routed to a stream of the mountpoint
//! ([`Router`]): by an SSRC already routed, else by the rid (and mid) header
//! extensions, else by the mid, else by the payload type. A match teaches the
//! router the SSRC. From there the packet takes the stream's ordinary ingest.
//!
//! What goes back, SRTCP-protected with the engine's key over the same socket
//! ([`crate::ingest::source_rtcp::LinkSender`]): keyframe requests and REMB
//! (the stream's [`crate::ingest::source_rtcp::SourceRtcp`]), Generic NACKs
//! for the gaps in video streams ([`GapTracker`]) and a receiver report per
//! SSRC once a second ([`Reception`]). Nothing here allocates per packet.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::ingest::source_rtcp::{LinkSender, MAX_LINK_RTCP_LEN, REQUEST_SSRC};
use crate::wire::rtp::{header_extension, RtpHeader};
use crate::wire::srtp::{SrtcpInbound, SrtpInbound};

/// Control datagrams (STUN, DTLS) handed to the control plane per second, per link; the rest are dropped.
pub const CONTROL_PER_SECOND: u32 = 64;
/// SSRCs a link learns at most (routes taught by a packet); past this a packet is still routed, not remembered.
pub const MAX_SSRCS: usize = 32;
/// A mid or rid value is at most this long (the one-byte header form allows 16 bytes).
pub const MAX_ID_LEN: usize = 255;
/// A gap of at most this many packets is NACKed; a larger one is a jump (the tracker starts again).
pub const MAX_NACK_GAP: u16 = 512;
/// A missing packet is asked for again this often while missing...
pub const NACK_RETRY_NS: u64 = 40_000_000;
/// ... at most this many times after the first ...
pub const NACK_RETRIES: u8 = 3;
/// ... and forgotten this long after it was found missing.
pub const NACK_FORGET_NS: u64 = 1_000_000_000;
/// A jump this large in sequence numbers (either way) is a source restart.
const RESTART_JUMP: i16 = 3000;
/// Missing packets a stream's tracker remembers at most (the oldest are forgotten first).
const MAX_MISSING: usize = 1024;
/// One receiver report per SSRC this often.
pub const REPORT_INTERVAL_NS: u64 = 1_000_000_000;

/// What a datagram on the link is, by its first two bytes (RFC 7983).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkDatagram {
    Rtp,
    Rtcp,
    /// STUN or DTLS: the control plane answers it.
    Control,
    Malformed,
}

pub fn classify(datagram: &[u8]) -> LinkDatagram {
    match datagram {
        [0..=3, ..] | [20..=63, ..] => LinkDatagram::Control,
        [128..=191, 192..=223, ..] => LinkDatagram::Rtcp,
        [128..=191, _, ..] => LinkDatagram::Rtp,
        _ => LinkDatagram::Malformed,
    }
}

/// What the link tells Python (PublisherStats); counters only grow.
#[derive(Default)]
pub struct PublisherCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub rtcp_packets: AtomicU64,
    pub undecryptable: AtomicU64,
    pub unroutable: AtomicU64,
    pub malformed: AtomicU64,
    pub control_datagrams: AtomicU64,
    pub lost: AtomicU64,
    pub nacks_sent: AtomicU64,
    pub recovered: AtomicU64,
    pub receiver_reports_sent: AtomicU64,
    /// The SSRCs routed so far, in the order learned.
    pub ssrcs: Mutex<Vec<u32>>,
}

fn count(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Which packets feed the stream at `position` of the mountpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    pub position: usize,
    pub ssrc: Option<u32>,
    pub mid: Option<Vec<u8>>,
    pub rid: Option<Vec<u8>>,
    pub payload_types: Vec<u8>,
}

/// Routes a link's RTP to the mountpoint's streams (see the module's doc).
pub struct Router {
    routes: Vec<Route>,
    mid_extension: Option<u8>,
    rid_extension: Option<u8>,
    /// SSRC -> stream position (at most [`MAX_SSRCS`]; room reserved), and
    /// whether a packet of it came (a configured SSRC is known before).
    learned: Vec<(u32, usize, bool)>,
}

impl Router {
    pub fn new(routes: Vec<Route>, mid_extension: Option<u8>, rid_extension: Option<u8>) -> Self {
        let mut learned = Vec::with_capacity(MAX_SSRCS);
        for route in &routes {
            if let Some(ssrc) = route.ssrc {
                if learned.len() < MAX_SSRCS && !learned.iter().any(|&(known, _, _)| known == ssrc) {
                    learned.push((ssrc, route.position, false));
                }
            }
        }
        Self { routes, mid_extension, rid_extension, learned }
    }

    /// The stream an SSRC was routed to.
    pub fn position_of(&self, ssrc: u32) -> Option<usize> {
        self.learned.iter().find(|&&(known, _, _)| known == ssrc).map(|&(_, position, _)| position)
    }

    /// The SSRCs known (configured or routed) and their streams.
    pub fn ssrcs(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        self.learned.iter().map(|&(ssrc, position, _)| (ssrc, position))
    }

    /// The stream `packet` goes to, and whether it is the first packet of its SSRC routed.
    pub fn route(&mut self, packet: &[u8], header: &RtpHeader) -> Option<(usize, bool)> {
        if let Some(known) = self.learned.iter_mut().find(|known| known.0 == header.ssrc) {
            let first = !std::mem::replace(&mut known.2, true);
            return Some((known.1, first));
        }
        let extension = |id: Option<u8>| id.and_then(|id| header_extension(packet, header, id));
        let mid = extension(self.mid_extension).filter(|value| !value.is_empty());
        let rid = extension(self.rid_extension).filter(|value| !value.is_empty());
        let same = |wanted: &Option<Vec<u8>>, got: Option<&[u8]>| wanted.as_deref() == got;
        let by_rid = rid.and_then(|rid| {
            self.routes
                .iter()
                .find(|route| same(&route.rid, Some(rid)) && (route.mid.is_none() || same(&route.mid, mid)))
        });
        let by_mid = || mid.and_then(|mid| self.routes.iter().find(|r| r.rid.is_none() && same(&r.mid, Some(mid))));
        let by_payload_type =
            || self.routes.iter().find(|r| r.rid.is_none() && r.payload_types.contains(&header.payload_type));
        let position = by_rid.or_else(by_mid).or_else(by_payload_type)?.position;
        let learned = self.learned.len() < MAX_SSRCS;
        if learned {
            self.learned.push((header.ssrc, position, true));
        }
        Some((position, true))
    }
}

/// At most [`CONTROL_PER_SECOND`] control datagrams in each second (from the first of it).
#[derive(Default)]
struct ControlLimit {
    window_start_ns: u64,
    in_window: u32,
}

impl ControlLimit {
    fn allow(&mut self, now_ns: u64) -> bool {
        if self.in_window == 0 || now_ns.saturating_sub(self.window_start_ns) >= 1_000_000_000 {
            self.window_start_ns = now_ns;
            self.in_window = 0;
        }
        self.in_window += 1;
        self.in_window <= CONTROL_PER_SECOND
    }
}

/// A packet found missing: when, and how often it was asked for.
#[derive(Clone, Copy, Debug)]
struct Missing {
    sequence: u16,
    since_ns: u64,
    asked_ns: u64,
    asked: u8,
}

/// What became of a packet in a [`GapTracker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The next packet, or one after a gap of `missing` packets (found missing now).
    Ahead { missing: u16 },
    /// A packet found missing before: a retransmission filled the gap.
    Recovered,
    /// Late but not missing (a duplicate, or one forgotten), or a jump: nothing to do.
    Other,
}

/// The gaps in one video stream's sequence numbers, for Generic NACKs: a gap
/// of at most [`MAX_NACK_GAP`] is asked for at once, again every
/// [`NACK_RETRY_NS`] up to [`NACK_RETRIES`] times while missing, and
/// forgotten after [`NACK_FORGET_NS`]. Sans-IO; nothing allocated after `new`.
pub struct GapTracker {
    /// The SSRC and the highest sequence number seen of it.
    highest: Option<(u32, u16)>,
    /// Oldest first (ascending sequence numbers, modulo wrap).
    missing: VecDeque<Missing>,
}

impl Default for GapTracker {
    fn default() -> Self {
        Self { highest: None, missing: VecDeque::with_capacity(MAX_MISSING) }
    }
}

impl GapTracker {
    /// A packet `sequence` of `ssrc` came at `now_ns`; a new SSRC starts the tracker again.
    pub fn packet(&mut self, ssrc: u32, sequence: u16, now_ns: u64) -> Arrival {
        let highest = match self.highest {
            Some((known, highest)) if known == ssrc => highest,
            _ => {
                self.highest = Some((ssrc, sequence));
                self.missing.clear();
                return Arrival::Ahead { missing: 0 };
            }
        };
        let ahead = sequence.wrapping_sub(highest) as i16;
        if ahead < -RESTART_JUMP {
            self.highest = Some((ssrc, sequence));
            self.missing.clear();
            return Arrival::Other;
        }
        if ahead > 0 {
            self.highest = Some((ssrc, sequence));
            let missing = ahead as u16 - 1;
            if missing > MAX_NACK_GAP {
                self.missing.clear();
                return Arrival::Other;
            }
            for step in 1..=missing {
                if self.missing.len() == MAX_MISSING {
                    self.missing.pop_front();
                }
                let sequence = highest.wrapping_add(step);
                self.missing.push_back(Missing { sequence, since_ns: now_ns, asked_ns: now_ns, asked: 0 });
            }
            return Arrival::Ahead { missing };
        }
        match self.missing.iter().position(|missing| missing.sequence == sequence) {
            Some(found) => {
                self.missing.remove(found);
                Arrival::Recovered
            }
            None => Arrival::Other,
        }
    }

    /// Forgets what is missing for too long, then calls `ask(sequence)` for
    /// each packet due to be asked for (at once, or again), oldest first.
    pub fn due(&mut self, now_ns: u64, mut ask: impl FnMut(u16)) {
        while self.missing.front().is_some_and(|missing| now_ns.saturating_sub(missing.since_ns) >= NACK_FORGET_NS) {
            self.missing.pop_front();
        }
        for missing in self.missing.iter_mut() {
            let first = missing.asked == 0;
            let again = missing.asked <= NACK_RETRIES && now_ns.saturating_sub(missing.asked_ns) >= NACK_RETRY_NS;
            if first || again {
                missing.asked += 1;
                missing.asked_ns = now_ns;
                ask(missing.sequence);
            }
        }
    }

    /// When [`GapTracker::due`] has something to do next, if ever.
    pub fn next_due_ns(&self) -> Option<u64> {
        self.missing
            .iter()
            .map(|missing| {
                let forget = missing.since_ns + NACK_FORGET_NS;
                if missing.asked == 0 {
                    missing.since_ns
                } else if missing.asked <= NACK_RETRIES {
                    (missing.asked_ns + NACK_RETRY_NS).min(forget)
                } else {
                    forget
                }
            })
            .min()
    }
}

/// Writes an empty receiver report then Generic NACKs (RFC 4585 section
/// 6.2.1) about `media_ssrc` for `sequences` (ascending, modulo wrap) into
/// `out`, as many as fit; returns the length and how many sequence numbers it carries.
pub fn write_nack(out: &mut [u8], media_ssrc: u32, sequences: &[u16]) -> (usize, usize) {
    out[..8].copy_from_slice(&[0x80, 201, 0, 1, 0, 0, 0, 0]);
    out[4..8].copy_from_slice(&REQUEST_SSRC.to_be_bytes());
    let start = 8;
    out[start + 4..start + 8].copy_from_slice(&REQUEST_SSRC.to_be_bytes());
    out[start + 8..start + 12].copy_from_slice(&media_ssrc.to_be_bytes());
    let mut len = start + 12;
    let mut carried = 0;
    let mut at = 0;
    while at < sequences.len() && len + 4 <= out.len() {
        let first = sequences[at];
        let mut bitmask = 0u16;
        at += 1;
        while let Some(&next) = sequences.get(at) {
            let distance = next.wrapping_sub(first);
            if !(1..=16).contains(&distance) {
                break;
            }
            bitmask |= 1 << (distance - 1);
            at += 1;
        }
        out[len..len + 2].copy_from_slice(&first.to_be_bytes());
        out[len + 2..len + 4].copy_from_slice(&bitmask.to_be_bytes());
        len += 4;
        carried = at;
    }
    let words = ((len - start) / 4 - 1) as u16;
    out[start..start + 4].copy_from_slice(&[0x81, 205, (words >> 8) as u8, words as u8]);
    (len, carried)
}

/// What a receiver report block says about one SSRC (RFC 3550 section 6.4 and appendix A.1, A.8).
pub struct Reception {
    pub ssrc: u32,
    clock_rate: u64,
    base: u32,
    cycles: u32,
    max_sequence: u16,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// The interarrival jitter times 16, in RTP units.
    jitter16: u32,
    last_transit: Option<u32>,
    /// The middle 32 bits of the latest sender report's NTP time, and when it came.
    last_sender_report: Option<(u32, u64)>,
}

impl Reception {
    pub fn new(ssrc: u32, clock_rate: u32, sequence: u16) -> Self {
        Self {
            ssrc,
            clock_rate: u64::from(clock_rate.max(1)),
            base: u32::from(sequence),
            cycles: 0,
            max_sequence: sequence,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter16: 0,
            last_transit: None,
            last_sender_report: None,
        }
    }

    /// A packet of the SSRC came at `now_ns`.
    pub fn packet(&mut self, sequence: u16, timestamp: u32, now_ns: u64) {
        let ahead = sequence.wrapping_sub(self.max_sequence) as i16;
        if !(-RESTART_JUMP..=RESTART_JUMP).contains(&ahead) {
            let last_sender_report = self.last_sender_report;
            *self = Self::new(self.ssrc, self.clock_rate as u32, sequence);
            self.last_sender_report = last_sender_report;
        }
        self.received += 1;
        let ahead = sequence.wrapping_sub(self.max_sequence) as i16;
        if ahead <= 0 {
            return; // late: no step in the highest sequence number nor the jitter
        }
        if sequence < self.max_sequence {
            self.cycles = self.cycles.wrapping_add(1 << 16);
        }
        self.max_sequence = sequence;
        let arrival = (u128::from(now_ns) * u128::from(self.clock_rate) / 1_000_000_000) as u32;
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(last) = self.last_transit {
            let difference = (transit.wrapping_sub(last) as i32).unsigned_abs();
            self.jitter16 = self.jitter16.wrapping_add(difference).wrapping_sub((self.jitter16 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    pub fn sender_report(&mut self, ntp_time: u64, now_ns: u64) {
        self.last_sender_report = Some(((ntp_time >> 16) as u32, now_ns));
    }

    fn extended_highest(&self) -> u32 {
        self.cycles | u32::from(self.max_sequence)
    }

    /// Writes a receiver report with one block about this SSRC into `out[..32]`; the interval's counts start again.
    pub fn write_receiver_report(&mut self, out: &mut [u8], now_ns: u64) -> usize {
        let expected = u64::from(self.extended_highest().wrapping_sub(self.base)) + 1;
        let lost = (expected as i64 - self.received as i64).clamp(-0x80_0000, 0x7f_ffff);
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction = if expected_interval == 0 { 0 } else { ((lost_interval << 8) / expected_interval).min(255) };
        let (last_sr, delay) = match self.last_sender_report {
            Some((middle, at_ns)) => {
                (middle, (u128::from(now_ns.saturating_sub(at_ns)) * 65536 / 1_000_000_000) as u32)
            }
            None => (0, 0),
        };
        out[..4].copy_from_slice(&[0x81, 201, 0, 7]);
        out[4..8].copy_from_slice(&REQUEST_SSRC.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        out[12..16].copy_from_slice(&((fraction as u32) << 24 | (lost as u32 & 0xff_ffff)).to_be_bytes());
        out[16..20].copy_from_slice(&self.extended_highest().to_be_bytes());
        out[20..24].copy_from_slice(&(self.jitter16 >> 4).to_be_bytes());
        out[24..28].copy_from_slice(&last_sr.to_be_bytes());
        out[28..32].copy_from_slice(&delay.to_be_bytes());
        32
    }
}

/// What the link knows of one of the mountpoint's streams.
#[derive(Clone, Copy, Debug)]
pub struct LinkStream {
    /// Video: its gaps are NACKed.
    pub video: bool,
    pub clock_rate: u32,
}

/// One attached publisher: its keys, its routes, what it sent.
pub struct PublisherLink {
    pub sender: Arc<LinkSender>,
    srtp: SrtpInbound,
    srtcp: SrtcpInbound,
    pub router: Router,
    pub counters: Arc<PublisherCounters>,
    control: ControlLimit,
    streams: Vec<LinkStream>,
    /// Per stream position: the gaps of a video stream.
    trackers: Vec<Option<GapTracker>>,
    /// Per SSRC routed (at most [`MAX_SSRCS`]; room reserved).
    receptions: Vec<Reception>,
    /// When the next receiver reports go (None before the first packet).
    next_report_ns: Option<u64>,
    /// Where NACKed sequence numbers are gathered before they are written.
    asked: Vec<u16>,
}

impl PublisherLink {
    pub fn new(
        sender: Arc<LinkSender>,
        srtp: SrtpInbound,
        srtcp: SrtcpInbound,
        router: Router,
        counters: Arc<PublisherCounters>,
        streams: Vec<LinkStream>,
    ) -> Self {
        counters.ssrcs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).reserve(MAX_SSRCS + 1);
        let trackers = streams.iter().map(|stream| stream.video.then(GapTracker::default)).collect();
        Self {
            sender,
            srtp,
            srtcp,
            router,
            counters,
            control: ControlLimit::default(),
            streams,
            trackers,
            receptions: Vec::with_capacity(MAX_SSRCS),
            next_report_ns: None,
            asked: Vec::with_capacity(MAX_MISSING),
        }
    }

    /// Unprotects the SRTP in `buffer[..len]` in place and routes it: the
    /// stream's position and the RTP length, or None (dropped and counted).
    /// A video stream's gaps are NACKed at once.
    pub fn receive_rtp(&mut self, buffer: &mut [u8], len: usize, now_ns: u64) -> Option<(usize, usize)> {
        let Ok(len) = self.srtp.unprotect(buffer, len) else {
            count(&self.counters.undecryptable, 1);
            return None;
        };
        let Some(header) = RtpHeader::parse(&buffer[..len]) else {
            count(&self.counters.malformed, 1);
            return None;
        };
        let Some((position, first)) = self.router.route(&buffer[..len], &header) else {
            count(&self.counters.unroutable, 1);
            return None;
        };
        if first {
            let mut ssrcs = self.counters.ssrcs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if ssrcs.len() < MAX_SSRCS && !ssrcs.contains(&header.ssrc) {
                ssrcs.push(header.ssrc);
            }
        }
        count(&self.counters.packets, 1);
        count(&self.counters.bytes, len as u64);
        self.note_reception(position, &header, now_ns);
        if let Some(tracker) = &mut self.trackers[position] {
            match tracker.packet(header.ssrc, header.sequence, now_ns) {
                Arrival::Ahead { missing } if missing > 0 => {
                    count(&self.counters.lost, u64::from(missing));
                    self.send_nacks(position, now_ns);
                }
                Arrival::Recovered => count(&self.counters.recovered, 1),
                Arrival::Ahead { .. } | Arrival::Other => {}
            }
        }
        Some((position, len))
    }

    fn note_reception(&mut self, position: usize, header: &RtpHeader, now_ns: u64) {
        let found = self.receptions.iter().position(|reception| reception.ssrc == header.ssrc);
        let reception = match found {
            Some(found) => &mut self.receptions[found],
            None if self.receptions.len() < MAX_SSRCS => {
                let clock_rate = self.streams[position].clock_rate;
                self.receptions.push(Reception::new(header.ssrc, clock_rate, header.sequence));
                self.next_report_ns.get_or_insert(now_ns + REPORT_INTERVAL_NS);
                self.receptions.last_mut().expect("just pushed")
            }
            None => return,
        };
        reception.packet(header.sequence, header.timestamp, now_ns);
    }

    /// Sends what the stream at `position` has due to be NACKed.
    fn send_nacks(&mut self, position: usize, now_ns: u64) {
        let Some(tracker) = &mut self.trackers[position] else { return };
        let Some((media_ssrc, _)) = tracker.highest else { return };
        self.asked.clear();
        let asked = &mut self.asked;
        tracker.due(now_ns, |sequence| asked.push(sequence));
        let mut packet = [0u8; MAX_LINK_RTCP_LEN];
        let mut at = 0;
        while at < self.asked.len() {
            let (len, carried) = write_nack(&mut packet, media_ssrc, &self.asked[at..]);
            at += carried.max(1);
            if self.sender.send_rtcp(&packet[..len]) {
                count(&self.counters.nacks_sent, carried as u64);
            }
        }
    }

    /// A sender report about `ssrc` came (its LSR goes into the next receiver reports).
    pub fn sender_report(&mut self, ssrc: u32, ntp_time: u64, now_ns: u64) {
        if let Some(reception) = self.receptions.iter_mut().find(|reception| reception.ssrc == ssrc) {
            reception.sender_report(ntp_time, now_ns);
        }
    }

    /// Does what is due at `now_ns` (NACKs asked again, receiver reports);
    /// returns when something is due next, if ever.
    pub fn poll(&mut self, now_ns: u64) -> Option<u64> {
        for position in 0..self.trackers.len() {
            if self.trackers[position].as_ref().and_then(GapTracker::next_due_ns).is_some_and(|due| due <= now_ns) {
                self.send_nacks(position, now_ns);
            }
        }
        if self.next_report_ns.is_some_and(|due| due <= now_ns) {
            let mut packet = [0u8; 32];
            for reception in &mut self.receptions {
                let len = reception.write_receiver_report(&mut packet, now_ns);
                if self.sender.send_rtcp(&packet[..len]) {
                    count(&self.counters.receiver_reports_sent, 1);
                }
            }
            self.next_report_ns = Some(now_ns + REPORT_INTERVAL_NS);
        }
        self.next_due_ns()
    }

    /// When [`PublisherLink::poll`] has something to do next, if ever.
    pub fn next_due_ns(&self) -> Option<u64> {
        let nacks = self.trackers.iter().flatten().filter_map(GapTracker::next_due_ns).min();
        match (nacks, self.next_report_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Unprotects SRTCP from the publisher: the plain compound packet, or
    /// None (dropped and counted). RTCP comes a few times a second: the copy
    /// it is unprotected into is the one allocation of the link.
    pub fn receive_rtcp(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        match self.srtcp.unprotect(packet) {
            Ok(plain) => {
                count(&self.counters.rtcp_packets, 1);
                Some(plain)
            }
            Err(_) => {
                count(&self.counters.undecryptable, 1);
                None
            }
        }
    }

    /// A STUN or DTLS datagram came: whether it goes to the control plane
    /// (counted) or is dropped past the rate limit (counted malformed).
    pub fn control_allowed(&mut self, now_ns: u64) -> bool {
        let allowed = self.control.allow(now_ns);
        count(if allowed { &self.counters.control_datagrams } else { &self.counters.malformed }, 1);
        allowed
    }

    /// A datagram that is neither RTP, RTCP, STUN nor DTLS (or was cut to fit).
    pub fn count_malformed(&self) {
        count(&self.counters.malformed, 1);
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        self.sender.fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(payload_type: u8, ssrc: u32, extensions: &[u8]) -> Vec<u8> {
        let first = if extensions.is_empty() { 0x80 } else { 0x90 };
        let mut packet = vec![first, payload_type, 0, 1, 0, 0, 0, 0];
        packet.extend_from_slice(&ssrc.to_be_bytes());
        if !extensions.is_empty() {
            let padded = extensions.len().div_ceil(4) * 4;
            packet.extend_from_slice(&[0xbe, 0xde, 0, (padded / 4) as u8]);
            packet.extend_from_slice(extensions);
            packet.resize(packet.len() + padded - extensions.len(), 0);
        }
        packet.extend_from_slice(b"payload");
        packet
    }

    fn route_of(router: &mut Router, packet: &[u8]) -> Option<usize> {
        router.route(packet, &RtpHeader::parse(packet).unwrap()).map(|(position, _)| position)
    }

    #[test]
    fn datagrams_are_told_apart_by_their_first_bytes() {
        assert_eq!(classify(&[0, 1, 0, 0]), LinkDatagram::Control, "STUN");
        assert_eq!(classify(&[22, 254, 253]), LinkDatagram::Control, "DTLS");
        assert_eq!(classify(&[0x80, 96, 0]), LinkDatagram::Rtp);
        assert_eq!(classify(&[0x80, 200, 0]), LinkDatagram::Rtcp);
        assert_eq!(classify(&[0x81, 205, 0]), LinkDatagram::Rtcp);
        assert_eq!(classify(&[0x80]), LinkDatagram::Malformed, "too short for RTP");
        assert_eq!(classify(&[]), LinkDatagram::Malformed);
        assert_eq!(classify(&[64, 0, 0]), LinkDatagram::Malformed, "TURN channel data is not expected");
        assert_eq!(classify(&[200, 0, 0]), LinkDatagram::Malformed);
    }

    #[test]
    fn routes_by_ssrc_then_rid_then_mid_then_payload_type_and_learns() {
        let routes = vec![
            Route { position: 0, mid: Some(b"0".to_vec()), payload_types: vec![111], ..Route::default() },
            Route { position: 1, mid: Some(b"1".to_vec()), rid: Some(b"h".to_vec()), ..Route::default() },
            Route { position: 2, mid: Some(b"1".to_vec()), rid: Some(b"l".to_vec()), ..Route::default() },
            Route { position: 3, ssrc: Some(77), ..Route::default() },
            Route { position: 4, payload_types: vec![100], ..Route::default() },
        ];
        let mut router = Router::new(routes, Some(1), Some(2));
        assert_eq!(route_of(&mut router, &rtp(96, 77, &[])), Some(3), "a configured SSRC");
        assert_eq!(route_of(&mut router, &rtp(96, 10, &[0x10, b'1', 0x20, b'l'])), Some(2), "mid + rid");
        assert_eq!(route_of(&mut router, &rtp(96, 11, &[0x10, b'1', 0x20, b'h'])), Some(1));
        assert_eq!(route_of(&mut router, &rtp(96, 12, &[0x10, b'0'])), Some(0), "mid alone");
        assert_eq!(route_of(&mut router, &rtp(111, 13, &[])), Some(0), "payload type");
        assert_eq!(route_of(&mut router, &rtp(100, 14, &[])), Some(4));
        assert_eq!(route_of(&mut router, &rtp(96, 15, &[0x10, b'1'])), None, "mid 1 is simulcast: a rid decides");
        assert_eq!(route_of(&mut router, &rtp(96, 16, &[0x10, b'9'])), None);
        assert_eq!(route_of(&mut router, &rtp(96, 16, &[0x50, b'0'])), None, "not the mid's id");
        assert_eq!(route_of(&mut router, &rtp(96, 10, &[])), Some(2), "learned: no extension needed any more");
        assert_eq!(route_of(&mut router, &rtp(111, 11, &[])), Some(1), "the SSRC decides before the payload type");
        assert_eq!(router.position_of(13), Some(0));
        assert_eq!(router.ssrcs().map(|(ssrc, _)| ssrc).collect::<Vec<_>>(), [77, 10, 11, 12, 13, 14]);
    }

    #[test]
    fn learning_is_bounded() {
        let mut router =
            Router::new(vec![Route { position: 0, payload_types: vec![96], ..Route::default() }], None, None);
        for ssrc in 0..100 {
            assert_eq!(route_of(&mut router, &rtp(96, ssrc, &[])), Some(0));
        }
        assert_eq!(router.ssrcs().count(), MAX_SSRCS);
    }

    #[test]
    fn control_datagrams_are_limited_per_second() {
        let mut limit = ControlLimit::default();
        let second = 1_000_000_000;
        let allowed = (0..100).filter(|i| limit.allow(5 * second + i * 1000)).count();
        assert_eq!(allowed, CONTROL_PER_SECOND as usize);
        assert!(limit.allow(6 * second + 1), "a new second");
    }
    const MS: u64 = 1_000_000;

    fn word(packet: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(packet[at..at + 4].try_into().unwrap())
    }

    fn asked(tracker: &mut GapTracker, now_ns: u64) -> Vec<u16> {
        let mut asked = Vec::new();
        tracker.due(now_ns, |sequence| asked.push(sequence));
        asked
    }

    #[test]
    fn a_gap_is_nacked_at_once_then_every_40_ms_three_times_then_forgotten() {
        let mut tracker = GapTracker::default();
        assert_eq!(tracker.packet(9, 65534, 0), Arrival::Ahead { missing: 0 });
        assert_eq!(tracker.packet(9, 65535, 0), Arrival::Ahead { missing: 0 });
        assert_eq!(tracker.packet(9, 2, 10 * MS), Arrival::Ahead { missing: 2 }, "0 and 1 are missing, across the wrap");
        assert_eq!(tracker.next_due_ns(), Some(10 * MS), "asked for at once");
        assert_eq!(asked(&mut tracker, 10 * MS), [0, 1]);
        assert_eq!(tracker.next_due_ns(), Some(50 * MS));
        assert_eq!(asked(&mut tracker, 49 * MS), [] as [u16; 0]);
        assert_eq!(tracker.packet(9, 1, 45 * MS), Arrival::Recovered);
        assert_eq!(tracker.packet(9, 1, 46 * MS), Arrival::Other, "a duplicate");
        assert_eq!(asked(&mut tracker, 50 * MS), [0]);
        assert_eq!(asked(&mut tracker, 90 * MS), [0]);
        assert_eq!(asked(&mut tracker, 130 * MS), [0]);
        assert_eq!(tracker.next_due_ns(), Some(1010 * MS), "three times again: now only forgotten");
        assert_eq!(asked(&mut tracker, 500 * MS), [] as [u16; 0]);
        assert_eq!(asked(&mut tracker, 1010 * MS), [] as [u16; 0]);
        assert_eq!(tracker.next_due_ns(), None);
        assert_eq!(tracker.packet(9, 0, 1020 * MS), Arrival::Other, "too late to count");
    }

    #[test]
    fn large_gaps_and_new_ssrcs_start_the_tracker_again() {
        let mut tracker = GapTracker::default();
        tracker.packet(9, 100, 0);
        assert_eq!(tracker.packet(9, 100 + MAX_NACK_GAP + 2, 0), Arrival::Other, "a jump of 513 missing");
        assert_eq!(tracker.next_due_ns(), None);
        assert_eq!(tracker.packet(9, 100 + MAX_NACK_GAP + 4, 0), Arrival::Ahead { missing: 1 });
        assert_eq!(tracker.packet(10, 7, 0), Arrival::Ahead { missing: 0 }, "another SSRC");
        assert_eq!(tracker.next_due_ns(), None);
        assert_eq!(tracker.packet(10, 3, 0), Arrival::Other, "late, never missing");
        assert_eq!(tracker.packet(10, 7u16.wrapping_sub(5000), 0), Arrival::Other, "a restart backwards");
        assert_eq!(tracker.packet(10, 7u16.wrapping_sub(4998), 0), Arrival::Ahead { missing: 1 });
    }

    #[test]
    fn nacks_pack_sequence_numbers_into_pid_and_bitmask() {
        let mut out = [0u8; MAX_LINK_RTCP_LEN];
        let sequences = [65535, 0, 2, 16, 17, 40];
        let (len, carried) = write_nack(&mut out, 0xabcd, &sequences);
        assert_eq!(carried, 6);
        let mut lost = Vec::new();
        crate::wire::rtcp::for_each_nack(&out[..len], |ssrc, sequence| lost.push((ssrc, sequence)));
        assert_eq!(lost, sequences.iter().map(|&sequence| (0xabcd, sequence)).collect::<Vec<_>>());
        assert!(crate::wire::rtcp::is_rtcp(&out[..len]));
        assert_eq!(len, 8 + 12 + 3 * 4, "65535 carries 0, 2 and 16; then 17; then 40");
        let many: Vec<u16> = (0..2000).map(|i| i * 20).collect();
        let (len, carried) = write_nack(&mut out, 1, &many);
        assert_eq!((len, carried), (MAX_LINK_RTCP_LEN, (MAX_LINK_RTCP_LEN - 20) / 4), "as many as fit");
    }

    #[test]
    fn receiver_reports_count_loss_jitter_and_the_last_sender_report() {
        let mut reception = Reception::new(7, 90000, 65534);
        let mut now = 0;
        for (sequence, timestamp) in [(65534u16, 0u32), (65535, 3000), (1, 6000), (2, 9000)] {
            reception.packet(sequence, timestamp, now);
            now += 33_333_333;
        }
        reception.sender_report(0x0001_2345_6789_abcd, now);
        let mut out = [0u8; 32];
        assert_eq!(reception.write_receiver_report(&mut out, now + 500 * MS), 32);
        assert!(crate::wire::rtcp::is_rtcp(&out));
        assert_eq!(word(&out, 8), 7);
        assert_eq!(word(&out, 12) >> 24, 256 / 5, "one lost of five");
        assert_eq!(word(&out, 12) & 0xff_ffff, 1);
        assert_eq!(word(&out, 16), 0x1_0002, "one cycle, then 2");
        assert!(word(&out, 20) < 10, "packets spaced as their timestamps: almost no jitter, got {}", word(&out, 20));
        assert_eq!(word(&out, 24), 0x2345_6789);
        assert_eq!(word(&out, 28), 32768, "half a second in 1/65536 s");
        reception.packet(0, 6000, now); // the lost one, retransmitted
        reception.packet(3, 12000, now);
        reception.write_receiver_report(&mut out, now);
        assert_eq!((word(&out, 12) >> 24, word(&out, 12) & 0xff_ffff), (0, 0), "nothing lost any more");
    }
}
