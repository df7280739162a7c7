//! The preallocated send batch: datagrams for many viewers, flushed with one
//! sendmmsg call, never blocking the worker for long.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::viewer::RawAddress;

/// Room for the largest RTP packet the engine forwards plus its SRTP trailer.
pub const SLOT_SIZE: usize = 2048;
/// How long a flush may wait for room in a full socket buffer before it drops.
const FULL_BUFFER_WAIT: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramKind {
    Rtp,
    Rtcp,
}

/// Who a datagram was for, to count the outcome against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotTag {
    pub viewer: usize,
    pub kind: DatagramKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent { bytes: usize },
    /// The socket buffer stayed full.
    Dropped,
    /// The kernel refused this datagram (unreachable address, ...).
    Failed,
}

pub struct SendBatch {
    buffers: Box<[[u8; SLOT_SIZE]]>,
    lengths: Box<[usize]>,
    addresses: Box<[RawAddress]>,
    tags: Box<[SlotTag]>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
    count: usize,
}

impl SendBatch {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0 && capacity <= 1024, "sendmmsg takes at most UIO_MAXIOV messages");
        let empty_iovec = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        // SAFETY: mmsghdr is plain old data (pointers and integers); all zeros is a valid value.
        let empty_header: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Self {
            buffers: vec![[0u8; SLOT_SIZE]; capacity].into_boxed_slice(),
            lengths: vec![0; capacity].into_boxed_slice(),
            addresses: vec![RawAddress::UNSPECIFIED; capacity].into_boxed_slice(),
            tags: vec![SlotTag { viewer: 0, kind: DatagramKind::Rtp }; capacity].into_boxed_slice(),
            iovecs: vec![empty_iovec; capacity].into_boxed_slice(),
            headers: vec![empty_header; capacity].into_boxed_slice(),
            count: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.count == self.buffers.len()
    }

    /// The buffer of the next datagram; [`SendBatch::commit`] adds it to the batch.
    /// The batch must not be full.
    pub fn next_buffer(&mut self) -> &mut [u8; SLOT_SIZE] {
        &mut self.buffers[self.count]
    }

    pub fn commit(&mut self, len: usize, address: &RawAddress, tag: SlotTag) {
        self.lengths[self.count] = len;
        self.addresses[self.count] = *address;
        self.tags[self.count] = tag;
        self.count += 1;
    }

    /// Sends every datagram in the batch and reports each one's outcome.
    pub fn flush(&mut self, fd: RawFd, mut outcome: impl FnMut(SlotTag, Outcome)) {
        let count = self.count;
        self.count = 0;
        for i in 0..count {
            self.iovecs[i] = libc::iovec { iov_base: self.buffers[i].as_mut_ptr().cast(), iov_len: self.lengths[i] };
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = self.addresses[i].as_mut_ptr();
            header.msg_namelen = self.addresses[i].socklen();
            header.msg_iov = &mut self.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_control = std::ptr::null_mut();
            header.msg_controllen = 0;
            header.msg_flags = 0;
        }
        let mut sent = 0;
        let mut waited = false;
        while sent < count {
            // SAFETY: headers[sent..count] were filled above and point into this
            // batch's own buffers, iovecs and addresses, which are not touched
            // until the call returns; count - sent <= capacity <= 1024.
            let result = unsafe {
                libc::sendmmsg(fd, self.headers[sent..].as_mut_ptr(), (count - sent) as libc::c_uint, libc::MSG_DONTWAIT)
            };
            if result > 0 {
                for i in sent..sent + result as usize {
                    outcome(self.tags[i], Outcome::Sent { bytes: self.lengths[i] });
                }
                sent += result as usize;
                continue;
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN | libc::ENOBUFS) if !waited => {
                    waited = true;
                    wait_writable(fd, FULL_BUFFER_WAIT);
                }
                Some(libc::EAGAIN | libc::ENOBUFS) => {
                    for i in sent..count {
                        outcome(self.tags[i], Outcome::Dropped);
                    }
                    return;
                }
                _ => {
                    outcome(self.tags[sent], Outcome::Failed);
                    sent += 1;
                }
            }
        }
    }
}

fn wait_writable(fd: RawFd, timeout: Duration) {
    let mut poll_fd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut poll_fd, 1, timeout.as_millis() as libc::c_int) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn flush_sends_every_datagram_and_reports_failures() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let good = RawAddress::from_socket_addr(receiver.local_addr().unwrap(), libc::AF_INET).unwrap();
        let unreachable = RawAddress::from_socket_addr("0.0.0.0:0".parse().unwrap(), libc::AF_INET).unwrap();
        let mut batch = SendBatch::new(4);
        for (i, address) in [good, unreachable, good].iter().enumerate() {
            let buffer = batch.next_buffer();
            buffer[..5].copy_from_slice(b"hello");
            buffer[5] = b'0' + i as u8;
            batch.commit(6, address, SlotTag { viewer: i, kind: DatagramKind::Rtp });
        }
        let mut outcomes = Vec::new();
        batch.flush(sender.as_raw_fd(), |tag, outcome| outcomes.push((tag.viewer, outcome)));
        assert_eq!(
            outcomes,
            [(0, Outcome::Sent { bytes: 6 }), (1, Outcome::Failed), (2, Outcome::Sent { bytes: 6 })]
        );
        assert!(batch.is_empty());
        let mut buf = [0u8; 16];
        assert_eq!(receiver.recv(&mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b"hello0");
        assert_eq!(receiver.recv(&mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b"hello2");
    }
}
