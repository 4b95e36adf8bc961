//! The model's own tests: what it says of real fds, straight through the
//! seam. (The backend's defences against each quirk are in `switches`.)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::*;

mod switches;

fn change(fd: RawFd, filter: i16, flags: u16, udata: usize) -> Kevent {
    Kevent { ident: fd as usize, filter, flags, udata, ..Kevent::default() }
}

fn call(m: &Model, kq: &OwnedFd, changes: &[Kevent], room: usize, t: Duration) -> io::Result<Vec<Kevent>> {
    let mut out = vec![Kevent::default(); room];
    let n = m.kevent(kq.as_raw_fd(), changes, &mut out, Some(t))?;
    out.truncate(n);
    Ok(out)
}

fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

fn so_error(fd: RawFd) -> i32 {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live and describe a c_int.
    unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut v as *mut libc::c_int).cast(), &mut len) };
    v
}

/// Makes the peer's close send a RST (SO_LINGER {1, 0}).
fn linger_zero(s: &TcpStream) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    let len = std::mem::size_of::<libc::linger>() as libc::socklen_t;
    // SAFETY: `l` is a live linger of the given length.
    let r = unsafe {
        libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, (&l as *const libc::linger).cast(), len)
    };
    assert_eq!(r, 0);
}

#[test]
fn per_change_entries_come_in_order_with_their_errno() {
    let m = Model::default();
    let kq = m.kqueue().unwrap();
    let (a, _b) = UnixStream::pair().unwrap();
    let closed = UnixStream::pair().unwrap().0.as_raw_fd(); // closed at the end of the statement
    let list = [
        change(a.as_raw_fd(), bits::EVFILT_READ, bits::EV_ADD | bits::EV_RECEIPT, 7),
        change(a.as_raw_fd(), bits::EVFILT_WRITE, bits::EV_DELETE, 0),
        change(closed, bits::EVFILT_READ, bits::EV_ADD, 8),
        change(a.as_raw_fd(), bits::EVFILT_READ, bits::EV_DISABLE, 7),
    ];
    let out = call(&m, &kq, &list, 8, Duration::ZERO).unwrap();
    let got: Vec<(usize, i16, u16, i64, usize)> =
        out.iter().map(|k| (k.ident, k.filter, k.flags, k.data, k.udata)).collect();
    let fd = a.as_raw_fd() as usize;
    assert_eq!(
        got,
        vec![
            (fd, bits::EVFILT_READ, bits::EV_ERROR, 0, 7),
            (fd, bits::EVFILT_WRITE, bits::EV_ERROR, libc::ENOENT as i64, 0),
            (closed as usize, bits::EVFILT_READ, bits::EV_ERROR, libc::EBADF as i64, 8),
        ]
    );
    // The change after the errors was applied too: the knote is disabled.
    assert!(call(&m, &kq, &[], 8, Duration::from_millis(20)).unwrap().is_empty());
}

#[test]
fn an_error_without_room_fails_the_call_and_stops_the_changelist() {
    let m = Model::default();
    let kq = m.kqueue().unwrap();
    let (a, _b) = UnixStream::pair().unwrap();
    let fd = a.as_raw_fd();
    let list = [
        change(fd, bits::EVFILT_READ, bits::EV_DELETE, 0),
        change(fd, bits::EVFILT_WRITE, bits::EV_DELETE, 0),
        change(fd, bits::EVFILT_WRITE, bits::EV_ADD, 3),
    ];
    let err = call(&m, &kq, &list, 1, Duration::ZERO).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    assert!(m.knotes().is_empty(), "the add after the failed change was applied: {:?}", m.knotes());
}

#[test]
fn level_read_reports_fionread_and_eof_on_the_peers_close() {
    let m = Model::default();
    let kq = m.kqueue().unwrap();
    let (mut a, b) = UnixStream::pair().unwrap();
    let add = change(b.as_raw_fd(), bits::EVFILT_READ, bits::EV_ADD, 5);
    assert!(call(&m, &kq, &[add], 4, Duration::from_millis(10)).unwrap().is_empty());
    a.write_all(b"hello").unwrap();
    let out = call(&m, &kq, &[], 4, Duration::from_secs(2)).unwrap();
    assert_eq!(out.iter().map(|k| (k.data, k.flags & bits::EV_EOF, k.udata)).collect::<Vec<_>>(), vec![(5, 0, 5)]);
    drop(a);
    let out = call(&m, &kq, &[], 4, Duration::from_secs(2)).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].flags & bits::EV_EOF, out[0].fflags), (bits::EV_EOF, 0));
}

#[test]
fn a_reset_sets_fflags_and_leaves_so_error_to_its_owner() {
    let m = Model::default();
    let kq = m.kqueue().unwrap();
    let (a, b) = tcp_pair();
    let add = change(b.as_raw_fd(), bits::EVFILT_READ, bits::EV_ADD, 1);
    assert!(call(&m, &kq, &[add], 4, Duration::ZERO).unwrap().is_empty());
    linger_zero(&a);
    drop(a);
    let out = call(&m, &kq, &[], 4, Duration::from_secs(2)).unwrap();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].flags & bits::EV_EOF, bits::EV_EOF);
    assert_eq!(out[0].fflags, libc::ECONNRESET as u32);
    // Reported twice (level), and still there for the owner.
    assert_eq!(call(&m, &kq, &[], 4, Duration::ZERO).unwrap().len(), 1);
    assert_eq!(so_error(b.as_raw_fd()), libc::ECONNRESET);
}

#[test]
fn write_eof_after_a_local_shutdown_only_with_its_switch() {
    for on in [true, false] {
        let m = Model::new(Quirks { local_shutdown_eof: on, ..Quirks::default() });
        let kq = m.kqueue().unwrap();
        let (a, _b) = tcp_pair();
        let (u, _v) = UnixStream::pair().unwrap();
        for fd in [a.as_raw_fd(), u.as_raw_fd()] {
            let add = change(fd, bits::EVFILT_WRITE, bits::EV_ADD | bits::EV_RECEIPT, 1);
            let out = call(&m, &kq, &[add], 4, Duration::ZERO).unwrap();
            assert_eq!(out.iter().map(|k| (k.flags, k.data)).collect::<Vec<_>>(), vec![(bits::EV_ERROR, 0)]);
            let out = call(&m, &kq, &[], 4, Duration::ZERO).unwrap();
            assert!(out.iter().any(|k| k.ident == fd as usize && k.flags & bits::EV_EOF == 0), "{out:?}");
            // SAFETY: shutdown on a socket this test owns.
            assert_eq!(unsafe { libc::shutdown(fd, libc::SHUT_WR) }, 0);
        }
        let out = call(&m, &kq, &[], 4, Duration::ZERO).unwrap();
        let eofs = out.iter().filter(|k| k.flags & bits::EV_EOF != 0 && k.fflags == 0).count();
        assert_eq!(eofs, if on { 2 } else { 0 }, "switch {on}: {out:?}");
    }
}

#[test]
fn the_zero_length_send_probe_sends_nothing() {
    let (mut a, b) = tcp_pair();
    assert!(!send_shut(b.as_raw_fd()));
    drop(b);
    a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(a.read(&mut buf).unwrap(), 0, "the peer got bytes from the probe");
}

#[test]
fn edge_fires_once_per_new_data() {
    let m = Model::default();
    let kq = m.kqueue().unwrap();
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let add = change(b.as_raw_fd(), bits::EVFILT_READ, bits::EV_ADD | bits::EV_CLEAR, 2);
    call(&m, &kq, &[add], 4, Duration::ZERO).unwrap();
    a.write_all(b"ab").unwrap();
    assert_eq!(call(&m, &kq, &[], 4, Duration::from_secs(2)).unwrap().len(), 1);
    let t = Instant::now();
    assert!(call(&m, &kq, &[], 4, Duration::from_millis(30)).unwrap().is_empty());
    assert!(t.elapsed() >= Duration::from_millis(30));
    let mut buf = [0u8; 2];
    b.read_exact(&mut buf).unwrap();
    a.write_all(b"c").unwrap();
    assert_eq!(call(&m, &kq, &[], 4, Duration::from_secs(2)).unwrap().len(), 1);
}

#[test]
fn a_knote_goes_with_its_fd() {
    let m = Model::default();
    let kq = m.kqueue().unwrap();
    let (a, _b) = UnixStream::pair().unwrap();
    let add = change(a.as_raw_fd(), bits::EVFILT_WRITE, bits::EV_ADD, 1);
    assert_eq!(call(&m, &kq, &[add], 4, Duration::ZERO).unwrap().len(), 1, "writable at once");
    assert_eq!(m.knotes().len(), 1);
    drop(a);
    assert!(call(&m, &kq, &[], 4, Duration::ZERO).unwrap().is_empty());
    assert!(m.knotes().is_empty());
}

#[test]
fn a_user_event_without_ev_clear_stays_triggered() {
    for clear in [true, false] {
        let m = Model::default();
        let kq = m.kqueue().unwrap();
        let flags = bits::EV_ADD | if clear { bits::EV_CLEAR } else { 0 };
        call(&m, &kq, &[change(0, bits::EVFILT_USER, flags, 0)], 4, Duration::ZERO).unwrap();
        let trigger = Kevent { fflags: bits::NOTE_TRIGGER, ..change(0, bits::EVFILT_USER, 0, 0) };
        call(&m, &kq, &[trigger], 0, Duration::ZERO).unwrap();
        assert_eq!(call(&m, &kq, &[], 4, Duration::ZERO).unwrap().len(), 1);
        let again = call(&m, &kq, &[], 4, Duration::from_millis(20)).unwrap().len();
        assert_eq!(again, usize::from(!clear), "EV_CLEAR {clear}");
    }
}

#[test]
fn a_trigger_from_another_thread_ends_a_wait() {
    let m = Model::default();
    let kq = m.kqueue().unwrap();
    call(&m, &kq, &[change(0, bits::EVFILT_USER, bits::EV_ADD | bits::EV_CLEAR, 0)], 4, Duration::ZERO).unwrap();
    let (m2, fd) = (m.clone(), kq.as_raw_fd());
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        let trigger = Kevent { fflags: bits::NOTE_TRIGGER, ..change(0, bits::EVFILT_USER, 0, 0) };
        m2.kevent(fd, &[trigger], &mut [], Some(Duration::ZERO)).unwrap();
    });
    let start = Instant::now();
    let out = call(&m, &kq, &[], 4, Duration::from_secs(5)).unwrap();
    t.join().unwrap();
    assert_eq!(out.len(), 1);
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
}

#[test]
fn timeouts_keep_sub_millisecond_precision() {
    let m = Model::default();
    let kq = m.kqueue().unwrap();
    let (a, _b) = UnixStream::pair().unwrap();
    let add = change(a.as_raw_fd(), bits::EVFILT_READ, bits::EV_ADD | bits::EV_RECEIPT, 1);
    call(&m, &kq, &[add], 4, Duration::ZERO).unwrap();
    for want in [Duration::from_micros(100), Duration::from_micros(3100)] {
        let mut best = Duration::MAX;
        for _ in 0..30 {
            let t = Instant::now();
            assert!(call(&m, &kq, &[], 4, want).unwrap().is_empty());
            let took = t.elapsed();
            assert!(took >= want, "a {want:?} wait returned after {took:?}");
            best = best.min(took);
        }
        assert!(best < want + Duration::from_micros(500), "a {want:?} wait took at best {best:?}");
    }
}
