//! Event loops for the tests: one per backend or the default one
//! ([`new_loop`], [`default_loop`], [`rdhup_loop`]), and [`drive`] /
//! [`assert_quiet`], which run one with an iteration budget.

use std::time::{Duration, Instant};

use anypoll::backends::registry::{self, Backend, Probe};
use anypoll::backends::Capabilities;
use anypoll::{Counters, EventLoop, Handler};

/// The backends built here whose `test()` passes, with their capabilities.
pub fn backends() -> Vec<(&'static Backend, Capabilities)> {
    let out: Vec<_> = registry::backends()
        .iter()
        .filter_map(|b| match b.test() {
            Probe::Ok(caps) => Some((b, caps)),
            _ => None,
        })
        .collect();
    assert!(!out.is_empty(), "no backend is available here");
    out
}

/// A loop on `b` with its default strategy.
pub fn new_loop(b: &Backend) -> EventLoop {
    let poller = b.create().unwrap_or_else(|e| panic!("{}: create: {e}", b.name));
    EventLoop::new(poller, None).unwrap_or_else(|e| panic!("{}: EventLoop::new: {e}", b.name))
}

/// The default backend's loop (`ANYPOLL_POLLER` or the best one).
pub fn default_loop() -> EventLoop {
    EventLoop::from_env().expect("a default backend")
}

/// A loop on a backend that reports a peer's shutdown (RDHUP): the default
/// one if it does, else the first that does (epoll or poll on Linux).
pub fn rdhup_loop() -> EventLoop {
    let mut el = default_loop();
    if el.cx().capabilities().contains(Capabilities::RDHUP) {
        return el;
    }
    let (b, _) =
        backends().into_iter().find(|(_, c)| c.contains(Capabilities::RDHUP)).expect("a backend that reports RDHUP");
    new_loop(b)
}

/// Runs `el` with `h` until `done(h)`, at most `limit` long (100 ms waits),
/// and returns the counters spent. Panics on timeout with the counters.
pub fn drive<H: Handler>(el: &mut EventLoop, h: &mut H, limit: Duration, mut done: impl FnMut(&H) -> bool) -> Counters {
    let start = *el.cx().counters();
    let end = Instant::now() + limit;
    while !done(h) {
        assert!(Instant::now() < end, "not done after {limit:?}: {}", el.cx().counters().since(&start));
        el.run_once(h, Some(Duration::from_millis(100))).expect("run_once");
    }
    el.cx().counters().since(&start)
}

/// Runs `el` for `dur` with 25 ms waits and asserts it stays idle: at most
/// `dur / 25 ms + 3` iterations and at most `max_calls` owner calls
/// (`calls(h)` counts them). Returns the counters spent.
pub fn assert_quiet<H: Handler>(
    what: &str,
    el: &mut EventLoop,
    h: &mut H,
    dur: Duration,
    max_calls: u64,
    calls: impl Fn(&H) -> u64,
) -> Counters {
    let start = *el.cx().counters();
    let calls0 = calls(h);
    let t = Instant::now();
    while t.elapsed() < dur {
        el.run_once(h, Some(Duration::from_millis(25))).expect("run_once");
    }
    let spent = el.cx().counters().since(&start);
    let budget = (dur.as_millis() / 25) as u64 + 3;
    assert!(spent.iterations <= budget, "{what}: the loop spins while idle: {spent} (budget {budget} iterations)");
    let made = calls(h) - calls0;
    assert!(made <= max_calls, "{what}: the owner was called {made} times while idle (max {max_calls}): {spent}");
    spent
}
