//! What the model asks of an fd, without changing it: its identity,
//! readiness (ppoll), queue sizes, whether its send side is shut. And the
//! model's own wake-up eventfd.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::sys::cvt;

/// ppoll(2). `Interrupted` is returned.
pub(super) fn ppoll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ts = crate::sys::timespec(timeout);
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` is a live array of `fds.len()` pollfds; `ts_ptr` is
    // null or points at `ts`, which outlives the call; no signal mask.
    let n = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ts_ptr, std::ptr::null()) };
    cvt(n).map(|n| n as usize)
}

/// The (device, inode) the fd names, or `None` if it is closed.
pub(super) fn file_id(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: all-zero bytes are a valid `struct stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into `st`, which is live and large enough.
    let r = unsafe { libc::fstat(fd, &mut st) };
    (r == 0).then_some((st.st_dev, st.st_ino))
}

/// SO_TYPE, or `None` for a non-socket.
pub(super) fn sock_type(fd: RawFd) -> Option<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live and describe a c_int.
    let r =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, (&mut v as *mut libc::c_int).cast(), &mut len) };
    (r == 0).then_some(v)
}

/// Whether the socket has a peer (getpeername succeeds).
pub(super) fn connected(fd: RawFd) -> bool {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `addr` and `len` are live and describe the storage.
    unsafe { libc::getpeername(fd, (&mut addr as *mut libc::sockaddr_storage).cast(), &mut len) == 0 }
}

/// An int-valued ioctl (FIONREAD, SIOCOUTQ).
pub(super) fn ioctl_int(fd: RawFd, req: libc::Ioctl) -> Option<libc::c_int> {
    let mut v: libc::c_int = 0;
    // SAFETY: these requests write one c_int into `v`, which is live.
    let r = unsafe { libc::ioctl(fd, req, &mut v as *mut libc::c_int) };
    (r == 0).then_some(v)
}

/// The send buffer's free space: SO_SNDBUF − SIOCOUTQ.
pub(super) fn send_space(fd: RawFd) -> Option<i64> {
    let mut buf: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `buf` and `len` are live and describe a c_int.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, (&mut buf as *mut libc::c_int).cast(), &mut len)
    };
    if r != 0 {
        return None;
    }
    let queued = ioctl_int(fd, libc::TIOCOUTQ)?;
    Some(i64::from(buf) - i64::from(queued))
}

/// Whether the send side of a stream socket is shut: a zero-length send
/// says `EPIPE`. It sends nothing, and raises no SIGPIPE.
pub(super) fn send_shut(fd: RawFd) -> bool {
    // SAFETY: a zero-length send reads no memory; the pointer is not used.
    let r = unsafe {
        libc::send(fd, std::ptr::NonNull::<u8>::dangling().as_ptr().cast(), 0, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EPIPE)
}

/// Makes a wait on the kqueue return (a trigger from another thread).
pub(super) fn poke(kq: RawFd) {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes from a live u64 to the model's eventfd.
    // EAGAIN (a saturated counter) means a poke is already pending.
    let _ = unsafe { libc::write(kq, (&one as *const u64).cast(), 8) };
}

pub(super) fn drain(kq: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reading 8 bytes into a live u64 from the model's eventfd.
    let _ = unsafe { libc::read(kq, (&mut v as *mut u64).cast(), 8) };
}
