//! Any datagram a viewer's address sends as SRTCP: unprotecting (both profiles)
//! never panics, and forged packets are refused.
#![no_main]

use _engine::wire::srtp::{Profile, SrtcpInbound, SrtpSession};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for profile in ["AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80"] {
        let profile = Profile::from_name(profile).expect("a known profile");
        let master = [7u8; 30];
        let session = SrtpSession::new(profile, &master[..profile.master_len()]).expect("a session");
        let mut inbound = SrtcpInbound::new(session);
        let _ = inbound.unprotect(data);
    }
});

