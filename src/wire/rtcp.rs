//! The sender reports the engine sends for each viewer stream (RFC 3550
//! sections 6.4.1 and 6.5): a compound SR + SDES CNAME.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const CNAME: &[u8] = b"fanout";
const SENDER_REPORT: u8 = 200;
const SOURCE_DESCRIPTION: u8 = 202;
const SDES_CNAME: u8 = 1;
const SENDER_REPORT_LEN: usize = 28;
/// SDES header, SSRC, CNAME item, then at least one zero byte up to a 32-bit boundary.
const SDES_LEN: usize = (4 + 4 + 2 + CNAME.len() + 1).div_ceil(4) * 4;
pub const COMPOUND_REPORT_LEN: usize = SENDER_REPORT_LEN + SDES_LEN;
const NTP_UNIX_OFFSET_SECONDS: u64 = 2_208_988_800;

/// What one sender report tells about one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderInfo {
    pub ssrc: u32,
    pub ntp_time: u64,
    pub rtp_timestamp: u32,
    pub packets: u32,
    pub octets: u32,
}

/// The NTP timestamp (RFC 5905: seconds since 1900 . fraction) of `time`.
pub fn ntp_time(time: SystemTime) -> u64 {
    let since_unix = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let seconds = since_unix.as_secs() + NTP_UNIX_OFFSET_SECONDS;
    let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// Writes SR + SDES CNAME into `buf` and returns its length.
pub fn write_sender_report(buf: &mut [u8], info: &SenderInfo) -> usize {
    let (report, sdes) = buf[..COMPOUND_REPORT_LEN].split_at_mut(SENDER_REPORT_LEN);
    report[0] = 0x80; // V=2, no padding, no report blocks
    report[1] = SENDER_REPORT;
    report[2..4].copy_from_slice(&((SENDER_REPORT_LEN / 4 - 1) as u16).to_be_bytes());
    report[4..8].copy_from_slice(&info.ssrc.to_be_bytes());
    report[8..16].copy_from_slice(&info.ntp_time.to_be_bytes());
    report[16..20].copy_from_slice(&info.rtp_timestamp.to_be_bytes());
    report[20..24].copy_from_slice(&info.packets.to_be_bytes());
    report[24..28].copy_from_slice(&info.octets.to_be_bytes());

    sdes.fill(0);
    sdes[0] = 0x81; // V=2, one chunk
    sdes[1] = SOURCE_DESCRIPTION;
    sdes[2..4].copy_from_slice(&((SDES_LEN / 4 - 1) as u16).to_be_bytes());
    sdes[4..8].copy_from_slice(&info.ssrc.to_be_bytes());
    sdes[8] = SDES_CNAME;
    sdes[9] = CNAME.len() as u8;
    sdes[10..10 + CNAME.len()].copy_from_slice(CNAME);
    COMPOUND_REPORT_LEN
}

/// Whether `packet` starts like RTCP: version 2, a packet type in 192..=223 and
/// lengths that tile the packet exactly.
pub fn is_rtcp(packet: &[u8]) -> bool {
    let mut offset = 0;
    while offset < packet.len() {
        let Some(header) = packet.get(offset..offset + 4) else {
            return false;
        };
        if header[0] >> 6 != 2 || !(192..=223).contains(&header[1]) {
            return false;
        }
        offset += 4 * (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1);
    }
    offset == packet.len() && !packet.is_empty()
}

const TRANSPORT_FEEDBACK: u8 = 205;
const GENERIC_NACK: u8 = 1;

/// The Generic NACKs (RFC 4585 section 6.2.1) in a compound RTCP packet:
/// calls `lost(media_ssrc, sequence)` for every packet they report lost, in
/// order. A pure function of the bytes; it stops at the first malformed length.
pub fn for_each_nack(packet: &[u8], mut lost: impl FnMut(u32, u16)) {
    let mut offset = 0;
    while let Some(header) = packet.get(offset..offset + 4) {
        let len = 4 * (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1);
        let Some(body) = packet.get(offset..offset + len) else {
            return;
        };
        if header[0] >> 6 == 2 && header[1] == TRANSPORT_FEEDBACK && header[0] & 0x1f == GENERIC_NACK && len >= 12 {
            let media_ssrc = u32::from_be_bytes([body[8], body[9], body[10], body[11]]);
            for fci in body[12..].chunks_exact(4) {
                let first = u16::from_be_bytes([fci[0], fci[1]]);
                let bitmask = u16::from_be_bytes([fci[2], fci[3]]);
                lost(media_ssrc, first);
                for bit in 0..16 {
                    if bitmask & (1 << bit) != 0 {
                        lost(media_ssrc, first.wrapping_add(bit + 1));
                    }
                }
            }
        }
        offset += len;
    }
}

const PAYLOAD_FEEDBACK: u8 = 206;
pub const PSFB_PLI: u8 = 1;
pub const PSFB_FIR: u8 = 4;

/// The payload-specific feedback messages (RFC 4585 section 6.3) in a
/// compound RTCP packet: calls `feedback(format, media_ssrc, fci)` for each.
pub fn for_each_psfb(packet: &[u8], mut feedback: impl FnMut(u8, u32, &[u8])) {
    let mut offset = 0;
    while let Some(header) = packet.get(offset..offset + 4) {
        let len = 4 * (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1);
        let Some(body) = packet.get(offset..offset + len) else {
            return;
        };
        if header[0] >> 6 == 2 && header[1] == PAYLOAD_FEEDBACK && len >= 12 {
            let media_ssrc = u32::from_be_bytes([body[8], body[9], body[10], body[11]]);
            feedback(header[0] & 0x1f, media_ssrc, &body[12..]);
        }
        offset += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_generic_nacks_in_a_compound_packet() {
        let receiver_report = [0x80, 201, 0, 1, 0, 0, 0, 9];
        // NACK from SSRC 9 about media SSRC 0x11223344: 0xfffe + bits 0 and 2 (0xffff, 0x0001); then 7.
        let nack =
            [0x81, 205, 0, 4, 0, 0, 0, 9, 0x11, 0x22, 0x33, 0x44, 0xff, 0xfe, 0b0000_0000, 0b0000_0101, 0, 7, 0, 0];
        let pli = [0x81, 206, 0, 2, 0, 0, 0, 9, 0x11, 0x22, 0x33, 0x44];
        let compound: Vec<u8> = [&receiver_report[..], &nack, &pli].concat();
        let mut lost = Vec::new();
        for_each_nack(&compound, |ssrc, sequence| lost.push((ssrc, sequence)));
        assert_eq!(lost, [(0x11223344, 0xfffe), (0x11223344, 0xffff), (0x11223344, 1), (0x11223344, 7)]);
        let mut cut = Vec::new();
        for_each_nack(&compound[..compound.len() - 13], |ssrc, sequence| cut.push((ssrc, sequence)));
        assert!(cut.is_empty(), "the NACK's length runs past the end");
        for_each_nack(&[], |_, _| panic!("nothing to find"));
    }

    #[test]
    fn writes_sr_and_sdes_cname() {
        let mut buf = [0xffu8; 64];
        let info = SenderInfo {
            ssrc: 0x0102_0304,
            ntp_time: 0xe000_0000_8000_0000,
            rtp_timestamp: 90_000,
            packets: 7,
            octets: 7000,
        };
        let len = write_sender_report(&mut buf, &info);
        let expected: &[u8] = &[
            0x80, 200, 0, 6, 1, 2, 3, 4, 0xe0, 0, 0, 0, 0x80, 0, 0, 0, 0, 1, 0x5f, 0x90, 0, 0, 0, 7, 0, 0, 0x1b,
            0x58, // SR
            0x81, 202, 0, 4, 1, 2, 3, 4, 1, 6, b'f', b'a', b'n', b'o', b'u', b't', 0, 0, 0, 0, // SDES
        ];
        assert_eq!(&buf[..len], expected);
        assert!(is_rtcp(&buf[..len]));
    }

    #[test]
    fn ntp_time_counts_from_1900() {
        let time = UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(ntp_time(time), ((NTP_UNIX_OFFSET_SECONDS + 1) << 32) | 0x8000_0000);
    }

    #[test]
    fn recognises_rtcp() {
        assert!(is_rtcp(&[0x80, 201, 0, 1, 1, 2, 3, 4]));
        assert!(!is_rtcp(&[0x80, 201, 0, 2, 1, 2, 3, 4]), "length past the end");
        assert!(!is_rtcp(&[0x80, 96, 0, 1, 1, 2, 3, 4]), "RTP");
        assert!(!is_rtcp(&[0x40, 201, 0, 1, 1, 2, 3, 4]), "version 1");
        assert!(!is_rtcp(&[]));
    }
}
