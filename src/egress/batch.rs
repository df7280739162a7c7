//! The preallocated send batch: datagrams for many viewers in one arena,
//! flushed with one sendmmsg call, never blocking the worker for long.
//!
//! Each datagram is written (rewritten and SRTP-protected in place) at the
//! arena's tail. In [`SendMode::Gso`] a run of datagrams of one size to one
//! viewer becomes one message carrying a UDP_SEGMENT control message: the
//! kernel cuts it into datagrams (at most [`MAX_GSO_SEGMENTS`] and
//! [`MAX_GSO_BYTES`] per message; the last one may be shorter). Messages keep
//! the order in which datagrams were committed, so each viewer's order holds.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::media::packet::SLOT_SIZE;
use crate::sys::RawAddress;

/// The kernel's UDP_MAX_SEGMENTS.
pub const MAX_GSO_SEGMENTS: u32 = 64;
/// The largest UDP payload of one GSO message (an IPv4 datagram's limit).
pub const MAX_GSO_BYTES: usize = 65_507;
/// linux/udp.h: the socket option (level SOL_UDP) and control message for GSO.
const UDP_SEGMENT: libc::c_int = 103;
/// The arena: small enough that a datagram written and protected is still in
/// cache when the kernel copies it, large enough that a sendmmsg carries many.
pub const ARENA_BYTES: usize = 256 * 1024;
pub const MAX_MESSAGES: usize = 512;
/// How long a flush may wait for room in a full socket buffer before it drops.
const FULL_BUFFER_WAIT: Duration = Duration::from_millis(1);
/// After this many viewers' GSO sends were refused, the socket sends without GSO.
const GSO_REFUSALS_FOR_THE_SOCKET: u32 = 4;
/// Room for one control message carrying a u16: CMSG_SPACE(2) on 64-bit Linux is 24.
const CONTROL_WORDS: usize = 4;

/// How a batch reaches the kernel: one sendmsg per datagram, one sendmmsg per
/// batch, or one sendmmsg per batch with runs merged by UDP GSO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendMode {
    Sendto,
    Sendmmsg,
    Gso,
}

impl SendMode {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sendto" => Some(Self::Sendto),
            "sendmmsg" => Some(Self::Sendmmsg),
            "gso" => Some(Self::Gso),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramKind {
    Rtp,
    Retransmission,
    Rtcp,
}

/// Who a datagram was for, to count the outcome against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotTag {
    pub viewer: u32,
    pub kind: DatagramKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent {
        packets: u32,
        bytes: usize,
    },
    /// The socket buffer stayed full.
    Dropped {
        packets: u32,
    },
    /// The kernel refused these datagrams (unreachable address, ...).
    Failed {
        packets: u32,
    },
    /// The kernel refused this viewer's GSO message (EIO, EINVAL); its
    /// datagrams went one by one (their outcomes follow). Send it no more GSO.
    GsoRefused,
}

#[derive(Clone, Copy)]
struct Message {
    start: usize,
    len: usize,
    segment: usize,
    segments: u32,
    /// A run may grow: every segment so far had the first one's size.
    open: bool,
    tag: SlotTag,
}

pub struct SendBatch {
    mode: SendMode,
    gso: bool,
    refusals: u32,
    arena: Box<[u8]>,
    tail: usize,
    messages: Vec<Message>,
    max_messages: usize,
    addresses: Box<[RawAddress]>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
    controls: Box<[[u64; CONTROL_WORDS]]>,
}

// SAFETY: the raw pointers in iovecs and headers point into the batch's own
// boxes and are rewritten before every use.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new(mode: SendMode) -> Self {
        Self::with_capacity(mode, ARENA_BYTES, MAX_MESSAGES)
    }

    pub fn with_capacity(mode: SendMode, arena_bytes: usize, max_messages: usize) -> Self {
        assert!(max_messages > 0 && max_messages <= 1024, "sendmmsg takes at most UIO_MAXIOV messages");
        assert!(arena_bytes >= SLOT_SIZE);
        let empty_iovec = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        // SAFETY: mmsghdr is plain old data (pointers and integers); all zeros is a valid value.
        let empty_header: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Self {
            mode,
            gso: mode == SendMode::Gso,
            refusals: 0,
            arena: vec![0u8; arena_bytes].into_boxed_slice(),
            tail: 0,
            messages: Vec::with_capacity(max_messages),
            max_messages,
            addresses: vec![RawAddress::UNSPECIFIED; max_messages].into_boxed_slice(),
            iovecs: vec![empty_iovec; max_messages].into_boxed_slice(),
            headers: vec![empty_header; max_messages].into_boxed_slice(),
            controls: vec![[0u64; CONTROL_WORDS]; max_messages].into_boxed_slice(),
        }
    }

    pub fn mode(&self) -> SendMode {
        self.mode
    }

    /// Whether runs are still merged (false once the socket refused GSO).
    pub fn uses_gso(&self) -> bool {
        self.gso
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Messages waiting (a GSO message carries several datagrams).
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether one more datagram fits; flush first if not.
    pub fn has_room(&self) -> bool {
        self.tail + SLOT_SIZE <= self.arena.len() && self.messages.len() < self.max_messages
    }

    /// Where the next datagram goes; [`SendBatch::commit`] adds it. Needs [`SendBatch::has_room`].
    pub fn next_buffer(&mut self) -> &mut [u8] {
        &mut self.arena[self.tail..self.tail + SLOT_SIZE]
    }

    /// Adds the `len` bytes written at [`SendBatch::next_buffer`], for `address`.
    /// With `merge`, a datagram may join the previous message of the same tag as
    /// one more GSO segment.
    pub fn commit(&mut self, len: usize, address: &RawAddress, tag: SlotTag, merge: bool) {
        debug_assert!(len <= SLOT_SIZE && self.has_room());
        let start = self.tail;
        self.tail += len;
        if self.gso && merge && tag.kind != DatagramKind::Rtcp {
            if let Some(last) = self.messages.last_mut() {
                if last.open
                    && last.tag == tag
                    && last.segments < MAX_GSO_SEGMENTS
                    && last.len + len <= MAX_GSO_BYTES
                    && len <= last.segment
                    && last.start + last.len == start
                {
                    last.len += len;
                    last.segments += 1;
                    last.open = len == last.segment;
                    return;
                }
            }
        }
        let index = self.messages.len();
        self.addresses[index] = *address;
        self.messages.push(Message {
            start,
            len,
            segment: len,
            segments: 1,
            open: tag.kind != DatagramKind::Rtcp,
            tag,
        });
    }

    /// Sends every message in the batch and reports each one's outcome.
    pub fn flush(&mut self, fd: RawFd, mut outcome: impl FnMut(SlotTag, Outcome)) {
        let count = self.messages.len();
        for i in 0..count {
            let message = self.messages[i];
            self.iovecs[i] = libc::iovec {
                // SAFETY: start + len <= tail <= arena.len().
                iov_base: unsafe { self.arena.as_mut_ptr().add(message.start) }.cast(),
                iov_len: message.len,
            };
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = self.addresses[i].as_mut_ptr();
            header.msg_namelen = self.addresses[i].socklen();
            header.msg_iov = &mut self.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_flags = 0;
            if message.segments > 1 {
                header.msg_control = self.controls[i].as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE is a pure computation.
                header.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
                // SAFETY: the control buffer is 8-byte aligned and CONTROL_WORDS * 8
                // >= CMSG_SPACE(2) bytes long, so the first header and its two data
                // bytes lie inside it.
                unsafe {
                    let cmsg = libc::CMSG_FIRSTHDR(header);
                    (*cmsg).cmsg_level = libc::SOL_UDP;
                    (*cmsg).cmsg_type = UDP_SEGMENT;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), message.segment as u16);
                }
            } else {
                header.msg_control = std::ptr::null_mut();
                header.msg_controllen = 0;
            }
        }
        let mut sent = 0;
        let mut waited = false;
        while sent < count {
            let result = match self.mode {
                // SAFETY: headers[sent] was filled above and points into this batch's
                // own arena, iovecs, addresses and controls, untouched until it returns.
                SendMode::Sendto => match unsafe { libc::sendmsg(fd, &self.headers[sent].msg_hdr, libc::MSG_DONTWAIT) }
                {
                    n if n >= 0 => 1,
                    _ => -1,
                },
                // SAFETY: as above for headers[sent..count]; count - sent <= 1024.
                _ => unsafe {
                    libc::sendmmsg(
                        fd,
                        self.headers[sent..].as_mut_ptr(),
                        (count - sent) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                },
            };
            if result > 0 {
                for message in &self.messages[sent..sent + result as usize] {
                    outcome(message.tag, Outcome::Sent { packets: message.segments, bytes: message.len });
                }
                sent += result as usize;
                continue;
            }
            let message = self.messages[sent];
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN | libc::ENOBUFS) if !waited => {
                    waited = true;
                    wait_writable(fd, FULL_BUFFER_WAIT);
                }
                Some(libc::EAGAIN | libc::ENOBUFS) => {
                    for message in &self.messages[sent..] {
                        outcome(message.tag, Outcome::Dropped { packets: message.segments });
                    }
                    break;
                }
                Some(libc::EIO | libc::EINVAL) if message.segments > 1 => {
                    self.refusals += 1;
                    if self.refusals >= GSO_REFUSALS_FOR_THE_SOCKET {
                        self.gso = false;
                    }
                    outcome(message.tag, Outcome::GsoRefused);
                    self.send_segments(fd, sent, &mut outcome);
                    sent += 1;
                }
                _ => {
                    outcome(message.tag, Outcome::Failed { packets: message.segments });
                    sent += 1;
                }
            }
        }
        self.messages.clear();
        self.tail = 0;
    }

    /// Sends message `index`'s segments as datagrams of their own.
    fn send_segments(&mut self, fd: RawFd, index: usize, outcome: &mut impl FnMut(SlotTag, Outcome)) {
        let message = self.messages[index];
        let address = &mut self.addresses[index];
        let mut offset = message.start;
        let end = message.start + message.len;
        while offset < end {
            let len = message.segment.min(end - offset);
            // SAFETY: offset + len <= end <= arena.len(); the address is live and sized.
            let result = unsafe {
                libc::sendto(
                    fd,
                    self.arena.as_ptr().add(offset).cast(),
                    len,
                    libc::MSG_DONTWAIT,
                    address.as_mut_ptr().cast(),
                    address.socklen(),
                )
            };
            let result = if result >= 0 {
                Outcome::Sent { packets: 1, bytes: len }
            } else if matches!(io::Error::last_os_error().raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS)) {
                Outcome::Dropped { packets: 1 }
            } else {
                Outcome::Failed { packets: 1 }
            };
            outcome(message.tag, result);
            offset += len;
        }
    }
}

fn wait_writable(fd: RawFd, timeout: Duration) {
    let mut poll_fd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut poll_fd, 1, timeout.as_millis() as libc::c_int) };
}

/// Asks for UDP GSO-sized sends on `fd` to be possible at all (kernel >= 4.18).
pub fn socket_supports_gso(fd: RawFd) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live and sized for the option.
    unsafe { libc::getsockopt(fd, libc::SOL_UDP, UDP_SEGMENT, (&mut value as *mut libc::c_int).cast(), &mut len) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn tag(viewer: u32) -> SlotTag {
        SlotTag { viewer, kind: DatagramKind::Rtp }
    }

    fn add(batch: &mut SendBatch, len: usize, fill: u8, address: &RawAddress, tag: SlotTag) {
        batch.next_buffer()[..len].fill(fill);
        batch.commit(len, address, tag, true);
    }

    fn receiver() -> (UdpSocket, RawAddress) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let address = RawAddress::from_socket_addr(socket.local_addr().unwrap(), libc::AF_INET).unwrap();
        (socket, address)
    }

    #[test]
    fn flush_sends_every_datagram_and_reports_failures() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (receiver, good) = receiver();
        let unreachable = RawAddress::from_socket_addr("0.0.0.0:0".parse().unwrap(), libc::AF_INET).unwrap();
        for mode in [SendMode::Sendto, SendMode::Sendmmsg, SendMode::Gso] {
            let mut batch = SendBatch::new(mode);
            for (i, address) in [good, unreachable, good].iter().enumerate() {
                let buffer = batch.next_buffer();
                buffer[..5].copy_from_slice(b"hello");
                buffer[5] = b'0' + i as u8;
                batch.commit(6, address, tag(i as u32), true);
            }
            let mut outcomes = Vec::new();
            batch.flush(sender.as_raw_fd(), |tag, outcome| outcomes.push((tag.viewer, outcome)));
            assert_eq!(
                outcomes,
                [
                    (0, Outcome::Sent { packets: 1, bytes: 6 }),
                    (1, Outcome::Failed { packets: 1 }),
                    (2, Outcome::Sent { packets: 1, bytes: 6 })
                ],
                "{mode:?}"
            );
            assert!(batch.is_empty());
            let mut buf = [0u8; 16];
            assert_eq!(receiver.recv(&mut buf).unwrap(), 6);
            assert_eq!(&buf[..6], b"hello0");
            assert_eq!(receiver.recv(&mut buf).unwrap(), 6);
            assert_eq!(&buf[..6], b"hello2");
        }
    }

    #[test]
    fn gso_merges_runs_of_one_size_per_viewer_and_keeps_order() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (alice, alice_address) = receiver();
        let (bob, bob_address) = receiver();
        let mut batch = SendBatch::new(SendMode::Gso);
        // Alice: 70 datagrams of 1000 bytes then a short one; Bob: 3 of 500, 1 of 600, 1 of 100.
        for i in 0..70 {
            add(&mut batch, 1000, i as u8, &alice_address, tag(0));
        }
        add(&mut batch, 10, 70, &alice_address, tag(0));
        for (i, len) in [500, 500, 500, 600, 100].into_iter().enumerate() {
            add(&mut batch, len, i as u8, &bob_address, tag(1));
        }
        let lens: Vec<(u32, usize)> = batch.messages.iter().map(|m| (m.segments, m.segment)).collect();
        // 64 segments at most per message; then the short one closes the second run.
        assert_eq!(lens, [(64, 1000), (7, 1000), (3, 500), (2, 600)]);
        let mut outcomes = Vec::new();
        batch.flush(sender.as_raw_fd(), |tag, outcome| outcomes.push((tag.viewer, outcome)));
        assert_eq!(outcomes[0], (0, Outcome::Sent { packets: 64, bytes: 64_000 }));
        assert_eq!(outcomes[1], (0, Outcome::Sent { packets: 7, bytes: 6_010 }));
        let mut buf = [0u8; 2048];
        for i in 0..71 {
            let len = alice.recv(&mut buf).unwrap();
            assert_eq!((len, buf[0]), (if i == 70 { 10 } else { 1000 }, i as u8));
        }
        for (i, expected) in [500, 500, 500, 600, 100].into_iter().enumerate() {
            let len = bob.recv(&mut buf).unwrap();
            assert_eq!((len, buf[0]), (expected, i as u8));
        }
    }

    #[test]
    fn a_refused_gso_send_falls_back_to_single_datagrams() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        // The kernel refuses GSO on a socket without UDP checksums (EINVAL).
        let one: libc::c_int = 1;
        // SAFETY: `one` is a live c_int.
        let set = unsafe {
            libc::setsockopt(
                sender.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&one as *const libc::c_int).cast(),
                4,
            )
        };
        assert_eq!(set, 0);
        let (receiver, address) = receiver();
        let mut batch = SendBatch::new(SendMode::Gso);
        for round in 0..GSO_REFUSALS_FOR_THE_SOCKET {
            for i in 0..3 {
                add(&mut batch, 200, i, &address, tag(round));
            }
            let mut outcomes = Vec::new();
            batch.flush(sender.as_raw_fd(), |tag, outcome| outcomes.push((tag.viewer, outcome)));
            let sent = Outcome::Sent { packets: 1, bytes: 200 };
            assert_eq!(outcomes, [(round, Outcome::GsoRefused), (round, sent), (round, sent), (round, sent)]);
            let mut buf = [0u8; 512];
            for i in 0..3 {
                assert_eq!((receiver.recv(&mut buf).unwrap(), buf[0]), (200, i));
            }
        }
        assert!(!batch.uses_gso(), "the socket refused it often enough");
        add(&mut batch, 200, 0, &address, tag(9));
        add(&mut batch, 200, 1, &address, tag(9));
        assert_eq!(batch.messages.len(), 2);
    }
}
