//! The Python door: `fanout._engine.Engine`, typed in `python/fanout/_engine.pyi`.

use pyo3::exceptions::{PyKeyError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use std::os::fd::RawFd;

use crate::egress::batch::SendMode;
use crate::engine::{
    self, EngineError, EngineOptions, MountpointStats, SourceConfig, ViewerStats, ViewerStreamConfig, WorkerStats,
};
use crate::events::EngineEvent;
use crate::ingest::IngestOptions;
use crate::wire::srtp::Profile;

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
    #[pyo3(default)]
    rtcp_port: Option<i64>,
    #[pyo3(default)]
    interface: Option<String>,
    #[pyo3(default)]
    srtp_profile: Option<String>,
    #[pyo3(default)]
    srtp_master_key: Option<Vec<u8>>,
    #[pyo3(default)]
    collision_ms: i64,
    #[pyo3(default)]
    h264_parameter_sets: Vec<Vec<u8>>,
    #[pyo3(default)]
    skew_compensation: bool,
    #[pyo3(default)]
    silence_ms: Option<i64>,
}

impl SourceStream {
    fn ingest_options(&self) -> PyResult<IngestOptions> {
        let srtp = match (&self.srtp_profile, &self.srtp_master_key) {
            (None, None) => None,
            (Some(name), Some(key)) => {
                let profile = Profile::from_name(name)
                    .ok_or_else(|| PyValueError::new_err(format!("unknown SRTP profile {name:?}")))?;
                Some((profile, key.clone()))
            }
            _ => return Err(PyValueError::new_err("srtp_profile and srtp_master_key go together")),
        };
        let collision_ms = u32::try_from(self.collision_ms)
            .map_err(|_| PyValueError::new_err(format!("collision_ms out of range: {}", self.collision_ms)))?;
        Ok(IngestOptions {
            srtp,
            collision_ms,
            h264_parameter_sets: self.h264_parameter_sets.clone(),
            skew_compensation: self.skew_compensation,
        })
    }
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
    #[pyo3(signature = (webrtc_socket_fd, *, cores=None, pin=true, send_mode="gso"))]
    fn new(webrtc_socket_fd: i32, cores: Option<Vec<usize>>, pin: bool, send_mode: &str) -> PyResult<Self> {
        let send_mode = parse_send_mode(send_mode)?;
        Ok(Self { inner: engine::Engine::new(webrtc_socket_fd, EngineOptions { cores, pin, send_mode })? })
    }

    fn add_mountpoint(&self, mountpoint_id: u64, streams: Vec<SourceStream>) -> PyResult<Vec<u16>> {
        let streams = streams
            .into_iter()
            .map(|s| {
                Ok(SourceConfig {
                    ingest: s.ingest_options()?,
                    index: s.index,
                    kind: s.kind,
                    codec: s.codec,
                    clock_rate: s.clock_rate,
                    host: s.host,
                    port: s.port,
                    rtcp_port: s.rtcp_port,
                    interface: s.interface,
                    silence_ms: s.silence_ms,
                })
            })
            .collect::<PyResult<Vec<SourceConfig>>>()?;
        Ok(self.inner.add_mountpoint(mountpoint_id, &streams)?)
    }

    fn remove_mountpoint(&self, py: Python<'_>, mountpoint_id: u64) -> PyResult<()> {
        Ok(py.detach(|| self.inner.remove_mountpoint(mountpoint_id))?)
    }

    #[allow(clippy::too_many_arguments)]
    fn add_viewer(
        &self,
        py: Python<'_>,
        viewer_id: u64,
        mountpoint_id: u64,
        address: (String, i64),
        srtp_profile: &str,
        local_master_key: &[u8],
        remote_master_key: &[u8],
        streams: Vec<ViewerStream>,
    ) -> PyResult<()> {
        let streams = viewer_stream_configs(streams);
        Ok(py.detach(|| {
            self.inner.add_viewer(
                viewer_id,
                mountpoint_id,
                (&address.0, address.1),
                srtp_profile,
                local_master_key,
                remote_master_key,
                &streams,
            )
        })?)
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

    fn set_viewer_stream_paused(&self, viewer_id: u64, index: i64, paused: bool) -> PyResult<()> {
        Ok(self.inner.set_viewer_stream_paused(viewer_id, index, paused)?)
    }

    #[pyo3(signature = (viewer_id, index, extension_id, min_ms, max_ms))]
    fn set_viewer_playout_delay(
        &self,
        viewer_id: u64,
        index: i64,
        extension_id: i64,
        min_ms: Option<i64>,
        max_ms: Option<i64>,
    ) -> PyResult<()> {
        let delay_ms = match (min_ms, max_ms) {
            (None, None) => None,
            (Some(min_ms), Some(max_ms)) => Some((min_ms, max_ms)),
            _ => return Err(PyValueError::new_err("min_ms and max_ms are both None or both set")),
        };
        Ok(self.inner.set_viewer_playout_delay(viewer_id, index, extension_id, delay_ms)?)
    }

    fn set_viewer_stream_source(&self, viewer_id: u64, index: i64, source_index: i64) -> PyResult<()> {
        Ok(self.inner.set_viewer_stream_source(viewer_id, index, source_index)?)
    }

    #[pyo3(signature = (viewer_id, index, layer))]
    fn set_viewer_stream_temporal_layer(&self, viewer_id: u64, index: i64, layer: Option<i64>) -> PyResult<()> {
        Ok(self.inner.set_viewer_stream_temporal_layer(viewer_id, index, layer)?)
    }

    fn switch_viewer(
        &self,
        py: Python<'_>,
        viewer_id: u64,
        mountpoint_id: u64,
        streams: Vec<ViewerStream>,
    ) -> PyResult<()> {
        let streams = viewer_stream_configs(streams);
        Ok(py.detach(|| self.inner.switch_viewer(viewer_id, mountpoint_id, &streams))?)
    }

    fn unprotect_rtcp<'py>(&self, py: Python<'py>, viewer_id: u64, packet: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let plain = self.inner.unprotect_rtcp(viewer_id, packet)?;
        Ok(PyBytes::new(py, &plain))
    }

    fn send_rtcp(&self, viewer_id: u64, packet: &[u8]) -> PyResult<()> {
        Ok(self.inner.send_rtcp(viewer_id, packet)?)
    }

    fn send_source_remb(&self, mountpoint_id: u64, index: i64, bitrate: u64) -> PyResult<bool> {
        Ok(self.inner.send_source_remb(mountpoint_id, index, bitrate)?)
    }

    fn viewer_stats<'py>(&self, py: Python<'py>, viewer_id: u64) -> PyResult<Bound<'py, PyDict>> {
        let ViewerStats {
            packets,
            bytes,
            rtcp_packets,
            retransmissions,
            nacked,
            gso_refused,
            dropped,
            send_errors,
            paused,
            worker,
            source_switches,
        } = self.inner.viewer_stats(viewer_id)?;
        let stats = PyDict::new(py);
        stats.set_item("packets", packets)?;
        stats.set_item("bytes", bytes)?;
        stats.set_item("rtcp_packets", rtcp_packets)?;
        stats.set_item("retransmissions", retransmissions)?;
        stats.set_item("nacked", nacked)?;
        stats.set_item("gso_refused", gso_refused)?;
        stats.set_item("dropped", dropped)?;
        stats.set_item("send_errors", send_errors)?;
        stats.set_item("paused", paused)?;
        stats.set_item("worker", worker)?;
        stats.set_item("source_switches", source_switches)?;
        Ok(stats)
    }

    fn mountpoint_stats<'py>(&self, py: Python<'py>, mountpoint_id: u64) -> PyResult<Bound<'py, PyDict>> {
        let MountpointStats { packets, bytes, malformed, viewers, streams, sent } =
            self.inner.mountpoint_stats(mountpoint_id)?;
        let stream_list = PyList::empty(py);
        for stream in streams {
            let entry = PyDict::new(py);
            entry.set_item("index", stream.index)?;
            entry.set_item("port", stream.port)?;
            entry.set_item("packets", stream.packets)?;
            entry.set_item("bytes", stream.bytes)?;
            entry.set_item("malformed", stream.malformed)?;
            entry.set_item("overruns", stream.overruns)?;
            entry.set_item("last_packet_age_ms", stream.last_packet_age_ms)?;
            entry.set_item("rtcp_port", stream.rtcp_port)?;
            entry.set_item("rtcp_packets", stream.rtcp_packets)?;
            entry.set_item("plis_forwarded", stream.plis_forwarded)?;
            entry.set_item("keyframe_requests", stream.keyframe_requests)?;
            entry.set_item("rembs_sent", stream.rembs_sent)?;
            entry.set_item("undecryptable", stream.ingest.undecryptable)?;
            entry.set_item("collisions", stream.ingest.collisions)?;
            entry.set_item("parameter_sets_inserted", stream.ingest.parameter_sets_inserted)?;
            entry.set_item("skew_dropped", stream.ingest.skew_dropped)?;
            entry.set_item("skew_ms", stream.ingest.skew_ms)?;
            let sender_report = match stream.sender_report {
                Some((ntp_time, rtp_timestamp, age_ms)) => {
                    let report = PyDict::new(py);
                    report.set_item("ntp_time", ntp_time)?;
                    report.set_item("rtp_timestamp", rtp_timestamp)?;
                    report.set_item("age_ms", age_ms)?;
                    Some(report)
                }
                None => None,
            };
            entry.set_item("sender_report", sender_report)?;
            let cache = match stream.cache {
                Some(cache) => {
                    let entry = PyDict::new(py);
                    entry.set_item("keyframe", cache.keyframe)?;
                    entry.set_item("packets", cache.packets)?;
                    entry.set_item("bytes", cache.bytes)?;
                    entry.set_item("overflows", cache.overflows)?;
                    Some(entry)
                }
                None => None,
            };
            entry.set_item("keyframe_cache", cache)?;
            stream_list.append(entry)?;
        }
        let stats = PyDict::new(py);
        stats.set_item("packets", packets)?;
        stats.set_item("bytes", bytes)?;
        stats.set_item("malformed", malformed)?;
        stats.set_item("viewers", viewers)?;
        stats.set_item("streams", stream_list)?;
        stats.set_item("sent_packets", sent.packets)?;
        stats.set_item("sent_bytes", sent.bytes)?;
        stats.set_item("retransmissions", sent.retransmissions)?;
        stats.set_item("dropped", sent.dropped)?;
        stats.set_item("send_errors", sent.send_errors)?;
        Ok(stats)
    }

    fn worker_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for worker in self.inner.worker_stats()? {
            let WorkerStats { index, core, viewers, busy_ns, passes, source_packets, messages, flushes, overruns } =
                worker;
            let entry = PyDict::new(py);
            entry.set_item("index", index)?;
            entry.set_item("core", core)?;
            entry.set_item("viewers", viewers)?;
            entry.set_item("busy_ns", busy_ns)?;
            entry.set_item("passes", passes)?;
            entry.set_item("source_packets", source_packets)?;
            entry.set_item("messages", messages)?;
            entry.set_item("flushes", flushes)?;
            entry.set_item("overruns", overruns)?;
            list.append(entry)?;
        }
        Ok(list)
    }

    fn close(&self, py: Python<'_>) {
        py.detach(|| self.inner.close());
    }

    // --- events: the engine tells the control plane (see crate::events) ---

    fn event_fd(&self) -> RawFd {
        self.inner.event_fd()
    }

    fn drain_events(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        self.inner.drain_events().into_iter().map(|event| event_object(py, event)).collect()
    }

    fn events_dropped(&self) -> u64 {
        self.inner.events_dropped()
    }

    fn set_source_silence(&self, mountpoint_id: u64, index: i64, silence_ms: i64) -> PyResult<()> {
        Ok(self.inner.set_source_silence(mountpoint_id, index, silence_ms)?)
    }
}

// --- events: one frozen class per kind of EngineEvent ---

/// A viewer's stream moved to another source stream (`set_viewer_stream_source`) at its keyframe.
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Debug, PartialEq, Eq)]
pub struct SubstreamMoved {
    peer_id: u64,
    index: u32,
    source_index: u32,
}

/// A source stream sent nothing for its silence threshold.
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Debug, PartialEq, Eq)]
pub struct SourceSilent {
    mountpoint_id: u64,
    index: u32,
    silent_ms: u64,
}

/// A source stream sends (again, or for the first time).
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Debug, PartialEq, Eq)]
pub struct SourceResumed {
    mountpoint_id: u64,
    index: u32,
}

/// A viewer's packets were dropped: the WebRTC socket's send buffer was full.
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Debug, PartialEq, Eq)]
pub struct SendQueueOverflow {
    peer_id: u64,
    dropped: u64,
}

/// A viewer's video stream started from the source stream's keyframe cache.
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Debug, PartialEq, Eq)]
pub struct KeyframeFromCache {
    peer_id: u64,
    index: u32,
    packets: usize,
}

macro_rules! event_methods {
    ($($class:ident($($field:ident: $type:ty),*)),*) => {$(
        #[pymethods]
        impl $class {
            /// Made by the engine; made in Python for tests of what handles them.
            #[new]
            fn new($($field: $type),*) -> Self {
                Self { $($field),* }
            }

            fn __repr__(&self) -> String {
                format!("{self:?}").replacen(" { ", "(", 1).replacen(" }", ")", 1).replace(": ", "=")
            }
        }
    )*};
}
event_methods!(
    SubstreamMoved(peer_id: u64, index: u32, source_index: u32),
    SourceSilent(mountpoint_id: u64, index: u32, silent_ms: u64),
    SourceResumed(mountpoint_id: u64, index: u32),
    SendQueueOverflow(peer_id: u64, dropped: u64),
    KeyframeFromCache(peer_id: u64, index: u32, packets: usize)
);

fn event_object(py: Python<'_>, event: EngineEvent) -> PyResult<Py<PyAny>> {
    Ok(match event {
        EngineEvent::SubstreamMoved { peer_id, index, source_index } => {
            Py::new(py, SubstreamMoved { peer_id, index, source_index })?.into_any()
        }
        EngineEvent::SourceSilent { mountpoint_id, index, silent_ms } => {
            Py::new(py, SourceSilent { mountpoint_id, index, silent_ms })?.into_any()
        }
        EngineEvent::SourceResumed { mountpoint_id, index } => {
            Py::new(py, SourceResumed { mountpoint_id, index })?.into_any()
        }
        EngineEvent::SendQueueOverflow { peer_id, dropped } => {
            Py::new(py, SendQueueOverflow { peer_id, dropped })?.into_any()
        }
        EngineEvent::KeyframeFromCache { peer_id, index, packets } => {
            Py::new(py, KeyframeFromCache { peer_id, index, packets })?.into_any()
        }
    })
}

/// Adds the event classes to the module.
pub fn add_event_classes(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<SubstreamMoved>()?;
    module.add_class::<SourceSilent>()?;
    module.add_class::<SourceResumed>()?;
    module.add_class::<SendQueueOverflow>()?;
    module.add_class::<KeyframeFromCache>()?;
    Ok(())
}

// --- end of events ---

fn viewer_stream_configs(streams: Vec<ViewerStream>) -> Vec<ViewerStreamConfig> {
    streams
        .into_iter()
        .map(|s| ViewerStreamConfig { index: s.index, ssrc: s.ssrc, payload_type: s.payload_type })
        .collect()
}

fn parse_send_mode(name: &str) -> PyResult<SendMode> {
    SendMode::from_name(name).ok_or_else(|| {
        PyValueError::new_err(format!("send_mode must be \"gso\", \"sendmmsg\" or \"sendto\", got {name:?}"))
    })
}
