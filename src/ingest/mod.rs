//! From a source's socket to shared packets: the receiver thread that reads
//! every source socket and hands packets to the workers ([`receiver`]), each
//! source stream's RTCP port ([`source_rtcp`]), the viewers' RTCP read from the
//! WebRTC socket ([`socket_reader`]) and, here, the ingest stage.
//!
//! What a source stream does to each datagram before it becomes a shared
//! packet, as the mountpoint's options ask (Janus's names in brackets):
//!
//! - SRTP decryption with keys given out of band (`srtpsuite`, `srtpcrypto`);
//! - the payload type lock: packets with a payload type the stream was not
//!   configured with are dropped (RTCP sent to the RTP port, or packets
//!   injected by someone who is not the source);
//! - the SSRC lock: while the current source is alive, packets with another
//!   SSRC are dropped, so that two encoders sent to one port by mistake do not
//!   interleave (`collision`: how long the current SSRC must be silent before
//!   another may take over);
//! - H.264 parameter sets put before keyframes that come without them
//!   (`h264sps`): sources that announce SPS and PPS only out of band (in an
//!   SDP's sprop-parameter-sets) are not decodable by browsers otherwise;
//! - clock skew compensation (`skew`): a source whose clock runs fast or slow
//!   against the server's is brought back in line, so that the viewers' jitter
//!   buffers neither grow nor starve over hours.
//!
//! Dropping or inserting packets renumbers the ones after them, so viewers
//! still see contiguous sequence numbers: each packet's sequence number and
//! timestamp are moved by the stream's running shifts. Sans-IO: each method
//! takes the time it runs at.

pub mod interleaved;
pub mod publisher;
pub mod receiver;
pub mod socket_reader;
pub mod recorder;
pub mod source_rtcp;

use crate::media::MediaKind;
use crate::wire::codec::{h264_carries_sps, H264_STAP_A};
use crate::wire::rtp::{RtpHeader, FIXED_HEADER_LEN};
use crate::wire::srtp::{Profile, SrtpError, SrtpInbound, SrtpSession};

/// The options of one source stream; the default changes nothing.
#[derive(Clone, Debug, Default)]
pub struct IngestOptions {
    /// The source's SRTP profile and master key || salt.
    pub srtp: Option<(Profile, Vec<u8>)>,
    /// Milliseconds the current SSRC must be silent before another takes over; 0: any SSRC at once.
    pub collision_ms: u32,
    /// The payload types the source may send; empty: any.
    pub payload_types: Vec<u8>,
    /// H.264 parameter set NAL units (SPS, PPS) to send before each keyframe that lacks an SPS.
    pub h264_parameter_sets: Vec<Vec<u8>>,
    pub skew_compensation: bool,
}

/// What became of one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it; when `parameter_sets_first`, the packet from
    /// [`Ingest::write_parameter_sets`] goes first.
    Forward { parameter_sets_first: bool },
    /// Another SSRC holds the stream.
    Collision,
    /// A payload type the stream does not take.
    WrongPayloadType,
    /// Dropped to bring a fast source's clock back in line.
    SkewDropped,
}

pub struct Ingest {
    srtp: Option<SrtpInbound>,
    collision_ns: u64,
    payload_types: Vec<u8>,
    /// The SSRC that holds the stream, and when its latest packet came.
    holder: Option<(u32, u64)>,
    /// The STAP-A payload carrying the configured parameter sets.
    parameter_sets: Option<Vec<u8>>,
    /// The RTP timestamp of the latest access unit that came with an SPS.
    sps_timestamp: Option<u32>,
    skew: Option<SkewCompensator>,
    sequence_shift: u16,
    timestamp_shift: u32,
    /// Ticks the skew compensation moved the timestamps, in total.
    pub skew_ticks: i64,
}

/// The largest STAP-A of parameter sets: it must fit in one packet with room to spare.
const MAX_PARAMETER_SETS_LEN: usize = 1000;

impl Ingest {
    pub fn new(options: &IngestOptions, kind: MediaKind, clock_rate: u32) -> Result<Self, String> {
        let srtp = options
            .srtp
            .as_ref()
            .map(|(profile, key)| SrtpSession::new(*profile, key).map(SrtpInbound::new))
            .transpose()
            .map_err(|error| format!("SRTP key: {error}"))?;
        let parameter_sets =
            (!options.h264_parameter_sets.is_empty()).then(|| stap_a(&options.h264_parameter_sets)).transpose()?;
        let skew = (options.skew_compensation && kind != MediaKind::Data)
            .then(|| SkewCompensator::new(kind == MediaKind::Audio, clock_rate));
        Ok(Self {
            srtp,
            collision_ns: u64::from(options.collision_ms) * 1_000_000,
            payload_types: options.payload_types.clone(),
            holder: None,
            parameter_sets,
            sps_timestamp: None,
            skew,
            sequence_shift: 0,
            timestamp_shift: 0,
            skew_ticks: 0,
        })
    }

    /// Decrypts SRTP in place (when the stream has keys); the RTP length.
    pub fn decrypt(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        match &mut self.srtp {
            Some(srtp) => srtp.unprotect(buf, len),
            None => Ok(len),
        }
    }

    /// Decides what becomes of a packet with a valid `header` and `payload`,
    /// and moves the shifts for it; then [`Ingest::renumber`] rewrites it.
    /// `restarted`: the source restarted with it (new SSRC, jump in sequence).
    pub fn admit(
        &mut self,
        header: &RtpHeader,
        payload: &[u8],
        keyframe_start: bool,
        restarted: bool,
        now_ns: u64,
    ) -> Verdict {
        if !self.payload_types.is_empty() && !self.payload_types.contains(&header.payload_type) {
            return Verdict::WrongPayloadType;
        }
        if self.collision_ns > 0 {
            match self.holder {
                Some((ssrc, last_ns)) if ssrc != header.ssrc && now_ns.saturating_sub(last_ns) < self.collision_ns => {
                    return Verdict::Collision;
                }
                _ => self.holder = Some((header.ssrc, now_ns)),
            }
        }
        if let Some(skew) = &mut self.skew {
            if restarted {
                skew.reset();
            }
            match skew.observe(header.timestamp, now_ns) {
                SkewAction::Keep => {}
                SkewAction::Drop(ticks) => {
                    self.sequence_shift = self.sequence_shift.wrapping_sub(1);
                    self.timestamp_shift = self.timestamp_shift.wrapping_sub(ticks);
                    self.skew_ticks -= i64::from(ticks);
                    return Verdict::SkewDropped;
                }
                SkewAction::Shift(ticks) => {
                    self.timestamp_shift = self.timestamp_shift.wrapping_add(ticks as u32);
                    self.skew_ticks += ticks;
                }
            }
        }
        let mut parameter_sets_first = false;
        if self.parameter_sets.is_some() {
            if h264_carries_sps(payload) {
                self.sps_timestamp = Some(header.timestamp);
            } else if keyframe_start && self.sps_timestamp != Some(header.timestamp) {
                self.sps_timestamp = Some(header.timestamp);
                self.sequence_shift = self.sequence_shift.wrapping_add(1);
                parameter_sets_first = true;
            }
        }
        Verdict::Forward { parameter_sets_first }
    }

    /// Moves the sequence number and timestamp of an admitted packet by the
    /// stream's shifts, in `packet` and in `header`.
    pub fn renumber(&self, packet: &mut [u8], header: &mut RtpHeader) {
        if self.sequence_shift == 0 && self.timestamp_shift == 0 {
            return;
        }
        header.sequence = header.sequence.wrapping_add(self.sequence_shift);
        header.timestamp = header.timestamp.wrapping_add(self.timestamp_shift);
        packet[2..4].copy_from_slice(&header.sequence.to_be_bytes());
        packet[4..8].copy_from_slice(&header.timestamp.to_be_bytes());
    }

    /// Writes to `out` the packet of parameter sets that goes before
    /// `keyframe` (already renumbered): same SSRC, payload type and timestamp,
    /// the sequence number before it. Returns its length.
    pub fn write_parameter_sets(&self, keyframe: &RtpHeader, out: &mut [u8]) -> usize {
        let payload = self.parameter_sets.as_deref().unwrap_or_default();
        out[0] = 0x80;
        out[1] = keyframe.payload_type;
        out[2..4].copy_from_slice(&keyframe.sequence.wrapping_sub(1).to_be_bytes());
        out[4..8].copy_from_slice(&keyframe.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&keyframe.ssrc.to_be_bytes());
        out[FIXED_HEADER_LEN..FIXED_HEADER_LEN + payload.len()].copy_from_slice(payload);
        FIXED_HEADER_LEN + payload.len()
    }
}

/// A STAP-A (RFC 6184 section 5.7.1) aggregating `units`; its NRI is the highest of theirs.
fn stap_a(units: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    if units.iter().any(|unit| unit.is_empty()) {
        return Err("an H.264 parameter set is empty".into());
    }
    let nri = units.iter().map(|unit| unit[0] & 0x60).max().unwrap_or(0);
    let mut payload = vec![nri | H264_STAP_A];
    for unit in units {
        payload.extend_from_slice(&(unit.len() as u16).to_be_bytes());
        payload.extend_from_slice(unit);
        if payload.len() > MAX_PARAMETER_SETS_LEN {
            return Err(format!("H.264 parameter sets longer than {MAX_PARAMETER_SETS_LEN} bytes"));
        }
    }
    Ok(payload)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SkewAction {
    Keep,
    /// Drop the packet; those after it move back by this many ticks.
    Drop(u32),
    /// Move this packet and the ones after it by this many ticks.
    Shift(i64),
}

/// How long the drift is watched before it is judged, and a gap that starts the watch again.
const SKEW_WINDOW_NS: u64 = 500_000_000;
const SKEW_GAP_NS: u64 = 1_000_000_000;

/// Follows how far a source's RTP clock has run ahead of (or behind) the
/// server's since it started, and asks for corrections once the drift passes
/// a threshold: 20 ms or one packet for audio, 40 ms for video.
///
/// Network and encoder delays only ever make packets late, so the packet that
/// came earliest in each half-second window (the highest drift) measures the
/// clocks; the first window gives the baseline. A source ahead is pulled back
/// by dropping audio packets (a few milliseconds of sound, once in a while) or
/// by bringing video frames closer together (at most half a frame interval
/// each, so timestamps never go backwards); a source behind is moved forward
/// in one step, at a new timestamp.
struct SkewCompensator {
    audio: bool,
    clock_rate: u64,
    started: bool,
    reference_ns: u64,
    /// Ticks the source's timestamps advanced since the reference (unwrapped).
    source_ticks: i64,
    /// Ticks the compensation moved the timestamps since the reference.
    corrected_ticks: i64,
    last_timestamp: u32,
    last_arrival_ns: u64,
    /// Audio: the usual timestamp step between packets.
    packet_ticks: u32,
    baseline: Option<i64>,
    window_end_ns: u64,
    window_max: i64,
    /// The correction still to make (negative: the source is ahead).
    pending_ticks: i64,
}

impl SkewCompensator {
    fn new(audio: bool, clock_rate: u32) -> Self {
        Self {
            audio,
            clock_rate: u64::from(clock_rate),
            started: false,
            reference_ns: 0,
            source_ticks: 0,
            corrected_ticks: 0,
            last_timestamp: 0,
            last_arrival_ns: 0,
            packet_ticks: 0,
            baseline: None,
            window_end_ns: 0,
            window_max: i64::MIN,
            pending_ticks: 0,
        }
    }

    fn reset(&mut self) {
        self.started = false;
    }

    fn threshold(&self) -> i64 {
        let ms = if self.audio { 20 } else { 40 };
        let ticks = (self.clock_rate * ms / 1000) as i64;
        if self.audio {
            ticks.max(i64::from(self.packet_ticks))
        } else {
            ticks
        }
    }

    fn observe(&mut self, timestamp: u32, now_ns: u64) -> SkewAction {
        if !self.started || now_ns.saturating_sub(self.last_arrival_ns) > SKEW_GAP_NS {
            let packet_ticks = self.packet_ticks;
            *self = Self::new(self.audio, self.clock_rate as u32);
            self.packet_ticks = packet_ticks;
            self.started = true;
            self.reference_ns = now_ns;
            self.last_timestamp = timestamp;
            self.last_arrival_ns = now_ns;
            self.window_end_ns = now_ns + SKEW_WINDOW_NS;
            return SkewAction::Keep;
        }
        let step = i64::from(timestamp.wrapping_sub(self.last_timestamp) as i32);
        self.last_timestamp = timestamp;
        self.last_arrival_ns = now_ns;
        self.source_ticks += step;
        if self.audio && step > 0 {
            self.packet_ticks = step as u32;
        }
        let action = if step > 0 { self.correct(step) } else { SkewAction::Keep };
        if action == SkewAction::Keep || matches!(action, SkewAction::Shift(_)) {
            self.measure(now_ns);
        }
        action
    }

    /// Makes (part of) the pending correction at a packet that starts a new timestamp.
    fn correct(&mut self, step: i64) -> SkewAction {
        if self.pending_ticks > 0 {
            let ticks = std::mem::take(&mut self.pending_ticks);
            self.corrected_ticks += ticks;
            return SkewAction::Shift(ticks);
        }
        if self.pending_ticks < 0 {
            if self.audio {
                let ticks = i64::from(self.packet_ticks).max(1);
                self.pending_ticks = (self.pending_ticks + ticks).min(0);
                self.corrected_ticks -= ticks;
                return SkewAction::Drop(ticks as u32);
            }
            let ticks = (-self.pending_ticks).min(step / 2);
            if ticks > 0 {
                self.pending_ticks += ticks;
                self.corrected_ticks -= ticks;
                return SkewAction::Shift(-ticks);
            }
        }
        SkewAction::Keep
    }

    fn measure(&mut self, now_ns: u64) {
        let wall_ticks = (u128::from(now_ns - self.reference_ns) * u128::from(self.clock_rate) / 1_000_000_000) as i64;
        let drift = self.source_ticks + self.corrected_ticks - wall_ticks;
        self.window_max = self.window_max.max(drift);
        if now_ns < self.window_end_ns {
            return;
        }
        let window_max = std::mem::replace(&mut self.window_max, i64::MIN);
        self.window_end_ns = now_ns + SKEW_WINDOW_NS;
        let Some(baseline) = self.baseline else {
            self.baseline = Some(window_max);
            return;
        };
        let excess = window_max - baseline + self.pending_ticks;
        let threshold = self.threshold();
        if excess.abs() < threshold {
            return;
        }
        self.pending_ticks = if self.audio {
            let packet = i64::from(self.packet_ticks).max(1);
            -(excess / packet) * packet
        } else {
            -excess
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn header(sequence: u16, timestamp: u32, ssrc: u32) -> RtpHeader {
        RtpHeader {
            marker: false,
            payload_type: 96,
            sequence,
            timestamp,
            ssrc,
            csrc_end: 12,
            payload_start: 12,
            payload_end: 12,
        }
    }

    fn forward() -> Verdict {
        Verdict::Forward { parameter_sets_first: false }
    }

    #[test]
    fn a_second_ssrc_waits_until_the_first_is_silent_for_the_collision_time() {
        let options = IngestOptions { collision_ms: 500, ..IngestOptions::default() };
        let mut ingest = Ingest::new(&options, MediaKind::Audio, 48000).unwrap();
        assert_eq!(ingest.admit(&header(1, 0, 7), b"", false, false, 1000 * MS), forward());
        assert_eq!(ingest.admit(&header(9, 0, 8), b"", false, true, 1100 * MS), Verdict::Collision);
        assert_eq!(ingest.admit(&header(2, 0, 7), b"", false, false, 1200 * MS), forward());
        assert_eq!(ingest.admit(&header(10, 0, 8), b"", false, true, 1650 * MS), Verdict::Collision);
        assert_eq!(ingest.admit(&header(11, 0, 8), b"", false, true, 1700 * MS), forward(), "7 silent for 500 ms");
        assert_eq!(ingest.admit(&header(3, 0, 7), b"", false, true, 1750 * MS), Verdict::Collision, "8 holds it now");
    }

    #[test]
    fn only_the_configured_payload_types_pass() {
        let options = IngestOptions { payload_types: vec![96], collision_ms: 500, ..IngestOptions::default() };
        let mut ingest = Ingest::new(&options, MediaKind::Video, 90000).unwrap();
        let mut rtcp_on_the_rtp_port = header(1, 0, 7);
        rtcp_on_the_rtp_port.payload_type = 200 & 0x7f;
        assert_eq!(ingest.admit(&rtcp_on_the_rtp_port, b"", false, false, 1000 * MS), Verdict::WrongPayloadType);
        assert_eq!(ingest.admit(&header(1, 0, 8), b"", false, false, 1001 * MS), forward());
        let mut injected = header(2, 0, 8);
        injected.payload_type = 100;
        assert_eq!(ingest.admit(&injected, b"", true, false, 1002 * MS), Verdict::WrongPayloadType);
        assert_eq!(ingest.admit(&header(2, 0, 9), b"", true, true, 1003 * MS), Verdict::Collision, "8 holds it");
    }

    #[test]
    fn without_collision_time_any_ssrc_is_taken() {
        let mut ingest = Ingest::new(&IngestOptions::default(), MediaKind::Audio, 48000).unwrap();
        assert_eq!(ingest.admit(&header(1, 0, 7), b"", false, false, 0), forward());
        assert_eq!(ingest.admit(&header(5, 0, 8), b"", false, true, 1), forward());
    }

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const IDR_START: &[u8] = &[0x7c, 0x85, 0x88];
    const IDR_MIDDLE: &[u8] = &[0x7c, 0x05, 0x88];

    fn with_parameter_sets() -> Ingest {
        let options =
            IngestOptions { h264_parameter_sets: vec![SPS.to_vec(), PPS.to_vec()], ..IngestOptions::default() };
        Ingest::new(&options, MediaKind::Video, 90000).unwrap()
    }

    fn packet(sequence: u16, timestamp: u32) -> Vec<u8> {
        let mut bytes = vec![0x80, 96];
        bytes.extend_from_slice(&sequence.to_be_bytes());
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&7u32.to_be_bytes());
        bytes
    }

    /// Admits and renumbers one packet; the sequence numbers the viewer would see.
    fn run(ingest: &mut Ingest, sequence: u16, timestamp: u32, payload: &[u8], keyframe_start: bool) -> Vec<u16> {
        let mut bytes = packet(sequence, timestamp);
        let mut header = header(sequence, timestamp, 7);
        let verdict = ingest.admit(&header, payload, keyframe_start, false, 0);
        ingest.renumber(&mut bytes, &mut header);
        assert_eq!(&bytes[2..4], &header.sequence.to_be_bytes());
        match verdict {
            Verdict::Forward { parameter_sets_first: true } => {
                let mut out = [0u8; 1200];
                let len = ingest.write_parameter_sets(&header, &mut out);
                let inserted = RtpHeader::parse(&out[..len]).unwrap();
                assert_eq!((inserted.timestamp, inserted.ssrc, inserted.payload_type), (timestamp, 7, 96));
                assert_eq!(&out[12..len], &[0x78, 0, 4, 0x67, 0x42, 0xc0, 0x1f, 0, 4, 0x68, 0xce, 0x3c, 0x80]);
                vec![inserted.sequence, header.sequence]
            }
            Verdict::Forward { parameter_sets_first: false } => vec![header.sequence],
            _ => vec![],
        }
    }

    #[test]
    fn parameter_sets_go_before_keyframes_without_them_and_the_numbering_stays_contiguous() {
        let mut ingest = with_parameter_sets();
        assert_eq!(run(&mut ingest, 100, 3000, IDR_START, true), [100, 101]);
        assert_eq!(run(&mut ingest, 101, 3000, IDR_MIDDLE, false), [102]);
        assert_eq!(run(&mut ingest, 102, 6000, &[0x41, 0x9a], false), [103]);
        assert_eq!(run(&mut ingest, 103, 9000, IDR_START, true), [104, 105]);
        // A source that sends its own SPS before the IDR gets nothing added.
        assert_eq!(run(&mut ingest, 104, 12000, SPS, true), [106]);
        assert_eq!(run(&mut ingest, 105, 12000, PPS, false), [107]);
        assert_eq!(run(&mut ingest, 106, 12000, IDR_START, true), [108]);
    }

    #[test]
    fn bad_parameter_sets_are_refused() {
        let empty = IngestOptions { h264_parameter_sets: vec![vec![]], ..IngestOptions::default() };
        assert!(Ingest::new(&empty, MediaKind::Video, 90000).is_err());
        let huge = IngestOptions { h264_parameter_sets: vec![vec![0x67; 2000]], ..IngestOptions::default() };
        assert!(Ingest::new(&huge, MediaKind::Video, 90000).is_err());
    }

    /// Feeds `seconds` of packets every `interval_ms` whose clock runs at
    /// `rate` times real time; returns the viewer's (arrival ms, timestamp) of
    /// the forwarded ones and how many were dropped.
    fn run_clock(audio: bool, rate: f64, interval_ms: u64, seconds: u64) -> (Vec<(u64, u32)>, usize) {
        let clock_rate = if audio { 48000 } else { 90000 };
        let options = IngestOptions { skew_compensation: true, ..IngestOptions::default() };
        let kind = if audio { MediaKind::Audio } else { MediaKind::Video };
        let mut ingest = Ingest::new(&options, kind, clock_rate).unwrap();
        let step = (f64::from(clock_rate) * interval_ms as f64 / 1000.0 * rate).round() as u32;
        let (mut forwarded, mut dropped) = (Vec::new(), 0);
        for i in 0..(seconds * 1000 / interval_ms) {
            let now_ms = 5000 + i * interval_ms;
            // Network jitter: some packets late by up to 15 ms, never early.
            let arrival_ms = now_ms + (i * 7919) % 16;
            let mut header = header(i as u16, 1000 + (i as u32) * step, 7);
            let mut bytes = packet(header.sequence, header.timestamp);
            match ingest.admit(&header, b"", false, false, arrival_ms * MS) {
                Verdict::SkewDropped => dropped += 1,
                _ => {
                    ingest.renumber(&mut bytes, &mut header);
                    forwarded.push((now_ms, header.timestamp));
                }
            }
        }
        (forwarded, dropped)
    }

    /// Milliseconds the viewer's timestamps ran ahead of the sender's wall clock, at the end.
    fn final_drift_ms(forwarded: &[(u64, u32)], clock_rate: f64) -> f64 {
        let (first_ms, first_ts) = forwarded[0];
        let (last_ms, last_ts) = *forwarded.last().unwrap();
        last_ts.wrapping_sub(first_ts) as f64 / clock_rate * 1000.0 - (last_ms - first_ms) as f64
    }

    #[test]
    fn a_fast_audio_clock_loses_packets_and_stays_in_line() {
        let (forwarded, dropped) = run_clock(true, 1.02, 20, 60);
        // 2% of 60 s is 1.2 s: about 60 packets of 20 ms.
        assert!((50..=62).contains(&dropped), "dropped {dropped}");
        assert!(final_drift_ms(&forwarded, 48000.0).abs() <= 45.0, "{}", final_drift_ms(&forwarded, 48000.0));
        let steps: std::collections::HashSet<u32> =
            forwarded.windows(2).map(|pair| pair[1].1.wrapping_sub(pair[0].1)).collect();
        assert_eq!(steps.len(), 1, "each packet one step after the last, as if none was dropped");
    }

    #[test]
    fn a_slow_audio_clock_jumps_ahead() {
        let (forwarded, dropped) = run_clock(true, 0.98, 20, 60);
        assert_eq!(dropped, 0);
        assert!(final_drift_ms(&forwarded, 48000.0).abs() <= 45.0, "{}", final_drift_ms(&forwarded, 48000.0));
    }

    #[test]
    fn a_fast_video_clock_is_slowed_without_timestamps_going_back() {
        let (forwarded, dropped) = run_clock(false, 1.02, 33, 60);
        assert_eq!(dropped, 0);
        assert!(final_drift_ms(&forwarded, 90000.0).abs() <= 85.0, "{}", final_drift_ms(&forwarded, 90000.0));
        assert!(forwarded.windows(2).all(|pair| (pair[1].1.wrapping_sub(pair[0].1) as i32) > 0));
    }

    #[test]
    fn a_true_clock_is_left_alone() {
        for audio in [true, false] {
            let (forwarded, dropped) = run_clock(audio, 1.0, 20, 60);
            assert_eq!(dropped, 0);
            let steps: std::collections::HashSet<u32> =
                forwarded.windows(2).map(|pair| pair[1].1.wrapping_sub(pair[0].1)).collect();
            assert_eq!(steps.len(), 1, "timestamps untouched");
        }
    }

    #[test]
    fn srtp_sources_are_decrypted_and_forgeries_refused() {
        let key = [7u8; 30];
        for profile in [Profile::AesCm128HmacSha1_80, Profile::AesCm128HmacSha1_32] {
            let sender = SrtpSession::new(profile, &key).unwrap();
            let options = IngestOptions { srtp: Some((profile, key.to_vec())), ..IngestOptions::default() };
            let mut ingest = Ingest::new(&options, MediaKind::Audio, 48000).unwrap();
            let mut buf = [0u8; 64];
            let plain = [packet(1, 960), b"hello".to_vec()].concat();
            buf[..plain.len()].copy_from_slice(&plain);
            let len = sender.protect_rtp(&mut buf, plain.len(), 0).unwrap();
            assert_eq!(len, plain.len() + profile.rtp_overhead());
            let mut forged = buf;
            forged[14] ^= 1;
            assert_eq!(ingest.decrypt(&mut forged, len), Err(SrtpError::Authentication));
            assert_eq!(ingest.decrypt(&mut buf, len), Ok(plain.len()));
            assert_eq!(&buf[..plain.len()], &plain[..]);
        }
        let wrong =
            IngestOptions { srtp: Some((Profile::AesCm128HmacSha1_80, vec![0; 16])), ..IngestOptions::default() };
        assert!(Ingest::new(&wrong, MediaKind::Audio, 48000).is_err());
    }
}
