//! A stream over a transport that hides readiness: what the transport
//! holds is drained before the stream waits on the fd, and its own bytes
//! are flushed though the channel is empty.
//!
//! The transport is `common::hiding::Hiding`, a tiny one in the manner of
//! TLS: it reads all the socket has (to EAGAIN, so the fd is no longer
//! READY) into a store of its own, and hands its owner at most `chunk`
//! bytes per call (a record at a time). Bytes of its own (`with_own`, a
//! handshake) wait for the socket until a `snd_buf` sends them.

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anypoll::connection::Connection;
use anypoll::sockops::Real;
use anypoll::stream::{Outcome, Pools, SpliceMode, Stream};
use anypoll::transport::{RawSock, Transport};
use anypoll::{Ctx, EventLoop, FdState, Handler, Io, IoEvent, ShortRead, Strategy};
use common::hiding::Hiding;

struct H {
    stream: Stream<Hiding, Hiding>,
    pools: Pools,
}

impl Handler for H {
    fn io(&mut self, cx: &mut Ctx, _ev: IoEvent) {
        if self.stream.process(&mut Real, cx, &mut self.pools) != Outcome::Running {
            self.stream.close(cx, &mut self.pools);
            cx.stop();
        }
    }
}

/// client <-> [front: Hiding] stream [back: Hiding] <-> server.
fn setup(front: Hiding, back: Hiding) -> (EventLoop, H, UnixStream, UnixStream) {
    let (client, f) = UnixStream::pair().unwrap();
    let (b, server) = UnixStream::pair().unwrap();
    f.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    server.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut el = EventLoop::from_env().unwrap();
    let mut fc = Connection::from_connected(OwnedFd::from(f));
    let mut bc = Connection::from_connected(OwnedFd::from(b));
    fc.ctrl_init(el.cx(), 0, FdState::RECV_ACTIVE).unwrap();
    bc.ctrl_init(el.cx(), 1, FdState::RECV_ACTIVE).unwrap();
    let stream = Stream::with_transports(fc, front, bc, back, SpliceMode::Never);
    (el, H { stream, pools: Pools::new(16 * 1024) }, client, server)
}

/// Runs the loop (bounded) while reading from `peer`, until `want` bytes
/// came or two seconds passed; returns what came.
fn collect(el: &mut EventLoop, h: &mut H, peer: &mut UnixStream, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 65536];
    while got.len() < want && Instant::now() < deadline && !el.cx().is_stopping() {
        el.run_once(h, Some(Duration::from_millis(20))).unwrap();
        match peer.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("peer read: {e}"),
        }
    }
    got
}

/// The client's bytes are all read from the socket by the first call
/// (the fd is then not READY, and no new event comes: the client keeps its
/// side open), but handed over 100 at a time: the stream must keep calling
/// `rcv_buf` while `rcv_pending`, over more rounds than one `process` does.
#[test]
fn held_bytes_are_drained_before_waiting() {
    let (mut el, mut h, mut client, mut server) = setup(Hiding::new(100), Hiding::new(100));
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    client.write_all(&data).unwrap();
    let got = collect(&mut el, &mut h, &mut server, data.len());
    assert_eq!(got.len(), data.len(), "the stream waited with bytes held by the front's transport");
    assert!(got == data, "bytes reordered or corrupted");
    assert!(!h.stream.front_xprt.rcv_pending());
    assert_eq!(h.stream.outcome(), Outcome::Running);
}

/// The back's transport has bytes of its own (a handshake) and the stream
/// nothing to send: one `process` must flush them all the same.
#[test]
fn own_bytes_are_flushed_with_an_empty_channel() {
    let back = Hiding::new(100).with_own(b"HELLO");
    let (mut el, mut h, _client, mut server) = setup(Hiding::new(100), back);
    // The owner's first call (a stream is processed once it is set up).
    let o = h.stream.process(&mut Real, el.cx(), &mut h.pools);
    assert_eq!(o, Outcome::Running);
    let got = collect(&mut el, &mut h, &mut server, 5);
    assert_eq!(got, b"HELLO", "the transport's own bytes were not flushed");
    assert!(!h.stream.back_xprt.snd_pending());
}

/// Reads `n` bytes waiting on a socket with one recv of 64 bytes (a short
/// read) by the rule of `xprt`, on a level-triggered loop (where the
/// drained rule clears READY); returns whether the fd is still READY.
fn ready_after_short_read<T: Transport>(xprt: &T) -> bool {
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.write_all(b"0123456789").unwrap();
    let mut el = EventLoop::with_backend("poll").unwrap();
    assert_eq!(el.cx().strategy(), Strategy::Level);
    let cx = el.cx();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&a);
    cx.register(&a, 0, FdState::RECV_ACTIVE | FdState::RECV_READY | FdState::STREAM).unwrap();
    let mut buf = [0u8; 64];
    match cx.recv_with_rule(&mut Real, fd, &mut buf, ShortRead::of(xprt)) {
        Io::Done(10) => {}
        other => panic!("fd {fd}: expected 10 bytes, got {other:?}"),
    }
    let ready = cx.state(fd).unwrap().contains(FdState::RECV_READY);
    cx.deregister(fd).unwrap();
    ready
}

/// "Short read = drained" is raw_sock's rule, never a readiness-hiding
/// transport's: after its short read the fd stays READY (only an EAGAIN
/// clears it). The raw_sock half shows the rule exists on this loop, so
/// the first half is not vacuous.
#[test]
fn short_read_is_drained_only_without_hidden_readiness() {
    assert!(
        ready_after_short_read(&Hiding::new(100)),
        "the drained rule was applied to a transport that hides readiness"
    );
    assert!(!ready_after_short_read(&RawSock), "raw_sock's short read no longer clears READY under level");
}
