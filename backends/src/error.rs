//! Errors that say what failed (backend, operation, fd) and keep the
//! kernel's own error, errno included.
//!
//! A backend error is an [`io::Error`] of the original kind whose payload is
//! an [`OpError`]. The payload holds the original `io::Error` untouched, so
//! its errno is still there: read it with [`os_error`], or get the whole
//! record with [`OpError::of`].
//!
//! ```
//! use anypoll_backends::{os_error, registry, Interest, OpError, Poller, Token, Trigger};
//!
//! let (mut poller, _) = registry::choose(None, None).unwrap();
//! // fd 999 is not open. epoll and event ports ask the kernel at once
//! // (EBADF); poll, select and kqueue find out at the next wait.
//! if let Err(e) = poller.add(999, Token(1), Interest::READ, Trigger::Level) {
//!     let op = OpError::of(&e).expect("a backend error");
//!     assert_eq!((op.backend(), op.fd()), (poller.name(), Some(999)));
//!     assert_eq!(os_error(&e), Some(libc::EBADF));
//!     assert_eq!(e.raw_os_error(), None); // the wrapper has no errno of its own
//! }
//! ```

use std::error::Error;
use std::fmt;
use std::io;
use std::os::fd::RawFd;

/// What a backend was doing when the kernel (or the `polling` crate) failed,
/// and the original error.
///
/// Its `Display` is the whole message, `epoll: epoll_ctl on fd 7: Bad file
/// descriptor (os error 9)`, because most callers print only the outer
/// error. [`source`](Error::source) is the original `io::Error`.
#[derive(Debug)]
pub struct OpError {
    backend: String,
    op: String,
    fd: Option<RawFd>,
    source: io::Error,
}

impl OpError {
    /// The record behind an error a backend returned, if it is one.
    pub fn of(err: &io::Error) -> Option<&OpError> {
        err.get_ref()?.downcast_ref::<OpError>()
    }

    /// The backend's registry name (`"epoll"`, `"kqueue"`, …).
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The operation that failed, as the syscall is spelled
    /// (`"epoll_ctl"`, `"kevent(EV_DELETE)"`, …).
    pub fn op(&self) -> &str {
        &self.op
    }

    /// The fd the operation was about, where there is one.
    pub fn fd(&self) -> Option<RawFd> {
        self.fd
    }

    /// The original error, unchanged.
    pub fn io_error(&self) -> &io::Error {
        &self.source
    }

    /// Wraps `err` with the backend, the operation and the fd: the one
    /// constructor, for the backends and for the layers above them (the
    /// framework's loop names its own operations, `"register"`, `"wait"`,
    /// … the same way). The result has `err`'s kind; its errno stays
    /// reachable through [`os_error`]. For an error with no errno behind
    /// it, wrap an `io::Error::new(kind, msg)`.
    ///
    /// ```
    /// use anypoll_backends::{os_error, OpError};
    /// use std::io;
    ///
    /// let e = OpError::wrap("poll", "register", Some(4), io::Error::from_raw_os_error(libc::EBADF));
    /// assert!(e.to_string().starts_with("poll: register on fd 4: "), "{e}");
    /// assert_eq!(os_error(&e), Some(libc::EBADF));
    /// ```
    pub fn wrap(backend: &str, op: &str, fd: Option<RawFd>, err: io::Error) -> io::Error {
        let kind = err.kind();
        io::Error::new(kind, OpError { backend: backend.to_string(), op: op.to_string(), fd, source: err })
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.backend, self.op)?;
        if let Some(fd) = self.fd {
            write!(f, " on fd {fd}")?;
        }
        write!(f, ": {}", self.source)
    }
}

impl Error for OpError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

/// [`OpError::wrap`], under the short name the backends' call sites use.
pub(crate) fn context(backend: &str, op: &str, fd: Option<RawFd>, err: io::Error) -> io::Error {
    OpError::wrap(backend, op, fd, err)
}

/// The errno behind `err`: its own [`raw_os_error`](io::Error::raw_os_error),
/// or the first one found down its chain of sources (through an
/// [`OpError`], or any error that wraps an `io::Error`). `None` when no OS
/// error is in the chain (e.g. an `Unsupported` trigger).
pub fn os_error(err: &io::Error) -> Option<i32> {
    // A chain longer than this is a cycle in someone's `source()`.
    const MAX_DEPTH: usize = 16;
    let mut cur: Option<&(dyn Error + 'static)> = Some(err);
    for _ in 0..MAX_DEPTH {
        let e = cur?;
        cur = match e.downcast_ref::<io::Error>() {
            Some(io) => match io.raw_os_error() {
                Some(n) => return Some(n),
                // `io::Error::source` skips its payload and goes to the
                // payload's source: look at the payload itself first.
                None => io.get_ref().map(|p| p as &(dyn Error + 'static)),
            },
            None => e.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ebadf() -> io::Error {
        io::Error::from_raw_os_error(libc::EBADF)
    }

    #[test]
    fn context_keeps_kind_errno_and_names_op_fd_backend() {
        let e = context("epoll", "epoll_ctl(ADD)", Some(7), ebadf());
        assert_eq!(e.kind(), ebadf().kind());
        assert_eq!(os_error(&e), Some(libc::EBADF));
        let op = OpError::of(&e).expect("an OpError payload");
        assert_eq!((op.backend(), op.op(), op.fd()), ("epoll", "epoll_ctl(ADD)", Some(7)));
        assert_eq!(op.io_error().raw_os_error(), Some(libc::EBADF));
        let msg = e.to_string();
        assert!(msg.starts_with("epoll: epoll_ctl(ADD) on fd 7: "), "{msg}");
        assert!(msg.ends_with(&ebadf().to_string()), "{msg}");
        // The chain reaches the original error.
        let src = e.source().and_then(|s| s.downcast_ref::<io::Error>()).expect("the original as source");
        assert_eq!(src.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn no_fd_no_on() {
        let e = context("poll", "poll", None, ebadf());
        assert!(e.to_string().starts_with("poll: poll: "), "{e}");
        assert_eq!(OpError::of(&e).and_then(OpError::fd), None);
    }

    #[test]
    fn os_error_walks_nested_and_foreign_wrappers() {
        assert_eq!(os_error(&ebadf()), Some(libc::EBADF));
        let twice = context("compat", "polling::Poller::add", Some(3), context("x", "y", None, ebadf()));
        assert_eq!(os_error(&twice), Some(libc::EBADF));
        let foreign = io::Error::other(ebadf());
        assert_eq!(os_error(&foreign), Some(libc::EBADF));
        let plain = io::Error::new(io::ErrorKind::Unsupported, "no errno here");
        assert_eq!(os_error(&plain), None);
        assert_eq!(OpError::of(&plain).map(OpError::op), None);
    }
}
