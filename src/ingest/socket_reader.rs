//! The WebRTC socket's reader: a thread of the data plane that reads every
//! datagram viewers send to the WebRTC port, so that their RTCP (transport
//! feedback above all: tens of packets a second from each viewer) never
//! wakes the control plane's Python loop.
//!
//! The thread waits in `poll` on the socket (the engine's duplicate of the
//! control plane's) and a stop eventfd, then reads in batches with recvmmsg;
//! after each wake-up it sleeps [`COALESCE`], so that under load a wake reads
//! many datagrams and wakes each worker they concern once.
//! A datagram that looks like RTCP (RFC 7983's first byte, an RTCP packet
//! type as RFC 5761 demultiplexes) is offered to the engine
//! ([`ViewerRtcp::take`]), which takes it when it comes from a viewer's UDP
//! address. Everything else (STUN, DTLS, RTCP of a viewer not yet in the
//! engine) goes to the control plane through a [`SignalledQueue`] whose eventfd
//! the asyncio loop watches, in arrival order. Past [`FORWARD_LIMIT`] waiting
//! datagrams (a control plane that stopped reading) the rest are dropped and
//! counted, as the kernel would drop them from a full receive buffer.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::events::SignalledQueue;
use crate::ingest::receiver::{ReceiveBatch, RECEIVE_BATCH};
use crate::sys::{new_eventfd, wake};

/// Datagrams waiting for the control plane past which the rest are dropped.
pub const FORWARD_LIMIT: usize = 65536;
/// Receive batches read per wake-up before the thread polls again (and sees a stop).
const BATCHES_PER_WAKE: usize = 8;
/// After each wake-up the thread sleeps this long before it waits again, so that under
/// load one wake reads what a few milliseconds brought (viewers' feedback comes every
/// 50-100 ms each, spread out: one wake per datagram would cost a wake each, here and in
/// the worker the feedback goes to). What waits is late by at most this much: nothing
/// to a bandwidth estimate (it works from the viewer's own arrival times), a
/// retransmission or a consent check.
pub const COALESCE: Duration = Duration::from_millis(5);

/// A datagram for the control plane, with the address it came from.
pub type Datagram = (Vec<u8>, SocketAddr);

/// What became of a datagram offered as a viewer's RTCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtcpTaken {
    /// Read and acted on.
    Read,
    /// A viewer's, but it did not unprotect or parse: dropped (counted).
    Refused,
    /// Not from a viewer the engine knows on UDP: for the control plane.
    NotAViewers,
}

/// The engine's side: takes the RTCP of its viewers.
pub trait ViewerRtcp: Send + 'static {
    fn take(&mut self, source: SocketAddr, packet: &[u8]) -> RtcpTaken;
    /// The datagrams of one wake-up are all offered (the workers they concern may be woken now).
    fn batch_done(&mut self);
}

/// What the reader has done so far.
#[derive(Default)]
pub struct ReaderCounters {
    pub datagrams: AtomicU64,
    /// Viewers' RTCP read and acted on.
    pub rtcp_read: AtomicU64,
    /// Viewers' RTCP that did not unprotect or parse.
    pub rtcp_refused: AtomicU64,
    /// Handed to the control plane.
    pub forwarded: AtomicU64,
    /// Cut to fit a receive buffer ([`crate::media::packet::SLOT_SIZE`] bytes): dropped.
    pub truncated: AtomicU64,
}

/// The running reader thread.
pub struct SocketReader {
    stop: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
    pub forwarded: Arc<SignalledQueue<Datagram>>,
    pub counters: Arc<ReaderCounters>,
}

impl SocketReader {
    /// Starts reading `socket`; `enter` runs first on the new thread (its priority).
    pub fn spawn(
        socket: Arc<OwnedFd>,
        mut viewers: impl ViewerRtcp,
        enter: impl FnOnce() + Send + 'static,
    ) -> io::Result<Self> {
        let stop = Arc::new(new_eventfd()?);
        let forwarded = Arc::new(SignalledQueue::with_limit(FORWARD_LIMIT, 256)?);
        let counters = Arc::new(ReaderCounters::default());
        let thread = {
            let (stop, forwarded, counters) = (stop.clone(), forwarded.clone(), counters.clone());
            std::thread::Builder::new().name("fanout-socket".into()).spawn(move || {
                enter();
                let mut batch = ReceiveBatch::default();
                while wait_readable(socket.as_raw_fd(), stop.as_raw_fd()) {
                    for _ in 0..BATCHES_PER_WAKE {
                        let received = match batch.receive(socket.as_raw_fd()) {
                            Ok(received) => received,
                            Err(_) => break, // EAGAIN: read all; other errors (ICMP) are per datagram
                        };
                        for i in 0..received {
                            read_one(&batch, i, &mut viewers, &forwarded, &counters);
                        }
                        if received < RECEIVE_BATCH {
                            break;
                        }
                    }
                    viewers.batch_done();
                    std::thread::sleep(COALESCE);
                }
            })?
        };
        Ok(Self { stop, thread: Some(thread), forwarded, counters })
    }

    /// Stops the thread and waits for it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            wake(&self.stop);
            let _ = thread.join();
        }
    }
}

impl Drop for SocketReader {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a datagram looks like RTP or RTCP with an RTCP packet type (RFC 7983, RFC 5761).
pub fn looks_like_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 8 && (128..=191).contains(&datagram[0]) && (192..=223).contains(&datagram[1])
}

/// An IPv4-mapped IPv6 address as IPv4, without flow or scope: how viewers are known.
pub fn canonical(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => SocketAddr::new((*v6.ip()).into(), v6.port()),
        },
        v4 => v4,
    }
}

fn read_one(
    batch: &ReceiveBatch,
    i: usize,
    viewers: &mut impl ViewerRtcp,
    forwarded: &SignalledQueue<Datagram>,
    counters: &ReaderCounters,
) {
    counters.datagrams.fetch_add(1, Ordering::Relaxed);
    let (datagram, truncated) = batch.datagram(i);
    let Some(source) = batch.source(i).map(canonical) else {
        return;
    };
    if truncated {
        counters.truncated.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if looks_like_rtcp(datagram) {
        match viewers.take(source, datagram) {
            RtcpTaken::Read => {
                counters.rtcp_read.fetch_add(1, Ordering::Relaxed);
                return;
            }
            RtcpTaken::Refused => {
                counters.rtcp_refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            RtcpTaken::NotAViewers => {}
        }
    }
    counters.forwarded.fetch_add(1, Ordering::Relaxed);
    forwarded.push((datagram.to_vec(), source));
}

/// Waits until `socket` is readable (true) or `stop` is (false).
fn wait_readable(socket: i32, stop: i32) -> bool {
    let mut fds = [
        libc::pollfd { fd: socket, events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: stop, events: libc::POLLIN, revents: 0 },
    ];
    loop {
        // SAFETY: `fds` is live for the call and its length is passed.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        if fds[1].revents != 0 {
            return false;
        }
        if fds[0].revents & (libc::POLLIN | libc::POLLERR) != 0 {
            return true;
        }
        if fds[0].revents & (libc::POLLNVAL | libc::POLLHUP) != 0 {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::{FromRawFd, IntoRawFd};
    use std::time::Instant;

    /// Takes RTCP from one address only, and remembers what it took.
    struct OneViewer {
        address: SocketAddr,
        taken: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    }

    impl ViewerRtcp for OneViewer {
        fn take(&mut self, source: SocketAddr, packet: &[u8]) -> RtcpTaken {
            if source != self.address {
                return RtcpTaken::NotAViewers;
            }
            self.taken.lock().unwrap().push(packet.to_vec());
            RtcpTaken::Read
        }

        fn batch_done(&mut self) {}
    }

    fn until(mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "condition not met within 10 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_viewers_rtcp_is_taken_and_everything_else_forwarded_in_order() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let server_address = server.local_addr().unwrap();
        let viewer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        let taken = Arc::new(std::sync::Mutex::new(Vec::new()));
        let viewers = OneViewer { address: viewer.local_addr().unwrap(), taken: taken.clone() };
        // SAFETY: the descriptor comes from a socket given up here.
        let socket = Arc::new(unsafe { OwnedFd::from_raw_fd(server.into_raw_fd()) });
        let mut reader = SocketReader::spawn(socket, viewers, || {}).unwrap();

        let rtcp = [0x80, 201, 0, 1, 0, 0, 0, 9];
        let stun = [0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        viewer.send_to(&stun, server_address).unwrap();
        viewer.send_to(&rtcp, server_address).unwrap();
        stranger.send_to(&rtcp, server_address).unwrap();
        viewer.send_to(&[23, 0xfe, 0xfd], server_address).unwrap(); // DTLS

        let mut forwarded = Vec::new();
        until(|| {
            forwarded.extend(reader.forwarded.drain());
            forwarded.len() == 3 && taken.lock().unwrap().len() == 1
        });
        let forwarded: Vec<(Vec<u8>, SocketAddr)> = forwarded;
        assert_eq!(forwarded[0], (stun.to_vec(), viewer.local_addr().unwrap()));
        assert_eq!(forwarded[1], (rtcp.to_vec(), stranger.local_addr().unwrap()));
        assert_eq!(forwarded[2], (vec![23, 0xfe, 0xfd], viewer.local_addr().unwrap()));
        assert_eq!(taken.lock().unwrap()[0], rtcp.to_vec());
        assert_eq!(reader.counters.rtcp_read.load(Ordering::Relaxed), 1);
        assert_eq!(reader.counters.forwarded.load(Ordering::Relaxed), 3);
        reader.stop();
        reader.stop();
    }

    #[test]
    fn past_the_limit_forwarded_datagrams_are_dropped_and_counted() {
        let queue: SignalledQueue<Datagram> = SignalledQueue::with_limit(2, 2).unwrap();
        let address: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for _ in 0..3 {
            queue.push((vec![1], address));
        }
        assert_eq!(queue.drain().len(), 2);
        assert_eq!(queue.dropped(), 1);
    }

    #[test]
    fn mapped_addresses_are_known_by_their_ipv4_form() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        assert_eq!(canonical(mapped), "127.0.0.1:5000".parse::<SocketAddr>().unwrap());
        let v6: SocketAddr = "[::1]:5000".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn only_rtcp_packet_types_look_like_rtcp() {
        assert!(looks_like_rtcp(&[0x80, 200, 0, 6, 0, 0, 0, 1]));
        assert!(!looks_like_rtcp(&[0x80, 96, 0, 6, 0, 0, 0, 1])); // RTP, payload type 96
        assert!(!looks_like_rtcp(&[0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42])); // STUN
        assert!(!looks_like_rtcp(&[0x80, 201, 0, 1])); // too short for SRTCP's header
    }
}
