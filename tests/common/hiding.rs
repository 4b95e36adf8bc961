//! A transport that hides readiness, as TLS does, for the tests of the
//! data layers over it (`tests/bufconn.rs`, `tests/stream_transport.rs`).
//!
//! [`Hiding`] reads all the socket has (to EAGAIN, so the fd is no longer
//! READY) into a store of its own, and hands its owner at most `chunk`
//! bytes per call (a record at a time): the socket is drained long before
//! the owner has it all, so an owner that waits for the fd's readiness
//! strands the rest. The socket's EOF is a read shutdown at once, with
//! bytes still in the store: the owner must take them after the EOF.
//! Bytes of its own ([`Hiding::with_own`], a handshake) wait for the
//! socket until a `snd_buf` sends them, ahead of the owner's.

use std::collections::VecDeque;

use anypoll::backends::Poller;
use anypoll::buffer::Buffer;
use anypoll::connection::{ConnError, ConnFlags, Connection};
use anypoll::raw_sock::SendFlags;
use anypoll::sockops::SockOps;
use anypoll::transport::{RawSock, Transport};
use anypoll::{Ctx, FdState, Io, ShortRead};

/// Socket reads per `rcv_buf` call at most (4 KiB each): a peer that
/// keeps the socket full cannot hold the call; the fd then stays READY.
const MAX_READS: usize = 64;

/// See the [module docs](self).
#[derive(Debug)]
pub struct Hiding {
    /// Bytes handed to the owner per `rcv_buf` call at most.
    chunk: usize,
    /// Read from the socket, not yet handed to the owner.
    store: VecDeque<u8>,
    /// Bytes of its own, sent before the owner's.
    own: Buffer,
}

impl Hiding {
    /// A transport that hands its owner at most `chunk` bytes per call.
    pub fn new(chunk: usize) -> Hiding {
        Hiding { chunk, store: VecDeque::new(), own: Buffer::with_capacity(0) }
    }

    /// With `own` bytes of its own queued (a handshake): `snd_pending`
    /// until a `snd_buf` sent them.
    pub fn with_own(mut self, own: &[u8]) -> Hiding {
        self.own = Buffer::with_capacity(own.len());
        self.own.write_from(own);
        self
    }
}

impl Transport for Hiding {
    fn name(&self) -> &'static str {
        "hiding"
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
        let fd = conn.fd();
        let mut tmp = [0u8; 4096];
        let rule = ShortRead::of(&*self);
        for _ in 0..MAX_READS {
            if conn.flags.intersects(ConnFlags::SOCK_RD_SH | ConnFlags::ERROR) {
                break;
            }
            match cx.recv_with_rule(ops, fd, &mut tmp, rule) {
                Io::Done(n) => self.store.extend(&tmp[..n]),
                Io::WouldBlock => break,
                Io::Closed => {
                    // A read shutdown as raw_sock makes it, while the store
                    // may still hold bytes for the owner.
                    conn.flags |= ConnFlags::SOCK_RD_SH;
                    cx.set_state(fd, FdState::RECV_SHUT, FdState::empty());
                }
                Io::Error(e) => conn.set_error(ConnError::from_io(&e)),
            }
        }
        let n = self.chunk.min(max).min(buf.free()).min(self.store.len());
        let part: Vec<u8> = self.store.drain(..n).collect();
        buf.write_from(&part)
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
        if !self.own.is_empty() {
            RawSock.snd_buf(ops, cx, conn, &mut self.own, usize::MAX, SendFlags::empty());
            if !self.own.is_empty() {
                return 0; // the owner's bytes wait behind ours
            }
        }
        RawSock.snd_buf(ops, cx, conn, buf, max, flags)
    }

    fn shut_write<S: SockOps, P: Poller>(&mut self, ops: &mut S, cx: &mut Ctx<P>, conn: &mut Connection) {
        RawSock.shut_write(ops, cx, conn)
    }

    fn rcv_pending(&self) -> bool {
        !self.store.is_empty()
    }

    fn snd_pending(&self) -> bool {
        !self.own.is_empty()
    }
}
