//! The sender reports the engine sends for each viewer stream (RFC 3550
//! sections 6.4.1 and 6.5): a compound SR + SDES CNAME.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyo3::pyclass;

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

/// What the engine saw in a peer's RTCP packet and did about it
/// (`Engine::receive_rtcp`): the packet's
/// [`RtcpSummary`] as the control plane reads it, and the engine's actions.
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtcpReport {
    /// Sequence numbers its Generic NACKs asked for (about any SSRC).
    pub nacks: u64,
    /// Of those, the ones about the peer's streams, handed to its worker to
    /// resend (it resends those still in its history: PeerStats.retransmissions).
    pub retransmitted: u64,
    /// PLIs/FIRs about its streams sent on to a source (at most one per stream per second).
    pub plis_forwarded: u64,
    /// PLIs and FIRs in it.
    pub keyframe_requests: u64,
    /// The report blocks of its receiver (and sender) reports.
    pub receiver_reports: Vec<ReceptionReport>,
    /// Its bitrate estimate, if it carried one.
    pub remb: Option<Remb>,
    /// Packets of other types (SDES, BYE, XR, other feedback...).
    pub other: u64,
}

impl RtcpReport {
    /// Whether it carried something the control plane acts on: report blocks
    /// (loss, jitter, round trip), a REMB, NACKs or keyframe requests (counted).
    /// Transport feedback, SDES and the like matter to the engine alone.
    pub fn matters_to_the_control_plane(&self) -> bool {
        !self.receiver_reports.is_empty() || self.remb.is_some() || self.nacks > 0 || self.keyframe_requests > 0
    }
}

const RECEIVER_REPORT: u8 = 201;
const PSFB_APPLICATION: u8 = 15;
const REPORT_BLOCK_LEN: usize = 24;

/// A report block of a sender or receiver report (RFC 3550 section 6.4.1):
/// how one of the peer's streams reaches it.
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceptionReport {
    /// The SSRC of the stream it is about.
    pub ssrc: u32,
    /// Packets lost since the previous report, in 256ths.
    pub fraction_lost: u8,
    /// Cumulative, signed (duplicates can make it negative).
    pub packets_lost: i32,
    /// Extended highest sequence number received.
    pub highest_sequence: u32,
    /// Interarrival jitter, in RTP timestamp units.
    pub jitter: u32,
    /// The middle 32 bits of the NTP time of the last sender report received.
    pub last_sr: u32,
    /// Since then, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

impl ReceptionReport {
    fn parse(block: &[u8; REPORT_BLOCK_LEN]) -> Self {
        let word = |at: usize| u32::from_be_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]]);
        let lost = word(4) & 0x00ff_ffff;
        Self {
            ssrc: word(0),
            fraction_lost: block[4],
            packets_lost: ((lost << 8) as i32) >> 8, // sign-extend 24 bits
            highest_sequence: word(8),
            jitter: word(12),
            last_sr: word(16),
            delay_since_last_sr: word(20),
        }
    }
}

/// A Receiver Estimated Maximum Bitrate (draft-alvestrand-rmcat-remb).
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remb {
    /// Bits per second.
    pub bitrate: u64,
    /// The streams it is about.
    pub ssrcs: Vec<u32>,
}

impl Remb {
    /// The REMB in a payload-specific feedback message's FCI, if it is one.
    fn parse(fci: &[u8]) -> Option<Self> {
        let (header, rest) = (fci.get(..8)?, &fci[8.min(fci.len())..]);
        if &header[..4] != b"REMB" || rest.len() != 4 * usize::from(header[4]) {
            return None;
        }
        let exponent = header[5] >> 2;
        let mantissa = u64::from(u32::from_be_bytes([0, header[5] & 0x03, header[6], header[7]]));
        let ssrcs = rest.chunks_exact(4).map(|ssrc| u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]])).collect();
        Some(Self { bitrate: mantissa.checked_shl(u32::from(exponent)).unwrap_or(u64::MAX), ssrcs })
    }
}

/// What a peer's compound RTCP packet says, as far as the control plane
/// cares: the parts the engine acts on itself are counted, the rest kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RtcpSummary {
    /// Sequence numbers the Generic NACKs ask for.
    pub nacks: u64,
    /// PLIs and FIRs.
    pub keyframe_requests: u64,
    /// The report blocks of its receiver (and sender) reports.
    pub receiver_reports: Vec<ReceptionReport>,
    /// The last REMB in it.
    pub remb: Option<Remb>,
    /// Packets of any other type (SDES, BYE, XR, other feedback...).
    pub other: u64,
}

/// Reads a (well-formed, see [`is_rtcp`]) compound RTCP packet; a pure
/// function of the bytes that stops at the first malformed length.
pub fn summarize(packet: &[u8]) -> RtcpSummary {
    let mut summary = RtcpSummary::default();
    let mut offset = 0;
    while let Some(header) = packet.get(offset..offset + 4) {
        let len = 4 * (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1);
        let Some(body) = packet.get(offset..offset + len) else {
            break;
        };
        let count = header[0] & 0x1f; // report count, or feedback format
        match (header[1], count) {
            (SENDER_REPORT | RECEIVER_REPORT, _) => {
                let blocks_at = if header[1] == SENDER_REPORT { SENDER_REPORT_LEN } else { 8 };
                let blocks = body.get(blocks_at..).unwrap_or_default();
                for block in blocks.chunks_exact(REPORT_BLOCK_LEN).take(usize::from(count)) {
                    summary.receiver_reports.push(ReceptionReport::parse(block.try_into().expect("24 bytes")));
                }
            }
            (TRANSPORT_FEEDBACK, GENERIC_NACK) => {
                for_each_nack(body, |_, _| summary.nacks += 1);
            }
            (PAYLOAD_FEEDBACK, PSFB_PLI | PSFB_FIR) if len >= 12 => summary.keyframe_requests += 1,
            (PAYLOAD_FEEDBACK, PSFB_APPLICATION) if len >= 12 => match Remb::parse(&body[12..]) {
                Some(remb) => summary.remb = Some(remb),
                None => summary.other += 1,
            },
            _ => summary.other += 1,
        }
        offset += len;
    }
    summary
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
    fn summarizes_receiver_reports_remb_and_feedback() {
        // RR from SSRC 9 with two blocks: one losing 1/4 of 5 packets, one with -2 (duplicates).
        let mut receiver_report = vec![0x82, 201, 0, 13, 0, 0, 0, 9];
        receiver_report.extend([0, 0, 0, 1, 64, 0, 0, 5, 0, 1, 0, 7, 0, 0, 0, 30, 0xa, 0xb, 0xc, 0xd, 0, 1, 0, 0]);
        receiver_report.extend([0, 0, 0, 2, 0, 0xff, 0xff, 0xfe, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        // REMB: 1 SSRC, exponent 2, mantissa 0x30000 (786432 bit/s), about SSRC 1.
        let remb = [0x8f, 206, 0, 5, 0, 0, 0, 9, 0, 0, 0, 0, b'R', b'E', b'M', b'B', 1, 0x0b, 0, 0, 0, 0, 0, 1];
        let nack = [0x81, 205, 0, 3, 0, 0, 0, 9, 0, 0, 0, 1, 0, 5, 0b0000_0000, 0b0000_0011];
        let pli = [0x81, 206, 0, 2, 0, 0, 0, 9, 0, 0, 0, 1];
        let sdes = [0x81, 202, 0, 2, 0, 0, 0, 9, 0, 0, 0, 0];
        let compound: Vec<u8> = [&receiver_report[..], &remb, &nack, &pli, &sdes].concat();
        assert!(is_rtcp(&compound));

        let summary = summarize(&compound);

        let first = ReceptionReport {
            ssrc: 1,
            fraction_lost: 64,
            packets_lost: 5,
            highest_sequence: 0x1_0007,
            jitter: 30,
            last_sr: 0x0a0b_0c0d,
            delay_since_last_sr: 0x1_0000,
        };
        assert_eq!(summary.receiver_reports[0], first);
        assert_eq!(summary.receiver_reports[1].packets_lost, -2);
        assert_eq!(summary.remb, Some(Remb { bitrate: 0x30000 << 2, ssrcs: vec![1] }));
        assert_eq!((summary.nacks, summary.keyframe_requests, summary.other), (3, 1, 1));
        assert_eq!(summarize(&compound[..compound.len() - 1]).other, 0, "cut: the SDES is not read");
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
