//! `raw_sock`: the plain-socket transport. It turns every platform's odd
//! errno and poll-flag behaviour into one behaviour, the normalization
//! table of `docs/transport.md`:
//!
//! | seen | what raw_sock does |
//! |---|---|
//! | recv → EAGAIN | recv not ready; the fd is polled (`Ctx::would_block`) |
//! | recv → EAGAIN after HUP/RDHUP was reported | the report was spurious: forgotten, the fd is polled again |
//! | recv → ENOTCONN while connecting (illumos) | same as EAGAIN |
//! | send → ENOTCONN while connecting (OpenBSD, FreeBSD) | same as EAGAIN |
//! | send → EINPROGRESS (Linux TCP fast open) | same as EAGAIN |
//! | EINTR | retried |
//! | recv → 0 | `SOCK_RD_SH`, no error |
//! | short read after HUP/RDHUP was reported | `SOCK_RD_SH` without another recv |
//! | short read while ERR is reported | error |
//! | HUP without ERR and without IN | read-shutdown path, no recv |
//! | ERR while the connect is pending | connect failed, no recv; `SO_ERROR` read once for the errno |
//! | HUP without ERR on a connect that succeeded | not a failure (`SO_ERROR` decides) |
//! | hard error (ECONNRESET, EPIPE, …) | `ERROR` + `SOCK_RD_SH` + `SOCK_WR_SH` |
//! | any activity on a connecting socket | `WAIT_L4_CONN` cleared |
//! | splice → EBADF / ENOSYS / EINVAL | splice disabled for this connection, bytes continue through recv, nothing lost; counted, logged once |
//! | splice → EAGAIN while the pipe holds data | `WAIT_ROOM` (pipe full); recv is not polled |
//! | splice → EAGAIN after HUP/RDHUP was reported | not an answer (some kernels say it at a real shutdown): the fd stays READY and recv decides |
//! | splice short with RDHUP | not proof the input is empty: splice again |
//! | splice short without RDHUP | most likely drained, not proof (the pipe's slots may be full): READY cleared only on a level-triggered registration |
//! | an event splice does not consume (splice says 0, or EAGAIN twice after a readable report) | the fd stays READY and the caller receives with recv, which consumes it |
//!
//! Every syscall goes through a [`SockOps`] (generic, so [`Real`](crate::sockops::Real)
//! compiles to direct calls). The fd's READY bits are kept by the loop's
//! shared rules ([`Ctx::recv_with`], [`Ctx::send_with`]), so level and edge
//! strategies are respected here too. The socket's own quirks are this
//! module's, not the loop's: the ENOTCONN/EINPROGRESS of a pending connect
//! are filtered into EAGAIN by [`Connecting`] before the loop sees them,
//! and [`SendFlags`] become `MSG_*` values in [`msg_flags`].

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use anypoll_backends::{Poller, Ready};

use crate::buffer::Buffer;
use crate::connection::{ConnError, ConnFlags, Connection};
use crate::pipe::Pipe;
use crate::sockops::SockOps;
use crate::{Ctx, FdState, Io, ShortRead};

bitflags::bitflags! {
    /// Flags of [`snd_buf`]: the transport's own, never raw `MSG_*` values.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct SendFlags: u8 {
        /// More data follows soon: MSG_MORE where it exists.
        const MORE = 1 << 0;
    }
}

/// The `MSG_*` values of `flags`: [`SendFlags::MORE`] is MSG_MORE where
/// it exists (Linux, Android), nothing elsewhere. [`Ctx::send_with`] adds
/// MSG_NOSIGNAL itself.
#[inline]
pub fn msg_flags(flags: SendFlags) -> libc::c_int {
    if flags.contains(SendFlags::MORE) {
        crate::sys::MORE_FLAG
    } else {
        0
    }
}

/// The [`SockOps`] of a socket whose connect is pending: the errnos that
/// only mean "not connected yet" are EAGAIN, so the loop's rules see a
/// would-block and poll (the rows of the table above): ENOTCONN from recv
/// (illumos) and from send (OpenBSD, FreeBSD), EINPROGRESS from send
/// (Linux TCP fast open). With `connecting` false it passes everything
/// through. Any transport doing its own socket I/O on a connecting socket
/// (TLS) reads and writes through it.
#[derive(Debug)]
pub struct Connecting<'a, S> {
    ops: &'a mut S,
    connecting: bool,
}

impl<'a, S: SockOps> Connecting<'a, S> {
    /// Filters `ops` while `connecting`.
    #[inline]
    pub fn new(ops: &'a mut S, connecting: bool) -> Self {
        Connecting { ops, connecting }
    }

    /// EAGAIN for `quirks` errnos while connecting.
    #[inline]
    fn filter<T>(&self, r: std::io::Result<T>, quirks: &[i32]) -> std::io::Result<T> {
        match r {
            Err(e) if self.connecting && e.raw_os_error().is_some_and(|n| quirks.contains(&n)) => {
                Err(std::io::Error::from_raw_os_error(libc::EAGAIN))
            }
            r => r,
        }
    }
}

impl<S: SockOps> SockOps for Connecting<'_, S> {
    #[inline]
    fn recv(&mut self, fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> std::io::Result<usize> {
        let r = self.ops.recv(fd, buf, flags);
        self.filter(r, &[libc::ENOTCONN])
    }
    #[inline]
    fn send(&mut self, fd: RawFd, buf: &[u8], flags: libc::c_int) -> std::io::Result<usize> {
        let r = self.ops.send(fd, buf, flags);
        self.filter(r, &[libc::ENOTCONN, libc::EINPROGRESS])
    }
    #[inline]
    fn splice(&mut self, from: RawFd, to: RawFd, len: usize) -> std::io::Result<usize> {
        self.ops.splice(from, to, len)
    }
    #[inline]
    fn read(&mut self, fd: RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
        self.ops.read(fd, buf)
    }
    #[inline]
    fn so_error(&mut self, fd: RawFd) -> std::io::Result<i32> {
        self.ops.so_error(fd)
    }
    #[inline]
    fn shutdown(&mut self, fd: RawFd, how: libc::c_int) -> std::io::Result<()> {
        self.ops.shutdown(fd, how)
    }
}

/// Logged once per process.
static SPLICE_FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);

/// Whether `conn` can still do I/O in the direction whose shutdown flag is
/// `shut` (`SOCK_RD_SH` or `SOCK_WR_SH`): initialised, that direction not
/// shut, no error. Every transport checks it before a socket call.
pub(crate) fn usable(conn: &Connection, shut: ConnFlags) -> bool {
    conn.flags.contains(ConnFlags::CTRL_READY) && !conn.flags.intersects(shut | ConnFlags::ERROR)
}

fn read0<P: Poller>(cx: &mut Ctx<P>, conn: &mut Connection) {
    conn.connected();
    conn.flags |= ConnFlags::SOCK_RD_SH;
    cx.set_state(conn.fd(), FdState::RECV_SHUT, FdState::empty());
}

/// The connection error of an [`Io::Error`] from the loop: its errno, or
/// [`ConnError::PollErrNoErrno`] for the loop's "ERR without errno".
pub(crate) fn conn_error(e: &std::io::Error) -> ConnError {
    e.raw_os_error().map_or(ConnError::PollErrNoErrno, ConnError::from_errno)
}

/// The input is over ([`Ctx::input_over`]): a read shutdown, or the error
/// the fd's ERROR bit stands for.
fn input_over<S: SockOps, P: Poller>(ops: &mut S, cx: &mut Ctx<P>, conn: &mut Connection) {
    match cx.input_over(ops, conn.fd()) {
        Io::Error(e) => conn.set_error(conn_error(&e)),
        _ => read0(cx, conn),
    }
}

/// The rows that are decided from the poller's flags before any recv.
/// Returns false when no recv must be made.
fn precheck_recv<S: SockOps, P: Poller>(ops: &mut S, cx: &mut Ctx<P>, conn: &mut Connection) -> bool {
    let fd = conn.fd();
    let last = cx.last_ready(fd).unwrap_or_default();
    let state = cx.state(fd).unwrap_or_default();
    if conn.flags.contains(ConnFlags::WAIT_L4_CONN) {
        if state.contains(FdState::ERROR) || last.contains(Ready::ERROR) {
            // ERR without IN while connecting: the connect failed.
            conn.confirm_connect(ops, cx);
            return false;
        }
        return true;
    }
    if last.contains(Ready::HUP) && !last.intersects(Ready::READABLE | Ready::ERROR) {
        // HUP without ERR and without IN: nothing left to read.
        read0(cx, conn);
        return false;
    }
    true
}

/// Receives into `buf`: at most `max` bytes, and never more than the
/// buffer's real free space (wrapping included). Returns the bytes read.
/// Afterwards the flags say why it stopped: `SOCK_RD_SH`, `ERROR`,
/// `WAIT_ROOM` (buffer full), or nothing (EAGAIN or the limit).
pub fn rcv_buf<S: SockOps, P: Poller>(
    ops: &mut S,
    cx: &mut Ctx<P>,
    conn: &mut Connection,
    buf: &mut Buffer,
    max: usize,
) -> usize {
    if !usable(conn, ConnFlags::SOCK_RD_SH) || !precheck_recv(ops, cx, conn) {
        return 0;
    }
    let fd = conn.fd();
    let mut done = 0;
    while done < max {
        let connecting = conn.flags.contains(ConnFlags::WAIT_L4_CONN);
        let (first, _) = buf.free_slices();
        if first.is_empty() {
            conn.flags |= ConnFlags::WAIT_ROOM;
            break;
        }
        let want = first.len().min(max - done);
        // raw_sock reads straight from the socket for its owner: a short
        // read is drained (ShortRead::of(&RawSock)), the one rule it may use.
        match cx.recv_with_rule(&mut Connecting::new(ops, connecting), fd, &mut first[..want], ShortRead::Drained) {
            Io::Done(n) => {
                buf.commit(n);
                done += n;
                conn.connected();
                if n < want {
                    if cx.state(fd).unwrap_or_default().contains(FdState::RECV_SHUT) {
                        // Short read after a hang-up or error report: the
                        // data is kept, and the input is over; the loop
                        // says how (a read shutdown, or the error).
                        input_over(ops, cx, conn);
                    }
                    break;
                }
            }
            Io::Closed => {
                read0(cx, conn);
                break;
            }
            Io::WouldBlock => break,
            Io::Error(e) => {
                conn.set_error(conn_error(&e));
                break;
            }
        }
    }
    if buf.is_full() {
        conn.flags |= ConnFlags::WAIT_ROOM;
    }
    done
}

/// Sends up to `max` bytes from `buf`, consuming what was sent. `flags`
/// are the transport's: [`SendFlags::MORE`] becomes MSG_MORE where it
/// exists; MSG_NOSIGNAL is always used. Returns the bytes sent.
pub fn snd_buf<S: SockOps, P: Poller>(
    ops: &mut S,
    cx: &mut Ctx<P>,
    conn: &mut Connection,
    buf: &mut Buffer,
    max: usize,
    flags: SendFlags,
) -> usize {
    if !usable(conn, ConnFlags::SOCK_WR_SH) {
        return 0;
    }
    let fd = conn.fd();
    let mut done = 0;
    while done < max && !buf.is_empty() {
        let connecting = conn.flags.contains(ConnFlags::WAIT_L4_CONN);
        let limit = max - done;
        let (first, _) = buf.data_slices();
        let n_try = first.len().min(limit);
        // More follows this call if the caller says so, or if this slice
        // is not the end of what we are about to send (the data wraps).
        let more = flags.contains(SendFlags::MORE) || n_try < buf.len().min(limit);
        let msg = msg_flags(if more { SendFlags::MORE } else { SendFlags::empty() });
        match cx.send_with(&mut Connecting::new(ops, connecting), fd, &first[..n_try], msg) {
            Io::Done(n) => {
                buf.consume(n);
                done += n;
                conn.connected();
                if n < n_try {
                    break;
                }
            }
            Io::WouldBlock | Io::Closed => break,
            Io::Error(e) => {
                conn.set_error(ConnError::from_io(&e));
                break;
            }
        }
    }
    done
}

/// Turns splice off for this connection after EBADF/ENOSYS/EINVAL: counted,
/// logged once per process. The bytes go through recv/send from now on.
fn splice_fallback<P: Poller>(cx: &mut Ctx<P>, conn: &mut Connection, e: &std::io::Error) {
    conn.flags |= ConnFlags::NO_SPLICE;
    cx.counters_mut().splice_fallbacks += 1;
    if !SPLICE_FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
        log::warn!("fd {}: splice failed ({e}); falling back to recv/send for such connections", conn.fd());
    }
}

/// A splice error other than EINTR and EAGAIN, either way: splice is
/// turned off for this connection where it does not work here
/// (EBADF/ENOSYS/EINVAL, [`splice_fallback`]); anything else is the
/// connection's error.
fn splice_failed<P: Poller>(cx: &mut Ctx<P>, conn: &mut Connection, e: &std::io::Error) {
    if splice_unsupported(e) {
        splice_fallback(cx, conn, e);
    } else {
        conn.set_error(ConnError::from_io(e));
    }
}

fn splice_unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBADF) | Some(libc::ENOSYS) | Some(libc::EINVAL))
}

/// Splices up to `count` bytes from the socket into `pipe`. Returns the
/// bytes moved. Returns 0 with `NO_SPLICE` set when splice does not work
/// here: the caller then uses [`rcv_buf`], and nothing is lost. Returns 0
/// with the fd still recv-READY (and no `WAIT_ROOM`, `SOCK_RD_SH` or
/// `ERROR`) when splice could not consume what the poller reported (an end
/// of input to confirm, bytes behind a TCP urgent mark): the caller must
/// then receive with [`rcv_buf`] this time.
pub fn rcv_pipe<S: SockOps, P: Poller>(
    ops: &mut S,
    cx: &mut Ctx<P>,
    conn: &mut Connection,
    pipe: &mut Pipe,
    count: usize,
) -> usize {
    if conn.flags.contains(ConnFlags::NO_SPLICE)
        || !usable(conn, ConnFlags::SOCK_RD_SH)
        || !precheck_recv(ops, cx, conn)
    {
        return 0;
    }
    let fd = conn.fd();
    let mut done = 0;
    while done < count {
        let want = count - done;
        match cx.counted(ops).splice(fd, pipe.write_fd(), want) {
            Ok(0) => {
                // The end of input, says splice; but it also stops at a TCP
                // urgent mark with bytes queued behind it. A recv confirms
                // (once per connection): the fd stays READY and the caller
                // receives with recv (see the module docs).
                conn.connected();
                break;
            }
            Ok(n) => {
                conn.flags.remove(ConnFlags::SPLICE_EMPTY);
                cx.mark_progress(fd);
                pipe.data += n;
                done += n;
                conn.connected();
                if n < want && cx.state(fd).is_some_and(|s| s.contains(FdState::ERROR)) {
                    // A short splice while ERR is reported: as for a short
                    // read, the bytes are kept and the error is final.
                    input_over(ops, cx, conn);
                    break;
                }
                if n < want {
                    // Short. With RDHUP reported it proves nothing (the
                    // kernel may stop at the FIN): splice again. Without,
                    // the socket most likely held less than asked; but a
                    // splice also stops when the pipe's slots are full
                    // (many small segments), so it is not proof: drained
                    // only where a level-triggered kernel would say
                    // otherwise (no EAGAIN splice to learn it there).
                    if cx.state(fd).is_some_and(|s| s.intersects(FdState::SEEN_RDHUP | FdState::SEEN_HUP)) {
                        continue;
                    }
                    cx.done_recv_unproven(fd);
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if pipe.data > 0 {
                    // Pipe full: wait for room, do not poll for read.
                    cx.counters_mut().eagain += 1;
                    conn.flags |= ConnFlags::WAIT_ROOM;
                    break;
                }
                let state = cx.state(fd).unwrap_or_default();
                if state.intersects(FdState::SEEN_RDHUP | FdState::SEEN_HUP) {
                    // After a hang-up report an EAGAIN from splice is not
                    // an answer: some kernels (2.6.25 to 2.6.27.12) return
                    // it at a real shutdown, and the report itself may be
                    // spurious. The fd stays READY and the caller receives
                    // with recv, which tells: 0 (the end), bytes, or EAGAIN
                    // (the report was spurious: `Ctx::would_block` forgets
                    // it and polls again).
                    cx.counters_mut().eagain += 1;
                } else if conn.flags.contains(ConnFlags::SPLICE_EMPTY) {
                    // Reported readable again, and splice still takes
                    // nothing: an event splice does not consume (bytes
                    // behind a TCP urgent mark). The fd stays READY: the
                    // caller receives with recv, which consumes it.
                    conn.flags.remove(ConnFlags::SPLICE_EMPTY);
                } else {
                    conn.flags |= ConnFlags::SPLICE_EMPTY;
                    cx.would_block(fd, FdState::RECV_READY);
                }
                break;
            }
            Err(e) => {
                splice_failed(cx, conn, &e);
                break;
            }
        }
    }
    done
}

/// Splices the pipe's bytes out to the socket. Returns the bytes moved.
/// On EBADF/ENOSYS/EINVAL it sets `NO_SPLICE` and leaves the bytes in the
/// pipe; [`drain_pipe`] then moves them to a buffer for [`snd_buf`].
pub fn snd_pipe<S: SockOps, P: Poller>(ops: &mut S, cx: &mut Ctx<P>, conn: &mut Connection, pipe: &mut Pipe) -> usize {
    if !usable(conn, ConnFlags::SOCK_WR_SH) {
        return 0;
    }
    let fd = conn.fd();
    let mut done = 0;
    while pipe.data > 0 && !conn.flags.contains(ConnFlags::NO_SPLICE) {
        match cx.counted(ops).splice(pipe.read_fd(), fd, pipe.data) {
            Ok(0) => break,
            Ok(n) => {
                cx.mark_progress(fd);
                pipe.data -= n;
                done += n;
                conn.connected();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                cx.would_block(fd, FdState::SEND_READY);
                break;
            }
            Err(e) => {
                splice_failed(cx, conn, &e);
                break;
            }
        }
    }
    done
}

/// Moves bytes out of a pipe into `buf` with read(2), after splice failed
/// on the way out: the bytes spliced in are not lost. Returns how many.
pub fn drain_pipe<S: SockOps, P: Poller>(ops: &mut S, cx: &mut Ctx<P>, pipe: &mut Pipe, buf: &mut Buffer) -> usize {
    let mut done = 0;
    while pipe.data > 0 {
        let (first, _) = buf.free_slices();
        if first.is_empty() {
            break;
        }
        let want = first.len().min(pipe.data);
        match cx.counted(ops).read(pipe.read_fd(), &mut first[..want]) {
            Ok(0) => break,
            Ok(n) => {
                buf.commit(n);
                pipe.data -= n;
                done += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    done
}

/// Shuts the write side (once): shutdown(SHUT_WR), `SOCK_WR_SH`.
pub fn shut_write<S: SockOps, P: Poller>(ops: &mut S, cx: &mut Ctx<P>, conn: &mut Connection) {
    if conn.flags.contains(ConnFlags::SOCK_WR_SH) || !conn.flags.contains(ConnFlags::CTRL_READY) {
        return;
    }
    conn.flags |= ConnFlags::SOCK_WR_SH;
    if let Err(e) = cx.counted(ops).shutdown(conn.fd(), libc::SHUT_WR) {
        log::debug!("fd {}: shutdown(SHUT_WR): {e}", conn.fd());
    }
    cx.set_state(conn.fd(), FdState::SEND_SHUT, FdState::SEND_ACTIVE);
}
