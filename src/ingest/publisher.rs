//! The publisher link: one connected UDP socket carrying SRTP for several
//! streams of one mountpoint (a WebRTC publisher, WHIP; or a relay from an
//! origin node), which the receiver reads like a source socket.
//!
//! Per datagram, by its first byte (RFC 7983): 128..=191 is RTP or RTCP (RTCP
//! when the second byte is 192..=223), 0..=3 STUN and 20..=63 DTLS go to the
//! control plane (at most [`CONTROL_PER_SECOND`] a second), anything else is
//! malformed. SRTP is unprotected with the publisher's key (one context for
//! the link, replay state per SSRC), then routed to a stream of the mountpoint
//! ([`Router`]): by an SSRC already routed, else by the rid (and mid) header
//! extensions, else by the mid, else by the payload type. A match teaches the
//! router the SSRC. From there the packet takes the stream's ordinary ingest.
//!
//! What goes back, SRTCP-protected with the engine's key over the same socket
//! ([`crate::ingest::source_rtcp::LinkSender`]): keyframe requests and REMB
//! (the stream's [`crate::ingest::source_rtcp::SourceRtcp`]), Generic NACKs
//! for the gaps in video streams ([`GapTracker`]) and a receiver report per
//! SSRC once a second ([`Reception`]). Nothing here allocates per packet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::ingest::source_rtcp::LinkSender;
use crate::wire::rtp::{header_extension, RtpHeader};
use crate::wire::srtp::{SrtcpInbound, SrtpInbound};

/// Control datagrams (STUN, DTLS) handed to the control plane per second, per link; the rest are dropped.
pub const CONTROL_PER_SECOND: u32 = 64;
/// SSRCs a link learns at most (routes taught by a packet); past this a packet is still routed, not remembered.
pub const MAX_SSRCS: usize = 32;
/// A mid or rid value is at most this long (the one-byte header form allows 16 bytes).
pub const MAX_ID_LEN: usize = 255;

/// What a datagram on the link is, by its first two bytes (RFC 7983).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkDatagram {
    Rtp,
    Rtcp,
    /// STUN or DTLS: the control plane answers it.
    Control,
    Malformed,
}

pub fn classify(datagram: &[u8]) -> LinkDatagram {
    match datagram {
        [0..=3, ..] | [20..=63, ..] => LinkDatagram::Control,
        [128..=191, 192..=223, ..] => LinkDatagram::Rtcp,
        [128..=191, _, ..] => LinkDatagram::Rtp,
        _ => LinkDatagram::Malformed,
    }
}

/// What the link tells Python (PublisherStats); counters only grow.
#[derive(Default)]
pub struct PublisherCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub rtcp_packets: AtomicU64,
    pub undecryptable: AtomicU64,
    pub unroutable: AtomicU64,
    pub malformed: AtomicU64,
    pub control_datagrams: AtomicU64,
    pub lost: AtomicU64,
    pub nacks_sent: AtomicU64,
    pub recovered: AtomicU64,
    pub receiver_reports_sent: AtomicU64,
    /// The SSRCs routed so far, in the order learned.
    pub ssrcs: Mutex<Vec<u32>>,
}

fn count(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Which packets feed the stream at `position` of the mountpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    pub position: usize,
    pub ssrc: Option<u32>,
    pub mid: Option<Vec<u8>>,
    pub rid: Option<Vec<u8>>,
    pub payload_types: Vec<u8>,
}

/// Routes a link's RTP to the mountpoint's streams (see the module's doc).
pub struct Router {
    routes: Vec<Route>,
    mid_extension: Option<u8>,
    rid_extension: Option<u8>,
    /// SSRC -> stream position (at most [`MAX_SSRCS`]; room reserved), and
    /// whether a packet of it came (a configured SSRC is known before).
    learned: Vec<(u32, usize, bool)>,
}

impl Router {
    pub fn new(routes: Vec<Route>, mid_extension: Option<u8>, rid_extension: Option<u8>) -> Self {
        let mut learned = Vec::with_capacity(MAX_SSRCS);
        for route in &routes {
            if let Some(ssrc) = route.ssrc {
                if learned.len() < MAX_SSRCS && !learned.iter().any(|&(known, _, _)| known == ssrc) {
                    learned.push((ssrc, route.position, false));
                }
            }
        }
        Self { routes, mid_extension, rid_extension, learned }
    }

    /// The stream an SSRC was routed to.
    pub fn position_of(&self, ssrc: u32) -> Option<usize> {
        self.learned.iter().find(|&&(known, _, _)| known == ssrc).map(|&(_, position, _)| position)
    }

    /// The SSRCs known (configured or routed) and their streams.
    pub fn ssrcs(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        self.learned.iter().map(|&(ssrc, position, _)| (ssrc, position))
    }

    /// The stream `packet` goes to, and whether it is the first packet of its SSRC routed.
    pub fn route(&mut self, packet: &[u8], header: &RtpHeader) -> Option<(usize, bool)> {
        if let Some(known) = self.learned.iter_mut().find(|known| known.0 == header.ssrc) {
            let first = !std::mem::replace(&mut known.2, true);
            return Some((known.1, first));
        }
        let extension = |id: Option<u8>| id.and_then(|id| header_extension(packet, header, id));
        let mid = extension(self.mid_extension).filter(|value| !value.is_empty());
        let rid = extension(self.rid_extension).filter(|value| !value.is_empty());
        let same = |wanted: &Option<Vec<u8>>, got: Option<&[u8]>| wanted.as_deref() == got;
        let by_rid = rid.and_then(|rid| {
            self.routes
                .iter()
                .find(|route| same(&route.rid, Some(rid)) && (route.mid.is_none() || same(&route.mid, mid)))
        });
        let by_mid = || mid.and_then(|mid| self.routes.iter().find(|r| r.rid.is_none() && same(&r.mid, Some(mid))));
        let by_payload_type =
            || self.routes.iter().find(|r| r.rid.is_none() && r.payload_types.contains(&header.payload_type));
        let position = by_rid.or_else(by_mid).or_else(by_payload_type)?.position;
        let learned = self.learned.len() < MAX_SSRCS;
        if learned {
            self.learned.push((header.ssrc, position, true));
        }
        Some((position, true))
    }
}

/// At most [`CONTROL_PER_SECOND`] control datagrams in each second (from the first of it).
#[derive(Default)]
struct ControlLimit {
    window_start_ns: u64,
    in_window: u32,
}

impl ControlLimit {
    fn allow(&mut self, now_ns: u64) -> bool {
        if self.in_window == 0 || now_ns.saturating_sub(self.window_start_ns) >= 1_000_000_000 {
            self.window_start_ns = now_ns;
            self.in_window = 0;
        }
        self.in_window += 1;
        self.in_window <= CONTROL_PER_SECOND
    }
}

/// One attached publisher: its keys, its routes, what it sent.
pub struct PublisherLink {
    pub sender: Arc<LinkSender>,
    srtp: SrtpInbound,
    srtcp: SrtcpInbound,
    pub router: Router,
    pub counters: Arc<PublisherCounters>,
    control: ControlLimit,
}

impl PublisherLink {
    pub fn new(
        sender: Arc<LinkSender>,
        srtp: SrtpInbound,
        srtcp: SrtcpInbound,
        router: Router,
        counters: Arc<PublisherCounters>,
    ) -> Self {
        counters.ssrcs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).reserve(MAX_SSRCS + 1);
        Self { sender, srtp, srtcp, router, counters, control: ControlLimit::default() }
    }

    /// Unprotects the SRTP in `buffer[..len]` in place and routes it: the
    /// stream's position and the RTP length, or None (dropped and counted).
    pub fn receive_rtp(&mut self, buffer: &mut [u8], len: usize) -> Option<(usize, usize)> {
        let Ok(len) = self.srtp.unprotect(buffer, len) else {
            count(&self.counters.undecryptable, 1);
            return None;
        };
        let Some(header) = RtpHeader::parse(&buffer[..len]) else {
            count(&self.counters.malformed, 1);
            return None;
        };
        let Some((position, first)) = self.router.route(&buffer[..len], &header) else {
            count(&self.counters.unroutable, 1);
            return None;
        };
        if first {
            let mut ssrcs = self.counters.ssrcs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if ssrcs.len() < MAX_SSRCS && !ssrcs.contains(&header.ssrc) {
                ssrcs.push(header.ssrc);
            }
        }
        count(&self.counters.packets, 1);
        count(&self.counters.bytes, len as u64);
        Some((position, len))
    }

    /// Unprotects SRTCP from the publisher: the plain compound packet, or
    /// None (dropped and counted). RTCP comes a few times a second: the copy
    /// it is unprotected into is the one allocation of the link.
    pub fn receive_rtcp(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        match self.srtcp.unprotect(packet) {
            Ok(plain) => {
                count(&self.counters.rtcp_packets, 1);
                Some(plain)
            }
            Err(_) => {
                count(&self.counters.undecryptable, 1);
                None
            }
        }
    }

    /// A STUN or DTLS datagram came: whether it goes to the control plane
    /// (counted) or is dropped past the rate limit (counted malformed).
    pub fn control_allowed(&mut self, now_ns: u64) -> bool {
        let allowed = self.control.allow(now_ns);
        count(if allowed { &self.counters.control_datagrams } else { &self.counters.malformed }, 1);
        allowed
    }

    /// A datagram that is neither RTP, RTCP, STUN nor DTLS (or was cut to fit).
    pub fn count_malformed(&self) {
        count(&self.counters.malformed, 1);
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        self.sender.fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(payload_type: u8, ssrc: u32, extensions: &[u8]) -> Vec<u8> {
        let first = if extensions.is_empty() { 0x80 } else { 0x90 };
        let mut packet = vec![first, payload_type, 0, 1, 0, 0, 0, 0];
        packet.extend_from_slice(&ssrc.to_be_bytes());
        if !extensions.is_empty() {
            let padded = extensions.len().div_ceil(4) * 4;
            packet.extend_from_slice(&[0xbe, 0xde, 0, (padded / 4) as u8]);
            packet.extend_from_slice(extensions);
            packet.resize(packet.len() + padded - extensions.len(), 0);
        }
        packet.extend_from_slice(b"payload");
        packet
    }

    fn route_of(router: &mut Router, packet: &[u8]) -> Option<usize> {
        router.route(packet, &RtpHeader::parse(packet).unwrap()).map(|(position, _)| position)
    }

    #[test]
    fn datagrams_are_told_apart_by_their_first_bytes() {
        assert_eq!(classify(&[0, 1, 0, 0]), LinkDatagram::Control, "STUN");
        assert_eq!(classify(&[22, 254, 253]), LinkDatagram::Control, "DTLS");
        assert_eq!(classify(&[0x80, 96, 0]), LinkDatagram::Rtp);
        assert_eq!(classify(&[0x80, 200, 0]), LinkDatagram::Rtcp);
        assert_eq!(classify(&[0x81, 205, 0]), LinkDatagram::Rtcp);
        assert_eq!(classify(&[0x80]), LinkDatagram::Malformed, "too short for RTP");
        assert_eq!(classify(&[]), LinkDatagram::Malformed);
        assert_eq!(classify(&[64, 0, 0]), LinkDatagram::Malformed, "TURN channel data is not expected");
        assert_eq!(classify(&[200, 0, 0]), LinkDatagram::Malformed);
    }

    #[test]
    fn routes_by_ssrc_then_rid_then_mid_then_payload_type_and_learns() {
        let routes = vec![
            Route { position: 0, mid: Some(b"0".to_vec()), payload_types: vec![111], ..Route::default() },
            Route { position: 1, mid: Some(b"1".to_vec()), rid: Some(b"h".to_vec()), ..Route::default() },
            Route { position: 2, mid: Some(b"1".to_vec()), rid: Some(b"l".to_vec()), ..Route::default() },
            Route { position: 3, ssrc: Some(77), ..Route::default() },
            Route { position: 4, payload_types: vec![100], ..Route::default() },
        ];
        let mut router = Router::new(routes, Some(1), Some(2));
        assert_eq!(route_of(&mut router, &rtp(96, 77, &[])), Some(3), "a configured SSRC");
        assert_eq!(route_of(&mut router, &rtp(96, 10, &[0x10, b'1', 0x20, b'l'])), Some(2), "mid + rid");
        assert_eq!(route_of(&mut router, &rtp(96, 11, &[0x10, b'1', 0x20, b'h'])), Some(1));
        assert_eq!(route_of(&mut router, &rtp(96, 12, &[0x10, b'0'])), Some(0), "mid alone");
        assert_eq!(route_of(&mut router, &rtp(111, 13, &[])), Some(0), "payload type");
        assert_eq!(route_of(&mut router, &rtp(100, 14, &[])), Some(4));
        assert_eq!(route_of(&mut router, &rtp(96, 15, &[0x10, b'1'])), None, "mid 1 is simulcast: a rid decides");
        assert_eq!(route_of(&mut router, &rtp(96, 16, &[0x10, b'9'])), None);
        assert_eq!(route_of(&mut router, &rtp(96, 16, &[0x50, b'0'])), None, "not the mid's id");
        assert_eq!(route_of(&mut router, &rtp(96, 10, &[])), Some(2), "learned: no extension needed any more");
        assert_eq!(route_of(&mut router, &rtp(111, 11, &[])), Some(1), "the SSRC decides before the payload type");
        assert_eq!(router.position_of(13), Some(0));
        assert_eq!(router.ssrcs().map(|(ssrc, _)| ssrc).collect::<Vec<_>>(), [77, 10, 11, 12, 13, 14]);
    }

    #[test]
    fn learning_is_bounded() {
        let mut router =
            Router::new(vec![Route { position: 0, payload_types: vec![96], ..Route::default() }], None, None);
        for ssrc in 0..100 {
            assert_eq!(route_of(&mut router, &rtp(96, ssrc, &[])), Some(0));
        }
        assert_eq!(router.ssrcs().count(), MAX_SSRCS);
    }

    #[test]
    fn control_datagrams_are_limited_per_second() {
        let mut limit = ControlLimit::default();
        let second = 1_000_000_000;
        let allowed = (0..100).filter(|i| limit.allow(5 * second + i * 1000)).count();
        assert_eq!(allowed, CONTROL_PER_SECOND as usize);
        assert!(limit.allow(6 * second + 1), "a new second");
    }
}
