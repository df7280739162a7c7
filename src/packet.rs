//! Source packets as the workers share them: each received RTP packet is
//! copied once into a reference-counted [`Packet`], which every worker with
//! viewers of its mountpoint holds while it fans it out and keeps a while in
//! its [`History`] for retransmission. A [`PacketPool`] per source stream
//! recycles packets nobody holds any more, so the steady state allocates none.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::receiver::{ReceivedPacket, MAX_RTP_LEN};
use crate::rtp::RtpHeader;

/// A source RTP packet and what the receiver found in it.
pub struct Packet {
    data: [u8; MAX_RTP_LEN],
    len: usize,
    pub meta: ReceivedPacket,
}

impl Packet {
    fn empty() -> Self {
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
        Self { data: [0; MAX_RTP_LEN], len: 0, meta: ReceivedPacket { header, keyframe_start: false, epoch: 0 } }
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

    pub fn store(&mut self, packet: &Arc<Packet>) {
        let slot = usize::from(packet.meta.header.sequence) & (self.slots.len() - 1);
        self.slots[slot] = Some(packet.clone());
    }

    /// The packet with source sequence number `sequence` from source epoch `epoch`, if still kept.
    pub fn find(&self, sequence: u16, epoch: u32) -> Option<&Arc<Packet>> {
        let packet = self.slots[usize::from(sequence) & (self.slots.len() - 1)].as_ref()?;
        (packet.meta.header.sequence == sequence && packet.meta.epoch == epoch).then_some(packet)
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
        Arc::get_mut(&mut packet)
            .expect("nobody else holds a packet from the pool")
            .fill(&datagram, ReceivedPacket { header, keyframe_start: false, epoch: 3 });
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
