//! # anypoll
//!
//! An event-loop framework for network daemons: one poller API over epoll,
//! kqueue, event ports, poll and select, chosen at run time.
//!
//! * [`backends`] (the `anypoll-backends` crate): the `Poller` trait, one
//!   file per backend, the registry.
//! * [`fd`]: the fd table and its state machine (speculative I/O, level vs
//!   edge, the update list).
//! * [`EventLoop`]: the loop that drives a [`Handler`] with I/O events,
//!   timers, a waker and signals ([`Signal`]), and counts every syscall it
//!   makes; generic over the backend (`EventLoop<P: Poller = AnyPoller>`).
//! * [`handle`]: [`LoopHandle`], how other threads queue fds and closures
//!   for a loop (which is single-threaded by design).
//! * [`error`]: [`LoopError`], the operation, fd and backend of the loop's
//!   errors, with the original errno kept.
//! * [`listener`]: accepting in bounded batches, pausing on EMFILE.
//! * [`connection`], [`raw_sock`], [`stream`]: a connection that owns its
//!   socket, the plain-socket transport, and two-way forwarding.
//! * [`transport`]: the [`Transport`](transport::Transport) seam (HAProxy's
//!   `xprt_ops`), which [`RawSock`](transport::RawSock) fills in.
//! * `tls` (feature `tls`): TLS over rustls, the second transport.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub use anypoll_backends as backends;

pub mod buffer;
pub mod channel;
pub mod connection;
pub mod counters;
pub mod error;
pub mod event_loop;
pub mod fd;
pub mod handle;
pub mod listener;
pub mod pipe;
pub mod raw_sock;
pub mod signal;
pub mod sockops;
pub mod stream;
pub mod sys;
pub mod timer;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;

pub use counters::Counters;
pub use error::{os_error, LoopError};
pub use event_loop::{Ctx, EventLoop, Handler, Io, IoEvent};
pub use fd::{Directions, FdState, Strategy};
pub use handle::LoopHandle;
pub use signal::Signal;
pub use timer::TimerId;
