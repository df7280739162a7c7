//! Any RTCP a viewer sends (after SRTCP): the compound walkers never panic and
//! report only what lies inside the packet.
#![no_main]

use _engine::wire::rtcp::{for_each_nack, for_each_psfb, is_rtcp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = is_rtcp(data);
    let mut nacks = 0usize;
    for_each_nack(data, |_, _| nacks += 1);
    assert!(nacks <= data.len() * 17 / 4);
    for_each_psfb(data, |_, _, fci| assert!(fci.len() <= data.len()));
});
