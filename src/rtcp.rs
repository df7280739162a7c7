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
        let Some(header) = packet.get(offset..offset + 4) else { return false };
        if header[0] >> 6 != 2 || !(192..=223).contains(&header[1]) {
            return false;
        }
        offset += 4 * (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1);
    }
    offset == packet.len() && !packet.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

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
