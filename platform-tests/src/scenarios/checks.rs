//! What every scenario shares: the checked waits ([`wait_checked`],
//! [`wait_for`], [`quiet`]), the `ensure!` macro, the timing constants and
//! the tokens.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use anypoll_backends::{AnyPoller, Capabilities, Event, Events, Poller, Ready, Token};

use crate::Stop;

/// How long to wait for an event that must come.
pub(super) const SOON: Duration = Duration::from_secs(2);
/// The window in which a silent registration must stay silent.
pub(super) const QUIET: Duration = Duration::from_millis(60);
/// How many times a wait may return early with nothing during a quiet
/// window before it counts as a busy loop.
const SPURIOUS_LIMIT: usize = 2;

pub(super) const T1: Token = Token(1);
pub(super) const T2: Token = Token(2);

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(Stop::Fail(format!($($fmt)+)));
        }
    };
}
pub(super) use ensure;

/// Adds a description to an I/O error and makes it a failure.
pub(super) trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, Stop>;
}

impl<T> Ctx<T> for io::Result<T> {
    fn ctx(self, what: &str) -> Result<T, Stop> {
        self.map_err(|e| Stop::Fail(format!("{what}: {e}")))
    }
}

pub(super) fn show(e: &Event) -> String {
    format!("{{token {} fd {} {:?}}}", e.token().0, e.fd(), e.ready())
}

pub(super) fn show_all(evs: &[Event]) -> String {
    if evs.is_empty() {
        "no event".to_string()
    } else {
        evs.iter().map(show).collect::<Vec<_>>().join(", ")
    }
}

pub(super) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One wait, with the invariants that hold for every event on every backend:
///
/// * `wait` returns `Ok(n)` with `n` the number of events, and no more
///   events than the buffer's capacity;
/// * no event is empty, and each is already normalized (ERROR never comes
///   with READABLE/WRITABLE/PRIORITY; HUP implies READ_CLOSED);
/// * no fd appears twice in one batch;
/// * a backend without ERRHUP reports neither ERROR nor HUP, and one with
///   neither ERRHUP nor RDHUP never READ_CLOSED.
pub fn wait_checked(p: &mut AnyPoller, ev: &mut Events, timeout: Option<Duration>) -> Result<Vec<Event>, Stop> {
    let caps = p.capabilities();
    let n = p.wait(ev, timeout).map_err(|e| Stop::Fail(format!("wait failed: {e}")))?;
    let evs: Vec<Event> = ev.iter().copied().collect();
    ensure!(n == evs.len(), "wait returned {n} but the buffer holds {} events ({})", evs.len(), show_all(&evs));
    ensure!(
        evs.len() <= ev.capacity(),
        "wait put {} events in a buffer of capacity {}: {}",
        evs.len(),
        ev.capacity(),
        show_all(&evs)
    );
    let mut seen: Vec<Event> = Vec::new();
    for e in &evs {
        let r = e.ready();
        ensure!(!r.is_empty(), "an event with an empty readiness: {}", show(e));
        ensure!(r == r.normalize(), "an event that is not normalized: {} (normalized: {:?})", show(e), r.normalize());
        // kqueue may report the read and write filters of one fd as two
        // events; anything else twice in a batch (same direction, or two
        // tokens for one fd) is a duplicate or a stale event.
        for o in seen.iter().filter(|o| o.fd() == e.fd()) {
            let both = o.ready() & r;
            ensure!(
                o.token() == e.token() && !both.intersects(Ready::READABLE | Ready::WRITABLE),
                "fd {} appears twice in one batch: {}",
                e.fd(),
                show_all(&evs)
            );
        }
        seen.push(*e);
        if !caps.contains(Capabilities::ERRHUP) {
            ensure!(!r.intersects(Ready::ERROR | Ready::HUP), "ERROR/HUP from a backend without ERRHUP: {}", show(e));
            if !caps.contains(Capabilities::RDHUP) {
                ensure!(!r.contains(Ready::READ_CLOSED), "READ_CLOSED from a backend without RDHUP: {}", show(e));
            }
        }
    }
    Ok(evs)
}

/// What `evs` says for `token`, which must come with `fd`. Two events for
/// one token (kqueue's read and write filters, see [`wait_checked`]) are
/// merged.
pub(super) fn one_for(evs: &[Event], token: Token, fd: RawFd) -> Result<Ready, Stop> {
    let mine: Vec<&Event> = evs.iter().filter(|e| e.token() == token).collect();
    ensure!(!mine.is_empty(), "expected an event for token {}, got {}", token.0, show_all(evs));
    for e in &mine {
        ensure!(e.fd() == fd, "token {} came with fd {}, expected fd {fd}", token.0, e.fd());
    }
    Ok(mine.iter().fold(Ready::empty(), |r, e| r | e.ready()).normalize())
}

/// Waits (as many times as needed, up to `within`) for an event for `token`.
pub(super) fn wait_for(
    p: &mut AnyPoller,
    ev: &mut Events,
    token: Token,
    fd: RawFd,
    within: Duration,
) -> Result<Ready, Stop> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let evs = wait_checked(p, ev, Some(left))?;
        if evs.iter().any(|e| e.token() == token) {
            return one_for(&evs, token, fd);
        }
        ensure!(Instant::now() < deadline, "no event for token {} (fd {fd}) within {}", token.0, ms(within));
    }
}

/// Silence for `window`: no event, no wake-up, and the wait really sleeps
/// (at most `spurious` early returns with nothing; more is a busy loop).
pub(super) fn quiet_with(
    p: &mut AnyPoller,
    ev: &mut Events,
    window: Duration,
    spurious: usize,
    what: &str,
) -> Result<(), Stop> {
    let start = Instant::now();
    let deadline = start + window;
    let mut early = 0usize;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let evs = wait_checked(p, ev, Some(left))?;
        ensure!(evs.is_empty(), "{what}: expected silence for {}, got {}", ms(window), show_all(&evs));
        ensure!(!ev.woken(), "{what}: expected silence for {}, but the wait says it was woken", ms(window));
        if Instant::now() >= deadline {
            return Ok(());
        }
        early += 1;
        ensure!(
            early <= spurious,
            "{what}: no event, but the wait returned early with nothing {early} times within {} \
             (the kernel keeps reporting a silenced fd: a busy loop)",
            ms(start.elapsed())
        );
    }
}

/// [`quiet_with`] allowing [`SPURIOUS_LIMIT`] early returns.
pub(super) fn quiet(p: &mut AnyPoller, ev: &mut Events, what: &str) -> Result<(), Stop> {
    quiet_with(p, ev, QUIET, SPURIOUS_LIMIT, what)
}

pub(super) fn fd_of(s: &impl AsRawFd) -> RawFd {
    s.as_raw_fd()
}
