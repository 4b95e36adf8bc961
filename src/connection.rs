//! Connections: a control layer (the socket fd and its registration), a
//! transport layer ([`raw_sock`](crate::raw_sock)) and the owner's data
//! layer on top.
//!
//! # Flags and lifecycle
//!
//! The state is always read from [`ConnFlags`], never from whether some
//! field is set:
//!
//! ```text
//!   new ──ctrl_init──> CTRL_READY ──xprt_init──> CTRL_READY|XPRT_READY
//!                          ^                              │
//!                          └────────── xprt_close ────────┘
//!   CTRL_READY ──ctrl_close──> (closed: no CTRL_READY, fd closed)
//! ```
//!
//! * `ctrl_init` registers the fd with the loop; `ctrl_close` deregisters
//!   and closes it. `xprt_init`/`xprt_close` bracket the transport. Each
//!   runs at most once per connection and only in this order: a second
//!   call, or a call out of order, does nothing and returns false.
//! * `full_close` closes the transport, then the control layer, **unless
//!   the transport is tracked** (`XPRT_TRACKED`: someone, e.g. a health
//!   check, still reads its result); then it does nothing and returns false.
//! * `force_close` closes both whatever the tracking: the error path.
//!
//! Socket state:
//!
//! * `WAIT_L4_CONN`: a non-blocking connect is pending. The transport
//!   clears it on any activity (data in or out); [`Connection::confirm_connect`]
//!   settles it from the poller's report, or, on a backend that reports no
//!   ERR/HUP (select), from `SO_ERROR`.
//! * `SOCK_RD_SH` / `SOCK_WR_SH`: read or write side shut (by the peer, by us, or by an error).
//! * `ERROR`: a hard error; [`Connection::error`] says which. A hard error
//!   also sets both shutdown flags.
//! * `WAIT_ROOM`: the transport could not take more input (pipe or buffer
//!   full); the owner should not poll for read until room is made.
//! * `NO_SPLICE`: splice failed with EBADF/ENOSYS on this connection; it
//!   uses recv/send from then on.
//! * `SPLICE_EMPTY`: the last splice in found nothing; a second such splice
//!   after a readable report hands the fd to recv (see `raw_sock::rcv_pipe`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Weak;

use anypoll_backends::Poller;

use crate::handle::Graveyard;
use crate::{Ctx, FdState};

bitflags::bitflags! {
    /// A connection's flags; see the [module docs](self).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct ConnFlags: u32 {
        /// The control layer is initialised: the fd is open and registered.
        const CTRL_READY = 1 << 0;
        /// The transport layer is initialised.
        const XPRT_READY = 1 << 1;
        /// Someone tracks the transport; `full_close` must wait.
        const XPRT_TRACKED = 1 << 2;
        /// A connect is pending.
        const WAIT_L4_CONN = 1 << 3;
        /// A hard error happened.
        const ERROR = 1 << 4;
        /// The read side is shut.
        const SOCK_RD_SH = 1 << 5;
        /// The write side is shut.
        const SOCK_WR_SH = 1 << 6;
        /// No room for more input: do not poll for read.
        const WAIT_ROOM = 1 << 7;
        /// Splice is disabled for this connection (it failed).
        const NO_SPLICE = 1 << 8;
        /// The control layer was closed (the fd is gone); never re-opened.
        const CTRL_CLOSED = 1 << 9;
        /// The transport was closed; never re-opened.
        const XPRT_CLOSED = 1 << 10;
        /// The connect was confirmed (or the socket came from accept).
        const L4_CONN = 1 << 11;
        /// The last splice in found nothing (EAGAIN, empty pipe). If the
        /// poller then reports the socket readable and splice again finds
        /// nothing, splice cannot take what is there (a TCP urgent mark
        /// stops it) and recv must consume it.
        const SPLICE_EMPTY = 1 << 12;
    }
}

/// Why a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnError {
    /// No error.
    #[default]
    None,
    /// ECONNREFUSED.
    Refused,
    /// ECONNRESET.
    Reset,
    /// EPIPE: write after the peer closed.
    BrokenPipe,
    /// ETIMEDOUT, or a phase timeout of the owner.
    Timeout,
    /// EHOSTUNREACH / ENETUNREACH.
    Unreachable,
    /// The poller reported an error but `SO_ERROR` held none: said
    /// explicitly rather than inventing an errno.
    PollErrNoErrno,
    /// Any other errno.
    Os(i32),
    /// The TLS handshake failed: not TLS (plaintext), a malformed or
    /// unexpected message, no protocol or cipher in common.
    TlsHandshake,
    /// The peer's TLS certificate was refused, and why.
    TlsBadCert(CertProblem),
    /// The peer sent a fatal TLS alert: its code (RFC 8446 §6), e.g. 48
    /// (unknown CA) when it refused our certificate.
    TlsAlert(u8),
    /// A TLS record after the handshake was malformed or failed to decrypt.
    TlsProtocol,
    /// The socket reached EOF in the middle of the TLS handshake.
    TlsUnexpectedEof,
    /// The socket reached EOF after the handshake without the peer's
    /// `close_notify`: the data may have been cut (a truncation, not a
    /// clean close).
    TlsTruncated,
}

/// Why a TLS certificate was refused ([`ConnError::TlsBadCert`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertProblem {
    /// Not issued by a trusted CA.
    UnknownIssuer,
    /// Past its `notAfter`.
    Expired,
    /// Before its `notBefore`.
    NotYetValid,
    /// Not valid for the name the client asked for.
    WrongName,
    /// Revoked.
    Revoked,
    /// A bad signature, a bad encoding or another refusal.
    Other,
}

impl std::fmt::Display for CertProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CertProblem::UnknownIssuer => "issued by an unknown CA",
            CertProblem::Expired => "expired",
            CertProblem::NotYetValid => "not valid yet",
            CertProblem::WrongName => "not valid for the server name",
            CertProblem::Revoked => "revoked",
            CertProblem::Other => "invalid",
        })
    }
}

impl ConnError {
    /// Maps an errno.
    pub fn from_errno(errno: i32) -> ConnError {
        match errno {
            0 => ConnError::None,
            libc::ECONNREFUSED => ConnError::Refused,
            libc::ECONNRESET => ConnError::Reset,
            libc::EPIPE => ConnError::BrokenPipe,
            libc::ETIMEDOUT => ConnError::Timeout,
            libc::EHOSTUNREACH | libc::ENETUNREACH => ConnError::Unreachable,
            e => ConnError::Os(e),
        }
    }

    /// Maps an I/O error (errno, or `Os(-1)` when it has none).
    pub fn from_io(e: &io::Error) -> ConnError {
        ConnError::from_errno(e.raw_os_error().unwrap_or(-1))
    }
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::None => f.write_str("no error"),
            ConnError::Refused => f.write_str("connection refused"),
            ConnError::Reset => f.write_str("connection reset by peer"),
            ConnError::BrokenPipe => f.write_str("broken pipe"),
            ConnError::Timeout => f.write_str("timed out"),
            ConnError::Unreachable => f.write_str("unreachable"),
            ConnError::PollErrNoErrno => f.write_str("the poller reported an error that SO_ERROR does not name"),
            ConnError::Os(e) => write!(f, "{}", io::Error::from_raw_os_error(*e)),
            ConnError::TlsHandshake => f.write_str("TLS handshake failed"),
            ConnError::TlsBadCert(why) => write!(f, "TLS certificate refused: {why}"),
            ConnError::TlsAlert(code) => write!(f, "the peer sent TLS alert {code}"),
            ConnError::TlsProtocol => f.write_str("bad TLS record"),
            ConnError::TlsUnexpectedEof => f.write_str("EOF in the middle of the TLS handshake"),
            ConnError::TlsTruncated => f.write_str("EOF without TLS close_notify (truncation)"),
        }
    }
}

/// What [`Connection::confirm_connect`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectStatus {
    /// Still connecting.
    Pending,
    /// Connected.
    Connected,
    /// Failed; see [`Connection::error`].
    Failed,
}

/// One socket connection. It owns its socket.
///
/// # Closing and drop
///
/// Close a connection with [`full_close`](Connection::full_close) or
/// [`force_close`](Connection::force_close) (or
/// [`Stream::close`](crate::stream::Stream::close) for both of a stream's):
/// they deregister the fd from the loop, then close it, at once.
///
/// Dropping a connection closes its socket too; nothing leaks. One that
/// was never registered is closed on the spot. One that is still
/// registered (`CTRL_READY`) cannot be deregistered without the loop's
/// [`Ctx`], so its socket is handed to the loop it was registered with,
/// which deregisters and closes it at the start of its next iteration
/// (until then the socket stays open, so its number cannot be reused under
/// the registration, and events already queued for it may still reach its
/// owner value). If that loop is gone, the socket is simply closed. The
/// same holds for a dropped [`Stream`](crate::stream::Stream), whose two
/// connections are dropped with it.
///
/// ```
/// use anypoll::connection::Connection;
/// use anypoll::{EventLoop, FdState};
/// use std::io::Read;
///
/// let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
/// let mut el = EventLoop::from_env().unwrap();
/// let mut conn = Connection::from_connected(a.into());
/// conn.ctrl_init(el.cx(), 1, FdState::RECV_ACTIVE).unwrap();
/// conn.force_close(el.cx()); // deregistered, then closed
/// assert!(conn.is_closed());
/// assert_eq!(el.cx().fd_count(), 0);
/// assert_eq!(b.read(&mut [0u8; 4]).unwrap(), 0); // the peer sees EOF
/// ```
#[derive(Debug)]
pub struct Connection {
    /// The socket, until the control layer closes it.
    sock: Option<OwnedFd>,
    /// Its number, kept after the close for the owner's bookkeeping.
    fd: RawFd,
    /// The flags; see the [module docs](self).
    pub flags: ConnFlags,
    err: ConnError,
    /// The loop it is registered with, to close it there if it is dropped.
    registered_with: Option<Weak<Graveyard>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let Some(sock) = self.sock.take() else { return };
        if !self.flags.contains(ConnFlags::CTRL_READY) {
            return; // never registered: `sock` closes here
        }
        match self.registered_with.as_ref().and_then(Weak::upgrade) {
            Some(graveyard) => graveyard.bury(sock),
            None => drop(sock), // the loop is gone, and its registration with it
        }
    }
}

impl Connection {
    /// Wraps a connected socket (from accept): L4 is up.
    pub fn from_connected(fd: OwnedFd) -> Connection {
        Connection {
            fd: fd.as_raw_fd(),
            sock: Some(fd),
            flags: ConnFlags::L4_CONN,
            err: ConnError::None,
            registered_with: None,
        }
    }

    /// Starts a non-blocking connect to `addr`. The connection is
    /// `WAIT_L4_CONN` until [`confirm_connect`](Connection::confirm_connect)
    /// settles it (an immediate success sets `L4_CONN` at once).
    pub fn connect(addr: SocketAddr) -> io::Result<Connection> {
        let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        // SAFETY: socket() with constant arguments; the result is checked.
        let s = unsafe { libc::socket(domain, libc::SOCK_STREAM, 0) };
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: s is a new socket that nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(s) };
        crate::sys::set_nonblock_cloexec(s)?;
        crate::sys::no_sigpipe(s)?;
        let (ss, len) = crate::sys::std_to_sockaddr(&addr);
        // SAFETY: `ss` holds a sockaddr of `len` bytes.
        let r = unsafe { libc::connect(s, (&ss as *const libc::sockaddr_storage).cast(), len) };
        let flags = if r == 0 {
            ConnFlags::L4_CONN
        } else {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(io::Error::new(e.kind(), format!("connect to {addr}: {e}")));
            }
            ConnFlags::WAIT_L4_CONN
        };
        Ok(Connection { fd: s, sock: Some(owned), flags, err: ConnError::None, registered_with: None })
    }

    /// The socket's number, the key of every loop call about it (still
    /// meaningful after close only as a number).
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// The socket, while it is open.
    pub fn sock(&self) -> Option<BorrowedFd<'_>> {
        self.sock.as_ref().map(|s| s.as_fd())
    }

    /// Why it failed, if it did.
    pub fn error(&self) -> ConnError {
        self.err
    }

    /// Records a hard error: ERROR and both shutdowns. The first error is
    /// kept; later ones are consequences.
    pub fn set_error(&mut self, err: ConnError) {
        if self.err == ConnError::None {
            self.err = err;
        }
        self.flags |= ConnFlags::ERROR | ConnFlags::SOCK_RD_SH | ConnFlags::SOCK_WR_SH;
        self.flags.remove(ConnFlags::WAIT_L4_CONN);
    }

    /// Registers the fd with the loop for `owner`, as a byte stream
    /// (`FdState::STREAM`: a connection is a stream socket). Connected
    /// sockets start send-READY (a send is tried before any poll); a
    /// pending connect waits for writability.
    pub fn ctrl_init<P: Poller>(&mut self, cx: &mut Ctx<P>, owner: usize, want: FdState) -> io::Result<bool> {
        if self.flags.intersects(ConnFlags::CTRL_READY | ConnFlags::CTRL_CLOSED) {
            return Ok(false);
        }
        let Some(sock) = &self.sock else { return Ok(false) };
        let ready = if self.flags.contains(ConnFlags::WAIT_L4_CONN) { FdState::empty() } else { FdState::SEND_READY };
        cx.register(sock, owner, want | ready | FdState::STREAM)?;
        self.registered_with = Some(cx.graveyard());
        self.flags |= ConnFlags::CTRL_READY;
        Ok(true)
    }

    /// Initialises the transport (after the control layer).
    pub fn xprt_init(&mut self) -> bool {
        if !self.flags.contains(ConnFlags::CTRL_READY)
            || self.flags.intersects(ConnFlags::XPRT_READY | ConnFlags::XPRT_CLOSED)
        {
            return false;
        }
        self.flags |= ConnFlags::XPRT_READY;
        true
    }

    /// Closes the transport (once).
    pub fn xprt_close(&mut self) -> bool {
        if !self.flags.contains(ConnFlags::XPRT_READY) {
            return false;
        }
        self.flags.remove(ConnFlags::XPRT_READY);
        self.flags |= ConnFlags::XPRT_CLOSED;
        true
    }

    /// Deregisters and closes the fd (once, and only after the transport).
    pub fn ctrl_close<P: Poller>(&mut self, cx: &mut Ctx<P>) -> bool {
        if !self.flags.contains(ConnFlags::CTRL_READY) || self.flags.contains(ConnFlags::XPRT_READY) {
            return false;
        }
        if let Some(sock) = self.sock.take() {
            if let Err(e) = cx.close(sock) {
                log::debug!("fd {}: close: {e}", self.fd);
            }
        }
        self.flags.remove(ConnFlags::CTRL_READY);
        self.flags |= ConnFlags::CTRL_CLOSED;
        true
    }

    /// Marks the transport tracked: `full_close` will not close it.
    pub fn track(&mut self) {
        self.flags |= ConnFlags::XPRT_TRACKED;
    }

    /// Ends the tracking.
    pub fn untrack(&mut self) {
        self.flags.remove(ConnFlags::XPRT_TRACKED);
    }

    /// Closes the transport then the control layer, unless the transport
    /// is tracked. Returns whether the connection is now closed.
    pub fn full_close<P: Poller>(&mut self, cx: &mut Ctx<P>) -> bool {
        if self.flags.contains(ConnFlags::XPRT_TRACKED) {
            return false;
        }
        self.force_close(cx);
        true
    }

    /// Closes everything, tracked or not.
    pub fn force_close<P: Poller>(&mut self, cx: &mut Ctx<P>) {
        self.xprt_close();
        if self.flags.contains(ConnFlags::CTRL_READY) {
            self.ctrl_close(cx);
        } else if !self.flags.contains(ConnFlags::CTRL_CLOSED) {
            // Never registered: just close the socket.
            drop(self.sock.take());
            self.flags |= ConnFlags::CTRL_CLOSED;
        }
    }

    /// Whether the fd is closed.
    pub fn is_closed(&self) -> bool {
        self.flags.contains(ConnFlags::CTRL_CLOSED)
    }

    /// Settles a pending connect. Call it when the fd is reported ready or
    /// in error while `WAIT_L4_CONN` is set.
    ///
    /// * ERROR reported: the connect failed; `SO_ERROR` (read once, since
    ///   reading clears it) names the errno, or the error is
    ///   [`ConnError::PollErrNoErrno`]. No recv is made.
    /// * HUP without ERR is not a failure (some Ubuntu 5.4/5.15 kernels
    ///   report it on a connect that succeeded): `SO_ERROR` decides.
    /// * On a backend without ERRHUP (select), readiness alone proves
    ///   nothing: `SO_ERROR` decides.
    /// * Otherwise WRITABLE means connected.
    pub fn confirm_connect<S: crate::sockops::SockOps, P: Poller>(
        &mut self,
        ops: &mut S,
        cx: &mut Ctx<P>,
    ) -> ConnectStatus {
        if !self.flags.contains(ConnFlags::WAIT_L4_CONN) {
            return if self.flags.contains(ConnFlags::ERROR) {
                ConnectStatus::Failed
            } else {
                ConnectStatus::Connected
            };
        }
        let state = cx.state(self.fd).unwrap_or_default();
        let last = cx.last_ready(self.fd).unwrap_or_default();
        let errhup = cx.capabilities().contains(anypoll_backends::Capabilities::ERRHUP);
        use anypoll_backends::Ready;
        let reported_error = state.contains(FdState::ERROR) || last.contains(Ready::ERROR);
        let must_ask = reported_error || !errhup || last.contains(Ready::HUP);
        if !must_ask {
            if state.contains(FdState::SEND_READY) || last.contains(Ready::WRITABLE) {
                self.connected();
                return ConnectStatus::Connected;
            }
            return ConnectStatus::Pending;
        }
        if !reported_error && !state.intersects(FdState::SEND_READY | FdState::RECV_READY) {
            return ConnectStatus::Pending;
        }
        cx.counters_mut().other += 1;
        match ops.so_error(self.fd) {
            Ok(0) if reported_error => {
                self.set_error(ConnError::PollErrNoErrno);
                ConnectStatus::Failed
            }
            Ok(0) => {
                // select: readable/writable and no error. Still connecting
                // is possible only if nothing was reported at all.
                if last.contains(Ready::HUP) {
                    // HUP without ERR on a connect that succeeded (Ubuntu
                    // 5.4/5.15): spurious, so it must not stay sticky.
                    cx.forget_hangup(self.fd);
                }
                self.connected();
                ConnectStatus::Connected
            }
            Ok(errno) => {
                self.set_error(ConnError::from_errno(errno));
                ConnectStatus::Failed
            }
            Err(e) => {
                self.set_error(ConnError::from_io(&e));
                ConnectStatus::Failed
            }
        }
    }

    /// Any sign of life from the socket: the connect is done.
    pub fn connected(&mut self) {
        if self.flags.contains(ConnFlags::WAIT_L4_CONN) {
            self.flags.remove(ConnFlags::WAIT_L4_CONN);
            self.flags |= ConnFlags::L4_CONN;
        }
    }
}
