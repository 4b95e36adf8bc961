//! Platform personalities: a scripted [`SockOps`] and the small rigs the
//! `tests/personality*.rs` tests drive with it.
//!
//! [`raw_sock`] makes every socket syscall through a
//! [`SockOps`]. [`Scripted`] wraps [`Real`] and, per operation, takes its
//! next outcome from a queue of [`Step`]s:
//!
//! * [`Step::Pass`]: make the real call;
//! * [`Step::Err`]: fail with that errno, without a syscall (ENOTCONN on a
//!   recv while connecting on illumos, EINPROGRESS on a send, EINTR storms,
//!   splice EBADF/ENOSYS…);
//! * [`Step::Short`]: make the real call with at most `n` bytes (a short
//!   read, write or splice that the kernel would be allowed to return);
//! * [`Step::Value`]: `so_error` only, return that value without a syscall.
//!
//! A queue can be tied to one fd (for splice: either end) or apply to every
//! fd; when the queues are empty an optional standing rule
//! ([`Scripted::always`]) applies, else the call passes through. Every call
//! is logged ([`Call`]) so that a test can assert "no recv was made after
//! the HUP" or "`SO_ERROR` was read exactly once".
//!
//! ```
//! use anypoll::sockops::SockOps;
//! use platform_tests::scripted::{Op, Scripted, Step};
//! use std::os::fd::AsRawFd;
//!
//! let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
//! let mut ops = Scripted::new();
//! // illumos: the first recv while connecting says ENOTCONN, then real calls.
//! ops.script_fd(Op::Recv, b.as_raw_fd(), [Step::Err(libc::ENOTCONN)]);
//! let mut buf = [0u8; 8];
//! let e = ops.recv(b.as_raw_fd(), &mut buf, 0).unwrap_err();
//! assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN));
//! ops.send(a.as_raw_fd(), b"hi", 0).unwrap();
//! assert_eq!(ops.recv(b.as_raw_fd(), &mut buf, 0).unwrap(), 2);
//! assert_eq!(ops.calls(Op::Recv), 2);
//! assert_eq!(ops.real_calls(Op::Recv), 1);
//! ```
//!
//! The rest of the module is what the personality tests share: a seeded
//! byte [`pattern`] and [`assert_bytes`] (exact, in order, no duplicates),
//! blocking [`Peer`] threads for the far ends, an [`Endpoint`] handler that
//! drives one connection through `raw_sock`, a [`StreamRig`] handler that
//! relays through a [`Stream`], and [`drive`] / [`assert_quiet`], which run a
//! loop with an iteration budget and prove that it does not spin.
//!
//! One file per piece, all re-exported here: `seam` (the scripted
//! `SockOps`), `bytes`, `fds`, `flags` (injected poll flags), `loops`, `peer`, `endpoint` and
//! `stream_rig`.
//!
//! [`raw_sock`]: anypoll::raw_sock
//! [`SockOps`]: anypoll::sockops::SockOps
//! [`Real`]: anypoll::sockops::Real
//! [`Stream`]: anypoll::stream::Stream

mod bytes;
mod endpoint;
mod fds;
mod flags;
mod loops;
mod peer;
mod seam;
mod stream_rig;

pub use bytes::{assert_bytes, checksum, pattern};
pub use endpoint::Endpoint;
pub use fds::{pending_bytes, poll_once, set_blocking, set_nonblocking, setsockopt_int, wait_pending, wait_poll};
pub use flags::PollFlag;
pub use loops::{assert_quiet, backends, default_loop, drive, new_loop, rdhup_loop};
pub use peer::{Peer, PeerEnd, Served};
pub use seam::{Call, Op, Scripted, Step};
pub use stream_rig::StreamRig;
