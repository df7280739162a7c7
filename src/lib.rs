//! fanout's data plane: RTP in from the mountpoints' sources, a rewrite and
//! SRTP protection per viewer, batched sends to the viewers.

pub mod batch;
pub mod bench;
pub mod codec;
pub mod engine;
pub mod ingest;
pub mod packet;
mod python;
pub mod receiver;
pub mod ring;
pub mod rtcp;
pub mod rtp;
pub mod source_rtcp;
pub mod srtp;
pub mod stats;
pub mod viewer;
pub mod worker;

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
    module.add_class::<stats::RtcpReport>()?;
    module.add_class::<rtcp::ReceptionReport>()?;
    module.add_class::<rtcp::Remb>()?;
    module.add_function(wrap_pyfunction!(python::bench_protect, module)?)?;
    module.add_function(wrap_pyfunction!(python::bench_send, module)?)?;
    Ok(())
}
