//! RTSP interleaved binary data (RFC 2326 section 10.12): on an RTSP
//! connection, `$`, a one-byte channel, a two-byte big-endian length, then
//! that many bytes of RTP or RTCP. Sans-IO: [`next_frame`] reads one frame
//! at an offset of what the connection gave so far.

/// What starts at an offset of the connection's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// A whole frame; the next thing starts at `end`.
    Frame { channel: u8, payload: &'a [u8], end: usize },
    /// The start of a frame whose rest has not come yet (or nothing at all).
    Incomplete,
    /// Not a frame: an RTSP message (a response to a keep-alive) starts here.
    NotAFrame,
    /// A frame announcing more than `max_len` bytes: nothing anyone should send.
    Oversized { channel: u8, len: usize },
}

/// The frame at `start` of `data`, if whole; frames over `max_len` bytes are refused
/// as soon as their header is read (before their payload is waited for).
pub fn next_frame(data: &[u8], start: usize, max_len: usize) -> Next<'_> {
    let Some(rest) = data.get(start..) else {
        return Next::Incomplete;
    };
    match rest {
        [] => Next::Incomplete,
        [b'$', ..] if rest.len() < 4 => Next::Incomplete,
        [b'$', channel, high, low, payload @ ..] => {
            let len = usize::from(u16::from_be_bytes([*high, *low]));
            if len > max_len {
                Next::Oversized { channel: *channel, len }
            } else if payload.len() < len {
                Next::Incomplete
            } else {
                Next::Frame { channel: *channel, payload: &payload[..len], end: start + 4 + len }
            }
        }
        _ => Next::NotAFrame,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_then_a_response() {
        let data = b"$\x00\x00\x02ab$\x01\x00\x00RTSP/1.0 200 OK\r\n";
        assert_eq!(next_frame(data, 0, 1500), Next::Frame { channel: 0, payload: b"ab", end: 6 });
        assert_eq!(next_frame(data, 6, 1500), Next::Frame { channel: 1, payload: b"", end: 10 });
        assert_eq!(next_frame(data, 10, 1500), Next::NotAFrame);
    }

    #[test]
    fn a_frame_cut_anywhere_is_incomplete() {
        let frame = b"$\x02\x00\x03xyz";
        for cut in 0..frame.len() {
            assert_eq!(next_frame(&frame[..cut], 0, 1500), Next::Incomplete, "cut at {cut}");
        }
        assert_eq!(next_frame(frame, 9, 1500), Next::Incomplete);
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header() {
        assert_eq!(next_frame(b"$\x04\xff\xff", 0, 1984), Next::Oversized { channel: 4, len: 65535 });
        assert_eq!(next_frame(b"$\x04\x07\xc0", 0, 1984), Next::Incomplete);
    }
}
