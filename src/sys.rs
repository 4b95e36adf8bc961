//! Thin syscall helpers of the core.

use std::io;
use std::os::fd::RawFd;

/// Sets O_NONBLOCK and FD_CLOEXEC on `fd`.
pub fn set_nonblock_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with integer arguments on an fd the caller owns.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
        let fdfl = libc::fcntl(fd, libc::F_GETFD);
        if fdfl < 0 || libc::fcntl(fd, libc::F_SETFD, fdfl | libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The flags every send uses: MSG_NOSIGNAL where it exists. Where it does
/// not (macOS), the loop sets SO_NOSIGPIPE on sockets and ignores SIGPIPE.
pub const SEND_FLAGS: libc::c_int = {
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    {
        0
    }
    #[cfg(not(any(target_os = "macos", target_os = "ios")))]
    {
        libc::MSG_NOSIGNAL
    }
};

/// MSG_MORE where it exists (Linux, Android), else 0.
pub const MORE_FLAG: libc::c_int = {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        libc::MSG_MORE
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        0
    }
};

/// Ignores SIGPIPE for the whole process, for platforms without
/// MSG_NOSIGNAL and for FreeBSD setups where it still arrived despite it.
pub fn ignore_sigpipe() {
    // SAFETY: setting a standard disposition for a standard signal.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Converts a filled `sockaddr_storage` to a std address.
pub fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> io::Result<std::net::SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        f => Err(io::Error::new(io::ErrorKind::InvalidData, format!("address family {f} is not IPv4 or IPv6"))),
    }
}

/// accept(2), returning a non-blocking, close-on-exec socket and its peer.
/// Uses accept4 where it exists, so that costs one syscall.
pub fn accept(fd: RawFd) -> io::Result<(std::os::fd::OwnedFd, std::net::SocketAddr)> {
    use std::os::fd::FromRawFd;
    // SAFETY: zeroed storage is a valid out-buffer for accept.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let sa = (&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr>();
    cfg_if::cfg_if! {
        if #[cfg(any(target_os = "macos", target_os = "ios"))] {
            // SAFETY: `sa` and `len` describe `ss`, which outlives the call.
            let s = unsafe { libc::accept(fd, sa, &mut len) };
            if s >= 0 {
                if let Err(e) = set_nonblock_cloexec(s) {
                    // SAFETY: s was just returned by accept and is ours.
                    unsafe { libc::close(s) };
                    return Err(e);
                }
            }
        } else {
            // SAFETY: `sa` and `len` describe `ss`, which outlives the call.
            let s = unsafe { libc::accept4(fd, sa, &mut len, libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) };
        }
    }
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: accept returned a new fd that nobody else owns.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(s) };
    Ok((owned, sockaddr_to_std(&ss)?))
}

/// Converts a std address to a `sockaddr_storage` and its length.
pub fn std_to_sockaddr(addr: &std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed storage is valid; we write the matching struct into it.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        std::net::SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from(*a.ip()).to_be() };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Sets SO_NOSIGPIPE where it exists (macOS, the BSDs), for platforms where
/// MSG_NOSIGNAL alone is not enough. A no-op elsewhere.
pub fn no_sigpipe(fd: RawFd) -> io::Result<()> {
    cfg_if::cfg_if! {
        if #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd", target_os = "netbsd", target_os = "dragonfly"))] {
            let one: libc::c_int = 1;
            // SAFETY: `one` is a live c_int and its size is passed.
            let r = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_NOSIGPIPE, (&one as *const libc::c_int).cast(), std::mem::size_of_val(&one) as _) };
            if r < 0 { return Err(io::Error::last_os_error()); }
            Ok(())
        } else {
            let _ = fd;
            Ok(())
        }
    }
}
