//! Any sequence of datagrams on a publisher link, after SRTP: the demux by
//! first byte, the routing by SSRC, rid, mid and payload type (header
//! extensions in both forms), the NACK gap tracker and the receiver report
//! statistics never panic, route only to a configured stream, and every NACK
//! and receiver report they write is well-formed RTCP.
#![no_main]

use _engine::ingest::publisher::{
    classify, write_nack, Arrival, GapTracker, LinkDatagram, Reception, Route, Router, MAX_NACK_GAP,
};
use _engine::wire::rtcp::{for_each_nack, is_rtcp};
use _engine::wire::rtp::{header_extension, RtpHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let routes = vec![
        Route { position: 0, mid: Some(b"0".to_vec()), payload_types: vec![111], ..Route::default() },
        Route { position: 1, mid: Some(b"1".to_vec()), rid: Some(b"h".to_vec()), ..Route::default() },
        Route { position: 2, mid: Some(b"1".to_vec()), rid: Some(b"l".to_vec()), ..Route::default() },
        Route { position: 3, ssrc: Some(u32::from(flags)), payload_types: vec![96], ..Route::default() },
    ];
    let mut router = Router::new(routes, Some(flags & 0x0f), Some(flags >> 4));
    let mut tracker = GapTracker::default();
    let mut reception: Option<Reception> = None;
    let mut now_ns = 1u64;
    let mut asked = Vec::new();
    let mut out = [0u8; 1200];
    // Each datagram: a length byte, a time step byte, then its bytes.
    while let [len, step, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        now_ns += u64::from(*step) * 1_000_000;
        if classify(datagram) != LinkDatagram::Rtp {
            continue;
        }
        let Some(header) = RtpHeader::parse(datagram) else { continue };
        for id in [1, 3, 14, 15, 200] {
            if let Some(value) = header_extension(datagram, &header, id) {
                let start = value.as_ptr() as usize - datagram.as_ptr() as usize;
                assert!(start >= header.csrc_end && start + value.len() <= header.payload_start);
            }
        }
        if let Some((position, _)) = router.route(datagram, &header) {
            assert!(position <= 3);
            assert_eq!(router.position_of(header.ssrc).is_some_and(|known| known != position), false);
        }
        match tracker.packet(header.ssrc, header.sequence, now_ns) {
            Arrival::Ahead { missing } => assert!(missing <= MAX_NACK_GAP),
            Arrival::Recovered | Arrival::Other => {}
        }
        asked.clear();
        tracker.due(now_ns, |sequence| asked.push(sequence));
        if let Some(&media_ssrc) = Some(&header.ssrc).filter(|_| !asked.is_empty()) {
            let (len, carried) = write_nack(&mut out, media_ssrc, &asked);
            assert!(carried >= 1 && is_rtcp(&out[..len]));
            let mut count = 0;
            for_each_nack(&out[..len], |_, _| count += 1);
            assert_eq!(count, carried);
        }
        let reception = reception.get_or_insert_with(|| Reception::new(header.ssrc, 90_000, header.sequence));
        reception.packet(header.sequence, header.timestamp, now_ns);
        if step & 1 == 1 {
            let len = reception.write_receiver_report(&mut out, now_ns);
            assert!(is_rtcp(&out[..len]));
        }
    }
});
