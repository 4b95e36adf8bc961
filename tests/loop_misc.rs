//! The loop's smaller promises, on every backend present:
//!
//! * a stale event for a closed and reused fd number never reaches the new owner;
//! * enabling then disabling a direction between two waits costs no syscall;
//! * timers fire in deadline order (then insertion order), never early, and
//!   cancelled or rescheduled ones never fire at their old time;
//! * a waker wakes a waiting loop from another thread, and wakes coalesce;
//! * signals arrive as loop events (one test, since signals are per process);
//! * forcing edge on a backend without EDGE is an error naming both;
//! * a listener accepts at most `max` connections per call.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anypoll::backends::Capabilities;
use anypoll::listener::{self, BatchEnd};
use anypoll::{Ctx, EventLoop, FdState, Handler, Io, IoEvent, Signal, Strategy, TimerId};
use common::{run_matrix, Combo};

/// Reads everything there is; returns the bytes and whether EOF was seen.
fn drain(cx: &mut Ctx, fd: RawFd) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match cx.recv(fd, &mut buf) {
            Io::Done(n) => out.extend_from_slice(&buf[..n]),
            Io::WouldBlock => return (out, false),
            Io::Closed => return (out, true),
            Io::Error(e) => panic!("recv on fd {fd}: {e}"),
        }
    }
}

fn nonblocking_pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// dup2(2) `from` onto `to`, so the new socket takes the old number.
fn dup_onto(from: RawFd, to: RawFd) {
    // SAFETY: both are fds this test owns; dup2 closes `to` atomically first.
    let r = unsafe { libc::dup2(from, to) };
    assert_eq!(r, to, "dup2: {}", std::io::Error::last_os_error());
}

// ---------------------------------------------------------------------------
// Stale events after fd reuse.

#[derive(Default)]
struct Reuse {
    /// (owner, ready, data read) for every call.
    calls: Vec<(usize, anypoll::Directions, Vec<u8>)>,
    /// fd of owner 1 and 2.
    fds: HashMap<usize, RawFd>,
    /// The writer of the socket that took the closed number.
    new_tx: Option<UnixStream>,
    reused: Option<RawFd>,
    /// Events the loop had seen when the number was reused.
    events_then: u64,
}

impl Handler for Reuse {
    fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
        let (data, _) = drain(cx, ev.fd);
        self.calls.push((ev.owner, ev.ready, data));
        if self.reused.is_none() && (ev.owner == 1 || ev.owner == 2) {
            // The first owner called closes the other one, whose event is
            // already on the run list, and a new socket takes its number.
            let other = self.fds[&(3 - ev.owner)];
            cx.deregister(other).unwrap();
            // dup2 closes the old socket and reuses its number in one step:
            // a close() then a new socket could hand the number to another
            // test's thread in between.
            let (rx, tx) = nonblocking_pair();
            dup_onto(rx.as_raw_fd(), other);
            drop(rx);
            // SAFETY: the test keeps the fd open until it deregisters or closes it.
            cx.register(unsafe { std::os::fd::BorrowedFd::borrow_raw(other) }, 3, FdState::RECV_ACTIVE).unwrap();
            self.new_tx = Some(tx);
            self.reused = Some(other);
            self.events_then = cx.counters().events;
        }
    }
}

fn stale_after_reuse(c: Combo) -> String {
    // 1. Reused within one batch, from a handler.
    let mut el = c.new_loop();
    let (a_rx, mut a_tx) = nonblocking_pair();
    let (b_rx, mut b_tx) = nonblocking_pair();
    let (fa, fb) = (a_rx.into_raw_fd(), b_rx.into_raw_fd());
    // SAFETY: the test keeps the fd open until it deregisters or closes it.
    el.cx().register(unsafe { std::os::fd::BorrowedFd::borrow_raw(fa) }, 1, FdState::RECV_ACTIVE).unwrap();
    // SAFETY: the test keeps the fd open until it deregisters or closes it.
    el.cx().register(unsafe { std::os::fd::BorrowedFd::borrow_raw(fb) }, 2, FdState::RECV_ACTIVE).unwrap();
    el.run_once(&mut Reuse::default(), Some(Duration::ZERO)).unwrap();
    a_tx.write_all(b"to-a").unwrap();
    b_tx.write_all(b"to-b").unwrap();
    let events_before = el.cx().counters().events;
    let mut h = Reuse { fds: HashMap::from([(1, fa), (2, fb)]), ..Reuse::default() };
    let deadline = Instant::now() + Duration::from_secs(2);
    while h.reused.is_none() && Instant::now() < deadline {
        el.run_once(&mut h, Some(Duration::from_millis(100))).unwrap();
    }
    let reused = h.reused.expect("no owner was called");
    for _ in 0..3 {
        el.run_once(&mut h, Some(Duration::from_millis(20))).unwrap();
    }
    assert_eq!(
        h.events_then - events_before,
        2,
        "both sockets must be reported in one wait, so the other's event is pending"
    );
    assert_eq!(h.calls.len(), 1, "only the first owner may be called before new data: {:?}", h.calls);
    let first = h.calls[0].0;
    h.new_tx.as_mut().unwrap().write_all(b"new").unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while h.calls.len() < 2 && Instant::now() < deadline {
        el.run_once(&mut h, Some(Duration::from_millis(100))).unwrap();
    }
    assert_eq!(h.calls.len(), 2, "the new owner never got its data: {:?}", h.calls);
    assert_eq!(h.calls[1].0, 3, "{:?}", h.calls);
    assert_eq!(h.calls[1].2, b"new", "the new owner must read its own data only");
    let first_fd = h.fds[&first];
    // SAFETY: the fd is the test's alone; it hands it over to be closed.
    el.cx().close(unsafe { std::os::fd::FromRawFd::from_raw_fd(first_fd) }).unwrap();
    // SAFETY: the fd is the test's alone; it hands it over to be closed.
    el.cx().close(unsafe { std::os::fd::FromRawFd::from_raw_fd(reused) }).unwrap();
    let stale1 = el.cx().counters().stale;
    drop((a_tx, b_tx));

    // 2. Closed behind the loop's back, with data pending, then reused.
    let mut el = c.new_loop();
    let (a_rx, mut a_tx) = nonblocking_pair();
    let fa = a_rx.into_raw_fd();
    // SAFETY: the test keeps the fd open until it deregisters or closes it.
    el.cx().register(unsafe { std::os::fd::BorrowedFd::borrow_raw(fa) }, 1, FdState::RECV_ACTIVE).unwrap();
    // `reused` set: no reuse from the handler here.
    let mut h = Reuse { reused: Some(-1), ..Reuse::default() };
    el.run_once(&mut h, Some(Duration::ZERO)).unwrap();
    a_tx.write_all(b"old").unwrap();
    let (rx, mut tx) = nonblocking_pair();
    dup_onto(rx.as_raw_fd(), fa);
    drop(rx);
    // SAFETY: the test keeps the fd open until it deregisters or closes it.
    el.cx().register(unsafe { std::os::fd::BorrowedFd::borrow_raw(fa) }, 2, FdState::RECV_ACTIVE).unwrap();
    for _ in 0..3 {
        el.run_once(&mut h, Some(Duration::from_millis(20))).unwrap();
    }
    assert!(h.calls.is_empty(), "an event of the closed socket reached an owner: {:?}", h.calls);
    tx.write_all(b"mine").unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while h.calls.is_empty() && Instant::now() < deadline {
        el.run_once(&mut h, Some(Duration::from_millis(100))).unwrap();
    }
    assert_eq!(h.calls.len(), 1, "{:?}", h.calls);
    assert_eq!((h.calls[0].0, h.calls[0].2.as_slice()), (2, &b"mine"[..]));
    // SAFETY: the fd is the test's alone; it hands it over to be closed.
    el.cx().close(unsafe { std::os::fd::FromRawFd::from_raw_fd(fa) }).unwrap();
    format!("reuse from a handler (owner {first} closed the other, whose event was pending; stale counter {stale1}) and behind the loop's back")
}

#[test]
fn a_stale_event_after_fd_reuse_never_reaches_the_new_owner() {
    run_matrix("stale_reuse", &common::combos("stale_reuse"), stale_after_reuse);
}

// ---------------------------------------------------------------------------
// Toggling between waits.

#[derive(Default)]
struct Toggler {
    calls: u64,
    toggle_in_handler: bool,
}

impl Handler for Toggler {
    fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
        self.calls += 1;
        if self.toggle_in_handler {
            cx.want_send(ev.fd);
            cx.stop_send(ev.fd);
            cx.stop_recv(ev.fd);
            cx.want_recv(ev.fd);
        }
        if ev.ready.contains(anypoll::Directions::RECV) {
            drain(cx, ev.fd);
        }
    }
}

fn toggling(c: Combo) -> String {
    let mut el = c.new_loop();
    let (rx, mut tx) = nonblocking_pair();
    let (spec_rx, _spec_tx) = nonblocking_pair();
    let fd = rx.as_raw_fd();
    let sfd = spec_rx.as_raw_fd();
    // SAFETY: the test keeps the fd open until it deregisters or closes it.
    el.cx().register(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }, 1, FdState::RECV_ACTIVE).unwrap();
    // A connected socket that may send at once: want_send makes it runnable
    // (a speculative call), stop_send takes that back before it happens.
    // SAFETY: the test keeps the fd open until it deregisters or closes it.
    el.cx().register(unsafe { std::os::fd::BorrowedFd::borrow_raw(sfd) }, 2, FdState::SEND_READY).unwrap();
    let mut h = Toggler::default();
    for _ in 0..2 {
        el.run_once(&mut h, Some(Duration::from_millis(5))).unwrap();
    }
    let c0 = *el.cx().counters();

    // Outside any handler, between two waits.
    for _ in 0..10 {
        el.cx().want_send(fd);
        el.cx().stop_send(fd);
        el.cx().stop_recv(fd);
        el.cx().want_recv(fd);
        el.cx().want_send(sfd);
        el.cx().stop_send(sfd);
        el.run_once(&mut h, Some(Duration::from_millis(5))).unwrap();
    }
    let d = el.cx().counters().since(&c0);
    assert_eq!(d.ctl, 0, "toggling between waits made poller calls: {d}");
    assert_eq!(d.syscalls(), d.waits, "toggling between waits made syscalls besides the waits: {d}");
    assert_eq!(h.calls, 0, "no owner has anything to do");

    // Inside a handler, around real I/O.
    h.toggle_in_handler = true;
    let c1 = *el.cx().counters();
    for i in 0..5u8 {
        tx.write_all(&[i]).unwrap();
        let calls = h.calls;
        let deadline = Instant::now() + Duration::from_secs(2);
        while h.calls == calls && Instant::now() < deadline {
            el.run_once(&mut h, Some(Duration::from_millis(100))).unwrap();
        }
        assert!(h.calls > calls, "the owner was not called for byte {i}");
        el.run_once(&mut h, Some(Duration::from_millis(5))).unwrap();
    }
    let d = el.cx().counters().since(&c1);
    assert_eq!(d.ctl, 0, "toggling inside handlers made poller calls: {d}");
    let per = d.reads as f64 / 5.0;
    el.cx().deregister(fd).unwrap();
    el.cx().deregister(sfd).unwrap();
    format!("0 ctl over 10 outside + 5 inside toggles; {per:.1} recv per byte")
}

#[test]
fn toggling_a_direction_between_waits_costs_no_syscall() {
    run_matrix("toggle", &common::combos("toggle"), toggling);
}

// ---------------------------------------------------------------------------
// Timers.

#[derive(Default)]
struct Clock {
    fired: Vec<(u64, Instant)>,
    cancel_from_callback: Option<TimerId>,
    added_from_callback: Option<Instant>,
}

impl Handler for Clock {
    fn io(&mut self, _cx: &mut Ctx, ev: IoEvent) {
        panic!("no fd is registered, yet {ev:?}");
    }
    fn timer(&mut self, cx: &mut Ctx, _id: TimerId, data: u64) {
        self.fired.push((data, Instant::now()));
        if data == 1 {
            // From a callback: cancel a pending timer and set a new one.
            let id = self.cancel_from_callback.take().unwrap();
            assert!(cx.cancel_timer(id));
            self.added_from_callback = Some(Instant::now() + Duration::from_millis(1));
            cx.add_timer(Duration::from_millis(1), 5);
        }
    }
}

fn timers(c: Combo) -> String {
    let mut el = c.new_loop();
    let cx = el.cx();
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    let mut deadlines = HashMap::new();
    cx.add_timer_at(ms(120), 4);
    deadlines.insert(4, ms(120));
    cx.add_timer_at(ms(20), 1);
    deadlines.insert(1, ms(20));
    // Two with the same deadline fire in the order they were set.
    cx.add_timer_at(ms(60), 2);
    cx.add_timer_at(ms(60), 3);
    deadlines.insert(2, ms(60));
    deadlines.insert(3, ms(60));
    let cancelled = cx.add_timer_at(ms(25), 99);
    assert!(cx.cancel_timer(cancelled));
    assert!(!cx.cancel_timer(cancelled), "a timer is cancelled once");
    let moved = cx.add_timer_at(ms(5), 0);
    let moved = cx.reschedule_timer(moved, Duration::from_millis(90)).expect("pending");
    deadlines.insert(0, Instant::now() + Duration::from_millis(90) - Duration::from_millis(1));
    let from_callback = cx.add_timer_at(ms(100), 98);
    assert_eq!(cx.timer_count(), 6);
    let mut h = Clock { cancel_from_callback: Some(from_callback), ..Clock::default() };
    let deadline = t0 + Duration::from_secs(3);
    while h.fired.len() < 6 && Instant::now() < deadline {
        el.run_once(&mut h, Some(Duration::from_millis(500))).unwrap();
    }
    let order: Vec<u64> = h.fired.iter().map(|(d, _)| *d).collect();
    assert_eq!(order, vec![1, 5, 2, 3, 0, 4], "timer order");
    deadlines.insert(5, h.added_from_callback.unwrap());
    for (data, at) in &h.fired {
        assert!(*at >= deadlines[data], "timer {data} fired {:?} early", deadlines[data] - *at);
    }
    assert!(!el.cx().cancel_timer(moved), "a fired timer cannot be cancelled");
    assert_eq!(el.cx().timer_count(), 0);
    let iterations = el.cx().counters().iterations;
    // One wait per distinct deadline, plus slack: an idle loop sleeps
    // until the next timer instead of polling.
    assert!(iterations <= 12, "{iterations} iterations for 6 timers: the loop does not sleep until the next one");
    let late = h.fired.iter().map(|(d, at)| at.duration_since(deadlines[d])).max().unwrap();
    format!("order 1,5,2,3,0,4; cancelled ones silent; {iterations} iterations; latest {} µs late", late.as_micros())
}

#[test]
fn timers_fire_in_order_and_cancelled_ones_never_fire() {
    run_matrix("timers", &common::combos("timers"), timers);
}

// ---------------------------------------------------------------------------
// Waker.

#[derive(Default)]
struct Wakes {
    wakes: u64,
    stop_on_wake: bool,
}

impl Handler for Wakes {
    fn io(&mut self, _cx: &mut Ctx, ev: IoEvent) {
        panic!("no fd is registered, yet {ev:?}");
    }
    fn wake(&mut self, cx: &mut Ctx) {
        self.wakes += 1;
        if self.stop_on_wake {
            cx.stop();
        }
    }
}

fn waker(c: Combo) -> String {
    let mut el = c.new_loop();
    let w = el.cx().waker();
    let mut h = Wakes::default();

    // From another thread, while the loop waits.
    let w2 = w.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        w2.wake().unwrap();
    });
    let start = Instant::now();
    el.run_once(&mut h, Some(Duration::from_secs(5))).unwrap();
    let took = start.elapsed();
    t.join().unwrap();
    assert_eq!(h.wakes, 1);
    assert!(took < Duration::from_secs(2), "the wake took {took:?}");

    // Wakes before a wait coalesce into one, and leave nothing behind.
    for _ in 0..5 {
        w.wake().unwrap();
    }
    el.run_once(&mut h, Some(Duration::from_secs(1))).unwrap();
    assert_eq!(h.wakes, 2, "five wakes before a wait give one wake-up");
    let start = Instant::now();
    el.run_once(&mut h, Some(Duration::from_millis(50))).unwrap();
    assert_eq!(h.wakes, 2, "a wake-up was delivered twice");
    assert!(start.elapsed() >= Duration::from_millis(45), "the wait ended early with nothing to do");

    // run() returns when a wake-up handler stops the loop.
    h.stop_on_wake = true;
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        w.wake().unwrap();
    });
    el.run(&mut h).unwrap();
    t.join().unwrap();
    format!("woken after {} ms; coalesced; stopped run()", took.as_millis())
}

#[test]
fn the_waker_wakes_a_waiting_loop_from_another_thread() {
    run_matrix("waker", &common::combos("waker"), waker);
}

// ---------------------------------------------------------------------------
// Signals. One test: signal dispositions belong to the process.

#[derive(Default)]
struct Signals {
    got: Vec<Signal>,
}

impl Handler for Signals {
    fn io(&mut self, _cx: &mut Ctx, ev: IoEvent) {
        panic!("the signal pipe must not reach owners: {ev:?}");
    }
    fn signal(&mut self, _cx: &mut Ctx, signal: Signal) {
        self.got.push(signal);
    }
}

fn signals(c: Combo) -> String {
    let mut el = c.new_loop();
    el.handle_signals(&[Signal::Usr1, Signal::Usr2]).unwrap();
    let mut other = c.new_loop();
    let e = other.handle_signals(&[Signal::Usr1]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
    // SIGKILL cannot even be named: Signal has no such value.
    assert_eq!(Signal::from_raw(libc::SIGKILL), None);

    let mut h = Signals::default();
    // SAFETY: raise() sends a signal to this thread; the loop's handler is installed.
    unsafe {
        libc::raise(libc::SIGUSR1);
        libc::raise(libc::SIGUSR2);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while h.got.len() < 2 && Instant::now() < deadline {
        el.run_once(&mut h, Some(Duration::from_millis(100))).unwrap();
    }
    assert_eq!(h.got, vec![Signal::Usr1, Signal::Usr2]);

    // From another thread, while the loop waits.
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: `me` is the test thread, alive until it joins this one.
        unsafe { libc::pthread_kill(me, libc::SIGUSR2) };
    });
    let start = Instant::now();
    while h.got.len() < 3 && start.elapsed() < Duration::from_secs(5) {
        el.run_once(&mut h, Some(Duration::from_secs(5))).unwrap();
    }
    let took = start.elapsed();
    t.join().unwrap();
    assert_eq!(h.got, vec![Signal::Usr1, Signal::Usr2, Signal::Usr2]);
    assert!(took < Duration::from_secs(2), "the signal took {took:?} to arrive");

    // Dropping the loop gives the signals back.
    drop(el);
    other.handle_signals(&[Signal::Usr1]).unwrap();
    drop(other);
    format!("SIGUSR1 and SIGUSR2 delivered in order; from another thread after {} ms", took.as_millis())
}

#[test]
fn signals_arrive_as_loop_events() {
    // Level only: the signal pipe is the same on both strategies, and one
    // loop per process may take signals, so the backends run one by one.
    let combos: Vec<Combo> = common::combos("signals").into_iter().filter(|c| c.strategy == Strategy::Level).collect();
    run_matrix("signals", &combos, signals);
}

// ---------------------------------------------------------------------------
// Forcing a strategy.

#[test]
fn forcing_edge_where_the_backend_cannot_is_an_error_that_names_both() {
    let mut checked = 0;
    for (b, caps) in common::backends() {
        let forced = EventLoop::new(b.create().unwrap(), Some(Strategy::Edge));
        if caps.contains(Capabilities::EDGE) {
            let mut el = forced.unwrap_or_else(|e| panic!("{}: edge refused: {e}", b.name));
            assert_eq!(el.cx().strategy(), Strategy::Edge);
            println!("force_edge {}: pass (edge accepted)", b.name);
        } else {
            let e = forced.err().unwrap_or_else(|| panic!("{}: edge accepted without EDGE", b.name));
            let msg = e.to_string();
            assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{}: {msg}", b.name);
            assert!(msg.contains(b.name) && msg.contains("edge"), "{}: the error must name both: {msg}", b.name);
            println!("force_edge {}: pass (refused: {msg})", b.name);
        }
        let mut el = EventLoop::new(b.create().unwrap(), Some(Strategy::Level)).unwrap();
        assert_eq!(el.cx().strategy(), Strategy::Level);
        let mut el = EventLoop::new(b.create().unwrap(), None).unwrap();
        assert_eq!(el.cx().strategy(), Strategy::Level, "{}: level is the default where it exists", b.name);
        checked += 1;
    }
    assert!(checked > 0);
}

// ---------------------------------------------------------------------------
// Listener batches.

#[derive(Default)]
struct Acceptor {
    batches: Vec<(usize, BatchEnd)>,
    accepted: Vec<(std::os::fd::OwnedFd, std::net::SocketAddr)>,
}

const MAX_ACCEPT: usize = 3;

impl Handler for Acceptor {
    fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
        let accepted = &mut self.accepted;
        let (n, end) = listener::accept_batch(cx, ev.fd, MAX_ACCEPT, |_, sock, peer| {
            assert!(peer.ip().is_loopback());
            accepted.push((sock, peer));
        });
        self.batches.push((n, end));
    }
}

fn accept_batches(c: Combo) -> String {
    const CLIENTS: usize = 10;
    let mut el = c.new_loop();
    let l = listener::bind("127.0.0.1:0".parse().unwrap(), 64, false).unwrap();
    let addr = l.local_addr().unwrap();
    el.cx().register(&l, 0, FdState::RECV_ACTIVE).unwrap();
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut h = Acceptor::default();
    let deadline = Instant::now() + Duration::from_secs(3);
    while h.accepted.len() < CLIENTS && Instant::now() < deadline {
        el.run_once(&mut h, Some(Duration::from_millis(100))).unwrap();
    }
    assert_eq!(h.accepted.len(), CLIENTS, "batches {:?}", h.batches);
    assert!(h.batches.iter().all(|(n, _)| *n <= MAX_ACCEPT), "a batch went over the budget: {:?}", h.batches);
    assert!(h.batches.iter().any(|(_, e)| *e == BatchEnd::Budget), "{:?}", h.batches);
    assert!(h.batches.len() >= CLIENTS.div_ceil(MAX_ACCEPT), "{:?}", h.batches);
    // The accepted sockets are the clients' peers, and work.
    let peer = clients[0].local_addr().unwrap();
    let (sock, _) = h.accepted.drain(..).find(|(_, p)| *p == peer).expect("client 0 was accepted");
    let mut server = TcpStream::from(sock);
    server.set_nonblocking(false).unwrap();
    (&clients[0]).write_all(b"hi").unwrap();
    let mut buf = [0u8; 2];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");
    el.cx().deregister(l.as_raw_fd()).unwrap();
    let batches: Vec<String> = h.batches.iter().map(|(n, e)| format!("{n}:{e:?}")).collect();
    format!("{CLIENTS} clients in batches [{}]", batches.join(" "))
}

#[test]
fn a_listener_accepts_at_most_max_per_call() {
    run_matrix("accept_batch", &common::combos("accept_batch"), accept_batches);
}

/// An ERR report that the socket does not back (recv and send say EAGAIN,
/// SO_ERROR holds nothing) ends the connection with the loop's "ERR
/// without errno" error, on recv and on send alike. The sticky ERROR
/// stops the fd's polling, so an EAGAIN that only cleared READY would
/// leave the owner waiting for an event that never comes (found by
/// faults_tls: a TLS end stalled after an injected ERR).
fn eagain_under_err(c: Combo) -> String {
    let mut el = c.new_loop();
    for dir in ["recv", "send"] {
        let (a, _peer) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let fd = a.as_raw_fd();
        if dir == "send" {
            // Fill the socket, so that send says EAGAIN.
            let chunk = [0u8; 65536];
            for _ in 0..10_000 {
                if (&a).write(&chunk).is_err() {
                    break;
                }
            }
        }
        el.cx().register(&a, 0, FdState::RECV_ACTIVE | FdState::SEND_ACTIVE).unwrap();
        el.cx().inject_event(fd, anypoll::backends::Ready::ERROR);
        let io = if dir == "recv" { el.cx().recv(fd, &mut [0u8; 16]) } else { el.cx().send(fd, b"x", false) };
        match io {
            Io::Error(e) => {
                assert!(e.to_string().contains("does not name"), "{dir}: {e}");
                assert!(el.cx().state(fd).is_some_and(|s| s.contains(FdState::RECV_SHUT | FdState::SEND_SHUT)));
            }
            other => panic!("{dir} on fd {fd} after an ERR report: {other:?}, not the error"),
        }
        // Told once: later calls say Closed, without a syscall.
        assert!(matches!(el.cx().recv(fd, &mut [0u8; 16]), Io::Closed), "{dir}: told twice");
        el.cx().deregister(fd).unwrap();
    }
    "recv and send give the error".into()
}

#[test]
fn an_eagain_after_an_err_report_is_the_error_not_a_wait() {
    run_matrix("eagain_under_err", &common::combos("eagain_under_err"), eagain_under_err);
}
