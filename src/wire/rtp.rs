//! The RTP fixed header (RFC 3550 section 5.1): validation and field access.

pub const FIXED_HEADER_LEN: usize = 12;

/// A datagram that passed validation as RTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Fixed header plus CSRC list, without the header extension.
    pub csrc_end: usize,
    /// Where the payload starts: after the CSRC list and the header extension.
    pub payload_start: usize,
    /// Where the payload ends: the packet length less any padding.
    pub payload_end: usize,
}

impl RtpHeader {
    /// Validates `packet` as RTP: version 2, CSRC list, header extension and
    /// padding inside the packet. RTCP sent to an RTP port (payload types
    /// 72..=76 with the marker bit, RFC 5761 section 4) is refused.
    pub fn parse(packet: &[u8]) -> Option<Self> {
        if packet.len() < FIXED_HEADER_LEN || packet[0] >> 6 != 2 {
            return None;
        }
        let has_padding = packet[0] & 0x20 != 0;
        let has_extension = packet[0] & 0x10 != 0;
        let csrc_count = usize::from(packet[0] & 0x0f);
        let marker = packet[1] & 0x80 != 0;
        let payload_type = packet[1] & 0x7f;
        if (72..=76).contains(&payload_type) && marker {
            return None;
        }
        let csrc_end = FIXED_HEADER_LEN + 4 * csrc_count;
        let mut payload_start = csrc_end;
        if has_extension {
            let words = usize::from(read_u16(packet.get(csrc_end + 2..csrc_end + 4)?));
            payload_start = csrc_end + 4 + 4 * words;
        }
        if payload_start > packet.len() {
            return None;
        }
        let mut payload_end = packet.len();
        if has_padding {
            let padding = usize::from(packet[packet.len() - 1]);
            if padding == 0 || payload_start + padding > packet.len() {
                return None;
            }
            payload_end -= padding;
        }
        Some(Self {
            marker,
            payload_type,
            sequence: read_u16(&packet[2..4]),
            timestamp: read_u32(&packet[4..8]),
            ssrc: read_u32(&packet[8..12]),
            csrc_end,
            payload_start,
            payload_end,
        })
    }
}

/// The length of an RTP header with its CSRC list and extension, if it fits in `packet`.
pub fn header_len(packet: &[u8]) -> Option<usize> {
    if packet.len() < FIXED_HEADER_LEN {
        return None;
    }
    let csrc_end = FIXED_HEADER_LEN + 4 * usize::from(packet[0] & 0x0f);
    let end = if packet[0] & 0x10 != 0 {
        let words = usize::from(read_u16(packet.get(csrc_end + 2..csrc_end + 4)?));
        csrc_end + 4 + 4 * words
    } else {
        csrc_end
    };
    (end <= packet.len()).then_some(end)
}

/// The playout-delay RTP header extension
/// (<http://www.webrtc.org/experiments/rtp-hdrext/playout-delay>): the
/// minimum and maximum delay a receiver's jitter buffer should target, each a
/// 12-bit count of 10 ms units (0 to 40.95 s). A sender adds it to the
/// packets of a video stream; the receiver applies the latest it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlayoutDelay {
    /// The id negotiated for the extension (a=extmap), 1 to 14 (a one-byte header, RFC 8285).
    pub extension_id: u8,
    /// In 10 ms units, at most [`PlayoutDelay::MAX_UNITS`].
    pub min: u16,
    pub max: u16,
}

impl PlayoutDelay {
    pub const MAX_UNITS: u16 = 0x0fff;
    /// What the extension adds to a packet: the RFC 8285 one-byte-header
    /// block header (0xBEDE, length 1 word) and one 3-byte element, no padding.
    pub const HEADER_EXTENSION_LEN: usize = 8;

    /// A delay of `min_ms` to `max_ms` milliseconds (rounded down to 10 ms units); None
    /// if an id is not a one-byte-header id, a delay exceeds 40950 ms or `min_ms > max_ms`.
    pub fn from_millis(extension_id: u8, min_ms: u32, max_ms: u32) -> Option<Self> {
        let (min, max) = (min_ms / 10, max_ms / 10);
        let fits = (1..=14).contains(&extension_id) && max <= u32::from(Self::MAX_UNITS) && min <= max;
        fits.then_some(Self { extension_id, min: min as u16, max: max as u16 })
    }

    /// Writes the whole header extension (block header and element) into `out[..8]`.
    pub fn write_header_extension(&self, out: &mut [u8]) {
        let (min, max) = (self.min & Self::MAX_UNITS, self.max & Self::MAX_UNITS);
        out[..Self::HEADER_EXTENSION_LEN].copy_from_slice(&[
            0xbe,
            0xde,
            0,
            1,
            (self.extension_id << 4) | 2, // id, then length - 1: three bytes of data
            (min >> 4) as u8,
            ((min << 4) as u8) | (max >> 8) as u8,
            max as u8,
        ]);
    }
}

/// The value of header extension `id` (RFC 8285: the one-byte form, profile
/// 0xBEDE, and the two-byte form, profile 0x100X) in a packet whose `header`
/// parsed; None if the packet has no such element or its block is malformed.
/// Borrowed from the packet: nothing is allocated.
pub fn header_extension<'a>(packet: &'a [u8], header: &RtpHeader, id: u8) -> Option<&'a [u8]> {
    if packet[0] & 0x10 == 0 || id == 0 {
        return None;
    }
    let start = header.csrc_end;
    let profile = read_u16(packet.get(start..start + 2)?);
    let elements = packet.get(start + 4..header.payload_start)?;
    let two_byte = profile & 0xfff0 == 0x1000;
    if profile != 0xbede && !two_byte {
        return None;
    }
    let mut at = 0;
    while at < elements.len() {
        let first = elements[at];
        if first == 0 {
            at += 1; // padding
            continue;
        }
        let (element_id, len, value_at) = if two_byte {
            (first, usize::from(*elements.get(at + 1)?), at + 2)
        } else if first >> 4 == 15 {
            return None; // the one-byte form's reserved id: stop here
        } else {
            (first >> 4, usize::from(first & 0x0f) + 1, at + 1)
        };
        let value = elements.get(value_at..value_at + len)?;
        if element_id == id {
            return Some(value);
        }
        at = value_at + len;
    }
    None
}

pub fn read_u16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

pub fn read_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(first: u8, second: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![first, second, 0x12, 0x34, 0, 0, 0x0b, 0xb8, 0xde, 0xad, 0xbe, 0xef];
        p.extend_from_slice(rest);
        p
    }

    #[test]
    fn parses_a_plain_packet() {
        let header = RtpHeader::parse(&packet(0x80, 0xe0, b"abc")).unwrap();
        assert_eq!(
            header,
            RtpHeader {
                marker: true,
                payload_type: 96,
                sequence: 0x1234,
                timestamp: 3000,
                ssrc: 0xdead_beef,
                csrc_end: 12,
                payload_start: 12,
                payload_end: 15,
            }
        );
    }

    #[test]
    fn finds_payload_after_csrcs_and_extension() {
        let mut rest = vec![0, 0, 0, 1]; // one CSRC
        rest.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]); // one-word extension
        rest.extend_from_slice(b"xy");
        let header = RtpHeader::parse(&packet(0x91, 0x60, &rest)).unwrap();
        assert_eq!((header.csrc_end, header.payload_start, header.payload_end), (16, 24, 26));
        assert_eq!(header_len(&packet(0x91, 0x60, &rest)), Some(24));
    }

    #[test]
    fn removes_padding_from_the_payload() {
        let header = RtpHeader::parse(&packet(0xa0, 0x60, &[1, 2, 0, 2])).unwrap();
        assert_eq!(header.payload_end, 14);
    }

    #[test]
    fn refuses_what_is_not_rtp() {
        assert_eq!(RtpHeader::parse(&[0x80; 11]), None, "too short");
        assert_eq!(RtpHeader::parse(&packet(0x40, 0x60, b"abc")), None, "version 1");
        assert_eq!(RtpHeader::parse(&packet(0x82, 0x60, b"abcd")), None, "CSRCs past the end");
        assert_eq!(RtpHeader::parse(&packet(0x90, 0x60, &[0xbe, 0xde])), None, "cut extension header");
        assert_eq!(
            RtpHeader::parse(&packet(0x90, 0x60, &[0xbe, 0xde, 0, 2, 0, 0, 0, 0])),
            None,
            "extension past the end"
        );
        assert_eq!(RtpHeader::parse(&packet(0xa0, 0x60, &[1, 2, 0, 0])), None, "zero padding");
        assert_eq!(RtpHeader::parse(&packet(0xa0, 0x60, &[1, 9])), None, "padding past the payload");
        assert_eq!(RtpHeader::parse(&packet(0x80, 0xc8, b"abcd")), None, "RTCP sender report");
        assert_eq!(header_len(&packet(0x8f, 0x60, b"")), None);
    }

    #[test]
    fn writes_the_playout_delay_extension() {
        let delay = PlayoutDelay::from_millis(12, 1000, 40950).unwrap();
        assert_eq!((delay.min, delay.max), (100, 4095));
        let mut out = [0u8; 8];
        delay.write_header_extension(&mut out);
        // min 100 = 0x064, max 4095 = 0xfff: 0x06 0x4f 0xff
        assert_eq!(out, [0xbe, 0xde, 0x00, 0x01, 0xc2, 0x06, 0x4f, 0xff]);
        PlayoutDelay::from_millis(1, 0, 0).unwrap().write_header_extension(&mut out);
        assert_eq!(out, [0xbe, 0xde, 0x00, 0x01, 0x12, 0, 0, 0]);
        PlayoutDelay::from_millis(14, 10, 2005).unwrap().write_header_extension(&mut out);
        assert_eq!(out, [0xbe, 0xde, 0x00, 0x01, 0xe2, 0x00, 0x10, 0xc8]);
    }

    #[test]
    fn refuses_playout_delays_the_extension_cannot_carry() {
        assert_eq!(PlayoutDelay::from_millis(0, 0, 10), None, "id 0 is padding");
        assert_eq!(PlayoutDelay::from_millis(15, 0, 10), None, "id 15 is reserved");
        assert_eq!(PlayoutDelay::from_millis(3, 0, 40960), None, "past 12 bits");
        assert_eq!(PlayoutDelay::from_millis(3, 200, 100), None, "min above max");
        assert!(PlayoutDelay::from_millis(3, 105, 109).is_some(), "the same 10 ms unit");
    }
    #[test]
    fn finds_header_extensions_in_both_forms() {
        // One-byte form: id 3 = "a" (mid), padding, id 9 = "hi" (rid), then padding to a word.
        let one_byte = [&[0xbe, 0xde, 0, 2][..], &[0x30, b'a', 0, 0x91, b'h', b'i', 0, 0], b"payload"].concat();
        let p = packet(0x90, 96, &one_byte);
        let header = RtpHeader::parse(&p).unwrap();
        assert_eq!(header_extension(&p, &header, 3), Some(&b"a"[..]));
        assert_eq!(header_extension(&p, &header, 9), Some(&b"hi"[..]));
        assert_eq!(header_extension(&p, &header, 4), None);
        assert_eq!(&p[header.payload_start..], b"payload");
        // Two-byte form (0x1000): id 3 len 2 "q1", padding, id 200 len 0.
        let two_byte = [&[0x10, 0x00, 0, 2][..], &[3, 2, b'q', b'1', 0, 200, 0, 0], b"x"].concat();
        let p = packet(0x90, 96, &two_byte);
        let header = RtpHeader::parse(&p).unwrap();
        assert_eq!(header_extension(&p, &header, 3), Some(&b"q1"[..]));
        assert_eq!(header_extension(&p, &header, 200), Some(&b""[..]));
        // A length running past the block, another profile, no extension at all.
        let overrun = [&[0xbe, 0xde, 0, 1][..], &[0x3f, b'a', b'b', b'c'], b"x"].concat();
        let p = packet(0x90, 96, &overrun);
        assert_eq!(header_extension(&p, &RtpHeader::parse(&p).unwrap(), 3), None);
        let other = [&[0xab, 0xcd, 0, 1][..], &[0x30, b'a', 0, 0]].concat();
        let p = packet(0x90, 96, &other);
        assert_eq!(header_extension(&p, &RtpHeader::parse(&p).unwrap(), 3), None);
        let plain = packet(0x80, 96, b"abc");
        assert_eq!(header_extension(&plain, &RtpHeader::parse(&plain).unwrap(), 3), None);
    }
}
