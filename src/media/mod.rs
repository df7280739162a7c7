//! What flows from ingest to egress: the shared source packets, their pool,
//! the workers' retransmission histories and the keyframe caches ([`packet`]),
//! and the kind of media a source stream carries.

pub mod packet;

/// What a source stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
    Data,
}

impl MediaKind {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "audio" => Some(Self::Audio),
            "video" => Some(Self::Video),
            "data" => Some(Self::Data),
            _ => None,
        }
    }
}
