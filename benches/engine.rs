//! Micro-benchmarks of the data plane's per-packet costs: SRTP protect for
//! each profile, the per-viewer rewrite + protect, the kernel's sendmmsg cost
//! per datagram, and the whole engine fanning one source out to many viewers.
//!
//! Run with `cargo bench --bench engine`. Loopback sends include the
//! receiving half of the kernel's work (loopback delivers in the sender's
//! context), so the send figures are an upper bound of a NIC's cost.

use std::hint::black_box;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use _engine::egress::batch::{DatagramKind, Outcome, SendBatch, SendMode, SlotTag};
use _engine::egress::viewer::{StreamStart, Viewer, ViewerStream};
use _engine::engine::{Engine, EngineOptions, SourceConfig, ViewerStreamConfig};
use _engine::ingest::IngestOptions;
use _engine::media::packet::{ReceivedPacket, SLOT_SIZE};
use _engine::media::MediaKind;
use _engine::sys::RawAddress;
use _engine::wire::codec::Codec;
use _engine::wire::rtp::RtpHeader;
use _engine::wire::srtp::{Profile, SrtpSession};

const PAYLOAD: usize = 1188;
const PACKET: usize = 12 + PAYLOAD;

fn rtp_packet(sequence: u16) -> Vec<u8> {
    let mut packet = vec![0x80, 96];
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(&90_000u32.to_be_bytes());
    packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    packet.resize(PACKET, 0xab);
    packet
}

fn report(name: &str, packets: u64, elapsed: Duration) {
    let ns = elapsed.as_nanos() as f64 / packets as f64;
    let gbits = (packets * PACKET as u64 * 8) as f64 / elapsed.as_secs_f64() / 1e9;
    println!("{name:<48} {ns:>8.1} ns/packet {:>10.0} packets/s {gbits:>6.2} Gbit/s", 1e9 / ns);
}

fn time(name: &str, iterations: u64, mut step: impl FnMut(u64)) {
    for i in 0..iterations / 10 {
        step(i); // warm up
    }
    let start = Instant::now();
    for i in 0..iterations {
        step(i);
    }
    report(name, iterations, start.elapsed());
}

fn protect(profile: Profile) {
    let session = SrtpSession::new(profile, &vec![7u8; profile.master_len()]).unwrap();
    let plain = rtp_packet(1);
    let mut buf = [0u8; SLOT_SIZE];
    time(&format!("copy + protect_rtp {profile:?}"), 400_000, |i| {
        buf[..PACKET].copy_from_slice(&plain);
        black_box(session.protect_rtp(&mut buf, PACKET, (i >> 16) as u32).unwrap());
    });
}

fn rewrite_and_protect(profile: Profile, transport_cc: bool) {
    let session = SrtpSession::new(profile, &vec![7u8; profile.master_len()]).unwrap();
    let address = RawAddress::from_socket_addr("127.0.0.1:9".parse().unwrap(), libc::AF_INET).unwrap();
    let stream = ViewerStream::new(0, 1, 100, 90_000, false, StreamStart { sequence: 1, timestamp: 1 });
    let mut viewer = Viewer::new(1, address, vec![stream], session, Instant::now());
    if transport_cc {
        viewer.set_transport_cc(Some(3));
    }
    let packets: Vec<Vec<u8>> = (0..1024).map(|i| rtp_packet(i as u16)).collect();
    let received: Vec<ReceivedPacket> = packets
        .iter()
        .map(|p| ReceivedPacket {
            header: RtpHeader::parse(p).unwrap(),
            keyframe_start: false,
            epoch: 0,
            arrival_ns: 0,
            droppable: false,
        })
        .collect();
    let mut buf = [0u8; SLOT_SIZE];
    let now = Instant::now();
    let with = if transport_cc { " + transport-cc" } else { "" };
    time(&format!("Viewer::write_rtp (rewrite + protect{with}) {profile:?}"), 400_000, |i| {
        let k = (i % 1024) as usize;
        black_box(viewer.write_rtp(0, &packets[k], &received[k], now, &mut buf).unwrap());
    });
}

fn kernel_send() {
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap(); // never read: the kernel drops at its queue
    let address = RawAddress::from_socket_addr(sink.local_addr().unwrap(), libc::AF_INET).unwrap();
    let packet = rtp_packet(1);
    for (mode, run) in [(SendMode::Sendmmsg, 1), (SendMode::Gso, 40)] {
        let mut batch = SendBatch::new(mode);
        let rounds = 2_000;
        let start = Instant::now();
        let mut sent = 0u64;
        for _ in 0..rounds {
            let mut viewer = 0;
            while batch.has_room() {
                batch.next_buffer()[..PACKET].copy_from_slice(&packet);
                batch.commit(PACKET, &address, SlotTag { viewer: viewer / run, kind: DatagramKind::Rtp }, true);
                viewer += 1;
            }
            batch.flush(sender.as_raw_fd(), |_, outcome| {
                if let Outcome::Sent { packets, .. } = outcome {
                    sent += u64::from(packets)
                }
            });
        }
        report(&format!("kernel {mode:?}, runs of {run} (loopback)"), sent, start.elapsed());
    }

    let start = Instant::now();
    let count = 100_000u64;
    for _ in 0..count {
        black_box(sender.send_to(&packet, sink.local_addr().unwrap()).unwrap());
    }
    report("kernel sendto, 1 per call (loopback)", count, start.elapsed());
}

/// The worker thread's CPU time, from /proc.
fn engine_thread_cpu() -> Duration {
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "fanout-worker-0" {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
            let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
            let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
            // SAFETY: sysconf has no preconditions.
            let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
            return Duration::from_secs_f64(ticks as f64 / per_second as f64);
        }
    }
    Duration::ZERO
}

fn whole_engine(profile: Profile, viewers: usize) {
    let webrtc = UdpSocket::bind("127.0.0.1:0").unwrap();
    let engine =
        Engine::new(webrtc.as_raw_fd(), EngineOptions { cores: Some(vec![0]), ..EngineOptions::default() }).unwrap();
    let source = SourceConfig {
        rtcp_port: None,
        shares_rtcp_port_of: None,
        interface: None,
        silence_ms: None,
        ingest: IngestOptions::default(),
        index: 0,
        kind: MediaKind::Audio,
        codec: Codec::Other,
        clock_rate: 48_000,
        host: "127.0.0.1".into(),
        port: Some(0),
    };
    let port = engine.add_mountpoint(1, &[source]).unwrap()[0];
    let sinks: Vec<UdpSocket> = (0..viewers).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    let key = vec![1u8; profile.master_len()];
    for (i, sink) in sinks.iter().enumerate() {
        let address = sink.local_addr().unwrap();
        let stream = ViewerStreamConfig { index: 0, ssrc: i as u32 + 1, payload_type: 111, ..Default::default() };
        engine.add_peer(i as u64, address, profile, &key, &key, None, Duration::from_secs(5)).unwrap();
        engine.subscribe(i as u64, 1, &[stream]).unwrap();
    }
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cpu_before = engine_thread_cpu();
    let start = Instant::now();
    let source_packets = 200_000 / viewers;
    for i in 0..source_packets {
        sender.send_to(&rtp_packet(i as u16), ("127.0.0.1", port)).unwrap();
        if i % 32 == 31 {
            // Pace the source below what the worker can fan out, so its socket does not overflow.
            std::thread::sleep(Duration::from_micros(40 * viewers as u64));
        }
    }
    let counted =
        || (0..viewers as u64).map(|v| engine.peer_stats(v).unwrap()).map(|s| s.packets + s.dropped).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(20);
    while counted() < engine.mountpoint_stats(1).unwrap().packets * viewers as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let cpu = engine_thread_cpu() - cpu_before;
    let elapsed = start.elapsed();
    let sent: u64 = (0..viewers as u64).map(|v| engine.peer_stats(v).unwrap().packets).sum();
    let received = engine.mountpoint_stats(1).unwrap().packets;
    let ns = cpu.as_nanos() as f64 / sent.max(1) as f64;
    println!(
        "engine {profile:?} x {viewers:>4} viewers: {received} in, {sent} out in {:.2} s; worker CPU {:.0} ms = {ns:.0} ns per packet out ({:.2} Gbit/s per core)",
        elapsed.as_secs_f64(),
        cpu.as_secs_f64() * 1e3,
        PACKET as f64 * 8.0 / ns,
    );
    engine.close();
}

fn main() {
    println!("RTP packets of {PACKET} bytes ({PAYLOAD} bytes of payload)");
    protect(Profile::AeadAes128Gcm);
    protect(Profile::AesCm128HmacSha1_80);
    for transport_cc in [false, true] {
        rewrite_and_protect(Profile::AeadAes128Gcm, transport_cc);
        rewrite_and_protect(Profile::AesCm128HmacSha1_80, transport_cc);
    }
    kernel_send();
    for viewers in [10, 100] {
        whole_engine(Profile::AeadAes128Gcm, viewers);
        whole_engine(Profile::AesCm128HmacSha1_80, viewers);
    }
}
