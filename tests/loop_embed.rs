//! What an embedder relies on, on every backend present:
//!
//! * every owner value reaches `io()` (none is reserved by the loop), and a
//!   loop with nothing ready waits instead of spinning;
//! * a peer that sends data then resets gives the data, then `Io::Error`
//!   carrying ECONNRESET, never `Io::Closed`;
//! * a backend of the embedder's own (here a counting wrapper around the
//!   poll backend) runs a real loop: `EventLoop<P: Poller>`.

mod common;

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anypoll::backends::{Capabilities, Events, Interest, Poller, Token, Trigger, Waker};
use anypoll::{Ctx, EventLoop, FdState, Handler, Io, IoEvent};
use common::{run_matrix, Combo};

// ---------------------------------------------------------------------------
// No reserved owner value.

const OWNERS: [usize; 3] = [0, usize::MAX - 1, usize::MAX];

#[derive(Default)]
struct Owners {
    /// (owner, bytes read) per call.
    got: Vec<(usize, usize)>,
}

impl Handler for Owners {
    fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
        let mut buf = [0u8; 64];
        loop {
            match cx.recv(ev.fd, &mut buf) {
                Io::Done(n) => self.got.push((ev.owner, n)),
                Io::WouldBlock => return,
                other => panic!("fd {} owner {}: {other:?}", ev.fd, ev.owner),
            }
        }
    }
}

fn any_owner(c: Combo) -> String {
    let mut el = c.new_loop();
    let mut pairs: Vec<(UnixStream, UnixStream)> = Vec::new();
    for &owner in &OWNERS {
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        el.cx().register(&b, owner, FdState::RECV_ACTIVE).unwrap();
        a.write_all(b"ping").unwrap();
        pairs.push((a, b));
    }
    let mut h = Owners::default();
    for _ in 0..20 {
        el.run_once(&mut h, Some(Duration::from_millis(50))).unwrap();
        if OWNERS.iter().all(|o| h.got.iter().any(|(g, _)| g == o)) {
            break;
        }
    }
    for &owner in &OWNERS {
        let n: usize = h.got.iter().filter(|(g, _)| *g == owner).map(|(_, n)| n).sum();
        assert_eq!(n, 4, "owner {owner:#x}: io() read {n} of 4 bytes (calls: {:?})", h.got);
    }
    // Everything is read: 20 iterations must each wait their 50 ms.
    let t = Instant::now();
    for _ in 0..20 {
        el.run_once(&mut h, Some(Duration::from_millis(50))).unwrap();
    }
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900), "20 idle run_once(50 ms) took {took:?}: the loop spins");
    format!("20 idle iterations in {} ms", took.as_millis())
}

#[test]
fn every_owner_value_reaches_io_and_an_idle_loop_waits() {
    run_matrix("any_owner", &common::combos("any_owner"), any_owner);
}

// ---------------------------------------------------------------------------
// Reset after data.

#[derive(Default)]
struct Resets {
    data: Vec<u8>,
    /// What came after the data: `Closed`, or the error's errno.
    end: Option<Result<i32, String>>,
    /// What a recv after that said.
    after: Option<String>,
}

impl Handler for Resets {
    fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
        let mut buf = [0u8; 64];
        while self.end.is_none() {
            match cx.recv(ev.fd, &mut buf) {
                Io::Done(n) => self.data.extend_from_slice(&buf[..n]),
                Io::WouldBlock => return,
                Io::Closed => self.end = Some(Err("Io::Closed".into())),
                Io::Error(e) => self.end = Some(e.raw_os_error().ok_or(format!("Io::Error without errno: {e}"))),
            }
        }
        self.after = Some(format!("{:?}", cx.recv(ev.fd, &mut buf)));
        let _ = cx.deregister(ev.fd);
        cx.stop();
    }
}

fn reset_after_data(c: Combo) -> String {
    let (mut client, server) = common::tcp_pair();
    server.set_nonblocking(true).unwrap();
    client.write_all(b"data").unwrap();
    common::set_linger_zero(client.as_raw_fd());
    drop(client);
    // Let the data and the RST both arrive before the first wait.
    std::thread::sleep(Duration::from_millis(20));
    let mut el = c.new_loop();
    el.cx().register(&server, 7, FdState::RECV_ACTIVE | FdState::STREAM).unwrap();
    let mut h = Resets::default();
    for _ in 0..40 {
        if h.end.is_some() {
            break;
        }
        el.run_once(&mut h, Some(Duration::from_millis(50))).unwrap();
    }
    assert_eq!(h.data, b"data", "the data before the reset");
    match h.end {
        Some(Ok(errno)) if errno == libc::ECONNRESET => {}
        other => panic!("after the data: {other:?}, want Io::Error(ECONNRESET)"),
    }
    // The error is told once; the input is then plainly over.
    assert_eq!(h.after.as_deref(), Some("Closed"), "a recv after the error");
    "data, then ECONNRESET, then Closed".into()
}

#[test]
fn reset_after_data_gives_the_data_then_econnreset_on_every_backend() {
    run_matrix("reset_after_data", &common::combos("reset_after_data"), reset_after_data);
}

// ---------------------------------------------------------------------------
// A third-party backend: EventLoop<P> takes any Poller.

/// A backend of its own: the poll backend, wrapped, counting every call.
#[derive(Debug)]
struct Counting {
    inner: anypoll::backends::poll::Poll,
    adds: usize,
    modifies: usize,
    deletes: usize,
    waits: usize,
    events: usize,
    wakes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Poller for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn add(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> std::io::Result<()> {
        self.adds += 1;
        self.inner.add(fd, token, interest, trigger)
    }
    fn modify(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> std::io::Result<()> {
        self.modifies += 1;
        self.inner.modify(fd, token, interest, trigger)
    }
    fn delete(&mut self, fd: RawFd) -> std::io::Result<()> {
        self.deletes += 1;
        self.inner.delete(fd)
    }
    fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> std::io::Result<usize> {
        self.waits += 1;
        let n = self.inner.wait(events, timeout)?;
        self.events += n;
        Ok(n)
    }
    fn waker(&self) -> Waker {
        // A waker of its own, built with the public Waker::new.
        Waker::new(std::sync::Arc::new(CountingWake { inner: self.inner.waker(), wakes: self.wakes.clone() }))
    }
}

/// Counts the wakes, then wakes the wrapped poll backend.
struct CountingWake {
    inner: Waker,
    wakes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl anypoll::backends::Wake for CountingWake {
    fn wake(&self) -> std::io::Result<()> {
        self.wakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.wake()
    }
}

/// Echoes what it reads on fd `b` back, until the peer closes.
#[derive(Default)]
struct Echo {
    echoed: usize,
}

impl Handler<Counting> for Echo {
    fn io(&mut self, cx: &mut Ctx<Counting>, ev: IoEvent) {
        let mut buf = [0u8; 64];
        loop {
            match cx.recv(ev.fd, &mut buf) {
                Io::Done(n) => match cx.send(ev.fd, &buf[..n], false) {
                    Io::Done(m) => {
                        assert_eq!(m, n, "a short send of {n} bytes on a Unix socket");
                        self.echoed += m;
                    }
                    other => panic!("send on fd {}: {other:?}", ev.fd),
                },
                Io::WouldBlock => return,
                Io::Closed => {
                    cx.deregister(ev.fd).unwrap();
                    cx.stop();
                    return;
                }
                Io::Error(e) => panic!("recv on fd {}: {e}", ev.fd),
            }
        }
    }
}

#[test]
fn a_third_party_backend_runs_a_real_loop() {
    let inner = anypoll::backends::poll::Poll::new().unwrap();
    let counting = Counting { inner, adds: 0, modifies: 0, deletes: 0, waits: 0, events: 0, wakes: Default::default() };
    let mut el = EventLoop::new(counting, None).unwrap();
    assert_eq!(el.cx().backend(), "counting");
    assert_eq!(el.cx().strategy(), anypoll::Strategy::Level);
    let (mut a, b) = UnixStream::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    el.cx().register(&b, 1, FdState::RECV_ACTIVE | FdState::SEND_READY).unwrap();
    let t = std::thread::spawn(move || {
        let mut back = Vec::new();
        for chunk in [&b"one"[..], b"two", b"three"] {
            a.write_all(chunk).unwrap();
            let mut buf = vec![0u8; chunk.len()];
            std::io::Read::read_exact(&mut a, &mut buf).unwrap();
            back.extend_from_slice(&buf);
            std::thread::sleep(Duration::from_millis(10));
        }
        back
    });
    let mut h = Echo::default();
    for _ in 0..200 {
        if el.cx().is_stopping() {
            break;
        }
        el.run_once(&mut h, Some(Duration::from_millis(50))).unwrap();
    }
    let back = t.join().unwrap();
    assert_eq!(back, b"onetwothree");
    assert_eq!(h.echoed, 11);
    let p = el.cx().poller();
    assert!(p.adds >= 1 && p.waits >= 3 && p.events >= 3, "the loop did not go through the wrapper: {p:?}");

    // Another thread stops it through a LoopHandle, which wakes the loop
    // with the backend's own waker.
    let mut el = EventLoop::new(
        Counting {
            inner: anypoll::backends::poll::Poll::new().unwrap(),
            adds: 0,
            modifies: 0,
            deletes: 0,
            waits: 0,
            events: 0,
            wakes: Default::default(),
        },
        None,
    )
    .unwrap();
    let handle: anypoll::LoopHandle<Counting> = el.handle();
    let t = std::thread::spawn(move || handle.run(|cx| cx.stop()).unwrap());
    let start = Instant::now();
    while !el.cx().is_stopping() && start.elapsed() < Duration::from_secs(5) {
        el.run_once(&mut h, Some(Duration::from_secs(5))).unwrap();
    }
    t.join().unwrap();
    assert!(el.cx().is_stopping(), "the closure never ran");
    assert!(start.elapsed() < Duration::from_secs(2), "the wake took {:?}", start.elapsed());
    assert_eq!(el.cx().poller().wakes.load(std::sync::atomic::Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------
// An acceptor thread feeding a worker loop through a LoopHandle.

/// Echoes on every fd it adopted; closes each at EOF.
#[derive(Default)]
struct Worker {
    fds: std::collections::HashMap<RawFd, std::os::fd::OwnedFd>,
    adopted: Vec<usize>,
    echoed: usize,
    closed: usize,
}

impl Handler for Worker {
    fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
        let mut buf = [0u8; 256];
        loop {
            match cx.recv(ev.fd, &mut buf) {
                Io::Done(n) => match cx.send(ev.fd, &buf[..n], false) {
                    Io::Done(m) if m == n => self.echoed += m,
                    other => panic!("send of {n} bytes on fd {}: {other:?}", ev.fd),
                },
                Io::WouldBlock => return,
                Io::Closed | Io::Error(_) => {
                    let fd = self.fds.remove(&ev.fd).expect("an adopted fd");
                    cx.deregister(fd.as_raw_fd()).unwrap();
                    self.closed += 1;
                    return;
                }
            }
        }
    }
    fn adopt(&mut self, _cx: &mut Ctx, fd: std::os::fd::OwnedFd, owner: usize) {
        self.adopted.push(owner);
        self.fds.insert(fd.as_raw_fd(), fd);
    }
}

#[test]
fn an_acceptor_thread_feeds_a_worker_loop_through_its_handle() {
    const CLIENTS: usize = 20;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let mut el = EventLoop::from_env().unwrap();
        tx.send(el.handle()).unwrap();
        let mut w = Worker::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !el.cx().is_stopping() && Instant::now() < deadline {
            el.run_once(&mut w, Some(Duration::from_millis(100))).unwrap();
        }
        (w, el.cx().backend())
    });
    let handle: anypoll::LoopHandle = rx.recv().unwrap();
    let acceptor = {
        let handle = handle.clone();
        std::thread::spawn(move || {
            for owner in 0..CLIENTS {
                let (s, _) = listener.accept().unwrap();
                s.set_nonblocking(true).unwrap();
                handle.register(s.into(), owner, FdState::RECV_ACTIVE | FdState::SEND_READY | FdState::STREAM).unwrap();
            }
        })
    };
    for i in 0..CLIENTS {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let msg = format!("client {i}");
        c.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        std::io::Read::read_exact(&mut c, &mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    acceptor.join().unwrap();
    // A closure queued after every fd: it runs after they were adopted
    // and the clients above closed.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    handle
        .run(move |cx| {
            done_tx.send(cx.backend()).unwrap();
            cx.stop();
        })
        .unwrap();
    let (w, backend) = worker.join().unwrap();
    // If the closure had not run, the loop would have dropped it unsent.
    assert_eq!(done_rx.recv().expect("the closure ran on the loop"), backend);
    let mut owners = w.adopted.clone();
    owners.sort_unstable();
    assert_eq!(owners, (0..CLIENTS).collect::<Vec<_>>(), "{backend}: adopted owners");
    let want: usize = (0..CLIENTS).map(|i| format!("client {i}").len()).sum();
    assert_eq!(w.echoed, want, "{backend}: bytes echoed");
    // The loop is gone: the handle says so instead of queueing.
    let (a, _b) = UnixStream::pair().unwrap();
    let e = handle.register(a.into(), 0, FdState::RECV_ACTIVE).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotConnected, "{e}");
    assert!(e.to_string().contains(backend), "{e}");
}
