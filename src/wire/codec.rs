//! Finding the first packet of a keyframe in an RTP payload, so a new or
//! resumed viewer starts video where a decoder can start.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Vp8,
    Vp9,
    H264,
    H265,
    Av1,
    /// Audio, or video whose keyframes the engine cannot see: starts at once.
    Other,
}

impl Codec {
    pub fn from_name(name: &str) -> Self {
        match name {
            "vp8" => Self::Vp8,
            "vp9" => Self::Vp9,
            "h264" => Self::H264,
            "h265" | "hevc" => Self::H265,
            "av1" => Self::Av1,
            _ => Self::Other,
        }
    }

    pub fn finds_keyframes(self) -> bool {
        self != Self::Other
    }

    /// Whether `payload` is the first packet of a keyframe.
    pub fn is_keyframe_start(self, payload: &[u8]) -> bool {
        match self {
            Self::Vp8 => vp8_keyframe_start(payload),
            Self::Vp9 => vp9_keyframe_start(payload),
            Self::H264 => h264_keyframe_start(payload),
            Self::H265 => h265_keyframe_start(payload),
            Self::Av1 => av1_keyframe_start(payload),
            Self::Other => false,
        }
    }

    /// Whether `payload` belongs to a frame no other frame refers to, which a
    /// late worker drops before any other: VP8's non-reference bit (N) or a
    /// VP8's, VP9's or AV1's temporal layer above the base, H.264's nal_ref_idc 0.
    /// False when unsure (an AV1 packet that only continues an OBU names no layer).
    pub fn is_droppable(self, payload: &[u8]) -> bool {
        match self {
            Self::Vp8 => {
                payload.first().is_some_and(|first| first & 0x20 != 0)
                    || Vp8Descriptor::parse(payload).is_some_and(|descriptor| descriptor.temporal_layer > 0)
            }
            Self::Vp9 => Vp9Descriptor::parse(payload).is_some_and(|descriptor| descriptor.temporal_layer > 0),
            Self::Av1 => {
                Av1Payload::parse(payload).and_then(|av1| av1.layers).is_some_and(|(temporal, _)| temporal > 0)
            }
            // Single NAL units, STAP-A (the highest of its units) and FU-A (the indicator) carry NRI here.
            Self::H264 => payload.first().is_some_and(|header| header & 0x60 == 0 && header & 0x1f != 0),
            Self::H265 | Self::Other => false,
        }
    }
}

/// RFC 7741 section 4.2: the payload descriptor's S bit and partition index 0
/// mark the start of a frame; then the VP8 frame header's P bit (RFC 6386
/// section 9.1) is 0 for a keyframe.
fn vp8_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let start_of_partition = first & 0x10 != 0;
    let partition_index = first & 0x07;
    if !start_of_partition || partition_index != 0 {
        return false;
    }
    let mut offset = 1;
    if first & 0x80 != 0 {
        let Some(&extension) = payload.get(1) else {
            return false;
        };
        offset = 2;
        if extension & 0x80 != 0 {
            let Some(&picture_id) = payload.get(offset) else {
                return false;
            };
            offset += if picture_id & 0x80 != 0 { 2 } else { 1 };
        }
        if extension & 0x40 != 0 {
            offset += 1; // TL0PICIDX
        }
        if extension & 0x30 != 0 {
            offset += 1; // TID | Y | KEYIDX
        }
    }
    payload.get(offset).is_some_and(|header| header & 0x01 == 0)
}

/// Where the fields of a VP8 payload descriptor (RFC 7741 section 4.2) lie,
/// for a viewer that drops temporal layers or renumbers pictures after a
/// switch between simulcast encodings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// S set and partition index 0: the packet starts a frame.
    pub starts_frame: bool,
    /// The picture ID's offset in the payload, and whether it has 15 bits (M set) rather than 7.
    pub picture_id: Option<(usize, bool)>,
    /// TL0PICIDX's offset in the payload.
    pub tl0_picture_index: Option<usize>,
    /// The temporal layer (TID); 0 when the descriptor has none.
    pub temporal_layer: u8,
}

impl Vp8Descriptor {
    /// None if the payload is too short for the descriptor it announces.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let first = *payload.first()?;
        let mut descriptor = Self { starts_frame: first & 0x10 != 0 && first & 0x07 == 0, ..Self::default() };
        if first & 0x80 == 0 {
            return Some(descriptor);
        }
        let extension = *payload.get(1)?;
        let mut offset = 2;
        if extension & 0x80 != 0 {
            let field = parse_picture_id(payload, offset)?;
            descriptor.picture_id = Some(field);
            offset += if field.1 { 2 } else { 1 };
        }
        if extension & 0x40 != 0 {
            payload.get(offset)?;
            descriptor.tl0_picture_index = Some(offset);
            offset += 1;
        }
        if extension & 0x20 != 0 {
            descriptor.temporal_layer = *payload.get(offset)? >> 6;
        }
        Some(descriptor)
    }

    /// The picture ID (7 or 15 bits) at `payload`, as parsed.
    pub fn read_picture_id(&self, payload: &[u8]) -> Option<u16> {
        read_picture_id(payload, self.picture_id?)
    }

    /// Writes `picture_id` (masked to the field's width) into `payload`, as parsed.
    pub fn write_picture_id(&self, payload: &mut [u8], picture_id: u16) {
        if let Some(field) = self.picture_id {
            write_picture_id(payload, field, picture_id);
        }
    }

    /// The mask of the picture ID's width: 0x7fff or 0x7f.
    pub fn picture_id_mask(&self) -> u16 {
        picture_id_mask(self.picture_id)
    }
}

/// VP8's and VP9's picture IDs are alike: M set, 15 bits; else 7.
fn parse_picture_id(payload: &[u8], offset: usize) -> Option<(usize, bool)> {
    let long = *payload.get(offset)? & 0x80 != 0;
    if long {
        payload.get(offset + 1)?;
    }
    Some((offset, long))
}

/// The picture ID (7 or 15 bits) in the field at (offset, 15 bits) of `payload`.
pub fn read_picture_id(payload: &[u8], (offset, long): (usize, bool)) -> Option<u16> {
    Some(if long {
        u16::from_be_bytes([*payload.get(offset)? & 0x7f, *payload.get(offset + 1)?])
    } else {
        u16::from(*payload.get(offset)? & 0x7f)
    })
}

/// Writes `picture_id` (masked to the field's width) into the field at (offset, 15 bits) of `payload`.
pub fn write_picture_id(payload: &mut [u8], (offset, long): (usize, bool), picture_id: u16) {
    if long {
        let [high, low] = (picture_id & 0x7fff).to_be_bytes();
        payload[offset] = 0x80 | high;
        payload[offset + 1] = low;
    } else {
        payload[offset] = (picture_id & 0x7f) as u8;
    }
}

/// The mask of a picture ID field's width: 0x7fff or 0x7f.
pub fn picture_id_mask(picture_id: Option<(usize, bool)>) -> u16 {
    match picture_id {
        Some((_, false)) => 0x7f,
        _ => 0x7fff,
    }
}

/// Where the fields of a VP9 payload descriptor (RFC 9628 section 4.2) lie,
/// and what its layer indices say, for a viewer that leaves out temporal
/// layers (or renumbers pictures after a move between encodings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vp9Descriptor {
    /// P: the frame is predicted from earlier pictures (clear in a keyframe's base spatial layer).
    pub inter_predicted: bool,
    /// F: flexible mode (references by picture ID difference, no TL0PICIDX).
    pub flexible: bool,
    /// B: the packet starts a frame (of one spatial layer).
    pub begins_frame: bool,
    /// E: the packet ends a frame.
    pub ends_frame: bool,
    /// The picture ID's offset in the payload, and whether it has 15 bits (M set) rather than 7.
    pub picture_id: Option<(usize, bool)>,
    /// TL0PICIDX's offset in the payload (non-flexible mode with layer indices).
    pub tl0_picture_index: Option<usize>,
    /// TID; 0 when the descriptor has no layer indices (L clear).
    pub temporal_layer: u8,
    /// U: a switching up point: later pictures of higher temporal layers refer
    /// to no picture before this one whose layer is above this one's.
    pub switching_up: bool,
    /// SID; 0 without layer indices.
    pub spatial_layer: u8,
}

impl Vp9Descriptor {
    /// The descriptor's fixed fields up to the layer indices and TL0PICIDX;
    /// None if the payload is too short for the fields it announces. The
    /// reference indices (flexible mode) and scalability structure that may
    /// follow are neither read nor checked.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let first = *payload.first()?;
        let mut descriptor = Self {
            inter_predicted: first & 0x40 != 0,
            flexible: first & 0x10 != 0,
            begins_frame: first & 0x08 != 0,
            ends_frame: first & 0x04 != 0,
            ..Self::default()
        };
        let mut offset = 1;
        if first & 0x80 != 0 {
            let field = parse_picture_id(payload, offset)?;
            descriptor.picture_id = Some(field);
            offset += if field.1 { 2 } else { 1 };
        }
        if first & 0x20 != 0 {
            let layers = *payload.get(offset)?;
            descriptor.temporal_layer = layers >> 5;
            descriptor.switching_up = layers & 0x10 != 0;
            descriptor.spatial_layer = (layers >> 1) & 0x07;
            offset += 1;
            if !descriptor.flexible {
                payload.get(offset)?;
                descriptor.tl0_picture_index = Some(offset);
            }
        }
        Some(descriptor)
    }

    /// Whether the packet starts a picture: the beginning of its base spatial layer's frame.
    pub fn starts_picture(&self) -> bool {
        self.begins_frame && self.spatial_layer == 0
    }

    /// Whether the packet starts a keyframe (a picture not predicted from earlier ones).
    pub fn starts_keyframe(&self) -> bool {
        self.starts_picture() && !self.inter_predicted
    }

    /// The picture ID (7 or 15 bits) at `payload`, as parsed.
    pub fn read_picture_id(&self, payload: &[u8]) -> Option<u16> {
        read_picture_id(payload, self.picture_id?)
    }

    /// Writes `picture_id` (masked to the field's width) into `payload`, as parsed.
    pub fn write_picture_id(&self, payload: &mut [u8], picture_id: u16) {
        if let Some(field) = self.picture_id {
            write_picture_id(payload, field, picture_id);
        }
    }

    /// The mask of the picture ID's width: 0x7fff or 0x7f.
    pub fn picture_id_mask(&self) -> u16 {
        picture_id_mask(self.picture_id)
    }
}

/// The VP9 payload descriptor (RFC 9628 section 4.2): P = 0 (not inter-picture
/// predicted) and B = 1 (start of a frame), in the base spatial layer.
fn vp9_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let inter_predicted = first & 0x40 != 0;
    let begins_frame = first & 0x08 != 0;
    if inter_predicted || !begins_frame {
        return false;
    }
    if first & 0x20 != 0 {
        let mut offset = 1;
        if first & 0x80 != 0 {
            let Some(&picture_id) = payload.get(offset) else {
                return false;
            };
            offset += if picture_id & 0x80 != 0 { 2 } else { 1 };
        }
        let Some(&layer) = payload.get(offset) else {
            return false;
        };
        let spatial_id = (layer >> 1) & 0x07;
        return spatial_id == 0;
    }
    true
}

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
pub const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

/// RFC 6184: a single IDR or SPS NAL unit, a STAP-A aggregating one, or the
/// first fragment (FU-A with S set) of an IDR.
fn h264_keyframe_start(payload: &[u8]) -> bool {
    h264_starts_nal_unit(payload, |nal_type| matches!(nal_type, H264_IDR | H264_SPS))
}

/// Whether the H.264 payload carries a sequence parameter set (alone, in a
/// STAP-A, or as the first fragment of one).
pub fn h264_carries_sps(payload: &[u8]) -> bool {
    h264_starts_nal_unit(payload, |nal_type| nal_type == H264_SPS)
}

/// Whether the payload holds, or starts (FU-A with S set), a NAL unit whose
/// type `wanted` accepts.
fn h264_starts_nal_unit(payload: &[u8], wanted: impl Fn(u8) -> bool) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1f {
        H264_STAP_A => {
            let mut offset = 1;
            while let Some(size) = payload.get(offset..offset + 2) {
                let size = usize::from(u16::from_be_bytes([size[0], size[1]]));
                let Some(&nal) = payload.get(offset + 2) else {
                    return false;
                };
                if size == 0 {
                    return false;
                }
                if wanted(nal & 0x1f) {
                    return true;
                }
                offset += 2 + size;
            }
            false
        }
        H264_FU_A => payload.get(1).is_some_and(|fu_header| fu_header & 0x80 != 0 && wanted(fu_header & 0x1f)),
        nal_type => wanted(nal_type),
    }
}

const H265_IRAP_TYPES: std::ops::RangeInclusive<u8> = 16..=21; // BLA, IDR, CRA
const H265_VPS: u8 = 32;
const H265_SPS: u8 = 33;
const H265_AGGREGATION_PACKET: u8 = 48;
const H265_FRAGMENTATION_UNIT: u8 = 49;

/// RFC 7798 (no DONL, as WebRTC sends it): a single NAL unit that is an IRAP
/// picture's slice (BLA, IDR, CRA), a VPS or an SPS; an aggregation packet
/// holding one; or the first fragment (S set) of an IRAP slice.
fn h265_keyframe_start(payload: &[u8]) -> bool {
    let starts_keyframe = |nal_type: u8| H265_IRAP_TYPES.contains(&nal_type) || matches!(nal_type, H265_VPS | H265_SPS);
    let nal_type = |header: u8| (header >> 1) & 0x3f;
    let (Some(&first), Some(_)) = (payload.first(), payload.get(1)) else {
        return false;
    };
    match nal_type(first) {
        H265_AGGREGATION_PACKET => {
            let mut offset = 2;
            while let Some(size) = payload.get(offset..offset + 2) {
                let size = usize::from(u16::from_be_bytes([size[0], size[1]]));
                let Some(&header) = payload.get(offset + 2) else {
                    return false;
                };
                if size < 2 {
                    return false;
                }
                if starts_keyframe(nal_type(header)) {
                    return true;
                }
                offset += 2 + size;
            }
            false
        }
        H265_FRAGMENTATION_UNIT => {
            payload.get(2).is_some_and(|fu_header| fu_header & 0x80 != 0 && starts_keyframe(fu_header & 0x3f))
        }
        single => starts_keyframe(single),
    }
}

/// What an AV1 RTP payload (AV1 RTP specification, section 4) tells a viewer
/// stream that leaves out temporal layers: its aggregation header, and the
/// headers of the OBUs that begin in the packet (AV1 specification, section
/// 5.3). With temporal scalability every OBU of a frame carries an extension
/// header with its temporal and spatial layer, and all those in one packet
/// name the same layers (RTP specification, section 5); a packet that only
/// continues an OBU begun in an earlier one names none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Av1Payload {
    /// Z: the first OBU element continues an OBU begun in the previous packet.
    pub continues: bool,
    /// N: the first packet of a coded video sequence (a keyframe's).
    pub new_sequence: bool,
    /// An OBU that begins a frame (a sequence header, a frame header or a
    /// frame) begins in the packet.
    pub begins_frame: bool,
    /// (temporal ID, spatial ID) of the first OBU with an extension header.
    pub layers: Option<(u8, u8)>,
}

const AV1_OBU_SEQUENCE_HEADER: u8 = 1;
const AV1_OBU_TEMPORAL_DELIMITER: u8 = 2;
const AV1_OBU_FRAME_HEADER: u8 = 3;
const AV1_OBU_FRAME: u8 = 6;

impl Av1Payload {
    /// None if the aggregation header is missing or an OBU element's length
    /// runs past the payload.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let aggregation = *payload.first()?;
        let mut parsed =
            Self { continues: aggregation & 0x80 != 0, new_sequence: aggregation & 0x08 != 0, ..Self::default() };
        // W: how many OBU elements (the last one without a length field); 0: each has one.
        let elements = usize::from((aggregation >> 4) & 0x03);
        let mut offset = 1;
        let mut element = 0;
        while offset < payload.len() {
            let last = elements != 0 && element + 1 == elements;
            let length = if last {
                payload.len() - offset
            } else {
                let (length, used) = read_leb128(&payload[offset..])?;
                offset += used;
                usize::try_from(length).ok().filter(|length| *length <= payload.len() - offset)?
            };
            let obu = &payload[offset..offset + length];
            if !(element == 0 && parsed.continues) {
                if let Some(&header) = obu.first() {
                    let kind = (header >> 3) & 0x0f;
                    parsed.begins_frame |= matches!(
                        kind,
                        AV1_OBU_SEQUENCE_HEADER | AV1_OBU_TEMPORAL_DELIMITER | AV1_OBU_FRAME_HEADER | AV1_OBU_FRAME
                    );
                    if header & 0x04 != 0 && parsed.layers.is_none() {
                        let extension = *obu.get(1)?;
                        parsed.layers = Some((extension >> 5, (extension >> 3) & 0x03));
                    }
                }
            }
            offset += length;
            element += 1;
            if last {
                break;
            }
        }
        Some(parsed)
    }
}

/// An unsigned LEB128 number (AV1 specification, section 4.10.5: at most 8
/// bytes) and the bytes it took; None if cut short.
fn read_leb128(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (index, byte) in bytes.iter().take(8).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

/// The AV1 RTP payload's aggregation header (AV1 RTP specification section
/// 4.4): N set (the first packet of a coded video sequence, which starts with
/// a keyframe) and Z clear (its first OBU is not the continuation of one).
fn av1_keyframe_start(payload: &[u8]) -> bool {
    payload.first().is_some_and(|header| header & 0x08 != 0 && header & 0x80 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn droppable_frames() {
        let vp8 = Codec::Vp8;
        assert!(!vp8.is_droppable(&[0x10, 0x9c]), "a keyframe");
        assert!(!vp8.is_droppable(&[0x10, 0x9d]), "a reference interframe");
        assert!(vp8.is_droppable(&[0x30, 0x9d]), "N: a non-reference frame");
        // X, I (15 bits), L, T: TID 1 and TID 0 of the temporal layer byte.
        assert!(vp8.is_droppable(&[0x90, 0xe0, 0x81, 0x23, 0x05, 0x40, 0x51]));
        assert!(!vp8.is_droppable(&[0x90, 0xe0, 0x81, 0x23, 0x05, 0x00, 0x51]));
        assert!(!vp8.is_droppable(&[]));
        let h264 = Codec::H264;
        assert!(!h264.is_droppable(&[0x65]), "IDR slice, NRI 3");
        assert!(!h264.is_droppable(&[0x7c, 0x85]), "FU-A of an IDR slice");
        assert!(h264.is_droppable(&[0x01]), "a non-reference slice");
        assert!(h264.is_droppable(&[0x1c, 0x81]), "FU-A, NRI 0");
        assert!(!Codec::Vp9.is_droppable(&[0xff]) && !Codec::Other.is_droppable(&[0x30]));
    }

    #[test]
    fn vp8_keyframes() {
        let vp8 = Codec::Vp8;
        assert!(vp8.is_keyframe_start(&[0x10, 0x9c]), "S, partition 0, P = 0");
        assert!(!vp8.is_keyframe_start(&[0x10, 0x9d | 0x01]), "interframe");
        assert!(!vp8.is_keyframe_start(&[0x00, 0x9c]), "not the start of the frame");
        assert!(!vp8.is_keyframe_start(&[0x11, 0x9c]), "partition 1");
        // X, I with a 15-bit picture id, L, T: four more bytes before the VP8 header.
        assert!(vp8.is_keyframe_start(&[0x90, 0xe0, 0x81, 0x23, 0x05, 0x40, 0x50]));
        assert!(!vp8.is_keyframe_start(&[0x90, 0xe0, 0x81, 0x23, 0x05, 0x40, 0x51]));
        // X, I with a 7-bit picture id.
        assert!(vp8.is_keyframe_start(&[0x90, 0x80, 0x12, 0x00]));
        assert!(!vp8.is_keyframe_start(&[0x90, 0x80, 0x12]), "cut before the frame header");
        assert!(!vp8.is_keyframe_start(&[]));
    }

    #[test]
    fn vp8_descriptor_fields() {
        // X; I with a 15-bit picture id 0x0123; L (TL0PICIDX 5); T (TID 2, Y).
        let payload = [0x90, 0xe0, 0x81, 0x23, 0x05, 0xa0, 0x50];
        let descriptor = Vp8Descriptor::parse(&payload).unwrap();
        assert!(descriptor.starts_frame);
        assert_eq!(descriptor.picture_id, Some((2, true)));
        assert_eq!(descriptor.read_picture_id(&payload), Some(0x0123));
        assert_eq!(descriptor.tl0_picture_index, Some(4));
        assert_eq!(descriptor.temporal_layer, 2);
        let mut written = payload;
        descriptor.write_picture_id(&mut written, 0x8000 | 0x7abc);
        assert_eq!(descriptor.read_picture_id(&written), Some(0x7abc));
        // No extension: nothing but the start bit.
        let plain = Vp8Descriptor::parse(&[0x00, 0x9c]).unwrap();
        assert_eq!((plain.starts_frame, plain.picture_id, plain.temporal_layer), (false, None, 0));
        // X; I with a 7-bit picture id; K only (no TID): layer 0.
        let short = Vp8Descriptor::parse(&[0x90, 0x90, 0x7f, 0x00]).unwrap();
        assert_eq!((short.picture_id, short.picture_id_mask(), short.temporal_layer), (Some((2, false)), 0x7f, 0));
        assert!(Vp8Descriptor::parse(&[0x90, 0xe0, 0x81]).is_none(), "cut inside the picture id");
        assert!(Vp8Descriptor::parse(&[]).is_none());
    }

    #[test]
    fn vp9_keyframes() {
        let vp9 = Codec::Vp9;
        assert!(vp9.is_keyframe_start(&[0x08]), "B, not P");
        assert!(!vp9.is_keyframe_start(&[0x48]), "inter predicted");
        assert!(!vp9.is_keyframe_start(&[0x00]), "not the beginning of a frame");
        assert!(vp9.is_keyframe_start(&[0xa8, 0x81, 0x02, 0x00, 0x00]), "I (15 bit), L, SID 0");
        assert!(!vp9.is_keyframe_start(&[0xa8, 0x81, 0x02, 0x02, 0x00]), "SID 1");
    }

    #[test]
    fn vp9_descriptor_fields() {
        // I (15-bit picture ID 0x0123), L, B, E; TID 2, U, SID 0, D clear; TL0PICIDX 7.
        let payload = [0xac, 0x81, 0x23, 0x50, 0x07, 0xaa];
        let descriptor = Vp9Descriptor::parse(&payload).unwrap();
        assert_eq!(descriptor.picture_id, Some((1, true)));
        assert_eq!(descriptor.read_picture_id(&payload), Some(0x0123));
        assert_eq!((descriptor.temporal_layer, descriptor.switching_up, descriptor.spatial_layer), (2, true, 0));
        assert_eq!(descriptor.tl0_picture_index, Some(4));
        assert!(
            descriptor.begins_frame && descriptor.ends_frame && !descriptor.inter_predicted && !descriptor.flexible
        );
        assert!(descriptor.starts_picture() && descriptor.starts_keyframe());
        let mut written = payload;
        descriptor.write_picture_id(&mut written, 0x8000 | 0x7abc);
        assert_eq!(descriptor.read_picture_id(&written), Some(0x7abc));
        assert_eq!(&written[3..], &payload[3..], "the fields after the picture ID untouched");
        // I (7-bit), P, L, B; TID 1, SID 1: a frame of the second spatial layer, not a picture's start.
        let upper = Vp9Descriptor::parse(&[0xe8, 0x05, 0x22, 0x03]).unwrap();
        assert_eq!((upper.picture_id, upper.picture_id_mask(), upper.temporal_layer), (Some((1, false)), 0x7f, 1));
        assert_eq!((upper.spatial_layer, upper.switching_up, upper.tl0_picture_index), (1, false, Some(3)));
        assert!(upper.inter_predicted && !upper.starts_picture() && !upper.starts_keyframe());
        // Flexible mode (F): layer indices without TL0PICIDX; P_DIFF follows, unread.
        let flexible = Vp9Descriptor::parse(&[0xf8, 0x80, 0x09, 0x60, 0x02]).unwrap();
        assert!(flexible.flexible);
        assert_eq!((flexible.temporal_layer, flexible.tl0_picture_index), (3, None));
        // No picture ID, no layer indices: layer 0.
        let plain = Vp9Descriptor::parse(&[0x4c]).unwrap();
        assert_eq!((plain.picture_id, plain.temporal_layer, plain.tl0_picture_index), (None, 0, None));
        assert!(Vp9Descriptor::parse(&[0xa8, 0x81]).is_none(), "cut inside the picture ID");
        assert!(Vp9Descriptor::parse(&[0xa8, 0x81, 0x23]).is_none(), "cut before the layer indices");
        assert!(Vp9Descriptor::parse(&[0xa8, 0x81, 0x23, 0x40]).is_none(), "cut before TL0PICIDX");
        assert!(Vp9Descriptor::parse(&[]).is_none());
        // A base-layer frame is kept before any other; an upper layer's is droppable.
        assert!(Codec::Vp9.is_droppable(&[0xe8, 0x05, 0x22, 0x03]));
        assert!(!Codec::Vp9.is_droppable(&[0xe8, 0x05, 0x02, 0x03]));
    }

    #[test]
    fn h264_keyframes() {
        let h264 = Codec::H264;
        assert!(h264.is_keyframe_start(&[0x67, 0x42]), "SPS");
        assert!(h264.is_keyframe_start(&[0x65, 0x88]), "IDR");
        assert!(!h264.is_keyframe_start(&[0x41, 0x9a]), "non-IDR slice");
        assert!(!h264.is_keyframe_start(&[0x68, 0xce]), "PPS alone");
        // STAP-A: SPS (2 bytes) then PPS (2 bytes).
        assert!(h264.is_keyframe_start(&[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce]));
        // STAP-A: PPS then IDR.
        assert!(h264.is_keyframe_start(&[0x78, 0, 2, 0x68, 0xce, 0, 2, 0x65, 0x88]));
        assert!(!h264.is_keyframe_start(&[0x78, 0, 2, 0x68, 0xce, 0, 2, 0x41, 0x9a]));
        assert!(!h264.is_keyframe_start(&[0x78, 0, 0, 0x65]), "empty aggregation unit");
        // FU-A: start of an IDR, middle of an IDR, start of a non-IDR slice.
        assert!(h264.is_keyframe_start(&[0x7c, 0x85, 0x88]));
        assert!(!h264.is_keyframe_start(&[0x7c, 0x05, 0x88]));
        assert!(!h264.is_keyframe_start(&[0x7c, 0x81, 0x9a]));
        assert!(!h264.is_keyframe_start(&[0x7c]));
    }

    #[test]
    fn h265_keyframes() {
        let h265 = Codec::H265;
        // Two-byte NAL unit headers: type in bits 1-6 of the first byte.
        assert!(h265.is_keyframe_start(&[19 << 1, 0x01, 0xaf]), "IDR_W_RADL");
        assert!(h265.is_keyframe_start(&[21 << 1, 0x01]), "CRA");
        assert!(h265.is_keyframe_start(&[32 << 1, 0x01, 0x0c]), "VPS");
        assert!(!h265.is_keyframe_start(&[1 << 1, 0x01, 0xd0]), "TRAIL_R, not a keyframe");
        assert!(!h265.is_keyframe_start(&[34 << 1, 0x01]), "PPS alone");
        assert!(!h265.is_keyframe_start(&[19 << 1]), "cut inside the header");
        // Aggregation packet: VPS (3 bytes), then PPS; PPS then a TRAIL_R slice.
        assert!(h265.is_keyframe_start(&[48 << 1, 0x01, 0, 3, 32 << 1, 0x01, 0x0c, 0, 2, 34 << 1, 0x01]));
        assert!(!h265.is_keyframe_start(&[48 << 1, 0x01, 0, 2, 34 << 1, 0x01, 0, 2, 1 << 1, 0x01]));
        assert!(!h265.is_keyframe_start(&[48 << 1, 0x01, 0, 0, 19 << 1]), "an empty unit");
        // Fragmentation unit: start of an IDR slice, its middle, start of a TRAIL_R slice.
        assert!(h265.is_keyframe_start(&[49 << 1, 0x01, 0x80 | 19, 0xaf]));
        assert!(!h265.is_keyframe_start(&[49 << 1, 0x01, 19, 0xaf]));
        assert!(!h265.is_keyframe_start(&[49 << 1, 0x01, 0x80 | 1, 0xaf]));
        assert!(!h265.is_keyframe_start(&[49 << 1, 0x01]));
    }

    #[test]
    fn av1_keyframes() {
        let av1 = Codec::Av1;
        assert!(av1.is_keyframe_start(&[0x18, 0x0a]), "N, W = 1: a new coded video sequence");
        assert!(!av1.is_keyframe_start(&[0x10, 0x32]), "no N: an inter frame");
        assert!(!av1.is_keyframe_start(&[0x88, 0x00]), "Z: continues an OBU");
        assert!(!av1.is_keyframe_start(&[]));
    }

    /// An OBU header of `kind` with an extension header naming temporal layer `temporal`.
    fn av1_obu(kind: u8, temporal: u8, body: &[u8]) -> Vec<u8> {
        [&[kind << 3 | 0x04, temporal << 5][..], body].concat()
    }

    #[test]
    fn av1_payload_layers() {
        // W = 1: one element, no length field: a frame OBU of temporal layer 2.
        let frame = [&[0x10][..], &av1_obu(AV1_OBU_FRAME, 2, &[0xaa; 20])].concat();
        let parsed = Av1Payload::parse(&frame).unwrap();
        assert_eq!((parsed.continues, parsed.begins_frame, parsed.layers), (false, true, Some((2, 0))));
        assert!(Codec::Av1.is_droppable(&frame));
        // N, W = 2: a sequence header without extension (length 3), then a keyframe's frame OBU of layer 0.
        let keyframe =
            [&[0x28, 0x03, AV1_OBU_SEQUENCE_HEADER << 3, 0x00, 0x00][..], &av1_obu(AV1_OBU_FRAME, 0, &[0; 8])].concat();
        let parsed = Av1Payload::parse(&keyframe).unwrap();
        assert_eq!((parsed.new_sequence, parsed.begins_frame, parsed.layers), (true, true, Some((0, 0))));
        assert!(!Codec::Av1.is_droppable(&keyframe) && Codec::Av1.is_keyframe_start(&keyframe));
        // Z, W = 1: the rest of a fragmented OBU: no header of its own, no layers.
        let rest = [0x90, 0x12, 0x34, 0x56];
        assert_eq!(Av1Payload::parse(&rest).unwrap(), Av1Payload { continues: true, ..Av1Payload::default() });
        assert!(!Codec::Av1.is_droppable(&rest), "unsure: not droppable");
        // Z, W = 0: a continued fragment with a length field (2), then a tile group OBU of layer 1.
        let tail = [&[0x80, 0x02, 0xff, 0xff, 0x05][..], &av1_obu(4, 1, &[0; 3])].concat();
        let parsed = Av1Payload::parse(&tail).unwrap();
        assert_eq!((parsed.continues, parsed.begins_frame, parsed.layers), (true, false, Some((1, 0))));
        // Lengths past the payload, cut LEB128: refused.
        assert_eq!(Av1Payload::parse(&[0x00, 0x09, 0x30, 0x00]), None);
        assert_eq!(Av1Payload::parse(&[0x00, 0x80]), None);
        assert_eq!(Av1Payload::parse(&[]), None);
        assert_eq!(read_leb128(&[0xe5, 0x8e, 0x26]), Some((624_485, 3)));
    }

    #[test]
    fn other_codecs_never_wait() {
        assert!(!Codec::from_name("opus").finds_keyframes());
        assert!(!Codec::from_name("pcmu").finds_keyframes());
        for video in ["vp8", "vp9", "h264", "h265", "hevc", "av1"] {
            assert!(Codec::from_name(video).finds_keyframes(), "{video}");
        }
    }
}
