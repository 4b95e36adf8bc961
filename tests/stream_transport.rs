//! A stream over a transport that hides readiness: what the transport
//! holds is drained before the stream waits on the fd, and its own bytes
//! are flushed though the channel is empty.
//!
//! `Held` is a tiny scripted transport in the manner of TLS: it reads all
//! the socket has (to EAGAIN, so the fd is no longer READY) into a buffer
//! of its own, and hands its owner at most `chunk` bytes per call (a
//! record at a time). Bytes of its own (`own`, a handshake) wait for the
//! socket until a `snd_buf` sends them.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anypoll::backends::Poller;
use anypoll::buffer::Buffer;
use anypoll::connection::{ConnError, ConnFlags, Connection};
use anypoll::raw_sock::SendFlags;
use anypoll::sockops::{Real, SockOps};
use anypoll::stream::{Outcome, Pools, SpliceMode, Stream};
use anypoll::transport::{RawSock, Transport};
use anypoll::{Ctx, EventLoop, FdState, Handler, Io, IoEvent};

#[derive(Default)]
struct Held {
    chunk: usize,
    held: VecDeque<u8>,
    own: Vec<u8>,
    eof: bool,
}

impl Transport for Held {
    fn name(&self) -> &'static str {
        "held"
    }

    fn hides_readiness(&self) -> bool {
        true
    }

    fn rcv_buf<S: SockOps, P: Poller>(
        &mut self,
        ops: &mut S,
        cx: &mut Ctx<P>,
        conn: &mut Connection,
        buf: &mut Buffer,
        max: usize,
    ) -> usize {
        let mut tmp = [0u8; 4096];
        while !self.eof {
            match cx.recv_with(ops, conn.fd(), &mut tmp, false) {
                Io::Done(n) => self.held.extend(&tmp[..n]),
                Io::WouldBlock => break,
                Io::Closed => self.eof = true,
                Io::Error(e) => {
                    conn.set_error(ConnError::from_io(&e));
                    return 0;
                }
            }
        }
        let n = self.chunk.min(max).min(buf.free()).min(self.held.len());
        let part: Vec<u8> = self.held.drain(..n).collect();
        buf.write_from(&part);
        if self.eof && self.held.is_empty() {
            conn.flags |= ConnFlags::SOCK_RD_SH;
        }
        n
    }

    fn snd_buf<S: SockOps, P: Poller>(
        &mut self,
        ops: &mut S,
        cx: &mut Ctx<P>,
        conn: &mut Connection,
        buf: &mut Buffer,
        max: usize,
        flags: SendFlags,
    ) -> usize {
        while !self.own.is_empty() {
            match cx.send_with(ops, conn.fd(), &self.own, false, false) {
                Io::Done(n) => drop(self.own.drain(..n)),
                _ => return 0,
            }
        }
        RawSock.snd_buf(ops, cx, conn, buf, max, flags)
    }

    fn shut_write<S: SockOps, P: Poller>(&mut self, ops: &mut S, cx: &mut Ctx<P>, conn: &mut Connection) {
        RawSock.shut_write(ops, cx, conn)
    }

    fn rcv_pending(&self) -> bool {
        !self.held.is_empty()
    }

    fn snd_pending(&self) -> bool {
        !self.own.is_empty()
    }
}

struct H {
    stream: Stream<Held, Held>,
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

/// client <-> [front: Held] stream [back: Held] <-> server.
fn setup(front: Held, back: Held) -> (EventLoop, H, UnixStream, UnixStream) {
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
    let front = Held { chunk: 100, ..Held::default() };
    let (mut el, mut h, mut client, mut server) = setup(front, Held { chunk: 100, ..Held::default() });
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
    let back = Held { chunk: 100, own: b"HELLO".to_vec(), ..Held::default() };
    let (mut el, mut h, _client, mut server) = setup(Held { chunk: 100, ..Held::default() }, back);
    // The owner's first call (a stream is processed once it is set up).
    let o = h.stream.process(&mut Real, el.cx(), &mut h.pools);
    assert_eq!(o, Outcome::Running);
    let got = collect(&mut el, &mut h, &mut server, 5);
    assert_eq!(got, b"HELLO", "the transport's own bytes were not flushed");
    assert!(!h.stream.back_xprt.snd_pending());
}
