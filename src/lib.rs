//! # anypoll
//!
//! An event-loop framework for network daemons: one poller API over epoll,
//! kqueue, event ports, poll and select, chosen at run time. The backends
//! live in [`anypoll_backends`], re-exported here as [`backends`].

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub use anypoll_backends as backends;

pub mod cli;
pub mod demo;
