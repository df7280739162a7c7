//! A source stream's RTCP port (the mountpoint's `rtcpport`): the engine binds
//! it beside the RTP port, the receiver reads what the source sends there
//! (sender reports, kept for later use), and keyframe requests (PLI) go from
//! it to the source, at most one per [`KEYFRAME_REQUEST_INTERVAL`]; so do the
//! bitrate estimates (REMB) the control plane aggregates from the viewers.
//!
//! Where a stream's request goes: the address its source's RTCP came from on
//! this port (a sender report naming the stream's SSRC; or, on a port no other
//! stream shares, any RTCP); before that, the address its RTP came from with
//! the port plus one (RFC 3550 section 11's convention); before either, nowhere.
//!
//! A simulcast stream's substreams share its port ([`SourceRtcp::sharing`]):
//! an encoder sends each layer, and hears requests for it, from a port of its
//! own, so each substream's requests name its SSRC and go where that layer's
//! RTCP or RTP came from.
//!
//! A stream fed by a publisher link (a WebRTC publisher, a relay; see
//! [`crate::ingest::publisher`]) has no port: its requests go over the link,
//! SRTCP-protected ([`LinkSender`]), while one is attached, and nowhere otherwise.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::wire::rtcp::{for_each_psfb, PSFB_PLI};
use crate::wire::srtp::SrtpSession;

/// At most one keyframe request per stream this often.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// The SSRC the engine's requests come from ("fano").
pub const REQUEST_SSRC: u32 = 0x6661_6e6f;

/// The latest sender report from the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceSenderReport {
    pub ssrc: u32,
    pub ntp_time: u64,
    pub rtp_timestamp: u32,
    pub received_at: Instant,
}

/// Why a keyframe request was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyframeReason {
    /// A viewer sent a PLI or FIR.
    Viewer,
    /// A viewer started and the cache has no keyframe.
    Start,
}

/// The sending half of a publisher link: plain RTCP in, SRTCP out on the
/// link's connected socket (the engine's duplicate, closed with the last holder).
pub struct LinkSender {
    socket: OwnedFd,
    session: SrtpSession,
    next_index: AtomicU32,
}

/// The largest RTCP packet the engine sends over a link, before SRTCP.
pub const MAX_LINK_RTCP_LEN: usize = 1200;

impl LinkSender {
    pub fn new(socket: OwnedFd, session: SrtpSession) -> Self {
        Self { socket, session, next_index: AtomicU32::new(0) }
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Protects `packet` (plain compound RTCP, at most [`MAX_LINK_RTCP_LEN`]
    /// bytes) and sends it without blocking; false if it could not go.
    pub fn send_rtcp(&self, packet: &[u8]) -> bool {
        let mut buffer = [0u8; MAX_LINK_RTCP_LEN + 64];
        if packet.len() > MAX_LINK_RTCP_LEN {
            return false;
        }
        buffer[..packet.len()].copy_from_slice(packet);
        let index = self.next_index.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
        let Ok(len) = self.session.protect_rtcp(&mut buffer, packet.len(), index) else {
            return false;
        };
        // SAFETY: `buffer[..len]` is live for the call; the socket is connected.
        let sent = unsafe { libc::send(self.socket.as_raw_fd(), buffer.as_ptr().cast(), len, libc::MSG_DONTWAIT) };
        sent == len as isize
    }
}

/// How a stream's RTCP leaves.
enum Channel {
    /// The stream's own RTCP port.
    Port(UdpSocket),
    /// Another stream's port: a simulcast substream's, its stream's.
    SharedPort(Arc<SourceRtcp>),
    /// The mountpoint's publisher link, while one is attached.
    Link(Mutex<Option<Arc<LinkSender>>>),
}

/// The SSRCs a port heard sender reports from, at most this many (the newest kept).
const HEARD_SENDERS: usize = 8;

/// What came on a port: from where, and each sender's latest report.
#[derive(Default)]
struct Heard {
    latest_from: Option<SocketAddr>,
    senders: Vec<(SourceSenderReport, Option<SocketAddr>)>,
}

impl Heard {
    fn sender(&self, ssrc: u32) -> Option<&(SourceSenderReport, Option<SocketAddr>)> {
        self.senders.iter().find(|(report, _)| report.ssrc == ssrc)
    }

    fn note_report(&mut self, report: SourceSenderReport, from: Option<SocketAddr>) {
        if let Some(known) = self.senders.iter().position(|(known, _)| known.ssrc == report.ssrc) {
            self.senders.remove(known);
        } else if self.senders.len() == HEARD_SENDERS {
            self.senders.remove(0);
        }
        self.senders.push((report, from));
    }
}

pub struct SourceRtcp {
    channel: Channel,
    /// On a port of the stream's own: what came on it.
    heard: Mutex<Heard>,
    /// Set once a substream shares the port.
    shared: AtomicBool,
    rtp_from: Mutex<Option<SocketAddr>>,
    media_ssrc: AtomicU32,
    last_request: Mutex<Option<Instant>>,
    /// RTCP packets received from the source.
    pub packets: AtomicU64,
    pub plis_forwarded: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub rembs_sent: AtomicU64,
    /// Requests not sent: too soon after the last one, or nowhere to send.
    pub requests_suppressed: AtomicU64,
}

impl SourceRtcp {
    pub fn new(socket: UdpSocket) -> Self {
        Self::with_channel(Channel::Port(socket))
    }

    /// For a stream fed by a publisher link: its requests go over the link.
    pub fn for_link() -> Self {
        Self::with_channel(Channel::Link(Mutex::new(None)))
    }

    /// A substream's: it sends from `stream`'s port and hears what that port hears.
    pub fn sharing(stream: &Arc<SourceRtcp>) -> Self {
        stream.shared.store(true, Ordering::Relaxed);
        Self::with_channel(Channel::SharedPort(stream.clone()))
    }

    fn with_channel(channel: Channel) -> Self {
        Self {
            channel,
            heard: Mutex::new(Heard::default()),
            shared: AtomicBool::new(false),
            rtp_from: Mutex::new(None),
            media_ssrc: AtomicU32::new(0),
            last_request: Mutex::new(None),
            packets: AtomicU64::new(0),
            plis_forwarded: AtomicU64::new(0),
            keyframe_requests: AtomicU64::new(0),
            rembs_sent: AtomicU64::new(0),
            requests_suppressed: AtomicU64::new(0),
        }
    }

    /// The socket the receiver reads: a port of the stream's own.
    pub fn fd(&self) -> Option<RawFd> {
        match &self.channel {
            Channel::Port(socket) => Some(socket.as_raw_fd()),
            _ => None,
        }
    }

    pub fn local_port(&self) -> Option<u16> {
        match &self.channel {
            Channel::Port(socket) => Some(socket.local_addr().ok()?.port()),
            Channel::SharedPort(stream) => stream.local_port(),
            Channel::Link(_) => None,
        }
    }

    /// Requests go over `link` from now on (None: the link went, nowhere).
    pub fn set_link(&self, link: Option<Arc<LinkSender>>) {
        if let Channel::Link(attached) = &self.channel {
            *lock(attached) = link;
        }
    }

    /// A sender report the publisher link brought.
    pub fn link_sender_report(&self, report: SourceSenderReport) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        lock(&self.heard).note_report(report, None);
    }

    /// The receiver saw RTP with `ssrc` from `from`.
    pub fn rtp_seen(&self, from: Option<SocketAddr>, ssrc: u32) {
        self.media_ssrc.store(ssrc, Ordering::Relaxed);
        if let Some(from) = from {
            let mut rtp_from = lock(&self.rtp_from);
            if *rtp_from != Some(from) {
                *rtp_from = Some(from);
            }
        }
    }

    /// Reads everything waiting on the port, a port of the stream's own (the
    /// receiver calls it when readable).
    pub fn receive(&self, now: Instant) {
        let Channel::Port(socket) = &self.channel else { return };
        let mut buf = [0u8; 1500];
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            self.packets.fetch_add(1, Ordering::Relaxed);
            let mut heard = lock(&self.heard);
            heard.latest_from = Some(from);
            for_each_sender_report(&buf[..len], now, |report| heard.note_report(report, Some(from)));
        }
    }

    /// What the port heard: the stream's own, or the one it shares.
    fn heard(&self) -> &Mutex<Heard> {
        match &self.channel {
            Channel::SharedPort(stream) => &stream.heard,
            _ => &self.heard,
        }
    }

    /// The latest sender report naming the stream's SSRC; where only the
    /// stream's source reports (a port no other stream shares, a link's
    /// routes), before the first of those, the latest of any.
    pub fn sender_report(&self) -> Option<SourceSenderReport> {
        let heard = lock(self.heard());
        let own = heard.sender(self.media_ssrc.load(Ordering::Relaxed)).map(|(report, _)| *report);
        let only_its_own = matches!(self.channel, Channel::Link(_)) || self.alone_on_port();
        own.or_else(|| heard.senders.last().filter(|_| only_its_own).map(|(report, _)| *report))
    }

    fn alone_on_port(&self) -> bool {
        matches!(self.channel, Channel::Port(_)) && !self.shared.load(Ordering::Relaxed)
    }

    /// Where requests go now.
    pub fn destination(&self) -> Option<SocketAddr> {
        {
            let heard = lock(self.heard());
            if let Some((_, Some(from))) = heard.sender(self.media_ssrc.load(Ordering::Relaxed)) {
                return Some(*from);
            }
            if let Some(from) = heard.latest_from.filter(|_| self.alone_on_port()) {
                return Some(from);
            }
        }
        let mut rtp = (*lock(&self.rtp_from))?;
        rtp.set_port(rtp.port().checked_add(1)?);
        Some(rtp)
    }

    /// Sends RR + PLI to the source unless one went less than the interval
    /// ago; true if sent.
    pub fn request_keyframe(&self, reason: KeyframeReason, now: Instant) -> bool {
        if !self.can_send() {
            self.requests_suppressed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        {
            let mut last = lock(&self.last_request);
            if last.is_some_and(|last| now.saturating_duration_since(last) < KEYFRAME_REQUEST_INTERVAL) {
                self.requests_suppressed.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            *last = Some(now);
        }
        let packet = keyframe_request(self.media_ssrc.load(Ordering::Relaxed));
        if !self.send(&packet) {
            return false;
        }
        let counter = match reason {
            KeyframeReason::Viewer => &self.plis_forwarded,
            KeyframeReason::Start => &self.keyframe_requests,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        true
    }
}

impl SourceRtcp {
    /// Sends RR + REMB (draft-alvestrand-rmcat-remb) with `bitrate` (bits per
    /// second) about the source's SSRC; false if there is nowhere to send it yet.
    pub fn send_remb(&self, bitrate: u64) -> bool {
        let packet = remb(self.media_ssrc.load(Ordering::Relaxed), bitrate);
        if !self.send(&packet) {
            return false;
        }
        self.rembs_sent.fetch_add(1, Ordering::Relaxed);
        true
    }
}

impl SourceRtcp {
    /// Whether a request has somewhere to go now.
    fn can_send(&self) -> bool {
        match &self.channel {
            Channel::Port(_) | Channel::SharedPort(_) => self.destination().is_some(),
            Channel::Link(link) => lock(link).is_some(),
        }
    }

    /// Sends plain RTCP to the source: from the RTCP port (its own or the one
    /// it shares), or over the link.
    fn send(&self, packet: &[u8]) -> bool {
        let socket = match &self.channel {
            Channel::Port(socket) => socket,
            Channel::SharedPort(stream) => match &stream.channel {
                Channel::Port(socket) => socket,
                _ => return false,
            },
            Channel::Link(link) => return lock(link).as_ref().is_some_and(|link| link.send_rtcp(packet)),
        };
        self.destination().is_some_and(|to| socket.send_to(packet, to).is_ok())
    }
}

/// An empty receiver report then a REMB about `media_ssrc`: the bitrate as an
/// 18-bit mantissa and a 6-bit exponent, rounded down.
pub fn remb(media_ssrc: u32, bitrate: u64) -> [u8; 32] {
    let exponent = (64 - bitrate.leading_zeros()).saturating_sub(18);
    let mantissa = (bitrate >> exponent) as u32;
    let mut packet = [0u8; 32];
    packet[..4].copy_from_slice(&[0x80, 201, 0, 1]);
    packet[4..8].copy_from_slice(&REQUEST_SSRC.to_be_bytes());
    packet[8..12].copy_from_slice(&[0x80 | PSFB_REMB, 206, 0, 5]);
    packet[12..16].copy_from_slice(&REQUEST_SSRC.to_be_bytes());
    packet[20..24].copy_from_slice(b"REMB");
    packet[24..28].copy_from_slice(&((1 << 24) | (exponent << 18) | mantissa).to_be_bytes());
    packet[28..32].copy_from_slice(&media_ssrc.to_be_bytes());
    packet
}

/// The PSFB format of application layer feedback, which REMB is.
const PSFB_REMB: u8 = 15;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An empty receiver report then a PLI (RFC 4585 section 6.3.1) about `media_ssrc`.
pub fn keyframe_request(media_ssrc: u32) -> [u8; 20] {
    let mut packet = [0u8; 20];
    packet[..4].copy_from_slice(&[0x80, 201, 0, 1]);
    packet[4..8].copy_from_slice(&REQUEST_SSRC.to_be_bytes());
    packet[8..12].copy_from_slice(&[0x80 | PSFB_PLI, 206, 0, 2]);
    packet[12..16].copy_from_slice(&REQUEST_SSRC.to_be_bytes());
    packet[16..20].copy_from_slice(&media_ssrc.to_be_bytes());
    packet
}

/// The first sender report in a compound RTCP packet.
/// Each sender report in a compound RTCP packet (a publisher link's carries one per SSRC,
/// or several in one); stops at the first malformed length.
pub fn for_each_sender_report(packet: &[u8], now: Instant, mut report: impl FnMut(SourceSenderReport)) {
    let mut offset = 0;
    while let Some(header) = packet.get(offset..offset + 4) {
        let len = 4 * (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1);
        let Some(body) = packet.get(offset..offset + len) else { return };
        if header[0] >> 6 != 2 {
            return;
        }
        if header[1] == 200 && len >= 28 {
            let word = |at: usize| u32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
            report(SourceSenderReport {
                ssrc: word(4),
                ntp_time: (u64::from(word(8)) << 32) | u64::from(word(12)),
                rtp_timestamp: word(16),
                received_at: now,
            });
        }
        offset += len;
    }
}

/// Whether a viewer's plain RTCP asks for a keyframe of one of `ssrcs`
/// (PLI or FIR); calls `asked(ssrc)` for each such request.
pub fn for_each_keyframe_request(packet: &[u8], mut asked: impl FnMut(u32)) {
    for_each_psfb(packet, |format, media_ssrc, fci| match format {
        PSFB_PLI => asked(media_ssrc),
        crate::wire::rtcp::PSFB_FIR => {
            // RFC 5104 section 4.3.1: the SSRC is in each FCI entry (media SSRC is 0).
            for entry in fci.chunks_exact(8) {
                asked(u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]));
            }
        }
        _ => {}
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_sender_report(packet: &[u8], now: Instant) -> Option<SourceSenderReport> {
        let mut first = None;
        for_each_sender_report(packet, now, |report| {
            first.get_or_insert(report);
        });
        first
    }

    fn sender_report(ssrc: u32) -> Vec<u8> {
        let mut sr = vec![0x80, 200, 0, 6];
        sr.extend_from_slice(&ssrc.to_be_bytes());
        sr.extend_from_slice(&[0; 20]);
        sr
    }

    /// A port as the engine binds it: reads never block.
    fn port() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        socket
    }

    fn receive_request(socket: &UdpSocket) -> Vec<u8> {
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let len = socket.recv(&mut buf).unwrap();
        buf[..len].to_vec()
    }

    #[test]
    fn remb_carries_the_bitrate_in_mantissa_and_exponent() {
        let packet = remb(0xdead_beef, 2_500_000);
        assert_eq!(&packet[8..12], &[0x8f, 206, 0, 5]);
        assert_eq!(&packet[20..24], b"REMB");
        let word = u32::from_be_bytes(packet[24..28].try_into().unwrap());
        assert_eq!(word >> 24, 1, "one SSRC");
        let (exponent, mantissa) = ((word >> 18) & 0x3f, word & 0x3ffff);
        assert_eq!(u64::from(mantissa) << exponent, 2_500_000 >> 4 << 4);
        assert_eq!(&packet[28..32], &0xdead_beef_u32.to_be_bytes());
        let small = u32::from_be_bytes(remb(1, 1000)[24..28].try_into().unwrap());
        assert_eq!(small & 0xffffff, 1000, "exponent 0");
    }

    #[test]
    fn parses_a_sender_report_in_a_compound_packet() {
        let now = Instant::now();
        let mut sr = vec![0x80, 200, 0, 6, 0, 0, 0, 7];
        sr.extend_from_slice(&[0xe0, 0, 0, 1, 0x80, 0, 0, 0, 0, 1, 0x5f, 0x90, 0, 0, 0, 3, 0, 0, 0, 9]);
        let report = parse_sender_report(&sr, now).unwrap();
        assert_eq!(report.ssrc, 7);
        assert_eq!(report.ntp_time, 0xe000_0001_8000_0000);
        assert_eq!(report.rtp_timestamp, 90_000);
        assert!(parse_sender_report(&[0x80, 201, 0, 1, 0, 0, 0, 1], now).is_none());
    }

    #[test]
    fn finds_plis_and_firs() {
        let pli = [0x81, 206, 0, 2, 0, 0, 0, 9, 0x11, 0x22, 0x33, 0x44];
        let fir = [0x84, 206, 0, 4, 0, 0, 0, 9, 0, 0, 0, 0, 0x55, 0x66, 0x77, 0x88, 1, 0, 0, 0];
        let remb = [0x8f, 206, 0, 2, 0, 0, 0, 9, 0, 0, 0, 0];
        let mut asked = Vec::new();
        for_each_keyframe_request(&[&pli[..], &fir, &remb].concat(), |ssrc| asked.push(ssrc));
        assert_eq!(asked, [0x11223344, 0x55667788]);
    }

    #[test]
    fn requests_are_rate_limited_and_go_to_rtp_port_plus_one() {
        let port = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rtcp = SourceRtcp::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let now = Instant::now();
        assert!(!rtcp.request_keyframe(KeyframeReason::Start, now), "nowhere to send yet");
        let source = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut rtp_from = port.local_addr().unwrap();
        rtp_from.set_port(rtp_from.port() - 1);
        rtcp.rtp_seen(Some(rtp_from), 0xabcd);
        assert_eq!(rtcp.destination(), Some(port.local_addr().unwrap()));
        assert!(rtcp.request_keyframe(KeyframeReason::Viewer, now));
        assert!(!rtcp.request_keyframe(KeyframeReason::Viewer, now + Duration::from_millis(500)));
        assert!(rtcp.request_keyframe(KeyframeReason::Viewer, now + Duration::from_millis(1001)));
        let mut buf = [0u8; 64];
        let len = port.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], &keyframe_request(0xabcd));
        assert_eq!(rtcp.plis_forwarded.load(Ordering::Relaxed), 2);
        assert_eq!(rtcp.requests_suppressed.load(Ordering::Relaxed), 2);
        drop(source);
    }

    /// A simulcast encoder sends each layer from a port of its own (RTP from
    /// one, RTCP from the next): each substream's request names its SSRC and
    /// goes to its layer's port, not to the last one heard on the shared port.
    #[test]
    fn substreams_sharing_a_port_send_each_layers_request_to_that_layer() {
        let stream = Arc::new(SourceRtcp::new(port()));
        let substream = SourceRtcp::sharing(&stream);
        assert_eq!(substream.local_port(), stream.local_port());
        assert_eq!(substream.fd(), None, "the stream's port is read once, by the stream's");
        let (layer0, layer1) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
        let rtp_from = |rtcp: &UdpSocket| {
            let mut address = rtcp.local_addr().unwrap();
            address.set_port(address.port() - 1);
            address
        };
        stream.rtp_seen(Some(rtp_from(&layer0)), 0x1000);
        substream.rtp_seen(Some(rtp_from(&layer1)), 0x1001);
        // The top layer's encoder reports from an address of its own; the
        // other layers have sent no RTCP yet.
        let port = stream.local_port().unwrap();
        UdpSocket::bind("127.0.0.1:0").unwrap().send_to(&sender_report(0x1002), ("127.0.0.1", port)).unwrap();
        while stream.packets.load(Ordering::Relaxed) == 0 {
            stream.receive(Instant::now());
        }
        let now = Instant::now();
        assert!(substream.request_keyframe(KeyframeReason::Start, now));
        assert_eq!(receive_request(&layer1), keyframe_request(0x1001));
        assert!(stream.request_keyframe(KeyframeReason::Start, now), "each stream's requests are limited apart");
        assert_eq!(receive_request(&layer0), keyframe_request(0x1000));
        assert_eq!(substream.sender_report(), None, "the top layer's report is not the substream's");

        // Once the layer's own report names where its RTCP comes from, its requests go there.
        layer1.send_to(&sender_report(0x1001), ("127.0.0.1", port)).unwrap();
        while stream.packets.load(Ordering::Relaxed) == 1 {
            stream.receive(Instant::now());
        }
        assert_eq!(substream.destination(), Some(layer1.local_addr().unwrap()));
        assert_eq!(substream.sender_report().map(|report| report.ssrc), Some(0x1001));
        assert_eq!(stream.destination().unwrap().port(), layer0.local_addr().unwrap().port());
    }

    #[test]
    fn a_port_of_its_own_answers_the_latest_rtcp_from_any_address() {
        let rtcp = SourceRtcp::new(port());
        rtcp.rtp_seen(Some("127.0.0.1:9".parse().unwrap()), 0xabcd);
        let source = UdpSocket::bind("127.0.0.1:0").unwrap();
        source.send_to(&[0x80, 201, 0, 1, 0, 0, 0, 1], ("127.0.0.1", rtcp.local_port().unwrap())).unwrap();
        while rtcp.packets.load(Ordering::Relaxed) == 0 {
            rtcp.receive(Instant::now());
        }
        assert_eq!(rtcp.destination(), Some(source.local_addr().unwrap()));
        assert!(rtcp.request_keyframe(KeyframeReason::Viewer, Instant::now()));
        assert_eq!(receive_request(&source), keyframe_request(0xabcd));
    }
}
