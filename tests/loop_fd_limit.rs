//! On a backend with an fd limit (select's FD_SETSIZE), a listener with
//! more clients queued than there are fd numbers below the limit accepts
//! only as many as fit, leaves the others queued, logs once, does not
//! spin, and accepts the rest once numbers are free again; no accepted fd
//! is one the backend cannot watch.
//!
//! One test in this binary: it takes almost every fd number below 1024,
//! which the other tests of a binary (threads of one process) would feel.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use anypoll::listener::{self, BatchEnd};
use anypoll::{EventLoop, FdState};
use common::{Acceptor, PauseLog, PAUSE_LOG};

const CLIENTS: usize = 12;
/// Free numbers left below the limit: fewer than the clients.
const ROOM: usize = 5;
/// Iterations allowed in 1 s while paused: a retry every 100 ms (about
/// 10), plus the idle waits.
const MAX_PAUSED_ITERATIONS: u64 = 25;

fn open_below(limit: RawFd) -> usize {
    // SAFETY: F_GETFD on any number is harmless; it fails with EBADF if closed.
    (0..limit).filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0).count()
}

/// Takes free fd numbers (dups of `file`) until only `room` are left below
/// `limit`.
fn fill(file: &std::fs::File, limit: RawFd, room: usize) -> Vec<OwnedFd> {
    let mut fillers = Vec::new();
    while (limit as usize) - open_below(limit) > room {
        // SAFETY: dup of an fd we own; the result is checked.
        let fd = unsafe { libc::dup(file.as_raw_fd()) };
        assert!(fd >= 0, "dup: {}", std::io::Error::last_os_error());
        // SAFETY: dup returned a new fd that nobody else owns.
        fillers.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    fillers
}

/// RLIMIT_NOFILE's soft limit raised to `want` (so that accept itself
/// would hand out fds past select's limit); `Err` is the reason to skip.
fn raise_nofile(want: libc::rlim_t) -> Result<(), String> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `r` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    if r.rlim_max < want {
        return Err(format!("RLIMIT_NOFILE hard limit {} is below {want}", r.rlim_max));
    }
    if r.rlim_cur < want {
        r.rlim_cur = want;
        // SAFETY: `r` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Runs the loop for `d`, or until `done`.
fn run_for(el: &mut EventLoop, h: &mut Acceptor, d: Duration, done: impl Fn(&Acceptor) -> bool) {
    let start = Instant::now();
    while start.elapsed() < d && !done(h) {
        el.run_once(h, Some(Duration::from_millis(200))).unwrap();
    }
}

#[test]
fn select_accepts_only_what_fits_logs_once_never_spins_and_resumes() {
    PauseLog::install();
    let mut el = match EventLoop::with_backend("select") {
        Ok(el) => el,
        Err(e) => return println!("SKIPPED: no select backend here: {e}"),
    };
    let limit = el.cx().fd_limit().expect("select has an fd limit");
    if let Err(why) = raise_nofile(limit as libc::rlim_t + 256) {
        return println!("SKIPPED: {why}");
    }
    let l = listener::bind("127.0.0.1:0".parse().unwrap(), 64, false).unwrap();
    let addr = l.local_addr().unwrap();
    el.cx().register(&l, 0, FdState::RECV_ACTIVE).unwrap();
    let mut h = Acceptor { register: true, ..Acceptor::default() };
    el.run_once(&mut h, Some(Duration::ZERO)).unwrap();
    // The clients exist before the numbers are taken (their sockets would
    // take the room otherwise); each connect is queued for accept().
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let mut fillers = fill(&devnull, limit, ROOM);

    // Room for ROOM: those are accepted, the others wait, with one
    // warning and a bounded number of iterations.
    let c0 = *el.cx().counters();
    run_for(&mut el, &mut h, Duration::from_secs(1), |_| false);
    let paused = el.cx().counters().since(&c0);
    let warnings = PAUSE_LOG.warnings();
    let high = h.accepted.iter().map(|(s, _)| s.as_raw_fd()).max();
    println!("room {ROOM} below {limit}: accepted {} (highest fd {high:?}); {paused}", h.accepted.len());
    assert!(high.is_none_or(|fd| fd < limit), "accepted fd {high:?}, which select cannot watch");
    assert_eq!(h.accepted.len(), ROOM, "accepted what fits below {limit}, no more: {:?}", h.batches);
    assert!(h.batches.iter().any(|(_, e)| *e == BatchEnd::Paused), "never paused: {:?}", h.batches);
    assert_eq!(warnings, 1, "one episode, one warning; got {warnings}");
    assert!(paused.iterations <= MAX_PAUSED_ITERATIONS, "the loop spun at the fd limit: {paused}");
    assert!(paused.accepts <= ROOM as u64 + 1, "accept() was tried past the limit: {paused}");

    // The first connections close (and two numbers are freed besides):
    // room for the 7 waiting. A close is a deregistration, so the listener
    // looks again at once, in the next iteration, not when its 100 ms
    // pause ends.
    fillers.truncate(fillers.len() - (CLIENTS - 2 * ROOM));
    let first: Vec<(OwnedFd, SocketAddr)> = h.accepted.drain(..).collect();
    let mut peers: Vec<SocketAddr> = first.iter().map(|(_, p)| *p).collect();
    for (s, _) in first {
        el.cx().close(s).unwrap();
    }
    let start = Instant::now();
    for _ in 0..2 {
        el.run_once(&mut h, Some(Duration::ZERO)).unwrap();
    }
    let at_once = h.accepted.len();
    run_for(&mut el, &mut h, Duration::from_secs(3), |h| h.accepted.len() == CLIENTS - ROOM);
    let resumed = start.elapsed();
    assert_eq!(h.accepted.len(), CLIENTS - ROOM, "after numbers were freed: {:?}", h.batches);
    assert_eq!(at_once, CLIENTS - ROOM, "not resumed by the closes (took {resumed:?}): {:?}", h.batches);
    assert!(h.accepted.iter().all(|(s, _)| s.as_raw_fd() < limit), "an accepted fd is past {limit}");
    peers.extend(h.accepted.iter().map(|(_, p)| *p));
    peers.sort();
    peers.dedup();
    assert_eq!(peers.len(), CLIENTS, "each connection is accepted once");
    assert_eq!(PAUSE_LOG.warnings(), 1, "the episode logged again");
    println!("resumed in {} µs", resumed.as_micros());
    drop(fillers);
    drop(clients);
}
