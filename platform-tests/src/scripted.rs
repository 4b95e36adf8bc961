//! Platform personalities: a scripted [`SockOps`] and the small rigs the
//! `tests/personality*.rs` tests drive with it.
//!
//! [`raw_sock`] makes every socket syscall through a
//! [`SockOps`]. [`Scripted`] wraps [`Real`] and, per operation, takes its
//! next outcome from a queue of [`Step`]s:
//!
//! * [`Step::Pass`]: make the real call;
//! * [`Step::Err`]: fail with that errno, without a syscall (ENOTCONN on a
//!   recv while connecting on illumos, EINPROGRESS on a send, EINTR storms,
//!   splice EBADF/ENOSYS…);
//! * [`Step::Short`]: make the real call with at most `n` bytes (a short
//!   read, write or splice that the kernel would be allowed to return);
//! * [`Step::Value`]: `so_error` only, return that value without a syscall.
//!
//! A queue can be tied to one fd (for splice: either end) or apply to every
//! fd; when the queues are empty an optional standing rule
//! ([`Scripted::always`]) applies, else the call passes through. Every call
//! is logged ([`Call`]) so that a test can assert "no recv was made after
//! the HUP" or "`SO_ERROR` was read exactly once".
//!
//! ```
//! use anypoll::sockops::SockOps;
//! use platform_tests::scripted::{Op, Scripted, Step};
//! use std::os::fd::AsRawFd;
//!
//! let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
//! let mut ops = Scripted::new();
//! // illumos: the first recv while connecting says ENOTCONN, then real calls.
//! ops.script_fd(Op::Recv, b.as_raw_fd(), [Step::Err(libc::ENOTCONN)]);
//! let mut buf = [0u8; 8];
//! let e = ops.recv(b.as_raw_fd(), &mut buf, 0).unwrap_err();
//! assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN));
//! ops.send(a.as_raw_fd(), b"hi", 0).unwrap();
//! assert_eq!(ops.recv(b.as_raw_fd(), &mut buf, 0).unwrap(), 2);
//! assert_eq!(ops.calls(Op::Recv), 2);
//! assert_eq!(ops.real_calls(Op::Recv), 1);
//! ```
//!
//! The rest of the module is what the personality tests share: a seeded
//! byte [`pattern`] and [`assert_bytes`] (exact, in order, no duplicates),
//! blocking [`Peer`] threads for the far ends, an [`Endpoint`] handler that
//! drives one connection through `raw_sock`, a [`StreamRig`] handler that
//! relays through a [`Stream`], and [`drive`] / [`assert_quiet`], which run a
//! loop with an iteration budget and prove that it does not spin.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anypoll::backends::registry::{self, Backend, Probe};
use anypoll::backends::Capabilities;
use anypoll::buffer::Buffer;
use anypoll::connection::{ConnFlags, ConnectStatus, Connection};
use anypoll::raw_sock::{self, SendFlags};
use anypoll::sockops::{Real, SockOps};
use anypoll::stream::{Outcome, Pools, SpliceMode, Stream};
use anypoll::{Counters, Ctx, EventLoop, FdState, Handler, IoEvent};

/// A socket operation of the seam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `recv(2)`.
    Recv,
    /// `send(2)`.
    Send,
    /// `splice(2)`.
    Splice,
    /// `read(2)` (draining a pipe).
    Read,
    /// `getsockopt(SO_ERROR)`.
    SoError,
    /// `shutdown(2)`.
    Shutdown,
}

/// What a scripted call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The real call.
    Pass,
    /// Fails with this errno; no syscall is made.
    Err(i32),
    /// The real call, but with at most this many bytes (recv, send, splice,
    /// read); the same as `Pass` for the others.
    Short(usize),
    /// `so_error` only: returns this value without a syscall.
    Value(i32),
}

/// One call made through [`Scripted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The operation.
    pub op: Op,
    /// The fd (splice: the source).
    pub fd: RawFd,
    /// Splice: the destination; -1 otherwise.
    pub to: RawFd,
    /// recv/send flags (0 for the others).
    pub flags: libc::c_int,
    /// The length asked for by the caller.
    pub len: usize,
    /// The step that applied.
    pub step: Step,
    /// What the caller got: a byte count (or the `so_error` value), or an errno.
    pub result: Result<usize, i32>,
}

impl Call {
    /// Whether a real syscall was made.
    pub fn real(&self) -> bool {
        !matches!(self.step, Step::Err(_) | Step::Value(_))
    }
    /// Whether the call concerns `fd` (either end of a splice).
    pub fn touches(&self, fd: RawFd) -> bool {
        self.fd == fd || self.to == fd
    }
}

/// Which end of a splice a queue is tied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum End {
    Any,
    From,
    To,
}

type Key = (Op, Option<RawFd>, End);

/// A [`SockOps`] that scripts outcomes per operation and logs every call;
/// see the [module docs](self).
#[derive(Debug, Default)]
pub struct Scripted {
    queues: HashMap<Key, VecDeque<Step>>,
    always: HashMap<Key, Step>,
    log: Vec<Call>,
}

impl Scripted {
    /// No script: every call passes through to [`Real`].
    pub fn new() -> Scripted {
        Scripted::default()
    }

    /// Queues `steps` for `op` on any fd.
    pub fn script(&mut self, op: Op, steps: impl IntoIterator<Item = Step>) -> &mut Scripted {
        self.queues.entry((op, None, End::Any)).or_default().extend(steps);
        self
    }

    /// Queues `steps` for `op` on `fd` only (for splice: either end). A
    /// queue for the fd is used before the queue for any fd.
    pub fn script_fd(&mut self, op: Op, fd: RawFd, steps: impl IntoIterator<Item = Step>) -> &mut Scripted {
        self.queues.entry((op, Some(fd), End::Any)).or_default().extend(steps);
        self
    }

    /// Queues `steps` for the splices that read from `fd` (socket → pipe).
    /// Used before a queue for either end.
    pub fn script_splice_from(&mut self, fd: RawFd, steps: impl IntoIterator<Item = Step>) -> &mut Scripted {
        self.queues.entry((Op::Splice, Some(fd), End::From)).or_default().extend(steps);
        self
    }

    /// Queues `steps` for the splices that write to `fd` (pipe → socket).
    /// Used before a queue for either end.
    pub fn script_splice_to(&mut self, fd: RawFd, steps: impl IntoIterator<Item = Step>) -> &mut Scripted {
        self.queues.entry((Op::Splice, Some(fd), End::To)).or_default().extend(steps);
        self
    }

    /// Applies `step` to every `op` call, on any fd, once the queues are empty.
    pub fn always(&mut self, op: Op, step: Step) -> &mut Scripted {
        self.always.insert((op, None, End::Any), step);
        self
    }

    /// Applies `step` to every `op` call on `fd` once the queues are empty.
    pub fn always_fd(&mut self, op: Op, fd: RawFd, step: Step) -> &mut Scripted {
        self.always.insert((op, Some(fd), End::Any), step);
        self
    }

    /// Removes every standing rule for `op`.
    pub fn clear_always(&mut self, op: Op) {
        self.always.retain(|k, _| k.0 != op);
    }

    /// Scripted steps of `op` not used yet (all fds).
    pub fn unused(&self, op: Op) -> usize {
        self.queues.iter().filter(|(k, _)| k.0 == op).map(|(_, q)| q.len()).sum()
    }

    /// Every call so far, in order.
    pub fn log(&self) -> &[Call] {
        &self.log
    }

    /// A position in the log, for [`since`](Scripted::since).
    pub fn mark(&self) -> usize {
        self.log.len()
    }

    /// The calls made after `mark`.
    pub fn since(&self, mark: usize) -> &[Call] {
        &self.log[mark.min(self.log.len())..]
    }

    /// How many `op` calls were made (scripted or real).
    pub fn calls(&self, op: Op) -> usize {
        self.log.iter().filter(|c| c.op == op).count()
    }

    /// How many `op` calls concerned `fd`.
    pub fn calls_fd(&self, op: Op, fd: RawFd) -> usize {
        self.log.iter().filter(|c| c.op == op && c.touches(fd)).count()
    }

    /// How many `op` calls reached the kernel.
    pub fn real_calls(&self, op: Op) -> usize {
        self.log.iter().filter(|c| c.op == op && c.real()).count()
    }

    /// How many `op` calls on `fd` returned `errno`.
    pub fn errors_fd(&self, op: Op, fd: RawFd, errno: i32) -> usize {
        self.log.iter().filter(|c| c.op == op && c.touches(fd) && c.result == Err(errno)).count()
    }

    /// The keys that apply to a call on `fds` (splice: `[from, to]`), most
    /// specific first.
    fn keys(op: Op, fds: &[RawFd]) -> Vec<Key> {
        let mut keys = Vec::with_capacity(5);
        if op == Op::Splice {
            keys.push((op, Some(fds[0]), End::From));
            keys.push((op, Some(fds[1]), End::To));
        }
        keys.extend(fds.iter().map(|&fd| (op, Some(fd), End::Any)));
        keys.push((op, None, End::Any));
        keys
    }

    fn next(&mut self, op: Op, fds: &[RawFd]) -> Step {
        let keys = Scripted::keys(op, fds);
        for key in &keys {
            if let Some(step) = self.queues.get_mut(key).and_then(VecDeque::pop_front) {
                return step;
            }
        }
        for key in &keys {
            if let Some(&step) = self.always.get(key) {
                return step;
            }
        }
        Step::Pass
    }

    fn record(&mut self, call: Call) {
        self.log.push(call);
    }
}

fn outcome(r: &io::Result<usize>) -> Result<usize, i32> {
    match r {
        Ok(n) => Ok(*n),
        Err(e) => Err(e.raw_os_error().unwrap_or(-1)),
    }
}

fn limit(step: Step, len: usize) -> usize {
    match step {
        Step::Short(n) => n.min(len),
        _ => len,
    }
}

fn value_misuse(op: Op) -> ! {
    panic!("Step::Value is for so_error only, not {op:?}")
}

impl SockOps for Scripted {
    fn recv(&mut self, fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        let step = self.next(Op::Recv, &[fd]);
        let len = buf.len();
        let r = match step {
            Step::Err(e) => Err(io::Error::from_raw_os_error(e)),
            Step::Value(_) => value_misuse(Op::Recv),
            _ => Real.recv(fd, &mut buf[..limit(step, len)], flags),
        };
        self.record(Call { op: Op::Recv, fd, to: -1, flags, len, step, result: outcome(&r) });
        r
    }

    fn send(&mut self, fd: RawFd, buf: &[u8], flags: libc::c_int) -> io::Result<usize> {
        let step = self.next(Op::Send, &[fd]);
        let len = buf.len();
        let r = match step {
            Step::Err(e) => Err(io::Error::from_raw_os_error(e)),
            Step::Value(_) => value_misuse(Op::Send),
            _ => Real.send(fd, &buf[..limit(step, len)], flags),
        };
        self.record(Call { op: Op::Send, fd, to: -1, flags, len, step, result: outcome(&r) });
        r
    }

    fn splice(&mut self, from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        let step = self.next(Op::Splice, &[from, to]);
        let r = match step {
            Step::Err(e) => Err(io::Error::from_raw_os_error(e)),
            Step::Value(_) => value_misuse(Op::Splice),
            _ => Real.splice(from, to, limit(step, len)),
        };
        self.record(Call { op: Op::Splice, fd: from, to, flags: 0, len, step, result: outcome(&r) });
        r
    }

    fn read(&mut self, fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
        let step = self.next(Op::Read, &[fd]);
        let len = buf.len();
        let r = match step {
            Step::Err(e) => Err(io::Error::from_raw_os_error(e)),
            Step::Value(_) => value_misuse(Op::Read),
            _ => Real.read(fd, &mut buf[..limit(step, len)]),
        };
        self.record(Call { op: Op::Read, fd, to: -1, flags: 0, len, step, result: outcome(&r) });
        r
    }

    fn so_error(&mut self, fd: RawFd) -> io::Result<i32> {
        let step = self.next(Op::SoError, &[fd]);
        let r = match step {
            Step::Err(e) => Err(io::Error::from_raw_os_error(e)),
            Step::Value(v) => Ok(v),
            _ => Real.so_error(fd),
        };
        let result = match &r {
            Ok(v) => Ok(*v as usize),
            Err(e) => Err(e.raw_os_error().unwrap_or(-1)),
        };
        self.record(Call { op: Op::SoError, fd, to: -1, flags: 0, len: 0, step, result });
        r
    }

    fn shutdown(&mut self, fd: RawFd, how: libc::c_int) -> io::Result<()> {
        let step = self.next(Op::Shutdown, &[fd]);
        let r = match step {
            Step::Err(e) => Err(io::Error::from_raw_os_error(e)),
            Step::Value(_) => value_misuse(Op::Shutdown),
            _ => Real.shutdown(fd, how),
        };
        let result = match &r {
            Ok(()) => Ok(0),
            Err(e) => Err(e.raw_os_error().unwrap_or(-1)),
        };
        self.record(Call { op: Op::Shutdown, fd, to: -1, flags: how, len: 0, step, result });
        r
    }
}

// ---------------------------------------------------------------------------
// Bytes.

/// `len` bytes of the stream `seed`: a hash of (seed, offset), so a lost,
/// doubled or reordered chunk shows at its offset.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|off| {
            let h = (off ^ (seed << 40)).wrapping_add(0x632B_E59B_D9B4_E019).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (h >> 56) as u8
        })
        .collect()
}

/// FNV-1a over `bytes`.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Panics unless `got == want`, saying where they part: lengths,
/// checksums and the first differing offset.
pub fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes (checksum {:#x}), want {} (checksum {:#x}); first difference at offset {first}",
        got.len(),
        checksum(got),
        want.len(),
        checksum(want)
    );
}

// ---------------------------------------------------------------------------
// Sockets.

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

/// Sets an int socket option.
pub fn setsockopt_int(fd: RawFd, level: libc::c_int, opt: libc::c_int, val: libc::c_int) -> io::Result<()> {
    // SAFETY: `val` is a live c_int and its size is passed.
    let r = unsafe {
        libc::setsockopt(fd, level, opt, (&val as *const libc::c_int).cast(), std::mem::size_of_val(&val) as _)
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Bytes waiting in `fd`'s receive queue (`FIONREAD`).
pub fn pending_bytes(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is live.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int) };
    assert!(r == 0, "FIONREAD: {}", io::Error::last_os_error());
    n as usize
}

/// Waits until `fd` has at least `n` bytes queued (`FIONREAD`).
pub fn wait_pending(fd: RawFd, n: usize, limit: Duration) {
    let end = Instant::now() + limit;
    while pending_bytes(fd) < n {
        assert!(Instant::now() < end, "fd {fd}: {} of {n} bytes arrived in {limit:?}", pending_bytes(fd));
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// poll(2) on one fd without consuming anything; the revents.
pub fn poll_once(fd: RawFd, events: i16, timeout: Duration) -> i16 {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: one live pollfd is passed, with its count.
    let r = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) };
    assert!(r >= 0, "poll: {}", io::Error::last_os_error());
    p.revents
}

/// Waits until poll(2) reports one of `events` on `fd`.
pub fn wait_poll(fd: RawFd, events: i16, limit: Duration) -> i16 {
    let end = Instant::now() + limit;
    loop {
        let r = poll_once(fd, events, Duration::from_millis(10));
        if r & events != 0 {
            return r;
        }
        assert!(Instant::now() < end, "fd {fd}: poll never reported {events:#x} (last {r:#x})");
    }
}

/// How a [`Peer`] ends its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEnd {
    /// `shutdown(SHUT_WR)`, then read to the end, then close.
    Shutdown,
    /// close() right after sending (after `read_first`, if asked).
    Close,
    /// Stay open: read to the end (until our side shuts or closes), then close.
    Open,
    /// `SO_LINGER {1, 0}` and close(): a RST.
    Reset,
}

/// The far end of a socket, in a thread, with blocking I/O: optionally
/// reads `read_first` bytes, then sends `send` (after `delay`, in `pace`
/// chunks if asked), ends as told, and returns every byte it read (until
/// EOF or an error).
#[derive(Debug, Clone)]
pub struct Peer {
    /// The bytes to send.
    pub send: Vec<u8>,
    /// Read this many bytes before sending.
    pub read_first: usize,
    /// Sleep this long before sending.
    pub delay: Duration,
    /// Sleep this long before reading anything (a slow reader).
    pub read_delay: Duration,
    /// Send in chunks of this size with this pause after each.
    pub pace: Option<(usize, Duration)>,
    /// How to end.
    pub end: PeerEnd,
}

/// A [`Peer`] serving one connection of a listener.
#[derive(Debug)]
pub struct Served {
    /// The peer's thread; it returns the bytes it read.
    pub handle: JoinHandle<Vec<u8>>,
    /// Gets a message once the connection is accepted.
    pub accepted: std::sync::mpsc::Receiver<()>,
}

impl Peer {
    /// A peer that sends `send`, then ends with `end`, reading everything.
    pub fn new(send: Vec<u8>, end: PeerEnd) -> Peer {
        Peer { send, read_first: 0, delay: Duration::ZERO, read_delay: Duration::ZERO, pace: None, end }
    }

    /// Runs it on `fd` (made blocking) in this thread.
    pub fn run(self, fd: OwnedFd) -> Vec<u8> {
        set_blocking(fd.as_raw_fd());
        let mut f = std::fs::File::from(fd);
        let mut got = Vec::new();
        std::thread::sleep(self.read_delay);
        if self.read_first > 0 {
            got.resize(self.read_first, 0);
            let mut at = 0;
            while at < got.len() {
                match f.read(&mut got[at..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => at += n,
                }
            }
            got.truncate(at);
        }
        std::thread::sleep(self.delay);
        let sent = match self.pace {
            None => f.write_all(&self.send),
            Some((chunk, pause)) => self.send.chunks(chunk.max(1)).try_for_each(|c| {
                f.write_all(c)?;
                std::thread::sleep(pause);
                Ok(())
            }),
        };
        match self.end {
            PeerEnd::Reset => {
                let _ = crate::net::set_linger_zero(f.as_raw_fd());
                return got;
            }
            PeerEnd::Shutdown => {
                // SAFETY: shutdown with integer arguments on our own fd.
                unsafe { libc::shutdown(f.as_raw_fd(), libc::SHUT_WR) };
            }
            PeerEnd::Close => return got,
            PeerEnd::Open => {}
        }
        if sent.is_ok() {
            let mut rest = Vec::new();
            let _ = f.read_to_end(&mut rest);
            got.extend_from_slice(&rest);
        }
        got
    }

    /// Runs it on `fd` in a thread.
    pub fn spawn(self, fd: impl Into<OwnedFd>) -> JoinHandle<Vec<u8>> {
        let fd = fd.into();
        std::thread::spawn(move || self.run(fd))
    }

    /// Accepts one connection from `l` in a thread and runs on it.
    pub fn serve(self, l: std::net::TcpListener) -> Served {
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            let _ = tx.send(());
            self.run(s.into())
        });
        Served { handle, accepted: rx }
    }
}

/// Clears `O_NONBLOCK`.
pub fn set_blocking(fd: RawFd) {
    // SAFETY: fcntl with integer arguments on an fd the caller owns.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        assert!(fl >= 0 && libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) >= 0, "fcntl");
    }
}

/// Sets `O_NONBLOCK`.
pub fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl with integer arguments on an fd the caller owns.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        assert!(fl >= 0 && libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) >= 0, "fcntl");
    }
}

// ---------------------------------------------------------------------------
// Driving a loop.

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

// ---------------------------------------------------------------------------
// One connection through raw_sock.

/// A [`Handler`] that drives one [`Connection`] through `raw_sock` with a
/// [`Scripted`] seam: it settles a pending connect, receives everything
/// into `got`, sends `out` (then shuts its write side if asked), and keeps
/// the fd's interests in line. It never closes the connection itself, so
/// a test can look at the flags and check that the loop stays quiet.
#[derive(Debug)]
pub struct Endpoint {
    /// The connection.
    pub conn: Connection,
    /// The seam.
    pub ops: Scripted,
    /// Bytes received.
    pub got: Vec<u8>,
    /// Bytes to send.
    pub out: Vec<u8>,
    /// How many of `out` were sent.
    pub sent: usize,
    /// Shut the write side once `out` is sent.
    pub shut_after_send: bool,
    /// Receive (up to `want_read` bytes; `usize::MAX`: to the end).
    pub want_read: usize,
    /// While connecting, try I/O before asking whether the connect is
    /// done (as an application that writes or reads at once does).
    pub io_before_confirm: bool,
    /// The most one `rcv_buf` asks for.
    pub chunk: usize,
    /// Owner calls.
    pub calls: u64,
    /// What `confirm_connect` said last.
    pub connect: Option<ConnectStatus>,
    /// `snd_buf` returned 0 with data left (EAGAIN-like) this many times.
    pub send_blocked: u64,
    rbuf: Buffer,
    obuf: Buffer,
    queued: usize,
}

impl Endpoint {
    /// An endpoint for `conn` that receives to the end and sends nothing.
    pub fn new(conn: Connection, ops: Scripted) -> Endpoint {
        Endpoint {
            conn,
            ops,
            got: Vec::new(),
            out: Vec::new(),
            sent: 0,
            shut_after_send: false,
            want_read: usize::MAX,
            io_before_confirm: false,
            chunk: 16 * 1024,
            calls: 0,
            connect: None,
            send_blocked: 0,
            rbuf: Buffer::with_capacity(16 * 1024),
            obuf: Buffer::with_capacity(16 * 1024),
            queued: 0,
        }
    }

    /// Whether receiving is over (shut, error, or `want_read` reached).
    pub fn read_done(&self) -> bool {
        self.conn.flags.intersects(ConnFlags::SOCK_RD_SH | ConnFlags::ERROR) || self.got.len() >= self.want_read
    }

    /// Whether sending is over (everything sent, and shut if asked; or an error).
    pub fn write_done(&self) -> bool {
        self.conn.flags.contains(ConnFlags::ERROR)
            || (self.sent == self.out.len()
                && (!self.shut_after_send || self.conn.flags.contains(ConnFlags::SOCK_WR_SH)))
    }

    /// Both.
    pub fn done(&self) -> bool {
        self.read_done() && self.write_done()
    }

    fn state(&self, cx: &Ctx) -> FdState {
        cx.state(self.conn.fd()).unwrap_or_default()
    }

    /// Receives while the fd is READY.
    pub fn receive(&mut self, cx: &mut Ctx) {
        while !self.read_done() && self.state(cx).contains(FdState::RECV_READY) {
            let max = self.chunk.min(self.want_read - self.got.len());
            let n = raw_sock::rcv_buf(&mut self.ops, cx, &mut self.conn, &mut self.rbuf, max);
            let mut tmp = vec![0u8; self.rbuf.len()];
            self.rbuf.read_into(&mut tmp);
            self.got.extend_from_slice(&tmp);
            self.conn.flags.remove(ConnFlags::WAIT_ROOM);
            if n == 0 {
                break;
            }
        }
    }

    /// Sends while the fd is READY.
    pub fn transmit(&mut self, cx: &mut Ctx) {
        while self.sent < self.out.len() && self.state(cx).contains(FdState::SEND_READY) {
            if self.conn.flags.intersects(ConnFlags::SOCK_WR_SH | ConnFlags::ERROR) {
                return;
            }
            let room = self.obuf.free();
            let take = room.min(self.out.len() - self.queued);
            let w = self.obuf.write_from(&self.out[self.queued..self.queued + take]);
            self.queued += w;
            let len = self.obuf.len();
            let n = raw_sock::snd_buf(&mut self.ops, cx, &mut self.conn, &mut self.obuf, len, SendFlags::empty());
            self.sent += n;
            if n == 0 {
                self.send_blocked += 1;
                break;
            }
        }
        if self.shut_after_send && self.sent == self.out.len() {
            raw_sock::shut_write(&mut self.ops, cx, &mut self.conn);
        }
    }

    /// Sets the fd's interests from what is left to do.
    pub fn interests(&self, cx: &mut Ctx) {
        if !self.conn.flags.contains(ConnFlags::CTRL_READY) {
            return;
        }
        let fd = self.conn.fd();
        if !self.read_done() {
            cx.want_recv(fd);
        } else {
            cx.stop_recv(fd);
        }
        let connecting = self.conn.flags.contains(ConnFlags::WAIT_L4_CONN);
        if connecting || (!self.write_done() && self.sent < self.out.len()) {
            cx.want_send(fd);
        } else {
            cx.stop_send(fd);
        }
    }
}

impl Handler for Endpoint {
    fn io(&mut self, cx: &mut Ctx, _ev: IoEvent) {
        self.calls += 1;
        if self.conn.flags.contains(ConnFlags::WAIT_L4_CONN) {
            if self.io_before_confirm {
                self.receive(cx);
                self.transmit(cx);
            }
            if self.conn.flags.contains(ConnFlags::WAIT_L4_CONN) {
                let st = self.conn.confirm_connect(&mut self.ops, cx);
                self.connect = Some(st);
                if st != ConnectStatus::Connected {
                    self.interests(cx);
                    return;
                }
            }
        }
        self.receive(cx);
        self.transmit(cx);
        self.interests(cx);
    }
}

// ---------------------------------------------------------------------------
// A relayed stream.

/// A [`Handler`] that relays a [`Stream`] through a [`Scripted`] seam, the
/// way the relay does, and records the connections' flags when it ends
/// (then closes it).
#[derive(Debug)]
pub struct StreamRig {
    /// The stream.
    pub stream: Stream,
    /// Its pools.
    pub pools: Pools,
    /// The seam.
    pub ops: Scripted,
    /// Owner calls.
    pub calls: u64,
    /// Calls that ended with the front's WAIT_ROOM set and its recv not ACTIVE.
    pub wait_room_seen: u64,
    /// Calls that ended with the front's WAIT_ROOM set but its recv still ACTIVE (must stay 0).
    pub wait_room_polled: u64,
    /// The flags of (front, back) when it ended.
    pub final_flags: Option<(ConnFlags, ConnFlags)>,
}

impl StreamRig {
    /// Registers both connections with the loop (recv wanted) and builds
    /// the stream with `mode` and 16 KiB buffers.
    pub fn new(
        cx: &mut Ctx,
        mut front: Connection,
        mut back: Connection,
        mode: SpliceMode,
        ops: Scripted,
    ) -> StreamRig {
        front.ctrl_init(cx, 0, FdState::RECV_ACTIVE).expect("ctrl_init front");
        front.xprt_init();
        back.ctrl_init(cx, 1, FdState::RECV_ACTIVE).expect("ctrl_init back");
        back.xprt_init();
        StreamRig {
            stream: Stream::new(front, back, mode),
            pools: Pools::new(16 * 1024),
            ops,
            calls: 0,
            wait_room_seen: 0,
            wait_room_polled: 0,
            final_flags: None,
        }
    }

    /// Whether it ended.
    pub fn ended(&self) -> bool {
        self.final_flags.is_some()
    }
}

impl Handler for StreamRig {
    fn io(&mut self, cx: &mut Ctx, _ev: IoEvent) {
        if self.final_flags.is_some() {
            return;
        }
        self.calls += 1;
        let o = self.stream.process(&mut self.ops, cx, &mut self.pools);
        let front = &self.stream.front;
        if front.flags.contains(ConnFlags::WAIT_ROOM) && front.flags.contains(ConnFlags::CTRL_READY) {
            if cx.state(front.fd()).is_some_and(|s| s.contains(FdState::RECV_ACTIVE)) {
                self.wait_room_polled += 1;
            } else {
                self.wait_room_seen += 1;
            }
        }
        if o != Outcome::Running {
            self.final_flags = Some((self.stream.front.flags, self.stream.back.flags));
            self.stream.close(cx, &mut self.pools);
        }
    }
}
