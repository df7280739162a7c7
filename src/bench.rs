//! The machine's own limits, measured the way the engine works, for
//! `fanout bench engine`: SRTP protection alone ("crypto only") and the
//! engine's sends of ready-made datagrams alone ("kernel only"). Not used by
//! the engine itself.

use std::hint::black_box;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::egress::batch::{DatagramKind, Outcome, SendBatch, SendMode, SlotTag};
use crate::media::packet::SLOT_SIZE;
use crate::sys::{pin_to_core, RawAddress};
use crate::wire::srtp::{Profile, SrtpSession};

/// Nanoseconds of CPU this thread has used.
pub fn thread_cpu_ns() -> u64 {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `time` is a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}

fn rtp_packet(len: usize, sequence: u16) -> Vec<u8> {
    let mut packet = vec![0xab; len.max(12)];
    packet[..12].copy_from_slice(&[0x80, 96, 0, 0, 0, 1, 0x5f, 0x90, 0x12, 0x34, 0x56, 0x78]);
    packet[2..4].copy_from_slice(&sequence.to_be_bytes());
    packet
}

/// Copy + SRTP-protect `count` RTP packets of `rtp_len` bytes, as a worker
/// does into its batch; nanoseconds per packet.
pub fn protect_cost(profile: Profile, rtp_len: usize, count: u64) -> f64 {
    let session = SrtpSession::new(profile, &vec![7u8; profile.master_len()]).expect("key length matches");
    let plain = rtp_packet(rtp_len, 1);
    let mut buf = [0u8; SLOT_SIZE];
    let mut step = |i: u64| {
        buf[..plain.len()].copy_from_slice(&plain);
        buf[2..4].copy_from_slice(&(i as u16).to_be_bytes());
        black_box(session.protect_rtp(&mut buf, plain.len(), (i >> 16) as u32).expect("fits"));
    };
    for i in 0..count / 10 {
        step(i);
    }
    let started = thread_cpu_ns();
    for i in 0..count {
        step(i);
    }
    (thread_cpu_ns() - started) as f64 / count as f64
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SendCost {
    pub packets: u64,
    pub bytes: u64,
    pub failed: u64,
    pub cpu_ns: u64,
    pub wall_ns: u64,
}

/// Sends ready-made datagrams of `datagram_len` bytes from `fd` for `duration`:
/// to each address in turn a run of `run` datagrams, through the engine's
/// send batch in `mode`, on a thread pinned to `core` if given.
pub fn send_cost(
    fd: RawFd,
    addresses: Vec<RawAddress>,
    mode: SendMode,
    run: usize,
    datagram_len: usize,
    duration: Duration,
    core: Option<usize>,
) -> SendCost {
    let thread = std::thread::Builder::new().name("fanout-bench-send".into()).spawn(move || {
        if let Some(core) = core {
            let _ = pin_to_core(core);
        }
        let datagram = rtp_packet(datagram_len.min(SLOT_SIZE), 1);
        let mut batch = SendBatch::new(mode);
        let mut cost = SendCost::default();
        let cpu = thread_cpu_ns();
        let started = Instant::now();
        'sending: loop {
            for (viewer, address) in addresses.iter().enumerate() {
                let tag = SlotTag { viewer: viewer as u32, kind: DatagramKind::Rtp };
                for _ in 0..run {
                    if !batch.has_room() {
                        flush(&mut batch, fd, &mut cost);
                        if started.elapsed() >= duration {
                            break 'sending;
                        }
                    }
                    batch.next_buffer()[..datagram.len()].copy_from_slice(&datagram);
                    batch.commit(datagram.len(), address, tag, true);
                }
            }
        }
        cost.cpu_ns = thread_cpu_ns() - cpu;
        cost.wall_ns = started.elapsed().as_nanos() as u64;
        cost
    });
    thread.expect("a thread starts").join().unwrap_or_default()
}

fn flush(batch: &mut SendBatch, fd: RawFd, cost: &mut SendCost) {
    batch.flush(fd, |_, outcome| match outcome {
        Outcome::Sent { packets, bytes } => {
            cost.packets += u64::from(packets);
            cost.bytes += bytes as u64;
        }
        Outcome::Dropped { packets } | Outcome::Failed { packets } => cost.failed += u64::from(packets),
        Outcome::GsoRefused => {}
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn measures_sends_that_arrive() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = RawAddress::from_socket_addr(sink.local_addr().unwrap(), libc::AF_INET).unwrap();
        let cost = send_cost(sender.as_raw_fd(), vec![address], SendMode::Gso, 8, 200, Duration::from_millis(20), None);
        assert!(cost.packets > 0 && cost.failed == 0 && cost.bytes == cost.packets * 200);
        assert!(protect_cost(Profile::AeadAes128Gcm, 1212, 1000) > 0.0);
    }
}
