//! The quirk switches: the kqueue backend over a model that has the quirk,
//! and the backend's defence shown to hold. Each test fails with that
//! defence removed (the commit that added it says how).

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::kqueue::bits;
use crate::kqueue_model::{KqueueModel, Model, Quirks};
use crate::{Event, Events, Interest, Poller, Ready, Token, Trigger};

fn backend(quirks: Quirks) -> (KqueueModel, Model) {
    let model = Model::new(quirks);
    (KqueueModel::with_sys(model.clone()).unwrap(), model)
}

fn wait(p: &mut KqueueModel, cap: usize, t: Duration) -> (Vec<Event>, bool) {
    let mut ev = Events::with_capacity(cap);
    p.wait(&mut ev, Some(t)).unwrap();
    (ev.iter().copied().collect(), ev.woken())
}

/// Waits `t` and asserts that nothing came and the wait really slept:
/// at most `calls` kevent() calls, no early return.
fn assert_quiet(p: &mut KqueueModel, m: &Model, t: Duration, what: &str) {
    let (start, calls) = (Instant::now(), m.calls());
    let mut returns = 0;
    while start.elapsed() < t && returns < 1000 {
        let (evs, woken) = wait(p, 8, t.saturating_sub(start.elapsed()));
        assert!(evs.is_empty() && !woken, "{what}: {evs:?} woken {woken}");
        returns += 1;
    }
    // One wait sleeps the whole window; a spin returns at once, many times.
    assert!(returns <= 2, "{what}: {returns} waits returned early in {t:?}");
    assert!(m.calls() - calls <= 4, "{what}: {} kevent() calls in {t:?}", m.calls() - calls);
}

#[test]
fn a_local_shutdown_gives_write_eof_but_neither_hup_nor_read_closed() {
    let (mut p, _m) = backend(Quirks { local_shutdown_eof: true, ..Quirks::default() });
    let (a, _b) = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| {
            let a = std::net::TcpStream::connect(l.local_addr()?)?;
            Ok((a, l.accept()?.0))
        })
        .unwrap();
    p.add(a.as_raw_fd(), Token(1), Interest::BOTH, Trigger::Level).unwrap();
    let (evs, _) = wait(&mut p, 8, Duration::from_secs(2));
    assert_eq!(evs.iter().map(|e| e.ready()).collect::<Vec<_>>(), vec![Ready::WRITABLE]);
    a.shutdown(std::net::Shutdown::Write).unwrap();
    let (evs, _) = wait(&mut p, 8, Duration::from_secs(2));
    assert_eq!(evs.len(), 1, "{evs:?}");
    let r = evs[0].ready();
    assert!(
        !r.intersects(Ready::HUP | Ready::READ_CLOSED | Ready::ERROR),
        "our own shutdown read as the peer's: {r:?}"
    );
    assert_eq!(r, Ready::WRITABLE);
    p.delete(a.as_raw_fd()).unwrap();
}

#[test]
fn a_per_change_error_reaches_its_fd_and_its_change() {
    let (mut p, m) = backend(Quirks::default());
    let pairs: Vec<(UnixStream, UnixStream)> = (0..3).map(|_| UnixStream::pair().unwrap()).collect();
    let fds: Vec<_> = pairs.iter().map(|(a, _)| a.as_raw_fd()).collect();
    for (i, &fd) in fds.iter().enumerate() {
        p.add(fd, Token(i + 1), Interest::WRITE, Trigger::Level).unwrap();
    }
    let (evs, _) = wait(&mut p, 8, Duration::from_secs(2));
    assert_eq!(evs.len(), 3, "{evs:?}");
    // The middle fd's knote is in the kernel; now its re-creation (a
    // trigger change: EV_DELETE then EV_ADD, in one changelist with the
    // others' changes) fails at the EV_ADD only.
    m.set_quirks(Quirks { fail_add: Some((fds[1], libc::ENOMEM)), ..Quirks::default() });
    p.modify(fds[0], Token(1), Interest::WRITE, Trigger::Edge).unwrap();
    p.modify(fds[1], Token(2), Interest::WRITE, Trigger::Edge).unwrap();
    p.modify(fds[2], Token(3), Interest::WRITE, Trigger::Edge).unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (evs, _) = wait(&mut p, 8, Duration::from_millis(200));
        seen.extend(evs.iter().map(|e| (e.token().0, e.ready())));
        if seen.len() >= 3 {
            break;
        }
    }
    seen.sort_by_key(|s| s.0);
    assert_eq!(seen, vec![(1, Ready::WRITABLE), (2, Ready::ERROR), (3, Ready::WRITABLE)]);
    for &fd in &fds {
        p.delete(fd).unwrap();
    }
    assert_eq!(m.knotes().iter().filter(|k| k.1 != bits::EVFILT_USER).count(), 0, "{:?}", m.knotes());
}

#[test]
fn a_user_event_re_added_without_ev_clear_would_spin_the_waker_does_not() {
    let (mut p, m) = backend(Quirks { user_add_takes_clear: true, ..Quirks::default() });
    let waker = p.waker();
    for round in 0..3 {
        waker.wake().unwrap();
        let (evs, woken) = wait(&mut p, 8, Duration::from_secs(2));
        assert!(evs.is_empty() && woken, "round {round}: {evs:?} woken {woken}");
        assert_quiet(&mut p, &m, Duration::from_millis(60), "after a wake");
    }
}

#[test]
fn a_failed_add_on_a_live_knote_leaves_nothing_after_delete() {
    let (mut p, m) = backend(Quirks { add_existing_fails: Some(libc::EEXIST), ..Quirks::default() });
    let (mut a, b) = UnixStream::pair().unwrap();
    let fd = b.as_raw_fd();
    p.add(fd, Token(1), Interest::READ, Trigger::Level).unwrap();
    assert!(wait(&mut p, 8, Duration::ZERO).0.is_empty());
    // EV_ADD of the existing read knote fails (it stays), the write one is new.
    p.modify(fd, Token(1), Interest::BOTH, Trigger::Level).unwrap();
    let (evs, _) = wait(&mut p, 8, Duration::from_secs(2));
    assert_eq!(evs.iter().map(|e| (e.token(), e.ready())).collect::<Vec<_>>(), vec![(Token(1), Ready::ERROR)]);
    p.delete(fd).unwrap();
    let left: Vec<_> = m.knotes().into_iter().filter(|k| k.0 == fd as usize).collect();
    assert!(left.is_empty(), "knotes left behind for fd {fd} after delete: {left:?}");
    a.write_all(b"x").unwrap();
    assert_quiet(&mut p, &m, Duration::from_millis(60), "a readable fd after its delete");
}

#[test]
fn receipts_beyond_libkqueues_512_entry_cap_are_applied_in_chunks() {
    let (mut p, m) = backend(Quirks { event_list_cap: Some(512), ..Quirks::default() });
    let (a, _b) = UnixStream::pair().unwrap();
    // 600 fds for one writable socket: 600 changes with a capacity of 64
    // go first, with receipts, outside the wait.
    let fds: Vec<OwnedFd> = (0..600).map(|_| a.as_fd_dup()).collect();
    for (i, fd) in fds.iter().enumerate() {
        p.add(fd.as_raw_fd(), Token(i), Interest::WRITE, Trigger::Level).unwrap();
    }
    let mut seen = vec![false; fds.len()];
    for _ in 0..40 {
        let (evs, _) = wait(&mut p, 64, Duration::from_secs(2));
        assert!(!evs.is_empty());
        for e in &evs {
            assert_eq!(e.ready(), Ready::WRITABLE);
            seen[e.token().0] = true;
        }
        if seen.iter().all(|&s| s) {
            break;
        }
    }
    assert!(seen.iter().all(|&s| s), "{} of 600 fds never reported", seen.iter().filter(|s| !**s).count());
    for fd in &fds {
        p.delete(fd.as_raw_fd()).unwrap();
    }
    assert_eq!(m.knotes().iter().filter(|k| k.1 != bits::EVFILT_USER).count(), 0);
}

trait DupFd {
    fn as_fd_dup(&self) -> OwnedFd;
}

impl DupFd for UnixStream {
    fn as_fd_dup(&self) -> OwnedFd {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned().unwrap()
    }
}

#[test]
fn without_evfilt_user_the_waker_is_a_pipe_and_still_wakes_once() {
    let (mut p, m) = backend(Quirks { no_user_filter: true, ..Quirks::default() });
    // The pipe (an eventfd on Linux) is a read knote; no user knote exists.
    let knotes = m.knotes();
    assert_eq!(knotes.len(), 1, "{knotes:?}");
    assert_eq!(knotes[0].1, bits::EVFILT_READ);
    let waker = p.waker();
    let other = waker.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        other.wake().unwrap();
    });
    let start = Instant::now();
    let (evs, woken) = wait(&mut p, 8, Duration::from_secs(5));
    t.join().unwrap();
    assert!(evs.is_empty() && woken && start.elapsed() < Duration::from_secs(2), "{evs:?} {woken}");
    assert_quiet(&mut p, &m, Duration::from_millis(60), "after the pipe waker fired");
    // Drained when it fires: two wakes give one, and the next wait sleeps.
    waker.wake().unwrap();
    waker.wake().unwrap();
    let (evs, woken) = wait(&mut p, 8, Duration::from_secs(2));
    assert!(evs.is_empty() && woken, "{evs:?} {woken}");
    assert_quiet(&mut p, &m, Duration::from_millis(60), "after two wakes");
}
