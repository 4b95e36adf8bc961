//! [`LoopError`]: the errors of the loop's own operations, with the
//! operation, the fd and the backend, and the original `io::Error` kept.
//!
//! The loop returns `io::Error`s, as every I/O library does. Those it makes
//! itself wrap a [`LoopError`]: the message names what failed, and the
//! original error stays reachable with its errno, through
//! [`LoopError::raw_os_error`], through [`os_error`] (for any `io::Error`,
//! wrapped or not), or through `source()`.
//!
//! ```
//! use anypoll::EventLoop;
//!
//! let mut el = EventLoop::from_env().unwrap();
//! let err = el.cx().deregister(12345).unwrap_err();
//! assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
//! let msg = err.to_string();
//! assert!(msg.contains("deregister") && msg.contains("fd 12345") && msg.contains(el.cx().backend()), "{msg}");
//! ```

use std::fmt;
use std::io;
use std::os::fd::RawFd;

/// What the loop was doing, on which fd and backend, and the error it got.
#[derive(Debug)]
pub struct LoopError {
    op: &'static str,
    fd: Option<RawFd>,
    backend: &'static str,
    source: io::Error,
}

impl LoopError {
    /// The operation: `"register"`, `"deregister"`, `"add"`, `"modify"`,
    /// `"delete"` (the kernel registration), `"wait"`.
    pub fn op(&self) -> &'static str {
        self.op
    }
    /// The fd, where the operation had one.
    pub fn fd(&self) -> Option<RawFd> {
        self.fd
    }
    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        self.backend
    }
    /// The original error.
    pub fn inner(&self) -> &io::Error {
        &self.source
    }
    /// The original error's errno, if it had one.
    pub fn raw_os_error(&self) -> Option<i32> {
        os_error(&self.source)
    }
}

impl fmt::Display for LoopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fd {
            Some(fd) => write!(f, "{} fd {fd} on the {} backend: {}", self.op, self.backend, self.source),
            None => write!(f, "{} on the {} backend: {}", self.op, self.backend, self.source),
        }
    }
}

impl std::error::Error for LoopError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// `source`, wrapped in a [`LoopError`] that names `op`, `fd` and
/// `backend`; the kind is kept.
pub(crate) fn wrap(op: &'static str, fd: Option<RawFd>, backend: &'static str, source: io::Error) -> io::Error {
    io::Error::new(source.kind(), LoopError { op, fd, backend, source })
}

/// An error the loop makes itself (no errno behind it), named like the
/// others.
pub(crate) fn new(
    op: &'static str,
    fd: Option<RawFd>,
    backend: &'static str,
    kind: io::ErrorKind,
    msg: &str,
) -> io::Error {
    wrap(op, fd, backend, io::Error::new(kind, msg.to_string()))
}

/// The errno of `e`, looking through the loop's [`LoopError`] and any
/// other wrapper that keeps its cause as the inner error.
pub fn os_error(e: &io::Error) -> Option<i32> {
    if let Some(errno) = e.raw_os_error() {
        return Some(errno);
    }
    let mut inner: &(dyn std::error::Error + 'static) = e.get_ref()?;
    loop {
        if let Some(io) = inner.downcast_ref::<io::Error>() {
            if let Some(errno) = io.raw_os_error() {
                return Some(errno);
            }
        }
        if let Some(le) = inner.downcast_ref::<LoopError>() {
            return le.raw_os_error();
        }
        inner = inner.source()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errno_survives_the_wrapping_and_the_message_names_everything() {
        let e = wrap("modify", Some(7), "epoll", io::Error::from_raw_os_error(libc::EBADF));
        assert_eq!(e.kind(), io::Error::from_raw_os_error(libc::EBADF).kind());
        assert_eq!(e.raw_os_error(), None, "io::Error::new never has one");
        assert_eq!(os_error(&e), Some(libc::EBADF));
        let le = e.get_ref().and_then(|i| i.downcast_ref::<LoopError>()).expect("a LoopError inside");
        assert_eq!(
            (le.op(), le.fd(), le.backend(), le.raw_os_error()),
            ("modify", Some(7), "epoll", Some(libc::EBADF))
        );
        let msg = e.to_string();
        assert!(msg.starts_with("modify fd 7 on the epoll backend: "), "{msg}");
        // Twice wrapped (a backend error that carries its errno inside).
        let backend = io::Error::other(io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(os_error(&wrap("delete", Some(3), "poll", backend)), Some(libc::ENOENT));
        let none = new("wait", None, "select", io::ErrorKind::Other, "no errno here");
        assert_eq!(os_error(&none), None);
        assert_eq!(none.to_string(), "wait on the select backend: no errno here");
    }
}
