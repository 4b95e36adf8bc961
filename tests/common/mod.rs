//! Helpers shared by the loop tests: the backend matrix, a seeded PRNG,
//! socket pairs on loopback, and a per-backend report.
//!
//! Every test runs once per backend that is built here and passes its
//! `test()` (on Linux: epoll, poll, compat, select), under the level
//! strategy and, for backends with [`Capabilities::EDGE`], under edge too.
//! A combination that cannot run prints `skip: <backend> has no EDGE` and is
//! never counted as a pass. Each combination prints one result line; the
//! test fails after all of them ran if any failed.

#![allow(dead_code)]

pub mod bufconn;
pub mod hiding;

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{SystemTime, UNIX_EPOCH};

use anypoll::backends::registry::{self, Backend, Probe};
use anypoll::backends::Capabilities;
use anypoll::{EventLoop, Strategy};

/// The backends built here whose `test()` passes, with their capabilities.
pub fn backends() -> Vec<(&'static Backend, Capabilities)> {
    let mut out = Vec::new();
    for b in registry::backends() {
        match b.test() {
            Probe::Ok(caps) => out.push((b, caps)),
            Probe::NotBuilt => println!("skip: {} is not built for {}", b.name, std::env::consts::OS),
            Probe::Failed(e) => println!("skip: {} fails its test here: {e}", b.name),
        }
    }
    assert!(!out.is_empty(), "no backend is available here");
    out
}

/// A loop on backend `b`, forced to `strategy`.
pub fn new_loop(b: &Backend, strategy: Strategy) -> EventLoop {
    let poller = b.create().unwrap_or_else(|e| panic!("{}: create: {e}", b.name));
    EventLoop::new(poller, Some(strategy)).unwrap_or_else(|e| panic!("{}: EventLoop::new: {e}", b.name))
}

/// One backend and strategy to run a test on.
#[derive(Debug, Clone, Copy)]
pub struct Combo {
    /// The backend.
    pub backend: &'static Backend,
    /// Its capabilities.
    pub caps: Capabilities,
    /// The strategy forced on the loop.
    pub strategy: Strategy,
}

impl Combo {
    /// `epoll/level`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.backend.name, self.strategy.name())
    }
    /// A loop for this combination.
    pub fn new_loop(&self) -> EventLoop {
        new_loop(self.backend, self.strategy)
    }
}

/// Every backend under level, and under edge where it has EDGE. Skips are
/// printed here.
pub fn combos(test: &str) -> Vec<Combo> {
    let mut out = Vec::new();
    for (b, caps) in backends() {
        if caps.contains(Capabilities::LEVEL) {
            out.push(Combo { backend: b, caps, strategy: Strategy::Level });
        } else {
            println!("{test}: skip: {} has no LEVEL", b.name);
        }
        if caps.contains(Capabilities::EDGE) {
            out.push(Combo { backend: b, caps, strategy: Strategy::Edge });
        } else {
            println!("{test}: skip: {} has no EDGE", b.name);
        }
    }
    out
}

/// Runs `f` on every combination, printing `<test> <combo>: pass (<detail>)`
/// or `FAIL`, and panics at the end if anything failed. A panic inside `f`
/// fails that combination only.
pub fn run_matrix(test: &str, combos: &[Combo], f: impl Fn(Combo) -> String) {
    let mut failed = Vec::new();
    let mut passed = 0;
    for &c in combos {
        match catch_unwind(AssertUnwindSafe(|| f(c))) {
            Ok(detail) => {
                passed += 1;
                println!("{test} {}: pass ({detail})", c.label());
            }
            Err(p) => {
                let msg = panic_message(&p);
                println!("{test} {}: FAIL: {msg}", c.label());
                failed.push(format!("{}: {msg}", c.label()));
            }
        }
    }
    assert!(failed.is_empty(), "{test}: {} of {} failed:\n{}", failed.len(), combos.len(), failed.join("\n"));
    assert!(passed > 0, "{test}: nothing ran");
}

/// The text of a panic payload.
pub fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "panic".to_string()
    }
}

/// xorshift64*: small, seeded, reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is mapped to a constant).
    pub fn new(seed: u64) -> Rng {
        let mut r = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
        if r.0 == 0 {
            r.0 = 0x2545_F491_4F6C_DD1D;
        }
        r.next();
        r
    }
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    /// True with probability 1/n.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.next() % n == 0
    }
}

/// The base seed: `ANYPOLL_TEST_SEED` if set, else the clock. Printed so a
/// failure can be replayed.
pub fn base_seed(test: &str) -> u64 {
    let seed = match std::env::var("ANYPOLL_TEST_SEED") {
        Ok(s) => s.parse().unwrap_or_else(|_| panic!("ANYPOLL_TEST_SEED={s} is not a u64")),
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1),
    };
    println!("{test}: seed {seed} (replay with ANYPOLL_TEST_SEED={seed})");
    seed
}

/// The byte at offset `off` of stream `stream`: a hash, so a lost, doubled
/// or reordered chunk shows.
pub fn pattern(stream: usize, off: u64) -> u8 {
    let h = (off ^ ((stream as u64) << 48)).wrapping_add(0x632B_E59B_D9B4_E019).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 56) as u8
}

/// Fills `buf` with the pattern of `stream` from offset `off`.
pub fn fill(stream: usize, off: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern(stream, off + i as u64);
    }
}

/// The first offset where `buf` differs from the pattern, if any.
pub fn check(stream: usize, off: u64, buf: &[u8]) -> Option<u64> {
    buf.iter().enumerate().find(|(i, b)| **b != pattern(stream, off + *i as u64)).map(|(i, _)| off + i as u64)
}

/// A connected TCP pair on 127.0.0.1: (client, server). Both blocking.
pub fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let c = TcpStream::connect(l.local_addr().unwrap()).expect("connect");
    let (s, _) = l.accept().expect("accept");
    (c, s)
}

/// Sets SO_LINGER {1, 0}: close() then sends a RST.
pub fn set_linger_zero(fd: RawFd) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `l` is a live linger struct and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of_val(&l) as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// Sets an int socket option (SO_SNDBUF, SO_RCVBUF…).
pub fn set_sockopt(fd: RawFd, opt: libc::c_int, val: libc::c_int) {
    // SAFETY: `val` is a live c_int and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of_val(&val) as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt({opt}): {}", io::Error::last_os_error());
}

/// A stream socket end the tests can shut down, whatever its type.
pub trait Sock: AsRawFd + Send {
    /// shutdown(2).
    fn shut(&self, how: Shutdown) -> io::Result<()>;
}

impl Sock for TcpStream {
    fn shut(&self, how: Shutdown) -> io::Result<()> {
        self.shutdown(how)
    }
}

impl Sock for std::os::unix::net::UnixStream {
    fn shut(&self, how: Shutdown) -> io::Result<()> {
        self.shutdown(how)
    }
}

/// A non-blocking stream pair: TCP on loopback when `tcp`, else a Unix
/// socketpair. (a, b).
pub fn stream_pair(tcp: bool) -> (Box<dyn Sock>, Box<dyn Sock>) {
    if tcp {
        let (a, b) = tcp_pair();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        a.set_nodelay(true).unwrap();
        (Box::new(a), Box::new(b))
    } else {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (Box::new(a), Box::new(b))
    }
}

// ----- the listener's pause warnings -----

/// A logger that prints every record and counts the listener's "pausing
/// accepts" warnings (EMFILE, a backend's fd limit): the tests check one
/// per episode.
pub struct PauseLog {
    warnings: std::sync::atomic::AtomicUsize,
}

impl PauseLog {
    /// Installs [`PAUSE_LOG`] as the logger, at info level (once per
    /// test binary).
    pub fn install() -> &'static PauseLog {
        log::set_logger(&PAUSE_LOG).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Info);
        &PAUSE_LOG
    }

    /// The warnings counted so far.
    pub fn warnings(&self) -> usize {
        self.warnings.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl log::Log for PauseLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        let msg = r.args().to_string();
        if r.level() == log::Level::Warn && msg.contains("pausing accepts") {
            self.warnings.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        println!("  log {}: {msg}", r.level());
    }
    fn flush(&self) {}
}

/// The one [`PauseLog`].
pub static PAUSE_LOG: PauseLog = PauseLog { warnings: std::sync::atomic::AtomicUsize::new(0) };

/// A listener's owner that accepts in batches of 16 and keeps what it
/// got: each batch's result, and each connection.
#[derive(Default)]
pub struct Acceptor {
    /// What each [`accept_batch`](anypoll::listener::accept_batch) call returned.
    pub batches: Vec<(usize, anypoll::listener::BatchEnd)>,
    /// The connections accepted, with their peers.
    pub accepted: Vec<(std::os::fd::OwnedFd, std::net::SocketAddr)>,
    /// Also register each connection with the loop (owner 1, no
    /// interest), as a server would; an fd the backend refuses is kept
    /// unregistered, for the test to notice.
    pub register: bool,
}

impl anypoll::Handler for Acceptor {
    fn io(&mut self, cx: &mut anypoll::Ctx, ev: anypoll::IoEvent) {
        let (accepted, register) = (&mut self.accepted, self.register);
        let (n, end) = anypoll::listener::accept_batch(cx, ev.fd, 16, |cx, sock, peer| {
            if register {
                let _ = cx.register(&sock, 1, anypoll::FdState::empty());
            }
            accepted.push((sock, peer));
        });
        self.batches.push((n, end));
    }
}
