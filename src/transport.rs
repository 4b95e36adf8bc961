//! The transport seam: how bytes cross a connection's socket.
//!
//! A [`Connection`] has three layers: control (the socket and its
//! registration), **transport** (this trait) and data (the owner: a
//! [`Stream`](crate::stream::Stream), the buffered connection, the relay).
//! This is HAProxy's `struct xprt_ops`: [`RawSock`] fills it in for plain
//! sockets, as `raw_sock.c` does; TLS is the second implementation.
//!
//! The data layer is generic over `T: Transport`, so the calls are static
//! (no vtable on the hot path) and a release build compiles the seam away.
//! Every socket syscall a transport makes goes through the [`SockOps`] it
//! is handed, which is where syscalls are counted and where tests script
//! errno sequences, short reads and resets.
//!
//! # The readiness rule
//!
//! A transport that does **not** hide readiness (raw_sock) reads straight
//! from the socket: a short read there means the socket is drained, and
//! the loop may stop polling until the next readiness report.
//!
//! A transport that **hides** readiness ([`Transport::hides_readiness`]:
//! TLS) buffers what it read from the socket (records, decrypted
//! plaintext). The socket may look idle while the transport still holds
//! bytes for its owner, so:
//! * "short read = drained" is never applied to it;
//! * the data layer calls [`rcv_buf`](Transport::rcv_buf) again while
//!   [`rcv_pending`](Transport::rcv_pending) is true, before anything waits
//!   on the fd;
//! * bytes of the transport's own (handshake, alerts, `close_notify`) are
//!   flushed while [`snd_pending`](Transport::snd_pending) is true, even when
//!   the owner has nothing to send.
//!
//! # Splice
//!
//! [`rcv_pipe`](Transport::rcv_pipe)/[`snd_pipe`](Transport::snd_pipe) are an
//! optional capability ([`Transport::can_splice`]). A transport without it
//! keeps the default methods, which set `NO_SPLICE` on the connection and
//! move nothing: the data layer then falls back to buffers by itself.

use anypoll_backends::Poller;

use crate::buffer::Buffer;
use crate::connection::{ConnFlags, Connection};
use crate::pipe::Pipe;
use crate::raw_sock::{self, SendFlags};
use crate::sockops::SockOps;
use crate::Ctx;

/// The operations of a transport (HAProxy's `xprt_ops`). See the [module
/// docs](self) for the readiness rule and the splice capability.
///
/// A value of the type is the transport's per-connection state (a TLS
/// session); [`RawSock`] has none and is zero-sized.
pub trait Transport {
    /// A short name for logs: `"raw_sock"`, `"tls"`.
    fn name(&self) -> &'static str;

    /// Whether the transport hides the fd's readiness (it buffers bytes
    /// read from the socket). True for TLS, false for raw_sock. A method,
    /// not a constant, so that an enum of transports chosen at run time
    /// (plain or TLS per listener) can answer per connection.
    fn hides_readiness(&self) -> bool;

    /// Whether [`rcv_pipe`](Transport::rcv_pipe)/[`snd_pipe`](Transport::snd_pipe)
    /// can move bytes (splice). False by default.
    fn can_splice(&self) -> bool {
        false
    }

    /// Initialises the transport, after the control layer
    /// ([`Connection::ctrl_init`]). Returns false if it was already
    /// initialised or closed, or the control layer is not ready.
    fn init(&mut self, conn: &mut Connection) -> bool {
        conn.xprt_init()
    }

    /// Closes the transport (once), before the control layer.
    fn close(&mut self, conn: &mut Connection) -> bool {
        conn.xprt_close()
    }

    /// Receives into `buf`: at most `max` bytes, never more than its real
    /// free space. Returns the bytes delivered to the owner. Afterwards the
    /// connection's flags say why it stopped: `SOCK_RD_SH`, `ERROR`,
    /// `WAIT_ROOM`, or nothing (would block, or the limit).
    fn rcv_buf<S: SockOps, P: Poller>(
        &mut self,
        ops: &mut S,
        cx: &mut Ctx<P>,
        conn: &mut Connection,
        buf: &mut Buffer,
        max: usize,
    ) -> usize;

    /// Sends up to `max` bytes from `buf`, consuming what the transport
    /// took. `flags` are the transport's own ([`SendFlags`]), never raw
    /// `MSG_*` values. With an empty `buf` it only flushes bytes of its own
    /// ([`snd_pending`](Transport::snd_pending)).
    fn snd_buf<S: SockOps, P: Poller>(
        &mut self,
        ops: &mut S,
        cx: &mut Ctx<P>,
        conn: &mut Connection,
        buf: &mut Buffer,
        max: usize,
        flags: SendFlags,
    ) -> usize;

    /// Splices up to `count` bytes from the socket into `pipe`. Without
    /// the capability: sets `NO_SPLICE` and moves nothing.
    fn rcv_pipe<S: SockOps, P: Poller>(
        &mut self,
        _ops: &mut S,
        _cx: &mut Ctx<P>,
        conn: &mut Connection,
        _pipe: &mut Pipe,
        _count: usize,
    ) -> usize {
        conn.flags |= ConnFlags::NO_SPLICE;
        0
    }

    /// Splices the pipe's bytes out to the socket. Without the capability:
    /// sets `NO_SPLICE` and moves nothing.
    fn snd_pipe<S: SockOps, P: Poller>(
        &mut self,
        _ops: &mut S,
        _cx: &mut Ctx<P>,
        conn: &mut Connection,
        _pipe: &mut Pipe,
    ) -> usize {
        conn.flags |= ConnFlags::NO_SPLICE;
        0
    }

    /// Shuts the write side (`SOCK_WR_SH`). TLS sends its `close_notify`
    /// first.
    fn shut_write<S: SockOps, P: Poller>(&mut self, ops: &mut S, cx: &mut Ctx<P>, conn: &mut Connection);

    /// Whether the transport holds bytes for its owner that the socket's
    /// readiness does not show: the owner must call
    /// [`rcv_buf`](Transport::rcv_buf) before waiting. Always false for a
    /// transport that does not hide readiness.
    fn rcv_pending(&self) -> bool {
        false
    }

    /// Whether the transport has bytes of its own (handshake, alerts,
    /// `close_notify`) waiting for the socket: the owner keeps the send
    /// direction active and calls [`snd_buf`](Transport::snd_buf) until
    /// this is false.
    fn snd_pending(&self) -> bool {
        false
    }
}

/// The plain-socket transport: [`raw_sock`]'s functions behind the
/// [`Transport`] seam. Zero-sized: it has no per-connection state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawSock;

impl Transport for RawSock {
    #[inline]
    fn name(&self) -> &'static str {
        "raw_sock"
    }

    #[inline]
    fn hides_readiness(&self) -> bool {
        false
    }

    #[inline]
    fn can_splice(&self) -> bool {
        cfg!(any(target_os = "linux", target_os = "android"))
    }

    #[inline]
    fn rcv_buf<S: SockOps, P: Poller>(
        &mut self,
        ops: &mut S,
        cx: &mut Ctx<P>,
        conn: &mut Connection,
        buf: &mut Buffer,
        max: usize,
    ) -> usize {
        raw_sock::rcv_buf(ops, cx, conn, buf, max)
    }

    #[inline]
    fn snd_buf<S: SockOps, P: Poller>(
        &mut self,
        ops: &mut S,
        cx: &mut Ctx<P>,
        conn: &mut Connection,
        buf: &mut Buffer,
        max: usize,
        flags: SendFlags,
    ) -> usize {
        raw_sock::snd_buf(ops, cx, conn, buf, max, flags)
    }

    #[inline]
    fn rcv_pipe<S: SockOps, P: Poller>(
        &mut self,
        ops: &mut S,
        cx: &mut Ctx<P>,
        conn: &mut Connection,
        pipe: &mut Pipe,
        count: usize,
    ) -> usize {
        raw_sock::rcv_pipe(ops, cx, conn, pipe, count)
    }

    #[inline]
    fn snd_pipe<S: SockOps, P: Poller>(
        &mut self,
        ops: &mut S,
        cx: &mut Ctx<P>,
        conn: &mut Connection,
        pipe: &mut Pipe,
    ) -> usize {
        raw_sock::snd_pipe(ops, cx, conn, pipe)
    }

    #[inline]
    fn shut_write<S: SockOps, P: Poller>(&mut self, ops: &mut S, cx: &mut Ctx<P>, conn: &mut Connection) {
        raw_sock::shut_write(ops, cx, conn)
    }
}
