//! The Python door: `fanout._engine.Engine`, typed in `python/fanout/_engine.pyi`.

use pyo3::exceptions::{PyKeyError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::RawFd;
use std::time::Duration;

use crate::egress::batch::SendMode;
use crate::engine::{
    self, EngineError, EngineOptions, PublisherConfig, PublisherRouteConfig, SourceConfig, ViewerStreamConfig,
};
use crate::events::EngineEvent;
use crate::ingest::IngestOptions;
use crate::media::MediaKind;
use crate::stats::{MountpointStats, PeerStats, PublisherStats, WebRtcSocketStats, WorkerStats};
use crate::wire::codec::Codec;
use crate::wire::rtcp::RtcpReport;
use crate::wire::srtp::Profile;

impl From<EngineError> for PyErr {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Closed => PyRuntimeError::new_err(error.to_string()),
            EngineError::UnknownMountpoint(id) | EngineError::UnknownPeer(id) => PyKeyError::new_err(id),
            EngineError::Invalid(message) => PyValueError::new_err(message),
            EngineError::Os(error) => match error.raw_os_error() {
                Some(errno) => PyOSError::new_err((errno, error.to_string())),
                None => PyOSError::new_err(error.to_string()),
            },
        }
    }
}

/// The range of an integer type, for error messages.
trait Bounded: TryFrom<i64> {
    const LOW: i128;
    const HIGH: i128;
}

macro_rules! bounded {
    ($($t:ty),*) => {$(impl Bounded for $t {
        const LOW: i128 = <$t>::MIN as i128;
        const HIGH: i128 = <$t>::MAX as i128;
    })*};
}
bounded!(u8, u16, u32);

/// A Python int as a Rust integer; ValueError (not OverflowError) naming `what` when it does not fit.
fn int<T: Bounded>(value: i64, what: &str) -> PyResult<T> {
    T::try_from(value)
        .map_err(|_| PyValueError::new_err(format!("{what} must be in {}..={}, got {value}", T::LOW, T::HIGH)))
}

/// A silence threshold in 1..=MAX_SILENCE_MS milliseconds.
fn silence_ms(value: i64) -> PyResult<u32> {
    match u32::try_from(value) {
        Ok(ms) if (1..=engine::MAX_SILENCE_MS).contains(&ms) => Ok(ms),
        _ => Err(PyValueError::new_err(format!("silence_ms must be in 1..={}, got {value}", engine::MAX_SILENCE_MS))),
    }
}

fn parse_kind(name: &str) -> PyResult<MediaKind> {
    MediaKind::from_name(name).ok_or_else(|| PyValueError::new_err(format!("unknown media kind {name:?}")))
}

fn parse_profile(name: &str) -> PyResult<Profile> {
    Profile::from_name(name).ok_or_else(|| PyValueError::new_err(format!("unknown SRTP profile {name:?}")))
}

/// A profile DTLS-SRTP negotiates (the 32-bit tag suite is for sources only).
fn parse_peer_profile(name: &str) -> PyResult<Profile> {
    parse_profile(name).and_then(|profile| match profile {
        Profile::AesCm128HmacSha1_32 => Err(PyValueError::new_err(format!("unknown SRTP profile {name:?}"))),
        profile => Ok(profile),
    })
}

/// A peer's (host, port), resolved to an address the engine's WebRTC socket can send to.
fn parse_address(engine: &engine::Engine, (host, port): (String, i64)) -> PyResult<SocketAddr> {
    let port: u16 = int(port, "port")?;
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|_| PyValueError::new_err(format!("cannot resolve viewer host {host:?}")))?
            .collect(),
    };
    match addresses.iter().find(|&&address| engine.can_send_to(address)) {
        Some(&address) => Ok(address),
        None if addresses.len() == 1 => Ok(addresses[0]), // the engine says why it cannot
        None => Err(PyValueError::new_err(format!("the WebRTC socket cannot send to {host}"))),
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
    #[pyo3(default)]
    host: Option<String>,
    #[pyo3(default)]
    port: Option<i64>,
    #[pyo3(default)]
    rtcp_port: Option<i64>,
    #[pyo3(default)]
    shares_rtcp_port_of: Option<i64>,
    #[pyo3(default)]
    interface: Option<String>,
    #[pyo3(default)]
    srtp_profile: Option<String>,
    #[pyo3(default)]
    srtp_master_key: Option<Vec<u8>>,
    #[pyo3(default)]
    collision_ms: i64,
    #[pyo3(default)]
    payload_types: Vec<i64>,
    #[pyo3(default)]
    h264_parameter_sets: Vec<Vec<u8>>,
    #[pyo3(default)]
    skew_compensation: bool,
    #[pyo3(default)]
    silence_ms: Option<i64>,
}

impl SourceStream {
    fn config(self) -> PyResult<SourceConfig> {
        let srtp = match (&self.srtp_profile, self.srtp_master_key) {
            (None, None) => None,
            (Some(name), Some(key)) => Some((parse_profile(name)?, key)),
            _ => return Err(PyValueError::new_err("srtp_profile and srtp_master_key go together")),
        };
        let host = match (self.host, self.port) {
            (Some(host), _) => host,
            (None, None) => String::new(),
            (None, Some(_)) => return Err(PyValueError::new_err("a stream with a port needs a host to bind")),
        };
        let collision_ms = u32::try_from(self.collision_ms)
            .map_err(|_| PyValueError::new_err(format!("collision_ms out of range: {}", self.collision_ms)))?;
        let payload_types = self
            .payload_types
            .iter()
            .map(|&payload_type| {
                u8::try_from(payload_type).ok().filter(|&pt| pt <= 127).ok_or_else(|| {
                    PyValueError::new_err(format!("payload type must be in 0..=127, got {payload_type}"))
                })
            })
            .collect::<PyResult<Vec<u8>>>()?;
        Ok(SourceConfig {
            index: int(self.index, "stream index")?,
            kind: parse_kind(&self.kind)?,
            codec: Codec::from_name(&self.codec.to_ascii_lowercase()),
            clock_rate: int(self.clock_rate, "clock rate")?,
            host,
            port: self.port.map(|port| int(port, "port")).transpose()?,
            rtcp_port: self.rtcp_port.map(|port| int(port, "rtcp_port")).transpose()?,
            shares_rtcp_port_of: self.shares_rtcp_port_of.map(|index| int(index, "shares_rtcp_port_of")).transpose()?,
            interface: self.interface,
            silence_ms: self.silence_ms.map(silence_ms).transpose()?,
            ingest: IngestOptions {
                srtp,
                collision_ms,
                payload_types,
                h264_parameter_sets: self.h264_parameter_sets,
                skew_compensation: self.skew_compensation,
            },
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
    #[pyo3(default)]
    temporal_layer: Option<i64>,
    #[pyo3(default)]
    spatial_layer: Option<i64>,
}

fn viewer_stream_configs(streams: Vec<ViewerStream>) -> PyResult<Vec<ViewerStreamConfig>> {
    streams
        .into_iter()
        .map(|s| {
            Ok(ViewerStreamConfig {
                index: int(s.index, "stream index")?,
                ssrc: int(s.ssrc, "ssrc")?,
                payload_type: int(s.payload_type, "payload type")?,
                temporal_layer: s.temporal_layer.map(|layer| int(layer, "temporal layer")).transpose()?,
                spatial_layer: s.spatial_layer.map(|layer| int(layer, "spatial layer")).transpose()?,
            })
        })
        .collect()
}

/// The PublisherRoute TypedDict.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct PublisherRoute {
    index: i64,
    #[pyo3(default)]
    ssrc: Option<i64>,
    #[pyo3(default)]
    mid: Option<String>,
    #[pyo3(default)]
    rid: Option<String>,
    #[pyo3(default)]
    payload_types: Vec<i64>,
}

impl PublisherRoute {
    fn config(self) -> PyResult<PublisherRouteConfig> {
        Ok(PublisherRouteConfig {
            index: int(self.index, "stream index")?,
            ssrc: self.ssrc.map(|ssrc| int(ssrc, "ssrc")).transpose()?,
            mid: self.mid,
            rid: self.rid,
            payload_types: self.payload_types.into_iter().map(|pt| int(pt, "payload type")).collect::<PyResult<_>>()?,
        })
    }
}

/// The data plane. One per server process.
#[pyclass(frozen, module = "fanout._engine")]
pub struct Engine {
    inner: engine::Engine,
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (webrtc_socket_fd, *, cores=None, pin=true, send_mode="gso", max_send_delay_ms=None, data_plane_nice=None))]
    fn new(
        webrtc_socket_fd: i32,
        cores: Option<Vec<usize>>,
        pin: bool,
        send_mode: &str,
        max_send_delay_ms: Option<u64>,
        data_plane_nice: Option<i32>,
    ) -> PyResult<Self> {
        let send_mode = parse_send_mode(send_mode)?;
        let max_send_delay = match max_send_delay_ms {
            None => engine::DEFAULT_MAX_SEND_DELAY,
            Some(ms @ 1..=10_000) => Duration::from_millis(ms),
            Some(ms) => {
                return Err(PyValueError::new_err(format!("max_send_delay_ms must be between 1 and 10000, got {ms}")))
            }
        };
        let options = EngineOptions { cores, pin, send_mode, max_send_delay, data_plane_nice };
        Ok(Self { inner: engine::Engine::new(webrtc_socket_fd, options)? })
    }

    fn add_mountpoint(&self, mountpoint_id: u64, streams: Vec<SourceStream>) -> PyResult<Vec<u16>> {
        let streams = streams.into_iter().map(SourceStream::config).collect::<PyResult<Vec<SourceConfig>>>()?;
        Ok(self.inner.add_mountpoint(mountpoint_id, &streams)?)
    }

    fn remove_mountpoint(&self, py: Python<'_>, mountpoint_id: u64) -> PyResult<()> {
        Ok(py.detach(|| self.inner.remove_mountpoint(mountpoint_id))?)
    }

    #[pyo3(signature = (peer_id, address, srtp_profile, local_master_key, remote_master_key, *, tcp_socket_fd=None, tcp_stall_ms=5000))]
    #[allow(clippy::too_many_arguments)]
    fn add_peer(
        &self,
        peer_id: u64,
        address: (String, i64),
        srtp_profile: &str,
        local_master_key: &[u8],
        remote_master_key: &[u8],
        tcp_socket_fd: Option<RawFd>,
        tcp_stall_ms: i64,
    ) -> PyResult<()> {
        let profile = parse_peer_profile(srtp_profile)?;
        let address = parse_address(&self.inner, address)?;
        let stall: u32 = int(tcp_stall_ms, "tcp_stall_ms")?;
        let stall = std::time::Duration::from_millis(u64::from(stall));
        Ok(self.inner.add_peer(peer_id, address, profile, local_master_key, remote_master_key, tcp_socket_fd, stall)?)
    }

    fn remove_peer(&self, peer_id: u64) -> PyResult<()> {
        Ok(self.inner.remove_peer(peer_id)?)
    }

    #[pyo3(signature = (peer_id, address, *, tcp_socket_fd=None))]
    fn set_peer_address(&self, peer_id: u64, address: (String, i64), tcp_socket_fd: Option<RawFd>) -> PyResult<()> {
        let address = parse_address(&self.inner, address)?;
        Ok(self.inner.set_peer_address(peer_id, address, tcp_socket_fd)?)
    }

    fn send_tcp_frame(&self, peer_id: u64, packet: &[u8]) -> PyResult<bool> {
        Ok(self.inner.send_tcp_frame(peer_id, packet)?)
    }

    fn subscribe(&self, py: Python<'_>, peer_id: u64, mountpoint_id: u64, streams: Vec<ViewerStream>) -> PyResult<()> {
        let streams = viewer_stream_configs(streams)?;
        Ok(py.detach(|| self.inner.subscribe(peer_id, mountpoint_id, &streams))?)
    }

    fn unsubscribe(&self, peer_id: u64) -> PyResult<()> {
        Ok(self.inner.unsubscribe(peer_id)?)
    }

    fn set_paused(&self, peer_id: u64, paused: bool) -> PyResult<()> {
        Ok(self.inner.set_paused(peer_id, paused)?)
    }

    fn set_stream_paused(&self, peer_id: u64, index: i64, paused: bool) -> PyResult<()> {
        Ok(self.inner.set_stream_paused(peer_id, int(index, "stream index")?, paused)?)
    }

    #[pyo3(signature = (peer_id, extension_id))]
    fn set_transport_cc(&self, peer_id: u64, extension_id: Option<i64>) -> PyResult<()> {
        let extension_id = extension_id.map(|id| int(id, "transport-cc extension id")).transpose()?;
        Ok(self.inner.set_transport_cc(peer_id, extension_id)?)
    }

    #[pyo3(signature = (peer_id, bitrate))]
    fn set_probe_goal(&self, peer_id: u64, bitrate: Option<u64>) -> PyResult<()> {
        Ok(self.inner.set_probe_goal(peer_id, bitrate)?)
    }

    #[pyo3(signature = (peer_id, index, extension_id, min_ms, max_ms))]
    fn set_stream_playout_delay(
        &self,
        peer_id: u64,
        index: i64,
        extension_id: i64,
        min_ms: Option<i64>,
        max_ms: Option<i64>,
    ) -> PyResult<()> {
        let delay_ms = match (min_ms, max_ms) {
            (None, None) => None,
            (Some(min_ms), Some(max_ms)) => {
                Some((int(min_ms, "minimum playout delay")?, int(max_ms, "maximum playout delay")?))
            }
            _ => return Err(PyValueError::new_err("min_ms and max_ms are both None or both set")),
        };
        let (index, extension_id) = (int(index, "stream index")?, int(extension_id, "playout-delay extension id")?);
        Ok(self.inner.set_stream_playout_delay(peer_id, index, extension_id, delay_ms)?)
    }

    #[pyo3(signature = (peer_id, index, source_index, *, at_once = false))]
    fn set_stream_source(&self, peer_id: u64, index: i64, source_index: i64, at_once: bool) -> PyResult<()> {
        let (index, source_index) = (int(index, "stream index")?, int(source_index, "source index")?);
        Ok(self.inner.set_stream_source(peer_id, index, source_index, at_once)?)
    }

    #[pyo3(signature = (peer_id, index, layer))]
    fn set_stream_temporal_layer(&self, peer_id: u64, index: i64, layer: Option<i64>) -> PyResult<()> {
        let layer = layer.map(|layer| int(layer, "temporal layer")).transpose()?;
        Ok(self.inner.set_stream_temporal_layer(peer_id, int(index, "stream index")?, layer)?)
    }

    #[pyo3(signature = (peer_id, index, layer))]
    fn set_stream_spatial_layer(&self, peer_id: u64, index: i64, layer: Option<i64>) -> PyResult<()> {
        let layer = layer.map(|layer| int(layer, "spatial layer")).transpose()?;
        Ok(self.inner.set_stream_spatial_layer(peer_id, int(index, "stream index")?, layer)?)
    }

    fn receive_rtcp(&self, peer_id: u64, packet: &[u8]) -> PyResult<RtcpReport> {
        Ok(self.inner.receive_rtcp(peer_id, packet)?)
    }

    fn send_rtcp(&self, peer_id: u64, packet: &[u8]) -> PyResult<()> {
        Ok(self.inner.send_rtcp(peer_id, packet)?)
    }

    fn send_source_remb(&self, mountpoint_id: u64, index: i64, bitrate: u64) -> PyResult<bool> {
        Ok(self.inner.send_source_remb(mountpoint_id, int(index, "stream index")?, bitrate)?)
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        mountpoint_id, socket_fd, srtp_profile, local_master_key, remote_master_key, routes,
        mid_extension_id=None, rid_extension_id=None
    ))]
    fn attach_publisher(
        &self,
        py: Python<'_>,
        mountpoint_id: u64,
        socket_fd: i32,
        srtp_profile: &str,
        local_master_key: Vec<u8>,
        remote_master_key: Vec<u8>,
        routes: Vec<PublisherRoute>,
        mid_extension_id: Option<i64>,
        rid_extension_id: Option<i64>,
    ) -> PyResult<()> {
        let config = PublisherConfig {
            profile: parse_peer_profile(srtp_profile)?,
            local_master_key,
            remote_master_key,
            routes: routes.into_iter().map(PublisherRoute::config).collect::<PyResult<_>>()?,
            mid_extension_id: mid_extension_id.map(|id| int(id, "mid_extension_id")).transpose()?,
            rid_extension_id: rid_extension_id.map(|id| int(id, "rid_extension_id")).transpose()?,
        };
        Ok(py.detach(|| self.inner.attach_publisher(mountpoint_id, socket_fd, &config))?)
    }

    fn detach_publisher(&self, py: Python<'_>, mountpoint_id: u64) -> PyResult<()> {
        Ok(py.detach(|| self.inner.detach_publisher(mountpoint_id))?)
    }

    fn publisher_stats(&self, mountpoint_id: u64) -> PyResult<Option<PublisherStats>> {
        Ok(self.inner.publisher_stats(mountpoint_id)?)
    }

    fn peer_stats(&self, peer_id: u64) -> PyResult<PeerStats> {
        Ok(self.inner.peer_stats(peer_id)?)
    }

    fn mountpoint_stats(&self, mountpoint_id: u64) -> PyResult<MountpointStats> {
        Ok(self.inner.mountpoint_stats(mountpoint_id)?)
    }

    fn worker_stats(&self) -> PyResult<Vec<WorkerStats>> {
        Ok(self.inner.worker_stats()?)
    }

    #[getter]
    fn data_plane_nice(&self) -> i32 {
        self.inner.data_plane_priority().nice
    }

    #[getter]
    fn data_plane_nice_refused(&self) -> Option<String> {
        self.inner.data_plane_priority().refused.clone()
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

    // --- the WebRTC socket's reader (see crate::ingest::socket_reader) ---

    fn read_webrtc_socket(&self) -> PyResult<RawFd> {
        Ok(self.inner.read_webrtc_socket()?)
    }

    fn take_webrtc_datagrams<'py>(&self, py: Python<'py>) -> Vec<(Bound<'py, pyo3::types::PyBytes>, (String, u16))> {
        self.inner
            .take_webrtc_datagrams()
            .into_iter()
            .map(|(data, source)| (pyo3::types::PyBytes::new(py, &data), (source.ip().to_string(), source.port())))
            .collect()
    }

    fn webrtc_socket_stats(&self) -> WebRtcSocketStats {
        self.inner.webrtc_socket_stats()
    }

    fn set_source_silence(&self, mountpoint_id: u64, index: i64, silence_ms: i64) -> PyResult<()> {
        Ok(self.inner.set_source_silence(mountpoint_id, int(index, "stream index")?, self::silence_ms(silence_ms)?)?)
    }

    fn start_recording(&self, mountpoint_id: u64, index: i64, path: &str, codec: &str) -> PyResult<()> {
        Ok(self.inner.start_recording(mountpoint_id, int(index, "stream index")?, path, codec)?)
    }

    fn stop_recording(&self, py: Python<'_>, mountpoint_id: u64, index: i64) -> PyResult<bool> {
        let index = int(index, "stream index")?;
        Ok(py.detach(|| self.inner.stop_recording(mountpoint_id, index))?)
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

/// A datagram on a mountpoint's publisher link that is STUN or DTLS, for the control plane to answer.
#[pyclass(frozen, eq, module = "fanout._engine")]
#[derive(Debug, PartialEq, Eq)]
pub struct PublisherDatagram {
    mountpoint_id: u64,
    data: Vec<u8>,
}

#[pymethods]
impl PublisherDatagram {
    /// Made by the engine; made in Python for tests of what handles them.
    #[new]
    fn new(mountpoint_id: u64, data: Vec<u8>) -> Self {
        Self { mountpoint_id, data }
    }

    #[getter]
    fn mountpoint_id(&self) -> u64 {
        self.mountpoint_id
    }

    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        pyo3::types::PyBytes::new(py, &self.data)
    }

    fn __repr__(&self) -> String {
        format!("PublisherDatagram(mountpoint_id={}, data=<{} bytes>)", self.mountpoint_id, self.data.len())
    }
}

/// A recording ended on its own: its file could not be written (a full disk...).
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Debug, PartialEq, Eq)]
pub struct RecordingStopped {
    mountpoint_id: u64,
    index: u32,
    reason: String,
}

/// A viewer's ICE-TCP connection is lost: "stalled" (its queue made no progress) or "broken".
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Debug, PartialEq, Eq)]
pub struct TcpConnectionLost {
    peer_id: u64,
    reason: String,
}

/// What the engine read in a viewer's RTCP on the WebRTC socket (and did about it).
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Debug, PartialEq, Eq)]
pub struct ViewerRtcp {
    peer_id: u64,
    report: RtcpReport,
}

/// A viewer's bandwidth estimate (bits per second), from its transport feedback, REMB and reports.
#[pyclass(frozen, get_all, eq, module = "fanout._engine")]
#[derive(Debug, PartialEq, Eq)]
pub struct BandwidthEstimate {
    peer_id: u64,
    bitrate: u64,
    link_limited: bool,
    probed: bool,
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
    KeyframeFromCache(peer_id: u64, index: u32, packets: usize),
    RecordingStopped(mountpoint_id: u64, index: u32, reason: String),
    BandwidthEstimate(peer_id: u64, bitrate: u64, link_limited: bool, probed: bool),
    TcpConnectionLost(peer_id: u64, reason: String)
);

#[pymethods]
impl ViewerRtcp {
    /// Made by the engine; made in Python for tests of what handles them.
    #[new]
    fn new(peer_id: u64, report: PyRef<'_, RtcpReport>) -> Self {
        Self { peer_id, report: report.clone() }
    }

    fn __repr__(&self) -> String {
        format!("ViewerRtcp(peer_id={}, report={:?})", self.peer_id, self.report)
    }
}

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
        EngineEvent::PublisherDatagram { mountpoint_id, data } => {
            Py::new(py, PublisherDatagram { mountpoint_id, data })?.into_any()
        }
        EngineEvent::RecordingStopped { mountpoint_id, index, reason } => {
            Py::new(py, RecordingStopped { mountpoint_id, index, reason })?.into_any()
        }
        EngineEvent::BandwidthEstimate { peer_id, bitrate, link_limited, probed } => {
            Py::new(py, BandwidthEstimate { peer_id, bitrate, link_limited, probed })?.into_any()
        }
        EngineEvent::TcpConnectionLost { peer_id, reason } => {
            Py::new(py, TcpConnectionLost { peer_id, reason })?.into_any()
        }
        EngineEvent::ViewerRtcp { peer_id, report } => Py::new(py, ViewerRtcp { peer_id, report })?.into_any(),
    })
}

/// Adds the event classes to the module.
pub fn add_event_classes(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<SubstreamMoved>()?;
    module.add_class::<SourceSilent>()?;
    module.add_class::<SourceResumed>()?;
    module.add_class::<SendQueueOverflow>()?;
    module.add_class::<KeyframeFromCache>()?;
    module.add_class::<PublisherDatagram>()?;
    module.add_class::<RecordingStopped>()?;
    module.add_class::<BandwidthEstimate>()?;
    module.add_class::<TcpConnectionLost>()?;
    module.add_class::<ViewerRtcp>()?;
    Ok(())
}

// --- end of events ---

fn parse_send_mode(name: &str) -> PyResult<SendMode> {
    SendMode::from_name(name).ok_or_else(|| {
        PyValueError::new_err(format!("send_mode must be \"gso\", \"sendmmsg\" or \"sendto\", got {name:?}"))
    })
}

// --- RTSP over TCP ---

/// The RTP and RTCP an RTSP server interleaves on its connection, sent on to
/// the engine's ports without Python per packet ([`crate::ingest::interleaved`]).
#[pyclass(module = "fanout._engine")]
pub struct InterleavedRelay {
    inner: crate::ingest::interleaved::InterleavedRelay,
}

#[pymethods]
impl InterleavedRelay {
    #[new]
    fn new(routes: Vec<(i64, RawFd, (String, i64))>) -> PyResult<Self> {
        let mut parsed = Vec::with_capacity(routes.len());
        for (channel, fd, (host, port)) in routes {
            let ip: IpAddr = host.parse().map_err(|_| PyValueError::new_err(format!("invalid address {host:?}")))?;
            let to = SocketAddr::new(ip, int(port, "port")?);
            let route = crate::ingest::interleaved::Route::new(int(channel, "channel")?, fd, to)
                .map_err(|error| PyOSError::new_err(error.to_string()))?;
            parsed.push(route);
        }
        let max_len = crate::media::packet::MAX_RTP_LEN;
        Ok(Self { inner: crate::ingest::interleaved::InterleavedRelay::new(parsed, max_len) })
    }

    fn relay(&mut self, buffer: &Bound<'_, pyo3::types::PyByteArray>, start: usize) -> PyResult<usize> {
        // SAFETY: no Python code runs while the bytes are borrowed, so the bytearray cannot be resized.
        let data = unsafe { buffer.as_bytes() };
        self.inner.relay(data, start).map_err(|oversized| {
            PyValueError::new_err(format!(
                "an interleaved frame of {} bytes on channel {} (at most {} are taken)",
                oversized.len,
                oversized.channel,
                crate::media::packet::MAX_RTP_LEN
            ))
        })
    }

    #[getter]
    fn relayed(&self) -> u64 {
        self.inner.relayed
    }

    #[getter]
    fn unknown(&self) -> u64 {
        self.inner.unknown
    }

    #[getter]
    fn dropped(&self) -> u64 {
        self.inner.dropped
    }
}
