//! What flows from ingest to egress: shared source packets, their pool, the
//! workers' retransmission histories and the keyframe caches.

pub mod packet;
