//! The scenarios of the conformance matrix, in the order they are printed.
//!
//! Each one is strict: it checks what must happen *and* what must not (an
//! event before its time, a direction that was not asked for, ERROR with
//! READABLE, a wait that returns at once when it should sleep). Every wait
//! goes through [`wait_checked`], which also enforces the invariants that
//! hold for every event on every backend (see its docs).

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anypoll_backends::{AnyPoller, Capabilities, Event, Events, Interest, Poller, Ready, Token, Trigger};

use crate::net::{self, ConnectStart};
use crate::{Scenario, Stop, Subject};
use anypoll_backends::kqueue::deviations::{self, Deviation};

/// How long to wait for an event that must come.
const SOON: Duration = Duration::from_secs(2);
/// The window in which a silent registration must stay silent.
const QUIET: Duration = Duration::from_millis(60);
/// How many times a wait may return early with nothing during a quiet
/// window before it counts as a busy loop.
const SPURIOUS_LIMIT: usize = 2;

const T1: Token = Token(1);
const T2: Token = Token(2);

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(Stop::Fail(format!($($fmt)+)));
        }
    };
}

/// Adds a description to an I/O error and makes it a failure.
trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, Stop>;
}

impl<T> Ctx<T> for io::Result<T> {
    fn ctx(self, what: &str) -> Result<T, Stop> {
        self.map_err(|e| Stop::Fail(format!("{what}: {e}")))
    }
}

fn show(e: &Event) -> String {
    format!("{{token {} fd {} {:?}}}", e.token().0, e.fd(), e.ready())
}

fn show_all(evs: &[Event]) -> String {
    if evs.is_empty() {
        "no event".to_string()
    } else {
        evs.iter().map(show).collect::<Vec<_>>().join(", ")
    }
}

fn ms(d: Duration) -> String {
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
fn one_for(evs: &[Event], token: Token, fd: RawFd) -> Result<Ready, Stop> {
    let mine: Vec<&Event> = evs.iter().filter(|e| e.token() == token).collect();
    ensure!(!mine.is_empty(), "expected an event for token {}, got {}", token.0, show_all(evs));
    for e in &mine {
        ensure!(e.fd() == fd, "token {} came with fd {}, expected fd {fd}", token.0, e.fd());
    }
    Ok(mine.iter().fold(Ready::empty(), |r, e| r | e.ready()).normalize())
}

/// Waits (as many times as needed, up to `within`) for an event for `token`.
fn wait_for(p: &mut AnyPoller, ev: &mut Events, token: Token, fd: RawFd, within: Duration) -> Result<Ready, Stop> {
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
fn quiet_with(p: &mut AnyPoller, ev: &mut Events, window: Duration, spurious: usize, what: &str) -> Result<(), Stop> {
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
fn quiet(p: &mut AnyPoller, ev: &mut Events, what: &str) -> Result<(), Stop> {
    quiet_with(p, ev, QUIET, SPURIOUS_LIMIT, what)
}

fn fd_of(s: &impl AsRawFd) -> RawFd {
    s.as_raw_fd()
}

fn v4(addr: SocketAddr) -> Result<SocketAddrV4, Stop> {
    match addr {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(a) => Err(Stop::Fail(format!("expected an IPv4 address, got {a}"))),
    }
}

/// A recv after a reset: ECONNRESET or 0 (EOF).
fn recv_after_reset(mut s: impl Read) -> Result<String, Stop> {
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => Ok("recv returned 0".into()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok("recv failed with ECONNRESET".into()),
        Ok(n) => Err(Stop::Fail(format!("recv after the reset returned {n} bytes, expected ECONNRESET or 0"))),
        Err(e) => Err(Stop::Fail(format!("recv after the reset failed with {e}, expected ECONNRESET or 0"))),
    }
}

fn any(_: &Subject) -> Result<(), String> {
    Ok(())
}

// ---------------------------------------------------------------- basics

fn readable_after_write(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    quiet(p, &mut ev, "before the write (the fd is writable, but only READ is asked)")?;
    a.write_all(b"ping").ctx("write")?;
    let evs = wait_checked(p, &mut ev, Some(SOON))?;
    let r = one_for(&evs, T1, fd_of(&b))?;
    ensure!(r == Ready::READABLE, "after a write, expected exactly READABLE, got {r:?}");
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

fn writable_at_start(p: &mut AnyPoller) -> Result<(), Stop> {
    let (_a, b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::BOTH, Trigger::Level).ctx("add")?;
    let evs = wait_checked(p, &mut ev, Some(SOON))?;
    let r = one_for(&evs, T1, fd_of(&b))?;
    ensure!(r == Ready::WRITABLE, "a fresh socket with nothing to read: expected exactly WRITABLE, got {r:?}");
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

fn zero_timeout(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    let t = Instant::now();
    let evs = wait_checked(p, &mut ev, Some(Duration::ZERO))?;
    let took = t.elapsed();
    ensure!(evs.is_empty(), "a zero-timeout wait with nothing ready reported {}", show_all(&evs));
    ensure!(took < Duration::from_millis(100), "a zero-timeout wait took {}", ms(took));
    a.write_all(b"x").ctx("write")?;
    let evs = wait_checked(p, &mut ev, Some(Duration::ZERO))?;
    let r = one_for(&evs, T1, fd_of(&b))?;
    ensure!(r == Ready::READABLE, "expected READABLE from a zero-timeout wait, got {r:?}");
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

// ---------------------------------------------------------------- half-close and reset

fn half_close_readable(p: &mut AnyPoller) -> Result<(), Stop> {
    let (c, mut s) = net::tcp_pair().ctx("tcp pair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&s), T1, Interest::READ, Trigger::Level).ctx("add")?;
    net::shutdown_write(&c).ctx("shutdown(SHUT_WR)")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&s), SOON)?;
    ensure!(r.contains(Ready::READABLE), "after the peer's shutdown(SHUT_WR), expected READABLE, got {r:?}");
    ensure!(!r.intersects(Ready::HUP | Ready::ERROR), "a half-close is neither HUP nor ERROR, got {r:?}");
    let mut buf = [0u8; 8];
    let n = s.read(&mut buf).ctx("recv after the half-close")?;
    ensure!(n == 0, "recv after the peer's half-close returned {n} bytes, expected 0");
    p.delete(fd_of(&s)).ctx("delete")?;
    Ok(())
}

fn needs_rdhup(s: &Subject) -> Result<(), String> {
    if s.caps.contains(Capabilities::RDHUP) {
        Ok(())
    } else {
        Err(format!(
            "{} has no RDHUP: a half-close shows only as READABLE, then recv returns 0 (see half_close_readable)",
            s.name
        ))
    }
}

fn half_close_read_closed(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut c, mut s) = net::tcp_pair().ctx("tcp pair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&s), T1, Interest::READ, Trigger::Level).ctx("add")?;
    // Plain data first: READ_CLOSED must not show up before the shutdown.
    c.write_all(b"x").ctx("write")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&s), SOON)?;
    ensure!(r == Ready::READABLE, "data without a shutdown: expected exactly READABLE, got {r:?}");
    let got = net::drain(&mut s).ctx("recv")?;
    ensure!(got == 1, "read {got} bytes, expected 1");
    net::shutdown_write(&c).ctx("shutdown(SHUT_WR)")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&s), SOON)?;
    ensure!(
        r.contains(Ready::READ_CLOSED | Ready::READABLE),
        "after the peer's shutdown(SHUT_WR), expected READABLE | READ_CLOSED before any recv, got {r:?}"
    );
    ensure!(!r.intersects(Ready::HUP | Ready::ERROR), "a half-close is neither HUP nor ERROR, got {r:?}");
    let mut buf = [0u8; 8];
    let n = s.read(&mut buf).ctx("recv after the half-close")?;
    ensure!(n == 0, "recv after READ_CLOSED returned {n} bytes, expected 0");
    p.delete(fd_of(&s)).ctx("delete")?;
    Ok(())
}

fn needs_errhup_reset(s: &Subject) -> Result<(), String> {
    if s.caps.contains(Capabilities::ERRHUP) {
        Ok(())
    } else {
        Err(format!(
            "{} has no ERRHUP, so it cannot report ERROR or HUP: a reset shows as READABLE (see peer_reset_wakes_reader)",
            s.name
        ))
    }
}

fn peer_reset_error(p: &mut AnyPoller) -> Result<(), Stop> {
    let (c, s) = net::tcp_pair().ctx("tcp pair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&s), T1, Interest::READ, Trigger::Level).ctx("add")?;
    net::reset(c).ctx("reset (SO_LINGER {1, 0} + close)")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&s), SOON)?;
    ensure!(
        r.contains(Ready::ERROR) || r.contains(Ready::READ_CLOSED | Ready::HUP),
        "after the peer's reset, expected ERROR or READ_CLOSED | HUP, got {r:?}"
    );
    recv_after_reset(&s)?;
    p.delete(fd_of(&s)).ctx("delete")?;
    Ok(())
}

fn peer_reset_wakes_reader(p: &mut AnyPoller) -> Result<(), Stop> {
    let (c, s) = net::tcp_pair().ctx("tcp pair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&s), T1, Interest::READ, Trigger::Level).ctx("add")?;
    quiet(p, &mut ev, "before the reset")?;
    net::reset(c).ctx("reset (SO_LINGER {1, 0} + close)")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&s), SOON)?;
    ensure!(
        r.intersects(Ready::READABLE | Ready::ERROR | Ready::READ_CLOSED | Ready::HUP),
        "after the peer's reset, expected something that makes a reader recv, got {r:?}"
    );
    recv_after_reset(&s)?;
    p.delete(fd_of(&s)).ctx("delete")?;
    Ok(())
}

// ---------------------------------------------------------------- connects

/// A non-blocking connect to a port with nothing listening, still in
/// progress. A few tries, since a host may refuse inside connect() itself.
fn refused_connect() -> Result<std::net::TcpStream, Stop> {
    for _ in 0..3 {
        let addr = net::closed_port().ctx("finding a closed port")?;
        let (sock, start) = net::connect_nonblocking(addr).ctx("socket")?;
        match start {
            ConnectStart::InProgress => return Ok(sock),
            ConnectStart::Immediate(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            ConnectStart::Immediate(r) => {
                return Err(Stop::Fail(format!("connect to closed port {addr} gave {r:?}, expected EINPROGRESS")))
            }
        }
    }
    Err(Stop::Skip("the host refuses a loopback connect inside connect() itself: nothing is left to poll for".into()))
}

fn expect_refused(sock: &std::net::TcpStream) -> Result<(), Stop> {
    match sock.take_error().ctx("getsockopt(SO_ERROR)")? {
        Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        other => Err(Stop::Fail(format!("SO_ERROR after a refused connect: {other:?}, expected ECONNREFUSED"))),
    }
}

fn needs_errhup_connect(s: &Subject) -> Result<(), String> {
    if s.caps.contains(Capabilities::ERRHUP) {
        Ok(())
    } else {
        Err(format!("{} has no ERRHUP; connect must be confirmed with SO_ERROR (see refused_connect_so_error)", s.name))
    }
}

fn refused_connect_error(p: &mut AnyPoller) -> Result<(), Stop> {
    let sock = refused_connect()?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&sock), T1, Interest::BOTH, Trigger::Level).ctx("add")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&sock), SOON)?;
    ensure!(r.contains(Ready::ERROR), "a refused connect: expected ERROR, got {r:?}");
    ensure!(!r.intersects(Ready::READABLE | Ready::WRITABLE), "ERROR must come without READABLE/WRITABLE, got {r:?}");
    expect_refused(&sock)?;
    p.delete(fd_of(&sock)).ctx("delete")?;
    Ok(())
}

fn refused_connect_so_error(p: &mut AnyPoller) -> Result<(), Stop> {
    let sock = refused_connect()?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&sock), T1, Interest::WRITE, Trigger::Level).ctx("add")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&sock), SOON)?;
    ensure!(
        r.intersects(Ready::WRITABLE | Ready::ERROR),
        "a refused connect must wake a writer (WRITABLE or ERROR), got {r:?}"
    );
    expect_refused(&sock)?;
    p.delete(fd_of(&sock)).ctx("delete")?;
    Ok(())
}

fn pending_connect(p: &mut AnyPoller) -> Result<(), Stop> {
    // Backlog 0: the accept queue is full after one connection, so the
    // next SYN is dropped and that connect stays pending until we accept
    // the first one and the SYN is sent again (about 1 s later).
    let listener = net::listener_with_backlog(0).ctx("listener")?;
    let addr = v4(listener.local_addr().ctx("local_addr")?)?;
    let first = std::net::TcpStream::connect(addr).ctx("first connect")?;
    let (sock, start) = net::connect_nonblocking(addr).ctx("socket")?;
    match start {
        ConnectStart::InProgress => {}
        ConnectStart::Immediate(Ok(())) => {
            return Err(Stop::Skip("the host completed the connect inside connect(): it cannot be pending".into()))
        }
        ConnectStart::Immediate(Err(e)) => return Err(Stop::Fail(format!("connect to the listener failed: {e}"))),
    }
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&sock), T1, Interest::BOTH, Trigger::Level).ctx("add")?;
    let evs = wait_checked(p, &mut ev, Some(Duration::from_millis(150)))?;
    if !evs.is_empty() {
        if sock.peer_addr().is_ok() {
            return Err(Stop::Skip(
                "the host completed a connect to a full accept queue, so it cannot be held pending".into(),
            ));
        }
        return Err(Stop::Fail(format!("an event while the connect is still pending: {}", show_all(&evs))));
    }
    ensure!(sock.peer_addr().is_err(), "the connect completed, but no event was reported");
    // Make room in the queue; the retransmitted SYN then completes the connect.
    let (accepted, _) = listener.accept().ctx("accept")?;
    let t = Instant::now();
    let r = wait_for(p, &mut ev, T1, fd_of(&sock), Duration::from_secs(5))?;
    ensure!(
        r == Ready::WRITABLE,
        "a connect that completed: expected exactly WRITABLE, got {r:?} after {}",
        ms(t.elapsed())
    );
    match sock.take_error().ctx("getsockopt(SO_ERROR)")? {
        None => {}
        Some(e) => return Err(Stop::Fail(format!("SO_ERROR after a completed connect: {e}"))),
    }
    sock.peer_addr().ctx("getpeername after WRITABLE")?;
    p.delete(fd_of(&sock)).ctx("delete")?;
    drop((accepted, first));
    Ok(())
}

// ---------------------------------------------------------------- triggers

fn level_repeats(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, mut b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    a.write_all(b"x").ctx("write")?;
    for i in 1..=3 {
        let evs = wait_checked(p, &mut ev, Some(SOON))?;
        let r = one_for(&evs, T1, fd_of(&b)).map_err(|e| match e {
            Stop::Fail(m) => Stop::Fail(format!("level wait {i} of 3 (nothing read yet): {m}")),
            s => s,
        })?;
        ensure!(r == Ready::READABLE, "level wait {i}: expected READABLE, got {r:?}");
    }
    let n = net::drain(&mut b).ctx("recv")?;
    ensure!(n == 1, "read {n} bytes, expected 1");
    quiet(p, &mut ev, "after draining a level registration")?;
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

fn needs_edge(s: &Subject) -> Result<(), String> {
    if s.caps.contains(Capabilities::EDGE) {
        Ok(())
    } else {
        Err(format!("{} cannot do edge-triggered registrations (see edge_refused)", s.name))
    }
}

fn edge_once_per_edge(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, mut b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Edge).ctx("add")?;
    a.write_all(b"x").ctx("write")?;
    let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b))?;
    ensure!(r == Ready::READABLE, "first edge: expected READABLE, got {r:?}");
    quiet(p, &mut ev, "edge: a second wait without reading")?;
    a.write_all(b"y").ctx("write")?;
    let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b)).map_err(|e| match e {
        Stop::Fail(m) => Stop::Fail(format!("edge: a new write must give a new event: {m}")),
        s => s,
    })?;
    ensure!(r == Ready::READABLE, "second edge: expected READABLE, got {r:?}");
    quiet(p, &mut ev, "edge: after the second event")?;
    let n = net::drain(&mut b).ctx("recv")?;
    ensure!(n == 2, "read {n} bytes, expected 2");
    quiet(p, &mut ev, "edge: after draining")?;
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

fn lacks_edge(s: &Subject) -> Result<(), String> {
    if s.caps.contains(Capabilities::EDGE) {
        Err(format!("{} can do edge-triggered registrations (see edge_once_per_edge)", s.name))
    } else {
        Ok(())
    }
}

/// `r` must be the loud refusal of a trigger spelled `t`: `Unsupported`,
/// naming the backend and the trigger.
fn check_unsupported(name: &str, what: &str, t: &str, r: io::Result<()>) -> Result<(), Stop> {
    let e = match r {
        Ok(()) => {
            return Err(Stop::Fail(format!("{what} with the {t} trigger succeeded on {name}, which cannot do it")))
        }
        Err(e) => e,
    };
    ensure!(e.kind() == io::ErrorKind::Unsupported, "{what} with the {t} trigger: expected Unsupported, got {e:?}");
    let msg = e.to_string();
    ensure!(
        msg.contains(name) && msg.contains(t),
        "{what} with the {t} trigger: the error must name the backend and {t:?}: {msg:?}"
    );
    Ok(())
}

/// A refused `trigger` (spelled `t` in the error) leaves nothing behind on
/// add, and keeps the level registration on modify.
fn trigger_refused(p: &mut AnyPoller, trigger: Trigger, t: &str) -> Result<(), Stop> {
    let name = p.name();
    let (mut a, b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    check_unsupported(name, "add", t, p.add(fd_of(&b), T1, Interest::READ, trigger))?;
    match p.delete(fd_of(&b)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return Err(Stop::Fail(format!("a refused add must leave nothing registered; delete gave {other:?}"))),
    }
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add (level)")?;
    check_unsupported(name, "modify", t, p.modify(fd_of(&b), T2, Interest::READ, trigger))?;
    // The level registration is untouched: same token, still level.
    a.write_all(b"x").ctx("write")?;
    for _ in 0..2 {
        let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b)).map_err(|e| match e {
            Stop::Fail(m) => Stop::Fail(format!("after a refused modify, the level registration must be kept: {m}")),
            s => s,
        })?;
        ensure!(r == Ready::READABLE, "expected READABLE, got {r:?}");
    }
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

fn edge_refused(p: &mut AnyPoller) -> Result<(), Stop> {
    trigger_refused(p, Trigger::Edge, "edge")
}

fn needs_edge_oneshot(s: &Subject) -> Result<(), String> {
    if s.caps.contains(Capabilities::EDGE_ONESHOT) {
        Ok(())
    } else {
        Err(format!("{} cannot do edge-oneshot registrations (see edge_oneshot_refused)", s.name))
    }
}

fn lacks_edge_oneshot(s: &Subject) -> Result<(), String> {
    if s.caps.contains(Capabilities::EDGE_ONESHOT) {
        Err(format!("{} can do edge-oneshot registrations (see edge_oneshot_once_per_arm)", s.name))
    } else {
        Ok(())
    }
}

/// Adds context to a failure of an edge-oneshot step.
fn step<T>(what: &str, r: Result<T, Stop>) -> Result<T, Stop> {
    r.map_err(|e| match e {
        Stop::Fail(m) => Stop::Fail(format!("edge-oneshot, {what}: {m}")),
        s => s,
    })
}

fn edge_oneshot_once_per_arm(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, mut b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::EdgeOneshot).ctx("add")?;
    quiet(p, &mut ev, "edge-oneshot: armed, nothing to read yet")?;
    a.write_all(b"x").ctx("write")?;
    let r = step("the first write", one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b)))?;
    ensure!(r == Ready::READABLE, "edge-oneshot: expected READABLE, got {r:?}");
    quiet(p, &mut ev, "edge-oneshot: after it fired (data unread)")?;
    // A new edge while disarmed: still nothing.
    a.write_all(b"y").ctx("write")?;
    quiet(p, &mut ev, "edge-oneshot: new data while disarmed, before modify")?;
    // Drained, then re-armed: no data, so no event until the next write.
    let n = net::drain(&mut b).ctx("recv")?;
    ensure!(n == 2, "read {n} bytes, expected 2");
    p.modify(fd_of(&b), T1, Interest::READ, Trigger::EdgeOneshot).ctx("modify (re-arm, drained)")?;
    quiet(p, &mut ev, "edge-oneshot: re-armed with nothing to read")?;
    a.write_all(b"z").ctx("write")?;
    let r = step("a write after the re-arm", one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b)))?;
    ensure!(r == Ready::READABLE, "edge-oneshot re-armed: expected READABLE, got {r:?}");
    quiet(p, &mut ev, "edge-oneshot: after the second arm fired")?;
    net::drain(&mut b).ctx("recv")?;
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

/// What epoll does (`EPOLL_CTL_MOD` polls the fd): re-arming while data is
/// still unread fires at once, although no new data came; kqueue's
/// `EV_ENABLE` re-checks the filter the same way.
fn edge_oneshot_rearm_pending(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, mut b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::EdgeOneshot).ctx("add")?;
    a.write_all(b"x").ctx("write")?;
    step("the write", one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b)))?;
    quiet(p, &mut ev, "edge-oneshot: after it fired (data unread)")?;
    p.modify(fd_of(&b), T2, Interest::READ, Trigger::EdgeOneshot).ctx("modify (re-arm, data pending)")?;
    let r = step(
        "re-armed with data unread, it must fire (as epoll does)",
        one_for(&wait_checked(p, &mut ev, Some(SOON))?, T2, fd_of(&b)),
    )?;
    ensure!(r == Ready::READABLE, "edge-oneshot re-armed over pending data: expected READABLE, got {r:?}");
    quiet(p, &mut ev, "edge-oneshot: after the re-arm fired (data still unread)")?;
    let n = net::drain(&mut b).ctx("recv")?;
    ensure!(n == 1, "read {n} bytes, expected 1");
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

fn edge_oneshot_refused(p: &mut AnyPoller) -> Result<(), Stop> {
    trigger_refused(p, Trigger::EdgeOneshot, "edge-oneshot")
}

fn oneshot_until_rearmed(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, mut b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Oneshot).ctx("add")?;
    a.write_all(b"x").ctx("write")?;
    let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b))?;
    ensure!(r == Ready::READABLE, "oneshot: expected READABLE, got {r:?}");
    quiet(p, &mut ev, "oneshot: after it fired (data still unread)")?;
    p.modify(fd_of(&b), T1, Interest::READ, Trigger::Oneshot).ctx("modify (re-arm)")?;
    let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b)).map_err(|e| match e {
        Stop::Fail(m) => Stop::Fail(format!("oneshot: re-armed with modify, it must fire again: {m}")),
        s => s,
    })?;
    ensure!(r == Ready::READABLE, "oneshot re-armed: expected READABLE, got {r:?}");
    quiet(p, &mut ev, "oneshot: after it fired the second time")?;
    net::drain(&mut b).ctx("recv")?;
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

fn oneshot_silent_on_reset(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut c, s) = net::tcp_pair().ctx("tcp pair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&s), T1, Interest::READ, Trigger::Oneshot).ctx("add")?;
    c.write_all(b"x").ctx("write")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&s), SOON)?;
    ensure!(r == Ready::READABLE, "oneshot: expected READABLE, got {r:?}");
    net::reset(c).ctx("reset")?;
    thread::sleep(Duration::from_millis(10));
    quiet(p, &mut ev, "a fired oneshot whose peer then reset (not even ERROR/HUP may come)")?;
    p.modify(fd_of(&s), T1, Interest::READ, Trigger::Oneshot).ctx("modify (re-arm)")?;
    let r = wait_for(p, &mut ev, T1, fd_of(&s), SOON)?;
    ensure!(!r.is_empty(), "re-armed after the reset: expected an event");
    p.delete(fd_of(&s)).ctx("delete")?;
    Ok(())
}

// ---------------------------------------------------------------- modify and delete

fn modify_empty_silent(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::BOTH, Trigger::Level).ctx("add")?;
    a.write_all(b"x").ctx("write")?;
    let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b))?;
    ensure!(r == Ready::READABLE | Ready::WRITABLE, "expected READABLE | WRITABLE, got {r:?}");
    p.modify(fd_of(&b), T1, Interest::empty(), Trigger::Level).ctx("modify to an empty interest")?;
    quiet(p, &mut ev, "after modify to an empty interest (readable and writable fd)")?;
    p.modify(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("modify back to READ")?;
    let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b))?;
    ensure!(r == Ready::READABLE, "modified back to READ: expected READABLE, got {r:?}");
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

fn modify_empty_silent_after_reset(p: &mut AnyPoller) -> Result<(), Stop> {
    let (c, s) = net::tcp_pair().ctx("tcp pair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&s), T1, Interest::BOTH, Trigger::Level).ctx("add")?;
    net::reset(c).ctx("reset")?;
    // Wait until the reset is seen (anything but plain WRITABLE).
    let deadline = Instant::now() + SOON;
    loop {
        let r = wait_for(p, &mut ev, T1, fd_of(&s), SOON)?;
        if r != Ready::WRITABLE {
            break;
        }
        ensure!(Instant::now() < deadline, "the reset was never reported (only WRITABLE)");
        thread::sleep(Duration::from_millis(5));
    }
    p.modify(fd_of(&s), T1, Interest::empty(), Trigger::Level).ctx("modify to an empty interest")?;
    quiet(p, &mut ev, "a reset socket with an empty interest (not even ERROR/HUP may come)")?;
    p.delete(fd_of(&s)).ctx("delete")?;
    Ok(())
}

fn delete_silent(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    a.write_all(b"x").ctx("write")?;
    one_for(&wait_checked(p, &mut ev, Some(SOON))?, T1, fd_of(&b))?;
    let dup = b.try_clone().ctx("dup")?;
    p.delete(fd_of(&b)).ctx("delete")?;
    quiet(p, &mut ev, "after delete (the fd, and a dup of it, are still open and readable)")?;
    match p.delete(fd_of(&b)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return Err(Stop::Fail(format!("a second delete: expected NotFound, got {other:?}"))),
    }
    drop(dup);
    Ok(())
}

fn modify_changes_token(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    p.modify(fd_of(&b), T2, Interest::READ, Trigger::Level).ctx("modify")?;
    a.write_all(b"x").ctx("write")?;
    let evs = wait_checked(p, &mut ev, Some(SOON))?;
    ensure!(!evs.iter().any(|e| e.token() == T1), "the old token still comes: {}", show_all(&evs));
    one_for(&evs, T2, fd_of(&b))?;
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

fn add_again_replaces(p: &mut AnyPoller) -> Result<(), Stop> {
    let (mut a, b) = net::unix_pair().ctx("socketpair")?;
    let mut ev = Events::with_capacity(16);
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    p.add(fd_of(&b), T2, Interest::READ, Trigger::Level).ctx("a second add of the same open fd")?;
    a.write_all(b"x").ctx("write")?;
    let evs = wait_checked(p, &mut ev, Some(SOON))?;
    ensure!(!evs.iter().any(|e| e.token() == T1), "the replaced token still comes: {}", show_all(&evs));
    one_for(&evs, T2, fd_of(&b))?;
    p.delete(fd_of(&b)).ctx("delete")?;
    match p.delete(fd_of(&b)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return Err(Stop::Fail(format!("one delete must remove the fd; a second gave {other:?}"))),
    }
    Ok(())
}

fn names_fd(msg: &str, fd: RawFd) -> bool {
    let want = fd.to_string();
    msg.split(|c: char| !c.is_ascii_digit()).any(|w| w == want)
}

fn not_registered_errors(p: &mut AnyPoller) -> Result<(), Stop> {
    let name = p.name();
    let (_a, b) = net::unix_pair().ctx("socketpair")?;
    let fd = fd_of(&b);
    let check = |what: &str, r: io::Result<()>| -> Result<(), Stop> {
        match r {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let msg = e.to_string();
                ensure!(names_fd(&msg, fd), "{what}: the NotFound error must name fd {fd}: {msg:?}");
                ensure!(msg.contains(name), "{what}: the NotFound error must name the backend {name}: {msg:?}");
                Ok(())
            }
            other => Err(Stop::Fail(format!("{what} of an unregistered fd: expected NotFound, got {other:?}"))),
        }
    };
    check("delete", p.delete(fd))?;
    check("modify", p.modify(fd, T1, Interest::READ, Trigger::Level))?;
    p.add(fd, T1, Interest::READ, Trigger::Level).ctx("add")?;
    p.delete(fd).ctx("delete")?;
    check("delete after delete", p.delete(fd))?;
    Ok(())
}

// ---------------------------------------------------------------- stale events

/// A Unix pair whose reading end has the fd number `n` (which must be free):
/// (writer, reader).
fn pair_numbered(n: RawFd) -> Result<(UnixStream, UnixStream), Stop> {
    let (x, y) = net::unix_pair().ctx("socketpair")?;
    if fd_of(&y) == n {
        return Ok((x, y));
    }
    if fd_of(&x) == n {
        return Ok((y, x));
    }
    let y = OwnedFd::from(y);
    // SAFETY: `n` was closed just before this call and nothing else in the
    // process opens fds meanwhile (the matrix runs on one thread), so the
    // number is free and becomes ours.
    let moved = unsafe { net::dup2_onto(y.as_raw_fd(), n) }.ctx("dup2 onto the old number")?;
    drop(y);
    ensure!(moved.as_raw_fd() == n, "could not give the new socket fd number {n}");
    Ok((x, UnixStream::from(moved)))
}

/// Registers a readable socket with T1 and closes it without delete
/// (keeping a dup of it open if `keep`); returns its number and the dup.
fn register_then_close(
    p: &mut AnyPoller,
    ev: &mut Events,
    keep: bool,
) -> Result<(RawFd, Option<UnixStream>, UnixStream), Stop> {
    let (mut a, b) = net::unix_pair().ctx("socketpair")?;
    let n = fd_of(&b);
    p.add(n, T1, Interest::READ, Trigger::Level).ctx("add")?;
    a.write_all(b"old").ctx("write")?;
    one_for(&wait_checked(p, ev, Some(SOON))?, T1, n)?;
    let dup = if keep { Some(b.try_clone().ctx("dup")?) } else { None };
    drop(b);
    Ok((n, dup, a))
}

fn stale_reused_fd(p: &mut AnyPoller) -> Result<(), Stop> {
    let mut ev = Events::with_capacity(16);
    let (n, _, _old_writer) = register_then_close(p, &mut ev, false)?;
    let (mut c, d) = pair_numbered(n)?;
    p.add(n, T2, Interest::READ, Trigger::Level).ctx("add of a reused fd number (closed without delete)")?;
    quiet(p, &mut ev, "the new socket on the reused number is not readable")?;
    c.write_all(b"new").ctx("write")?;
    let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T2, n)?;
    ensure!(r == Ready::READABLE, "the new registration: expected READABLE, got {r:?}");
    p.delete(n).ctx("delete")?;
    drop(d);
    Ok(())
}

fn stale_reused_fd_dup(p: &mut AnyPoller) -> Result<(), Stop> {
    let mut ev = Events::with_capacity(16);
    let (n, dup, _old_writer) = register_then_close(p, &mut ev, true)?;
    let (mut c, d) = pair_numbered(n)?;
    p.add(n, T2, Interest::READ, Trigger::Level).ctx("add of a reused fd number (old file alive in a dup)")?;
    // epoll keeps the old (number, file) pair in its set while the dup
    // lives; its events carry the old generation and must be dropped. The
    // wait may then return early with nothing: that is allowed here (the
    // contract asks for delete before close), an event is not.
    quiet_with(p, &mut ev, QUIET, usize::MAX, "the new socket on the reused number is not readable")?;
    c.write_all(b"new").ctx("write")?;
    let r = one_for(&wait_checked(p, &mut ev, Some(SOON))?, T2, n)?;
    ensure!(r == Ready::READABLE, "the new registration: expected READABLE, got {r:?}");
    p.delete(n).ctx("delete")?;
    drop((d, dup));
    Ok(())
}

fn stale_in_batch(p: &mut AnyPoller) -> Result<(), Stop> {
    let mut ev = Events::with_capacity(16);
    let (n, dup, _old_writer) = register_then_close(p, &mut ev, true)?;
    let (mut c, d) = pair_numbered(n)?;
    // Both the old file (through the dup) and the new one are readable, so
    // a kernel that still holds the old pair reports both in one batch.
    c.write_all(b"new").ctx("write")?;
    p.add(n, T2, Interest::READ, Trigger::Level).ctx("add of a reused fd number (old file alive in a dup)")?;
    let evs = wait_checked(p, &mut ev, Some(SOON))?;
    ensure!(!evs.iter().any(|e| e.token() == T1), "the old registration's token came: {}", show_all(&evs));
    ensure!(evs.len() == 1, "expected exactly one event (the new file's), got {}", show_all(&evs));
    let r = one_for(&evs, T2, n)?;
    ensure!(r == Ready::READABLE, "expected READABLE, got {r:?}");
    p.delete(n).ctx("delete")?;
    drop((d, dup));
    Ok(())
}

// ---------------------------------------------------------------- time, waker, signals

fn timeout_10ms(p: &mut AnyPoller) -> Result<(), Stop> {
    let (_a, b) = net::unix_pair().ctx("socketpair")?;
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    let mut ev = Events::with_capacity(16);
    let want = Duration::from_millis(10);
    let mut took = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let evs = wait_checked(p, &mut ev, Some(want))?;
        let d = t.elapsed();
        ensure!(evs.is_empty(), "nothing is ready, yet the wait reported {}", show_all(&evs));
        ensure!(d >= want, "a 10 ms wait returned after {}", ms(d));
        took.push(d);
    }
    took.sort();
    let median = took[took.len() / 2];
    ensure!(median < Duration::from_millis(50), "a 10 ms wait took {} (median of 7)", ms(median));
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

/// How close to the asked timeout the best of [`PRECISION_TRIES`] waits must
/// end.
const PRECISION_SLACK: Duration = Duration::from_micros(500);
/// Tries per timeout in [`timeout_precision`]: the best one counts, so a
/// busy shared host does not make it fail.
const PRECISION_TRIES: usize = 50;

/// Sub-millisecond timeouts: a 100 µs and a 3.1 ms wait with nothing ready
/// each return no earlier than asked, every time, and within
/// [`PRECISION_SLACK`] of it at best. A backend whose kernel call takes
/// whole milliseconds says so through its resolution, and is skipped.
fn timeout_precision(p: &mut AnyPoller) -> Result<(), Stop> {
    let res = p.timeout_resolution();
    if res > PRECISION_SLACK {
        return Err(Stop::Skip(format!(
            "{} waits in steps of {:?} here: a 100 µs timeout cannot end within {:?} of it",
            p.name(),
            res,
            PRECISION_SLACK
        )));
    }
    let (_a, b) = net::unix_pair().ctx("socketpair")?;
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    let mut ev = Events::with_capacity(16);
    for want in [Duration::from_micros(100), Duration::from_micros(3100)] {
        let mut best = Duration::MAX;
        for i in 0..PRECISION_TRIES {
            let t = Instant::now();
            let evs = wait_checked(p, &mut ev, Some(want))?;
            let d = t.elapsed();
            ensure!(evs.is_empty() && !ev.woken(), "nothing is ready, yet a {want:?} wait reported {}", show_all(&evs));
            ensure!(d >= want, "a {want:?} wait returned early, after {d:?} (try {} of {PRECISION_TRIES})", i + 1);
            best = best.min(d);
        }
        ensure!(
            best <= want + PRECISION_SLACK,
            "a {want:?} wait took {best:?} at best over {PRECISION_TRIES} tries (more than {PRECISION_SLACK:?} late; \
             the backend claims a resolution of {res:?})"
        );
    }
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

fn waker_wakes_waiting_thread(p: &mut AnyPoller) -> Result<(), Stop> {
    let waker = p.waker();
    let mut ev = Events::with_capacity(16);
    let t = Instant::now();
    let h = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        waker.wake()
    });
    let r = p.wait(&mut ev, Some(Duration::from_secs(5)));
    let took = t.elapsed();
    let woke = h.join().map_err(|_| Stop::Fail("the waking thread panicked".into()))?;
    woke.ctx("wake")?;
    let n = r.ctx("wait")?;
    ensure!(ev.woken(), "the wait returned after {} without woken() set ({n} events)", ms(took));
    ensure!(n == 0, "woken with nothing registered, yet {n} events");
    ensure!(took >= Duration::from_millis(50), "the wait returned after {}, before the wake", ms(took));
    ensure!(took < Duration::from_secs(2), "the wake took {} to end the wait", ms(took));
    Ok(())
}

fn waker_coalesces(p: &mut AnyPoller) -> Result<(), Stop> {
    let waker = p.waker();
    let other = waker.clone();
    let mut ev = Events::with_capacity(16);
    waker.wake().ctx("wake")?;
    other.wake().ctx("wake")?;
    waker.wake().ctx("wake")?;
    let t = Instant::now();
    wait_checked(p, &mut ev, Some(Duration::from_secs(1)))?;
    let took = t.elapsed();
    ensure!(ev.woken(), "a wake before the wait: the wait returned after {} without woken()", ms(took));
    ensure!(took < Duration::from_millis(200), "a wake before the wait: the wait took {}", ms(took));
    let t = Instant::now();
    wait_checked(p, &mut ev, Some(QUIET))?;
    let took = t.elapsed();
    ensure!(!ev.woken(), "three wakes gave a second woken() wait: they must coalesce");
    ensure!(took >= QUIET, "after the coalesced wake, a {} wait returned after {}", ms(QUIET), ms(took));
    Ok(())
}

/// Backends whose wait retries EINTR itself and so cannot end early on a
/// signal: compat, because the `polling` crate loops on EINTR inside its
/// `wait` (recomputing the deadline).
const RETRIES_EINTR: &[&str] = &["compat"];

fn signal_during_wait(p: &mut AnyPoller) -> Result<(), Stop> {
    net::install_noop_sigusr1().ctx("sigaction(SIGUSR1)")?;
    let (_a, b) = net::unix_pair().ctx("socketpair")?;
    p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add")?;
    let me = net::ThreadHandle::current();
    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    // Signals every 30 ms (at most 10) until the wait is over, so a slow
    // start of this thread does not make the test miss the wait.
    let h = thread::spawn(move || {
        let mut sent = 0;
        for _ in 0..10 {
            thread::sleep(Duration::from_millis(30));
            if done2.load(Ordering::SeqCst) {
                break;
            }
            // SAFETY: the target thread joins this one before it returns, so it is alive.
            if unsafe { me.signal_usr1() }.is_ok() {
                sent += 1;
            }
        }
        sent
    });
    let mut ev = Events::with_capacity(16);
    let t = Instant::now();
    let r = p.wait(&mut ev, Some(Duration::from_secs(1)));
    let took = t.elapsed();
    done.store(true, Ordering::SeqCst);
    let sent = h.join().map_err(|_| Stop::Fail("the signalling thread panicked".into()))?;
    ensure!(sent > 0, "no signal could be sent");
    let n = match r {
        Ok(n) => n,
        Err(e) => {
            return Err(Stop::Fail(format!("a signal during the wait made it fail: {e} (EINTR is not an error)")))
        }
    };
    ensure!(n == 0 && ev.is_empty(), "nothing is ready, yet {n} events after a signal");
    ensure!(!ev.woken(), "a signal is not a wake-up, yet woken() is set");
    if !RETRIES_EINTR.contains(&p.name()) {
        ensure!(took < Duration::from_millis(500), "a signal did not end the wait early: it took {}", ms(took));
    }
    p.delete(fd_of(&b)).ctx("delete")?;
    Ok(())
}

// ---------------------------------------------------------------- scale and fairness

fn needs_level(s: &Subject) -> Result<(), String> {
    if s.caps.contains(Capabilities::LEVEL) {
        Ok(())
    } else {
        Err(format!("{} cannot do level-triggered registrations", s.name))
    }
}

fn capacity_one_no_starvation(p: &mut AnyPoller) -> Result<(), Stop> {
    let mut pairs = Vec::new();
    for i in 1..=3 {
        let (mut a, b) = net::unix_pair().ctx("socketpair")?;
        a.write_all(b"x").ctx("write")?;
        p.add(fd_of(&b), Token(i), Interest::READ, Trigger::Level).ctx("add")?;
        pairs.push((a, b));
    }
    // A roomy wait first: all three at once.
    let mut big = Events::with_capacity(64);
    let evs = wait_checked(p, &mut big, Some(SOON))?;
    let seen: BTreeSet<usize> = evs.iter().map(|e| e.token().0).collect();
    ensure!(seen.len() == 3, "with room for 64 events, expected all 3 ready fds, got {}", show_all(&evs));
    // Then one event per wait: three waits must report all three.
    let mut one = Events::with_capacity(1);
    let mut order = Vec::new();
    for _ in 0..3 {
        let evs = wait_checked(p, &mut one, Some(SOON))?;
        ensure!(evs.len() == 1, "a wait with capacity 1 and 3 ready fds returned {}", show_all(&evs));
        order.push(evs[0].token().0);
    }
    let seen: BTreeSet<usize> = order.iter().copied().collect();
    ensure!(seen.len() == 3, "3 waits of capacity 1 reported tokens {order:?}: a ready fd starves");
    for (_, b) in &pairs {
        p.delete(fd_of(b)).ctx("delete")?;
    }
    Ok(())
}

fn many_fds(p: &mut AnyPoller) -> Result<(), Stop> {
    let (soft0, hard) = net::nofile_limit().ctx("getrlimit")?;
    let r = many_fds_inner(p, hard);
    // Put the soft limit back once every fd of the scenario is closed.
    if let Ok((soft, _)) = net::nofile_limit() {
        if soft != soft0 {
            let rl = libc::rlimit { rlim_cur: soft0 as libc::rlim_t, rlim_max: hard as libc::rlim_t };
            // SAFETY: setrlimit reads the rlimit we pass.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
        }
    }
    r
}

fn many_fds_inner(p: &mut AnyPoller, hard: u64) -> Result<(), Stop> {
    const PAIRS: usize = 5_000;
    if let Some(limit) = p.fd_limit() {
        // select: 10,000 fds cannot fit; what it must do is refuse an fd
        // beyond its limit clearly, instead of writing past its fd_set.
        let want = limit as u64 + 64;
        let soft = net::raise_nofile(want).ctx("setrlimit")?;
        if soft < want {
            return Err(Stop::Skip(format!(
                "the hard RLIMIT_NOFILE ({hard}) leaves no fd at or above {}'s limit {limit}",
                p.name()
            )));
        }
        let (_a, b) = net::unix_pair().ctx("socketpair")?;
        let big = net::dup_at_least(fd_of(&b), limit).ctx("fcntl(F_DUPFD_CLOEXEC)")?;
        match p.add(big.as_raw_fd(), T1, Interest::READ, Trigger::Level) {
            Err(e) if e.kind() == io::ErrorKind::InvalidInput && e.to_string().contains("FD_SETSIZE") => {}
            Err(e) => {
                return Err(Stop::Fail(format!(
                    "add of fd {} (≥ FD_SETSIZE): expected InvalidInput naming FD_SETSIZE, got {:?}: {e}",
                    big.as_raw_fd(),
                    e.kind()
                )))
            }
            Ok(()) => return Err(Stop::Fail(format!("add of fd {} (≥ FD_SETSIZE) succeeded", big.as_raw_fd()))),
        }
        p.add(fd_of(&b), T1, Interest::READ, Trigger::Level).ctx("add of a small fd after the refusal")?;
        p.delete(fd_of(&b)).ctx("delete")?;
        return Ok(());
    }
    let open = net::open_fd_count().unwrap_or(64) as u64;
    let want = (2 * PAIRS) as u64 + open + 100;
    let soft = net::raise_nofile(want).ctx("setrlimit")?;
    if soft < want {
        return Err(Stop::Skip(format!("the hard RLIMIT_NOFILE is {hard}, below the {want} fds this needs")));
    }
    let mut pairs = Vec::with_capacity(PAIRS);
    for i in 0..PAIRS {
        let (a, b) = net::unix_pair().ctx("socketpair")?;
        p.add(fd_of(&a), Token(2 * i), Interest::READ, Trigger::Level).ctx("add")?;
        p.add(fd_of(&b), Token(2 * i + 1), Interest::READ, Trigger::Level).ctx("add")?;
        pairs.push((a, b));
    }
    let chosen = [0usize, 1, 777, 2500, 4321, PAIRS - 1];
    let expected: BTreeSet<usize> = chosen.iter().map(|i| 2 * i + 1).collect();
    for &i in &chosen {
        pairs[i].0.write_all(b"x").ctx("write")?;
    }
    let mut ev = Events::with_capacity(64);
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + SOON;
    while seen != expected && Instant::now() < deadline {
        let evs = wait_checked(p, &mut ev, Some(deadline.saturating_duration_since(Instant::now())))?;
        for e in &evs {
            let t = e.token().0;
            ensure!(
                expected.contains(&t),
                "among {} fds, one that is not readable was reported: {}",
                2 * PAIRS,
                show(e)
            );
            let (a, b) = &pairs[t / 2];
            let fd = if t % 2 == 0 { fd_of(a) } else { fd_of(b) };
            ensure!(e.fd() == fd, "token {t} came with fd {}, expected {fd}", e.fd());
            seen.insert(t);
        }
    }
    ensure!(seen == expected, "among {} fds, expected tokens {expected:?} to be reported, saw {seen:?}", 2 * PAIRS);
    // Level: one more wait reports exactly the same set again.
    let evs = wait_checked(p, &mut ev, Some(SOON))?;
    let again: BTreeSet<usize> = evs.iter().map(|e| e.token().0).collect();
    ensure!(again == expected, "a second wait reported {again:?}, expected {expected:?}");
    drop(pairs);
    Ok(())
}

/// Every scenario, in the order the matrix prints them.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            id: "readable_after_write",
            about: "nothing before a write (READ only, on a writable fd), then exactly READABLE",
            requires: any,
            body: readable_after_write,
        },
        Scenario {
            id: "writable_at_start",
            about: "a fresh socket registered for both directions is exactly WRITABLE",
            requires: any,
            body: writable_at_start,
        },
        Scenario {
            id: "zero_timeout",
            about: "a zero timeout returns at once, with what is ready",
            requires: any,
            body: zero_timeout,
        },
        Scenario {
            id: "half_close_readable",
            about: "the peer's shutdown(SHUT_WR) is READABLE (no HUP/ERROR), then recv returns 0",
            requires: any,
            body: half_close_readable,
        },
        Scenario {
            id: "half_close_read_closed",
            about: "with RDHUP, the peer's half-close is READ_CLOSED before any recv (and not before it)",
            requires: needs_rdhup,
            body: half_close_read_closed,
        },
        Scenario {
            id: "peer_reset_error",
            about: "a peer's RST is ERROR or READ_CLOSED|HUP; recv gives ECONNRESET or 0",
            requires: needs_errhup_reset,
            body: peer_reset_error,
        },
        Scenario {
            id: "peer_reset_wakes_reader",
            about: "a peer's RST wakes a reader; recv gives ECONNRESET or 0",
            requires: any,
            body: peer_reset_wakes_reader,
        },
        Scenario {
            id: "refused_connect_error",
            about: "a refused non-blocking connect is ERROR without READABLE/WRITABLE; SO_ERROR is ECONNREFUSED",
            requires: |s| deviations::check(s.name, Deviation::SoErrorConsumed).and_then(|()| needs_errhup_connect(s)),
            body: refused_connect_error,
        },
        Scenario {
            id: "refused_connect_so_error",
            about: "a refused connect wakes a writer (WRITABLE or ERROR); SO_ERROR is ECONNREFUSED",
            requires: |s| deviations::check(s.name, Deviation::SoErrorConsumed),
            body: refused_connect_so_error,
        },
        Scenario {
            id: "pending_connect",
            about: "silent while the connect is pending, then exactly WRITABLE; SO_ERROR 0",
            requires: any,
            body: pending_connect,
        },
        Scenario {
            id: "level_repeats",
            about: "level: 3 waits in a row report the fd; after draining, silence",
            requires: needs_level,
            body: level_repeats,
        },
        Scenario {
            id: "edge_once_per_edge",
            about: "edge: one event per write, silence in between without reading",
            requires: needs_edge,
            body: edge_once_per_edge,
        },
        Scenario {
            id: "edge_refused",
            about: "without EDGE, add/modify with Trigger::Edge is Unsupported, naming backend and \"edge\"",
            requires: lacks_edge,
            body: edge_refused,
        },
        Scenario {
            id: "edge_oneshot_once_per_arm",
            about: "edge-oneshot: one event per arm, none for new data until modify re-arms it",
            requires: needs_edge_oneshot,
            body: edge_oneshot_once_per_arm,
        },
        Scenario {
            id: "edge_oneshot_rearm_pending",
            about: "edge-oneshot: modify with data still unread fires at once (as epoll does), then silence",
            requires: needs_edge_oneshot,
            body: edge_oneshot_rearm_pending,
        },
        Scenario {
            id: "edge_oneshot_refused",
            about: "a backend without EDGE_ONESHOT refuses it loudly (Unsupported, naming backend and trigger)",
            requires: lacks_edge_oneshot,
            body: edge_oneshot_refused,
        },
        Scenario {
            id: "oneshot_until_rearmed",
            about: "oneshot: one event, silence until modify re-arms it",
            requires: any,
            body: oneshot_until_rearmed,
        },
        Scenario {
            id: "oneshot_silent_on_reset",
            about: "a fired oneshot stays silent even when the peer then resets",
            requires: any,
            body: oneshot_silent_on_reset,
        },
        Scenario {
            id: "modify_empty_silent",
            about: "modify to an empty interest silences a ready fd; modify back revives it",
            requires: any,
            body: modify_empty_silent,
        },
        Scenario {
            id: "modify_empty_after_reset",
            about: "an empty interest silences a reset socket too: no ERROR/HUP, no busy wake-ups",
            requires: any,
            body: modify_empty_silent_after_reset,
        },
        Scenario {
            id: "delete_silent",
            about: "delete silences the fd (and a dup of it); a second delete is NotFound",
            requires: any,
            body: delete_silent,
        },
        Scenario {
            id: "modify_changes_token",
            about: "modify changes the token that comes back",
            requires: any,
            body: modify_changes_token,
        },
        Scenario {
            id: "add_again_replaces",
            about: "add of an fd already registered replaces the registration",
            requires: any,
            body: add_again_replaces,
        },
        Scenario {
            id: "not_registered_errors",
            about: "delete/modify of an unregistered fd is NotFound, naming the fd and the backend",
            requires: any,
            body: not_registered_errors,
        },
        Scenario {
            id: "stale_reused_fd",
            about: "fd closed without delete, number reused: add works, no stale event for the new owner",
            requires: any,
            body: stale_reused_fd,
        },
        Scenario {
            id: "stale_reused_fd_dup",
            about: "as stale_reused_fd, with the old file alive in a dup (still in epoll's set)",
            requires: any,
            body: stale_reused_fd_dup,
        },
        Scenario {
            id: "stale_in_batch",
            about: "old (dup) and new file both readable on one number: one event, the new token",
            requires: any,
            body: stale_in_batch,
        },
        Scenario {
            id: "timeout_10ms",
            about: "a 10 ms timeout: every run >= 10 ms, median < 50 ms",
            requires: any,
            body: timeout_10ms,
        },
        Scenario {
            id: "timeout_precision",
            about: "100 µs and 3.1 ms waits: never early, best of 50 within 500 µs (or a skip naming the resolution)",
            requires: any,
            body: timeout_precision,
        },
        Scenario {
            id: "waker_wakes_waiting_thread",
            about: "a wake from another thread ends a 5 s wait early with woken()",
            requires: any,
            body: waker_wakes_waiting_thread,
        },
        Scenario {
            id: "waker_coalesces",
            about: "wakes before a wait end it at once; several wakes give one woken() wait",
            requires: any,
            body: waker_coalesces,
        },
        Scenario {
            id: "signal_during_wait",
            about: "SIGUSR1 (no SA_RESTART) during a wait: Ok, no events; early for native backends",
            requires: any,
            body: signal_during_wait,
        },
        Scenario {
            id: "capacity_one_no_starvation",
            about: "level, capacity 1, 3 ready fds: 3 waits report all three",
            requires: needs_level,
            body: capacity_one_no_starvation,
        },
        Scenario {
            id: "ten_thousand_fds",
            about: "10,000 registered fds, exactly the readable ones reported; select refuses fds >= FD_SETSIZE",
            requires: any,
            body: many_fds,
        },
    ]
}
