//! Wakers: a handle that makes a waiting [`Poller::wait`](crate::Poller::wait)
//! return from another thread.
//!
//! | backend | mechanism |
//! |---|---|
//! | epoll, poll, select on Linux/Android | an eventfd, registered like any fd |
//! | poll, select elsewhere | a non-blocking pipe |
//! | kqueue | an `EVFILT_USER` event, added with `EV_CLEAR` (without it the event turns level-triggered and the loop spins) |
//! | event ports | `port_send` (no fd, so illumos bugs 16700 and 13436 about eventfd and pipe wakers do not apply) |
//! | compat | `polling::Poller::notify` |
//!
//! Wakes coalesce: many `wake()` calls before a wait give one
//! [`Events::woken`](crate::Events::woken).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// Something that can interrupt a poller's wait: what a [`Waker`] calls.
/// A backend of one's own implements it to build its
/// [`Poller::waker`](crate::Poller::waker) with [`Waker::new`].
pub trait Wake: Send + Sync {
    /// Makes the poller's current or next wait return.
    fn wake(&self) -> io::Result<()>;
}

/// Wakes a poller's wait from any thread. Cheap to clone.
#[derive(Clone)]
pub struct Waker {
    inner: Arc<dyn Wake>,
}

impl Waker {
    /// A waker that calls `inner`: how a backend outside this crate gives
    /// its [`Poller::waker`](crate::Poller::waker).
    pub fn new(inner: Arc<dyn Wake>) -> Waker {
        Waker { inner }
    }

    /// Makes the poller's current or next wait return with
    /// [`Events::woken`](crate::Events::woken) set.
    pub fn wake(&self) -> io::Result<()> {
        self.inner.wake()
    }
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waker")
    }
}

/// An fd-based waker: the backend watches [`FdWaker::fd`] for reading and
/// calls [`FdWaker::drain`] when it fires.
#[derive(Debug)]
pub(crate) struct FdWaker {
    read: OwnedFd,
    /// The pipe's write end; `None` for an eventfd, which is both ends.
    write: Option<OwnedFd>,
}

impl FdWaker {
    pub fn new() -> io::Result<FdWaker> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use std::os::fd::FromRawFd;
            // SAFETY: eventfd with constant flags; the result is checked.
            let fd = crate::sys::cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
            // SAFETY: eventfd() succeeded, so fd is open and ours alone.
            Ok(FdWaker { read: unsafe { OwnedFd::from_raw_fd(fd) }, write: None })
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let (read, write) = crate::sys::pipe()?;
            Ok(FdWaker { read, write: Some(write) })
        }
    }

    /// The fd to watch for reading.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Empties the counter or the pipe so the next wake gives a new event.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reading into a stack buffer of the given length from an fd we own.
            let n = unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // An eventfd is emptied by one 8-byte read; a pipe until EAGAIN.
            if n <= 0 || self.write.is_none() {
                break;
            }
        }
    }
}

impl Wake for FdWaker {
    fn wake(&self) -> io::Result<()> {
        let fd = self.write.as_ref().unwrap_or(&self.read).as_raw_fd();
        let one: u64 = 1;
        loop {
            // SAFETY: writing 8 bytes from a live u64 to an fd we own.
            let n = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                // Full pipe or saturated counter: a wake is already pending.
                io::ErrorKind::WouldBlock => return Ok(()),
                _ => return Err(err),
            }
        }
    }
}
