//! Buffered connections for embedders (libevent's `bufferevent`).
//!
//! A [`BufConn`] puts an input buffer and a bounded output queue on a
//! [`Connection`] and a [`Transport`]: the owner reads lines or exact
//! counts from the input, queues bytes on the output, and the connection
//! moves them when the loop says the fd is ready. The owner's
//! [`Handler`](crate::Handler) passes its I/O events and timers on
//! ([`on_io`](BufConn::on_io), [`on_timer`](BufConn::on_timer)) and acts
//! on the [`Events`] they return.
//!
//! # States
//!
//! ```text
//!   connect() ──> CONNECTING ──writable, SO_ERROR 0──> OPEN ──(CONNECTED)
//!                     │  └────refused, timeout─────> CLOSED (ERROR|CLOSED)
//!   accepted() ─────────────────────────────────────> OPEN
//!   OPEN ──shutdown_write()──> WR_SHUT_WANTED ──output empty──> WR_SHUT
//!   OPEN ──peer FIN──> RD_SH (READ_EOF, once; writes still allowed)
//!   OPEN ──close_when_flushed()──> FLUSHING ──output empty──> shut_write
//!        ──> LINGER (input read and dropped) ──peer FIN, error, linger
//!        timeout──> CLOSED (CLOSED)
//!   any ──hard error──> CLOSED (ERROR|CLOSED)      any ──close()──> CLOSED
//! ```
//!
//! * Input: read from the socket only while the input buffer has room:
//!   at its bound the fd is no longer polled for read (`stop_recv`), so a
//!   peer cannot make the process buffer more than `input_capacity`. The
//!   owner's reads ([`read_line`](BufConn::read_line),
//!   [`read_exact`](BufConn::read_exact), …) make room and resume it.
//! * Output: [`write`](BufConn::write) queues all of its bytes or none.
//!   Beyond the high watermark (the queue's capacity) it is refused with
//!   [`WriteError::Full`], which the caller must handle (drop, wait for
//!   [`Events::DRAINED`], or disconnect): a peer that does not read cannot
//!   make the process buffer without bound. Queued bytes are sent at once
//!   while the socket takes them (flush as you go); only the rest waits for
//!   writability. [`Events::DRAINED`] is reported once each time the queue
//!   falls to the low watermark or below after it was above it.
//! * Readiness: a transport that hides readiness
//!   ([`Transport::hides_readiness`]) is read again while it
//!   [`rcv_pending`](Transport::rcv_pending), before anything waits on the
//!   fd, and flushed while it [`snd_pending`](Transport::snd_pending), even
//!   with an empty queue. A short read is never taken as "drained" here;
//!   that rule is the transport's.
//! * Timeouts (loop timers): one timer per connection, set at the earliest
//!   deadline of those that apply (connect; read while input is wanted;
//!   write while output waits; idle; linger). Activity only moves the
//!   deadlines: a timer that fires early finds nothing expired and is set
//!   again, so a busy connection costs no timer operation per byte.
//!
//! # Example
//!
//! A client that connects, sends a line and reads the echoed line back
//! from a plain `std` server:
//!
//! ```
//! use anypoll::bufconn::{BufConn, Config, Events};
//! use anypoll::transport::RawSock;
//! use anypoll::{Ctx, EventLoop, Handler, IoEvent, TimerId};
//! use std::io::{BufRead, BufReader, Write};
//!
//! let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let addr = server.local_addr().unwrap();
//! let t = std::thread::spawn(move || {
//!     let (s, _) = server.accept().unwrap();
//!     let mut line = String::new();
//!     BufReader::new(&s).read_line(&mut line).unwrap();
//!     (&s).write_all(format!("echo {line}").as_bytes()).unwrap();
//! });
//!
//! struct Client {
//!     conn: BufConn<RawSock>,
//!     got: Vec<u8>,
//! }
//! impl Handler for Client {
//!     fn io(&mut self, cx: &mut Ctx, _ev: IoEvent) {
//!         let ev = self.conn.on_io(cx);
//!         if ev.contains(Events::CONNECTED) {
//!             self.conn.write(cx, b"hello\n").unwrap();
//!         }
//!         if self.conn.read_line(cx, &mut self.got).is_some() || ev.contains(Events::CLOSED) {
//!             cx.stop();
//!         }
//!     }
//!     fn timer(&mut self, cx: &mut Ctx, id: TimerId, _data: u64) {
//!         if self.conn.on_timer(cx, id).contains(Events::CLOSED) {
//!             cx.stop();
//!         }
//!     }
//! }
//!
//! let mut el = EventLoop::from_env().unwrap();
//! let conn = BufConn::connect(el.cx(), addr, 7, RawSock, Config::default()).unwrap();
//! let mut client = Client { conn, got: Vec::new() };
//! el.run(&mut client).unwrap();
//! assert_eq!(client.got, b"echo hello\n");
//! assert_eq!(client.conn.counters().bytes_out, 6);
//! client.conn.close(el.cx());
//! t.join().unwrap();
//! ```

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Instant;

use anypoll_backends::Poller;

use crate::buffer::Buffer;
use crate::connection::{ConnError, ConnFlags, ConnectStatus, Connection};
use crate::raw_sock::SendFlags;
use crate::sockops::{Real, SockOps};
use crate::transport::Transport;
use crate::{Ctx, FdState, TimerId};

mod timeouts;
mod types;

pub use types::{BufCounters, Config, Events, Timeout, WriteError};

/// Receive or send rounds per call at most, so one busy connection cannot
/// hold the loop; the loop calls again while the fd stays ready.
const MAX_ROUNDS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// Not closing.
    No,
    /// Send what is queued, then shut the write side, then linger.
    Flush,
    /// Write side shut; input is dropped until the peer's EOF.
    Linger(Instant),
}

/// A buffered connection over transport `T`; see the [module docs](self).
#[derive(Debug)]
pub struct BufConn<T: Transport, S: SockOps = Real> {
    conn: Connection,
    xprt: T,
    ops: S,
    cfg: Config,
    tag: u64,
    input: Buffer,
    output: Buffer,
    counters: BufCounters,
    close: Close,
    /// `shutdown_write` was asked; done once the queue is empty.
    shut_wanted: bool,
    /// READ_EOF was reported.
    eof_told: bool,
    /// Events of calls that return none (`write`), for the next `on_io`.
    pending: Events,
    /// The queue was above the low watermark: DRAINED is due on the way down.
    drain_armed: bool,
    /// Reading is stopped because the input is full.
    stalled: bool,
    timed_out: Option<Timeout>,
    /// Timeouts already told, until activity re-arms them.
    told_read: bool,
    told_write: bool,
    told_idle: bool,
    started: Instant,
    last_in: Instant,
    last_out: Instant,
    timer: Option<(TimerId, Instant)>,
}

impl<T: Transport> BufConn<T> {
    /// Wraps a connected socket (from accept), registers it for `owner`
    /// and initialises the transport. `owner` is also the data of its
    /// timers, so the owner's [`Handler::timer`](crate::Handler::timer)
    /// can route them.
    pub fn accepted<P: Poller>(cx: &mut Ctx<P>, sock: OwnedFd, owner: usize, xprt: T, cfg: Config) -> io::Result<Self> {
        BufConn::with_ops(cx, Connection::from_connected(sock), owner, xprt, Real, cfg)
    }

    /// Starts a non-blocking connect to `addr`. [`Events::CONNECTED`], or
    /// [`Events::ERROR`] with the [`ConnError`] (refused, unreachable,
    /// timeout), follows from [`on_io`](BufConn::on_io)/[`on_timer`](BufConn::on_timer).
    /// Writes made meanwhile are queued.
    pub fn connect<P: Poller>(
        cx: &mut Ctx<P>,
        addr: SocketAddr,
        owner: usize,
        xprt: T,
        cfg: Config,
    ) -> io::Result<Self> {
        BufConn::with_ops(cx, Connection::connect(addr)?, owner, xprt, Real, cfg)
    }
}

impl<T: Transport, S: SockOps> BufConn<T, S> {
    /// A buffered connection on `conn` (not yet registered), with its
    /// syscalls made through `ops` (tests script faults there).
    pub fn with_ops<P: Poller>(
        cx: &mut Ctx<P>,
        mut conn: Connection,
        owner: usize,
        mut xprt: T,
        ops: S,
        cfg: Config,
    ) -> io::Result<Self> {
        if cfg.output_low >= cfg.output_high || cfg.input_capacity == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "fd {}: buffered connection needs output_low < output_high and an input buffer (low {}, high {}, input {})",
                    conn.fd(),
                    cfg.output_low,
                    cfg.output_high,
                    cfg.input_capacity
                ),
            ));
        }
        conn.ctrl_init(cx, owner, FdState::RECV_ACTIVE | FdState::SEND_ACTIVE).map_err(|e| {
            io::Error::new(e.kind(), format!("fd {}: register the buffered connection: {e}", conn.fd()))
        })?;
        xprt.init(&mut conn);
        let now = Instant::now();
        let mut bc = BufConn {
            conn,
            xprt,
            ops,
            cfg,
            tag: owner as u64,
            input: Buffer::with_capacity(cfg.input_capacity),
            output: Buffer::with_capacity(cfg.output_high),
            counters: BufCounters::default(),
            close: Close::No,
            shut_wanted: false,
            eof_told: false,
            pending: Events::empty(),
            drain_armed: false,
            stalled: false,
            timed_out: None,
            told_read: false,
            told_write: false,
            told_idle: false,
            started: now,
            last_in: now,
            last_out: now,
            timer: None,
        };
        // Interests from the start: an idle accepted socket is not called
        // for its initial send readiness with nothing to send.
        bc.set_interests(cx);
        bc.arm(cx);
        Ok(bc)
    }

    /// The connection (its fd, flags and error).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
    /// The bounds and timeouts.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The transport.
    pub fn transport(&self) -> &T {
        &self.xprt
    }
    /// The counters.
    pub fn counters(&self) -> &BufCounters {
        &self.counters
    }
    /// The hard error, or [`ConnError::None`].
    pub fn error(&self) -> ConnError {
        self.conn.error()
    }
    /// The last timeout reported with [`Events::TIMEOUT`].
    pub fn timed_out(&self) -> Option<Timeout> {
        self.timed_out
    }
    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }
    /// Bytes waiting in the input buffer.
    pub fn input_len(&self) -> usize {
        self.input.len()
    }
    /// Bytes waiting in the output queue.
    pub fn output_len(&self) -> usize {
        self.output.len()
    }
    /// Whether the peer shut its side and the transport holds nothing more
    /// for us (no more input will come).
    pub fn read_eof(&self) -> bool {
        self.conn.flags.intersects(ConnFlags::SOCK_RD_SH | ConnFlags::ERROR) && !self.xprt.rcv_pending()
    }

    fn connecting(&self) -> bool {
        self.conn.flags.contains(ConnFlags::WAIT_L4_CONN)
    }

    // ----- input --------------------------------------------------------

    /// Moves the input up to and including the first `delim` to the end of
    /// `out`; returns its length (delimiter included), or `None` if no
    /// complete record is buffered.
    pub fn read_until<P: Poller>(&mut self, cx: &mut Ctx<P>, delim: u8, out: &mut Vec<u8>) -> Option<usize> {
        let at = self.input.find(delim)?;
        Some(self.take(cx, at + 1, out))
    }

    /// [`read_until`](BufConn::read_until) with `b'\n'`.
    pub fn read_line<P: Poller>(&mut self, cx: &mut Ctx<P>, out: &mut Vec<u8>) -> Option<usize> {
        self.read_until(cx, b'\n', out)
    }

    /// Moves exactly `n` bytes to the end of `out` if that many are
    /// buffered; otherwise takes nothing and returns false. `n` above the
    /// input capacity can never be satisfied: it returns false (and
    /// [`Events::INPUT_FULL`] tells the owner once the buffer is full).
    pub fn read_exact<P: Poller>(&mut self, cx: &mut Ctx<P>, n: usize, out: &mut Vec<u8>) -> bool {
        if self.input.len() < n {
            return false;
        }
        self.take(cx, n, out);
        true
    }

    /// Moves everything buffered to the end of `out`; returns how much.
    pub fn read_all<P: Poller>(&mut self, cx: &mut Ctx<P>, out: &mut Vec<u8>) -> usize {
        let n = self.input.len();
        self.take(cx, n, out)
    }

    fn take<P: Poller>(&mut self, cx: &mut Ctx<P>, n: usize, out: &mut Vec<u8>) -> usize {
        let n = self.input.take_into(n, out);
        if self.stalled && n > 0 {
            // Room again: resume reading. The fd may still be READY (it was
            // not drained) or the transport may hold bytes: either way a
            // call is scheduled without waiting for a new event.
            self.stalled = false;
            self.set_interests(cx);
            if self.xprt.rcv_pending() {
                cx.may_recv(self.conn.fd());
            }
        }
        n
    }

    // ----- output -------------------------------------------------------

    /// Queues all of `data`, or none of it, and sends what the socket
    /// takes now. Refused beyond the high watermark ([`WriteError::Full`]:
    /// the caller must handle it), or once the write side is shut or
    /// shutting ([`WriteError::Closed`]).
    pub fn write<P: Poller>(&mut self, cx: &mut Ctx<P>, data: &[u8]) -> Result<(), WriteError> {
        if self.shut_wanted
            || self.close != Close::No
            || self.conn.flags.intersects(ConnFlags::SOCK_WR_SH | ConnFlags::ERROR)
        {
            return Err(WriteError::Closed);
        }
        if data.len() > self.output.free() {
            self.flush(cx); // make room with what the socket takes now
        }
        if data.len() > self.output.free() {
            self.counters.refused += 1;
            self.drain_armed = true;
            self.set_interests(cx);
            return Err(WriteError::Full { room: self.output.free() });
        }
        if self.output.is_empty() {
            // Output starts waiting now: the write timeout counts from here.
            self.last_out = Instant::now();
        }
        self.output.write_from(data);
        self.flush(cx);
        let ev = self.after(cx);
        if ev.contains(Events::CLOSED) {
            return Err(WriteError::Closed); // the send failed: error() says why
        }
        self.pending |= ev; // told by the next on_io/on_timer
        Ok(())
    }

    /// Room left under the high watermark.
    pub fn output_room(&self) -> usize {
        self.output.free()
    }

    /// Shuts the write side once the queue is sent (half-close): the peer
    /// reads everything queued, then EOF. Reading goes on. Returns what
    /// happened meanwhile ([`Events::CLOSED`] if a send failed).
    pub fn shutdown_write<P: Poller>(&mut self, cx: &mut Ctx<P>) -> Events {
        self.shut_wanted = true;
        self.flush(cx);
        self.after(cx)
    }

    /// Flush-then-close: every queued byte is sent, then the write side is
    /// shut, then the peer's input is read and dropped until its EOF (or
    /// `linger`), then the connection is closed and [`Events::CLOSED`]
    /// reported. Returns that set if it closed at once.
    pub fn close_when_flushed<P: Poller>(&mut self, cx: &mut Ctx<P>) -> Events {
        if self.close == Close::No {
            self.close = Close::Flush;
        }
        self.shut_wanted = true;
        self.flush(cx);
        self.after(cx)
    }

    /// Closes at once (queued output is dropped): deregisters and closes
    /// the socket, cancels the timer. Idempotent.
    pub fn close<P: Poller>(&mut self, cx: &mut Ctx<P>) {
        if let Some((id, _)) = self.timer.take() {
            cx.cancel_timer(id);
        }
        self.xprt.close(&mut self.conn);
        self.conn.force_close(cx);
    }

    // ----- events -------------------------------------------------------

    /// Handles an I/O event of this connection's fd: settles a pending
    /// connect, sends, receives, sends again, and sets the interests.
    pub fn on_io<P: Poller>(&mut self, cx: &mut Ctx<P>) -> Events {
        if self.conn.is_closed() {
            return Events::empty();
        }
        let mut ev = std::mem::take(&mut self.pending);
        if self.connecting() {
            match self.conn.confirm_connect(&mut self.ops, cx) {
                ConnectStatus::Pending => {
                    self.set_interests(cx);
                    return ev;
                }
                ConnectStatus::Failed => return self.fail(cx),
                ConnectStatus::Connected => {
                    ev |= Events::CONNECTED;
                    self.last_in = Instant::now();
                    self.last_out = self.last_in;
                }
            }
        }
        self.flush(cx);
        ev |= self.receive(cx);
        ev | self.after(cx)
    }

    fn fail<P: Poller>(&mut self, cx: &mut Ctx<P>) -> Events {
        log::debug!("fd {} ({}): {}", self.conn.fd(), self.xprt.name(), self.conn.error());
        self.close(cx);
        Events::ERROR | Events::CLOSED
    }

    /// Receives while the input has room and the fd (or the transport)
    /// has bytes, bounded in rounds.
    fn receive<P: Poller>(&mut self, cx: &mut Ctx<P>) -> Events {
        let fd = self.conn.fd();
        let mut ev = Events::empty();
        for _ in 0..MAX_ROUNDS {
            // A transport that hides readiness may still hold bytes read
            // before the shutdown: they are delivered first.
            if self.conn.flags.contains(ConnFlags::ERROR)
                || (self.conn.flags.contains(ConnFlags::SOCK_RD_SH) && !self.xprt.rcv_pending())
            {
                break;
            }
            let ready = cx.state(fd).unwrap_or_default().contains(FdState::RECV_READY);
            if !ready && !self.xprt.rcv_pending() {
                break;
            }
            if self.input.is_full() {
                self.stall(cx);
                break;
            }
            let max = self.input.free();
            self.counters.rcv_calls += 1;
            let n = self.xprt.rcv_buf(&mut self.ops, cx, &mut self.conn, &mut self.input, max);
            self.conn.flags.remove(ConnFlags::WAIT_ROOM);
            if n == 0 {
                break; // would block, shut, or an error: the flags say which
            }
            self.counters.bytes_in += n as u64;
            self.last_in = Instant::now();
            self.told_read = false;
            self.told_idle = false;
            if let Close::Linger(_) = self.close {
                self.counters.dropped_in += n as u64;
                self.input.consume(n);
            } else {
                ev |= Events::READABLE;
            }
        }
        if self.xprt.rcv_pending() && !self.input.is_full() && !self.read_eof() {
            // Rounds ran out with bytes inside the transport, which the
            // fd's readiness does not show: come back without a wait.
            cx.may_recv(fd);
        }
        if self.input.is_full() {
            self.stall(cx);
            ev |= Events::INPUT_FULL;
        }
        ev
    }

    fn stall<P: Poller>(&mut self, cx: &mut Ctx<P>) {
        if !self.stalled {
            self.stalled = true;
            self.counters.input_stalls += 1;
            self.set_interests(cx);
        }
    }

    /// Sends the queue (and the transport's own bytes) while the socket
    /// takes them, bounded in rounds.
    fn flush<P: Poller>(&mut self, cx: &mut Ctx<P>) {
        if self.connecting() || self.conn.is_closed() {
            return;
        }
        let fd = self.conn.fd();
        for _ in 0..MAX_ROUNDS {
            if self.conn.flags.intersects(ConnFlags::SOCK_WR_SH | ConnFlags::ERROR)
                || !cx.state(fd).unwrap_or_default().contains(FdState::SEND_READY)
                || (self.output.is_empty() && !self.xprt.snd_pending())
            {
                break;
            }
            let len = self.output.len();
            self.counters.snd_calls += 1;
            let n = self.xprt.snd_buf(&mut self.ops, cx, &mut self.conn, &mut self.output, len, SendFlags::empty());
            if n == 0 {
                break;
            }
            self.counters.bytes_out += n as u64;
            self.last_out = Instant::now();
            self.told_write = false;
            self.told_idle = false;
        }
    }

    /// What follows any I/O: the half-close and close steps, DRAINED,
    /// READ_EOF, the interests and the timer.
    fn after<P: Poller>(&mut self, cx: &mut Ctx<P>) -> Events {
        let mut ev = Events::empty();
        if self.conn.is_closed() {
            return ev;
        }
        if self.conn.flags.contains(ConnFlags::ERROR) {
            return self.fail(cx);
        }
        let sent_all = self.output.is_empty() && !self.xprt.snd_pending();
        if self.shut_wanted && sent_all && !self.connecting() && !self.conn.flags.contains(ConnFlags::SOCK_WR_SH) {
            self.xprt.shut_write(&mut self.ops, cx, &mut self.conn);
        }
        if self.close == Close::Flush && self.conn.flags.contains(ConnFlags::SOCK_WR_SH) {
            self.close = Close::Linger(Instant::now());
            self.input.consume(self.input.len()); // the owner gave up on it
        }
        if self.output.len() > self.cfg.output_low {
            self.drain_armed = true;
        } else if self.drain_armed {
            self.drain_armed = false;
            ev |= Events::DRAINED;
        }
        if self.read_eof() {
            if let Close::Linger(_) = self.close {
                self.close(cx);
                return ev | Events::CLOSED;
            }
            if !self.eof_told {
                self.eof_told = true;
                ev |= Events::READ_EOF;
            }
        }
        self.set_interests(cx);
        self.arm(cx);
        ev
    }

    fn set_interests<P: Poller>(&self, cx: &mut Ctx<P>) {
        if !self.conn.flags.contains(ConnFlags::CTRL_READY) {
            return;
        }
        let fd = self.conn.fd();
        let shut = |f| self.conn.flags.intersects(f | ConnFlags::ERROR);
        // Bytes the transport holds are read even after the socket's EOF.
        let more_in = !shut(ConnFlags::SOCK_RD_SH) || (self.xprt.rcv_pending() && !shut(ConnFlags::empty()));
        if more_in && !self.input.is_full() {
            cx.want_recv(fd);
        } else {
            cx.stop_recv(fd);
        }
        let pending = !self.output.is_empty() || self.xprt.snd_pending() || self.shut_wanted;
        if self.connecting() || (pending && !shut(ConnFlags::SOCK_WR_SH)) {
            cx.want_send(fd);
        } else {
            cx.stop_send(fd);
        }
    }
}
