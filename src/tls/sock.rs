//! The adapters that let rustls read and write the socket through the
//! connection's [`SockOps`] and the loop's READY-bit rules, so fault
//! injection and syscall counting cover TLS as they cover raw_sock.
//!
//! Reads never apply "short read = drained": TLS hides the fd's
//! readiness, so reads go through [`Ctx::recv_with_rule`] with
//! [`ShortRead::Progress`], and the fd's recv READY bit is only ever
//! cleared by an EAGAIN, never by a short read (the transport reads until
//! EAGAIN, or until its owner has no room).

use std::io;
use std::os::fd::RawFd;

use anypoll_backends::Poller;

use crate::connection::ConnError;
use crate::raw_sock::Connecting;
use crate::sockops::SockOps;
use crate::{Ctx, Io, ShortRead};

/// How the socket call behind the last adapter call ended, beyond its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Bytes moved (or nothing was tried).
    Open,
    /// EAGAIN (READY cleared on the loop's side).
    WouldBlock,
    /// The input is over without error (recv said 0).
    Eof,
    /// A hard socket error.
    Error(ConnError),
}

/// One socket seen as `io::Read` + `io::Write` for rustls's `read_tls` and
/// `write_tls`. EINTR is retried here; EAGAIN and hard errors come out as
/// [`End`] (and as an `io::Error` to rustls, which passes it through).
pub(super) struct SockIo<'a, S, P: Poller> {
    pub(super) ops: &'a mut S,
    pub(super) cx: &'a mut Ctx<P>,
    pub(super) fd: RawFd,
    /// A connect is pending: ENOTCONN/EINPROGRESS count as EAGAIN.
    pub(super) connecting: bool,
    pub(super) end: End,
    /// Some bytes moved.
    pub(super) moved: bool,
}

impl<'a, S: SockOps, P: Poller> SockIo<'a, S, P> {
    pub(super) fn new(ops: &'a mut S, cx: &'a mut Ctx<P>, fd: RawFd, connecting: bool) -> Self {
        SockIo { ops, cx, fd, connecting, end: End::Open, moved: false }
    }

    /// Records how a socket call that moved nothing ended, and gives
    /// rustls the error to pass through: EAGAIN (READY was cleared by the
    /// loop) or the hard error.
    fn failed(&mut self, io: Io) -> io::Error {
        match io {
            Io::Error(e) => {
                self.end = End::Error(crate::raw_sock::conn_error(&e));
                e
            }
            _ => {
                self.end = End::WouldBlock;
                io::ErrorKind::WouldBlock.into()
            }
        }
    }
}

impl<S: SockOps, P: Poller> io::Read for SockIo<'_, S, P> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The loop's rules with ShortRead::Progress: a short read is
        // progress, never "drained" (see the module docs); raw_sock's
        // Connecting filter turns ENOTCONN into EAGAIN while a connect is
        // pending, as for a plain socket.
        let mut ops = Connecting::new(&mut *self.ops, self.connecting);
        match self.cx.recv_with_rule(&mut ops, self.fd, buf, ShortRead::Progress) {
            Io::Done(n) => {
                self.moved |= n > 0;
                self.end = End::Open;
                Ok(n)
            }
            Io::Closed => {
                self.end = End::Eof;
                Ok(0)
            }
            io => Err(self.failed(io)),
        }
    }
}

impl<S: SockOps, P: Poller> io::Write for SockIo<'_, S, P> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut ops = Connecting::new(&mut *self.ops, self.connecting);
        match self.cx.send_with(&mut ops, self.fd, buf, 0) {
            Io::Done(n) => {
                self.moved |= n > 0;
                self.end = End::Open;
                Ok(n)
            }
            io => Err(self.failed(io)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
