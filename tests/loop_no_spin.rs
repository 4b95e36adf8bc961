//! No spin: with half-dead sockets, an otherwise idle loop stays in its wait.
//!
//! For every backend and strategy, and every pair of (half-dead socket,
//! owner), one loop runs for 1 s with `run_once(200 ms)`: an idle loop makes
//! about 5 iterations, a spinning one thousands. Each pair has its own loop
//! (in its own thread), so a failure names the socket and the owner.
//!
//! Half-dead sockets:
//! * `reset`: the TCP peer closed with SO_LINGER {1, 0}: a RST (ERR+HUP);
//! * `rdhup-unread`: the TCP peer sent 64 KiB and shut down its write side;
//!   the owner has not read it all (RDHUP with unread data);
//! * `peer-gone`: the TCP peer sent 100 bytes and closed (FIN);
//! * `process-gone`: the other end of a socketpair belonged to a child
//!   process that wrote "hello" and exited.
//!
//! Owners, as a daemon would write them:
//! * `stops`: reads until WouldBlock, Closed or Error, then stops wanting recv;
//! * `closes`: the same, but closes the fd at the end;
//! * `stalls`: reads 1 KiB once, then stops reading (its buffer is full);
//! * `ignores`: wants recv but does no I/O at all;
//! * `ignores-both`: wants recv and send (waiting for room) and does nothing;
//! * `pushes`: a server pushing data: sends 16 KiB chunks until WouldBlock
//!   or an error, reads nothing, and stops both directions on an error (a
//!   peer that does not read leaves it waiting on a full socket buffer).
//!
//! The last two rely on the loop's progress rule: an owner that did
//! nothing is not called again until something new happens, and the loop
//! does not keep the kernel reporting what it already knows.

mod common;

use std::io::Write;
use std::os::fd::{IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anypoll::backends::kqueue::deviations::{self, Deviation};
use anypoll::backends::Capabilities;
use anypoll::{Ctx, FdState, Handler, Io, IoEvent};
use common::{run_matrix, set_linger_zero, tcp_pair, Combo};

/// An idle loop waiting 200 ms per iteration makes about 5 in 1 s, plus a
/// few to handle the socket's last events.
const MAX_ITERATIONS: u64 = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Reset,
    RdhupUnread,
    PeerGone,
    ProcessGone,
}

const SCENARIOS: [Scenario; 4] = [Scenario::Reset, Scenario::RdhupUnread, Scenario::PeerGone, Scenario::ProcessGone];

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Reset => "reset",
            Scenario::RdhupUnread => "rdhup-unread",
            Scenario::PeerGone => "peer-gone",
            Scenario::ProcessGone => "process-gone",
        }
    }

    /// Bytes a reader that reads everything gets.
    fn bytes(self) -> usize {
        match self {
            Scenario::Reset => 0,
            Scenario::RdhupUnread => 64 * 1024,
            Scenario::PeerGone => 100,
            Scenario::ProcessGone => 5,
        }
    }

    /// The owner's fd (non-blocking, ours to close) and what must stay
    /// alive while the loop runs.
    fn setup(self) -> (RawFd, Option<Box<dyn Send>>) {
        match self {
            Scenario::Reset => {
                let (client, server) = tcp_pair();
                server.set_nonblocking(true).unwrap();
                set_linger_zero(std::os::fd::AsRawFd::as_raw_fd(&client));
                drop(client);
                settle(&server, libc::POLLERR | libc::POLLHUP);
                (server.into_raw_fd(), None)
            }
            Scenario::RdhupUnread => {
                let (mut client, server) = tcp_pair();
                server.set_nonblocking(true).unwrap();
                client.write_all(&vec![b'x'; self.bytes()]).unwrap();
                client.shutdown(std::net::Shutdown::Write).unwrap();
                settle(&server, PEER_SHUT);
                (server.into_raw_fd(), Some(Box::new(client)))
            }
            Scenario::PeerGone => {
                let (mut client, server) = tcp_pair();
                server.set_nonblocking(true).unwrap();
                client.write_all(&[b'y'; 100]).unwrap();
                drop(client);
                settle(&server, PEER_SHUT);
                (server.into_raw_fd(), None)
            }
            Scenario::ProcessGone => {
                let (ours, theirs) = UnixStream::pair().unwrap();
                ours.set_nonblocking(true).unwrap();
                let mut child = {
                    let mut cmd = Command::new("sh");
                    cmd.args(["-c", "printf hello"]).stdin(Stdio::null()).stdout(Stdio::from(OwnedFd::from(theirs)));
                    cmd.spawn().expect("spawn sh")
                    // `cmd`, and with it our copy of the child's end, is dropped here.
                };
                assert!(child.wait().unwrap().success());
                (ours.into_raw_fd(), None)
            }
        }
    }
}

/// poll(2)'s "the peer shut its side": Linux's POLLRDHUP. Elsewhere poll
/// has no such flag, and [`settle`] cannot wait for a half-close.
#[cfg(any(target_os = "linux", target_os = "android"))]
const PEER_SHUT: libc::c_short = libc::POLLRDHUP;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const PEER_SHUT: libc::c_short = 0;

/// Waits (up to 5 s) until the kernel has processed what the peer did
/// to `sock` (a FIN, an RST), so that the scenario's state holds before
/// the loop's first wait. On loopback that is usually at once, but a
/// loaded machine can defer the packet to ksoftirqd, and the first event
/// would then show a live socket. Nothing is read: poll(2) only looks.
fn settle(sock: &impl std::os::fd::AsRawFd, events: libc::c_short) {
    if events == 0 {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut p = libc::pollfd { fd: sock.as_raw_fd(), events: events | libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd, a live local; the timeout is bounded.
        let r = unsafe { libc::poll(&mut p, 1, 10) };
        if r > 0 && p.revents & events != 0 {
            return;
        }
        assert!(Instant::now() < deadline, "fd {}: the peer's end never showed ({:#x})", p.fd, p.revents);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Stops,
    Closes,
    Stalls,
    Ignores,
    IgnoresBoth,
    Pushes,
}

const KINDS: [Kind; 6] = [Kind::Stops, Kind::Closes, Kind::Stalls, Kind::Ignores, Kind::IgnoresBoth, Kind::Pushes];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Stops => "stops",
            Kind::Closes => "closes",
            Kind::Stalls => "stalls",
            Kind::Ignores => "ignores",
            Kind::IgnoresBoth => "ignores-both",
            Kind::Pushes => "pushes",
        }
    }
}

struct Owner {
    kind: Kind,
    calls: u64,
    bytes: usize,
    sent: usize,
    /// How the input ended, as the owner saw it.
    end: Option<String>,
    stalled: bool,
    /// The fd state at the first call: proves the socket is half-dead the
    /// way the scenario says.
    first: Option<FdState>,
}

impl Owner {
    fn finish(&mut self, cx: &mut Ctx, fd: RawFd, end: String) {
        self.end = Some(end);
        match self.kind {
            // SAFETY: the fd is the test's alone; it hands it over to be closed.
            Kind::Closes => cx.close(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }).unwrap(),
            _ => cx.stop_recv(fd),
        }
    }
}

impl Handler for Owner {
    fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
        self.calls += 1;
        self.first.get_or_insert(ev.state);
        let mut buf = [0u8; 4096];
        match self.kind {
            Kind::Ignores | Kind::IgnoresBoth => {}
            Kind::Pushes => {
                if !ev.ready.contains(anypoll::Directions::SEND) {
                    return;
                }
                let chunk = [b'z'; 16 * 1024];
                loop {
                    match cx.send(ev.fd, &chunk, false) {
                        Io::Done(n) => self.sent += n,
                        Io::WouldBlock | Io::Closed => return,
                        Io::Error(e) => {
                            self.end = Some(e.to_string());
                            cx.stop_send(ev.fd);
                            cx.stop_recv(ev.fd);
                            return;
                        }
                    }
                }
            }
            Kind::Stalls => {
                if !self.stalled {
                    self.stalled = true;
                    match cx.recv(ev.fd, &mut buf[..1024]) {
                        Io::Done(n) => self.bytes += n,
                        Io::WouldBlock => {}
                        Io::Closed => self.end = Some("closed".into()),
                        Io::Error(e) => self.end = Some(e.to_string()),
                    }
                    cx.stop_recv(ev.fd);
                }
            }
            Kind::Stops | Kind::Closes => {
                if !ev.ready.contains(anypoll::Directions::RECV) {
                    return;
                }
                loop {
                    match cx.recv(ev.fd, &mut buf) {
                        Io::Done(n) => self.bytes += n,
                        Io::WouldBlock => return,
                        Io::Closed => return self.finish(cx, ev.fd, "closed".into()),
                        Io::Error(e) => return self.finish(cx, ev.fd, e.to_string()),
                    }
                }
            }
        }
    }
}

struct Outcome {
    scenario: Scenario,
    kind: Kind,
    iterations: u64,
    calls: u64,
    bytes: usize,
    sent: usize,
    end: Option<String>,
    first: Option<FdState>,
    registered: bool,
    counters: String,
}

fn one(c: Combo, scenario: Scenario, kind: Kind) -> Outcome {
    let mut el = c.new_loop();
    let (fd, keep) = scenario.setup();
    let state = match kind {
        Kind::IgnoresBoth => FdState::RECV_ACTIVE | FdState::SEND_ACTIVE,
        Kind::Pushes => FdState::RECV_ACTIVE | FdState::SEND_ACTIVE | FdState::SEND_READY,
        _ => FdState::RECV_ACTIVE,
    };
    // SAFETY: the test keeps the fd open until it deregisters or closes it.
    el.cx().register(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }, 1, state).unwrap();
    let mut h = Owner { kind, calls: 0, bytes: 0, sent: 0, end: None, stalled: false, first: None };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        el.run_once(&mut h, Some(Duration::from_millis(200))).unwrap();
    }
    let counters = *el.cx().counters();
    let registered = el.cx().state(fd).is_some();
    if registered {
        // SAFETY: the fd is the test's alone; it hands it over to be closed.
        el.cx().close(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }).unwrap();
    }
    drop(keep);
    Outcome {
        scenario,
        kind,
        iterations: counters.iterations,
        calls: h.calls,
        bytes: h.bytes,
        sent: h.sent,
        end: h.end,
        first: h.first,
        registered,
        counters: counters.to_string(),
    }
}

fn check(o: &Outcome, c: Combo) -> Result<(), String> {
    let what = format!("{} with an owner that {}", o.scenario.name(), o.kind.name());
    if o.iterations > MAX_ITERATIONS {
        return Err(format!(
            "{what}: the loop spun: {} iterations in 1 s (at most {MAX_ITERATIONS}); owner calls {}; {}",
            o.iterations, o.calls, o.counters
        ));
    }
    if o.calls == 0 {
        return Err(format!("{what}: the owner was never called; {}", o.counters));
    }
    if matches!(o.kind, Kind::Stops | Kind::Closes) {
        if o.end.is_none() {
            return Err(format!(
                "{what}: the owner never saw the end of the input ({} bytes); {}",
                o.bytes, o.counters
            ));
        }
        if o.bytes != o.scenario.bytes() {
            return Err(format!("{what}: read {} bytes, want {}", o.bytes, o.scenario.bytes()));
        }
    }
    if o.kind == Kind::Pushes {
        if o.scenario == Scenario::RdhupUnread && o.sent == 0 {
            return Err(format!("{what}: nothing was sent to a live peer"));
        }
        if o.scenario != Scenario::RdhupUnread && o.end.is_none() {
            return Err(format!("{what}: sending to a dead peer never failed ({} bytes sent)", o.sent));
        }
    }
    if o.kind == Kind::Closes && o.registered {
        return Err(format!("{what}: the fd is still registered after the owner closed it"));
    }
    // The socket really is in the state the scenario names, where the
    // backend can tell (select reports no ERR/HUP, poll no RDHUP off Linux).
    let first = o.first.unwrap_or_default();
    let want = match o.scenario {
        Scenario::Reset if c.caps.contains(Capabilities::ERRHUP) => FdState::ERROR | FdState::SEEN_HUP,
        Scenario::RdhupUnread if c.caps.contains(Capabilities::RDHUP) => FdState::SEEN_RDHUP,
        _ => FdState::empty(),
    };
    if !first.intersects(want) && !want.is_empty() {
        return Err(format!("{what}: the first call saw {first:?}, want some of {want:?}"));
    }
    Ok(())
}

/// The pairs that hit libkqueue's one epoll registration per fd: a knote
/// added beside the read one loses RDHUP (`rdhup-unread` never shows
/// SEEN_RDHUP), and once the read knote is deleted (`stops`) the write
/// filter fires at every wait, even after its own `EV_DELETE` succeeded
/// (seen in its kevent() calls: the deleted write knote returned 30,000
/// times a second). Skips on `kqueue-libkqueue` only.
fn libkqueue_skip(c: Combo, s: Scenario, k: Kind) -> Result<(), String> {
    if matches!(s, Scenario::RdhupUnread) || k == Kind::Stops {
        deviations::check(c.backend.name, Deviation::SharedRegistration)
    } else {
        Ok(())
    }
}

#[test]
fn half_dead_sockets_do_not_make_an_idle_loop_spin() {
    let combos = common::combos("no_spin");
    run_matrix("no_spin", &combos, |c| {
        let handles: Vec<_> = SCENARIOS
            .iter()
            .flat_map(|&s| KINDS.iter().map(move |&k| (s, k)))
            .filter(|&(s, k)| match libkqueue_skip(c, s, k) {
                Ok(()) => true,
                Err(why) => {
                    println!("  {:<12} {:<13} {:<13} skip: {why}", c.label(), s.name(), k.name());
                    false
                }
            })
            .map(|(s, k)| std::thread::spawn(move || one(c, s, k)))
            .collect();
        let outcomes: Vec<Outcome> = handles.into_iter().map(|h| h.join().expect("scenario thread")).collect();
        let mut errors = Vec::new();
        let mut worst = 0;
        for o in &outcomes {
            worst = worst.max(o.iterations);
            println!(
                "  {:<12} {:<13} {:<13} iterations {:>3} calls {:>2} read {:>5} sent {:>7} first {:?} end {:?}",
                c.label(),
                o.scenario.name(),
                o.kind.name(),
                o.iterations,
                o.calls,
                o.bytes,
                o.sent,
                o.first.unwrap_or_default(),
                o.end
            );
            if let Err(e) = check(o, c) {
                errors.push(e);
            }
        }
        assert!(errors.is_empty(), "{}", errors.join("\n"));
        format!("{} socket/owner pairs, at most {worst} iterations in 1 s", outcomes.len())
    });
}
