//! fanout's data plane: RTP in from the mountpoints' sources, a rewrite and
//! SRTP protection per viewer, batched sends to the viewers.

pub mod bench;
pub mod egress;
pub mod engine;
pub mod ingest;
pub mod media;
mod python;
pub mod ring;
pub mod sys;
pub mod wire;

use pyo3::prelude::*;

#[pymodule]
fn _engine(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<python::Engine>()?;
    module.add_function(wrap_pyfunction!(python::bench_protect, module)?)?;
    module.add_function(wrap_pyfunction!(python::bench_send, module)?)?;
    Ok(())
}
