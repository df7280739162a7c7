//! A viewer's ICE-TCP connection (RFC 6544), as the engine writes to it: SRTP
//! and SRTCP framed with a 2-byte length (RFC 4571) into a bounded queue,
//! written with non-blocking writes.
//!
//! The control plane accepts the connection and runs ICE and DTLS over it;
//! once DTLS is up it hands the engine a duplicate of the socket
//! (`add_peer(..., tcp_socket_fd=...)`) and from then on writes only through
//! the engine (`send_tcp_frame`), so that the engine's and the control plane's
//! frames never interleave mid-frame. The control plane goes on reading the
//! socket (STUN consent, SRTCP), as it reads the UDP socket.
//!
//! One [`TcpOutput`] per connection, shared (a mutex, uncontended: the
//! viewer's worker and, rarely, the engine handle) by whoever sends to the
//! viewer. A frame is queued whole or not at all: when the queue holds
//! [`QUEUE_BYTES`], further frames are dropped (and counted by the caller),
//! so a viewer that stops reading costs bounded memory and never blocks its
//! worker, whose other viewers go on. A queue that makes no progress for the
//! stall timeout, or a connection the kernel reports broken, is lost: the
//! caller reports it once ([`crate::events::Event::TcpConnectionLost`]) and
//! the control plane hangs the viewer up.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes of frames a connection may hold beyond what the kernel took (about 2 s of a 2 Mbit/s stream).
pub const QUEUE_BYTES: usize = 512 * 1024;
/// A connection whose queue makes no progress this long is lost (unless the engine is told otherwise).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest frame RFC 4571's 16-bit length can carry.
pub const MAX_FRAME: usize = u16::MAX as usize;

pub type SharedTcpOutput = Arc<Mutex<TcpOutput>>;

/// Why a connection is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpLoss {
    /// The queue made no progress for the stall timeout: the viewer stopped reading.
    Stalled,
    /// The kernel refused a write (reset, closed by the viewer, ...).
    Broken,
}

impl TcpLoss {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Stalled => "stalled",
            Self::Broken => "broken",
        }
    }
}

pub struct TcpOutput {
    socket: OwnedFd,
    queue: VecDeque<u8>,
    limit: usize,
    stall_timeout: Duration,
    /// When the queue last was empty or the kernel last took bytes from it.
    progress_at: Instant,
    loss: Option<TcpLoss>,
    /// The loss was handed to a caller to report.
    reported: bool,
}

impl TcpOutput {
    pub fn new(socket: OwnedFd, stall_timeout: Duration) -> Self {
        Self::with_limit(socket, stall_timeout, QUEUE_BYTES)
    }

    pub fn with_limit(socket: OwnedFd, stall_timeout: Duration, limit: usize) -> Self {
        Self {
            socket,
            queue: VecDeque::with_capacity(64 * 1024),
            limit,
            stall_timeout,
            progress_at: Instant::now(),
            loss: None,
            reported: false,
        }
    }

    pub fn shared(self) -> SharedTcpOutput {
        Arc::new(Mutex::new(self))
    }

    /// Queues `packet` as one frame; false (dropped) when the queue is full, the
    /// connection is lost or the packet is too large for a frame.
    pub fn push_frame(&mut self, packet: &[u8]) -> bool {
        if self.loss.is_some() || packet.len() > MAX_FRAME || self.queue.len() + 2 + packet.len() > self.limit {
            return false;
        }
        if self.queue.is_empty() {
            self.progress_at = Instant::now();
        }
        self.queue.extend((packet.len() as u16).to_be_bytes());
        self.queue.extend(packet);
        true
    }

    /// Bytes queued and not yet taken by the kernel.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Writes as much of the queue as the socket takes now, without blocking;
    /// the loss, once, when the connection is found lost (by this call or an earlier one).
    pub fn write(&mut self, now: Instant) -> Option<TcpLoss> {
        while self.loss.is_none() && !self.queue.is_empty() {
            let (first, second) = self.queue.as_slices();
            let iovecs = [
                libc::iovec { iov_base: first.as_ptr() as *mut libc::c_void, iov_len: first.len() },
                libc::iovec { iov_base: second.as_ptr() as *mut libc::c_void, iov_len: second.len() },
            ];
            let header = libc::msghdr {
                msg_name: std::ptr::null_mut(),
                msg_namelen: 0,
                msg_iov: iovecs.as_ptr() as *mut libc::iovec,
                msg_iovlen: if second.is_empty() { 1 } else { 2 },
                msg_control: std::ptr::null_mut(),
                msg_controllen: 0,
                msg_flags: 0,
            };
            // SAFETY: the iovecs point into the queue's two slices, live and unchanged during the call.
            let written =
                unsafe { libc::sendmsg(self.socket.as_raw_fd(), &header, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
            if written > 0 {
                self.queue.drain(..written as usize);
                self.progress_at = now;
                continue;
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => break,
                _ => self.loss = Some(TcpLoss::Broken),
            }
        }
        if self.queue.is_empty() {
            self.progress_at = now;
        } else if self.loss.is_none() && now.saturating_duration_since(self.progress_at) >= self.stall_timeout {
            self.loss = Some(TcpLoss::Stalled);
        }
        match self.loss {
            Some(loss) if !self.reported => {
                self.reported = true;
                self.queue = VecDeque::new();
                Some(loss)
            }
            _ => None,
        }
    }

    pub fn is_lost(&self) -> bool {
        self.loss.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, OwnedFd) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, OwnedFd::from(server))
    }

    #[test]
    fn frames_carry_a_two_byte_length() {
        let (mut client, server) = pair();
        let mut output = TcpOutput::new(server, DEFAULT_STALL_TIMEOUT);
        assert!(output.push_frame(b"hello"));
        assert!(output.push_frame(&[7u8; 300]));
        assert_eq!(output.write(Instant::now()), None);
        assert_eq!(output.queued(), 0);
        let mut received = vec![0u8; 2 + 5 + 2 + 300];
        client.read_exact(&mut received).unwrap();
        assert_eq!(&received[..7], b"\x00\x05hello");
        assert_eq!(&received[7..9], &300u16.to_be_bytes());
        assert!(received[9..].iter().all(|&b| b == 7));
    }

    #[test]
    fn a_reader_that_stops_fills_the_queue_then_frames_drop_then_it_stalls() {
        let (client, server) = pair();
        let mut output = TcpOutput::with_limit(server, Duration::from_millis(200), 64 * 1024);
        let start = Instant::now();
        let (mut queued, mut dropped) = (0, 0);
        for _ in 0..20_000 {
            if output.push_frame(&[1u8; 1200]) {
                queued += 1;
            } else {
                dropped += 1;
            }
            assert_eq!(output.write(start), None, "no loss before the stall timeout");
        }
        assert!(queued > 0 && dropped > 0, "queued {queued}, dropped {dropped}");
        assert!(output.queued() <= 64 * 1024, "bounded: {}", output.queued());
        assert_eq!(output.write(start + Duration::from_millis(250)), Some(TcpLoss::Stalled));
        assert_eq!(output.write(start + Duration::from_millis(300)), None, "reported once");
        assert!(!output.push_frame(b"late"), "a lost connection takes nothing");
        drop(client);
    }

    #[test]
    fn a_closed_connection_is_broken() {
        let (client, server) = pair();
        drop(client);
        let mut output = TcpOutput::new(server, DEFAULT_STALL_TIMEOUT);
        let mut loss = None;
        // The first write may still succeed (the reset comes back after it).
        for _ in 0..100 {
            output.push_frame(b"x");
            loss = output.write(Instant::now());
            if loss.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(loss, Some(TcpLoss::Broken));
    }

    #[test]
    fn frames_too_large_for_the_length_are_refused() {
        let (_client, server) = pair();
        let mut output = TcpOutput::new(server, DEFAULT_STALL_TIMEOUT);
        assert!(!output.push_frame(&vec![0u8; MAX_FRAME + 1]));
        assert_eq!(output.queued(), 0);
    }
}
