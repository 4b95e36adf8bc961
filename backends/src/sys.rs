//! Thin helpers around libc shared by the backends.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Turns a `-1` return into the thread's errno.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(crate) use crate::error::context;

/// The resolution of a backend whose kernel call takes a `timespec` (or
/// `polling`'s timerfd): the timeout reaches the kernel unrounded.
pub(crate) const NANOSECOND: Duration = Duration::from_nanos(1);
/// The resolution of a backend that has only a millisecond wait
/// (epoll_wait, poll): see [`timeout_ms`].
pub(crate) const MILLISECOND: Duration = Duration::from_millis(1);

/// A wait timeout in milliseconds, for the calls that have nothing finer
/// (epoll_wait where the kernel lacks epoll_pwait2, poll where there is no
/// ppoll): `None` is -1 (forever), anything else is rounded *up*, so that a
/// 0.5 ms timeout does not become a busy 0 ms one and a wait never returns
/// before its timeout.
#[allow(dead_code)] // only where epoll or a poll without ppoll is built
pub(crate) fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(libc::c_int::MAX as u128) as libc::c_int
        }
    }
}

/// A wait timeout as a `timespec` (ppoll, kqueue, event ports), to the
/// nanosecond; `None` is forever.
pub(crate) fn timespec(timeout: Option<Duration>) -> Option<libc::timespec> {
    timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as _,
    })
}

/// Sets O_NONBLOCK and FD_CLOEXEC.
#[cfg_attr(any(target_os = "linux", target_os = "android"), allow(dead_code))]
pub(crate) fn set_nonblock_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own, with integer arguments only.
    unsafe {
        let fl = cvt(libc::fcntl(fd, libc::F_GETFL))?;
        cvt(libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK))?;
        let fd_fl = cvt(libc::fcntl(fd, libc::F_GETFD))?;
        cvt(libc::fcntl(fd, libc::F_SETFD, fd_fl | libc::FD_CLOEXEC))?;
    }
    Ok(())
}

/// A non-blocking, close-on-exec pipe: (read end, write end).
#[cfg_attr(any(target_os = "linux", target_os = "android"), allow(dead_code))]
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two c_ints for pipe() to fill.
    cvt(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
    // SAFETY: pipe() succeeded, so both fds are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    set_nonblock_cloexec(fds[0])?;
    set_nonblock_cloexec(fds[1])?;
    Ok((r, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_rounds_up() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_micros(500))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_millis(10))), 10);
        assert_eq!(timeout_ms(Some(Duration::from_secs(u64::MAX))), libc::c_int::MAX);
        // Never early: 1 ns past a whole millisecond is one more.
        assert_eq!(timeout_ms(Some(Duration::from_nanos(3_000_001))), 4);
    }

    #[test]
    fn timespec_is_not_rounded() {
        assert!(timespec(None).is_none());
        let ts = timespec(Some(Duration::new(3, 100_001))).unwrap();
        assert_eq!((ts.tv_sec, ts.tv_nsec), (3, 100_001));
    }
}
