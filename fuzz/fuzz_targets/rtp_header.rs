//! Any datagram on a mountpoint's RTP port: parsing never panics, and what it
//! accepts describes ranges inside the datagram.
#![no_main]

use _engine::wire::rtp::{header_len, RtpHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = header_len(data);
    if let Some(header) = RtpHeader::parse(data) {
        assert!(header.csrc_end <= header.payload_start);
        assert!(header.payload_start <= header.payload_end);
        assert!(header.payload_end <= data.len());
    }
});
