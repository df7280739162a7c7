//! RTSP over TCP: the RTP and RTCP a server interleaves on its RTSP connection
//! ([`crate::wire::interleaved`]) sent on to the engine's source ports.
//!
//! The control plane reads the connection (it may be TLS) and hands each chunk
//! of bytes to [`InterleavedRelay::relay`], which sends every whole frame's
//! packet, as it came, in one datagram to the port its channel is routed to
//! (a track's RTP or RTCP port, on loopback), from the socket given for it:
//! no Python per packet. The engine's receiver then takes the packets as it
//! takes a UDP source's. The relay stops at what is not a frame (an RTSP
//! response, for the control plane) and at a frame not whole yet.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{BorrowedFd, RawFd};

use crate::wire::interleaved::{next_frame, Next};

/// Where one channel's packets go: from a duplicate of the socket given, to `to`.
pub struct Route {
    pub channel: u8,
    pub socket: UdpSocket,
    pub to: SocketAddr,
}

impl Route {
    /// A route sending from a duplicate of `fd` (a non-blocking UDP socket the caller keeps).
    pub fn new(channel: u8, fd: RawFd, to: SocketAddr) -> io::Result<Self> {
        // SAFETY: the caller's socket is open for the call; the duplicate is ours.
        let owned = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
        Ok(Self { channel, socket: UdpSocket::from(owned), to })
    }
}

/// A frame longer than the engine takes: the connection cannot be trusted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OversizedFrame {
    pub channel: u8,
    pub len: usize,
}

/// The channels of one RTSP session and what went through them.
pub struct InterleavedRelay {
    routes: Vec<Option<Route>>, // by channel
    max_len: usize,
    /// Packets sent on; frames on a channel with no route (dropped); packets the
    /// socket would not take (dropped: its buffer full, or the port closed).
    pub relayed: u64,
    pub unknown: u64,
    pub dropped: u64,
}

impl InterleavedRelay {
    pub fn new(routes: Vec<Route>, max_len: usize) -> Self {
        let mut by_channel: Vec<Option<Route>> = (0..=u8::MAX).map(|_| None).collect();
        for route in routes {
            let channel = usize::from(route.channel);
            by_channel[channel] = Some(route);
        }
        Self { routes: by_channel, max_len, relayed: 0, unknown: 0, dropped: 0 }
    }

    /// Sends on every whole frame from `start` of `data`; returns where the
    /// first thing that is not a whole frame starts (`data.len()` if none).
    pub fn relay(&mut self, data: &[u8], start: usize) -> Result<usize, OversizedFrame> {
        let mut position = start;
        loop {
            match next_frame(data, position, self.max_len) {
                Next::Frame { channel, payload, end } => {
                    match &self.routes[usize::from(channel)] {
                        Some(route) => match route.socket.send_to(payload, route.to) {
                            Ok(_) => self.relayed += 1,
                            Err(_) => self.dropped += 1,
                        },
                        None => self.unknown += 1,
                    }
                    position = end;
                }
                Next::Incomplete | Next::NotAFrame => return Ok(position),
                Next::Oversized { channel, len } => return Err(OversizedFrame { channel, len }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn frames_go_to_their_channels_port_until_a_response() {
        let engine = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = UdpSocket::bind("127.0.0.1:0").unwrap();
        let routes = vec![
            Route::new(0, from.as_raw_fd(), engine.local_addr().unwrap()).unwrap(),
            Route::new(1, from.as_raw_fd(), rtcp.local_addr().unwrap()).unwrap(),
        ];
        let mut relay = InterleavedRelay::new(routes, 1984);
        let data = b"$\x00\x00\x03rtp$\x07\x00\x01?$\x01\x00\x02sr$\x00\x00\x05cu";
        assert_eq!(relay.relay(data, 0), Ok(18), "stops at the frame not whole yet");
        assert_eq!((relay.relayed, relay.unknown, relay.dropped), (2, 1, 0));
        let mut buffer = [0u8; 16];
        let (len, sender) = engine.recv_from(&mut buffer).unwrap();
        assert_eq!((&buffer[..len], sender), (&b"rtp"[..], from.local_addr().unwrap()));
        let len = rtcp.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..len], b"sr");
        assert_eq!(relay.relay(b"RTSP/1.0 200 OK\r\n", 0), Ok(0));
        assert_eq!(relay.relay(b"$\x00\x08\x00", 0), Err(OversizedFrame { channel: 0, len: 2048 }));
    }
}
