//! From shared packets to viewers: each viewer's rewrite and SRTP
//! ([`viewer`]), the worker threads that own the viewers ([`worker`]) and
//! their batched sends ([`batch`]); a viewer on ICE-TCP gets its packets
//! framed on its connection instead ([`tcp`]). Each viewer's bandwidth
//! estimate ([`congestion`]) and the probes of its link ([`probe`]).

pub mod batch;
pub mod congestion;
pub mod probe;
pub mod tcp;
pub mod viewer;
pub mod worker;
