//! The event-ports backend over the kernel model: the model's own
//! behaviour (as `port_getn(3C)` and illumos's portfs have it), and each
//! quirk switch, which the backend must survive with no lost event, no
//! spin and no leaked association.
//!
//! `cargo test -p anypoll-backends --features models --test evports_model`

#![cfg(all(target_os = "linux", feature = "models"))]

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anypoll_backends::evports::bits::{PortEvent, PORT_SOURCE_FD};
use anypoll_backends::evports::{EvPorts, PortOps};
use anypoll_backends::evports_model::{Model, Quirks};
use anypoll_backends::{Events, Interest, Poller, Ready, Token, Trigger};

/// How long an event that must come may take.
const SOON: Duration = Duration::from_secs(2);
/// The window in which nothing may be reported.
const QUIET: Duration = Duration::from_millis(60);

fn backend(quirks: Quirks) -> (EvPorts<Model>, Model) {
    let model = Model::new(quirks);
    let p = EvPorts::with_ops(model.clone()).expect("an evports-model poller");
    (p, model)
}

/// `n` socket pairs, each reader registered level-triggered for READ with
/// token i, each with one byte waiting: (writer, reader).
fn readable_pairs(p: &mut EvPorts<Model>, n: usize) -> Vec<(UnixStream, UnixStream)> {
    (0..n)
        .map(|i| {
            let (mut a, b) = UnixStream::pair().unwrap();
            b.set_nonblocking(true).unwrap();
            a.write_all(b"x").unwrap();
            p.add(b.as_raw_fd(), Token(i), Interest::READ, Trigger::Level).unwrap();
            (a, b)
        })
        .collect()
}

/// Waits until every token in `want` has been reported READABLE (waits of
/// at most 200 ms each, for up to [`SOON`]); returns how many waits it took.
fn expect_tokens(p: &mut EvPorts<Model>, ev: &mut Events, want: &BTreeSet<usize>, what: &str) -> usize {
    let deadline = Instant::now() + SOON;
    let mut seen = BTreeSet::new();
    let mut waits = 0;
    while &seen != want {
        assert!(
            Instant::now() < deadline,
            "{what}: within {SOON:?}, saw tokens {seen:?} of {want:?}: events were lost"
        );
        p.wait(ev, Some(Duration::from_millis(200))).unwrap_or_else(|e| panic!("{what}: wait failed: {e}"));
        waits += 1;
        for e in ev.iter() {
            assert!(want.contains(&e.token().0), "{what}: unexpected token {}", e.token().0);
            assert_eq!(e.ready(), Ready::READABLE, "{what}: token {}", e.token().0);
            seen.insert(e.token().0);
        }
    }
    waits
}

/// Nothing for [`QUIET`], and the waits really sleep (at most 2 early
/// returns: more is a busy loop).
fn expect_quiet(p: &mut EvPorts<Model>, ev: &mut Events, what: &str) {
    let deadline = Instant::now() + QUIET;
    let mut early = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = p.wait(ev, Some(left)).unwrap_or_else(|e| panic!("{what}: wait failed: {e}"));
        assert_eq!(n, 0, "{what}: expected silence, got {:?}", ev.iter().collect::<Vec<_>>());
        if Instant::now() >= deadline {
            return;
        }
        early += 1;
        assert!(early <= 2, "{what}: the wait returned early with nothing {early} times: a busy loop");
    }
}

fn drain(s: &mut UnixStream) {
    let mut buf = [0u8; 64];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

/// The whole life of `n` level registrations under `quirks`: every event
/// comes (twice, level), silence after draining, a wake-up gets through,
/// and nothing is left associated after `delete`.
fn survives(quirks: Quirks, n: usize) {
    let (mut p, model) = backend(quirks);
    let mut pairs = readable_pairs(&mut p, n);
    let mut ev = Events::with_capacity(16);
    let all: BTreeSet<usize> = (0..n).collect();
    let waits = expect_tokens(&mut p, &mut ev, &all, "first");
    assert_eq!(waits, 1, "{quirks:?}: all {n} ready fds fit in one wait of capacity 16");
    expect_tokens(&mut p, &mut ev, &all, "level, nothing read yet");
    for (_, b) in &mut pairs {
        drain(b);
    }
    expect_quiet(&mut p, &mut ev, "after draining");
    p.waker().wake().unwrap();
    p.wait(&mut ev, Some(SOON)).unwrap();
    assert!(ev.woken(), "{quirks:?}: the wake-up was lost");
    for (_, b) in &pairs {
        p.delete(b.as_raw_fd()).unwrap();
    }
    assert_eq!(model.associations(), 0, "{quirks:?}: associations left after delete");
}

#[test]
fn survives_the_faithful_model() {
    survives(Quirks::default(), 3);
}

/// HAProxy's finding. Defence: nget = 1 (wait for one event, take up to
/// max). With nget = max the lone event waits for the timeout and is lost.
#[test]
fn survives_a_lone_event_lost_with_nget_above_one() {
    survives(Quirks { lone_event_lost_with_nget: true, ..Quirks::default() }, 1);
}

/// Defence: nget is honoured on ETIME. Dropping ETIME's events (as
/// rustix's `port::getn` does) loses them and their associations.
#[test]
fn survives_etime_with_every_batch() {
    survives(Quirks { etime_with_events: true, ..Quirks::default() }, 3);
}

/// Defence: on EINTR the events are the leading written entries, not
/// nget (left at 1): trusting it loses all but the first.
#[test]
fn survives_eintr_with_every_batch_and_nget_unchanged() {
    survives(Quirks { eintr_with_events: true, ..Quirks::default() }, 3);
}

/// The bug the model found: `add` (and `modify`) associated at once, the association
/// fired there with `POLLOUT` (writable, nothing to read yet), and the
/// wait after a write reported that stale `WRITABLE` alone. Fix: every
/// association is made again at the start of the wait.
#[test]
fn events_carry_the_readiness_of_the_wait_not_of_add_or_modify() {
    let (mut p, model) = backend(Quirks::default());
    let (mut a, b) = UnixStream::pair().unwrap();
    let mut ev = Events::with_capacity(16);
    p.add(b.as_raw_fd(), Token(1), Interest::BOTH, Trigger::Level).unwrap();
    a.write_all(b"x").unwrap();
    p.wait(&mut ev, Some(SOON)).unwrap();
    let got: Vec<_> = ev.iter().map(|e| (e.token(), e.ready())).collect();
    assert_eq!(got, [(Token(1), Ready::READABLE | Ready::WRITABLE)]);
    // The same through modify, on a oneshot registration that fired (so
    // no re-arm is pending): re-armed with nothing to read, an association
    // made at modify would fire with POLLOUT before the data comes.
    drain_one(&b);
    p.modify(b.as_raw_fd(), Token(2), Interest::WRITE, Trigger::Oneshot).unwrap();
    p.wait(&mut ev, Some(SOON)).unwrap();
    let got: Vec<_> = ev.iter().map(|e| (e.token(), e.ready())).collect();
    assert_eq!(got, [(Token(2), Ready::WRITABLE)], "oneshot WRITE");
    p.modify(b.as_raw_fd(), Token(2), Interest::BOTH, Trigger::Oneshot).unwrap();
    a.write_all(b"y").unwrap();
    p.wait(&mut ev, Some(SOON)).unwrap();
    let got: Vec<_> = ev.iter().map(|e| (e.token(), e.ready())).collect();
    assert_eq!(got, [(Token(2), Ready::READABLE | Ready::WRITABLE)], "after modify");
    p.delete(b.as_raw_fd()).unwrap();
    assert_eq!(model.associations(), 0);
}

fn drain_one(s: &UnixStream) {
    let mut buf = [0u8; 8];
    assert_eq!((&*s).read(&mut buf).unwrap(), 1);
}

extern "C" fn noop(_: libc::c_int) {}

/// Sends SIGUSR1 (a no-op handler, so a wait ends with EINTR) to this
/// thread every 30 ms, at most 10 times, while `f` runs.
fn with_signals<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: a zeroed sigaction with a handler that does nothing, installed
    // for SIGUSR1 only; sigemptyset initializes its mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = noop as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let h = thread::spawn(move || {
        for _ in 0..10 {
            thread::sleep(Duration::from_millis(30));
            if done2.load(Ordering::SeqCst) {
                return;
            }
            // SAFETY: `me` joins this thread before it returns, so it is alive.
            unsafe { libc::pthread_kill(me, libc::SIGUSR1) };
        }
    });
    let r = f();
    done.store(true, Ordering::SeqCst);
    h.join().unwrap();
    r
}

/// Faithful illumos: EINTR comes with no event and nget left at 1. The
/// entry the last wait read must not be dispatched again. Defence: each
/// entry is cleared as it is read.
#[test]
fn eintr_never_replays_the_last_event() {
    let (mut p, model) = backend(Quirks::default());
    let mut pairs = readable_pairs(&mut p, 1);
    let mut ev = Events::with_capacity(16);
    expect_tokens(&mut p, &mut ev, &BTreeSet::from([0]), "first");
    drain(&mut pairs[0].1);
    let (n, took) = with_signals(|| {
        let t = Instant::now();
        (p.wait(&mut ev, Some(Duration::from_secs(1))), t.elapsed())
    });
    let n = n.expect("EINTR is not an error");
    assert_eq!(n, 0, "a signal, nothing ready: got {:?}", ev.iter().collect::<Vec<_>>());
    assert!(took < Duration::from_millis(500), "the signal did not end the wait ({took:?})");
    p.delete(pairs[0].1.as_raw_fd()).unwrap();
    assert_eq!(model.associations(), 0);
}

// ---------------------------------------------------------------- the model itself

fn fd_event(fd: RawFd, events: i16) -> (i32, u16, usize) {
    (i32::from(events), PORT_SOURCE_FD as u16, fd as usize)
}

fn got(e: &PortEvent) -> (i32, u16, usize) {
    (e.portev_events, e.portev_source, e.portev_object)
}

fn errno(r: io::Result<()>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

fn ts(d: Duration) -> libc::timespec {
    libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos() as _ }
}

#[test]
fn model_associations_are_one_shot_with_illumos_errnos() {
    let m = Model::default();
    let port = m.port_create().unwrap();
    let port = port.as_raw_fd();
    let (mut a, b) = UnixStream::pair().unwrap();
    let fd = b.as_raw_fd();
    let mut list = [PortEvent::CLEARED; 4];
    m.port_associate(port, PORT_SOURCE_FD, fd as usize, i32::from(libc::POLLIN), 7).unwrap();
    let mut nget = 1;
    assert_eq!(errno(m.port_getn(port, &mut list, &mut nget, Some(&ts(Duration::ZERO)))), Some(libc::ETIME));
    assert_eq!(nget, 0, "nothing to read yet");
    a.write_all(b"x").unwrap();
    nget = 1;
    m.port_getn(port, &mut list, &mut nget, Some(&ts(SOON))).unwrap();
    assert_eq!((nget, got(&list[0]), list[0].portev_user), (1, fd_event(fd, libc::POLLIN), 7));
    // Collected: the association is over, and the data is still there.
    assert_eq!(m.associations(), 0);
    assert_eq!(errno(m.port_dissociate(port, PORT_SOURCE_FD, fd as usize)), Some(libc::ENOENT));
    // Associating a ready fd fires at once; associating again replaces it.
    m.port_associate(port, PORT_SOURCE_FD, fd as usize, i32::from(libc::POLLIN), 8).unwrap();
    assert_eq!(m.queued(), 1);
    m.port_associate(port, PORT_SOURCE_FD, fd as usize, i32::from(libc::POLLIN), 9).unwrap();
    assert_eq!((m.queued(), m.associations()), (1, 1), "the old event is dropped, the new one queued");
    nget = 1;
    m.port_getn(port, &mut list, &mut nget, Some(&ts(SOON))).unwrap();
    assert_eq!((nget, list[0].portev_user), (1, 9));
    // nget above max, and a closed fd.
    nget = 5;
    assert_eq!(errno(m.port_getn(port, &mut list, &mut nget, None)), Some(libc::EINVAL));
    drop(b);
    assert_eq!(errno(m.port_associate(port, PORT_SOURCE_FD, fd as usize, 1, 1)), Some(libc::EBADFD));
    assert_eq!(errno(m.port_dissociate(port, PORT_SOURCE_FD, fd as usize)), Some(libc::EBADFD));
}

/// port_getn(3C) with nget > 1: it waits for nget events; at the timeout
/// the ones that came are returned with ETIME and nget updated, or, with
/// HAProxy's quirk, lost.
#[test]
fn model_nget_waits_and_the_lone_event_quirk_loses_it() {
    for lose in [false, true] {
        let m = Model::new(Quirks { lone_event_lost_with_nget: lose, ..Quirks::default() });
        let port = m.port_create().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"x").unwrap();
        m.port_associate(port.as_raw_fd(), PORT_SOURCE_FD, b.as_raw_fd() as usize, 1, 1).unwrap();
        let mut list = [PortEvent::CLEARED; 4];
        let mut nget = 2;
        let t = Instant::now();
        let r = m.port_getn(port.as_raw_fd(), &mut list, &mut nget, Some(&ts(Duration::from_millis(50))));
        assert!(t.elapsed() >= Duration::from_millis(50), "nget 2 with one event must wait for the timeout");
        assert_eq!(errno(r), Some(libc::ETIME));
        if lose {
            assert_eq!((nget, list[0].portev_source, m.associations()), (0, 0, 0), "collected and dropped");
        } else {
            assert_eq!((nget, got(&list[0])), (1, fd_event(b.as_raw_fd(), libc::POLLIN)));
        }
    }
}
