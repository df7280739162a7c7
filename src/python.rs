//! The Python door: `fanout._engine.Engine`, typed in `python/fanout/_engine.pyi`.

use pyo3::exceptions::{PyKeyError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::RawFd;
use std::time::Duration;

use crate::batch::SendMode;
use crate::bench;
use crate::codec::Codec;
use crate::engine::{self, EngineError, EngineOptions, SourceConfig, ViewerStreamConfig};
use crate::ingest::IngestOptions;
use crate::receiver::MediaKind;
use crate::srtp::Profile;
use crate::stats::{MountpointStats, PeerStats, RtcpReport, WorkerStats};
use crate::viewer::RawAddress;

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
}

impl SourceStream {
    fn config(self) -> PyResult<SourceConfig> {
        let srtp = match (&self.srtp_profile, self.srtp_master_key) {
            (None, None) => None,
            (Some(name), Some(key)) => Some((parse_profile(name)?, key)),
            _ => return Err(PyValueError::new_err("srtp_profile and srtp_master_key go together")),
        };
        let collision_ms = u32::try_from(self.collision_ms)
            .map_err(|_| PyValueError::new_err(format!("collision_ms out of range: {}", self.collision_ms)))?;
        Ok(SourceConfig {
            index: int(self.index, "stream index")?,
            kind: parse_kind(&self.kind)?,
            codec: Codec::from_name(&self.codec.to_ascii_lowercase()),
            clock_rate: int(self.clock_rate, "clock rate")?,
            host: self.host,
            port: int(self.port, "port")?,
            rtcp_port: self.rtcp_port.map(|port| int(port, "rtcp_port")).transpose()?,
            interface: self.interface,
            ingest: IngestOptions {
                srtp,
                collision_ms,
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
}

fn viewer_stream_configs(streams: Vec<ViewerStream>) -> PyResult<Vec<ViewerStreamConfig>> {
    streams
        .into_iter()
        .map(|s| {
            Ok(ViewerStreamConfig {
                index: int(s.index, "stream index")?,
                ssrc: int(s.ssrc, "ssrc")?,
                payload_type: int(s.payload_type, "payload type")?,
            })
        })
        .collect()
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
        let streams = streams.into_iter().map(SourceStream::config).collect::<PyResult<Vec<SourceConfig>>>()?;
        Ok(self.inner.add_mountpoint(mountpoint_id, &streams)?)
    }

    fn remove_mountpoint(&self, py: Python<'_>, mountpoint_id: u64) -> PyResult<()> {
        Ok(py.detach(|| self.inner.remove_mountpoint(mountpoint_id))?)
    }

    fn add_peer(
        &self,
        peer_id: u64,
        address: (String, i64),
        srtp_profile: &str,
        local_master_key: &[u8],
        remote_master_key: &[u8],
    ) -> PyResult<()> {
        let profile = parse_peer_profile(srtp_profile)?;
        let address = parse_address(&self.inner, address)?;
        Ok(self.inner.add_peer(peer_id, address, profile, local_master_key, remote_master_key)?)
    }

    fn remove_peer(&self, peer_id: u64) -> PyResult<()> {
        Ok(self.inner.remove_peer(peer_id)?)
    }

    fn set_peer_address(&self, peer_id: u64, address: (String, i64)) -> PyResult<()> {
        let address = parse_address(&self.inner, address)?;
        Ok(self.inner.set_peer_address(peer_id, address)?)
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

    fn set_stream_source(&self, peer_id: u64, index: i64, source_index: i64) -> PyResult<()> {
        let (index, source_index) = (int(index, "stream index")?, int(source_index, "source index")?);
        Ok(self.inner.set_stream_source(peer_id, index, source_index)?)
    }

    #[pyo3(signature = (peer_id, index, layer))]
    fn set_stream_temporal_layer(&self, peer_id: u64, index: i64, layer: Option<i64>) -> PyResult<()> {
        let layer = layer.map(|layer| int(layer, "temporal layer")).transpose()?;
        Ok(self.inner.set_stream_temporal_layer(peer_id, int(index, "stream index")?, layer)?)
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

    fn peer_stats(&self, peer_id: u64) -> PyResult<PeerStats> {
        Ok(self.inner.peer_stats(peer_id)?)
    }

    fn mountpoint_stats(&self, mountpoint_id: u64) -> PyResult<MountpointStats> {
        Ok(self.inner.mountpoint_stats(mountpoint_id)?)
    }

    fn worker_stats(&self) -> PyResult<Vec<WorkerStats>> {
        Ok(self.inner.worker_stats()?)
    }

    fn close(&self, py: Python<'_>) {
        py.detach(|| self.inner.close());
    }
}

fn parse_send_mode(name: &str) -> PyResult<SendMode> {
    SendMode::from_name(name).ok_or_else(|| {
        PyValueError::new_err(format!("send_mode must be \"gso\", \"sendmmsg\" or \"sendto\", got {name:?}"))
    })
}

/// Crypto only: copy + SRTP-protect `count` RTP packets of `rtp_size` bytes; ns per packet.
#[pyfunction]
pub fn bench_protect(py: Python<'_>, srtp_profile: &str, rtp_size: usize, count: u64) -> PyResult<f64> {
    let profile = parse_profile(srtp_profile)?;
    if !(12..=1900).contains(&rtp_size) || count == 0 {
        return Err(PyValueError::new_err("rtp_size must be in 12..=1900 and count positive"));
    }
    Ok(py.detach(|| bench::protect_cost(profile, rtp_size, count)))
}

/// Kernel only: the engine's sends of ready-made datagrams (see bench.rs).
#[pyfunction]
#[pyo3(signature = (socket_fd, addresses, *, send_mode, run_length, datagram_size, seconds, core=None))]
#[allow(clippy::too_many_arguments)]
pub fn bench_send<'py>(
    py: Python<'py>,
    socket_fd: RawFd,
    addresses: Vec<(String, u16)>,
    send_mode: &str,
    run_length: usize,
    datagram_size: usize,
    seconds: f64,
    core: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let mode = parse_send_mode(send_mode)?;
    let addresses = addresses
        .iter()
        .map(|(host, port)| {
            let ip: std::net::IpAddr =
                host.parse().map_err(|_| PyValueError::new_err(format!("not an IP address: {host:?}")))?;
            RawAddress::from_socket_addr(std::net::SocketAddr::new(ip, *port), libc::AF_INET)
                .ok_or_else(|| PyValueError::new_err("IPv4 addresses only"))
        })
        .collect::<PyResult<Vec<_>>>()?;
    if addresses.is_empty()
        || run_length == 0
        || !(12..=2000).contains(&datagram_size)
        || seconds.is_nan()
        || seconds <= 0.0
    {
        return Err(PyValueError::new_err("bad bench_send arguments"));
    }
    let duration = Duration::from_secs_f64(seconds);
    let cost = py.detach(|| bench::send_cost(socket_fd, addresses, mode, run_length, datagram_size, duration, core));
    let result = PyDict::new(py);
    result.set_item("packets", cost.packets)?;
    result.set_item("bytes", cost.bytes)?;
    result.set_item("failed", cost.failed)?;
    result.set_item("cpu_ns", cost.cpu_ns)?;
    result.set_item("wall_ns", cost.wall_ns)?;
    Ok(result)
}
