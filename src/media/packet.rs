//! Source packets as the workers share them: each received RTP packet is
//! copied once into a reference-counted [`Packet`], which every worker with
//! viewers of its mountpoint holds while it fans it out and keeps a while in
//! its [`History`] for retransmission. A [`PacketPool`] per source stream
//! recycles packets nobody holds any more, so the steady state allocates none.
//! A [`GopCache`] per video stream holds the packets since its latest
//! keyframe, so that a viewer can start from it at once.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::wire::rtp::RtpHeader;

/// Room for the largest RTP packet the engine forwards plus its SRTP trailer.
pub const SLOT_SIZE: usize = 2048;
/// The largest RTP packet forwarded: the rest of a send slot is for the SRTP trailer.
pub const MAX_RTP_LEN: usize = SLOT_SIZE - 64;

/// A source packet that passed validation, with what every viewer needs of it.
#[derive(Clone, Copy, Debug)]
pub struct ReceivedPacket {
    pub header: RtpHeader,
    pub keyframe_start: bool,
    /// Changes when the source restarts (new SSRC or a jump in sequence numbers).
    pub epoch: u32,
    /// When the receiver read it ([`crate::sys::monotonic_ns`]); 0: unknown, never late.
    pub arrival_ns: u64,
    /// Part of a frame no other frame refers to (VP8 N bit or a temporal layer
    /// above the base, H.264 nal_ref_idc 0): the first to go when a worker is late.
    pub droppable: bool,
}

/// A source RTP packet and what the receiver found in it.
pub struct Packet {
    data: [u8; MAX_RTP_LEN],
    len: usize,
    pub meta: ReceivedPacket,
}

impl Packet {
    pub(crate) fn empty() -> Self {
        let header = RtpHeader {
            marker: false,
            payload_type: 0,
            sequence: 0,
            timestamp: 0,
            ssrc: 0,
            csrc_end: 0,
            payload_start: 0,
            payload_end: 0,
        };
        Self {
            data: [0; MAX_RTP_LEN],
            len: 0,
            meta: ReceivedPacket { header, keyframe_start: false, epoch: 0, arrival_ns: 0, droppable: false },
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }

    /// Fills the packet; `datagram` is at most [`MAX_RTP_LEN`] bytes (the receiver checks).
    pub fn fill(&mut self, datagram: &[u8], meta: ReceivedPacket) {
        self.data[..datagram.len()].copy_from_slice(datagram);
        self.len = datagram.len();
        self.meta = meta;
    }
}

/// A source stream's packets, oldest first, for reuse once no worker holds them.
pub struct PacketPool {
    packets: VecDeque<Arc<Packet>>,
    limit: usize,
    allocated: u64,
}

impl PacketPool {
    /// A pool that keeps at most `limit` packets (past that, held packets are let go).
    pub fn new(limit: usize) -> Self {
        Self { packets: VecDeque::with_capacity(limit), limit, allocated: 0 }
    }

    /// A packet nobody else holds: the oldest one if it is free, else a new one.
    pub fn take(&mut self) -> Arc<Packet> {
        if self.packets.front().is_some_and(|packet| Arc::strong_count(packet) == 1) {
            return self.packets.pop_front().expect("checked");
        }
        if self.packets.len() >= self.limit {
            self.packets.pop_front();
        }
        self.allocated += 1;
        Arc::new(Packet::empty())
    }

    /// Keeps `packet` (already shared with the workers) for reuse.
    pub fn recycle(&mut self, packet: Arc<Packet>) {
        self.packets.push_back(packet);
    }

    /// Packets allocated so far; it stops growing in the steady state.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }
}

/// The recent packets of one source stream, by sequence number, for NACKs.
pub struct History {
    slots: Box<[Option<Arc<Packet>>]>,
}

impl History {
    /// Keeps the last `size` sequence numbers (a power of two).
    pub fn new(size: usize) -> Self {
        assert!(size.is_power_of_two());
        Self { slots: vec![None; size].into_boxed_slice() }
    }

    /// How many sequence numbers it keeps.
    pub fn size(&self) -> usize {
        self.slots.len()
    }

    pub fn store(&mut self, packet: &Arc<Packet>) {
        let slot = usize::from(packet.meta.header.sequence) & (self.slots.len() - 1);
        self.slots[slot] = Some(packet.clone());
    }

    /// Stores `packet` unless its slot holds a newer one (of a later epoch, or
    /// further on in the same): the keyframe cache's older packets, which a
    /// worker sends in a burst though it never got them live, so that NACKs
    /// for them find them without pushing out what came since.
    pub fn backfill(&mut self, packet: &Arc<Packet>) {
        let slot = usize::from(packet.meta.header.sequence) & (self.slots.len() - 1);
        let newer_held = self.slots[slot].as_ref().is_some_and(|held| {
            let epochs_ahead = held.meta.epoch.wrapping_sub(packet.meta.epoch) as i32;
            let sequences_ahead = held.meta.header.sequence.wrapping_sub(packet.meta.header.sequence) as i16;
            epochs_ahead > 0 || (epochs_ahead == 0 && sequences_ahead > 0)
        });
        if !newer_held {
            self.slots[slot] = Some(packet.clone());
        }
    }

    /// The packet with source sequence number `sequence` from source epoch `epoch`, if still kept.
    pub fn find(&self, sequence: u16, epoch: u32) -> Option<&Arc<Packet>> {
        let packet = self.slots[usize::from(sequence) & (self.slots.len() - 1)].as_ref()?;
        (packet.meta.header.sequence == sequence && packet.meta.epoch == epoch).then_some(packet)
    }
}

/// The most a keyframe cache holds: past any of these its group of pictures
/// is let go, and viewers wait for the next keyframe (as without a cache).
pub const CACHE_MAX_PACKETS: usize = 8192;
pub const CACHE_MAX_BYTES: usize = 8 << 20;
pub const CACHE_MAX_AGE_NS: u64 = 5_000_000_000;

/// A video stream's packets since its latest keyframe, in arrival order: the
/// first is the first packet of the keyframe. Filled by the receiver, copied
/// (the shared packets, not their bytes) by a worker when a viewer starts.
pub struct GopCache {
    packets: Vec<Arc<Packet>>,
    bytes: usize,
    /// (epoch, RTP timestamp) of the cached keyframe.
    keyframe: Option<(u32, u32)>,
    started_ns: u64,
    /// Groups of pictures let go because they grew past the bounds.
    pub overflows: u64,
}

impl Default for GopCache {
    fn default() -> Self {
        Self::new()
    }
}

impl GopCache {
    pub fn new() -> Self {
        Self { packets: Vec::with_capacity(CACHE_MAX_PACKETS), bytes: 0, keyframe: None, started_ns: 0, overflows: 0 }
    }

    /// Adds a packet that arrived at `now_ns`: a keyframe's first packet starts
    /// the cache again (the SPS, PPS and IDR of one H.264 access unit share a
    /// timestamp, so they stay together); without a keyframe nothing is kept.
    pub fn offer(&mut self, packet: &Arc<Packet>, now_ns: u64) {
        let meta = &packet.meta;
        let access_unit = (meta.epoch, meta.header.timestamp);
        if meta.keyframe_start && self.keyframe != Some(access_unit) {
            self.clear();
            self.keyframe = Some(access_unit);
            self.started_ns = now_ns;
        }
        let Some((epoch, _)) = self.keyframe else { return };
        if epoch != meta.epoch {
            self.clear();
            return;
        }
        let len = packet.bytes().len();
        if self.packets.len() >= CACHE_MAX_PACKETS
            || self.bytes + len > CACHE_MAX_BYTES
            || now_ns.saturating_sub(self.started_ns) > CACHE_MAX_AGE_NS
        {
            self.clear();
            self.overflows += 1;
            return;
        }
        self.packets.push(packet.clone());
        self.bytes += len;
    }

    fn clear(&mut self) {
        self.packets.clear();
        self.bytes = 0;
        self.keyframe = None;
    }

    /// The packets from the keyframe on; empty without a keyframe.
    pub fn packets(&self) -> &[Arc<Packet>] {
        &self.packets
    }

    pub fn has_keyframe(&self) -> bool {
        !self.packets.is_empty()
    }

    /// RTP bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(pool: &mut PacketPool, sequence: u16) -> Arc<Packet> {
        let mut packet = pool.take();
        let mut datagram = vec![0x80, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xaa];
        datagram[2..4].copy_from_slice(&sequence.to_be_bytes());
        let header = RtpHeader::parse(&datagram).unwrap();
        Arc::get_mut(&mut packet).expect("nobody else holds a packet from the pool").fill(
            &datagram,
            ReceivedPacket { header, keyframe_start: false, epoch: 3, arrival_ns: 0, droppable: false },
        );
        packet
    }

    #[test]
    fn pool_reuses_packets_once_free() {
        let mut pool = PacketPool::new(16);
        let mut history = History::new(4);
        for sequence in 0..100 {
            let shared = packet(&mut pool, sequence);
            history.store(&shared);
            pool.recycle(shared);
        }
        assert_eq!(pool.allocated(), 5, "four held by the history, one in flight");
        assert_eq!(history.find(99, 3).unwrap().bytes()[12], 0xaa);
        assert!(history.find(99, 4).is_none(), "another epoch");
        assert!(history.find(95, 3).is_none(), "overwritten");
    }

    #[test]
    fn backfilling_keeps_what_is_newer() {
        let mut pool = PacketPool::new(16);
        let mut history = History::new(4);
        let (older, newer) = (packet(&mut pool, 7), packet(&mut pool, 11));
        history.store(&newer);
        history.backfill(&older);
        assert!(history.find(7, 3).is_none() && history.find(11, 3).is_some(), "7 and 11 share a slot");
        let empty_slot = packet(&mut pool, 6);
        history.backfill(&empty_slot);
        assert!(history.find(6, 3).is_some());
        history.store(&video(&mut pool, 3, 0, false, 4));
        history.backfill(&packet(&mut pool, 15));
        assert!(history.find(3, 4).is_some(), "a later epoch stays, whatever its sequence number");
    }

    fn video(pool: &mut PacketPool, sequence: u16, timestamp: u32, keyframe_start: bool, epoch: u32) -> Arc<Packet> {
        sized(pool, sequence, timestamp, keyframe_start, epoch, 1000)
    }

    fn sized(
        pool: &mut PacketPool,
        sequence: u16,
        timestamp: u32,
        keyframe_start: bool,
        epoch: u32,
        size: usize,
    ) -> Arc<Packet> {
        let mut packet = pool.take();
        let mut datagram = vec![0x80, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        datagram[2..4].copy_from_slice(&sequence.to_be_bytes());
        datagram[4..8].copy_from_slice(&timestamp.to_be_bytes());
        datagram.resize(size, 0xaa);
        let header = RtpHeader::parse(&datagram).unwrap();
        Arc::get_mut(&mut packet)
            .unwrap()
            .fill(&datagram, ReceivedPacket { header, keyframe_start, epoch, arrival_ns: 0, droppable: false });
        packet
    }

    #[test]
    fn the_cache_holds_the_packets_since_the_latest_keyframe() {
        let mut pool = PacketPool::new(64);
        let mut cache = GopCache::new();
        cache.offer(&video(&mut pool, 1, 0, false, 0), 0);
        assert!(!cache.has_keyframe(), "nothing before the first keyframe");
        cache.offer(&video(&mut pool, 2, 3000, true, 0), 1);
        cache.offer(&video(&mut pool, 3, 3000, true, 0), 2); // the IDR after an SPS: same access unit
        cache.offer(&video(&mut pool, 4, 6000, false, 0), 3);
        let sequences: Vec<u16> = cache.packets().iter().map(|p| p.meta.header.sequence).collect();
        assert_eq!(sequences, [2, 3, 4]);
        assert_eq!(cache.bytes(), 3000);
        cache.offer(&video(&mut pool, 5, 9000, true, 0), 4);
        assert_eq!(cache.packets().len(), 1, "a new keyframe starts again");
        cache.offer(&video(&mut pool, 1, 0, false, 1), 5);
        assert!(!cache.has_keyframe(), "a source restart lets the old picture go");
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut pool = PacketPool::new(64);
        let mut cache = GopCache::new();
        cache.offer(&video(&mut pool, 1, 0, true, 0), 0);
        cache.offer(&video(&mut pool, 2, 3000, false, 0), CACHE_MAX_AGE_NS + 1);
        assert!(!cache.has_keyframe(), "older than the bound");
        assert_eq!(cache.overflows, 1);
        cache.offer(&video(&mut pool, 3, 6000, false, 0), CACHE_MAX_AGE_NS + 2);
        assert!(!cache.has_keyframe(), "waits for the next keyframe");
        cache.offer(&video(&mut pool, 4, 9000, true, 0), 0);
        let mut sequence = 5;
        while cache.has_keyframe() {
            cache.offer(&video(&mut pool, sequence, 9000, false, 0), 0);
            sequence += 1;
        }
        assert_eq!(usize::from(sequence - 4), CACHE_MAX_PACKETS + 1, "8192 packets");
        cache.offer(&sized(&mut pool, 1, 0, true, 0, 1900), 0);
        let mut sequence = 2;
        while cache.has_keyframe() {
            cache.offer(&sized(&mut pool, sequence, 0, false, 0, 1900), 0);
            sequence += 1;
        }
        assert_eq!(usize::from(sequence - 1), CACHE_MAX_BYTES / 1900 + 1, "8 MB of 1900-byte packets");
    }

    #[test]
    fn pool_lets_go_of_held_packets_past_its_limit() {
        let mut pool = PacketPool::new(2);
        let held: Vec<Arc<Packet>> = (0..5)
            .map(|sequence| {
                let shared = packet(&mut pool, sequence);
                pool.recycle(shared.clone());
                shared
            })
            .collect();
        assert_eq!(pool.allocated(), 5);
        assert!(pool.packets.len() <= 3);
        drop(held);
    }
}
