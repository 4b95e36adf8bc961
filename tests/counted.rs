//! Syscalls are counted in one place, the `Counted` seam: each call once,
//! in its own counter, whoever makes it (the loop's helpers, raw_sock, the
//! connection layer). A count that is lost or doubled fails here.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use anypoll::buffer::Buffer;
use anypoll::connection::Connection;
use anypoll::raw_sock::SendFlags;
use anypoll::sockops::{Real, SockOps};
use anypoll::transport::{RawSock, Transport};
use anypoll::{Counters, EventLoop, FdState};

/// The counters that moved, as (reads, writes, splices, other).
fn moved(now: &Counters, before: &Counters) -> (u64, u64, u64, u64) {
    let d = now.since(before);
    (d.reads, d.writes, d.splices, d.other)
}

#[test]
fn each_seam_call_is_counted_once() {
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.write_all(b"x").unwrap();
    let mut el = EventLoop::from_env().unwrap();
    let cx = el.cx();
    let fd = a.as_raw_fd();
    let before = *cx.counters();
    let mut buf = [0u8; 8];
    assert_eq!(cx.counted(&mut Real).recv(fd, &mut buf, 0).unwrap(), 1);
    assert_eq!(moved(cx.counters(), &before), (1, 0, 0, 0), "recv");
    let before = *cx.counters();
    cx.counted(&mut Real).send(fd, b"y", anypoll::sockops::SEND_FLAGS).unwrap();
    assert_eq!(moved(cx.counters(), &before), (0, 1, 0, 0), "send");
    let before = *cx.counters();
    let _ = cx.counted(&mut Real).read(fd, &mut buf); // EAGAIN: counted all the same
    assert_eq!(moved(cx.counters(), &before), (1, 0, 0, 0), "read");
    let before = *cx.counters();
    assert_eq!(cx.counted(&mut Real).so_error(fd).unwrap(), 0);
    assert_eq!(moved(cx.counters(), &before), (0, 0, 0, 1), "so_error");
    let before = *cx.counters();
    let _ = cx.counted(&mut Real).splice(fd, fd, 1); // an error (not a pipe): still a syscall
    assert_eq!(moved(cx.counters(), &before), (0, 0, 1, 0), "splice");
    let before = *cx.counters();
    cx.counted(&mut Real).shutdown(fd, libc::SHUT_WR).unwrap();
    assert_eq!(moved(cx.counters(), &before), (0, 0, 0, 1), "shutdown");
    let mut got = [0u8; 1];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"y");
}

/// raw_sock's calls through the transport count exactly their syscalls:
/// one short recv, one send, one shutdown (no hand count on top).
#[test]
fn raw_sock_counts_its_syscalls_once() {
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.write_all(b"hello").unwrap();
    let mut el = EventLoop::from_env().unwrap();
    let cx = el.cx();
    let mut conn = Connection::from_connected(OwnedFd::from(a));
    conn.ctrl_init(cx, 0, FdState::RECV_ACTIVE | FdState::RECV_READY).unwrap();
    let mut x = RawSock;
    assert!(x.init(&mut conn));
    let mut buf = Buffer::with_capacity(64);

    let before = *cx.counters();
    assert_eq!(x.rcv_buf(&mut Real, cx, &mut conn, &mut buf, 64), 5);
    assert_eq!(moved(cx.counters(), &before), (1, 0, 0, 0), "a short recv is one read");

    let before = *cx.counters();
    let len = buf.len();
    assert_eq!(x.snd_buf(&mut Real, cx, &mut conn, &mut buf, len, SendFlags::empty()), 5);
    assert_eq!(moved(cx.counters(), &before), (0, 1, 0, 0), "one send");

    let before = *cx.counters();
    x.shut_write(&mut Real, cx, &mut conn);
    x.shut_write(&mut Real, cx, &mut conn); // once only
    assert_eq!(moved(cx.counters(), &before), (0, 0, 0, 1), "one shutdown");

    let mut echoed = Vec::new();
    b.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, b"hello");
    conn.force_close(cx);
}

/// A connect through the seam counts its socket and connect (the relay's
/// back connections); the uncounted constructor counts nothing.
#[test]
fn connect_with_counts_socket_and_connect() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut el = EventLoop::from_env().unwrap();
    let cx = el.cx();
    let before = *cx.counters();
    let c = Connection::connect_with(&mut Real, cx, addr).unwrap();
    assert_eq!(moved(cx.counters(), &before), (0, 0, 0, 2), "socket + connect");
    let before = *cx.counters();
    let d = Connection::connect(addr).unwrap();
    assert_eq!(moved(cx.counters(), &before), (0, 0, 0, 0), "not through the loop: not counted");
    drop((c, d));
}
