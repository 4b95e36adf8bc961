//! Property-based fault injection for the TLS transport (issue 12 §4):
//! the counterpart of `faults.rs` for [`Tls`], through the same seam.
//!
//! Each case runs a TLS end in the real loop over a socketpair, the
//! server side or (in half the cases) the client side; a plain rustls
//! peer in the test thread (no faults on its side) sends `up` bytes then
//! `close_notify`, and reads what the loop's end sends. Below, "server"
//! is the loop's end whichever side it is. Every
//! socket syscall of the loop's end goes through [`Faults`], whose per-call
//! outcome is the next entry of a generated sequence: EAGAIN, EINTR, a
//! short read or write, ECONNRESET, or the real call (also once the
//! sequence is exhausted). The first calls fall in the handshake, later
//! ones in the data phase, so both are covered.
//!
//! Invariants, per case:
//! * what each side received is a prefix of what the other sent (in
//!   order, no duplicates, nothing invented);
//! * without a reset: both directions complete, the server's input ends
//!   with the client's `close_notify` (clean, no error) and the client
//!   gets the server's;
//! * with a reset: the server's connection has ERROR and
//!   [`ConnError::Reset`], and nothing panics;
//! * with an injected ERR, HUP or RDHUP (and no reset): the connection
//!   ends, with an error or cleanly, and nothing panics;
//! * no spin: a case that makes no progress for 2 s, or runs more than
//!   20,000 loop iterations, fails.
//!
//! Poll flags are injected as in `faults.rs`, with `Ctx::inject_event` at
//! generated loop iterations, in the handshake and the data phase alike:
//! harmless spurious READABLE and WRITABLE reports in every case, and in
//! the cases that keep their hard faults, ERR, HUP and RDHUP, which claim
//! that the peer hung up or failed. After a hard flag, as after a reset,
//! bytes may be cut short but never corrupted, the end has to come
//! without a stall, and the fd is deregistered.
//!
//! The model, as in `faults.rs`: a scripted EAGAIN or short call leaves
//! bytes (or room) behind, so "the rest arrived after the call": the
//! fd's readiness is reported again (`Ctx::inject_event`).
//!
//! Cases: `FAULTS_TLS_CASES` (default 200; each does a full handshake).

// rcgen (the test certificates) is a dev-dependency on Linux only.
#![cfg(target_os = "linux")]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anypoll::backends::Ready;
use anypoll::buffer::Buffer;
use anypoll::connection::{ConnError, ConnFlags, Connection};
use anypoll::sockops::{Real, SockOps};
use anypoll::tls::{self, rustls, Tls};
use anypoll::transport::Transport;
use anypoll::{Ctx, EventLoop, FdState, Handler, IoEvent};
use platform_tests::scripted::{pattern, PollFlag as Flag};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// What one seam call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Pass,
    Eagain,
    Eintr,
    /// The real call with at most this many bytes.
    Short(usize),
    /// ECONNRESET (hard).
    Reset,
}

/// The scripted seam of the server's socket.
#[derive(Debug, Default)]
struct Faults {
    acts: VecDeque<Act>,
    /// A reset took effect.
    hard: bool,
    /// Faults that took effect.
    faults: u64,
    /// Readiness to report again (see the module docs).
    rearm: Vec<(RawFd, Ready)>,
}

impl Faults {
    /// The next act, or the error it stands for, and the byte limit.
    fn next(&mut self, fd: RawFd, len: usize, ready: Ready) -> Result<usize, io::Error> {
        let a = self.acts.pop_front().unwrap_or(Act::Pass);
        if a != Act::Pass {
            self.faults += 1;
        }
        let errno = match a {
            Act::Pass => return Ok(len),
            Act::Short(n) => {
                let n = n.clamp(1, len.max(1)).min(len);
                if n < len {
                    self.rearm.push((fd, ready));
                }
                return Ok(n);
            }
            Act::Eagain => {
                self.rearm.push((fd, ready));
                libc::EAGAIN
            }
            Act::Eintr => libc::EINTR,
            Act::Reset => {
                self.hard = true;
                libc::ECONNRESET
            }
        };
        Err(io::Error::from_raw_os_error(errno))
    }
}

impl SockOps for Faults {
    fn recv(&mut self, fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        let n = self.next(fd, buf.len(), Ready::READABLE)?;
        Real.recv(fd, &mut buf[..n], flags)
    }
    fn send(&mut self, fd: RawFd, buf: &[u8], flags: libc::c_int) -> io::Result<usize> {
        let n = self.next(fd, buf.len(), Ready::WRITABLE)?;
        Real.send(fd, &buf[..n], flags)
    }
    fn splice(&mut self, _: RawFd, _: RawFd, _: usize) -> io::Result<usize> {
        panic!("the TLS transport spliced");
    }
    fn read(&mut self, fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
        Real.read(fd, buf)
    }
    fn so_error(&mut self, fd: RawFd) -> io::Result<i32> {
        Real.so_error(fd)
    }
    fn shutdown(&mut self, fd: RawFd, how: libc::c_int) -> io::Result<()> {
        Real.shutdown(fd, how)
    }
}

/// Faults that took effect, cases with a reset, for the summary.
static FAULTS: AtomicU64 = AtomicU64::new(0);
static HARD: AtomicU64 = AtomicU64::new(0);
static CLIENT_SIDE: AtomicU64 = AtomicU64::new(0);
/// Poll flags injected: soft (READABLE, WRITABLE) and hard (ERR, HUP, RDHUP).
static FLAGS_SOFT: AtomicU64 = AtomicU64::new(0);
static FLAGS_HARD: AtomicU64 = AtomicU64::new(0);

/// The server end in the loop: receives everything, sends `down`, then
/// `shut_write` (close_notify).
struct Server {
    conn: Connection,
    tls: Tls,
    ops: Faults,
    inb: Buffer,
    got: Vec<u8>,
    outb: Buffer,
    down: Vec<u8>,
    queued: usize,
    shut: bool,
}

impl Handler for Server {
    fn io(&mut self, cx: &mut Ctx, _ev: IoEvent) {
        if self.conn.is_closed() {
            return;
        }
        let fd = self.conn.fd();
        if !self.conn.flags.intersects(ConnFlags::SOCK_RD_SH | ConnFlags::ERROR) {
            self.tls.rcv_buf(&mut self.ops, cx, &mut self.conn, &mut self.inb, 3000);
            let (a, b) = self.inb.data_slices();
            self.got.extend_from_slice(a);
            self.got.extend_from_slice(b);
            let n = self.inb.len();
            self.inb.consume(n);
            self.conn.flags.remove(ConnFlags::WAIT_ROOM);
        }
        for _ in 0..256 {
            self.queued += self.outb.write_from(&self.down[self.queued..]);
            let n = self.tls.snd_buf(&mut self.ops, cx, &mut self.conn, &mut self.outb, usize::MAX, Default::default());
            if n == 0 {
                break;
            }
        }
        if self.queued == self.down.len() && self.outb.is_empty() && !self.tls.is_handshaking() && !self.shut {
            self.shut = true;
            self.tls.shut_write(&mut self.ops, cx, &mut self.conn);
        }
        if self.conn.flags.contains(ConnFlags::ERROR) {
            return;
        }
        if self.tls.snd_pending() || !self.outb.is_empty() || self.queued < self.down.len() {
            cx.want_send(fd);
        } else {
            cx.stop_send(fd);
        }
    }
}

/// The peer in the test thread, plain rustls over a non-blocking socket.
struct Client {
    sock: UnixStream,
    tls: rustls::Connection,
    up: Vec<u8>,
    sent: usize,
    notified: bool,
    got: Vec<u8>,
    clean_end: bool,
    dead: bool,
}

impl Client {
    /// One step; returns whether anything moved.
    fn step(&mut self) -> bool {
        let mut moved = false;
        if self.dead {
            return false;
        }
        if self.sent < self.up.len() && !self.tls.wants_write() {
            let end = (self.sent + 5000).min(self.up.len());
            let n = self.tls.writer().write(&self.up[self.sent..end]).unwrap_or(0);
            self.sent += n;
            moved |= n > 0;
        }
        if self.sent == self.up.len() && !self.notified && !self.tls.is_handshaking() {
            self.notified = true;
            self.tls.send_close_notify();
        }
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(n) => moved |= n > 0,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.dead = true;
                    return true;
                }
            }
        }
        for _ in 0..64 {
            match self.tls.read_tls(&mut self.sock) {
                Ok(0) => {
                    self.dead = !self.clean_end;
                    return true;
                }
                Ok(_) => moved = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.dead = true;
                    return true;
                }
            }
            if self.tls.process_new_packets().is_err() {
                self.dead = true;
                return true;
            }
            let mut buf = [0u8; 4096];
            loop {
                match self.tls.reader().read(&mut buf) {
                    Ok(0) => {
                        self.clean_end = true;
                        break;
                    }
                    Ok(n) => self.got.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
        }
        moved
    }
}

#[derive(Debug, Clone)]
struct Case {
    /// The loop's end is the TLS client (the peer is the server).
    client_side: bool,
    up: usize,
    down: usize,
    acts: Vec<Act>,
    /// (loop iteration, flag), in iteration order.
    flags: Vec<(u32, Flag)>,
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        8 => Just(Act::Pass),
        3 => Just(Act::Eagain),
        2 => Just(Act::Eintr),
        3 => (1usize..200).prop_map(Act::Short),
        1 => Just(Act::Reset),
    ]
}

fn flag() -> impl Strategy<Value = Flag> {
    prop_oneof![
        3 => Just(Flag::Readable),
        3 => Just(Flag::Writable),
        2 => Just(Flag::Err),
        2 => Just(Flag::Hup),
        2 => Just(Flag::Rdhup),
    ]
}

/// A quarter of the cases keep their hard faults (resets, ERR, HUP,
/// RDHUP); the others check that every byte arrives.
fn case() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        0usize..40_000,
        0usize..40_000,
        prop::collection::vec(act(), 0..120),
        prop::collection::vec((0u32..30, flag()), 0..6),
        0u8..4,
    )
        .prop_map(|(client_side, up, down, mut acts, mut flags, k)| {
            if k != 0 {
                acts.retain(|a| *a != Act::Reset);
                flags.retain(|(_, f)| !f.hard());
            }
            flags.sort_by_key(|(at, _)| *at);
            Case { client_side, up, down, acts, flags }
        })
}

fn prefix(what: &str, got: &[u8], sent: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(got.len() <= sent.len(), "{what}: {} bytes received, {} sent", got.len(), sent.len());
    if let Some(i) = got.iter().zip(sent).position(|(a, b)| a != b) {
        return Err(TestCaseError::fail(format!("{what}: byte {i} differs")));
    }
    Ok(())
}

fn run(case: &Case, scfg: &Arc<rustls::ServerConfig>, ccfg: &Arc<rustls::ClientConfig>) -> Result<(), TestCaseError> {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let mut el = EventLoop::from_env().unwrap();
    let mut conn = Connection::from_connected(OwnedFd::from(a));
    conn.ctrl_init(el.cx(), 0, FdState::RECV_ACTIVE | FdState::SEND_ACTIVE).unwrap();
    let name = "anypoll.test";
    let (mut tls, peer): (Tls, rustls::Connection) = if case.client_side {
        (Tls::client(ccfg.clone(), name).unwrap(), rustls::ServerConnection::new(scfg.clone()).unwrap().into())
    } else {
        let c = rustls::ClientConnection::new(ccfg.clone(), name.try_into().unwrap()).unwrap();
        (Tls::server(scfg.clone()).unwrap(), c.into())
    };
    tls.init(&mut conn);
    let fd = conn.fd();
    let mut s = Server {
        conn,
        tls,
        ops: Faults { acts: case.acts.iter().copied().collect(), ..Faults::default() },
        inb: Buffer::with_capacity(8192),
        got: Vec::new(),
        outb: Buffer::with_capacity(16384),
        down: pattern(2, case.down),
        queued: 0,
        shut: false,
    };
    let mut c = Client {
        sock: b,
        tls: peer,
        up: pattern(1, case.up),
        sent: 0,
        notified: false,
        got: Vec::new(),
        clean_end: false,
        dead: false,
    };
    let start = Instant::now();
    let mut last_move = Instant::now();
    let mut iterations = 0u32;
    let mut flags: VecDeque<(u32, Flag)> = case.flags.iter().copied().collect();
    let mut flag_hard = false;
    loop {
        for (fd, r) in s.ops.rearm.drain(..) {
            el.cx().inject_event(fd, r);
        }
        while let Some(&(at, f)) = flags.front() {
            if at > iterations || s.conn.is_closed() {
                break;
            }
            flags.pop_front();
            flag_hard |= f.hard();
            let counter = if f.hard() { &FLAGS_HARD } else { &FLAGS_SOFT };
            counter.fetch_add(1, Ordering::Relaxed);
            el.cx().inject_event(fd, f.ready());
        }
        let before = (s.got.len(), s.queued, s.conn.flags);
        el.run_once(&mut s, Some(Duration::from_millis(2))).unwrap();
        iterations += 1;
        let moved = c.step() || before != (s.got.len(), s.queued, s.conn.flags);
        if moved {
            last_move = Instant::now();
        }
        let server_done = s.conn.flags.contains(ConnFlags::SOCK_RD_SH | ConnFlags::SOCK_WR_SH) && !s.tls.snd_pending();
        if s.conn.flags.contains(ConnFlags::ERROR) || (server_done && (c.clean_end || c.dead)) {
            break;
        }
        prop_assert!(
            last_move.elapsed() < Duration::from_secs(2) && iterations < 20_000,
            "stall: {iterations} iterations in {:?}; server flags {:?} err {:?} got {}/{} queued {}/{}; client sent {} got {} dead {}",
            start.elapsed(),
            s.conn.flags,
            s.conn.error(),
            s.got.len(),
            case.up,
            s.queued,
            case.down,
            c.sent,
            c.got.len(),
            c.dead
        );
    }
    prefix("server received", &s.got, &c.up)?;
    prefix("client received", &c.got, &s.down)?;
    if s.ops.hard {
        prop_assert!(s.conn.flags.contains(ConnFlags::ERROR));
        prop_assert_eq!(s.conn.error(), ConnError::Reset);
    } else if flag_hard {
        // The loop above ended: with an error, or with both sides done.
        // Either is a true end; the prefix checks above hold for both.
        let e = s.conn.error();
        prop_assert!(
            s.conn.flags.contains(ConnFlags::ERROR) == (e != ConnError::None),
            "ERROR is set exactly when there is an error: {e:?}, flags {:?}",
            s.conn.flags
        );
    } else {
        prop_assert_eq!(s.conn.error(), ConnError::None, "faults {}", s.ops.faults);
        prop_assert_eq!(s.got.len(), case.up);
        prop_assert!(c.clean_end, "the client did not get close_notify");
        prop_assert_eq!(c.got.len(), case.down);
    }
    FAULTS.fetch_add(s.ops.faults, Ordering::Relaxed);
    HARD.fetch_add(s.ops.hard as u64, Ordering::Relaxed);
    CLIENT_SIDE.fetch_add(case.client_side as u64, Ordering::Relaxed);
    s.conn.force_close(el.cx());
    prop_assert_eq!(el.cx().fd_count(), 0, "fd {} still registered", fd);
    Ok(())
}

#[test]
fn tls_survives_scripted_faults_in_handshake_and_data() {
    let ck = rcgen::generate_simple_self_signed(vec!["anypoll.test".into()]).unwrap();
    let (cert, key) = (ck.cert.pem(), ck.key_pair.serialize_pem());
    let scfg = tls::server_config_pem(cert.as_bytes(), key.as_bytes(), "cert", "key").unwrap();
    let ccfg = tls::client_config_pem(cert.as_bytes(), "ca").unwrap();
    let cases = std::env::var("FAULTS_TLS_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let start = Instant::now();
    runner.run(&case(), |c| run(&c, &scfg, &ccfg)).unwrap();
    let (faults, hard) = (FAULTS.load(Ordering::Relaxed), HARD.load(Ordering::Relaxed));
    let client_side = CLIENT_SIDE.load(Ordering::Relaxed);
    println!(
        "faults_tls: {cases} cases in {:?} ({client_side} on the client side): {faults} faults took effect, {hard} cases with a reset",
        start.elapsed()
    );
    assert!(client_side > 0 && client_side < cases as u64, "{client_side} of {cases} cases on the client side");
    assert!(faults > cases as u64, "the faults did not take effect");
    assert!(hard > 0 && hard < cases as u64, "{hard} of {cases} cases had a reset: the mix is wrong");
    let (soft_flags, hard_flags) = (FLAGS_SOFT.load(Ordering::Relaxed), FLAGS_HARD.load(Ordering::Relaxed));
    println!("faults_tls: poll flags injected: {soft_flags} READABLE/WRITABLE, {hard_flags} ERR/HUP/RDHUP");
    assert!(soft_flags > 0 && hard_flags > 0, "the poll flags were not injected: {soft_flags} soft, {hard_flags} hard");
}
