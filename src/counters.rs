//! Per-loop counters. `anypoll probe`, the benchmarks and the relay's
//! stats read them.
//!
//! `ctl` counts the poller's add/modify/delete calls. On epoll each is one
//! syscall; poll and select make none (their set lives in user space) and
//! kqueue batches them into the next wait, so there `ctl` over-counts the
//! syscalls made, never under-counts.

use std::fmt;

/// Counters of one event loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Loop iterations.
    pub iterations: u64,
    /// Poller waits (one syscall each).
    pub waits: u64,
    /// Poller add/modify/delete calls.
    pub ctl: u64,
    /// recv/read syscalls, EAGAIN ones included.
    pub reads: u64,
    /// send/write syscalls, EAGAIN ones included.
    pub writes: u64,
    /// accept syscalls, EAGAIN ones included.
    pub accepts: u64,
    /// splice syscalls, EAGAIN ones included.
    pub splices: u64,
    /// Connections that fell back from splice to recv/send (EBADF, ENOSYS…).
    pub splice_fallbacks: u64,
    /// Other syscalls made by the loop or its helpers (getsockopt, shutdown, close, splice…).
    pub other: u64,
    /// I/O calls that returned EAGAIN.
    pub eagain: u64,
    /// Events the poller returned.
    pub events: u64,
    /// Owner calls made without a new event (speculative I/O).
    pub spec_calls: u64,
    /// Events dropped because their fd had been closed and reused.
    pub stale: u64,
    /// Timers fired.
    pub timers: u64,
}

impl Counters {
    /// All syscalls counted.
    pub fn syscalls(&self) -> u64 {
        self.waits + self.ctl + self.reads + self.writes + self.accepts + self.splices + self.other
    }

    /// The difference `self - earlier`, field by field.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            iterations: self.iterations - earlier.iterations,
            waits: self.waits - earlier.waits,
            ctl: self.ctl - earlier.ctl,
            reads: self.reads - earlier.reads,
            writes: self.writes - earlier.writes,
            accepts: self.accepts - earlier.accepts,
            splices: self.splices - earlier.splices,
            splice_fallbacks: self.splice_fallbacks - earlier.splice_fallbacks,
            other: self.other - earlier.other,
            eagain: self.eagain - earlier.eagain,
            events: self.events - earlier.events,
            spec_calls: self.spec_calls - earlier.spec_calls,
            stale: self.stale - earlier.stale,
            timers: self.timers - earlier.timers,
        }
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "iterations={} syscalls={} (wait={} ctl={} read={} write={} accept={} splice={} other={}) eagain={} events={} speculative={} stale={} timers={} splice_fallbacks={}",
            self.iterations,
            self.syscalls(),
            self.waits,
            self.ctl,
            self.reads,
            self.writes,
            self.accepts,
            self.splices,
            self.other,
            self.eagain,
            self.events,
            self.spec_calls,
            self.stale,
            self.timers,
            self.splice_fallbacks
        )
    }
}
