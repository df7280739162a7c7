//! fanout's data plane: RTP in from the mountpoints' sources, a rewrite and
//! SRTP protection per viewer, batched sends to the viewers.

pub mod batch;
#[cfg(feature = "bench")]
pub mod bench;
pub mod codec;
pub mod engine;
pub mod ingest;
pub mod packet;
mod python;
#[cfg(feature = "bench")]
mod python_bench;
pub mod receiver;
pub mod ring;
pub mod rtcp;
pub mod rtp;
pub mod source_rtcp;
pub mod srtp;
pub mod viewer;
pub mod worker;

use pyo3::prelude::*;

#[pymodule]
fn _engine(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<python::Engine>()?;
    #[cfg(feature = "bench")]
    python_bench::register(module)?;
    Ok(())
}
