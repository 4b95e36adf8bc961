//! The I/O helpers of [`Ctx`]: the READY-bit rules every recv, send,
//! splice and accept ends with (short reads, EAGAIN, hang-up reports,
//! hard errors), and the counted syscalls that apply them. A socket's
//! errno quirks are not here: they are the transport's
//! ([`crate::raw_sock`]).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};

use anypoll_backends::Poller;

use super::{trigger_of, Ctx};
use crate::fd::{FdState, Strategy};
use crate::sockops::{Counted, Real, SockOps};
use anypoll_backends::Trigger;

/// What a short read (fewer bytes than asked, more than 0) tells the loop
/// about the fd: the "short read = drained" rule, and for whom it holds.
///
/// A transport that reads straight from the socket for its owner (raw_sock)
/// may take a short read as proof that the socket is drained: under the
/// level strategy READY is cleared without the recv that would only say
/// EAGAIN ([`Ctx::done_recv`]). A transport that
/// [hides readiness](crate::transport::Transport::hides_readiness) (TLS)
/// must not: what it asks the socket for is its own business (a record,
/// a header), not its owner's, so the fd's READY bit is cleared only by an
/// EAGAIN. [`ShortRead::of`] picks the rule from the transport, so a
/// transport's socket reads say `cx.recv_with_rule(ops, fd, buf,
/// ShortRead::of(self))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortRead {
    /// The socket is drained ([`Ctx::done_recv`]): raw_sock's rule, and
    /// [`Ctx::recv`]'s and [`Ctx::recv_with`]'s.
    Drained,
    /// It proves nothing: the read counts as progress, READY stays until
    /// an EAGAIN (a hang-up report is confirmed by the next recv's 0).
    Progress,
}

impl ShortRead {
    /// The rule for `xprt`: [`Progress`](ShortRead::Progress) if it hides
    /// readiness, else [`Drained`](ShortRead::Drained).
    #[inline]
    pub fn of<T: crate::transport::Transport + ?Sized>(xprt: &T) -> ShortRead {
        if xprt.hides_readiness() {
            ShortRead::Progress
        } else {
            ShortRead::Drained
        }
    }
}

/// The outcome of a recv or send through the loop.
#[derive(Debug)]
pub enum Io {
    /// Moved this many bytes (more than 0).
    Done(usize),
    /// EAGAIN: the direction is no longer READY and will be polled.
    WouldBlock,
    /// recv: the peer shut down its side cleanly (a recv returned 0, or a
    /// short read after a hang-up report proved it without another recv),
    /// and no error was reported for the fd.
    Closed,
    /// A hard error; the fd's ERROR bit is set and both directions are
    /// shut (later calls return `Closed`). The error keeps its errno.
    ///
    /// A peer that sends data and then resets the connection (SO_LINGER
    /// {1, 0}, or a crash) surfaces the same way on every backend: recv
    /// gives the data (`Done`), then `Error` carrying the socket's error,
    /// ECONNRESET, never `Closed`. Where the poller reports the reset with
    /// the data (ERR and HUP on epoll, poll, compat), the loop reads the
    /// error with `SO_ERROR` once the data is out; where it reports plain
    /// readability (select), the recv itself returns ECONNRESET.
    Error(io::Error),
}

impl<P: Poller> Ctx<P> {
    /// `ops` with every call counted in this loop's
    /// [`counters`](Ctx::counters) ([`Counted`]): the one way a layer's
    /// socket syscalls are counted. Made for a call or a few:
    /// `cx.counted(ops).shutdown(fd, libc::SHUT_WR)`.
    #[inline]
    pub fn counted<'a, S: SockOps>(&'a mut self, ops: &'a mut S) -> Counted<'a, S> {
        Counted::new(ops, &mut self.counters)
    }

    /// A recv returned less than asked: under the level strategy the fd is
    /// drained, so READY is cleared without the recv that would only return
    /// EAGAIN. Under edge it proves nothing, unless a hang-up or an error
    /// was reported: then the input is over (SHUT) on both strategies, and
    /// the next recv says how it ended ([`Io`]).
    /// It counts as progress.
    pub fn done_recv(&mut self, fd: RawFd) {
        let Some(e) = self.fds.get(fd) else { return };
        let (set, clear) = if e.state.intersects(FdState::SEEN_RDHUP | FdState::SEEN_HUP | FdState::ERROR) {
            (FdState::RECV_SHUT, FdState::empty())
        } else if self.strategy == Strategy::Level {
            (FdState::empty(), FdState::RECV_READY)
        } else {
            (FdState::empty(), FdState::empty())
        };
        self.fds.change(fd, set, clear, true);
    }

    /// A recv-side call moved less than asked, which usually means the fd
    /// is drained but does not prove it: a splice into a pipe also stops
    /// when the pipe's slots are full, with bytes still in the socket.
    /// READY is cleared only where the kernel would report the fd again if
    /// bytes remain: a level-triggered registration (rule 3 of
    /// [`crate::fd`]). On an edge-triggered one the fd stays READY and the
    /// next call finds out (EAGAIN, or more bytes). It counts as progress.
    pub fn done_recv_unproven(&mut self, fd: RawFd) {
        let Some(e) = self.fds.get(fd) else { return };
        if trigger_of(self.strategy, self.stream_trigger, e.state) == Trigger::Level {
            self.done_recv(fd);
        } else {
            self.mark_progress(fd);
        }
    }

    /// A send took less than offered: the socket buffer is full. Under the
    /// level strategy READY is cleared at once; under edge only an EAGAIN
    /// clears it. It counts as progress.
    pub fn done_send(&mut self, fd: RawFd) {
        let clear = if self.strategy == Strategy::Level { FdState::SEND_READY } else { FdState::empty() };
        self.fds.change(fd, FdState::empty(), clear, true);
    }

    /// Records that I/O on `fd` moved data (the transport's splices call it
    /// too), so an owner still runnable is called again without a wait.
    pub(crate) fn mark_progress(&mut self, fd: RawFd) {
        if let Some(e) = self.fds.get_mut(fd) {
            e.progress = true;
        }
    }

    /// An I/O call is returning the fd's hard error: ERROR, both
    /// directions shut, and the error counts as told.
    fn hard_error(&mut self, fd: RawFd) {
        self.set_state(fd, FdState::ERROR | FdState::RECV_SHUT | FdState::SEND_SHUT, FdState::empty());
        if let Some(e) = self.fds.get_mut(fd) {
            e.error_told = true;
        }
    }

    /// Receives into `buf`, counting the syscall and applying the state
    /// rules: EAGAIN clears READY, a short read is `done_recv`, 0 is a read
    /// shutdown, EINTR is retried, a hard error sets ERROR. A fd whose input
    /// is known to be over returns [`Io::Closed`] without a syscall.
    pub fn recv(&mut self, fd: RawFd, buf: &mut [u8]) -> Io {
        self.recv_with(&mut Real, fd, buf)
    }

    /// [`recv`](Ctx::recv) through a [`SockOps`] seam. The loop's rules
    /// only: EAGAIN, EINTR, 0, short reads, hard errors. A socket's errno
    /// quirks (ENOTCONN while a connect is pending) are the transport's,
    /// which filters them in its `ops` ([`crate::raw_sock`]). A short read
    /// is [`ShortRead::Drained`]; see [`recv_with_rule`](Ctx::recv_with_rule).
    pub fn recv_with<S: SockOps>(&mut self, ops: &mut S, fd: RawFd, buf: &mut [u8]) -> Io {
        self.recv_with_rule(ops, fd, buf, ShortRead::Drained)
    }

    /// [`recv_with`](Ctx::recv_with), with what a short read means given
    /// by `short` ([`ShortRead`]): a transport that hides readiness reads
    /// its socket with [`ShortRead::Progress`], never the drained rule.
    pub fn recv_with_rule<S: SockOps>(&mut self, ops: &mut S, fd: RawFd, buf: &mut [u8], short: ShortRead) -> Io {
        let state = self.state(fd).unwrap_or_default();
        if state.contains(FdState::RECV_SHUT) || (state.contains(FdState::ERROR) && self.errors.contains_key(&fd)) {
            // Over, or refused by the backend: no syscall, the loop says how.
            return self.input_over(ops, fd);
        }
        loop {
            match self.counted(ops).recv(fd, buf, 0) {
                Ok(0) if !buf.is_empty() => {
                    self.set_state(fd, FdState::RECV_SHUT, FdState::empty());
                    return self.input_over(ops, fd);
                }
                Ok(n) if n < buf.len() && short == ShortRead::Drained => {
                    self.done_recv(fd);
                    return Io::Done(n);
                }
                Ok(n) => {
                    self.mark_progress(fd);
                    return Io::Done(n);
                }
                Err(e) => match self.io_error(ops, fd, e, FdState::RECV_READY) {
                    Some(io) => return io,
                    None => continue,
                },
            }
        }
    }

    /// How the input of `fd` ended, once it is known to be over (a recv
    /// returned 0, or a short read after a hang-up or error report):
    /// [`Io::Closed`], unless the fd has the ERROR bit. Then the error
    /// comes out, the same on every backend: the one the loop recorded
    /// itself (the backend refused the fd, see [`take_error`](Ctx::take_error)),
    /// else the socket's pending error, read once with `SO_ERROR` (a peer
    /// that sent data then reset gives ECONNRESET after the data). An ERROR
    /// report whose `SO_ERROR` is 0 gives an error without errno that says
    /// so. The one place that turns the ERROR bit into an error for recv;
    /// the transport ([`crate::raw_sock`]) ends its reads here too.
    pub(crate) fn input_over<S: SockOps>(&mut self, ops: &mut S, fd: RawFd) -> Io {
        let Some(e) = self.fds.get(fd) else { return Io::Closed };
        if !e.state.contains(FdState::ERROR) || e.error_told {
            // No error, or told already (SO_ERROR was consumed then).
            return Io::Closed;
        }
        if let Some(e) = self.errors.remove(&fd) {
            self.hard_error(fd);
            return Io::Error(e);
        }
        let e = match self.counted(ops).so_error(fd) {
            Ok(0) => io::Error::other(format!(
                "fd {fd}: the {} backend reported an error that SO_ERROR does not name",
                self.poller.name()
            )),
            Ok(errno) => io::Error::from_raw_os_error(errno),
            // Not a socket (a pipe): nothing to name, the input is over.
            Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => return Io::Closed,
            Err(e) => e,
        };
        self.hard_error(fd);
        Io::Error(e)
    }

    /// Sends from `buf` with MSG_NOSIGNAL (and MSG_MORE when `more`, where
    /// it exists: [`raw_sock::msg_flags`](crate::raw_sock::msg_flags)), with
    /// the same state rules as [`recv`](Ctx::recv).
    pub fn send(&mut self, fd: RawFd, buf: &[u8], more: bool) -> Io {
        let flags = if more { crate::raw_sock::SendFlags::MORE } else { crate::raw_sock::SendFlags::empty() };
        self.send_with(&mut Real, fd, buf, crate::raw_sock::msg_flags(flags))
    }

    /// [`send`](Ctx::send) through a [`SockOps`] seam, with `msg_flags`
    /// (`MSG_*` values) as the transport chose them; the loop adds
    /// MSG_NOSIGNAL where it exists, so no send can raise SIGPIPE. The
    /// loop's rules only, as for [`recv_with`](Ctx::recv_with): a socket's
    /// errno quirks (ENOTCONN, EINPROGRESS while a connect is pending) are
    /// the transport's.
    pub fn send_with<S: SockOps>(&mut self, ops: &mut S, fd: RawFd, buf: &[u8], msg_flags: libc::c_int) -> Io {
        let flags = crate::sys::SEND_FLAGS | msg_flags;
        loop {
            match self.counted(ops).send(fd, buf, flags) {
                Ok(0) if !buf.is_empty() => {
                    self.would_block(fd, FdState::SEND_READY);
                    return Io::WouldBlock;
                }
                Ok(n) if n < buf.len() => {
                    self.done_send(fd);
                    return Io::Done(n);
                }
                Ok(n) => {
                    self.mark_progress(fd);
                    return Io::Done(n);
                }
                Err(e) => match self.io_error(ops, fd, e, FdState::SEND_READY) {
                    Some(io) => return io,
                    None => continue,
                },
            }
        }
    }

    /// An EAGAIN (or what counts as one) in the direction whose READY bit
    /// is `ready` (`RECV_READY` or `SEND_READY`): counted, and READY is
    /// cleared, so the direction is polled. Every I/O path of the loop and
    /// the transport ends an EAGAIN here.
    ///
    /// An EAGAIN also contradicts a hang-up the poller reported for that
    /// direction: after a real one a recv returns 0 or an error, never
    /// EAGAIN (nor does a send after a HUP). The report was spurious, so it
    /// is forgotten ([`forget_hangup`](Ctx::forget_hangup)) and the fd is
    /// polled again; a real hang-up would be reported again. Without this,
    /// rule 5 of [`crate::fd`] would leave a spuriously hung-up fd unpolled
    /// for good.
    ///
    /// A layer that makes its own syscalls on a registered fd calls this
    /// on EAGAIN: it is the only way to clear READY after one (there is no
    /// separate `cant_recv`/`cant_send`, which would skip the counter and
    /// the hang-up rule).
    pub fn would_block(&mut self, fd: RawFd, ready: FdState) {
        self.counters.eagain += 1;
        let claimed =
            if ready == FdState::RECV_READY { FdState::SEEN_HUP | FdState::SEEN_RDHUP } else { FdState::SEEN_HUP };
        if self.state(fd).is_some_and(|s| s.intersects(claimed) && !s.contains(FdState::ERROR)) {
            log::debug!("fd {fd}: EAGAIN after a reported hang-up: the report was spurious, forgetting it");
            self.forget_hangup(fd);
        }
        self.set_state(fd, FdState::empty(), ready);
    }

    /// The one mapping of an I/O errno to fd state, shared by every I/O
    /// path: EINTR is `None` (retry); EAGAIN clears `ready`; anything else
    /// is a hard error.
    ///
    /// An EAGAIN on an fd whose poller reported an error not told yet is
    /// that error (read with `SO_ERROR`, as by [`input_over`](Ctx::input_over)),
    /// not a wait: a sticky ERROR stops the fd's polling (rule 5 of
    /// [`crate::fd`]), so clearing READY would leave the connection
    /// waiting for an event that never comes. A real socket error makes
    /// recv and send return it, not EAGAIN, so this is the report without
    /// errno (`SO_ERROR` read by someone else, an error-queue entry, or a
    /// spurious report); the connection ends with it, as after a short
    /// read under ERROR, rather than hang.
    pub(crate) fn io_error<S: SockOps>(&mut self, ops: &mut S, fd: RawFd, e: io::Error, ready: FdState) -> Option<Io> {
        if e.kind() == io::ErrorKind::Interrupted {
            return None;
        }
        if e.kind() == io::ErrorKind::WouldBlock {
            if self.fds.get(fd).is_some_and(|e| e.state.contains(FdState::ERROR) && !e.error_told) {
                self.counters.eagain += 1;
                return Some(self.input_over(ops, fd));
            }
            self.would_block(fd, ready);
            return Some(Io::WouldBlock);
        }
        self.hard_error(fd);
        Some(Io::Error(e))
    }

    /// Accepts one connection from listening socket `fd`, non-blocking and
    /// close-on-exec. `Ok(None)` on EAGAIN (recv no longer READY).
    pub fn accept(&mut self, fd: RawFd) -> io::Result<Option<(OwnedFd, SocketAddr)>> {
        loop {
            match Counted::new(&mut Real, &mut self.counters).accept(fd) {
                Ok(r) => {
                    self.mark_progress(fd);
                    return Ok(Some(r));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.would_block(fd, FdState::RECV_READY);
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
    }
}
