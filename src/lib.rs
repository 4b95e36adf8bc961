//! # anypoll
//!
//! An event-loop framework for network daemons: one poller API over epoll,
//! kqueue, event ports, poll and select, chosen at run time.
//!
//! Start with [`EventLoop`] and [`Handler`]; `examples/` has an echo
//! server, timers and a port forwarder, and `docs/design.md` says why the
//! pieces are as they are.
//!
//! # Modules
//!
//! * [`backends`]: the `anypoll-backends` crate: the `Poller` trait, one file per backend, the registry.
//! * [`event_loop`]: [`EventLoop`], [`Ctx`] and [`Handler`]: the single-threaded loop and what it calls.
//! * [`fd`]: the fd table and its state machine (speculative I/O, level vs edge, the update list).
//! * [`handle`]: [`LoopHandle`], how other threads queue fds and closures for a loop.
//! * [`timer`]: timers, a heap of deadlines with lazy cancellation ([`TimerId`]).
//! * [`signal`]: signals as loop events through a self-pipe ([`Signal`]).
//! * [`counters`]: the per-loop syscall and event counters ([`Counters`]).
//! * [`listener`]: accepting in bounded batches, pausing on EMFILE.
//! * [`connection`]: a connection that owns its socket, its registration and its state.
//! * [`transport`]: the [`Transport`](transport::Transport) seam (HAProxy's `xprt_ops`).
//! * [`raw_sock`]: the plain-socket transport, one behaviour over every platform's errnos.
//! * `tls` (feature `tls`): TLS over rustls, the second transport; it hides the fd's readiness.
//! * [`sockops`]: the seam between the transport and the kernel's socket calls.
//! * [`stream`]: two-way forwarding between two connections, with half-close.
//! * [`bufconn`]: a buffered connection for embedders (libevent's bufferevent): line and
//!   exact-count reads, a bounded output queue with watermarks, timeouts, half-close.
//! * [`channel`]: one direction of a stream: its buffer or pipe and its forwarding budget.
//! * [`buffer`]: ring buffers and their pool.
//! * [`pipe`]: pipes for splice, and their pool.
//!
//! # Errors
//!
//! Every error is an `io::Error`. Those the backends and the loop make wrap
//! an [`OpError`] (from `anypoll-backends`, the one mechanism for both):
//! the message names the backend, the operation and the fd, and the
//! kernel's errno stays reachable through [`os_error`], however deeply it
//! is wrapped.
//!
//! ```
//! use anypoll::{EventLoop, OpError};
//!
//! let mut el = EventLoop::from_env().unwrap();
//! let err = el.cx().deregister(12345).unwrap_err();
//! assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
//! let op = OpError::of(&err).expect("the loop's errors carry an OpError");
//! assert_eq!((op.backend(), op.op(), op.fd()), (el.cx().backend(), "deregister", Some(12345)));
//! assert!(err.to_string().starts_with(&format!("{}: deregister on fd 12345: ", el.cx().backend())), "{err}");
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub use anypoll_backends as backends;

pub mod bufconn;
pub mod buffer;
pub mod channel;
pub mod connection;
pub mod counters;
pub mod event_loop;
pub mod fd;
pub mod handle;
pub mod listener;
pub mod pipe;
pub mod raw_sock;
pub mod signal;
pub mod sockops;
pub mod stream;
mod sys;
pub mod timer;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;

pub use anypoll_backends::{os_error, OpError};
pub use counters::Counters;
pub use event_loop::{Ctx, EventLoop, Handler, Io, IoEvent, ShortRead};
pub use fd::{Directions, FdState, Strategy};
pub use handle::LoopHandle;
pub use signal::Signal;
pub use timer::TimerId;
