//! TLS as a second [`Transport`] (feature `tls`), over rustls with the
//! ring provider: server and client sides, the handshake driven through
//! the loop without blocking.
//!
//! # Driving it
//!
//! A [`Tls`] is the per-connection session; it is handed the connection's
//! [`SockOps`] and the loop's [`Ctx`] on every call, like [`RawSock`](crate::transport::RawSock), and
//! makes every socket syscall through them (so fault injection and syscall
//! counting cover it).
//!
//! * **Handshake.** [`rcv_buf`](Transport::rcv_buf) and
//!   [`snd_buf`](Transport::snd_buf) drive it; there is no separate call.
//!   While [`snd_pending`](Transport::snd_pending) is true (a client's
//!   first flight, the server's reply, alerts, `close_notify`) the owner
//!   keeps the send direction active and calls `snd_buf` (an empty buffer
//!   is fine). While [`Tls::is_handshaking`] is true the owner should run
//!   a handshake timeout of its own: a peer that stops in the middle keeps
//!   the connection pending, never failed, until the owner closes it.
//!   Plaintext given to `snd_buf` during the handshake is buffered by
//!   rustls (bounded, 64 KiB) and sent once it completes.
//! * **Readiness.** TLS hides the fd's readiness
//!   ([`hides_readiness`](Transport::hides_readiness) is true): one record
//!   may carry more plaintext than the owner's buffer takes. Socket reads
//!   are never taken as "drained" because they were short (only an EAGAIN
//!   clears the fd's READY bit), and while [`rcv_pending`](Transport::rcv_pending)
//!   is true the owner calls `rcv_buf` again before waiting on the fd.
//! * **Splice.** None: the default `rcv_pipe`/`snd_pipe` set `NO_SPLICE`.
//! * **Close.** [`shut_write`](Transport::shut_write) queues `close_notify`
//!   (during the handshake: once it is done, after the plaintext given
//!   meanwhile) and shuts the socket's write side once it is flushed
//!   (`SOCK_WR_SH` is set then; `snd_pending` stays true until). The peer's `close_notify`
//!   is a read shutdown (`SOCK_RD_SH`); an EOF without it is
//!   [`ConnError::TlsTruncated`] (an error, logged once with the fd), or
//!   [`ConnError::TlsUnexpectedEof`] in the middle of the handshake.
//! * **Errors.** A failed handshake is [`ConnError::TlsHandshake`] (also
//!   plaintext sent to a TLS port), a refused certificate
//!   [`ConnError::TlsBadCert`] with the reason, an alert from the peer
//!   [`ConnError::TlsAlert`], a bad record later [`ConnError::TlsProtocol`].
//!   The alert rustls queues for the peer is flushed before the error is
//!   set. Each is logged once per connection, with the fd.
//!
//! # Example
//!
//! A handshake and one message each way, both ends in one loop, over a
//! socketpair (the certificate is made at run time: none is committed).
//!
//! ```
//! use anypoll::buffer::Buffer;
//! use anypoll::connection::Connection;
//! use anypoll::sockops::Real;
//! use anypoll::tls::{self, Tls};
//! use anypoll::transport::Transport;
//! use anypoll::{EventLoop, FdState};
//! use std::time::Duration;
//!
//! let ck = rcgen::generate_simple_self_signed(vec!["example.test".into()]).unwrap();
//! let cert = ck.cert.pem();
//! let key = ck.key_pair.serialize_pem();
//! let server_cfg = tls::server_config_pem(cert.as_bytes(), key.as_bytes(), "cert", "key").unwrap();
//! let client_cfg = tls::client_config_pem(cert.as_bytes(), "ca").unwrap();
//!
//! let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
//! a.set_nonblocking(true).unwrap();
//! b.set_nonblocking(true).unwrap();
//! let mut el = EventLoop::from_env().unwrap();
//! let cx = el.cx();
//! let mut sc = Connection::from_connected(a.into());
//! let mut cc = Connection::from_connected(b.into());
//! sc.ctrl_init(cx, 1, FdState::RECV_ACTIVE).unwrap();
//! cc.ctrl_init(cx, 2, FdState::RECV_ACTIVE).unwrap();
//! let mut st = Tls::server(server_cfg).unwrap();
//! let mut ct = Tls::client(client_cfg, "example.test").unwrap();
//! st.init(&mut sc);
//! ct.init(&mut cc);
//!
//! let mut out = Buffer::with_capacity(64);
//! out.write_from(b"ping");
//! let (mut sin, mut cin) = (Buffer::with_capacity(64), Buffer::with_capacity(64));
//! let mut empty = Buffer::with_capacity(1);
//! for _ in 0..100 {
//!     // Each end: flush what it has, then read what came (no blocking).
//!     ct.snd_buf(&mut Real, cx, &mut cc, &mut out, usize::MAX, Default::default());
//!     st.snd_buf(&mut Real, cx, &mut sc, &mut empty, 0, Default::default());
//!     st.rcv_buf(&mut Real, cx, &mut sc, &mut sin, usize::MAX);
//!     if sin.len() == 4 {
//!         break;
//!     }
//!     ct.rcv_buf(&mut Real, cx, &mut cc, &mut cin, usize::MAX);
//!     std::thread::sleep(Duration::from_millis(1));
//! }
//! assert!(!st.is_handshaking() && !ct.is_handshaking());
//! let mut got = [0u8; 4];
//! sin.read_into(&mut got);
//! assert_eq!(&got, b"ping");
//! ```

mod config;
mod errors;
mod sock;

use std::io::{self, Read, Write};
use std::sync::Arc;

use anypoll_backends::Poller;

pub use config::{client_config, client_config_pem, server_config, server_config_pem};
pub use rustls;

use crate::buffer::Buffer;
use crate::connection::{ConnError, ConnFlags, Connection};
use crate::raw_sock::{self, usable, SendFlags};
use crate::sockops::SockOps;
use crate::transport::Transport;
use crate::{Ctx, FdState};
use sock::{End, SockIo};

/// Plaintext handed to rustls per step of `snd_buf`: one record's worth,
/// so at most about one record is buffered beyond what the socket took.
const CHUNK: usize = 16 * 1024;

/// Socket reads per `rcv_buf` call at most: a peer that keeps the socket
/// full cannot keep one call (and the loop) for itself. The fd stays READY,
/// so the loop calls the owner again.
const MAX_READS: usize = 64;

/// A TLS session over one connection: the [`Transport`] for TLS. See the
/// [module docs](self).
#[derive(Debug)]
pub struct Tls {
    tls: rustls::Connection,
    /// Plaintext rustls holds for the owner, as of the last look.
    plain: usize,
    /// The peer's input ended (its `close_notify`, or the socket's EOF)
    /// and the owner was not told yet.
    end_pending: bool,
    /// The owner asked for `shut_write`.
    shut: bool,
    /// `close_notify` is queued. Not before the handshake is done: rustls
    /// sends plaintext given during the handshake only once it completes,
    /// so a `close_notify` queued earlier would go out before it (the
    /// peer would see the end before the data), and a fatal alert after
    /// it (a refused certificate) trips rustls's debug assertion.
    notified: bool,
    /// The socket's write side is shut (after `close_notify` went out).
    shut_done: bool,
    /// An error was logged for this connection.
    logged: bool,
}

impl Tls {
    fn new(tls: rustls::Connection) -> Tls {
        Tls { tls, plain: 0, end_pending: false, shut: false, notified: false, shut_done: false, logged: false }
    }

    /// The server side of a session, with `config` (see [`server_config`]).
    pub fn server(config: Arc<rustls::ServerConfig>) -> io::Result<Tls> {
        let conn = rustls::ServerConnection::new(config).map_err(|e| io::Error::other(format!("tls server: {e}")))?;
        Ok(Tls::new(conn.into()))
    }

    /// The client side of a session that verifies the server's certificate
    /// for `server_name` (a DNS name or an IP address) with `config` (see
    /// [`client_config`]). Its first flight is queued at once:
    /// [`snd_pending`](Transport::snd_pending) is true.
    pub fn client(config: Arc<rustls::ClientConfig>, server_name: &str) -> io::Result<Tls> {
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("tls server name {server_name:?}: {e}"))
        })?;
        let conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| io::Error::other(format!("tls client for {server_name}: {e}")))?;
        Ok(Tls::new(conn.into()))
    }

    /// Whether the handshake is still running. The owner runs its
    /// handshake timeout while this is true (a stalled peer is never
    /// failed by the transport itself).
    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// The rustls session (negotiated version, ALPN, peer certificates).
    pub fn session(&self) -> &rustls::Connection {
        &self.tls
    }

    /// Records a TLS error, logged once with the fd and `detail` (rustls's
    /// words), then flushes the alert rustls queued for the peer (best
    /// effort: the error set first stays the connection's error).
    fn fail<S: SockOps, P: Poller>(
        &mut self,
        ops: &mut S,
        cx: &mut Ctx<P>,
        conn: &mut Connection,
        err: ConnError,
        detail: &dyn std::fmt::Display,
    ) {
        let could_write = usable(conn, ConnFlags::SOCK_WR_SH);
        if !self.logged {
            self.logged = true;
            let side = if matches!(self.tls, rustls::Connection::Server(_)) { "server" } else { "client" };
            log::info!("fd {}: tls {side}: {err} ({detail})", conn.fd());
        }
        self.plain = 0;
        self.end_pending = false;
        conn.set_error(err);
        if could_write {
            self.flush(ops, cx, conn);
        }
    }

    /// Writes what rustls has queued. Returns true when nothing is left.
    /// Once `close_notify` is out after `shut_write`, shuts the socket's
    /// write side.
    fn flush<S: SockOps, P: Poller>(&mut self, ops: &mut S, cx: &mut Ctx<P>, conn: &mut Connection) -> bool {
        let fd = conn.fd();
        if self.shut && !self.notified && !self.tls.is_handshaking() {
            self.notified = true;
            self.tls.send_close_notify();
        }
        while self.tls.wants_write() {
            let mut io = SockIo::new(ops, cx, fd, conn.flags.contains(ConnFlags::WAIT_L4_CONN));
            let r = self.tls.write_tls(&mut io);
            let (end, moved) = (io.end, io.moved);
            if moved {
                conn.connected();
            }
            match r {
                Ok(n) if n > 0 => {}
                _ => {
                    if let End::Error(e) = end {
                        conn.set_error(e);
                    }
                    return false;
                }
            }
        }
        if self.notified && !self.shut_done {
            self.shut_done = true;
            raw_sock::shut_write(ops, cx, conn);
        }
        true
    }

    /// The peer's input ended cleanly (its `close_notify`): a read shutdown.
    fn read_shut<P: Poller>(&mut self, cx: &mut Ctx<P>, conn: &mut Connection) {
        self.end_pending = false;
        self.plain = 0;
        conn.connected();
        conn.flags |= ConnFlags::SOCK_RD_SH;
        cx.set_state(conn.fd(), FdState::RECV_SHUT, FdState::empty());
    }

    /// The readiness TLS hides: while rustls holds plaintext (or an end of
    /// input) for the owner, the fd stays recv-READY, and bytes delivered
    /// from rustls's buffer count as progress, so the loop calls the owner
    /// again without waiting on the socket, which may have nothing more to
    /// say. A call that delivered nothing (the owner's buffer is full) is
    /// no progress: the loop does not call again until the owner changes
    /// something, so a full buffer cannot spin.
    fn keep_ready<P: Poller>(&self, cx: &mut Ctx<P>, fd: std::os::fd::RawFd, delivered: usize) {
        if self.rcv_pending() {
            cx.may_recv(fd);
        }
        if delivered > 0 {
            cx.mark_progress(fd);
        }
    }

    /// Hands buffered plaintext to `buf`, at most `max` bytes. Returns the
    /// bytes and whether the input is finished (ended, or failed).
    fn deliver<S: SockOps, P: Poller>(
        &mut self,
        ops: &mut S,
        cx: &mut Ctx<P>,
        conn: &mut Connection,
        buf: &mut Buffer,
        max: usize,
    ) -> (usize, bool) {
        let mut done = 0;
        while done < max {
            let (first, _) = buf.free_slices();
            if first.is_empty() {
                break;
            }
            let want = first.len().min(max - done);
            match self.tls.reader().read(&mut first[..want]) {
                Ok(0) => {
                    self.read_shut(cx, conn);
                    return (done, true);
                }
                Ok(n) => {
                    buf.commit(n);
                    done += n;
                    self.plain = self.plain.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.plain = 0;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    // rustls's words here are long; ours say it all.
                    self.fail(ops, cx, conn, ConnError::TlsTruncated, &"the socket's EOF came first");
                    return (done, true);
                }
                Err(e) => {
                    self.fail(ops, cx, conn, ConnError::TlsProtocol, &e);
                    return (done, true);
                }
            }
        }
        (done, false)
    }
    /// One step of reading: rustls's own bytes out first if it wants
    /// that before reading (a handshake), then one socket read, processed.
    fn read_step<S: SockOps, P: Poller>(&mut self, ops: &mut S, cx: &mut Ctx<P>, conn: &mut Connection) -> Step {
        if !self.tls.wants_read() {
            // rustls first wants its own bytes out (handshake).
            if self.tls.wants_write() && self.flush(ops, cx, conn) && self.tls.wants_read() {
                return Step::Read;
            }
            return Step::Blocked;
        }
        let mut io = SockIo::new(ops, cx, conn.fd(), conn.flags.contains(ConnFlags::WAIT_L4_CONN));
        let r = self.tls.read_tls(&mut io);
        let (end, moved) = (io.end, io.moved);
        if moved || end == End::Eof {
            conn.connected();
        }
        match r {
            Ok(0) => {
                if self.tls.is_handshaking() {
                    self.fail(ops, cx, conn, ConnError::TlsUnexpectedEof, &"the socket's EOF");
                    return Step::Ended;
                }
                // Clean (`close_notify` came) or a truncation: the
                // reader tells, once the plaintext before it is out.
                self.end_pending = true;
                Step::Read
            }
            Ok(_) => match self.tls.process_new_packets() {
                Ok(state) => {
                    self.plain = state.plaintext_bytes_to_read();
                    if state.peer_has_closed() {
                        self.end_pending = true;
                    }
                    // Replies of the handshake, key updates, and a
                    // close_notify held back until the handshake ended.
                    if self.tls.wants_write() || (self.shut && !self.notified) {
                        self.flush(ops, cx, conn);
                    }
                    Step::Read
                }
                Err(e) => {
                    let err = errors::conn_error(&e, self.tls.is_handshaking());
                    self.fail(ops, cx, conn, err, &e);
                    Step::Ended
                }
            },
            Err(e) => match end {
                End::WouldBlock => Step::Blocked,
                End::Error(err) => {
                    conn.set_error(err);
                    Step::Ended
                }
                // rustls's own refusal (its plaintext buffer is
                // full): cannot happen, plaintext is drained first.
                End::Open | End::Eof => {
                    self.fail(ops, cx, conn, ConnError::TlsProtocol, &e);
                    Step::Ended
                }
            },
        }
    }

    /// Drives the handshake alone, taking no plaintext: for an owner that
    /// wants the handshake done before it has anywhere to put the peer's
    /// bytes (the relay connects to a server only then). Flushes what
    /// rustls has queued, then reads and processes records (at most
    /// `MAX_READS` socket reads) until the handshake is done or the socket
    /// has no more. Returns whether the handshake still runs.
    ///
    /// On a failure the connection's error is set (as by
    /// [`rcv_buf`](Transport::rcv_buf)) and the return is false. Once it is
    /// done, the plaintext that came in the same flight (a request sent
    /// right after the client's `Finished`) stays in rustls:
    /// [`rcv_pending`](Transport::rcv_pending) is true and the fd is kept
    /// recv-READY, so the next `rcv_buf` delivers it. While
    /// [`snd_pending`](Transport::snd_pending) is true, the owner keeps
    /// send wanted and calls this again when the fd is writable.
    pub fn handshake<S: SockOps, P: Poller>(&mut self, ops: &mut S, cx: &mut Ctx<P>, conn: &mut Connection) -> bool {
        if usable(conn, ConnFlags::SOCK_WR_SH) && self.tls.wants_write() {
            self.flush(ops, cx, conn);
        }
        for _ in 0..MAX_READS {
            if !self.tls.is_handshaking() || !usable(conn, ConnFlags::SOCK_RD_SH) {
                break;
            }
            if self.read_step(ops, cx, conn) != Step::Read {
                break;
            }
        }
        self.keep_ready(cx, conn.fd(), 0);
        self.tls.is_handshaking() && !conn.flags.contains(ConnFlags::ERROR)
    }
}

/// What one [`Tls::read_step`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Records were read (or rustls's bytes went out): read again.
    Read,
    /// Nothing more now: the socket would block, or rustls wants nothing.
    Blocked,
    /// The input is over: an error was set.
    Ended,
}

impl Transport for Tls {
    fn name(&self) -> &'static str {
        "tls"
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
        if !usable(conn, ConnFlags::SOCK_RD_SH) {
            return 0;
        }
        let fd = conn.fd();
        let mut done = 0;
        for _ in 0..MAX_READS {
            let (n, finished) = self.deliver(ops, cx, conn, buf, max - done);
            done += n;
            if finished {
                return done;
            }
            if done >= max || buf.is_full() {
                break;
            }
            match self.read_step(ops, cx, conn) {
                Step::Read => {}
                Step::Blocked => break,
                Step::Ended => return done,
            }
        }
        if buf.is_full() {
            conn.flags |= ConnFlags::WAIT_ROOM;
        }
        self.keep_ready(cx, fd, done);
        done
    }

    fn snd_buf<S: SockOps, P: Poller>(
        &mut self,
        ops: &mut S,
        cx: &mut Ctx<P>,
        conn: &mut Connection,
        buf: &mut Buffer,
        max: usize,
        _flags: SendFlags,
    ) -> usize {
        if !usable(conn, ConnFlags::SOCK_WR_SH) || !self.flush(ops, cx, conn) {
            return 0;
        }
        let mut done = 0;
        while !self.shut && done < max && !buf.is_empty() {
            let (first, _) = buf.data_slices();
            let n_try = first.len().min(max - done).min(CHUNK);
            let n = match self.tls.writer().write(&first[..n_try]) {
                Ok(n) => n,
                Err(e) => {
                    log::warn!("fd {}: tls: writer: {e}", conn.fd());
                    0
                }
            };
            if n == 0 {
                break; // rustls's buffer is full (during the handshake)
            }
            buf.consume(n);
            done += n;
            if !self.flush(ops, cx, conn) {
                break;
            }
        }
        done
    }

    fn shut_write<S: SockOps, P: Poller>(&mut self, ops: &mut S, cx: &mut Ctx<P>, conn: &mut Connection) {
        if conn.flags.contains(ConnFlags::SOCK_WR_SH) || !conn.flags.contains(ConnFlags::CTRL_READY) {
            return;
        }
        self.shut = true;
        self.flush(ops, cx, conn);
    }

    fn rcv_pending(&self) -> bool {
        self.plain > 0 || self.end_pending
    }

    fn snd_pending(&self) -> bool {
        // A close_notify held back by the handshake is not pending yet:
        // the socket being writable would not let it go.
        self.tls.wants_write() || (self.shut && !self.shut_done && !self.tls.is_handshaking())
    }
}
