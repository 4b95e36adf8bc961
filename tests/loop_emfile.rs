//! A listener out of fds (EMFILE) pauses, logs once, resumes, and never
//! spins; once fds are free again it accepts the connections that waited.
//!
//! This binary holds a single test because it lowers RLIMIT_NOFILE, which
//! is per process: cargo runs the tests of one binary as threads of one
//! process. The limit is restored at the end of each backend's run.

mod common;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use anypoll::listener::{self, BatchEnd};
use anypoll::FdState;
use common::{run_matrix, Acceptor, Combo, PauseLog, PAUSE_LOG};

const CLIENTS: usize = 5;
/// Iterations allowed in 1 s while paused: the listener rests 100 ms
/// between attempts (about 10), plus the idle waits.
const MAX_PAUSED_ITERATIONS: u64 = 25;

fn getrlimit() -> libc::rlimit {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `r` is a valid out-pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    r
}

fn setrlimit(r: libc::rlimit) {
    // SAFETY: `r` is a valid rlimit.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// The highest open fd number (probed; no /proc needed).
fn highest_fd() -> RawFd {
    // SAFETY: F_GETFD on any number is harmless; it fails with EBADF if closed.
    (0..4096).filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0).max().unwrap_or(2)
}

/// Restores the fd limit on every way out of a run.
struct Restore(libc::rlimit);

impl Drop for Restore {
    fn drop(&mut self) {
        setrlimit(self.0);
    }
}

fn tcp_socket() -> OwnedFd {
    // SAFETY: socket() with constant arguments; the result is checked.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(s >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a new fd that nobody else owns.
    unsafe { OwnedFd::from_raw_fd(s) }
}

/// A blocking connect to a listener on loopback: done once the connection
/// is queued for accept().
fn connect(s: &OwnedFd, addr: SocketAddr) {
    use anypoll::sockops::{Real, SockOps};
    Real.connect(s.as_raw_fd(), &addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
}

/// Takes every free fd number below the limit.
fn fill(devnull: &std::fs::File) -> Vec<OwnedFd> {
    let mut fillers = Vec::new();
    loop {
        // SAFETY: dup of an fd we own; the result is checked.
        let fd = unsafe { libc::dup(devnull.as_raw_fd()) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "dup: {e}");
            return fillers;
        }
        // SAFETY: dup returned a new fd that nobody else owns.
        fillers.push(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// Waits (at most 1 s) until this process's open fd count holds still for
/// 20 ms. libkqueue closes a dropped kqueue's epoll set and eventfds later,
/// from its monitoring thread: the previous combination's fds would free
/// holes in the table this test fills, and the listener would accept.
fn settle_fds() {
    let count = || std::fs::read_dir("/proc/self/fd").map(|d| d.count()).ok();
    let give_up = Instant::now() + Duration::from_secs(1);
    let mut last = count();
    while Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(20));
        let now = count();
        if now == last {
            return;
        }
        last = now;
    }
}

fn emfile(c: Combo) -> String {
    settle_fds();
    let mut el = c.new_loop();
    let l = listener::bind("127.0.0.1:0".parse().unwrap(), 64, false).unwrap();
    let addr = l.local_addr().unwrap();
    el.cx().register(&l, 0, FdState::RECV_ACTIVE).unwrap();
    let mut h = Acceptor::default();
    el.run_once(&mut h, Some(Duration::ZERO)).unwrap();
    // The clients' sockets exist before the table is full: connect() needs no new fd.
    let clients: Vec<OwnedFd> = (0..CLIENTS).map(|_| tcp_socket()).collect();
    let late_client = tcp_socket();
    let devnull = std::fs::File::open("/dev/null").unwrap();

    let old = getrlimit();
    let restore = Restore(old);
    let limit = (highest_fd() + 32) as libc::rlim_t;
    setrlimit(libc::rlimit { rlim_cur: limit.min(old.rlim_max), rlim_max: old.rlim_max });
    let fillers = fill(&devnull);
    for s in &clients {
        connect(s, addr);
    }

    // Out of fds: at most a handful of iterations and accept attempts in 1 s.
    let warnings0 = PAUSE_LOG.warnings();
    let c0 = *el.cx().counters();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        el.run_once(&mut h, Some(Duration::from_millis(200))).unwrap();
    }
    let paused = el.cx().counters().since(&c0);
    let warnings = PAUSE_LOG.warnings() - warnings0;
    assert!(h.accepted.is_empty(), "accepted while out of fds?");
    assert!(h.batches.iter().any(|(_, e)| *e == BatchEnd::Paused), "never paused: {:?}", h.batches);
    assert!(h.batches.iter().all(|(_, e)| *e == BatchEnd::Paused), "{:?}", h.batches);
    assert!(paused.iterations <= MAX_PAUSED_ITERATIONS, "the loop spun while the listener was out of fds: {paused}");
    assert!(paused.accepts <= MAX_PAUSED_ITERATIONS, "accept() was retried too often: {paused}");
    assert!(paused.accepts >= 3, "the listener never tried again: {paused}");
    assert_eq!(warnings, 1, "one EMFILE episode must log once, it logged {warnings} times");

    // Free the fds: the queued connections are accepted.
    drop(fillers);
    let c1 = *el.cx().counters();
    let start = Instant::now();
    while h.accepted.len() < CLIENTS && start.elapsed() < Duration::from_secs(3) {
        el.run_once(&mut h, Some(Duration::from_millis(200))).unwrap();
    }
    let recovered = start.elapsed();
    assert_eq!(h.accepted.len(), CLIENTS, "after fds were freed: {:?}", h.batches);
    let mut peers: Vec<SocketAddr> = h.accepted.iter().map(|(_, p)| *p).collect();
    peers.sort();
    peers.dedup();
    assert_eq!(peers.len(), CLIENTS, "each connection is accepted once");
    let after = el.cx().counters().since(&c1);

    // A second episode logs again, once.
    let fillers = fill(&devnull);
    connect(&late_client, addr);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(350) {
        el.run_once(&mut h, Some(Duration::from_millis(200))).unwrap();
    }
    let warnings2 = PAUSE_LOG.warnings() - warnings0 - warnings;
    assert_eq!(warnings2, 1, "a second EMFILE episode must log once, it logged {warnings2} times");
    drop(fillers);
    let start = Instant::now();
    while h.accepted.len() < CLIENTS + 1 && start.elapsed() < Duration::from_secs(3) {
        el.run_once(&mut h, Some(Duration::from_millis(200))).unwrap();
    }
    assert_eq!(h.accepted.len(), CLIENTS + 1, "the second episode did not recover: {:?}", h.batches);
    drop(restore);
    el.cx().deregister(l.as_raw_fd()).unwrap();
    format!(
        "paused: {} iterations, {} accept attempts, {warnings} warning in 1 s; recovered in {} ms ({} iterations); \
         a second episode warned once and recovered",
        paused.iterations,
        paused.accepts,
        recovered.as_millis(),
        after.iterations
    )
}

#[test]
fn emfile_pauses_the_listener_logs_once_never_spins_and_recovers() {
    PauseLog::install();
    run_matrix("emfile", &common::combos("emfile"), emfile);
}
