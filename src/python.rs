//! The Python door: `fanout._engine.Engine`, typed in `python/fanout/_engine.pyi`.

use pyo3::exceptions::{PyKeyError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::engine::{self, EngineError, MountpointStats, SourceConfig, ViewerStats, ViewerStreamConfig};

impl From<EngineError> for PyErr {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Closed => PyRuntimeError::new_err(error.to_string()),
            EngineError::UnknownMountpoint(id) | EngineError::UnknownViewer(id) => PyKeyError::new_err(id),
            EngineError::Invalid(message) => PyValueError::new_err(message),
            EngineError::Os(error) => match error.raw_os_error() {
                Some(errno) => PyOSError::new_err((errno, error.to_string())),
                None => PyOSError::new_err(error.to_string()),
            },
        }
    }
}

/// The SourceStream TypedDict.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct SourceStream {
    index: i64,
    kind: String,
    codec: String,
    clock_rate: i64,
    host: String,
    port: i64,
}

/// The ViewerStream TypedDict.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct ViewerStream {
    index: i64,
    ssrc: i64,
    payload_type: i64,
}

/// The data plane. One per server process.
#[pyclass(frozen, module = "fanout._engine")]
pub struct Engine {
    inner: engine::Engine,
}

#[pymethods]
impl Engine {
    #[new]
    fn new(webrtc_socket_fd: i32) -> PyResult<Self> {
        Ok(Self { inner: engine::Engine::new(webrtc_socket_fd)? })
    }

    fn add_mountpoint(&self, mountpoint_id: u64, streams: Vec<SourceStream>) -> PyResult<Vec<u16>> {
        let streams: Vec<SourceConfig> = streams
            .into_iter()
            .map(|s| SourceConfig {
                index: s.index,
                kind: s.kind,
                codec: s.codec,
                clock_rate: s.clock_rate,
                host: s.host,
                port: s.port,
            })
            .collect();
        Ok(self.inner.add_mountpoint(mountpoint_id, &streams)?)
    }

    fn remove_mountpoint(&self, py: Python<'_>, mountpoint_id: u64) -> PyResult<()> {
        Ok(py.detach(|| self.inner.remove_mountpoint(mountpoint_id))?)
    }

    #[allow(clippy::too_many_arguments)]
    fn add_viewer(
        &self,
        viewer_id: u64,
        mountpoint_id: u64,
        address: (String, i64),
        srtp_profile: &str,
        local_master_key: &[u8],
        remote_master_key: &[u8],
        streams: Vec<ViewerStream>,
    ) -> PyResult<()> {
        let streams: Vec<ViewerStreamConfig> = streams
            .into_iter()
            .map(|s| ViewerStreamConfig { index: s.index, ssrc: s.ssrc, payload_type: s.payload_type })
            .collect();
        Ok(self.inner.add_viewer(
            viewer_id,
            mountpoint_id,
            (&address.0, address.1),
            srtp_profile,
            local_master_key,
            remote_master_key,
            &streams,
        )?)
    }

    fn remove_viewer(&self, viewer_id: u64) -> PyResult<()> {
        Ok(self.inner.remove_viewer(viewer_id)?)
    }

    fn set_viewer_address(&self, viewer_id: u64, address: (String, i64)) -> PyResult<()> {
        Ok(self.inner.set_viewer_address(viewer_id, (&address.0, address.1))?)
    }

    fn set_viewer_paused(&self, viewer_id: u64, paused: bool) -> PyResult<()> {
        Ok(self.inner.set_viewer_paused(viewer_id, paused)?)
    }

    fn unprotect_rtcp<'py>(&self, py: Python<'py>, viewer_id: u64, packet: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let plain = self.inner.unprotect_rtcp(viewer_id, packet)?;
        Ok(PyBytes::new(py, &plain))
    }

    fn send_rtcp(&self, viewer_id: u64, packet: &[u8]) -> PyResult<()> {
        Ok(self.inner.send_rtcp(viewer_id, packet)?)
    }

    fn viewer_stats<'py>(&self, py: Python<'py>, viewer_id: u64) -> PyResult<Bound<'py, PyDict>> {
        let ViewerStats { packets, bytes, rtcp_packets, dropped, send_errors, paused } =
            self.inner.viewer_stats(viewer_id)?;
        let stats = PyDict::new(py);
        stats.set_item("packets", packets)?;
        stats.set_item("bytes", bytes)?;
        stats.set_item("rtcp_packets", rtcp_packets)?;
        stats.set_item("dropped", dropped)?;
        stats.set_item("send_errors", send_errors)?;
        stats.set_item("paused", paused)?;
        Ok(stats)
    }

    fn mountpoint_stats<'py>(&self, py: Python<'py>, mountpoint_id: u64) -> PyResult<Bound<'py, PyDict>> {
        let MountpointStats { packets, bytes, malformed, viewers, streams } =
            self.inner.mountpoint_stats(mountpoint_id)?;
        let stream_list = PyList::empty(py);
        for stream in streams {
            let entry = PyDict::new(py);
            entry.set_item("index", stream.index)?;
            entry.set_item("port", stream.port)?;
            entry.set_item("packets", stream.packets)?;
            entry.set_item("bytes", stream.bytes)?;
            entry.set_item("malformed", stream.malformed)?;
            entry.set_item("last_packet_age_ms", stream.last_packet_age_ms)?;
            stream_list.append(entry)?;
        }
        let stats = PyDict::new(py);
        stats.set_item("packets", packets)?;
        stats.set_item("bytes", bytes)?;
        stats.set_item("malformed", malformed)?;
        stats.set_item("viewers", viewers)?;
        stats.set_item("streams", stream_list)?;
        Ok(stats)
    }

    fn close(&self, py: Python<'_>) {
        py.detach(|| self.inner.close());
    }
}
