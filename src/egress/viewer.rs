//! One viewer: where it is, what it receives of each source stream and how
//! each packet is rewritten for it, its SRTP keys and its counters.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::egress::congestion::{Estimator, Usage};
use crate::egress::probe::{ProbeOutcome, Prober, MAX_PADDING};
use crate::egress::tcp::SharedTcpOutput;
use crate::events::{Event, EventQueue};
use crate::media::packet::{GopCache, History, Packet, ReceivedPacket};
use crate::sys::RawAddress;
use crate::wire::codec::{
    picture_id_mask, read_picture_id, write_picture_id, Av1Payload, Codec, Vp8Descriptor, Vp9Descriptor,
};
use crate::wire::rtcp::SenderInfo;
use crate::wire::rtp::{PlayoutDelay, RtpHeader};
use crate::wire::srtp::{SrtpError, SrtpSession};
use crate::wire::twcc::{for_each_transport_feedback, write_element};

/// What Python reads about a viewer while the engine runs.
#[derive(Default)]
pub struct ViewerCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub rtcp_packets: AtomicU64,
    /// RTP packets sent again after a NACK.
    pub retransmissions: AtomicU64,
    /// Sequence numbers the viewer's NACKs asked for.
    pub nacked: AtomicU64,
    /// Times the kernel refused a GSO send to this viewer (it then gets single datagrams).
    pub gso_refused: AtomicU64,
    pub dropped: AtomicU64,
    /// Packets not sent because they could not leave within the worker's
    /// `max_send_delay` of their arrival (retransmissions included).
    pub dropped_late: AtomicU64,
    pub send_errors: AtomicU64,
    pub paused: AtomicBool,
    /// Streams moved to another source stream (at its keyframe) as asked.
    pub source_switches: AtomicU64,
    /// The bandwidth estimate (bits per second; 0: none yet), after each feedback.
    pub estimate: AtomicU64,
    /// The bytes sent that the transport feedback has not told of yet, after each.
    pub bytes_in_flight: AtomicU64,
    /// Transport feedback messages read.
    pub transport_feedbacks: AtomicU64,
    /// Retransmissions not sent: over the viewer's pacing budget (see [`SendBudget`]).
    pub retransmissions_over_budget: AtomicU64,
    /// Sequence numbers NACKed that could not be sent again: no longer kept
    /// (past the history, or sent before the oldest renumbering noted) or never sent.
    pub nacks_unanswered: AtomicU64,
    /// Probes of the viewer's link started, and those that carried their goal (see [`crate::egress::probe`]).
    pub probes: AtomicU64,
    pub probes_carried: AtomicU64,
    /// The next SRTCP index of what is sent to the peer: its worker numbers
    /// its RTCP while it is subscribed, the engine handle while it is not.
    pub srtcp_index: AtomicU32,
}

impl ViewerCounters {
    /// Takes the next SRTCP index (31 bits, RFC 3711 section 3.4).
    pub fn next_srtcp_index(&self) -> u32 {
        self.srtcp_index.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff
    }

    pub fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }
}

/// The first sequence number and timestamp a viewer stream sends.
#[derive(Clone, Copy, Debug)]
pub struct StreamStart {
    pub sequence: u16,
    pub timestamp: u32,
}

/// How fast a burst from the keyframe cache goes to one viewer, after a first
/// [`BURST_CREDIT_BYTES`] at once: fast enough to catch up with a 10 Mbit/s
/// stream soon, slow enough for a receiver's socket buffer (Chromium reads
/// its WebRTC socket continuously; its buffer is about 200 KB here).
pub const BURST_BYTES_PER_SECOND: u64 = 8_000_000;
pub const BURST_CREDIT_BYTES: i64 = 64 * 1024;
/// Once the viewer's link is measured, bursts and retransmissions go at this
/// multiple of its estimate instead: GCC sends through a pacer
/// (draft-ietf-rmcat-gcc-02 section 4), and Chromium's paces at 2.5 times
/// its target rate, so that a short burst above the rate drains soon without
/// overflowing a thin link's queue at line rate.
pub const PACING_FACTOR: f64 = 2.5;
/// Once over-use or loss told that the link limits the rate, at the estimate
/// itself: it is what the link was measured to carry (0.85 of it at
/// over-use), and a burst beside the live packets is all above what they
/// need, so faster would only fill the queue that lost packets (a move down
/// from a layer the link no longer carries starts from the lower layer's
/// keyframe cache while the old layer's packets still drain).
pub const LINK_LIMITED_PACING_FACTOR: f64 = 1.0;
/// The slowest pacing (bits per second): a cached second of the lowest
/// simulcast layer (150 kbit/s) still goes in under half a second.
pub const PACING_FLOOR_BITRATE: u64 = 400_000;
/// Paced, the credit spent at once is this much of the pacing rate (40 ms:
/// a 5 ms pacing interval's packets, and a few more for a NACK's list), at
/// least two full-size packets, at most [`BURST_CREDIT_BYTES`].
const PACED_CREDIT_MICROS: u64 = 40_000;
const PACED_CREDIT_MIN_BYTES: i64 = 3_000;
/// The most the cached pictures' timestamps are compressed: 100 keeps frames
/// at up to 100 fps at distinct timestamps.
const MAX_COMPRESSION: u32 = 100;

/// What a viewer may be sent beyond its live packets, as a token bucket of
/// bytes: its keyframe-cache bursts, which wait for credit, and its
/// retransmissions, which are dropped (and counted) without it.
///
/// Until the viewer's link is measured (transport feedback, about half a
/// second after it starts: none at its join) bursts go at
/// [`BURST_BYTES_PER_SECOND`] after [`BURST_CREDIT_BYTES`] and
/// retransmissions are not limited. Once it is, the bucket fills at
/// [`PACING_FACTOR`] times the estimate ([`LINK_LIMITED_PACING_FACTOR`]
/// once the link was seen to limit it; not under [`PACING_FLOOR_BITRATE`])
/// and every packet the viewer is sent counts, live ones too (they never
/// wait; the debt they leave is bounded by the bucket's size): so a burst
/// after a move or a resume, or a NACK's retransmissions while the viewer
/// still gets a layer above its estimate, do not flood a thin link, as
/// GCC's pacer sends everything of a sender's at its pacing rate.
/// Retransmissions over the budget are dropped, not delayed: the receiver
/// asks again a round trip later if the packet is still of use, and one sent
/// late would add to the queue that lost it.
#[derive(Clone, Copy, Debug)]
pub struct SendBudget {
    credit: i64,
    at: Instant,
    /// Bytes per second, once measured.
    paced: Option<u64>,
}

impl SendBudget {
    fn new(now: Instant) -> Self {
        Self { credit: BURST_CREDIT_BYTES, at: now, paced: None }
    }

    /// The viewer's estimate (bits per second), None until it rests on a
    /// measured rate, and whether the link was seen to limit it.
    fn set_estimate(&mut self, estimate: Option<u64>, link_limited: bool, now: Instant) {
        self.refill(now);
        let factor = if link_limited { LINK_LIMITED_PACING_FACTOR } else { PACING_FACTOR };
        self.paced = estimate.map(|bitrate| ((bitrate as f64 * factor) as u64).max(PACING_FLOOR_BITRATE) / 8);
        self.credit = self.credit.min(self.capacity());
    }

    pub fn bytes_per_second(&self) -> u64 {
        self.paced.unwrap_or(BURST_BYTES_PER_SECOND)
    }

    pub fn is_paced(&self) -> bool {
        self.paced.is_some()
    }

    /// The most credit held, spent at once.
    pub fn capacity(&self) -> i64 {
        match self.paced {
            None => BURST_CREDIT_BYTES,
            Some(rate) => {
                ((rate * PACED_CREDIT_MICROS / 1_000_000) as i64).clamp(PACED_CREDIT_MIN_BYTES, BURST_CREDIT_BYTES)
            }
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at);
        let earned = (elapsed.as_nanos() * u128::from(self.bytes_per_second()) / 1_000_000_000) as i64;
        if earned > 0 {
            self.credit = (self.credit + earned).min(self.capacity());
            self.at = now;
        }
    }

    /// Full credit (a burst starts).
    fn reset(&mut self, now: Instant) {
        self.credit = self.capacity();
        self.at = now;
    }

    /// Refills; whether any credit is left.
    fn has_credit(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.credit > 0
    }

    fn spend(&mut self, bytes: usize) {
        self.credit -= bytes as i64;
    }

    /// A live packet: counted once paced, its debt bounded by the bucket's size.
    fn spend_live(&mut self, bytes: usize, now: Instant) {
        if self.paced.is_some() {
            self.refill(now);
            self.credit = (self.credit - bytes as i64).max(-self.capacity());
        }
    }
}

/// How a burst's cached packets map onto the viewer's timeline: the latest
/// cached picture is "now" (the timeline goes on from it at the source's
/// pace), and the older ones are moved closer to it by `factor`, so that the
/// burst's timestamps span about the time it takes to send it. A jitter
/// buffer then sees pictures that arrive about when their timestamps say
/// and renders them at once, instead of playing the group of pictures at its
/// original pace seconds behind.
#[derive(Clone, Copy, Debug)]
struct Compression {
    /// The viewer's extended sequence number of the last cached packet.
    last_extended: u64,
    source_last: u32,
    viewer_last: u32,
    factor: u32,
}

/// A burst in progress: the cached packets, then the packets the worker got
/// since (from its history), until it reaches the live edge.
struct Burst {
    packets: Vec<Arc<Packet>>,
    position: usize,
    epoch: u32,
    /// The next source sequence number to take from the history.
    catch_up: u16,
}

/// What a VP8, VP9 or AV1 viewer stream does to each packet's payload descriptor
/// once it was moved between simulcast encodings or given a temporal (or VP9
/// spatial) layer cap: the encodings number their pictures independently, so
/// after a move the picture IDs and TL0PICIDX go on from the last ones the
/// viewer got; and frames of layers above the caps are left out, the packets
/// after them renumbered so the viewer sees no gap. Picture IDs are not renumbered
/// for the frames left out: decoders read a picture's place in its group of
/// pictures from them (VP9's non-flexible mode), and TL0PICIDX stays
/// continuous as the base layer is never left out.
#[derive(Clone, Copy, Debug)]
struct PictureRewrite {
    /// VP8, VP9 or AV1: whose payload descriptor the packets carry.
    codec: Codec,
    /// The highest temporal layer sent; None: all.
    temporal_cap: Option<u8>,
    /// A new cap, taken at the next picture that may change it (see
    /// [`PictureRewrite::take_next_temporal_cap`]).
    next_temporal_cap: Option<Option<u8>>,
    /// VP9: the highest spatial layer sent; None: all. The last packet of its
    /// frame in each picture is marked as the end of the picture.
    spatial_cap: Option<u8>,
    /// A new spatial cap: lower from the next picture on, higher one layer at
    /// a time, at a frame of the next layer up that no earlier picture predicts.
    next_spatial_cap: Option<Option<u8>>,
    picture_id_offset: u16,
    tl0_offset: u8,
    /// The last picture ID and TL0PICIDX the viewer got (rewritten).
    last_picture_id: Option<u16>,
    last_tl0: Option<u8>,
    /// After a move: the next picture follows the last one sent.
    follow_on: bool,
    /// The temporal layer of the last packet that named one (AV1: a packet
    /// that only continues an OBU is of the same frame's layer).
    last_temporal_layer: u8,
}

impl PictureRewrite {
    fn new(codec: Codec) -> Self {
        Self {
            codec,
            temporal_cap: None,
            next_temporal_cap: None,
            spatial_cap: None,
            next_spatial_cap: None,
            picture_id_offset: 0,
            tl0_offset: 0,
            last_picture_id: None,
            last_tl0: None,
            follow_on: false,
            last_temporal_layer: 0,
        }
    }

    /// The fields of `payload`, an AV1 packet that names no layer taking the last one named.
    fn fields(&mut self, payload: &[u8]) -> Option<PictureFields> {
        let mut fields = PictureFields::parse(self.codec, payload)?;
        if fields.names_layer {
            self.last_temporal_layer = fields.temporal_layer;
        } else {
            fields.temporal_layer = self.last_temporal_layer;
        }
        Some(fields)
    }

    /// Takes the new cap if this packet's picture allows it: VP8 and AV1 at the
    /// start of a base-layer frame (which every layer may follow); VP9 lower at the
    /// start of any picture, higher at a keyframe or at a switching up point
    /// (U) of a layer the viewer already gets.
    fn take_next_temporal_cap(&mut self, fields: &PictureFields) {
        let Some(next) = self.next_temporal_cap else {
            return;
        };
        let takes = match self.codec {
            Codec::Vp9 => {
                let raises = match (self.temporal_cap, next) {
                    (Some(cap), Some(next)) => next > cap,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                let sent = self.temporal_cap.is_none_or(|cap| fields.temporal_layer <= cap);
                fields.starts_picture && (!raises || fields.keyframe || (fields.switching_up && sent))
            }
            _ => fields.starts_picture && fields.temporal_layer == 0,
        };
        if takes {
            self.temporal_cap = next;
            self.next_temporal_cap = None;
        }
    }

    /// Takes the new spatial cap (VP9) if this packet allows it: a lower one
    /// at the start of a picture; a higher one at the start of a keyframe
    /// (whose upper layers no earlier picture predicts), or a layer at a time
    /// at the beginning of a frame of the layer above the cap that is not
    /// predicted from earlier pictures (a stream that predicts upper layers
    /// from the layer below only).
    fn take_next_spatial_cap(&mut self, fields: &PictureFields) {
        let Some(next) = self.next_spatial_cap else {
            return;
        };
        let lower = match (self.spatial_cap, next) {
            (None, Some(_)) => true,
            (Some(cap), Some(next)) => next <= cap,
            (_, None) => false,
        };
        if lower {
            if fields.starts_picture {
                self.spatial_cap = next;
                self.next_spatial_cap = None;
            }
            return;
        }
        let Some(cap) = self.spatial_cap else {
            self.next_spatial_cap = None; // every layer already
            return;
        };
        if fields.keyframe {
            self.spatial_cap = next;
            self.next_spatial_cap = None;
        } else if fields.begins_frame && !fields.inter_predicted && fields.spatial_layer == cap + 1 {
            self.spatial_cap = Some(cap + 1);
            if next == Some(cap + 1) {
                self.next_spatial_cap = None;
            }
        }
    }
}

/// The fields of a VP8 or VP9 payload descriptor (or an AV1 payload's
/// headers) a viewer stream reads.
#[derive(Clone, Copy, Debug)]
struct PictureFields {
    /// The first packet of a picture (VP8: S and partition 0; VP9: B in the
    /// base spatial layer; AV1: a frame's first OBU begins in it).
    starts_picture: bool,
    /// VP9: the first packet of a picture predicted from no earlier one.
    keyframe: bool,
    /// VP9's U bit.
    switching_up: bool,
    temporal_layer: u8,
    /// False for an AV1 packet that only continues an OBU: its frame's layer is
    /// that of the packet before.
    names_layer: bool,
    /// VP9: B (the packet begins a spatial layer's frame), E (it ends one), P, SID.
    begins_frame: bool,
    ends_frame: bool,
    inter_predicted: bool,
    spatial_layer: u8,
    picture_id: Option<(usize, bool)>,
    tl0_picture_index: Option<usize>,
}

impl PictureFields {
    /// None for other codecs, or a payload too short for its descriptor.
    fn parse(codec: Codec, payload: &[u8]) -> Option<Self> {
        match codec {
            Codec::Vp8 => Vp8Descriptor::parse(payload).map(|descriptor| Self {
                starts_picture: descriptor.starts_frame,
                keyframe: false,
                switching_up: false,
                temporal_layer: descriptor.temporal_layer,
                names_layer: true,
                begins_frame: descriptor.starts_frame,
                ends_frame: false,
                inter_predicted: true,
                spatial_layer: 0,
                picture_id: descriptor.picture_id,
                tl0_picture_index: descriptor.tl0_picture_index,
            }),
            Codec::Vp9 => Vp9Descriptor::parse(payload).map(|descriptor| Self {
                starts_picture: descriptor.starts_picture(),
                keyframe: descriptor.starts_keyframe(),
                switching_up: descriptor.switching_up,
                temporal_layer: descriptor.temporal_layer,
                names_layer: true,
                begins_frame: descriptor.begins_frame,
                ends_frame: descriptor.ends_frame,
                inter_predicted: descriptor.inter_predicted,
                spatial_layer: descriptor.spatial_layer,
                picture_id: descriptor.picture_id,
                tl0_picture_index: descriptor.tl0_picture_index,
            }),
            // Spatial layers of AV1 are not left out: its spatial ID stays 0 here.
            Codec::Av1 => Av1Payload::parse(payload).map(|av1| Self {
                starts_picture: av1.begins_frame,
                keyframe: av1.new_sequence && !av1.continues,
                switching_up: false,
                temporal_layer: av1.layers.map_or(0, |(temporal, _)| temporal),
                names_layer: av1.layers.is_some() || !av1.continues,
                begins_frame: av1.begins_frame,
                ends_frame: false,
                inter_predicted: true,
                spatial_layer: 0,
                picture_id: None,
                tl0_picture_index: None,
            }),
            _ => None,
        }
    }

    fn picture_id_mask(&self) -> u16 {
        picture_id_mask(self.picture_id)
    }

    fn read_picture_id(&self, payload: &[u8]) -> Option<u16> {
        read_picture_id(payload, self.picture_id?)
    }

    fn write_picture_id(&self, payload: &mut [u8], picture_id: u16) {
        if let Some(field) = self.picture_id {
            write_picture_id(payload, field, picture_id);
        }
    }
}

/// How many renumberings (by temporal layer drops or padding) NACKs can see
/// past: with the base layer alone out of three at 30 fps, about four seconds.
const RENUMBERINGS: usize = 32;

/// From the viewer's extended sequence number `from` on: `padding` padding-only
/// packets (of timestamp `timestamp`), then the source's packets with sequence offset `offset`.
#[derive(Clone, Copy, Debug, Default)]
struct Renumbering {
    from: u64,
    padding: u16,
    offset: u16,
    timestamp: u32,
}

/// What a viewer's sequence number was sent as, since the stream was anchored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SentAs {
    /// A source packet, numbered with this offset.
    Source(u16),
    /// A padding-only packet of this timestamp.
    Padding(u32),
}

/// The sequence offsets that temporal layer drops and padding (a probe's)
/// brought, each from the viewer's extended sequence number where it applied:
/// a ring, newest last, so NACKs find what they ask for.
#[derive(Clone, Copy, Debug)]
struct Renumberings {
    entries: [Renumbering; RENUMBERINGS],
    next: usize,
    len: usize,
}

impl Default for Renumberings {
    fn default() -> Self {
        Self { entries: [Renumbering::default(); RENUMBERINGS], next: 0, len: 0 }
    }
}

impl Renumberings {
    fn clear(&mut self) {
        self.len = 0;
    }

    /// Notes `offset` from `from` on; once full, forgets the oldest and
    /// returns where the mapping now starts.
    fn push(&mut self, from: u64, offset: u16) -> Option<u64> {
        self.push_entry(Renumbering { from, padding: 0, offset, timestamp: 0 })
    }

    /// Notes a padding packet sent as `extended`, the source's packets after
    /// it numbered with `offset`: the newest entry grows if it ends at `extended`.
    fn pad(&mut self, extended: u64, offset: u16, timestamp: u32) -> Option<u64> {
        if let Some(newest) = self.newest_mut() {
            if newest.from + u64::from(newest.padding) == extended && newest.padding < u16::MAX {
                newest.padding += 1;
                newest.offset = offset;
                return None;
            }
        }
        self.push_entry(Renumbering { from: extended, padding: 1, offset, timestamp })
    }

    fn newest_mut(&mut self) -> Option<&mut Renumbering> {
        (self.len > 0).then(|| &mut self.entries[(self.next + RENUMBERINGS - 1) % RENUMBERINGS])
    }

    fn push_entry(&mut self, entry: Renumbering) -> Option<u64> {
        self.entries[self.next] = entry;
        self.next = (self.next + 1) % RENUMBERINGS;
        if self.len < RENUMBERINGS {
            self.len += 1;
            return None;
        }
        Some(self.entries[self.next].from)
    }

    /// What `extended` was sent as; None before every renumbering.
    fn sent_as(&self, extended: u64) -> Option<SentAs> {
        let entry = (1..=self.len)
            .map(|back| self.entries[(self.next + RENUMBERINGS - back) % RENUMBERINGS])
            .find(|entry| entry.from <= extended)?;
        Some(if extended < entry.from + u64::from(entry.padding) {
            SentAs::Padding(entry.timestamp)
        } else {
            SentAs::Source(entry.offset)
        })
    }
}

/// What a viewer receives of one source stream, and where its numbering stands.
///
/// The viewer's sequence number is the source's plus an offset, and its
/// timestamp likewise; the offsets are chosen again (the stream is
/// "anchored") at its first packet, after a pause and when the source
/// restarts, so that the viewer's sequence goes on at the next number and its
/// timestamp advances by the wall-clock time that passed.
///
/// Video that starts at keyframes starts (new viewer, resume, switch) with a
/// burst from the keyframe cache when it holds one ([`ViewerStream::start_from`]);
/// live packets wait until the burst has caught up.
pub struct ViewerStream {
    /// The source stream's position in its mountpoint.
    pub source: usize,
    /// Simulcast: the source stream this one moves to at that stream's next keyframe.
    next_source: Option<usize>,
    /// VP8, VP9 and AV1 streams that were moved or capped (see [`PictureRewrite`]); None: payloads untouched.
    pictures: Option<Box<PictureRewrite>>,
    /// The sequence offset when the stream was last anchored, and the ones
    /// temporal layer drops and padding brought since (allocated at the first).
    anchor_offset: u16,
    renumberings: Option<Box<Renumberings>>,
    /// Temporal layer drops renumbered the stream: the next packet sent
    /// notes the new offset (see [`Renumberings`]).
    renumbered: bool,
    /// The last packet sent (highest sequence number) ended a frame (its
    /// marker bit): padding may follow without splitting a frame.
    ends_frame: bool,
    ssrc: u32,
    payload_type: u8,
    clock_rate: u32,
    starts_at_keyframes: bool,
    waiting_for_keyframe: bool,
    anchor_needed: bool,
    source_epoch: u32,
    sequence_offset: u16,
    timestamp_offset: u32,
    start: StreamStart,
    /// Highest extended sequence number sent (rollover counter << 16 | sequence).
    highest: Option<u64>,
    /// The extended sequence number of the first packet of the current anchoring:
    /// older packets were numbered with other offsets and cannot be resent.
    anchored_from: u64,
    highest_timestamp: u32,
    last_sent_at: Instant,
    packets: u32,
    octets: u32,
    /// The per-stream send switch.
    paused: bool,
    burst: Option<Burst>,
    /// Reused for each burst, so a burst allocates only the first time.
    burst_buffer: Vec<Arc<Packet>>,
    compression: Option<Compression>,
    /// After a burst: live packets before this (epoch, source sequence) were sent in it.
    skip_before: Option<(u32, u16)>,
    /// Held until the worker starts it from the cache (the mountpoint's packets flow to it by then).
    held: bool,
    /// When set, every packet sent carries it as a header extension.
    playout_delay: Option<PlayoutDelay>,
    /// When set, every packet sent carries a transport-wide sequence number
    /// with this extension id (the viewer fills in the number).
    transport_cc_id: Option<u8>,
}

/// Where a rewritten packet stands in the viewer's SRTP stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewritten {
    pub len: usize,
    pub rollover_counter: u32,
    /// Where the transport-wide sequence number goes (two bytes), if the packet carries one.
    pub transport_sequence_at: Option<usize>,
}

impl ViewerStream {
    pub fn new(
        source: usize,
        ssrc: u32,
        payload_type: u8,
        clock_rate: u32,
        starts_at_keyframes: bool,
        start: StreamStart,
    ) -> Self {
        Self {
            source,
            next_source: None,
            pictures: None,
            anchor_offset: 0,
            renumberings: None,
            renumbered: false,
            ends_frame: false,
            ssrc,
            payload_type,
            clock_rate,
            starts_at_keyframes,
            waiting_for_keyframe: starts_at_keyframes,
            anchor_needed: true,
            source_epoch: 0,
            sequence_offset: 0,
            timestamp_offset: 0,
            start,
            highest: None,
            anchored_from: 0,
            highest_timestamp: 0,
            last_sent_at: Instant::now(),
            packets: 0,
            octets: 0,
            paused: false,
            burst: None,
            burst_buffer: Vec::new(),
            compression: None,
            skip_before: None,
            held: false,
            playout_delay: None,
            transport_cc_id: None,
        }
    }

    /// Takes no live packets until [`ViewerStream::start_from`] or a restart.
    pub fn hold(&mut self) {
        self.held = true;
    }

    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Reads and rewrites the payload descriptor of `codec` (VP8, VP9 or AV1;
    /// others are left alone) from now on (see [`PictureRewrite`]).
    pub fn rewrite_pictures(&mut self, codec: Codec) {
        if matches!(codec, Codec::Vp8 | Codec::Vp9 | Codec::Av1) {
            self.pictures.get_or_insert_with(|| Box::new(PictureRewrite::new(codec)));
        }
    }

    /// The stream's numbering was chosen again: no renumbering applies to it yet.
    fn anchored(&mut self) {
        self.anchor_offset = self.sequence_offset;
        if let Some(renumberings) = self.renumberings.as_mut() {
            renumberings.clear();
        }
    }

    /// A new stream (nothing sent yet) that sends only temporal layers up to
    /// `temporal` and (VP9) spatial layers up to `spatial` (None: all) from its
    /// first packet on.
    pub fn start_with_layer_caps(&mut self, codec: Codec, temporal: Option<u8>, spatial: Option<u8>) {
        if temporal.is_none() && spatial.is_none() {
            return;
        }
        self.rewrite_pictures(codec);
        if let Some(pictures) = self.pictures.as_mut() {
            pictures.temporal_cap = temporal;
            pictures.spatial_cap = spatial;
        }
    }

    /// VP9: sends only spatial layers up to `cap` (None: all): lower from the
    /// next picture on, higher a layer at a time, from a frame of the layer
    /// above that no earlier picture predicts (a keyframe's). Needs
    /// [`ViewerStream::rewrite_pictures`] first.
    pub fn set_spatial_cap(&mut self, cap: Option<u8>) {
        if let Some(pictures) = self.pictures.as_mut() {
            pictures.next_spatial_cap = Some(cap);
        }
    }

    /// Sends only temporal layers up to `cap` (None: all), from the next
    /// picture that allows the change on (VP8: a base-layer frame; VP9: any
    /// picture to go lower, a keyframe or a switching up point to go higher).
    /// Needs [`ViewerStream::rewrite_pictures`] first.
    pub fn set_temporal_cap(&mut self, cap: Option<u8>) {
        if let Some(pictures) = self.pictures.as_mut() {
            pictures.next_temporal_cap = Some(cap);
        }
    }

    /// The source stream this one is moving to, if a move waits for its keyframe.
    pub fn next_source(&self) -> Option<usize> {
        self.next_source
    }

    /// Moves the stream to the source stream at `source` at once if it sent
    /// nothing yet or is paused (true; a started stream then waits for the
    /// keyframe again), else at that source's next keyframe, the current
    /// source going on until then (false). Moving back to the current source
    /// cancels a waiting move.
    pub fn move_to(&mut self, source: usize) -> bool {
        if source == self.source {
            self.next_source = None;
            return false;
        }
        if self.highest.is_some() && !self.paused {
            self.next_source = Some(source);
            return false;
        }
        self.move_now(source)
    }

    /// Moves the stream to the source stream at `source` at once, the current
    /// source stopping now (true; false if it is the current source): video
    /// then waits for a keyframe, which the caller gives from that source's
    /// keyframe cache ([`ViewerStream::start_from`]) when it holds one. VP8's
    /// and VP9's pictures follow on if the stream followed them already (a
    /// first move or temporal cap); else the new source's own numbering
    /// starts at its keyframe, which a decoder takes.
    pub fn move_now(&mut self, source: usize) -> bool {
        if source == self.source {
            self.next_source = None;
            return false;
        }
        self.source = source;
        self.next_source = None;
        if !self.held {
            self.restart();
        }
        self.follow_on();
        true
    }

    /// The keyframe of the waiting move's source arrived: take it from now on.
    /// The move made: (the source left, the source taken).
    fn take_next_source(&mut self) -> Option<(usize, usize)> {
        let from = self.source;
        let source = self.next_source.take()?;
        self.source = source;
        self.waiting_for_keyframe = false;
        self.anchor_needed = true;
        self.end_burst();
        self.skip_before = None;
        self.follow_on();
        Some((from, source))
    }

    fn follow_on(&mut self) {
        if let Some(pictures) = self.pictures.as_mut() {
            pictures.follow_on = true;
        }
    }

    /// Starts again after a pause: video waits for the next keyframe.
    pub fn restart(&mut self) {
        self.waiting_for_keyframe = self.starts_at_keyframes;
        self.anchor_needed = true;
        self.end_burst();
        self.skip_before = None;
        self.held = false;
    }

    /// Takes over the numbering of `old` (the same SSRC before a switch), so
    /// the viewer's sequence numbers and timestamps go on from where they were.
    pub fn continue_from(&mut self, old: &ViewerStream) {
        self.start = old.start;
        self.highest = old.highest;
        self.highest_timestamp = old.highest_timestamp;
        self.last_sent_at = old.last_sent_at;
        self.packets = old.packets;
        self.octets = old.octets;
        self.paused = old.paused;
        self.playout_delay = old.playout_delay;
        self.transport_cc_id = old.transport_cc_id;
        self.restart();
    }

    pub fn starts_at_keyframes(&self) -> bool {
        self.starts_at_keyframes
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn set_paused(&mut self, paused: bool) {
        if self.paused && !paused {
            self.restart();
        }
        self.paused = paused;
    }

    pub fn is_bursting(&self) -> bool {
        self.burst.is_some()
    }

    /// From the next packet on (retransmissions and bursts included), every
    /// packet carries `delay` as its header extension; None: none.
    pub fn set_playout_delay(&mut self, delay: Option<PlayoutDelay>) {
        self.playout_delay = delay;
    }

    /// From the next packet on, every packet carries a transport-wide sequence
    /// number with extension id `id` (None: none).
    pub fn set_transport_cc(&mut self, id: Option<u8>) {
        self.transport_cc_id = id;
    }

    /// Starts video from the keyframe cache: returns false (the stream waits
    /// for the next live keyframe) if the cache holds none. Called by the
    /// worker that owns the viewer, between passes, so that every packet
    /// newer than the cache's reaches it later through its ring.
    /// `budget`: the viewer's, which the burst spends (its rate and first
    /// credit set how far the cached pictures' timestamps are compressed).
    pub fn start_from(&mut self, cache: &GopCache, budget: &SendBudget, now: Instant) -> bool {
        let packets = cache.packets();
        let (Some(first), Some(last)) = (packets.first(), packets.last()) else {
            self.restart();
            return false;
        };
        let (first, last) = (first.meta, last.meta);
        let span = (last.header.timestamp.wrapping_sub(first.header.timestamp) as i32).max(0) as u32;
        let credit = budget.capacity() as u64;
        let burst_ticks =
            (cache.bytes() as u64).saturating_sub(credit) * u64::from(self.clock_rate) / budget.bytes_per_second();
        let factor = (u64::from(span) / burst_ticks.max(1)).clamp(1, u64::from(MAX_COMPRESSION)) as u32;
        let (sequence, mut timestamp) = self.next_position(now);
        if self.highest.is_some() {
            // After a pause or a switch the keyframe must still come after what was sent.
            let earliest = self.highest_timestamp.wrapping_add(span.div_ceil(factor) + 1);
            if (earliest.wrapping_sub(timestamp) as i32) > 0 {
                timestamp = earliest;
            }
        }
        self.sequence_offset = sequence.wrapping_sub(first.header.sequence);
        self.timestamp_offset = timestamp.wrapping_sub(last.header.timestamp);
        self.anchored();
        self.source_epoch = first.epoch;
        self.anchor_needed = false;
        self.waiting_for_keyframe = false;
        self.skip_before = None;
        self.held = false;
        let first_extended = self.extend(sequence).unwrap_or(u64::from(sequence));
        self.anchored_from = first_extended;
        self.compression = Some(Compression {
            last_extended: first_extended + u64::from(last.header.sequence.wrapping_sub(first.header.sequence)),
            source_last: last.header.timestamp,
            viewer_last: timestamp,
            factor,
        });
        let mut buffer = std::mem::take(&mut self.burst_buffer);
        buffer.clear();
        buffer.extend(packets.iter().cloned());
        self.burst = Some(Burst {
            packets: buffer,
            position: 0,
            epoch: first.epoch,
            catch_up: last.header.sequence.wrapping_add(1),
        });
        true
    }

    /// The next packet of the burst: from the cache, then from `history` (what
    /// the worker got since), None once it reached `latest` (the newest source
    /// packet the worker got: epoch, sequence number). Live packets follow.
    pub fn next_burst_packet(&mut self, history: &History, latest: Option<(u32, u16)>) -> Option<Arc<Packet>> {
        let burst = self.burst.as_mut()?;
        if let Some(packet) = burst.packets.get(burst.position) {
            burst.position += 1;
            return Some(packet.clone());
        }
        let mut next = burst.catch_up;
        loop {
            if let Some(packet) = history.find(next, burst.epoch) {
                burst.catch_up = next.wrapping_add(1);
                return Some(packet.clone());
            }
            let behind = latest.and_then(|(epoch, sequence)| {
                (epoch == burst.epoch).then(|| sequence.wrapping_sub(next) as i16).filter(|&behind| behind >= 0)
            });
            let Some(behind) = behind else {
                self.skip_before = Some((burst.epoch, next));
                self.end_burst();
                return None;
            };
            if behind as usize >= history.size() {
                // The live stream ran further ahead than the history keeps:
                // the burst cannot catch up, so wait for the next keyframe.
                self.restart();
                return None;
            }
            next = next.wrapping_add(1); // lost before it reached the worker
        }
    }

    fn end_burst(&mut self) {
        if let Some(mut burst) = self.burst.take() {
            burst.packets.clear();
            self.burst_buffer = burst.packets;
        }
    }

    /// Writes a packet of the burst as this viewer receives it, or returns
    /// None for one of a layer above the stream's caps (left out as live ones
    /// are, the packets after it renumbered).
    pub fn rewrite_burst(
        &mut self,
        packet: &[u8],
        received: &ReceivedPacket,
        now: Instant,
        out: &mut [u8],
    ) -> Option<Rewritten> {
        if self.pictures.is_some() && self.above_layer_caps(packet, &received.header) {
            return None;
        }
        self.emit(packet, received, now, out)
    }

    /// Writes `packet` as this viewer receives it into `out` (SSRC, sequence
    /// number, timestamp and payload type rewritten; the source's header
    /// extension removed, the playout delay's added if set), or returns None
    /// if the viewer does not take it (yet).
    pub fn rewrite(
        &mut self,
        packet: &[u8],
        received: &ReceivedPacket,
        now: Instant,
        out: &mut [u8],
    ) -> Option<Rewritten> {
        let header = &received.header;
        if self.paused || self.held || self.burst.is_some() {
            return None;
        }
        if let Some((epoch, next)) = self.skip_before {
            if epoch == received.epoch && (header.sequence.wrapping_sub(next) as i16) < 0 {
                return None;
            }
            self.skip_before = None;
        }
        if self.waiting_for_keyframe {
            if !received.keyframe_start {
                return None;
            }
            self.waiting_for_keyframe = false;
            self.anchor_needed = true;
        }
        let anchored = self.anchor_needed || received.epoch != self.source_epoch;
        if anchored {
            self.anchor(received, now);
            let sequence = header.sequence.wrapping_add(self.sequence_offset);
            self.anchored_from = self.extend(sequence)?;
        }
        if self.pictures.is_some() && self.above_layer_caps(packet, header) {
            return None;
        }
        self.emit(packet, received, now, out)
    }

    /// Whether a VP8, VP9 or AV1 packet belongs to a temporal (or VP9 spatial)
    /// layer above the cap; if so the packets after it are renumbered one
    /// lower, so the viewer's sequence has no gap (packets arriving out of
    /// order are not renumbered).
    fn above_layer_caps(&mut self, packet: &[u8], header: &RtpHeader) -> bool {
        let Some(pictures) = self.pictures.as_mut() else {
            return false;
        };
        let payload = &packet[header.payload_start..header.payload_end];
        let Some(fields) = pictures.fields(payload) else {
            return false;
        };
        pictures.take_next_temporal_cap(&fields);
        pictures.take_next_spatial_cap(&fields);
        if pictures.temporal_cap.is_none_or(|cap| fields.temporal_layer <= cap)
            && pictures.spatial_cap.is_none_or(|cap| fields.spatial_layer <= cap)
        {
            return false;
        }
        let sequence = header.sequence.wrapping_add(self.sequence_offset);
        let newest = match (self.extend(sequence), self.highest) {
            (Some(extended), Some(highest)) => extended > highest,
            _ => true,
        };
        if newest {
            self.sequence_offset = self.sequence_offset.wrapping_sub(1);
            self.renumbered = true;
        }
        true
    }

    /// Rewrites with the current offsets and counts what was sent.
    fn emit(&mut self, packet: &[u8], received: &ReceivedPacket, now: Instant, out: &mut [u8]) -> Option<Rewritten> {
        let header = &received.header;
        let sequence = header.sequence.wrapping_add(self.sequence_offset);
        let extended = self.extend(sequence)?;
        let newest = self.highest.is_none_or(|highest| extended > highest);
        if !newest {
            // Late: sent only if the number it gets is one the current offset gave (padding or a
            // temporal layer drop since may have given it to another packet; a NACK still finds it).
            let in_force = match self.sent_as(extended) {
                Some(SentAs::Source(offset)) => Some(offset),
                Some(SentAs::Padding(_)) => None,
                None => Some(self.anchor_offset),
            };
            if in_force != Some(self.sequence_offset) {
                return None;
            }
        }
        let timestamp = self.viewer_timestamp(header.timestamp, extended);
        if self.renumbered {
            self.renumbered = false;
            let offset = self.sequence_offset;
            let forgotten = self.renumberings.get_or_insert_default().push(extended, offset);
            self.forget_before(forgotten);
        }
        if self.pictures.is_some() {
            self.follow_pictures(&packet[header.payload_start..header.payload_end]);
        }
        let (len, transport_sequence_at) = self.write(packet, header, sequence, timestamp, out);
        if newest {
            self.highest = Some(extended);
            self.highest_timestamp = timestamp;
            self.last_sent_at = now;
            self.ends_frame = out[1] & 0x80 != 0;
        }
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add((header.payload_end - header.payload_start) as u32);
        Some(Rewritten { len, rollover_counter: (extended >> 16) as u32, transport_sequence_at })
    }

    /// The viewer's timestamp for a source timestamp sent as `extended`.
    fn viewer_timestamp(&self, timestamp: u32, extended: u64) -> u32 {
        if let Some(compression) = self.compression {
            if extended >= self.anchored_from && extended <= compression.last_extended {
                let behind = compression.source_last.wrapping_sub(timestamp) as i32;
                if behind > 0 {
                    return compression.viewer_last.wrapping_sub((behind as u32).div_ceil(compression.factor));
                }
            }
        }
        timestamp.wrapping_add(self.timestamp_offset)
    }

    /// The extended sequence number of the viewer's `sequence`, near the highest sent.
    fn extend(&self, sequence: u16) -> Option<u64> {
        match self.highest {
            None => Some(u64::from(sequence)),
            Some(highest) => {
                let delta = i64::from(sequence.wrapping_sub(highest as u16) as i16);
                highest.checked_add_signed(delta)
            }
        }
    }

    /// The viewer's packet: the source's fixed header rewritten, its CSRCs,
    /// the playout-delay and transport-wide sequence extensions if set, then
    /// the payload with any padding (the padding bit kept). The source's own
    /// header extension is dropped: its ids were negotiated with the source,
    /// not with this viewer. Returns the length and where the transport-wide
    /// sequence number goes.
    fn write(
        &self,
        packet: &[u8],
        header: &RtpHeader,
        sequence: u16,
        timestamp: u32,
        out: &mut [u8],
    ) -> (usize, Option<usize>) {
        let csrcs = &packet[12..header.csrc_end];
        let payload = &packet[header.payload_start..];
        out[0] = packet[0] & !0x10;
        out[1] = (packet[1] & 0x80) | self.payload_type;
        out[2..4].copy_from_slice(&sequence.to_be_bytes());
        out[4..8].copy_from_slice(&timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        out[12..header.csrc_end].copy_from_slice(csrcs);
        let (payload_start, transport_sequence_at) = self.write_header_extensions(out, header.csrc_end);
        let len = payload_start + payload.len();
        out[payload_start..len].copy_from_slice(payload);
        if let Some(pictures) = &self.pictures {
            if pictures.picture_id_offset != 0 || pictures.tl0_offset != 0 {
                renumber_pictures(pictures, &mut out[payload_start..len]);
            }
            if let Some(cap) = pictures.spatial_cap {
                // The top spatial layer sent ends the viewer's picture.
                let fields = PictureFields::parse(pictures.codec, &out[payload_start..len]);
                if fields.is_some_and(|fields| fields.ends_frame && fields.spatial_layer == cap) {
                    out[1] |= 0x80;
                }
            }
        }
        (len, transport_sequence_at)
    }

    /// Writes the header extensions set (playout delay, transport-wide
    /// sequence) at `at` (the end of the CSRCs), setting the X bit if any;
    /// returns where the payload starts and where the transport-wide sequence number goes.
    fn write_header_extensions(&self, out: &mut [u8], at: usize) -> (usize, Option<usize>) {
        let mut payload_start = at;
        let mut transport_sequence_at = None;
        if let Some(delay) = &self.playout_delay {
            out[0] |= 0x10;
            delay.write_header_extension(&mut out[payload_start..]);
            payload_start += PlayoutDelay::HEADER_EXTENSION_LEN;
        }
        if let Some(id) = self.transport_cc_id {
            // One more word: the element (three bytes) and a padding byte (RFC 8285).
            if self.playout_delay.is_some() {
                out[at + 3] = 2;
            } else {
                out[0] |= 0x10;
                out[at..at + 4].copy_from_slice(&[0xbe, 0xde, 0, 1]);
                payload_start += 4;
            }
            write_element(&mut out[payload_start..], id, 0);
            out[payload_start + 3] = 0;
            transport_sequence_at = Some(payload_start + 1);
            payload_start += 4;
        }
        (payload_start, transport_sequence_at)
    }

    /// Whether a padding-only packet may go now: the stream numbers its
    /// packets transport-wide, sends (not paused, held, bursting or waiting for
    /// a keyframe) and its last packet ended a frame.
    pub fn can_pad(&self) -> bool {
        self.transport_cc_id.is_some()
            && self.starts_at_keyframes
            && self.ends_frame
            && self.highest.is_some()
            && !(self.paused || self.held || self.burst.is_some() || self.waiting_for_keyframe || self.anchor_needed)
    }

    /// Writes a padding-only packet of `padding` bytes (1 to [`MAX_PADDING`])
    /// into `out` as the viewer's next packet: the payload type and the last
    /// timestamp sent, the padding bit, the header extensions; the source's
    /// packets after it are numbered one higher. None unless [`ViewerStream::can_pad`].
    pub fn write_padding(&mut self, padding: usize, out: &mut [u8]) -> Option<Rewritten> {
        if !self.can_pad() {
            return None;
        }
        let extended = self.highest? + 1;
        let timestamp = self.highest_timestamp;
        self.sequence_offset = self.sequence_offset.wrapping_add(1);
        self.renumbered = false;
        let forgotten = self.renumberings.get_or_insert_default().pad(extended, self.sequence_offset, timestamp);
        self.forget_before(forgotten);
        self.highest = Some(extended);
        self.packets = self.packets.wrapping_add(1);
        Some(self.write_padding_packet(extended, timestamp, padding, out))
    }

    /// Writes the padding-only packet the viewer received as `sequence` again
    /// (one byte of padding: what matters is that the number arrives), if it was one.
    pub fn write_padding_again(&self, sequence: u16, out: &mut [u8]) -> Option<Rewritten> {
        if self.anchor_needed || self.paused {
            return None;
        }
        let extended = self.extend(sequence)?;
        if extended < self.anchored_from || self.highest.is_none_or(|highest| extended > highest) {
            return None;
        }
        let Some(SentAs::Padding(timestamp)) = self.sent_as(extended) else {
            return None;
        };
        Some(self.write_padding_packet(extended, timestamp, 1, out))
    }

    fn write_padding_packet(&self, extended: u64, timestamp: u32, padding: usize, out: &mut [u8]) -> Rewritten {
        let padding = padding.clamp(1, MAX_PADDING);
        out[0] = 0x80 | 0x20;
        out[1] = self.payload_type;
        out[2..4].copy_from_slice(&(extended as u16).to_be_bytes());
        out[4..8].copy_from_slice(&timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let (payload_start, transport_sequence_at) = self.write_header_extensions(out, 12);
        let len = payload_start + padding;
        out[payload_start..len - 1].fill(0);
        out[len - 1] = padding as u8;
        Rewritten { len, rollover_counter: (extended >> 16) as u32, transport_sequence_at }
    }

    /// What the viewer's `extended` sequence number was sent as, if a renumbering tells.
    fn sent_as(&self, extended: u64) -> Option<SentAs> {
        self.renumberings.as_ref()?.sent_as(extended)
    }

    /// NACKs from before the oldest renumbering noted (`forgotten`) go unanswered.
    fn forget_before(&mut self, forgotten: Option<u64>) {
        if let Some(forgotten) = forgotten {
            self.anchored_from = self.anchored_from.max(forgotten);
        }
    }

    /// After a move, sets the picture offsets so the new source's pictures
    /// follow the last one sent; notes the last picture sent.
    fn follow_pictures(&mut self, payload: &[u8]) {
        let Some(pictures) = self.pictures.as_mut() else {
            return;
        };
        let Some(descriptor) = PictureFields::parse(pictures.codec, payload) else {
            return;
        };
        let picture_id = descriptor.read_picture_id(payload);
        let tl0 = descriptor.tl0_picture_index.map(|offset| payload[offset]);
        if pictures.follow_on {
            pictures.follow_on = false;
            if let (Some(last), Some(picture_id)) = (pictures.last_picture_id, picture_id) {
                pictures.picture_id_offset =
                    last.wrapping_add(1).wrapping_sub(picture_id) & descriptor.picture_id_mask();
            }
            if let (Some(last), Some(tl0)) = (pictures.last_tl0, tl0) {
                pictures.tl0_offset = last.wrapping_add(1).wrapping_sub(tl0);
            }
        }
        if let Some(picture_id) = picture_id {
            pictures.last_picture_id =
                Some(picture_id.wrapping_add(pictures.picture_id_offset) & descriptor.picture_id_mask());
        }
        if let Some(tl0) = tl0 {
            pictures.last_tl0 = Some(tl0.wrapping_add(pictures.tl0_offset));
        }
    }

    /// The source packet (sequence number, epoch) that the viewer received as
    /// `sequence`, if it was sent under the current numbering.
    pub fn source_of(&self, sequence: u16) -> Option<(u16, u32)> {
        if self.anchor_needed || self.waiting_for_keyframe || self.paused {
            return None;
        }
        let extended = self.extend(sequence)?;
        let sent = self.highest.is_some_and(|highest| extended <= highest) && extended >= self.anchored_from;
        let offset = match self.sent_as(extended) {
            Some(SentAs::Padding(_)) => return None,
            Some(SentAs::Source(offset)) => offset,
            None => self.anchor_offset,
        };
        sent.then(|| (sequence.wrapping_sub(offset), self.source_epoch))
    }

    /// Writes `packet` again as the viewer first received it as `sequence` (a
    /// retransmission), changing no state; None if it was not sent under the
    /// current numbering.
    pub fn rewrite_again(
        &self,
        sequence: u16,
        packet: &[u8],
        received: &ReceivedPacket,
        out: &mut [u8],
    ) -> Option<Rewritten> {
        let header = &received.header;
        let (source_sequence, epoch) = self.source_of(sequence)?;
        if source_sequence != header.sequence || epoch != received.epoch {
            return None;
        }
        let extended = self.extend(sequence)?;
        let timestamp = self.viewer_timestamp(header.timestamp, extended);
        let (len, transport_sequence_at) = self.write(packet, header, sequence, timestamp, out);
        Some(Rewritten { len, rollover_counter: (extended >> 16) as u32, transport_sequence_at })
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The viewer's next sequence number and its timestamp for `now`.
    fn next_position(&self, now: Instant) -> (u16, u32) {
        match self.highest {
            None => (self.start.sequence, self.start.timestamp),
            Some(highest) => {
                let elapsed = ticks(now.saturating_duration_since(self.last_sent_at), self.clock_rate);
                ((highest as u16).wrapping_add(1), self.highest_timestamp.wrapping_add(elapsed.max(1)))
            }
        }
    }

    fn anchor(&mut self, received: &ReceivedPacket, now: Instant) {
        let (sequence, timestamp) = self.next_position(now);
        self.sequence_offset = sequence.wrapping_sub(received.header.sequence);
        self.timestamp_offset = timestamp.wrapping_sub(received.header.timestamp);
        self.anchored();
        self.source_epoch = received.epoch;
        self.anchor_needed = false;
        self.compression = None;
    }

    /// What a sender report says about this stream now, once it has sent.
    pub fn sender_info(&self, now: Instant, ntp_time: u64) -> Option<SenderInfo> {
        self.highest?;
        if self.paused {
            return None;
        }
        let elapsed = ticks(now.saturating_duration_since(self.last_sent_at), self.clock_rate);
        Some(SenderInfo {
            ssrc: self.ssrc,
            ntp_time,
            rtp_timestamp: self.highest_timestamp.wrapping_add(elapsed),
            packets: self.packets,
            octets: self.octets,
        })
    }
}

/// Adds the offsets to the picture ID and TL0PICIDX of a VP8 or VP9 payload (in place).
fn renumber_pictures(pictures: &PictureRewrite, payload: &mut [u8]) {
    let Some(descriptor) = PictureFields::parse(pictures.codec, payload) else {
        return;
    };
    if let Some(picture_id) = descriptor.read_picture_id(payload) {
        descriptor.write_picture_id(payload, picture_id.wrapping_add(pictures.picture_id_offset));
    }
    if let Some(offset) = descriptor.tl0_picture_index {
        payload[offset] = payload[offset].wrapping_add(pictures.tl0_offset);
    }
}

fn ticks(elapsed: Duration, clock_rate: u32) -> u32 {
    (elapsed.as_micros() * u128::from(clock_rate) / 1_000_000) as u32
}

/// A viewer as the engine's worker holds it.
pub struct Viewer {
    pub id: u64,
    /// The worker's index of this viewer's counters, for the send batch's tags.
    pub slot: u32,
    pub address: RawAddress,
    /// Its ICE-TCP connection, when it has one: its packets go there, not to `address` over UDP.
    pub tcp: Option<SharedTcpOutput>,
    paused: bool,
    pub streams: Vec<ViewerStream>,
    srtp: SrtpSession,
    pub next_report_at: Instant,
    /// What bursts and retransmissions may spend (see [`SendBudget`]).
    budget: SendBudget,
    /// Shared with the engine handle (source switches are counted here).
    counters: Arc<ViewerCounters>,
    /// Where moves and starts from the keyframe cache are reported (None: nowhere).
    events: Option<Arc<EventQueue>>,
    /// The mountpoint the viewer takes its streams from (its worker keeps it current).
    pub mountpoint_id: u64,
    /// Transport-wide congestion control, once negotiated (see [`TransportCc`]).
    transport_cc: Option<Box<TransportCc>>,
    created: Instant,
}

/// The viewer's link holds a queue while more is in flight (sent, and not
/// yet told of by its transport feedback) than its estimate carries in this
/// long: about a round trip and a feedback interval's worth when it holds none.
pub const LINK_QUEUE_SECONDS: f64 = 0.1;

/// How often at most a viewer's estimate is reported, unless it fell.
const ESTIMATE_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// A fall of the estimate by this fraction of the last reported one is reported at once (and a probe's result).
const ESTIMATE_FALL_REPORTED: f64 = 0.15;
/// Padding owed to a probe waits until it makes a packet of at least this many bytes.
const MIN_PADDING_DUE: usize = 64;

/// A viewer's transport-wide numbering, its bandwidth estimate and the probes of its link.
pub struct TransportCc {
    extension_id: u8,
    next_sequence: u16,
    pub estimator: Estimator,
    pub prober: Prober,
    /// The last estimate reported as an event, and when.
    reported: Option<(u64, Instant)>,
}

/// Counts and reports a viewer's stream moving from source stream `from` to `to` (positions).
fn report_move(viewer: (u64, u64), counters: &ViewerCounters, events: Option<&EventQueue>, from: usize, to: usize) {
    ViewerCounters::add(&counters.source_switches, 1);
    if let Some(events) = events {
        let (peer_id, mountpoint_id) = viewer;
        events.push(Event::SubstreamMoved { peer_id, mountpoint_id, from, to });
    }
}

impl Viewer {
    pub fn new(
        id: u64,
        address: RawAddress,
        streams: Vec<ViewerStream>,
        srtp: SrtpSession,
        first_report_at: Instant,
    ) -> Self {
        Self {
            id,
            slot: 0,
            address,
            tcp: None,
            paused: false,
            streams,
            srtp,
            next_report_at: first_report_at,
            budget: SendBudget::new(Instant::now()),
            counters: Arc::default(),
            events: None,
            mountpoint_id: 0,
            transport_cc: None,
            created: Instant::now(),
        }
    }

    /// Numbers every packet (of every stream) with the transport-wide sequence
    /// extension `id` from now on (None: stops; the estimate goes on from REMB and reports).
    pub fn set_transport_cc(&mut self, id: Option<u8>) {
        for stream in self.streams.iter_mut() {
            stream.set_transport_cc(id);
        }
        if let Some(id) = id {
            let cc = self.congestion();
            cc.extension_id = id;
        }
    }

    /// The extension id every stream gets (a switch brings new streams).
    pub fn transport_cc_id(&self) -> Option<u8> {
        self.streams.iter().find_map(|stream| stream.transport_cc_id)
    }

    fn congestion(&mut self) -> &mut TransportCc {
        self.transport_cc.get_or_insert_with(|| {
            Box::new(TransportCc {
                extension_id: 0,
                next_sequence: 0,
                estimator: Estimator::default(),
                prober: Prober::default(),
                reported: None,
            })
        })
    }

    pub fn transport_cc(&self) -> Option<&TransportCc> {
        self.transport_cc.as_deref()
    }

    fn micros(&self, now: Instant) -> i64 {
        now.saturating_duration_since(self.created).as_micros() as i64
    }

    /// Fills in the transport-wide sequence number of a rewritten packet
    /// (before SRTP) and returns it.
    fn number(&mut self, rewritten: &Rewritten, out: &mut [u8]) -> Option<u16> {
        let at = rewritten.transport_sequence_at?;
        let cc = self.transport_cc.as_mut()?;
        let sequence = cc.next_sequence;
        cc.next_sequence = sequence.wrapping_add(1);
        out[at..at + 2].copy_from_slice(&sequence.to_be_bytes());
        Some(sequence)
    }

    /// Notes a numbered packet as sent (`len` bytes on the wire) at `now`,
    /// in the probe's cluster while one sends.
    fn sent(&mut self, sequence: Option<u16>, len: usize, now: Instant) {
        if let Some(sequence) = sequence {
            let at = self.micros(now);
            if let Some(cc) = self.transport_cc.as_mut() {
                cc.estimator.history.record(sequence, at, len, cc.prober.cluster());
                cc.prober.sent(len);
            }
        }
    }

    /// The bitrate (bits/s) worth probing the link for (the next layer up
    /// with headroom; None: none), see [`crate::egress::probe`].
    pub fn set_probe_goal(&mut self, goal: Option<u64>, now: Instant) {
        let at = self.micros(now);
        self.congestion().prober.set_goal(goal, at);
    }

    /// Whether a probe of the viewer's link is sending padding.
    pub fn is_probing(&self) -> bool {
        self.transport_cc.as_ref().is_some_and(|cc| cc.prober.is_sending())
    }

    /// Writes a padding-only packet into `out` if the probe in progress is
    /// owed one (and a video stream can carry it now); its SRTP length.
    pub fn write_padding(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        let at = self.micros(now);
        let due = self.transport_cc.as_mut()?.prober.padding_due(at);
        if due < MIN_PADDING_DUE || self.paused {
            return None;
        }
        let rewritten =
            self.streams.iter_mut().find(|stream| stream.can_pad())?.write_padding(due.min(MAX_PADDING), out)?;
        let sequence = self.number(&rewritten, out);
        let len = self.srtp.protect_rtp(out, rewritten.len, rewritten.rollover_counter).ok()?;
        self.sent(sequence, len, now);
        Some(len)
    }

    /// Sends none of the padding a probe is owed now (the worker is behind).
    pub fn forgo_padding(&mut self, now: Instant) {
        let at = self.micros(now);
        if let Some(cc) = self.transport_cc.as_mut() {
            let due = cc.prober.padding_due(at);
            cc.prober.sent(due);
        }
    }

    /// Writes the padding-only packet that stream `stream` sent as `sequence`
    /// again, if it was one (a NACK asked for it); its SRTP length.
    pub fn write_padding_again(&mut self, stream: usize, sequence: u16, now: Instant, out: &mut [u8]) -> Option<usize> {
        let rewritten = self.streams[stream].write_padding_again(sequence, out)?;
        let transport_sequence = self.number(&rewritten, out);
        let len = self.srtp.protect_rtp(out, rewritten.len, rewritten.rollover_counter).ok()?;
        self.sent(transport_sequence, len, now);
        Some(len)
    }

    /// What the viewer's RTCP says about its link: the transport feedback in
    /// `packet` (compound RTCP), a REMB, the loss fraction of a receiver report.
    /// Updates the estimate and reports it (see [`Event::BandwidthEstimate`]).
    pub fn on_feedback(&mut self, packet: &[u8], remb: Option<u64>, fraction_lost: Option<u8>, now: Instant) {
        let at = self.micros(now);
        let cc = self.congestion();
        let mut read = 0u64;
        for_each_transport_feedback(packet, |feedback| {
            read += 1;
            cc.estimator.on_feedback(at, |packet| {
                let _ = feedback.for_each_packet(packet);
            });
        });
        if let Some(remb) = remb {
            cc.estimator.remb(remb);
        }
        if let (Some(fraction), 0) = (fraction_lost, cc.estimator.feedbacks) {
            cc.estimator.on_receiver_report(fraction);
        }
        let over_use = cc.estimator.usage() == Usage::Over;
        let (estimator, prober) = (&mut cc.estimator, &mut cc.prober);
        let probed = match prober.on_feedback(&estimator.cluster, over_use, estimator.reported_sent, at) {
            Some(ProbeOutcome::Carried { bitrate }) => {
                estimator.probe_carried(bitrate);
                true
            }
            Some(ProbeOutcome::Failed) => {
                estimator.probe_failed(at);
                false
            }
            None => false,
        };
        let bitrate = cc.estimator.bitrate();
        let can_carry_padding =
            self.streams.iter().any(|stream| stream.transport_cc_id.is_some() && stream.starts_at_keyframes);
        let cc = self.transport_cc.as_mut().expect("made above");
        let measured = cc.estimator.is_measured_by_feedback();
        if can_carry_padding && cc.prober.start_if_due(bitrate, measured, cc.estimator.last_decrease, at) {
            cc.estimator.probe_started(cc.prober.measured_cluster());
            ViewerCounters::add(&self.counters.probes, 1);
        }
        ViewerCounters::add(&self.counters.probes_carried, u64::from(probed));
        // A probe's own over-use and loss are not news of the link (see egress::probe).
        let report = probed
            || !cc.prober.is_active()
                && match cc.reported {
                    None => cc.estimator.is_measured(),
                    Some((last, when)) => {
                        now.saturating_duration_since(when) >= ESTIMATE_REPORT_INTERVAL
                            || (bitrate as f64) < (last as f64) * (1.0 - ESTIMATE_FALL_REPORTED)
                    }
                };
        if report {
            cc.reported = Some((bitrate, now));
        }
        let link_limited = cc.estimator.is_link_limited();
        let paced = cc.estimator.is_measured_by_feedback().then_some(bitrate);
        self.budget.set_estimate(paced, link_limited, now);
        self.counters.estimate.store(bitrate, Ordering::Relaxed);
        if let Some(in_flight) = cc.estimator.bytes_in_flight() {
            self.counters.bytes_in_flight.store(in_flight, Ordering::Relaxed);
        }
        ViewerCounters::add(&self.counters.transport_feedbacks, read);
        if let (true, Some(events)) = (report, &self.events) {
            let (peer_id, mountpoint_id) = (self.id, self.mountpoint_id);
            events.push(Event::BandwidthEstimate { peer_id, mountpoint_id, bitrate, link_limited, probed });
        }
    }

    /// Whether the viewer's link holds a queue (see [`LINK_QUEUE_SECONDS`]);
    /// false until transport feedback measured it.
    pub fn link_holds_a_queue(&self) -> bool {
        let Some(cc) = self.transport_cc.as_ref().filter(|cc| cc.estimator.is_measured_by_feedback()) else {
            return false;
        };
        let in_flight = cc.estimator.bytes_in_flight().unwrap_or(0);
        in_flight as f64 > cc.estimator.bitrate() as f64 / 8.0 * LINK_QUEUE_SECONDS
    }

    /// Reports this viewer's moves and starts from the keyframe cache to `events`.
    pub fn set_events(&mut self, events: Arc<EventQueue>) {
        self.events = Some(events);
    }

    /// A stream started from a keyframe cache holding `packets` packets.
    pub fn report_start_from_cache(&self, position: usize, packets: usize) {
        if let Some(events) = &self.events {
            let (peer_id, mountpoint_id) = (self.id, self.mountpoint_id);
            events.push(Event::KeyframeFromCache { peer_id, mountpoint_id, position, packets });
        }
    }

    /// Writes what its ICE-TCP connection's queue holds, if it has one; reports
    /// the connection's loss (stalled, broken) once.
    pub fn write_tcp(&self, now: Instant) {
        let Some(tcp) = &self.tcp else { return };
        let loss = tcp.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).write(now);
        if let (Some(loss), Some(events)) = (loss, &self.events) {
            events.push(Event::TcpConnectionLost { peer_id: self.id, reason: loss.reason() });
        }
    }

    /// The counters the engine handle reads.
    pub fn set_counters(&mut self, counters: Arc<ViewerCounters>) {
        self.counters = counters;
    }

    /// Counts and reports a stream's move from source stream `from` to `to` (positions).
    pub fn count_source_switch(&self, from: usize, to: usize) {
        report_move((self.id, self.mountpoint_id), &self.counters, self.events.as_deref(), from, to);
    }

    /// Whether a stream is sending a burst (and the viewer is not paused).
    pub fn is_bursting(&self) -> bool {
        !self.paused && self.streams.iter().any(ViewerStream::is_bursting)
    }

    /// A burst starts with the full credit.
    pub fn reset_burst_credit(&mut self, now: Instant) {
        self.budget.reset(now);
    }

    /// Adds the credit earned since the last call; whether any is left to spend.
    pub fn refill_burst_credit(&mut self, now: Instant) -> bool {
        self.budget.has_credit(now)
    }

    /// What bursts and retransmissions spend (see [`SendBudget`]).
    pub fn budget(&self) -> &SendBudget {
        &self.budget
    }

    /// Paces bursts and retransmissions to `estimate` (bits per second; None: not measured).
    pub fn pace_to(&mut self, estimate: Option<u64>, now: Instant) {
        self.budget.set_estimate(estimate, false, now);
    }

    /// Whether a retransmission may go now (see [`SendBudget`]); one that
    /// may not is counted as refused.
    pub fn may_retransmit(&mut self, now: Instant) -> bool {
        if !self.budget.is_paced() || self.budget.has_credit(now) {
            return true;
        }
        ViewerCounters::add(&self.counters.retransmissions_over_budget, 1);
        false
    }

    /// Counts a NACKed sequence number that could not be sent again.
    pub fn count_unanswered_nack(&self) {
        ViewerCounters::add(&self.counters.nacks_unanswered, 1);
    }

    /// The next packet of any stream's burst: (stream position, packet).
    /// `histories` and `latest` are the worker's, by source stream.
    pub fn next_burst_packet(
        &mut self,
        histories: &[History],
        latest: &[Option<(u32, u16)>],
    ) -> Option<(usize, Arc<Packet>)> {
        for (position, stream) in self.streams.iter_mut().enumerate() {
            if !stream.is_bursting() {
                continue;
            }
            let (Some(history), Some(&latest)) = (histories.get(stream.source), latest.get(stream.source)) else {
                continue;
            };
            if let Some(packet) = stream.next_burst_packet(history, latest) {
                return Some((position, packet));
            }
        }
        None
    }

    /// Rewrites and protects a burst packet for stream `stream`, spending credit.
    pub fn write_burst(&mut self, stream: usize, packet: &Packet, now: Instant, out: &mut [u8]) -> Option<usize> {
        let rewritten = self.streams[stream].rewrite_burst(packet.bytes(), &packet.meta, now, out)?;
        let sequence = self.number(&rewritten, out);
        let len = self.srtp.protect_rtp(out, rewritten.len, rewritten.rollover_counter).ok()?;
        self.sent(sequence, len, now);
        self.budget.spend(len);
        Some(len)
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether a live packet of source stream `source` would be sent (a stream
    /// of the viewer takes it and is not paused, held or bursting).
    pub fn takes(&self, source: usize) -> bool {
        self.streams
            .iter()
            .any(|stream| stream.source == source && !stream.paused && !stream.held && stream.burst.is_none())
    }

    /// A resumed viewer starts again at keyframes: a stream whose move to
    /// another source waited (the viewer was paused meanwhile) moves now.
    pub fn set_paused(&mut self, paused: bool) {
        if self.paused && !paused {
            for stream in self.streams.iter_mut() {
                if let Some((from, to)) = stream.take_next_source() {
                    report_move((self.id, self.mountpoint_id), &self.counters, self.events.as_deref(), from, to);
                }
                stream.restart();
            }
        }
        self.paused = paused;
    }

    /// Rewrites and protects a packet of the source stream at `source` for
    /// this viewer into `out`; returns the SRTP length, or None if the viewer
    /// does not take it.
    pub fn write_rtp(
        &mut self,
        source: usize,
        packet: &[u8],
        received: &ReceivedPacket,
        now: Instant,
        out: &mut [u8],
    ) -> Option<usize> {
        let stream =
            self.streams.iter_mut().find(|stream| stream.source == source || stream.next_source == Some(source))?;
        if stream.source != source {
            // A simulcast move waits for this source's keyframe; the current source goes on until then.
            if !received.keyframe_start || stream.paused || stream.held {
                return None;
            }
            if let Some((from, to)) = stream.take_next_source() {
                report_move((self.id, self.mountpoint_id), &self.counters, self.events.as_deref(), from, to);
            }
        }
        let rewritten = stream.rewrite(packet, received, now, out)?;
        let sequence = self.number(&rewritten, out);
        let len = self.srtp.protect_rtp(out, rewritten.len, rewritten.rollover_counter).ok()?;
        self.sent(sequence, len, now);
        self.budget.spend_live(len, now);
        Some(len)
    }

    /// Writes the source packet `packet` again, protected, as this viewer's
    /// stream `stream` first received it; the SRTP length, or None.
    pub fn write_retransmission(
        &mut self,
        stream: usize,
        sequence: u16,
        packet: &[u8],
        received: &ReceivedPacket,
        now: Instant,
        out: &mut [u8],
    ) -> Option<usize> {
        let rewritten = self.streams[stream].rewrite_again(sequence, packet, received, out)?;
        let transport_sequence = self.number(&rewritten, out);
        let len = self.srtp.protect_rtp(out, rewritten.len, rewritten.rollover_counter).ok()?;
        self.sent(transport_sequence, len, now);
        if self.budget.is_paced() {
            self.budget.spend(len);
        }
        Some(len)
    }

    /// Protects RTCP with the peer's next SRTCP index.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.srtp.protect_rtcp(buf, len, self.counters.next_srtcp_index())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source_packet(sequence: u16, timestamp: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x80, 0x80 | 111];
        packet.extend_from_slice(&sequence.to_be_bytes());
        packet.extend_from_slice(&timestamp.to_be_bytes());
        packet.extend_from_slice(&ssrc.to_be_bytes());
        packet.extend_from_slice(payload);
        packet
    }

    fn received(packet: &[u8], keyframe_start: bool, epoch: u32) -> ReceivedPacket {
        ReceivedPacket {
            header: RtpHeader::parse(packet).unwrap(),
            keyframe_start,
            epoch,
            arrival_ns: 0,
            droppable: false,
        }
    }

    struct Sent {
        sequence: u16,
        timestamp: u32,
        rollover_counter: u32,
    }

    fn send(stream: &mut ViewerStream, packet: &[u8], keyframe: bool, epoch: u32, now: Instant) -> Option<Sent> {
        let mut out = [0u8; 256];
        let rewritten = stream.rewrite(packet, &received(packet, keyframe, epoch), now, &mut out)?;
        let header = RtpHeader::parse(&out[..rewritten.len]).unwrap();
        assert_eq!(header.ssrc, 0xabcd);
        assert_eq!(header.payload_type, 100);
        assert!(header.marker);
        assert_eq!(&out[12..rewritten.len], &packet[12..]);
        Some(Sent {
            sequence: header.sequence,
            timestamp: header.timestamp,
            rollover_counter: rewritten.rollover_counter,
        })
    }

    fn stream(starts_at_keyframes: bool, start_sequence: u16) -> ViewerStream {
        let start = StreamStart { sequence: start_sequence, timestamp: 5_000 };
        ViewerStream::new(0, 0xabcd, 100, 90_000, starts_at_keyframes, start)
    }

    #[test]
    fn rewrites_from_the_viewers_start_values() {
        let now = Instant::now();
        let mut stream = stream(false, 1000);
        let first = send(&mut stream, &source_packet(40, 90_000, 1, b"one"), false, 0, now).unwrap();
        assert_eq!((first.sequence, first.timestamp), (1000, 5_000));
        let second = send(&mut stream, &source_packet(41, 93_000, 1, b"two"), false, 0, now).unwrap();
        assert_eq!((second.sequence, second.timestamp), (1001, 8_000));
        let late = send(&mut stream, &source_packet(39, 87_000, 1, b"old"), false, 0, now).unwrap();
        assert_eq!((late.sequence, late.timestamp), (999, 2_000));
    }

    #[test]
    fn stays_continuous_across_a_source_restart() {
        let now = Instant::now();
        let mut stream = stream(false, 1000);
        send(&mut stream, &source_packet(40, 90_000, 1, b"a"), false, 0, now).unwrap();
        let later = now + Duration::from_millis(100);
        let restarted = send(&mut stream, &source_packet(7, 12, 2, b"b"), false, 1, later).unwrap();
        assert_eq!((restarted.sequence, restarted.timestamp), (1001, 5_000 + 9_000));
        let next = send(&mut stream, &source_packet(8, 3012, 2, b"c"), false, 1, later).unwrap();
        assert_eq!((next.sequence, next.timestamp), (1002, 5_000 + 12_000));
    }

    #[test]
    fn waits_for_a_keyframe_then_continues_after_a_pause() {
        let now = Instant::now();
        let mut stream = stream(true, 10);
        assert!(send(&mut stream, &source_packet(1, 0, 1, b"delta"), false, 0, now).is_none());
        assert_eq!(send(&mut stream, &source_packet(2, 0, 1, b"key"), true, 0, now).unwrap().sequence, 10);
        assert_eq!(send(&mut stream, &source_packet(3, 0, 1, b"delta"), false, 0, now).unwrap().sequence, 11);
        stream.restart();
        assert!(send(&mut stream, &source_packet(50, 0, 1, b"delta"), false, 0, now).is_none());
        assert_eq!(send(&mut stream, &source_packet(60, 0, 1, b"key"), true, 0, now).unwrap().sequence, 12);
        assert_eq!(send(&mut stream, &source_packet(61, 0, 1, b"delta"), false, 0, now).unwrap().sequence, 13);
    }

    #[test]
    fn counts_rollovers_of_the_viewers_sequence() {
        let now = Instant::now();
        let mut stream = stream(false, 0xfffe);
        let rocs: Vec<(u16, u32)> = (100..104)
            .map(|sequence| send(&mut stream, &source_packet(sequence, 0, 1, b"x"), false, 0, now).unwrap())
            .map(|sent| (sent.sequence, sent.rollover_counter))
            .collect();
        assert_eq!(rocs, [(0xfffe, 0), (0xffff, 0), (0, 1), (1, 1)]);
        let late = send(&mut stream, &source_packet(101, 0, 1, b"x"), false, 0, now).unwrap();
        assert_eq!((late.sequence, late.rollover_counter), (0xffff, 0));
    }

    #[test]
    fn removes_the_source_header_extension() {
        let mut packet = source_packet(1, 2, 3, &[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]);
        packet[0] |= 0x10;
        packet.extend_from_slice(b"payload");
        let mut stream = stream(false, 7);
        let mut out = [0u8; 256];
        let rewritten = stream.rewrite(&packet, &received(&packet, false, 0), Instant::now(), &mut out).unwrap();
        assert_eq!(rewritten.len, 12 + 7);
        assert_eq!(out[0], 0x80);
        assert_eq!(&out[12..19], b"payload");
    }

    fn rewrite(stream: &mut ViewerStream, packet: &[u8]) -> Vec<u8> {
        let mut out = [0u8; 256];
        let rewritten = stream.rewrite(packet, &received(packet, false, 0), Instant::now(), &mut out).unwrap();
        out[..rewritten.len].to_vec()
    }

    const DELAY: PlayoutDelay = PlayoutDelay { extension_id: 5, min: 100, max: 200 };
    /// DELAY as a header extension: 0xBEDE, one word; id 5, three bytes: 0x064, 0x0c8.
    const DELAY_EXTENSION: [u8; 8] = [0xbe, 0xde, 0, 1, 0x52, 0x06, 0x40, 0xc8];

    #[test]
    fn adds_the_playout_delay_extension() {
        let mut stream = stream(false, 7);
        stream.set_playout_delay(Some(DELAY));
        let out = rewrite(&mut stream, &source_packet(1, 2, 3, b"payload"));
        let mut expected = vec![0x90, 0x80 | 100, 0, 7, 0, 0, 0x13, 0x88, 0, 0, 0xab, 0xcd];
        expected.extend_from_slice(&DELAY_EXTENSION);
        expected.extend_from_slice(b"payload");
        assert_eq!(out, expected);
        let header = RtpHeader::parse(&out).unwrap();
        assert_eq!((header.csrc_end, header.payload_start, header.payload_end), (12, 20, 27));

        stream.set_playout_delay(None);
        let out = rewrite(&mut stream, &source_packet(2, 2, 3, b"payload"));
        assert_eq!(out[0], 0x80);
        assert_eq!(&out[12..], b"payload");
    }

    #[test]
    fn puts_the_playout_delay_after_the_csrcs_and_keeps_the_padding() {
        // Two CSRCs, padding bit, three bytes of padding.
        let mut packet = source_packet(1, 2, 3, &[0, 0, 0, 0x11, 0, 0, 0, 0x22]);
        packet[0] |= 0x20 | 2;
        packet.extend_from_slice(b"data\0\0\x03");
        let mut stream = stream(false, 7);
        stream.set_playout_delay(Some(DELAY));
        let out = rewrite(&mut stream, &packet);
        assert_eq!(out[0], 0x80 | 0x20 | 0x10 | 2);
        assert_eq!(&out[12..20], &[0, 0, 0, 0x11, 0, 0, 0, 0x22]);
        assert_eq!(&out[20..28], &DELAY_EXTENSION);
        assert_eq!(&out[28..], b"data\0\0\x03");
        let header = RtpHeader::parse(&out).unwrap();
        assert_eq!((header.csrc_end, header.payload_start, header.payload_end), (20, 28, 32));
    }

    #[test]
    fn replaces_the_source_header_extension_with_the_playout_delay() {
        // The source's two-word extension (an abs-send-time the viewer never negotiated).
        let mut packet = source_packet(1, 2, 3, &[0xbe, 0xde, 0, 2, 0x32, 1, 2, 3, 0x40, 9, 0, 0]);
        packet[0] |= 0x10;
        packet.extend_from_slice(b"payload");
        let mut stream = stream(false, 7);
        stream.set_playout_delay(Some(DELAY));
        let out = rewrite(&mut stream, &packet);
        assert_eq!(out.len(), 12 + 8 + 7);
        assert_eq!(out[0], 0x90);
        assert_eq!(&out[12..20], &DELAY_EXTENSION);
        assert_eq!(&out[20..], b"payload");
    }

    #[test]
    fn retransmissions_and_bursts_carry_the_playout_delay() {
        let now = Instant::now();
        let mut stream = stream(false, 7);
        stream.set_playout_delay(Some(DELAY));
        let packet = source_packet(1, 2, 3, b"payload");
        let first = rewrite(&mut stream, &packet);
        let mut out = [0u8; 256];
        let sequence = u16::from_be_bytes([first[2], first[3]]);
        let again = stream.rewrite_again(sequence, &packet, &received(&packet, false, 0), &mut out).unwrap();
        assert_eq!(&out[..again.len], &first[..], "a retransmission is the packet as first sent");
        let next = source_packet(2, 2, 3, b"burst");
        let burst = stream.rewrite_burst(&next, &received(&next, false, 0), now, &mut out).unwrap();
        assert_eq!(&out[12..20], &DELAY_EXTENSION);
        assert_eq!(&out[20..burst.len], b"burst");
    }

    #[test]
    fn a_switch_keeps_the_playout_delay() {
        let mut old = stream(false, 7);
        old.set_playout_delay(Some(DELAY));
        let mut new = stream(false, 7);
        new.continue_from(&old);
        let out = rewrite(&mut new, &source_packet(1, 2, 3, b"x"));
        assert_eq!(&out[12..20], &DELAY_EXTENSION);
    }

    #[test]
    fn numbers_every_packet_of_every_stream_with_the_transport_wide_sequence() {
        let now = Instant::now();
        let mut audio = stream(false, 7);
        audio.source = 1;
        let mut viewer = viewer_of(stream(false, 1));
        viewer.streams.push(audio);
        viewer.set_transport_cc(Some(3));
        let mut numbers = Vec::new();
        for (source, sequence) in [(0, 1), (1, 1), (0, 2)] {
            let packet = source_packet(sequence, 0, 1, b"payload");
            let mut out = [0u8; 256];
            let stream = viewer.streams.iter_mut().find(|s| s.source == source).unwrap();
            let rewritten = stream.rewrite(&packet, &received(&packet, false, 0), now, &mut out).unwrap();
            let transport = viewer.number(&rewritten, &mut out).unwrap();
            assert_eq!(&out[12..20], &[0xbe, 0xde, 0, 1, 0x31, 0, transport as u8, 0]);
            let header = RtpHeader::parse(&out[..rewritten.len]).unwrap();
            assert_eq!(crate::wire::rtp::header_extension(&out, &header, 3), Some(&[0, transport as u8][..]));
            assert_eq!(&out[20..rewritten.len], b"payload");
            numbers.push(transport);
        }
        assert_eq!(numbers, [0, 1, 2]);
    }

    #[test]
    fn the_transport_wide_sequence_follows_the_playout_delay() {
        let mut viewer = viewer_of(stream(false, 1));
        viewer.streams[0].set_playout_delay(Some(DELAY));
        viewer.set_transport_cc(Some(3));
        let packet = source_packet(1, 0, 1, b"payload");
        let mut out = [0u8; 256];
        let rewritten =
            viewer.streams[0].rewrite(&packet, &received(&packet, false, 0), Instant::now(), &mut out).unwrap();
        viewer.number(&rewritten, &mut out);
        assert_eq!(&out[12..24], &[0xbe, 0xde, 0, 2, 0x52, 0x06, 0x40, 0xc8, 0x31, 0, 0, 0]);
        let header = RtpHeader::parse(&out[..rewritten.len]).unwrap();
        assert_eq!(crate::wire::rtp::header_extension(&out, &header, 5), Some(&[0x06, 0x40, 0xc8][..]));
        assert_eq!(&out[24..rewritten.len], b"payload");
    }

    #[test]
    fn transport_feedback_updates_the_estimate_and_reports_it() {
        let now = Instant::now();
        let events = Arc::new(EventQueue::new().unwrap());
        let mut viewer = viewer_of(stream(false, 1));
        viewer.set_events(events.clone());
        viewer.mountpoint_id = 4;
        viewer.set_transport_cc(Some(3));
        let mut out = [0u8; 1500];
        for sequence in 1..=10 {
            let packet = source_packet(sequence, 0, 1, b"payload");
            viewer.write_rtp(0, &packet, &received(&packet, false, 0), now, &mut out).unwrap();
        }
        let arrivals: Vec<Option<i64>> = (0..10).map(|i| (i != 4).then_some(64_000 + i * 1000)).collect();
        let feedback = crate::wire::twcc::build_feedback(0, 64_000, &arrivals, 0);
        viewer.on_feedback(&feedback, Some(400_000), None, now);
        let estimator = &viewer.transport_cc().unwrap().estimator;
        assert_eq!((estimator.received, estimator.lost), (9, 1));
        assert_eq!(
            events.drain(),
            [Event::BandwidthEstimate {
                peer_id: 1,
                mountpoint_id: 4,
                bitrate: 400_000,
                link_limited: true,
                probed: false
            }]
        );
        viewer.on_feedback(&feedback, None, None, now + Duration::from_millis(100));
        assert!(events.drain().is_empty(), "at most once a second unless it fell");
        viewer.on_feedback(&[], Some(100_000), None, now + Duration::from_millis(200));
        assert_eq!(
            events.drain(),
            [Event::BandwidthEstimate {
                peer_id: 1,
                mountpoint_id: 4,
                bitrate: 100_000,
                link_limited: true,
                probed: false
            }]
        );
    }

    #[test]
    fn sender_info_extrapolates_the_timestamp() {
        let now = Instant::now();
        let mut stream = stream(false, 1);
        assert!(stream.sender_info(now, 0).is_none());
        send(&mut stream, &source_packet(1, 0, 1, b"12345"), false, 0, now).unwrap();
        let info = stream.sender_info(now + Duration::from_millis(500), 77).unwrap();
        assert_eq!(
            info,
            SenderInfo { ssrc: 0xabcd, ntp_time: 77, rtp_timestamp: 5_000 + 45_000, packets: 1, octets: 5 }
        );
    }

    /// A VP8 payload: X, I (15-bit picture id), L, T; the S bit when the packet starts a frame.
    fn vp8_payload(starts_frame: bool, picture_id: u16, tl0: u8, temporal_layer: u8, keyframe: bool) -> Vec<u8> {
        let [high, low] = picture_id.to_be_bytes();
        let first = 0x80 | if starts_frame { 0x10 } else { 0 };
        vec![first, 0xe0, 0x80 | high, low, tl0, temporal_layer << 6, if keyframe { 0x00 } else { 0x01 }]
    }

    /// Sends a packet of the source at `source` through the viewer's streams as
    /// `Viewer::write_rtp` does, without SRTP: (sequence, timestamp, payload).
    fn through(
        viewer: &mut Viewer,
        source: usize,
        packet: &[u8],
        keyframe: bool,
        now: Instant,
    ) -> Option<(u16, u32, Vec<u8>)> {
        let stream = viewer.streams.iter_mut().find(|s| s.source == source || s.next_source == Some(source))?;
        if stream.source != source {
            if !keyframe {
                return None;
            }
            stream.take_next_source();
        }
        let mut out = [0u8; 256];
        let len = stream.rewrite(packet, &received(packet, keyframe, 0), now, &mut out)?.len;
        let header = RtpHeader::parse(&out[..len]).unwrap();
        Some((header.sequence, header.timestamp, out[12..len].to_vec()))
    }

    #[test]
    fn a_link_holds_a_queue_while_more_is_in_flight_than_a_tenth_of_a_second_of_its_estimate() {
        let mut viewer = viewer_of(stream(false, 1));
        viewer.set_transport_cc(Some(3));
        let now = Instant::now();
        let mut out = [0u8; 1500];
        for sequence in 1..=40 {
            let packet = source_packet(sequence, 0, 1, &[0u8; 1000]);
            viewer.write_rtp(0, &packet, &received(&packet, false, 0), now, &mut out).unwrap();
        }
        assert!(!viewer.link_holds_a_queue(), "not measured yet");
        // The first 20 arrived over 0.6 s (the link is measured); a REMB caps the estimate at
        // 200 kbit/s, 2.5 KB in 0.1 s: the other 20 KB in flight are a queue.
        let arrivals: Vec<Option<i64>> = (0..20).map(|i| Some(64_000 + i * 30_000)).collect();
        viewer.on_feedback(&crate::wire::twcc::build_feedback(0, 64_000, &arrivals, 0), Some(200_000), None, now);
        assert!(viewer.link_holds_a_queue());
        // Ten more arrived, seven lost: two packets' worth in flight.
        let arrivals: Vec<Option<i64>> = (0..18).map(|i| (i < 10 || i == 17).then_some(664_000 + i * 30_000)).collect();
        viewer.on_feedback(&crate::wire::twcc::build_feedback(20, 64_000, &arrivals, 1), None, None, now);
        assert!(!viewer.link_holds_a_queue());
    }

    fn viewer_of(stream: ViewerStream) -> Viewer {
        let session = SrtpSession::new(crate::wire::srtp::Profile::AeadAes128Gcm, &[7u8; 28]).unwrap();
        Viewer::new(1, RawAddress::UNSPECIFIED, vec![stream], session, Instant::now())
    }

    /// Sends `packet` (ending a frame unless `mid_frame`) on a stream that numbers its packets
    /// transport-wide: the viewer's (sequence, timestamp), None if not sent.
    fn send_numbered(video: &mut ViewerStream, packet: &[u8], keyframe: bool, mid_frame: bool) -> Option<(u16, u32)> {
        let mut packet = packet.to_vec();
        if mid_frame {
            packet[1] &= 0x7f;
        }
        let mut out = [0u8; 256];
        let rewritten = video.rewrite(&packet, &received(&packet, keyframe, 0), Instant::now(), &mut out)?;
        let header = RtpHeader::parse(&out[..rewritten.len]).unwrap();
        Some((header.sequence, header.timestamp))
    }

    /// A video stream that numbers its packets transport-wide and sent the source's 40 (a keyframe) and 41.
    fn padded_stream() -> ViewerStream {
        let mut video = stream(true, 1000);
        video.set_transport_cc(Some(3));
        send_numbered(&mut video, &source_packet(40, 90_000, 1, b"key"), true, false).unwrap();
        send_numbered(&mut video, &source_packet(41, 93_000, 1, b"next"), false, false).unwrap();
        video
    }

    #[test]
    fn padding_goes_between_frames_and_the_packets_after_it_follow_on() {
        let mut video = padded_stream();
        let mut out = [0u8; 512];
        let padding = video.write_padding(255, &mut out).unwrap();
        let header = RtpHeader::parse(&out[..padding.len]).unwrap();
        assert_eq!((header.sequence, header.timestamp, header.payload_type), (1002, 8_000, 100));
        assert!(!header.marker && out[0] & 0x20 != 0, "the padding bit, no marker");
        assert_eq!(header.payload_start, header.payload_end, "no payload");
        assert_eq!((padding.len - header.payload_start, out[padding.len - 1]), (255, 255));
        assert!(padding.transport_sequence_at.is_some(), "numbered transport-wide");
        video.write_padding(100, &mut out).unwrap();
        let after = send_numbered(&mut video, &source_packet(42, 96_000, 1, b"after"), false, false);
        assert_eq!(after, Some((1004, 11_000)), "no gap, no clash");

        // NACKs: source packets map back across the padding; the padding is sent again.
        assert_eq!(video.source_of(1001), Some((41, 0)));
        assert_eq!(video.source_of(1004), Some((42, 0)));
        assert_eq!((video.source_of(1002), video.source_of(1003)), (None, None));
        let again = video.write_padding_again(1003, &mut out).unwrap();
        let header = RtpHeader::parse(&out[..again.len]).unwrap();
        assert_eq!((header.sequence, header.timestamp, out[again.len - 1]), (1003, 8_000, 1));
        assert!(video.write_padding_again(1004, &mut out).is_none(), "a media packet is no padding");

        // A late packet from before the padding would clash with a number sent: left out.
        assert_eq!(send_numbered(&mut video, &source_packet(41, 93_000, 1, b"again"), false, false), None);
        // One from after it takes its number.
        send_numbered(&mut video, &source_packet(44, 102_000, 1, b"early"), false, false).unwrap();
        let late = send_numbered(&mut video, &source_packet(43, 99_000, 1, b"late"), false, false);
        assert_eq!(late, Some((1005, 14_000)));
    }

    #[test]
    fn a_probing_viewer_is_sent_the_padding_it_is_owed_unless_it_is_forgone() {
        let start = Instant::now();
        let mut video = padded_stream();
        video.set_transport_cc(None);
        let mut viewer = viewer_of(video);
        viewer.set_transport_cc(Some(3));
        let at = viewer.micros(start);
        let cc = viewer.transport_cc.as_mut().unwrap();
        cc.prober.set_goal(Some(2_000_000), at - 10_000_000);
        assert!(cc.prober.start_if_due(1_000_000, true, i64::MIN, at));
        let mut out = [0u8; 512];
        let later = start + Duration::from_millis(4); // 1,000 bytes owed at 2 Mbit/s
        let mut padded = 0;
        while let Some(len) = viewer.write_padding(later, &mut out) {
            padded += len;
        }
        assert!((1_000..1_300).contains(&padded), "{padded} bytes of padding");
        viewer.forgo_padding(start + Duration::from_millis(8));
        assert_eq!(viewer.write_padding(start + Duration::from_millis(8), &mut out), None, "forgone, not owed");
        assert!(viewer.write_padding(start + Duration::from_millis(10), &mut out).is_some());
    }

    #[test]
    fn padding_waits_for_the_end_of_a_frame_and_a_started_video_stream() {
        let mut out = [0u8; 512];
        assert!(stream(true, 1000).write_padding(255, &mut out).is_none(), "nothing sent yet");
        let mut audio = stream(false, 1000);
        audio.set_transport_cc(Some(3));
        send_numbered(&mut audio, &source_packet(40, 960, 1, b"opus"), false, false).unwrap();
        assert!(audio.write_padding(255, &mut out).is_none(), "audio carries no padding");
        let mut video = padded_stream();
        send_numbered(&mut video, &source_packet(42, 96_000, 1, b"first half"), false, true).unwrap();
        assert!(video.write_padding(255, &mut out).is_none(), "not inside a frame");
        send_numbered(&mut video, &source_packet(43, 96_000, 1, b"second half"), false, false).unwrap();
        assert!(video.write_padding(255, &mut out).is_some(), "after it");
        video.set_paused(true);
        assert!(video.write_padding(255, &mut out).is_none(), "not while paused");
    }

    #[test]
    fn moves_to_another_encoding_at_its_keyframe_with_continuous_numbering() {
        let now = Instant::now();
        let mut viewer = viewer_of(stream(true, 100));
        let low = |sequence, picture_id, keyframe| {
            source_packet(sequence, u32::from(sequence) * 3000, 1, &vp8_payload(true, picture_id, 9, 0, keyframe))
        };
        let high = |sequence: u16, picture_id, keyframe| {
            source_packet(
                sequence,
                777 + u32::from(sequence) * 3000,
                2,
                &vp8_payload(true, picture_id, 200, 0, keyframe),
            )
        };
        assert_eq!(through(&mut viewer, 0, &low(10, 500, true), true, now).unwrap().0, 100);
        assert_eq!(through(&mut viewer, 0, &low(11, 501, false), false, now).unwrap().0, 101);
        assert!(!viewer.streams[0].move_to(1), "a started stream waits for the keyframe");
        assert_eq!(viewer.streams[0].next_source(), Some(1));
        viewer.streams[0].rewrite_pictures(Codec::Vp8);
        // The new encoding's delta frames are not taken; the old one goes on.
        assert!(through(&mut viewer, 1, &high(5000, 20, false), false, now).is_none());
        let (sequence, _, payload) = through(&mut viewer, 0, &low(12, 502, false), false, now).unwrap();
        assert_eq!((sequence, &payload[2..4]), (102, &[0x81, 0xf6][..]), "picture 502 untouched");
        let later = now + Duration::from_millis(40);
        let (sequence, timestamp, payload) = through(&mut viewer, 1, &high(5001, 21, true), true, later).unwrap();
        assert_eq!(sequence, 103, "the keyframe of the new encoding follows on");
        assert_eq!(timestamp, 5_000 + 2 * 3000 + 3600, "advanced by the 40 ms that passed");
        let descriptor = Vp8Descriptor::parse(&payload).unwrap();
        assert_eq!(descriptor.read_picture_id(&payload), Some(503), "picture ids follow on");
        assert_eq!(payload[4], 10, "TL0PICIDX follows on");
        assert_eq!(viewer.streams[0].source, 1);
        assert!(through(&mut viewer, 0, &low(13, 503, false), false, later).is_none(), "the old encoding stops");
        let (sequence, timestamp, payload) = through(&mut viewer, 1, &high(5002, 22, false), false, later).unwrap();
        assert_eq!((sequence, timestamp), (104, 5_000 + 2 * 3000 + 3600 + 3000));
        assert_eq!(Vp8Descriptor::parse(&payload).unwrap().read_picture_id(&payload), Some(504));
    }

    #[test]
    fn a_move_now_stops_the_old_encoding_at_once_and_follows_on_at_the_new_keyframe() {
        let now = Instant::now();
        let mut viewer = viewer_of(stream(true, 100));
        let low = |sequence, keyframe| {
            source_packet(sequence, u32::from(sequence) * 3000, 1, &vp8_payload(true, 500, 9, 0, keyframe))
        };
        let high = |sequence: u16, keyframe| source_packet(sequence, 777, 2, &vp8_payload(true, 20, 200, 0, keyframe));
        viewer.streams[0].rewrite_pictures(Codec::Vp8);
        assert_eq!(through(&mut viewer, 0, &low(10, true), true, now).unwrap().0, 100);
        assert!(viewer.streams[0].move_now(1), "moved now");
        assert_eq!((viewer.streams[0].source, viewer.streams[0].next_source()), (1, None));
        assert!(through(&mut viewer, 0, &low(11, false), false, now).is_none(), "the old encoding stopped");
        assert!(through(&mut viewer, 1, &high(5000, false), false, now).is_none(), "the new one waits for a keyframe");
        let (sequence, _, payload) = through(&mut viewer, 1, &high(5001, true), true, now).unwrap();
        assert_eq!(sequence, 101, "the keyframe of the new encoding follows on");
        assert_eq!(Vp8Descriptor::parse(&payload).unwrap().read_picture_id(&payload), Some(501));
        assert!(!viewer.streams[0].move_now(1), "already there");
    }

    #[test]
    fn a_move_is_reported_when_it_takes_effect_at_the_keyframe() {
        let now = Instant::now();
        let events = Arc::new(EventQueue::new().unwrap());
        let mut viewer = viewer_of(stream(true, 1));
        viewer.set_events(events.clone());
        viewer.mountpoint_id = 4;
        let mut out = [0u8; 1500];
        let mut send = |viewer: &mut Viewer, source, sequence, keyframe| {
            let packet = source_packet(sequence, 0, 1, &vp8_payload(true, 1, 0, 0, keyframe));
            viewer.write_rtp(source, &packet, &received(&packet, keyframe, 0), now, &mut out)
        };
        assert!(send(&mut viewer, 0, 1, true).is_some());
        assert!(!viewer.streams[0].move_to(1));
        assert!(send(&mut viewer, 1, 100, false).is_none());
        assert!(events.drain().is_empty(), "not moved before the keyframe");
        assert!(send(&mut viewer, 1, 101, true).is_some());
        assert_eq!(events.drain(), [Event::SubstreamMoved { peer_id: 1, mountpoint_id: 4, from: 0, to: 1 }]);
        assert!(send(&mut viewer, 1, 102, true).is_some());
        assert!(events.drain().is_empty(), "one event per move");
    }

    #[test]
    fn a_viewer_resumed_after_a_pause_takes_the_waiting_move_at_once() {
        let now = Instant::now();
        let mut viewer = viewer_of(stream(false, 1));
        through(&mut viewer, 0, &source_packet(1, 0, 1, b"x"), false, now).unwrap();
        viewer.set_paused(true);
        assert!(!viewer.streams[0].move_to(1), "the stream itself is not paused: the move waits");
        viewer.set_paused(false);
        assert_eq!((viewer.streams[0].source, viewer.streams[0].next_source()), (1, None));
        assert_eq!(viewer.counters.source_switches.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_stream_that_sent_nothing_moves_at_once() {
        let mut stream = stream(true, 1);
        assert!(stream.move_to(2));
        assert_eq!((stream.source, stream.next_source()), (2, None));
        assert!(!stream.move_to(2), "already there");
    }

    #[test]
    fn moving_back_cancels_a_waiting_move() {
        let now = Instant::now();
        let mut stream = stream(false, 1);
        send(&mut stream, &source_packet(1, 0, 1, b"x"), false, 0, now).unwrap();
        assert!(!stream.move_to(1));
        assert_eq!(stream.next_source(), Some(1));
        assert!(!stream.move_to(0));
        assert_eq!(stream.next_source(), None);
    }

    #[test]
    fn leaves_out_temporal_layers_above_the_cap_without_gaps() {
        let now = Instant::now();
        let mut viewer = viewer_of(stream(false, 50));
        viewer.streams[0].rewrite_pictures(Codec::Vp8);
        viewer.streams[0].set_temporal_cap(Some(0));
        // Layers 0, 2, 1, 2 repeating, one packet per frame; the cap takes effect at the first base-layer frame.
        let layers = [2u8, 0, 2, 1, 2, 0, 2, 1, 2, 0];
        let sent: Vec<(u16, u8)> = layers
            .iter()
            .enumerate()
            .filter_map(|(i, &layer)| {
                let payload = vp8_payload(true, 100 + i as u16, 0, layer, false);
                let packet = source_packet(200 + i as u16, 3000 * i as u32, 1, &payload);
                through(&mut viewer, 0, &packet, false, now).map(|(sequence, _, payload)| (sequence, payload[5] >> 6))
            })
            .collect();
        assert_eq!(sent, [(50, 2), (51, 0), (52, 0), (53, 0)]);
        // Raised again: every layer from the next base-layer frame on.
        viewer.streams[0].set_temporal_cap(None);
        let more: Vec<u16> = [2u8, 0, 2, 1]
            .iter()
            .enumerate()
            .filter_map(|(i, &layer)| {
                let payload = vp8_payload(true, 110 + i as u16, 0, layer, false);
                let packet = source_packet(210 + i as u16, 0, 1, &payload);
                through(&mut viewer, 0, &packet, false, now).map(|(sequence, _, _)| sequence)
            })
            .collect();
        assert_eq!(more, [54, 55, 56]);
        // NACKs find the source packets across the renumberings.
        let sources: Vec<Option<u16>> =
            (50..=56).map(|sequence| viewer.streams[0].source_of(sequence).map(|(source, _)| source)).collect();
        assert_eq!(sources, [Some(200), Some(201), Some(205), Some(209), Some(211), Some(212), Some(213)]);
        assert_eq!(viewer.streams[0].source_of(57), None, "not sent yet");
    }

    #[test]
    fn av1_temporal_layers_above_the_cap_are_left_out_with_the_packets_that_continue_their_frames() {
        let now = Instant::now();
        let mut viewer = viewer_of(stream(false, 50));
        viewer.streams[0].rewrite_pictures(Codec::Av1);
        viewer.streams[0].set_temporal_cap(Some(0));
        // Each frame in two packets: a frame OBU with an extension header (TID), then the rest of
        // it (Z, no header of its own). Layers 2, 0, 1, 0: the cap takes effect at the base frame.
        let begin = |layer: u8| vec![0x10, 0x6 << 3 | 0x04, layer << 5, 0xaa];
        let rest = [0x90u8, 0xbb, 0xbb];
        let mut sequence = 300u16;
        let mut sent = Vec::new();
        for layer in [2u8, 0, 1, 0] {
            for payload in [begin(layer), rest.to_vec()] {
                let packet = source_packet(sequence, 3000 * u32::from(sequence), 1, &payload);
                if let Some((viewer_sequence, _, _)) = through(&mut viewer, 0, &packet, false, now) {
                    sent.push((viewer_sequence, sequence, layer));
                }
                sequence += 1;
            }
        }
        assert_eq!(sent, [(50, 300, 2), (51, 301, 2), (52, 302, 0), (53, 303, 0), (54, 306, 0), (55, 307, 0)]);
    }

    /// A one-packet VP9 picture: I (15-bit picture ID), L, B, E, P unless a
    /// keyframe; TID, U, SID 0; TL0PICIDX (non-flexible mode).
    fn vp9_payload(picture_id: u16, tl0: u8, temporal_layer: u8, switching_up: bool, keyframe: bool) -> Vec<u8> {
        let [high, low] = picture_id.to_be_bytes();
        let first = 0xac | if keyframe { 0 } else { 0x40 };
        vec![first, 0x80 | high, low, temporal_layer << 5 | if switching_up { 0x10 } else { 0 }, tl0, 0x82]
    }

    #[test]
    fn vp9_temporal_layers_go_down_at_any_picture_and_up_only_at_a_switching_point() {
        let now = Instant::now();
        let mut viewer = viewer_of(stream(false, 50));
        viewer.streams[0].rewrite_pictures(Codec::Vp9);
        let mut next = 0u16;
        let mut send_pictures = |viewer: &mut Viewer, pictures: &[(u8, bool)]| -> Vec<(u16, u8, u16, u8)> {
            pictures
                .iter()
                .filter_map(|&(layer, switching_up)| {
                    let i = next;
                    next += 1;
                    let payload = vp9_payload(300 + i, (i / 4) as u8, layer, switching_up, i == 0);
                    let packet = source_packet(200 + i, 3000 * u32::from(i), 1, &payload);
                    through(viewer, 0, &packet, false, now).map(|(sequence, _, payload)| {
                        let picture_id = u16::from_be_bytes([payload[1] & 0x7f, payload[2]]);
                        (sequence, payload[3] >> 5, picture_id, payload[4])
                    })
                })
                .collect()
        };
        // Every layer, then capped at 0 from the next picture (a layer-2 one, left out).
        let all = send_pictures(&mut viewer, &[(0, false), (2, true)]);
        assert_eq!(all, [(50, 0, 300, 0), (51, 2, 301, 0)]);
        viewer.streams[0].set_temporal_cap(Some(0));
        let base = send_pictures(&mut viewer, &[(1, true), (2, true), (0, false), (2, true), (1, true), (2, false)]);
        assert_eq!(base, [(52, 0, 304, 1)], "picture IDs keep their place in the group, TL0PICIDX follows on");
        // Raised to every layer: not at a picture without U, nor at one of a
        // layer left out (its references were not sent), but at the next base
        // picture with U.
        viewer.streams[0].set_temporal_cap(None);
        let raised = send_pictures(&mut viewer, &[(0, false), (2, true), (1, true), (0, true), (2, false), (1, false)]);
        assert_eq!(
            raised.iter().map(|&(sequence, layer, ..)| (sequence, layer)).collect::<Vec<_>>(),
            [(53, 0), (54, 0), (55, 2), (56, 1)]
        );
        // NACKs find the source packets across the renumberings.
        let sources: Vec<Option<u16>> =
            (50..=56).map(|sequence| viewer.streams[0].source_of(sequence).map(|(source, _)| source)).collect();
        assert_eq!(sources, [Some(200), Some(201), Some(204), Some(208), Some(211), Some(212), Some(213)]);
        // Down to 1 and up to 2 again at a keyframe, U or not.
        viewer.streams[0].set_temporal_cap(Some(1));
        let capped = send_pictures(&mut viewer, &[(2, false), (0, false)]);
        assert_eq!(capped.iter().map(|&(_, layer, ..)| layer).collect::<Vec<_>>(), [0]);
        viewer.streams[0].set_temporal_cap(Some(2));
        let payload = vp9_payload(400, 9, 0, false, true);
        let keyframe = source_packet(300, 0, 1, &payload);
        assert!(through(&mut viewer, 0, &keyframe, true, now).is_some());
        let payload = vp9_payload(401, 9, 2, false, false);
        let upper = source_packet(301, 0, 1, &payload);
        assert!(through(&mut viewer, 0, &upper, false, now).is_some(), "layer 2 after the keyframe");
    }

    #[test]
    fn vp9_pictures_follow_on_after_a_move() {
        let now = Instant::now();
        let mut viewer = viewer_of(stream(true, 100));
        viewer.streams[0].rewrite_pictures(Codec::Vp9);
        let first = source_packet(10, 0, 1, &vp9_payload(1000, 20, 0, false, true));
        assert!(through(&mut viewer, 0, &first, true, now).is_some());
        assert!(viewer.streams[0].move_to(1) || viewer.streams[0].next_source() == Some(1));
        let moved = source_packet(500, 90_000, 2, &vp9_payload(7000, 200, 0, false, true));
        let (_, _, payload) = through(&mut viewer, 1, &moved, true, now).unwrap();
        assert_eq!(u16::from_be_bytes([payload[1] & 0x7f, payload[2]]), 1001, "the picture ID follows on");
        assert_eq!(payload[4], 21, "TL0PICIDX follows on");
    }

    #[test]
    fn vp9_spatial_layers_above_the_cap_are_left_out_and_the_top_one_sent_ends_the_picture() {
        let now = Instant::now();
        let mut stream = stream(false, 10);
        stream.rewrite_pictures(Codec::Vp9);
        stream.set_spatial_cap(Some(0));
        let mut sequence = 500u16;
        // Each picture: SID 0, then SID 1 (the source's marker), one packet each, B and E; a
        // keyframe's SID 1 frame is predicted from SID 0 only (P clear).
        let mut picture = |stream: &mut ViewerStream, number: u16, keyframe: bool| -> Vec<(u16, u8, bool)> {
            let mut sent = Vec::new();
            for spatial_layer in 0..2u8 {
                let first = 0xac | if keyframe { 0 } else { 0x40 };
                let [high, low] = (1000 + number).to_be_bytes();
                let payload = [first, 0x80 | high, low, spatial_layer << 1, number as u8, 0x82];
                let mut packet = source_packet(sequence, 3000 * u32::from(number), 1, &payload);
                if spatial_layer == 0 {
                    packet[1] &= 0x7f;
                }
                sequence += 1;
                let mut out = [0u8; 256];
                if let Some(rewritten) = stream.rewrite(&packet, &received(&packet, keyframe, 0), now, &mut out) {
                    let header = RtpHeader::parse(&out[..rewritten.len]).unwrap();
                    sent.push((header.sequence, (out[header.payload_start + 3] >> 1) & 0x07, header.marker));
                }
            }
            sent
        };
        assert_eq!(picture(&mut stream, 0, true), [(10, 0, true)], "SID 1 left out, SID 0 ends the picture");
        assert_eq!(picture(&mut stream, 1, false), [(11, 0, true)]);
        stream.set_spatial_cap(None);
        assert_eq!(picture(&mut stream, 2, false), [(12, 0, true)], "SID 1 is predicted from a frame not sent");
        assert_eq!(picture(&mut stream, 3, true), [(13, 0, false), (14, 1, true)], "raised at a keyframe");
        assert_eq!(picture(&mut stream, 4, false), [(15, 0, false), (16, 1, true)], "every layer, the source's marker");
        stream.set_spatial_cap(Some(0));
        assert_eq!(picture(&mut stream, 5, false), [(17, 0, true)], "lower from the next picture on");
        let sources: Vec<Option<u16>> =
            (10..=17).map(|sequence| stream.source_of(sequence).map(|(source, _)| source)).collect();
        assert_eq!(sources, [500, 502, 504, 506, 507, 508, 509, 510].map(Some), "NACKs find their packets");
        // Raised again in a delta picture whose SID 1 frame is predicted from SID 0 only (P clear).
        stream.set_spatial_cap(Some(1));
        let mut out = [0u8; 256];
        for (sequence, payload, sent) in [
            (512, [0xec, 0x83, 0xee, 0x00, 6, 0x82], Some(true)), // SID 0 of picture 1006: the cap is 0 still
            (513, [0xac, 0x83, 0xee, 0x02, 6, 0x82], Some(true)), // SID 1, not predicted from earlier pictures
        ] {
            let packet = source_packet(sequence, 18_000, 1, &payload);
            let rewritten = stream.rewrite(&packet, &received(&packet, false, 0), now, &mut out);
            assert_eq!(rewritten.map(|rewritten| RtpHeader::parse(&out[..rewritten.len]).unwrap().marker), sent);
        }
    }

    /// A cached group of pictures: `count` packets of `payload` bytes, a keyframe first, 1500 ticks apart.
    fn cached_group(count: u16, payload: usize) -> GopCache {
        let mut cache = GopCache::new();
        for i in 0..count {
            let datagram = source_packet(100 + i, u32::from(i) * 1500, 1, &vec![0x5a; payload]);
            let mut packet = Arc::new(Packet::empty());
            Arc::get_mut(&mut packet).unwrap().fill(&datagram, received(&datagram, i == 0, 0));
            cache.offer(&packet, 0);
        }
        cache
    }

    /// The span of the viewer's timestamps over a burst of `cache` (ticks).
    fn burst_span(cache: &GopCache, budget: &SendBudget) -> u32 {
        let now = Instant::now();
        let mut stream = stream(true, 1);
        assert!(stream.start_from(cache, budget, now));
        let mut out = [0u8; 1500];
        let timestamps: Vec<u32> = cache
            .packets()
            .iter()
            .map(|packet| {
                let len = stream.rewrite_burst(packet.bytes(), &packet.meta, now, &mut out).unwrap().len;
                RtpHeader::parse(&out[..len]).unwrap().timestamp
            })
            .collect();
        timestamps[timestamps.len() - 1].wrapping_sub(timestamps[0])
    }

    #[test]
    fn a_measured_estimate_paces_the_budget_and_none_leaves_it_as_before() {
        let now = Instant::now();
        let mut budget = SendBudget::new(now);
        assert_eq!((budget.bytes_per_second(), budget.capacity()), (BURST_BYTES_PER_SECOND, BURST_CREDIT_BYTES));
        budget.spend_live(100_000, now);
        assert!(budget.has_credit(now), "live packets count only once paced");
        budget.set_estimate(Some(600_000), false, now);
        // 2.5 x 600 kbit/s = 187.5 kB/s; 40 ms of it at once.
        assert_eq!((budget.bytes_per_second(), budget.capacity()), (187_500, 7_500));
        budget.spend_live(100_000, now);
        assert_eq!(budget.credit, -7_500, "a live packet's debt is bounded by the bucket");
        assert!(!budget.has_credit(now + Duration::from_millis(40)));
        assert!(budget.has_credit(now + Duration::from_millis(41)));
        budget.set_estimate(Some(50_000), false, now);
        assert_eq!(budget.bytes_per_second(), PACING_FLOOR_BITRATE / 8, "not under the floor");
        budget.set_estimate(None, false, now);
        assert_eq!((budget.bytes_per_second(), budget.capacity()), (BURST_BYTES_PER_SECOND, BURST_CREDIT_BYTES));
    }

    #[test]
    fn a_burst_leaves_out_the_layers_above_the_stream_caps() {
        // A cached group of VP8 pictures in layers 0, 2, 1, 2, 0, ..., a keyframe first.
        let layers = [0u8, 2, 1, 2, 0, 2, 1, 2];
        let mut cache = GopCache::new();
        for (i, &layer) in layers.iter().enumerate() {
            let i = i as u16;
            let datagram = source_packet(100 + i, u32::from(i) * 3000, 1, &vp8_payload(true, 10 + i, 0, layer, i == 0));
            let mut packet = Arc::new(Packet::empty());
            Arc::get_mut(&mut packet).unwrap().fill(&datagram, received(&datagram, i == 0, 0));
            cache.offer(&packet, 0);
        }
        let now = Instant::now();
        let mut stream = stream(true, 1);
        stream.rewrite_pictures(Codec::Vp8);
        stream.set_temporal_cap(Some(0));
        assert!(stream.start_from(&cache, &SendBudget::new(now), now));
        let mut out = [0u8; 1500];
        let sent: Vec<(u16, u8)> = cache
            .packets()
            .iter()
            .filter_map(|packet| {
                let len = stream.rewrite_burst(packet.bytes(), &packet.meta, now, &mut out)?.len;
                let header = RtpHeader::parse(&out[..len]).unwrap();
                Some((header.sequence, out[header.payload_start + 5] >> 6))
            })
            .collect();
        let first = sent[0].0;
        assert_eq!(sent, [(first, 0), (first.wrapping_add(1), 0)], "the base layer only, without gaps");
        // The packets the worker got since (the burst goes on from its history) follow on.
        let live = source_packet(108, 8 * 3000, 1, &vp8_payload(true, 18, 0, 0, false));
        let len = stream.rewrite_burst(&live, &received(&live, false, 0), now, &mut out).unwrap().len;
        assert_eq!(RtpHeader::parse(&out[..len]).unwrap().sequence, first.wrapping_add(2));
    }

    #[test]
    fn a_paced_burst_compresses_its_timestamps_to_the_time_it_takes() {
        // 60 packets of 1012 bytes over 88 500 ticks (almost a second).
        let cache = cached_group(60, 1000);
        let now = Instant::now();
        let unpaced = SendBudget::new(now);
        assert!(burst_span(&cache, &unpaced) <= 88_500 / MAX_COMPRESSION + 1, "at line rate: compressed the most");
        let mut paced = SendBudget::new(now);
        paced.set_estimate(Some(600_000), false, now);
        let seconds = (cache.bytes() as i64 - paced.capacity()) as f64 / paced.bytes_per_second() as f64;
        let span = f64::from(burst_span(&cache, &paced)) / 90_000.0;
        assert!(span >= seconds * 0.8 && span <= seconds * 1.5, "{span} s of timestamps for a {seconds} s burst");
    }
}
