//! Any RTP payload: keyframe detection for every codec, H.264 SPS detection,
//! the VP8 and VP9 payload descriptors (temporal layer, picture ID rewrite)
//! and the AV1 payload's aggregation and OBU headers never panic, and a
//! picture ID written is the one read back.
#![no_main]

use _engine::wire::codec::{h264_carries_sps, Av1Payload, Codec, Vp8Descriptor, Vp9Descriptor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for name in ["vp8", "vp9", "h264", "h265", "av1", "opus"] {
        let _ = Codec::from_name(name).is_keyframe_start(data);
        let _ = Codec::from_name(name).is_droppable(data);
    }
    let _ = h264_carries_sps(data);
    if let Some(av1) = Av1Payload::parse(data) {
        assert!(av1.layers.is_none_or(|(temporal, spatial)| temporal < 8 && spatial < 4));
        assert!(
            !(av1.continues && data.first().is_some_and(|header| header & 0x30 == 0x10) && av1.begins_frame),
            "a packet of one continued fragment begins no frame"
        );
    }
    if let Some(descriptor) = Vp8Descriptor::parse(data) {
        assert!(descriptor.temporal_layer < 4);
        let mut payload = data.to_vec();
        let picture_id = 0x1234 & descriptor.picture_id_mask();
        descriptor.write_picture_id(&mut payload, picture_id);
        if descriptor.picture_id.is_some() {
            assert_eq!(descriptor.read_picture_id(&payload), Some(picture_id));
        }
    }
    if let Some(descriptor) = Vp9Descriptor::parse(data) {
        assert!(descriptor.temporal_layer < 8 && descriptor.spatial_layer < 8);
        if let Some(offset) = descriptor.tl0_picture_index {
            assert!(offset < data.len());
        }
        let mut payload = data.to_vec();
        let picture_id = 0x1234 & descriptor.picture_id_mask();
        descriptor.write_picture_id(&mut payload, picture_id);
        if descriptor.picture_id.is_some() {
            assert_eq!(descriptor.read_picture_id(&payload), Some(picture_id));
            assert_eq!(Vp9Descriptor::parse(&payload), Some(descriptor), "the rewrite moves no field");
        }
    }
});
