//! [`AnyPoller`]: the backend chosen at run time, dispatched with a `match`
//! (no vtable in the hot path).

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::{Capabilities, Events, Interest, Poller, Token, Trigger, Waker};

/// One of the backends built for this platform. Get one from
/// [`registry::choose`](crate::registry::choose) or
/// [`Backend::create`](crate::registry::Backend::create).
#[derive(Debug)]
pub enum AnyPoller {
    /// [`crate::epoll::Epoll`]
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Epoll(crate::epoll::Epoll),
    /// [`crate::kqueue::Kqueue`]
    #[cfg(anypoll_kqueue)]
    Kqueue(crate::kqueue::Kqueue),
    /// [`crate::kqueue_model::KqueueModel`]: a model, not the real OS.
    #[cfg(all(target_os = "linux", feature = "models"))]
    KqueueModel(crate::kqueue_model::KqueueModel),
    /// [`crate::kqueue::KqueueLibkqueue`]: the kqueue backend over libkqueue
    /// on Linux (feature `libkqueue`), not the real OS.
    #[cfg(all(target_os = "linux", feature = "libkqueue"))]
    KqueueLibkqueue(crate::kqueue::KqueueLibkqueue),
    /// [`crate::evports::EvPorts`]
    #[cfg(any(target_os = "illumos", target_os = "solaris"))]
    EvPorts(crate::evports::EvPorts<crate::evports::Sys>),
    /// [`crate::evports::EvPorts`] over [`crate::evports_model::Model`]: a
    /// model of illumos event ports (Linux, feature `models`).
    #[cfg(all(target_os = "linux", feature = "models"))]
    EvPortsModel(crate::evports::EvPorts<crate::evports_model::Model>),
    /// [`crate::poll::Poll`]
    Poll(crate::poll::Poll),
    /// [`crate::select::Select`]
    Select(crate::select::Select),
    /// [`crate::compat::Compat`] (feature `compat`)
    #[cfg(feature = "compat")]
    Compat(crate::compat::Compat),
}

macro_rules! dispatch {
    ($self:expr, $p:ident => $e:expr) => {
        match $self {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            AnyPoller::Epoll($p) => $e,
            #[cfg(anypoll_kqueue)]
            AnyPoller::Kqueue($p) => $e,
            #[cfg(all(target_os = "linux", feature = "models"))]
            AnyPoller::KqueueModel($p) => $e,
            #[cfg(all(target_os = "linux", feature = "libkqueue"))]
            AnyPoller::KqueueLibkqueue($p) => $e,
            #[cfg(any(target_os = "illumos", target_os = "solaris"))]
            AnyPoller::EvPorts($p) => $e,
            #[cfg(all(target_os = "linux", feature = "models"))]
            AnyPoller::EvPortsModel($p) => $e,
            AnyPoller::Poll($p) => $e,
            AnyPoller::Select($p) => $e,
            #[cfg(feature = "compat")]
            AnyPoller::Compat($p) => $e,
        }
    };
}

impl Poller for AnyPoller {
    #[inline]
    fn name(&self) -> &'static str {
        dispatch!(self, p => p.name())
    }
    #[inline]
    fn capabilities(&self) -> Capabilities {
        dispatch!(self, p => p.capabilities())
    }
    #[inline]
    fn add(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
        dispatch!(self, p => p.add(fd, token, interest, trigger))
    }
    #[inline]
    fn modify(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
        dispatch!(self, p => p.modify(fd, token, interest, trigger))
    }
    #[inline]
    fn delete(&mut self, fd: RawFd) -> io::Result<()> {
        dispatch!(self, p => p.delete(fd))
    }
    #[inline]
    fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        dispatch!(self, p => p.wait(events, timeout))
    }
    #[inline]
    fn timeout_resolution(&self) -> Duration {
        dispatch!(self, p => p.timeout_resolution())
    }
    #[inline]
    fn waker(&self) -> Waker {
        dispatch!(self, p => p.waker())
    }
    #[inline]
    fn fd_limit(&self) -> Option<RawFd> {
        dispatch!(self, p => p.fd_limit())
    }
}
