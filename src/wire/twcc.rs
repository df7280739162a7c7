//! Transport-wide congestion control (draft-holmer-rmcat-transport-wide-cc-extensions-01):
//! the header extension element a sender numbers every packet of a transport
//! with (section 2), and the RTCP transport feedback a receiver answers with,
//! telling when each packet arrived (section 3.1). Sans-IO, nothing allocated.

/// RTPFB (RFC 4585) and its FMT for transport-wide feedback.
const TRANSPORT_FEEDBACK: u8 = 205;
pub const FMT_TRANSPORT_CC: u8 = 15;
/// Receive deltas and the reference time count in these units.
const DELTA_MICROS: i64 = 250;
const REFERENCE_MICROS: i64 = 64_000;

/// The one-byte-header element (RFC 8285) of the transport-wide sequence
/// number: id and length (two bytes), then the number.
pub const ELEMENT_LEN: usize = 3;

/// Writes the element for `sequence` with extension id `id` into `out[..3]`.
pub fn write_element(out: &mut [u8], id: u8, sequence: u16) {
    out[0] = (id << 4) | 1;
    out[1..3].copy_from_slice(&sequence.to_be_bytes());
}

/// One transport feedback message (the FCI and the counts of its header).
#[derive(Clone, Copy, Debug)]
pub struct TransportFeedback<'a> {
    pub media_ssrc: u32,
    pub base_sequence: u16,
    pub status_count: u16,
    /// Microseconds on the receiver's clock (only differences mean anything).
    pub reference_micros: i64,
    pub feedback_count: u8,
    /// Packet chunks, then receive deltas, then padding.
    rest: &'a [u8],
}

/// Why a feedback message could not be read to its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

impl<'a> TransportFeedback<'a> {
    /// The message in an RTPFB packet's body after the common header and two SSRCs.
    fn parse(media_ssrc: u32, fci: &'a [u8]) -> Option<Self> {
        let fixed = fci.get(..8)?;
        let reference = i32::from_be_bytes([fixed[4], fixed[5], fixed[6], 0]) >> 8; // 24-bit signed
        Some(Self {
            media_ssrc,
            base_sequence: u16::from_be_bytes([fixed[0], fixed[1]]),
            status_count: u16::from_be_bytes([fixed[2], fixed[3]]),
            reference_micros: i64::from(reference) * REFERENCE_MICROS,
            feedback_count: fixed[7],
            rest: &fci[8..],
        })
    }

    /// Calls `packet(sequence, arrival)` for each of the `status_count`
    /// packets in order: the arrival in microseconds on the receiver's clock,
    /// None if not received. Err if the chunks or deltas run past the end (the
    /// packets before that were reported).
    pub fn for_each_packet(&self, mut packet: impl FnMut(u16, Option<i64>)) -> Result<(), Malformed> {
        let count = usize::from(self.status_count);
        // First pass: find where the deltas start (after the chunks that cover `count`).
        let mut covered = 0usize;
        let mut chunks = 0usize;
        while covered < count {
            let chunk = self.chunk(chunks).ok_or(Malformed)?;
            covered += chunk_len(chunk);
            chunks += 1;
        }
        let mut deltas = &self.rest[2 * chunks..];
        let mut arrival = self.reference_micros;
        let mut sequence = self.base_sequence;
        let mut reported = 0usize;
        for index in 0..chunks {
            let chunk = self.chunk(index).ok_or(Malformed)?;
            for position in 0..chunk_len(chunk) {
                if reported == count {
                    return Ok(());
                }
                let delta = match chunk_symbol(chunk, position) {
                    0 => None,
                    1 => {
                        let (&byte, tail) = deltas.split_first().ok_or(Malformed)?;
                        deltas = tail;
                        Some(i64::from(byte))
                    }
                    2 => {
                        let bytes = deltas.get(..2).ok_or(Malformed)?;
                        deltas = &deltas[2..];
                        Some(i64::from(i16::from_be_bytes([bytes[0], bytes[1]])))
                    }
                    _ => return Err(Malformed),
                };
                let at = delta.map(|delta| {
                    arrival += delta * DELTA_MICROS;
                    arrival
                });
                packet(sequence, at);
                sequence = sequence.wrapping_add(1);
                reported += 1;
            }
        }
        Ok(())
    }

    fn chunk(&self, index: usize) -> Option<u16> {
        let bytes = self.rest.get(2 * index..2 * index + 2)?;
        Some(u16::from_be_bytes([bytes[0], bytes[1]]))
    }
}

/// How many packets a packet chunk covers.
fn chunk_len(chunk: u16) -> usize {
    match (chunk >> 15, (chunk >> 14) & 1) {
        (0, _) => usize::from(chunk & 0x1fff), // run length chunk
        (_, 0) => 14,                          // status vector of one-bit symbols
        _ => 7,                                // status vector of two-bit symbols
    }
}

/// The status symbol of the packet at `position` of a chunk: 0 not received,
/// 1 received with a one-byte delta, 2 with a two-byte delta, 3 reserved.
fn chunk_symbol(chunk: u16, position: usize) -> u16 {
    match (chunk >> 15, (chunk >> 14) & 1) {
        (0, _) => (chunk >> 13) & 3,
        (_, 0) => (chunk >> (13 - position)) & 1,
        _ => (chunk >> (12 - 2 * position)) & 3,
    }
}

/// The transport feedback messages in a compound RTCP packet, in order. A pure
/// function of the bytes; it stops at the first malformed length.
pub fn for_each_transport_feedback(packet: &[u8], mut feedback: impl FnMut(TransportFeedback<'_>)) {
    let mut offset = 0;
    while let Some(header) = packet.get(offset..offset + 4) {
        let len = 4 * (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1);
        let Some(body) = packet.get(offset..offset + len) else {
            return;
        };
        if header[0] >> 6 == 2 && header[1] == TRANSPORT_FEEDBACK && header[0] & 0x1f == FMT_TRANSPORT_CC && len >= 20
        {
            let media_ssrc = u32::from_be_bytes([body[8], body[9], body[10], body[11]]);
            if let Some(message) = TransportFeedback::parse(media_ssrc, &body[12..]) {
                feedback(message);
            }
        }
        offset += len;
    }
}

/// Whether a compound RTCP packet holds a transport feedback message.
pub fn has_transport_feedback(packet: &[u8]) -> bool {
    let mut found = false;
    for_each_transport_feedback(packet, |_| found = true);
    found
}

/// Writes a transport feedback message (for tests and the fuzz seeds): packets
/// from `base` on, each received at a microsecond time (a multiple of 250
/// after `reference_micros`, a multiple of 64 ms) or not; run length chunks
/// are not used, only two-bit status vectors. Returns the RTCP packet.
pub fn build_feedback(base: u16, reference_micros: i64, arrivals: &[Option<i64>], count: u8) -> Vec<u8> {
    let mut chunks = Vec::new();
    let mut deltas = Vec::new();
    let mut last = reference_micros;
    for group in arrivals.chunks(7) {
        let mut chunk: u16 = 0xc000;
        for (position, arrival) in group.iter().enumerate() {
            let Some(at) = arrival else { continue };
            let delta = (at - last) / DELTA_MICROS;
            last += delta * DELTA_MICROS;
            let symbol = if (0..=255).contains(&delta) {
                deltas.push(delta as u8);
                1
            } else {
                deltas.extend_from_slice(&(delta as i16).to_be_bytes());
                2
            };
            chunk |= symbol << (12 - 2 * position);
        }
        chunks.extend_from_slice(&chunk.to_be_bytes());
    }
    let mut body = vec![0, 0, 0, 1, 0, 0, 0, 2];
    body.extend_from_slice(&base.to_be_bytes());
    body.extend_from_slice(&(arrivals.len() as u16).to_be_bytes());
    let reference = (reference_micros / REFERENCE_MICROS) as i32;
    body.extend_from_slice(&reference.to_be_bytes()[1..]);
    body.push(count);
    body.extend_from_slice(&chunks);
    body.extend_from_slice(&deltas);
    while body.len() % 4 != 0 {
        body.push(0);
    }
    let mut packet = vec![0x80 | FMT_TRANSPORT_CC, TRANSPORT_FEEDBACK];
    packet.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
    packet.extend_from_slice(&body);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(packet: &[u8]) -> Vec<(u16, Option<i64>)> {
        let mut seen = Vec::new();
        for_each_transport_feedback(packet, |feedback| {
            feedback.for_each_packet(|sequence, at| seen.push((sequence, at))).unwrap();
        });
        seen
    }

    #[test]
    fn reads_what_it_writes() {
        let arrivals = [Some(64_000), None, Some(64_500), Some(200_000), Some(100_000), None, None, Some(100_250)];
        let packet = build_feedback(65534, 64_000, &arrivals, 3);
        let expected: Vec<(u16, Option<i64>)> =
            arrivals.iter().enumerate().map(|(i, &at)| (65534u16.wrapping_add(i as u16), at)).collect();
        assert_eq!(read(&packet), expected);
    }

    #[test]
    fn reads_run_length_and_one_bit_chunks() {
        // Base 10, 17 packets: a run of 3 received (small deltas), then a one-bit vector of 14: 1,0,1,0...
        let mut packet = vec![0x8f, 205, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 10, 0, 17, 0, 0, 1, 0];
        packet.extend_from_slice(&(0x2000u16 | 3).to_be_bytes());
        packet.extend_from_slice(&0xaaaau16.to_be_bytes()); // one-bit vector: received, lost, ...
        packet.extend_from_slice(&[4, 4, 4, 8, 8, 8, 8, 8, 8, 8]);
        while packet.len() % 4 != 0 {
            packet.push(0);
        }
        let words = (packet.len() / 4 - 1) as u16;
        packet[2..4].copy_from_slice(&words.to_be_bytes());
        let seen = read(&packet);
        assert_eq!(seen.len(), 17);
        assert_eq!(&seen[..4], &[(10, Some(65_000)), (11, Some(66_000)), (12, Some(67_000)), (13, Some(69_000))]);
        assert_eq!(seen[4], (14, None));
        assert_eq!(seen.iter().filter(|(_, at)| at.is_some()).count(), 3 + 7);
    }

    #[test]
    fn refuses_a_message_cut_short() {
        let packet = build_feedback(1, 0, &[Some(250), Some(500), Some(750)], 0);
        let mut cut = packet[..packet.len() - 4].to_vec();
        cut[3] -= 1;
        let mut result = Ok(());
        for_each_transport_feedback(&cut, |feedback| result = feedback.for_each_packet(|_, _| {}));
        assert_eq!(result, Err(Malformed));
    }

    #[test]
    fn writes_the_element() {
        let mut out = [0u8; 3];
        write_element(&mut out, 3, 0x1234);
        assert_eq!(out, [0x31, 0x12, 0x34]);
    }
}
