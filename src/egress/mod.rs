//! From shared packets to viewers: each viewer's rewrite and SRTP
//! ([`viewer`]), the worker threads that own the viewers ([`worker`]) and
//! their batched sends ([`batch`]).

pub mod batch;
pub mod congestion;
pub mod viewer;
pub mod worker;
