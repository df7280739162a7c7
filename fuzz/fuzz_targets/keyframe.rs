//! Any RTP payload: keyframe detection for every codec never panics.
#![no_main]

use _engine::codec::Codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for name in ["vp8", "vp9", "h264", "opus"] {
        let _ = Codec::from_name(name).is_keyframe_start(data);
    }
});
