//! Any datagram a viewer's address sends as SRTCP: unprotecting (both
//! profiles) never panics, forged packets are refused, and what the key's
//! holder protected comes back unchanged.
#![no_main]

use _engine::wire::srtp::{Profile, SrtcpInbound, SrtpSession};
use libfuzzer_sys::fuzz_target;

/// The key the committed seeds (fuzz/seeds/srtcp_unprotect) were protected with.
const SEED_KEY: u8 = 7;
/// A key no input was made with: every input is a forgery to it.
const OTHER_KEY: u8 = 9;

fn session(profile: Profile, key_byte: u8) -> SrtpSession {
    let master = [key_byte; 30];
    SrtpSession::new(profile, &master[..profile.master_len()]).expect("a session")
}

fuzz_target!(|data: &[u8]| {
    for profile in ["AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80"] {
        let profile = Profile::from_name(profile).expect("a known profile");
        // Authentic seeds reach the decryption; nothing panics.
        let _ = SrtcpInbound::new(session(profile, SEED_KEY)).unprotect(data);
        let forged = SrtcpInbound::new(session(profile, OTHER_KEY)).unprotect(data);
        assert!(forged.is_err(), "a packet not made with the key was accepted");
        // The input as plain RTCP (version 2), protected by the key's holder, comes back as it was.
        if data.len() >= 8 && data.len() <= 1400 && data[0] >> 6 == 2 {
            let mut buf = data.to_vec();
            buf.resize(data.len() + 64, 0);
            let sender = session(profile, SEED_KEY);
            let len = sender.protect_rtcp(&mut buf, data.len(), 1).expect("room for the trailer");
            let plain = SrtcpInbound::new(session(profile, SEED_KEY)).unprotect(&buf[..len]);
            assert_eq!(plain.as_deref(), Ok(data), "an authentic packet came back changed or refused");
        }
    }
});
