//! Byte formats and crypto, sans-IO: RTP headers, the RTCP the engine reads
//! and writes, SRTP and SRTCP, and what the codecs' payloads say (keyframes,
//! VP8 descriptors), RTSP interleaved frames.

pub mod codec;
pub mod interleaved;
pub mod rtcp;
pub mod rtp;
pub mod srtp;
pub mod twcc;
