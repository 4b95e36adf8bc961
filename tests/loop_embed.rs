//! What an embedder relies on, on every backend present:
//!
//! * every owner value reaches `io()` (none is reserved by the loop), and a
//!   loop with nothing ready waits instead of spinning;
//! * a peer that sends data then resets gives the data, then `Io::Error`
//!   carrying ECONNRESET, never `Io::Closed`.

mod common;

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anypoll::{Ctx, FdState, Handler, Io, IoEvent};
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
        el.cx().register(b.as_raw_fd(), owner, FdState::RECV_ACTIVE).unwrap();
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
    let fd: RawFd = server.as_raw_fd();
    el.cx().register(fd, 7, FdState::RECV_ACTIVE | FdState::STREAM).unwrap();
    let mut h = Resets::default();
    for _ in 0..40 {
        if h.end.is_some() {
            break;
        }
        el.run_once(&mut h, Some(Duration::from_millis(50))).unwrap();
    }
    assert_eq!(h.data, b"data", "the data before the reset");
    match h.end {
        Some(Ok(errno)) if errno == libc::ECONNRESET => "data, then ECONNRESET".into(),
        other => panic!("after the data: {other:?}, want Io::Error(ECONNRESET)"),
    }
}

#[test]
fn reset_after_data_gives_the_data_then_econnreset_on_every_backend() {
    run_matrix("reset_after_data", &common::combos("reset_after_data"), reset_after_data);
}
