//! The steady state allocates nothing per packet: a counting global allocator
//! around the whole engine (receiver and worker threads), a warm-up, then
//! thousands of source packets fanned out to many viewers with GSO and SRTP
//! while the count must not move. The source is VP8 video with a keyframe
//! every 100 packets, so the keyframe cache fills and starts again throughout;
//! a second run adds the ingest: an H.264 source over SRTP whose keyframes
//! lack parameter sets, with the SSRC lock and skew compensation on. In both,
//! every third viewer gets the playout-delay header extension on each packet.
//! A third run feeds the stream from a publisher link (SRTP on a connected
//! socket, routed by payload type, receiver reports going back).
//! Run by `cargo test --release`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use _engine::egress::batch::SendMode;
use _engine::engine::{Engine, EngineOptions, PublisherConfig, PublisherRouteConfig, SourceConfig, ViewerStreamConfig};
use _engine::ingest::IngestOptions;
use _engine::media::MediaKind;
use _engine::wire::codec::Codec;
use _engine::wire::srtp::{Profile, SrtpSession};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const VIEWERS: usize = 20;
/// The allocation count is global: the tests take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
const SOURCE_SRTP_KEY: [u8; 30] = [9; 30];

fn sent(engine: &Engine) -> u64 {
    (0..VIEWERS as u64).map(|v| engine.peer_stats(v).map(|s| s.packets + s.dropped).unwrap_or(0)).sum()
}

/// How the source stream is configured and what it sends.
struct Source {
    codec: &'static str,
    ingest: IngestOptions,
    /// The payload's first two bytes for a keyframe's first packet and for the others.
    keyframe_start: [u8; 2],
    continuation: [u8; 2],
    /// Each keyframe reaches the viewers with a packet of parameter sets before it.
    parameter_sets_added: bool,
    srtp: Option<SrtpSession>,
    /// The stream has no port: a publisher link feeds it, protecting with `srtp`.
    link: Option<PublisherConfig>,
}

/// Sends `count` 1200-byte packets in bursts (frames of `burst`), then waits until every viewer got them.
fn feed(engine: &Engine, sender: &UdpSocket, to: SocketAddr, source: &Source, first: u16, count: u16, burst: u16) {
    let keyframes = (0..count).filter(|i| first.wrapping_add(*i) % 100 == 0).count() as u64;
    let per_viewer = u64::from(count) + if source.parameter_sets_added { keyframes } else { 0 };
    let target = sent(engine) + per_viewer * VIEWERS as u64;
    let mut packet = [0x5a_u8; 1300];
    packet[..12].copy_from_slice(&[0x80, 111, 0, 0, 0, 0, 0x03, 0xc0, 0xde, 0xad, 0xbe, 0xef]);
    for i in 0..count {
        let sequence = first.wrapping_add(i);
        packet[2..4].copy_from_slice(&sequence.to_be_bytes());
        // A keyframe every 100 packets, continuations between.
        // Ten packets a frame, 30 frames a second.
        let keyframe = sequence % 100 == 0;
        packet[4..8].copy_from_slice(&(u32::from(sequence) / 10 * 3000).to_be_bytes());
        packet[12..14].copy_from_slice(if keyframe { &source.keyframe_start } else { &source.continuation });
        packet[14..].fill(0x5a);
        let len = match &source.srtp {
            Some(srtp) => srtp.protect_rtp(&mut packet, 1200, 0).unwrap(),
            None => 1200,
        };
        if source.link.is_some() {
            sender.send(&packet[..len]).unwrap();
        } else {
            sender.send_to(&packet[..len], to).unwrap();
        }
        if i % burst == burst - 1 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while sent(engine) < target && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(sent(engine), target, "every packet reached every viewer (first {first})");
}

fn assert_steady_state_allocates_nothing(source: Source) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let webrtc = UdpSocket::bind("127.0.0.1:0").unwrap();
    let options = EngineOptions {
        cores: Some(vec![0]),
        pin: false,
        send_mode: SendMode::Gso,
        // Every packet is counted: a worker that falls behind on a loaded machine must not drop any.
        max_send_delay: Duration::from_secs(10),
        ..EngineOptions::default()
    };
    let engine = Engine::new(webrtc.as_raw_fd(), options).unwrap();
    let config = SourceConfig {
        index: 0,
        kind: MediaKind::Video,
        codec: Codec::from_name(source.codec),
        clock_rate: 90_000,
        host: "127.0.0.1".into(),
        port: source.link.is_none().then_some(0),
        rtcp_port: source.link.is_none().then_some(0),
        shares_rtcp_port_of: None,
        interface: None,
        silence_ms: None,
        ingest: source.ingest.clone(),
    };
    let port = engine.add_mountpoint(1, &[config]).unwrap()[0];
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    if let Some(link_config) = &source.link {
        let link = UdpSocket::bind("127.0.0.1:0").unwrap();
        link.connect(sender.local_addr().unwrap()).unwrap();
        sender.connect(link.local_addr().unwrap()).unwrap();
        engine.attach_publisher(1, link.as_raw_fd(), link_config).unwrap();
    }
    let sinks: Vec<UdpSocket> = (0..VIEWERS).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    for (i, sink) in sinks.iter().enumerate() {
        let address = sink.local_addr().unwrap();
        let profile = if i % 2 == 0 { Profile::AeadAes128Gcm } else { Profile::AesCm128HmacSha1_80 };
        let key = vec![i as u8; if i % 2 == 0 { 28 } else { 30 }];
        let stream = ViewerStreamConfig { index: 0, ssrc: i as u32 + 1, payload_type: 111, ..Default::default() };
        engine.add_peer(i as u64, address, profile, &key, &key, None, Duration::from_secs(5)).unwrap();
        engine.subscribe(i as u64, 1, &[stream]).unwrap();
        if i % 3 == 0 {
            engine.set_stream_playout_delay(i as u64, 0, 3, Some((100, 1000))).unwrap();
        }
        if i % 2 == 0 {
            // Transport-wide sequence numbers and their send history: nothing allocated per packet either.
            engine.set_transport_cc(i as u64, Some(4)).unwrap();
        }
    }
    // Let the worker take its viewers before the first packet, so they start
    // live (not with a paced burst from the keyframe cache).
    std::thread::sleep(Duration::from_millis(200));
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    // Warm up: the packet pool grows to its high-water mark (the workers' history
    // plus the packets in flight; bursts of 800 leave many in flight), the
    // batches and maps reach their size.
    let start = ALLOCATIONS.load(Ordering::SeqCst);
    feed(&engine, &sender, to, &source, 0, 6000, 800);
    let warm_up = ALLOCATIONS.load(Ordering::SeqCst) - start;
    assert!(warm_up >= 1024, "the engine's threads are counted: the pool grew by {warm_up}");

    let before = ALLOCATIONS.load(Ordering::SeqCst);
    feed(&engine, &sender, to, &source, 6000, 6000, 40);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;

    assert_eq!(allocations, 0, "allocations while fanning 6000 packets out to {VIEWERS} viewers");
    engine.close();
}

#[test]
fn the_steady_state_allocates_nothing() {
    assert_steady_state_allocates_nothing(Source {
        codec: "vp8",
        ingest: IngestOptions::default(),
        keyframe_start: [0x10, 0x00], // S, partition 0, P = 0
        continuation: [0x00, 0x01],
        parameter_sets_added: false,
        srtp: None,
        link: None,
    });
}

#[test]
fn the_ingest_allocates_nothing_either() {
    let srtp = SrtpSession::new(Profile::AesCm128HmacSha1_80, &SOURCE_SRTP_KEY).unwrap();
    assert_steady_state_allocates_nothing(Source {
        codec: "h264",
        ingest: IngestOptions {
            srtp: Some((Profile::AesCm128HmacSha1_80, SOURCE_SRTP_KEY.to_vec())),
            collision_ms: 1000,
            payload_types: vec![111],
            h264_parameter_sets: vec![vec![0x67, 0x42, 0xc0, 0x1f], vec![0x68, 0xce, 0x3c, 0x80]],
            skew_compensation: true,
        },
        keyframe_start: [0x7c, 0x85], // FU-A, start of an IDR
        continuation: [0x7c, 0x05],
        parameter_sets_added: true,
        srtp: Some(srtp),
        link: None,
    });
}

#[test]
fn a_publisher_link_allocates_nothing_either() {
    let publisher_key = [3u8; 28];
    let link = PublisherConfig {
        profile: Profile::AeadAes128Gcm,
        local_master_key: vec![4; 28],
        remote_master_key: publisher_key.to_vec(),
        routes: vec![PublisherRouteConfig { index: 0, payload_types: vec![111], ..PublisherRouteConfig::default() }],
        mid_extension_id: None,
        rid_extension_id: None,
    };
    assert_steady_state_allocates_nothing(Source {
        codec: "vp8",
        ingest: IngestOptions::default(),
        keyframe_start: [0x10, 0x00],
        continuation: [0x00, 0x01],
        parameter_sets_added: false,
        srtp: Some(SrtpSession::new(Profile::AeadAes128Gcm, &publisher_key).unwrap()),
        link: Some(link),
    });
}
