//! Platform personality: accept → EMFILE (all): the listener pauses for a
//! while, the loop does not spin, and no queued connection is lost
//! (`docs/transport.md`).
//!
//! `RLIMIT_NOFILE` is process-wide, so this file is its own test binary
//! with a single test. The limit is lowered for real (ENFILE, the
//! system-wide variant, takes the same path in `accept_batch` but cannot be
//! produced here without starving the whole host).

use std::io::Write;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use anypoll::connection::Connection;
use anypoll::listener::{accept_batch, BatchEnd, EMFILE_PAUSE};
use anypoll::{Ctx, FdState, Handler, IoEvent};
use platform_tests::net::nofile_limit;
use platform_tests::scripted::{assert_bytes, default_loop, drive, pattern, Endpoint, Scripted};

const CLIENTS: usize = 5;

/// Owner 0 is the listener; owner k is the k-th accepted connection.
struct Acceptor {
    listener: RawFd,
    conns: Vec<Endpoint>,
    batches: Vec<(usize, BatchEnd)>,
    calls: u64,
}

impl Handler for Acceptor {
    fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
        self.calls += 1;
        if ev.owner == 0 {
            let conns = &mut self.conns;
            let r = accept_batch(cx, self.listener, 16, |cx, sock, _| {
                let mut c = Connection::from_connected(sock);
                c.ctrl_init(cx, conns.len() + 1, FdState::RECV_ACTIVE | FdState::RECV_READY).expect("register");
                conns.push(Endpoint::new(c, Scripted::new()));
            });
            self.batches.push(r);
        } else {
            self.conns[ev.owner - 1].io(cx, ev);
        }
    }
}

fn set_soft_nofile(soft: u64) {
    let (_, hard) = nofile_limit().unwrap();
    let rl = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
    // SAFETY: setrlimit reads the rlimit we pass.
    let r = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
    assert_eq!(r, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// The lowest fd number free now: the next socket would get it.
fn lowest_free_fd(any: RawFd) -> RawFd {
    // SAFETY: dup of an fd we own; the new fd is closed at once.
    let fd = unsafe { libc::dup(any) };
    assert!(fd >= 0, "dup: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just created by dup and is ours.
    unsafe { libc::close(fd) };
    fd
}

#[test]
fn personality_accept_emfile_pauses_without_spin() {
    let mut el = default_loop();
    let listener = anypoll::listener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), 64, false).unwrap();
    let addr = listener.local_addr().unwrap();
    let lfd = listener.as_raw_fd();
    // SAFETY: the test keeps the fd open until it deregisters or closes it.
    el.cx().register(unsafe { std::os::fd::BorrowedFd::borrow_raw(lfd) }, 0, FdState::RECV_ACTIVE).unwrap();
    let mut h = Acceptor { listener: lfd, conns: Vec::new(), batches: Vec::new(), calls: 0 };
    // The clients are queued in the backlog, their bytes sent, before any accept.
    let want: Vec<Vec<u8>> = (0..CLIENTS).map(|i| pattern(40 + i as u64, 3000 + i * 1000)).collect();
    let clients: Vec<TcpStream> = want
        .iter()
        .map(|w| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(w).unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            c
        })
        .collect();

    // Out of fds: the next accept() fails with EMFILE.
    let (soft, _) = nofile_limit().unwrap();
    let limit = lowest_free_fd(lfd) as u64;
    set_soft_nofile(limit);
    let start = *el.cx().counters();
    let t = Instant::now();
    let starve = Duration::from_millis(350);
    while t.elapsed() < starve {
        el.run_once(&mut h, Some(Duration::from_millis(50))).unwrap();
    }
    let spent = el.cx().counters().since(&start);
    set_soft_nofile(soft);
    println!("starved for {starve:?}: {spent}; batches {:?}", h.batches);
    assert!(h.conns.is_empty(), "accepted while out of fds?");
    assert!(h.batches.iter().all(|b| *b == (0, BatchEnd::Paused)), "{:?}", h.batches);
    // One accept per pause (EMFILE_PAUSE): no spin on the queued connections.
    let pauses = (starve.as_millis() / EMFILE_PAUSE.as_millis()) as u64 + 1;
    assert!(!h.batches.is_empty() && spent.accepts <= pauses + 1, "{spent} (max {} accepts)", pauses + 1);
    assert!(spent.iterations <= 2 * pauses + 10, "the loop spins while out of fds: {spent}");
    assert!(h.calls <= pauses + 1, "{} calls", h.calls);

    // Fds are back: the listener resumes by itself and nothing was lost.
    let spent = drive(&mut el, &mut h, Duration::from_secs(5), |h| {
        h.conns.len() == CLIENTS && h.conns.iter().all(Endpoint::done)
    });
    for (i, c) in h.conns.iter().enumerate() {
        // Accept order is the backlog's order: client i is connection i.
        assert_bytes(&format!("client {i}"), &c.got, &want[i]);
    }
    assert!(h.batches.iter().any(|b| b.0 == CLIENTS), "{:?}", h.batches);
    assert!(spent.iterations <= 20, "{spent}");
    drop(clients);
}
