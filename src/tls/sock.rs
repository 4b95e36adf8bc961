//! The adapters that let rustls read and write the socket through the
//! connection's [`SockOps`] and the loop's READY-bit rules, so fault
//! injection and syscall counting cover TLS as they cover raw_sock.
//!
//! Reads never apply "short read = drained": TLS hides the fd's
//! readiness, so the fd's recv READY bit is only ever cleared by an EAGAIN
//! ([`Ctx::would_block`]), never by a short read (the transport reads until
//! EAGAIN, or until its owner has no room).

use std::io;
use std::os::fd::RawFd;

use anypoll_backends::Poller;

use crate::connection::ConnError;
use crate::sockops::SockOps;
use crate::{Ctx, FdState, Io};

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

    /// The input is over: a read shutdown, or the error the fd's ERROR bit
    /// stands for (the loop's one rule, [`Ctx::input_over`]).
    fn over(&mut self) -> io::Result<usize> {
        match self.cx.input_over(self.ops, self.fd) {
            Io::Error(e) => {
                self.end = End::Error(crate::raw_sock::conn_error(&e));
                Err(e)
            }
            _ => {
                self.end = End::Eof;
                Ok(0)
            }
        }
    }

    fn failed(&mut self, io: Option<Io>) -> Option<io::Error> {
        match io? {
            Io::Error(e) => {
                self.end = End::Error(ConnError::from_io(&e));
                Some(e)
            }
            _ => {
                self.end = End::WouldBlock;
                Some(io::ErrorKind::WouldBlock.into())
            }
        }
    }
}

impl<S: SockOps, P: Poller> io::Read for SockIo<'_, S, P> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cx.state(self.fd).is_some_and(|s| s.contains(FdState::RECV_SHUT)) {
            return self.over();
        }
        loop {
            self.cx.counters_mut().reads += 1;
            match self.ops.recv(self.fd, buf, 0) {
                Ok(0) if !buf.is_empty() => {
                    self.cx.set_state(self.fd, FdState::RECV_SHUT, FdState::empty());
                    return self.over();
                }
                Ok(n) => {
                    // Progress, whatever its size: no "short read =
                    // drained" here (see the module docs).
                    self.cx.mark_progress(self.fd);
                    self.moved |= n > 0;
                    self.end = End::Open;
                    return Ok(n);
                }
                Err(e) => {
                    let io = self.cx.io_error(self.fd, e, self.connecting, FdState::RECV_READY);
                    if let Some(e) = self.failed(io) {
                        return Err(e);
                    }
                }
            }
        }
    }
}

impl<S: SockOps, P: Poller> io::Write for SockIo<'_, S, P> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.cx.send_with(self.ops, self.fd, buf, false, self.connecting) {
            Io::Done(n) => {
                self.moved |= n > 0;
                self.end = End::Open;
                Ok(n)
            }
            io => Err(self.failed(Some(io)).unwrap_or_else(|| io::ErrorKind::WouldBlock.into())),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
