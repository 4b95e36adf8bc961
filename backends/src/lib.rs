//! # anypoll-backends
//!
//! One [`Poller`] trait over every readiness mechanism a Unix daemon meets:
//! [`epoll`] (Linux, Android), [`kqueue`] (macOS, the BSDs),
//! [event ports](evports) (illumos, Solaris), [`poll`] and
//! [`select`] (every Unix), plus `compat` (the default-on feature `compat`), a backend over the
//! `polling` crate. The backend is picked at **run time**: see
//! [`registry::choose`] for the order (API call > `--poller NAME` >
//! `ANYPOLL_POLLER=NAME` > best available).
//!
//! ## The contract every backend keeps
//!
//! * **Normalized readiness.** Each backend turns its native bits into a
//!   [`Ready`] in a pure function (`translate`) that has no `cfg` gate and is
//!   unit-tested on every host, so the kqueue and event-ports mappings are
//!   checked on Linux too.
//! * **Triggers are never downgraded.** Asking for a [`Trigger`] that the
//!   backend cannot do is an [`io::ErrorKind::Unsupported`] error that names
//!   the backend and the trigger. [`Capabilities`] tells what is possible.
//! * **No stale events.** Each registration gets a generation tag that rides
//!   in the kernel's user data. An event whose tag is not the fd's current
//!   one (the fd was closed without `delete` and its number reused, or the
//!   old file lives on in a `dup`) is dropped before it reaches the caller.
//! * **Silence means silence.** An fd with an empty [`Interest`], or a
//!   oneshot registration that fired and was not re-armed, reports nothing,
//!   not even ERR/HUP.
//! * **Errors say what failed and keep the errno.** A kernel error comes
//!   back with its own [`io::ErrorKind`], wrapping an [`OpError`] that names
//!   the backend, the operation and the fd and holds the original
//!   `io::Error`; [`os_error`] digs out its errno.
//! * **EINTR is not an error.** [`Poller::wait`] returns `Ok(0)` early so the
//!   caller can look at its signals.
//!
//! ## Example
//!
//! ```
//! use anypoll_backends::{registry, Events, Interest, Poller, Ready, Token, Trigger};
//! use std::os::fd::AsRawFd;
//! use std::os::unix::net::UnixStream;
//! use std::io::Write;
//! use std::time::Duration;
//!
//! // Any backend: here the best one for this platform.
//! let (mut poller, _source) = registry::choose(None, None).unwrap();
//! let (mut a, b) = UnixStream::pair().unwrap();
//! b.set_nonblocking(true).unwrap();
//! poller.add(b.as_raw_fd(), Token(7), Interest::READ, Trigger::Level).unwrap();
//! a.write_all(b"ping").unwrap();
//!
//! let mut events = Events::with_capacity(64);
//! poller.wait(&mut events, Some(Duration::from_secs(1))).unwrap();
//! let ev = events.iter().next().unwrap();
//! assert_eq!(ev.token(), Token(7));
//! assert!(ev.ready().contains(Ready::READABLE));
//! poller.delete(b.as_raw_fd()).unwrap();
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

mod any;
#[cfg(feature = "compat")]
pub mod compat;
pub mod epoll;
mod error;
mod event;
pub mod evports;
#[cfg(all(target_os = "linux", feature = "models"))]
pub mod evports_model;
pub mod kqueue;
#[cfg(all(target_os = "linux", feature = "models"))]
pub mod kqueue_model;
pub mod poll;
pub mod registry;
pub mod select;
mod slots;
mod sys;
mod waker;

pub use any::AnyPoller;
pub use error::{os_error, OpError};
pub use event::{Event, Events, Interest, Ready, Token, Trigger};
pub use waker::{Wake, Waker};

bitflags::bitflags! {
    /// What a backend can do. The core picks its strategy from these.
    ///
    /// | backend | LEVEL | EDGE | ONESHOT | EDGE_ONESHOT | RDHUP | ERRHUP | O1 | BATCH | FD_LIMIT |
    /// |---|---|---|---|---|---|---|---|---|---|
    /// | epoll   | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ |   |   |
    /// | kqueue  | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ |   |
    /// | evports | ✓ |   | ✓ |   | ¹ | ⁴ | ✓ |   |   |
    /// | poll    | ✓ |   | ✓ |   | ² | ✓ |   |   |   |
    /// | select  | ✓ |   | ✓ |   |   |   |   |   | ✓ |
    /// | compat  | ✓ | ³ | ✓ | ³ |   |   | ³ |   |   |
    ///
    /// ¹ only where the kernel defines POLLRDHUP; ² Linux only (POLLRDHUP);
    /// ³ as the `polling` crate does on this platform; ⁴ illumos reports a
    /// socket's pending error as IN/OUT, not ERR, so a failed connect is not
    /// seen as ERROR there.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Capabilities: u32 {
        /// Level-triggered registrations: an event repeats while the condition holds.
        const LEVEL = 1 << 0;
        /// Edge-triggered registrations: one event per change of state.
        const EDGE = 1 << 1;
        /// Oneshot registrations: one event, then silence until `modify` re-arms.
        const ONESHOT = 1 << 2;
        /// Reports a read shutdown by the peer on its own ([`Ready::READ_CLOSED`]
        /// without a recv returning 0).
        const RDHUP = 1 << 3;
        /// Reports ERR/HUP, and in particular reports a failed connect as
        /// [`Ready::ERROR`]. select does not, nor do event ports (illumos
        /// reports a pending socket error as IN/OUT): there a connect must
        /// be confirmed with `connect()` or `SO_ERROR`.
        const ERRHUP = 1 << 4;
        /// The cost of a wait grows with the active fds, not the registered ones.
        const O1 = 1 << 5;
        /// Interest changes travel with the wait (kqueue's changelist): no
        /// syscall per change.
        const BATCH = 1 << 6;
        /// Only fds below a fixed limit can be registered (select's FD_SETSIZE);
        /// see [`Poller::fd_limit`].
        const FD_LIMIT = 1 << 7;
        /// Edge-triggered oneshot registrations ([`Trigger::EdgeOneshot`]):
        /// one event per arm, re-armed by `modify`. The event loop does not
        /// use it; it is there for embedders that drive a [`Poller`] directly.
        const EDGE_ONESHOT = 1 << 8;
    }
}

impl Capabilities {
    /// Whether these capabilities allow `trigger`.
    pub fn allows(self, trigger: Trigger) -> bool {
        self.contains(trigger.capability())
    }
}

/// One readiness mechanism. Every backend implements it; [`AnyPoller`] holds
/// the one chosen at run time.
///
/// # Contract
///
/// The trait is raw-fd, as `polling`'s `add` is: the caller owns the fds
/// and names them by number. The backends only pass the numbers to
/// syscalls (or keep them in tables), so a wrong number is an error or a
/// stale report, never undefined behaviour. Call [`delete`](Poller::delete) before closing an
/// fd; if you forget, the generation tag still keeps the old fd's events away
/// from the next owner of the number, but backends that watch by number
/// (poll, select) keep polling it until you `add` the number again.
pub trait Poller {
    /// The backend's registry name (`"epoll"`, `"poll"`, …).
    fn name(&self) -> &'static str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Watches `fd` for `interest` with `trigger`, reporting `token`.
    ///
    /// Adding an fd number that is already registered replaces the old
    /// registration with a new generation: the backend takes it that the old
    /// fd was closed without `delete` and the number was reused. On epoll, an
    /// `EEXIST` from a `dup`ed fd is retried as a modify.
    ///
    /// # Errors
    /// `Unsupported` for a trigger the backend cannot do (the message names
    /// both), `InvalidInput` for an fd beyond [`fd_limit`](Poller::fd_limit),
    /// or the kernel's error, naming the fd and the backend (an [`OpError`]
    /// that keeps the original error: see [`os_error`] for its errno).
    fn add(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()>;

    /// Changes the interest, trigger or token of a registered fd. It also
    /// re-arms a oneshot registration. An empty interest silences the fd.
    ///
    /// # Errors
    /// `NotFound` when `fd` is not registered; otherwise as [`add`](Poller::add).
    fn modify(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()>;

    /// Stops watching `fd`. No event for it is reported afterwards, including
    /// from a `dup` of it.
    ///
    /// # Errors
    /// `NotFound` when `fd` is not registered.
    fn delete(&mut self, fd: RawFd) -> io::Result<()>;

    /// Waits for events, at most `timeout` (`None`: forever), and puts them
    /// in `events` (cleared first). Returns how many there are.
    ///
    /// A [`Waker`] call makes it return with [`Events::woken`] set. A signal
    /// makes it return `Ok(0)` early: EINTR is never an error. Otherwise a
    /// wait with nothing ready does not return before `timeout`, and the
    /// timeout reaches the kernel to the nanosecond where the kernel call
    /// takes a `timespec`; where it takes whole milliseconds, the timeout is
    /// rounded **up** (never early). [`timeout_resolution`](Poller::timeout_resolution)
    /// says which.
    ///
    /// # Portability
    ///
    /// | backend | kernel call | resolution |
    /// |---|---|---|
    /// | epoll | `epoll_pwait2` (Linux ≥ 5.11) | 1 ns |
    /// | epoll, older kernels | `epoll_wait`: the first wait's `ENOSYS` (or `EPERM` from a seccomp filter) switches to it | 1 ms, rounded up |
    /// | poll | `ppoll` (Linux, Android, FreeBSD, DragonFly, NetBSD, OpenBSD, illumos, Solaris) | 1 ns |
    /// | poll | `poll` (macOS, iOS and every other Unix) | 1 ms, rounded up |
    /// | kqueue | `kevent` with a `timespec` (capped at 100,000,000 s, for macOS) | 1 ns |
    /// | event ports | `port_getn` with a `timespec` (capped at `i32::MAX` s) | 1 ns |
    /// | select | `select` with a `timeval`, rounded up | 1 µs |
    /// | compat | `polling`: a timerfd on Linux and Android, a `timespec` on kqueue and event ports, `poll` (1 ms) elsewhere | as `polling` |
    ///
    /// Above these, the kernel adds its timer slack (50 µs by default on
    /// Linux) and the scheduling delay; a cap only ever ends a very long wait
    /// early with `Ok(0)`.
    fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize>;

    /// The step in which this backend's wait timeout reaches the kernel: a
    /// [`wait`](Poller::wait) ends no earlier than its timeout, and, load
    /// aside, less than this plus the kernel's timer slack after it. See the
    /// table on `wait`.
    ///
    /// The default, 1 ns, is right for a backend whose kernel call takes a
    /// `timespec` (kqueue, event ports); others override it.
    fn timeout_resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    /// A handle that wakes this poller's [`wait`](Poller::wait) from any thread.
    fn waker(&self) -> Waker;

    /// The first fd number this backend cannot watch, where there is one
    /// (select: `FD_SETSIZE`).
    fn fd_limit(&self) -> Option<RawFd> {
        None
    }
}

/// The error for a trigger that `backend` cannot do. It names both, and what
/// the backend can do instead.
pub fn unsupported_trigger(backend: &str, caps: Capabilities, trigger: Trigger) -> io::Error {
    let can: Vec<&str> = Trigger::ALL.into_iter().filter(|t| caps.allows(*t)).map(Trigger::name).collect();
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "the {backend} backend cannot do {}-triggered registrations (it can do: {})",
            trigger.name(),
            can.join(", ")
        ),
    )
}

/// Checks `trigger` against `caps`; see [`unsupported_trigger`].
pub(crate) fn check_trigger(backend: &str, caps: Capabilities, trigger: Trigger) -> io::Result<()> {
    if caps.allows(trigger) {
        Ok(())
    } else {
        Err(unsupported_trigger(backend, caps, trigger))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_trigger_names_backend_trigger_and_what_it_can_do() {
        let caps = Capabilities::LEVEL | Capabilities::ONESHOT;
        let e = check_trigger("poll", caps, Trigger::EdgeOneshot).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert_eq!(
            e.to_string(),
            "the poll backend cannot do edge-oneshot-triggered registrations (it can do: level, oneshot)"
        );
        let all = Capabilities::LEVEL | Capabilities::EDGE | Capabilities::ONESHOT;
        let e = unsupported_trigger("x", all | Capabilities::EDGE_ONESHOT, Trigger::Edge);
        assert!(e.to_string().ends_with("(it can do: level, edge, oneshot, edge-oneshot)"), "{e}");
        assert!(check_trigger("epoll", all | Capabilities::EDGE_ONESHOT, Trigger::EdgeOneshot).is_ok());
    }
}
