//! Any sequence of datagrams through a source stream's ingest (SRTP, SSRC
//! lock, H.264 parameter sets, skew compensation) never panics, and every
//! packet it forwards or adds is valid RTP.
#![no_main]

use _engine::ingest::{Ingest, IngestOptions, Verdict};
use _engine::media::MediaKind;
use _engine::wire::codec::Codec;
use _engine::wire::rtp::RtpHeader;
use _engine::wire::srtp::{Profile, SrtpSession};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 30] = [3; 30];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let srtp = flags & 1 != 0;
    let options = IngestOptions {
        srtp: srtp.then(|| (Profile::AesCm128HmacSha1_32, KEY.to_vec())),
        collision_ms: u32::from(flags >> 4) * 100,
        payload_types: if flags & 2 != 0 { vec![96, 97] } else { vec![] },
        h264_parameter_sets: if flags & 2 != 0 { vec![vec![0x67, 0x42], vec![0x68, 0xce]] } else { vec![] },
        skew_compensation: flags & 4 != 0,
    };
    let kind = if flags & 8 != 0 { MediaKind::Audio } else { MediaKind::Video };
    let mut ingest = Ingest::new(&options, kind, 90_000).unwrap();
    let sender = SrtpSession::new(Profile::AesCm128HmacSha1_32, &KEY).unwrap();
    let mut now_ns = 1u64;
    let mut buf = [0u8; 1600];
    let mut out = [0u8; 1600];
    // Each datagram: a length byte, a time step byte, then its bytes.
    while let [len, step, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len()).min(1500);
        let (datagram, next) = tail.split_at(len);
        rest = next;
        now_ns += u64::from(*step) * 5_000_000;
        buf[..len].copy_from_slice(datagram);
        let mut len = len;
        if srtp {
            // Half the datagrams as a real sender would protect them, so that decryption is reached.
            if step & 1 == 0 {
                if let Ok(protected) = sender.protect_rtp(&mut buf, len, 0) {
                    len = protected;
                }
            }
            let Ok(plain) = ingest.decrypt(&mut buf, len) else { continue };
            len = plain;
        }
        let Some(mut header) = RtpHeader::parse(&buf[..len]) else { continue };
        let payload = &buf[header.payload_start..header.payload_end];
        let keyframe_start = Codec::H264.is_keyframe_start(payload);
        let verdict = ingest.admit(&header, payload, keyframe_start, step & 2 != 0, now_ns);
        if let Verdict::Forward { parameter_sets_first } = verdict {
            ingest.renumber(&mut buf[..len], &mut header);
            assert_eq!(
                RtpHeader::parse(&buf[..len]).map(|h| (h.sequence, h.timestamp)),
                Some((header.sequence, header.timestamp))
            );
            if parameter_sets_first {
                let added = ingest.write_parameter_sets(&header, &mut out);
                let added = RtpHeader::parse(&out[..added]).expect("valid RTP");
                assert_eq!(added.sequence.wrapping_add(1), header.sequence);
            }
        }
    }
});
