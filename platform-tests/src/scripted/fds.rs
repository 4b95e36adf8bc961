//! Plain fd helpers: an int socket option, `O_NONBLOCK`, and `FIONREAD` /
//! poll(2) probes that consume nothing.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// Sets an int socket option.
pub fn setsockopt_int(fd: RawFd, level: libc::c_int, opt: libc::c_int, val: libc::c_int) -> io::Result<()> {
    // SAFETY: `val` is a live c_int and its size is passed.
    let r = unsafe {
        libc::setsockopt(fd, level, opt, (&val as *const libc::c_int).cast(), std::mem::size_of_val(&val) as _)
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Bytes waiting in `fd`'s receive queue (`FIONREAD`).
pub fn pending_bytes(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is live.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int) };
    assert!(r == 0, "FIONREAD: {}", io::Error::last_os_error());
    n as usize
}

/// Waits until `fd` has at least `n` bytes queued (`FIONREAD`).
pub fn wait_pending(fd: RawFd, n: usize, limit: Duration) {
    let end = Instant::now() + limit;
    while pending_bytes(fd) < n {
        assert!(Instant::now() < end, "fd {fd}: {} of {n} bytes arrived in {limit:?}", pending_bytes(fd));
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// poll(2) on one fd without consuming anything; the revents.
pub fn poll_once(fd: RawFd, events: i16, timeout: Duration) -> i16 {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: one live pollfd is passed, with its count.
    let r = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) };
    assert!(r >= 0, "poll: {}", io::Error::last_os_error());
    p.revents
}

/// Waits until poll(2) reports one of `events` on `fd`.
pub fn wait_poll(fd: RawFd, events: i16, limit: Duration) -> i16 {
    let end = Instant::now() + limit;
    loop {
        let r = poll_once(fd, events, Duration::from_millis(10));
        if r & events != 0 {
            return r;
        }
        assert!(Instant::now() < end, "fd {fd}: poll never reported {events:#x} (last {r:#x})");
    }
}

/// Clears `O_NONBLOCK`.
pub fn set_blocking(fd: RawFd) {
    // SAFETY: fcntl with integer arguments on an fd the caller owns.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        assert!(fl >= 0 && libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) >= 0, "fcntl");
    }
}

/// Sets `O_NONBLOCK`.
pub fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl with integer arguments on an fd the caller owns.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        assert!(fl >= 0 && libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) >= 0, "fcntl");
    }
}
