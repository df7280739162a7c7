//! fanout's data plane: RTP in from the mountpoints' sources, a rewrite and
//! SRTP protection per viewer, batched sends to the viewers.
//!
//! The modules form layers: a module uses modules of its own layer or of
//! lower ones, never of a higher one, and no modules use each other in a
//! cycle. `tests/engine/layers.rs` checks both against this table (a new
//! top-level module needs a row here).
//!
//! | layer | modules | what they hold | may use |
//! |---|---|---|---|
//! | 6 | `python`, `python_bench` | the PyO3 door: conversions from Python, the `Engine` class; the benchmarks' functions (feature `bench`) | 0–5 |
//! | 5 | `engine`, `stats`, `bench` | the engine handle that owns the threads; the counters it reports (Python classes); the machine's limits for `fanout bench` | 0–4 |
//! | 4 | `ingest` | source sockets and the receiver thread, each stream's ingest stage, source RTCP, the publisher link; the WebRTC socket's reader (viewers' RTCP) | 0–3 |
//! | 3 | `egress` | each viewer's rewrite and SRTP, the worker threads, batched sends | 0–2 |
//! | 2 | `media`, `events` | shared source packets, their pool, histories, keyframe caches; `MediaKind`; the engine's event queue and its eventfd | 0–1 |
//! | 1 | `wire` | byte formats and crypto: RTP, RTCP, SRTP, codec payloads | 0 |
//! | 0 | `sys`, `ring` | OS helpers (sockets, eventfd, epoll, affinity, clock); the lock-free ring | std, libc |
//!
//! Ingest sits above egress because the receiver hands packets to the
//! workers' rings (`egress::worker::Delivery`) and counts their overruns.
//! The crate root only declares the modules and the Python module.

#[cfg(feature = "bench")]
pub mod bench;
pub mod egress;
pub mod engine;
pub mod events;
pub mod ingest;
pub mod media;
mod python;
#[cfg(feature = "bench")]
mod python_bench;
pub mod ring;
pub mod stats;
pub mod sys;
pub mod wire;

use pyo3::prelude::*;

#[pymodule]
fn _engine(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<python::Engine>()?;
    module.add_class::<stats::PeerStats>()?;
    module.add_class::<stats::MountpointStats>()?;
    module.add_class::<stats::StreamStats>()?;
    module.add_class::<stats::KeyframeCacheStats>()?;
    module.add_class::<stats::SenderReportStats>()?;
    module.add_class::<stats::WorkerStats>()?;
    module.add_class::<stats::PublisherStats>()?;
    module.add_class::<wire::rtcp::RtcpReport>()?;
    module.add_class::<stats::WebRtcSocketStats>()?;
    module.add_class::<wire::rtcp::ReceptionReport>()?;
    module.add_class::<wire::rtcp::Remb>()?;
    python::add_event_classes(module)?;
    module.add_class::<python::InterleavedRelay>()?;
    #[cfg(feature = "bench")]
    python_bench::register(module)?;
    Ok(())
}
