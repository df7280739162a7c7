//! Any RTCP a viewer sends (after SRTCP), read as transport-wide feedback:
//! the parser never panics, reports at most `status_count` packets each, in
//! sequence order, and the estimator takes whatever it reports (half the
//! packets in a probe's cluster, whose measure never panics either).
#![no_main]

use _engine::egress::congestion::Estimator;
use _engine::wire::twcc::for_each_transport_feedback;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut estimator = Estimator::default();
    estimator.probe_started(1);
    for sequence in 0..64u16 {
        estimator.history.record(sequence, 1 + i64::from(sequence) * 1000, 1200, u8::from(sequence >= 32));
    }
    for_each_transport_feedback(data, |feedback| {
        let mut reported = 0usize;
        let mut expected = feedback.base_sequence;
        let _ = feedback.for_each_packet(|sequence, _| {
            assert_eq!(sequence, expected);
            expected = expected.wrapping_add(1);
            reported += 1;
        });
        assert!(reported <= usize::from(feedback.status_count));
        estimator.on_feedback(100_000, |packet| {
            let _ = feedback.for_each_packet(|sequence, arrival| packet(sequence, arrival));
        });
    });
    if let Some(carried) = estimator.cluster.bitrate() {
        assert!(carried >= 0.0 && carried.is_finite());
    }
    let bitrate = estimator.bitrate();
    assert!(bitrate >= _engine::egress::congestion::MIN_BITRATE && bitrate <= _engine::egress::congestion::MAX_BITRATE);
});
