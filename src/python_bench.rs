//! The benchmarks' Python door (cargo feature `bench`): `fanout._engine.bench_protect`
//! and `bench_send`, which `fanout bench engine` (bench/fanout_bench/engine.py)
//! calls to measure the machine's own limits, and `bench_read_transport_feedback`,
//! the engine's own reading of the transport feedback `fanout bench load`'s viewers
//! write (its tests check the two agree). A production build has none of them.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::time::Duration;

use crate::bench;
use crate::egress::batch::SendMode;
use crate::sys::RawAddress;
use crate::wire::srtp::Profile;

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(bench_protect, module)?)?;
    module.add_function(wrap_pyfunction!(bench_send, module)?)?;
    module.add_function(wrap_pyfunction!(bench_read_transport_feedback, module)?)?;
    Ok(())
}

/// One transport feedback message as the engine reads it: media SSRC, feedback count, and
/// each packet's (sequence number, arrival in microseconds or None).
type FeedbackRead = (u32, u8, Vec<(u16, Option<i64>)>);

/// The transport feedback messages in a compound RTCP packet (plain, not SRTCP), read by
/// the engine's parser (wire/twcc.rs); ValueError if one runs past its end.
#[pyfunction]
fn bench_read_transport_feedback(packet: &[u8]) -> PyResult<Vec<FeedbackRead>> {
    let mut messages = Vec::new();
    let mut malformed = false;
    crate::wire::twcc::for_each_transport_feedback(packet, |feedback| {
        let mut packets = Vec::new();
        malformed |= feedback.for_each_packet(|sequence, at| packets.push((sequence, at))).is_err();
        messages.push((feedback.media_ssrc, feedback.feedback_count, packets));
    });
    if malformed {
        return Err(PyValueError::new_err("transport feedback cut short: its chunks or deltas run past its end"));
    }
    Ok(messages)
}

/// Crypto only: copy + SRTP-protect `count` RTP packets of `rtp_size` bytes; ns per packet.
#[pyfunction]
fn bench_protect(py: Python<'_>, srtp_profile: &str, rtp_size: usize, count: u64) -> PyResult<f64> {
    let profile = Profile::from_name(srtp_profile)
        .ok_or_else(|| PyValueError::new_err(format!("unknown SRTP profile {srtp_profile:?}")))?;
    if !(12..=1900).contains(&rtp_size) || count == 0 {
        return Err(PyValueError::new_err("rtp_size must be in 12..=1900 and count positive"));
    }
    Ok(py.detach(|| bench::protect_cost(profile, rtp_size, count)))
}

/// Kernel only: the engine's sends of ready-made datagrams (see bench.rs).
#[pyfunction]
#[pyo3(signature = (socket_fd, addresses, *, send_mode, run_length, datagram_size, seconds, core=None))]
#[allow(clippy::too_many_arguments)]
fn bench_send<'py>(
    py: Python<'py>,
    socket_fd: RawFd,
    addresses: Vec<(String, u16)>,
    send_mode: &str,
    run_length: usize,
    datagram_size: usize,
    seconds: f64,
    core: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let mode = SendMode::from_name(send_mode).ok_or_else(|| {
        PyValueError::new_err(format!("send_mode must be \"gso\", \"sendmmsg\" or \"sendto\", got {send_mode:?}"))
    })?;
    let addresses = addresses
        .iter()
        .map(|(host, port)| {
            let ip: IpAddr = host.parse().map_err(|_| PyValueError::new_err(format!("not an IP address: {host:?}")))?;
            RawAddress::from_socket_addr(SocketAddr::new(ip, *port), libc::AF_INET)
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
