//! Any sequence of VP8, VP9 or AV1 packets, in order, through a viewer stream whose
//! temporal (or spatial) layer cap changes now and then, and which a probe's
//! padding-only packets go between now and then: the rewrite never panics, the
//! packets it sends are numbered without gaps, each keeps its temporal layer,
//! a NACK for one finds the source packet it came from (or nothing, past
//! the renumberings remembered), and one for padding finds no source packet.
#![no_main]

use std::collections::HashMap;
use std::time::Instant;

use _engine::egress::viewer::{StreamStart, ViewerStream};
use _engine::media::packet::ReceivedPacket;
use _engine::wire::codec::{Av1Payload, Codec, Vp8Descriptor, Vp9Descriptor};
use _engine::wire::rtp::RtpHeader;
use libfuzzer_sys::fuzz_target;

fn temporal_layer(codec: Codec, payload: &[u8]) -> Option<u8> {
    match codec {
        Codec::Vp8 => Vp8Descriptor::parse(payload).map(|descriptor| descriptor.temporal_layer),
        Codec::Av1 => Av1Payload::parse(payload).and_then(|av1| av1.layers).map(|(temporal, _)| temporal),
        _ => Vp9Descriptor::parse(payload).map(|descriptor| descriptor.temporal_layer),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let codec = match flags & 5 {
        0 => Codec::Vp8,
        1 => Codec::Vp9,
        _ => Codec::Av1, // bit 2
    };
    // Bit 1: a stream that starts at keyframes and numbers its packets transport-wide, so it takes padding.
    let padded = flags & 2 != 0;
    let mut stream = ViewerStream::new(0, 0xabcd, 100, 90_000, padded, StreamStart { sequence: 65_500, timestamp: 7 });
    if padded {
        stream.set_transport_cc(Some(3));
    }
    stream.rewrite_pictures(codec);
    let mut padding_sent: Vec<u16> = Vec::new();
    let now = Instant::now();
    let mut source_sequence = u16::from(flags).wrapping_mul(257);
    let mut last_sent: Option<u16> = None;
    let mut sent_from: HashMap<u16, u16> = HashMap::new();
    let mut packet = [0u8; 1600];
    let mut out = [0u8; 1700];
    // Each step: a control byte (0xf0 and above: a padding-only packet of the
    // low four bits' length times 16; else, high bit: a new cap in the low
    // three bits, 7 for none, spatial if bit 3 is set, else temporal; without
    // the high bit a packet of the low six bits' length, bit 6 marking a
    // keyframe start).
    while let [control, tail @ ..] = rest {
        rest = tail;
        if *control >= 0xf0 {
            if let Some(rewritten) = stream.write_padding(usize::from(control & 0x0f) * 16 + 1, &mut out) {
                let sent = RtpHeader::parse(&out[..rewritten.len]).expect("valid RTP");
                assert_eq!(sent.payload_start, sent.payload_end, "padding only");
                if let Some(last) = last_sent {
                    assert_eq!(sent.sequence, last.wrapping_add(1), "no gap");
                }
                last_sent = Some(sent.sequence);
                sent_from.remove(&sent.sequence);
                padding_sent.push(sent.sequence);
            }
            continue;
        }
        if control & 0x80 != 0 {
            let cap = control & 0x07;
            if control & 0x08 != 0 {
                stream.set_spatial_cap((cap != 7).then_some(cap));
            } else {
                stream.set_temporal_cap((cap != 7).then_some(cap.min(3)));
            }
            continue;
        }
        let len = usize::from(control & 0x3f).min(rest.len());
        let (payload, next) = rest.split_at(len);
        rest = next;
        packet[..12].copy_from_slice(&[0x80, 0x80 | 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        packet[2..4].copy_from_slice(&source_sequence.to_be_bytes());
        packet[4..8].copy_from_slice(&(u32::from(source_sequence) * 3000).to_be_bytes());
        packet[12..12 + len].copy_from_slice(payload);
        let packet = &packet[..12 + len];
        let header = RtpHeader::parse(packet).expect("a plain header");
        let received =
            ReceivedPacket { header, keyframe_start: control & 0x40 != 0, epoch: 0, arrival_ns: 0, droppable: false };
        if let Some(rewritten) = stream.rewrite(packet, &received, now, &mut out) {
            let sent = RtpHeader::parse(&out[..rewritten.len]).expect("valid RTP");
            if let Some(last) = last_sent {
                assert_eq!(sent.sequence, last.wrapping_add(1), "no gap");
            }
            last_sent = Some(sent.sequence);
            sent_from.insert(sent.sequence, source_sequence);
            padding_sent.retain(|&padding| padding != sent.sequence);
            let sent_payload = &out[sent.payload_start..sent.payload_end];
            assert_eq!(temporal_layer(codec, sent_payload), temporal_layer(codec, payload));
        }
        source_sequence = source_sequence.wrapping_add(1);
    }
    for (&sent, &source) in &sent_from {
        if let Some((found, _)) = stream.source_of(sent) {
            assert_eq!(found, source, "a NACK for {sent} finds its source packet");
        }
        assert!(stream.write_padding_again(sent, &mut out).is_none(), "{sent} was no padding");
    }
    for &padding in &padding_sent {
        assert_eq!(stream.source_of(padding), None, "a NACK for padding {padding} finds no source packet");
    }
});
