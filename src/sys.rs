//! The operating system, thinly wrapped: socket addresses in the kernel's
//! form, source sockets and their buffers, eventfds and epoll, CPU affinity
//! and thread priority, the engine's monotonic clock and random bytes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::Instant;

/// The receive buffer each source socket asks for.
pub const RECEIVE_BUFFER_BYTES: libc::c_int = 4 << 20;

/// A socket address in the kernel's form, ready for sendmmsg.
#[derive(Clone, Copy)]
pub struct RawAddress {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddress {
    // SAFETY: sockaddr_storage is plain old data; all zeros is AF_UNSPEC.
    pub const UNSPECIFIED: Self = Self { storage: unsafe { std::mem::zeroed() }, len: 0 };

    /// `address` as the socket family `family` (AF_INET or AF_INET6) takes it:
    /// IPv4 addresses go to an IPv6 socket as IPv4-mapped addresses.
    pub fn from_socket_addr(address: SocketAddr, family: libc::c_int) -> Option<Self> {
        let mut raw = Self::UNSPECIFIED;
        match (family, address.ip()) {
            (libc::AF_INET, IpAddr::V4(ip)) => raw.write_v4(ip.octets(), address.port()),
            (libc::AF_INET, IpAddr::V6(ip)) => raw.write_v4(ip.to_ipv4_mapped()?.octets(), address.port()),
            (libc::AF_INET6, IpAddr::V4(ip)) => raw.write_v6(ip.to_ipv6_mapped().octets(), address.port()),
            (libc::AF_INET6, IpAddr::V6(ip)) => raw.write_v6(ip.octets(), address.port()),
            _ => return None,
        }
        Some(raw)
    }

    fn write_v4(&mut self, octets: [u8; 4], port: u16) {
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(octets) },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
        unsafe { std::ptr::write((&mut self.storage as *mut libc::sockaddr_storage).cast(), address) };
        self.len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    }

    fn write_v6(&mut self, octets: [u8; 16], port: u16) {
        let address = libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: port.to_be(),
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr { s6_addr: octets },
            sin6_scope_id: 0,
        };
        // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
        unsafe { std::ptr::write((&mut self.storage as *mut libc::sockaddr_storage).cast(), address) };
        self.len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    }

    pub fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        (&mut self.storage as *mut libc::sockaddr_storage).cast()
    }

    pub fn socklen(&self) -> libc::socklen_t {
        self.len
    }
}

/// A kernel socket address as a [`SocketAddr`] (IPv4 or IPv6).
pub fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is large and aligned enough.
            let address = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(address.sin_port)))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above for sockaddr_in6.
            let address = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(address.sin6_addr.s6_addr);
            Some(SocketAddr::new(ip.into(), u16::from_be(address.sin6_port)))
        }
        _ => None,
    }
}

/// Binds a source socket: non-blocking, with a large receive buffer.
pub fn bind_source(host: &str, port: u16) -> io::Result<UdpSocket> {
    bind_source_on(host, port, None)
}

/// Binds a source socket to `host`:`port`. When `host` is a multicast group the
/// socket joins it, on the interface whose address is `interface` (IPv4), or on
/// the one the kernel's routes choose.
pub fn bind_source_on(host: &str, port: u16, interface: Option<&str>) -> io::Result<UdpSocket> {
    let address = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no address for {host}")))?;
    let socket = UdpSocket::bind(address)?;
    match address.ip() {
        IpAddr::V4(group) if group.is_multicast() => {
            let on = match interface {
                Some(text) => text.parse::<Ipv4Addr>().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("interface {text} is not an IPv4 address"))
                })?,
                None => Ipv4Addr::UNSPECIFIED,
            };
            socket.join_multicast_v4(&group, &on)?;
        }
        IpAddr::V6(group) if group.is_multicast() => socket.join_multicast_v6(&group, 0)?,
        _ => {}
    }
    socket.set_nonblocking(true)?;
    set_receive_buffer(socket.as_raw_fd(), RECEIVE_BUFFER_BYTES);
    stamp_arrivals(socket.as_raw_fd());
    Ok(socket)
}

/// Asks the kernel to stamp each datagram with its arrival time
/// (SO_TIMESTAMPNS, read by recvmmsg), so that the time a packet waits in the
/// socket counts against its send deadline. Best effort: without it, the
/// time it is read counts.
pub fn stamp_arrivals(fd: RawFd) {
    let on: libc::c_int = 1;
    let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `on` is a live c_int and `size` its size.
    unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, (&on as *const libc::c_int).cast(), size) };
}

/// Nanoseconds since the Unix epoch on the realtime clock (the kernel's receive stamps).
pub fn realtime_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Asks for `bytes` of receive buffer: past the kernel's rmem_max when
/// privileged (SO_RCVBUFFORCE), else as much as rmem_max allows.
pub fn set_receive_buffer(fd: RawFd, bytes: libc::c_int) {
    set_buffer(fd, bytes, [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF]);
}

/// The same for the send buffer (SO_SNDBUFFORCE, SO_SNDBUF).
pub fn set_send_buffer(fd: RawFd, bytes: libc::c_int) {
    set_buffer(fd, bytes, [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF]);
}

fn set_buffer(fd: RawFd, bytes: libc::c_int, options: [libc::c_int; 2]) {
    let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    for option in options {
        // SAFETY: `bytes` is a live c_int and `size` its size.
        let result =
            unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, option, (&bytes as *const libc::c_int).cast(), size) };
        if result == 0 {
            return;
        }
    }
}

/// A non-blocking eventfd, closed on exec.
pub fn new_eventfd() -> io::Result<OwnedFd> {
    // SAFETY: a plain system call; the result is checked and owned at once.
    Ok(unsafe { OwnedFd::from_raw_fd(cvt(libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?) })
}

/// Adds one to the eventfd `fd`, which wakes the thread waiting on it.
pub fn wake(fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from `one` to the eventfd.
    unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
}

/// Adds `fd` to `epoll` for reading; epoll reports it with `key`.
pub fn register(epoll: RawFd, fd: RawFd, key: u64) -> io::Result<()> {
    let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: key };
    // SAFETY: `event` is live for the call; epoll copies it.
    cvt(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) }).map(|_| ())
}

/// Takes `fd` out of `epoll`.
pub fn unregister(epoll: RawFd, fd: RawFd) -> io::Result<()> {
    let mut event = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: `event` is live for the call (ignored by EPOLL_CTL_DEL since Linux 2.6.9).
    cvt(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, fd, &mut event) }).map(|_| ())
}

/// A system call's result: negative is the error in errno.
pub fn cvt(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// Pins the calling thread to `core`.
pub fn pin_to_core(core: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain old data; CPU_SET checks nothing but stays in
    // bounds for core < CPU_SETSIZE, checked first; sched_setaffinity(0) is this thread.
    unsafe {
        if core >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets the calling thread's nice value (-20..=19; Linux keeps one per
/// thread). Lowering it below the thread's current value needs CAP_SYS_NICE
/// or an RLIMIT_NICE that allows it: without them, EPERM (or EACCES).
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: plain system calls on this thread's own id.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    cvt(result).map(|_| ())
}

/// The calling thread's nice value.
pub fn thread_nice() -> i32 {
    // getpriority returns the nice value itself, so -1 is a value; errno tells
    // an error, which cannot happen for the caller's own thread.
    // SAFETY: plain system calls on this thread's own id.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

/// The cores this process may run on.
pub fn allowed_cores() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain old data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&core| libc::CPU_ISSET(core, &set)).collect()
    }
}

/// Nanoseconds on the engine's monotonic clock, never 0.
pub fn monotonic_ns(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    now.saturating_duration_since(epoch).as_nanos() as u64 + 1
}

/// `N` bytes from the kernel's random source (getrandom).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: writes at most N - filled bytes into `bytes[filled..]`.
        let result = unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if result > 0 {
            filled += result as usize;
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_addresses_to_the_sockets_family() {
        let v4: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let v6: SocketAddr = "[::1]:5000".parse().unwrap();
        assert_eq!(RawAddress::from_socket_addr(v4, libc::AF_INET).unwrap().socklen(), 16);
        assert_eq!(RawAddress::from_socket_addr(v4, libc::AF_INET6).unwrap().socklen(), 28);
        assert!(RawAddress::from_socket_addr(v6, libc::AF_INET).is_none());
    }
}
