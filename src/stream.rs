//! Streams: two-way forwarding between two connections, which the relay
//! runs for every client.
//!
//! A stream has a front connection (the client), a back connection (the
//! server) and two [`Channel`]s: `req` (front → back) and `res` (back →
//! front). [`Stream::process`] moves whatever can move in both directions,
//! then sets the fds' interests from what is left:
//!
//! * a producer is read only when its fd is READY (speculative I/O: the
//!   loop says so) and its channel has room; otherwise recv is not wanted,
//!   so a full channel is not polled (backpressure: at most one buffer or
//!   one pipe per direction);
//! * a consumer wants send only while its channel holds data;
//! * splice is used per direction when allowed (mode, platform, budget,
//!   no buffered bytes ahead of it so order is kept, neither side fell back);
//!   in `Auto` mode only once a receive filled the buffer (the direction
//!   streams), like HAProxy's streamer detection: short exchanges stay on
//!   recv/send;
//! * a producer's EOF is passed on as `shutdown(SHUT_WR)` to the consumer
//!   once its channel is empty (half-close, both ways);
//! * buffers and pipes go back to their pools as soon as they are empty;
//! * the stream is over when both directions have passed their EOF on, or
//!   at the first hard error; [`Stream::outcome`] says which.
//!
//! Timeouts per phase are the owner's (it holds the timers);
//! [`Stream::phase`] tells which one applies.
//!
//! # Transports
//!
//! A stream is generic over each side's [`Transport`]: `Stream<F, B>`, the
//! front's and the back's, both [`RawSock`] by default, so the calls are
//! static (no vtable on the hot path). Splice is used only between two
//! transports that [`can_splice`](Transport::can_splice); one without it
//! moves bytes through buffers. For a transport that
//! [hides readiness](Transport::hides_readiness) (TLS) the stream drains
//! what it holds ([`rcv_pending`](Transport::rcv_pending)) before it waits
//! on the fd, and flushes its own bytes
//! ([`snd_pending`](Transport::snd_pending)) even when the channel is empty.

use std::time::Instant;

use anypoll_backends::Poller;

use crate::buffer::Buffer;
use crate::buffer::BufferPool;
use crate::channel::{Channel, INFINITE};
use crate::connection::{ConnError, ConnFlags, ConnectStatus, Connection};
use crate::pipe::PipePool;
use crate::raw_sock::{self, SendFlags};
use crate::sockops::SockOps;
use crate::transport::{RawSock, Transport};
use crate::{Ctx, FdState};

/// When to splice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceMode {
    /// Where the platform has splice and the budget allows it.
    Auto,
    /// As `Auto`, but also for small budgets.
    Always,
    /// Never.
    Never,
}

impl SpliceMode {
    /// The mode from the environment: `ANYPOLL_NO_SPLICE=1` gives `Never`.
    pub fn from_env(default: SpliceMode) -> SpliceMode {
        match std::env::var("ANYPOLL_NO_SPLICE") {
            Ok(v) if !v.is_empty() && v != "0" => SpliceMode::Never,
            _ => default,
        }
    }

    /// Whether splice(2) exists on this platform at all.
    pub const PLATFORM_HAS_SPLICE: bool = cfg!(any(target_os = "linux", target_os = "android"));
}

/// Buffers and pipes shared by the streams of one loop.
#[derive(Debug)]
pub struct Pools {
    /// Buffers.
    pub bufs: BufferPool,
    /// Pipes.
    pub pipes: PipePool,
}

impl Pools {
    /// Pools of `bufsize`-byte buffers, keeping a few spares.
    pub fn new(bufsize: usize) -> Pools {
        Pools { bufs: BufferPool::new(bufsize, 64), pipes: PipePool::new(64) }
    }
}

/// Which timeout applies now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The back connection is connecting.
    Connect,
    /// Data is flowing (client and server idle timeouts apply).
    Data,
    /// Over.
    Done,
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still running.
    Running,
    /// Both directions ended cleanly.
    Finished,
    /// The connect to the server failed.
    ConnectFailed(ConnError),
    /// The client side failed.
    FrontError(ConnError),
    /// The server side failed.
    BackError(ConnError),
}

/// Two connections, each with its transport, and two channels.
///
/// `F` is the front's (client's) transport, `B` the back's (server's);
/// both are [`RawSock`] unless said otherwise, and [`Stream::new`] makes
/// such a stream. [`Stream::with_transports`] takes any two.
///
/// End a stream with [`close`](Stream::close), which closes both
/// transports, then both connections (deregistered, then closed), and
/// gives the buffers and pipes back to the pools. A stream dropped without
/// it closes its connections all the same, through the loop they are
/// registered with, at its next iteration (see [`Connection`]'s docs); its
/// buffers and pipes are then freed rather than pooled.
///
/// ```
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
/// use std::time::{Duration, Instant};
///
/// use anypoll::connection::Connection;
/// use anypoll::sockops::Real;
/// use anypoll::stream::{Outcome, Pools, SpliceMode, Stream};
/// use anypoll::transport::RawSock;
/// use anypoll::{Ctx, EventLoop, FdState, Handler, IoEvent};
///
/// // One handler value runs the stream for both of its fds.
/// struct Relay {
///     stream: Stream<RawSock, RawSock>,
///     pools: Pools,
/// }
/// impl Handler for Relay {
///     fn io(&mut self, cx: &mut Ctx, _ev: IoEvent) {
///         if self.stream.process(&mut Real, cx, &mut self.pools) != Outcome::Running {
///             self.stream.close(cx, &mut self.pools);
///             cx.stop();
///         }
///     }
/// }
///
/// // client <-> front ... back <-> server
/// let (mut client, front) = UnixStream::pair().unwrap();
/// let (back, mut server) = UnixStream::pair().unwrap();
/// front.set_nonblocking(true).unwrap();
/// back.set_nonblocking(true).unwrap();
/// let mut el = EventLoop::from_env().unwrap();
/// let mut fc = Connection::from_connected(front.into());
/// let mut bc = Connection::from_connected(back.into());
/// fc.ctrl_init(el.cx(), 0, FdState::RECV_ACTIVE).unwrap();
/// bc.ctrl_init(el.cx(), 1, FdState::RECV_ACTIVE).unwrap();
/// let stream = Stream::with_transports(fc, RawSock, bc, RawSock, SpliceMode::Never);
/// let mut relay = Relay { stream, pools: Pools::new(16 * 1024) };
///
/// // Both peers send and half-close; the stream passes bytes and EOFs on.
/// client.write_all(b"ping").unwrap();
/// client.shutdown(std::net::Shutdown::Write).unwrap();
/// server.write_all(b"pong").unwrap();
/// server.shutdown(std::net::Shutdown::Write).unwrap();
/// let deadline = Instant::now() + Duration::from_secs(10);
/// while !el.cx().is_stopping() {
///     assert!(Instant::now() < deadline, "stream stalled");
///     el.run_once(&mut relay, Some(Duration::from_millis(50))).unwrap();
/// }
/// assert_eq!(relay.stream.outcome(), Outcome::Finished);
/// let (mut up, mut down) = (Vec::new(), Vec::new());
/// server.read_to_end(&mut up).unwrap();
/// client.read_to_end(&mut down).unwrap();
/// assert_eq!((&up[..], &down[..]), (&b"ping"[..], &b"pong"[..]));
/// ```
#[derive(Debug)]
pub struct Stream<F: Transport = RawSock, B: Transport = RawSock> {
    /// The client side.
    pub front: Connection,
    /// The server side.
    pub back: Connection,
    /// The client side's transport.
    pub front_xprt: F,
    /// The server side's transport.
    pub back_xprt: B,
    /// Client → server.
    pub req: Channel,
    /// Server → client.
    pub res: Channel,
    /// The last time a byte moved.
    pub last_activity: Instant,
    splice: SpliceMode,
    outcome: Outcome,
}

impl Stream<RawSock, RawSock> {
    /// A plain-socket stream between two connections whose control layers
    /// the owner has already initialised (registered with the loop).
    pub fn new(front: Connection, back: Connection, splice: SpliceMode) -> Stream {
        Stream::with_transports(front, RawSock, back, RawSock, splice)
    }
}

/// One side of a direction: a connection and its transport.
struct Side<'a, T> {
    conn: &'a mut Connection,
    xprt: &'a mut T,
}

impl<'a, T> Side<'a, T> {
    fn of(conn: &'a mut Connection, xprt: &'a mut T) -> Side<'a, T> {
        Side { conn, xprt }
    }
}

impl<F: Transport, B: Transport> Stream<F, B> {
    /// A stream between two connections whose control layers the owner has
    /// already initialised (registered with the loop), each with its
    /// transport, which is initialised here ([`Transport::init`]; one the
    /// owner initialised already is left as it is).
    pub fn with_transports(
        mut front: Connection,
        mut front_xprt: F,
        mut back: Connection,
        mut back_xprt: B,
        splice: SpliceMode,
    ) -> Stream<F, B> {
        front_xprt.init(&mut front);
        back_xprt.init(&mut back);
        Stream {
            front,
            back,
            front_xprt,
            back_xprt,
            req: Channel::new(INFINITE),
            res: Channel::new(INFINITE),
            last_activity: Instant::now(),
            splice,
            outcome: Outcome::Running,
        }
    }

    /// How it ended, or `Running`.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The phase whose timeout applies.
    pub fn phase(&self) -> Phase {
        if self.outcome != Outcome::Running {
            Phase::Done
        } else if self.back.flags.contains(ConnFlags::WAIT_L4_CONN) {
            Phase::Connect
        } else {
            Phase::Data
        }
    }

    /// Moves data both ways as far as it can go now, and sets interests.
    /// Returns the outcome (`Running` while there is more to do).
    pub fn process<S: SockOps, P: Poller>(&mut self, ops: &mut S, cx: &mut Ctx<P>, pools: &mut Pools) -> Outcome {
        if self.outcome != Outcome::Running {
            return self.outcome;
        }
        if self.back.flags.contains(ConnFlags::WAIT_L4_CONN) {
            match self.back.confirm_connect(ops, cx) {
                ConnectStatus::Failed => {
                    self.outcome = Outcome::ConnectFailed(self.back.error());
                    return self.outcome;
                }
                ConnectStatus::Pending => {
                    // Take what the client sends meanwhile; send nothing yet
                    // to the server. The client's transport may have bytes
                    // of its own for the client (a handshake): those go.
                    let front = Side::of(&mut self.front, &mut self.front_xprt);
                    let back = Side::of(&mut self.back, &mut self.back_xprt);
                    let mut moved = forward(ops, cx, pools, self.splice, front, back, &mut self.req, true);
                    let mut front = Side::of(&mut self.front, &mut self.front_xprt);
                    if state(cx, front.conn).contains(FdState::SEND_READY) {
                        moved |= flush_own(ops, cx, &mut front, None) > 0;
                    }
                    if moved {
                        self.last_activity = cx.now();
                    }
                    self.set_interests(cx);
                    return self.settle();
                }
                ConnectStatus::Connected => {}
            }
        }
        let front = Side::of(&mut self.front, &mut self.front_xprt);
        let back = Side::of(&mut self.back, &mut self.back_xprt);
        let a = forward(ops, cx, pools, self.splice, front, back, &mut self.req, false);
        let front = Side::of(&mut self.front, &mut self.front_xprt);
        let back = Side::of(&mut self.back, &mut self.back_xprt);
        let b = forward(ops, cx, pools, self.splice, back, front, &mut self.res, false);
        if a || b {
            self.last_activity = cx.now();
        }
        self.set_interests(cx);
        self.settle()
    }

    fn settle(&mut self) -> Outcome {
        let err = |c: &Connection| c.flags.contains(ConnFlags::ERROR).then(|| c.error());
        // A producer's error ends its channel like an EOF would, once what
        // it sent is delivered; a consumer's error ends the stream at once.
        if let Some(e) = err(&self.front) {
            if self.req.pending() == 0 || self.back.flags.contains(ConnFlags::ERROR) {
                self.outcome = Outcome::FrontError(e);
            }
        }
        if let Some(e) = err(&self.back) {
            if self.res.pending() == 0 || self.front.flags.contains(ConnFlags::ERROR) {
                self.outcome = Outcome::BackError(e);
            }
        }
        if self.outcome == Outcome::Running && self.req.shut_sent && self.res.shut_sent {
            self.outcome = Outcome::Finished;
        }
        self.outcome
    }

    fn set_interests<P: Poller>(&self, cx: &mut Ctx<P>) {
        let connecting = self.back.flags.contains(ConnFlags::WAIT_L4_CONN);
        interest(cx, &self.front, &self.front_xprt, &self.req, &self.res);
        if connecting {
            // Wait for the connect to end: writable, or an error.
            if self.back.flags.contains(ConnFlags::CTRL_READY) {
                cx.want_send(self.back.fd());
            }
        } else {
            interest(cx, &self.back, &self.back_xprt, &self.res, &self.req);
        }
    }

    /// Releases the buffers and pipes (data in them is dropped: the caller
    /// logs why) and closes both connections.
    pub fn close<P: Poller>(&mut self, cx: &mut Ctx<P>, pools: &mut Pools) {
        for ch in [&mut self.req, &mut self.res] {
            if let Some(b) = ch.buf.take() {
                pools.bufs.put(b);
            }
            if let Some(p) = ch.pipe.take() {
                pools.pipes.put(p);
            }
        }
        self.front_xprt.close(&mut self.front);
        self.back_xprt.close(&mut self.back);
        self.front.force_close(cx);
        self.back.force_close(cx);
        if self.outcome == Outcome::Running {
            self.outcome = Outcome::Finished;
        }
    }

    /// Replaces a back connection whose connect failed before anything was
    /// sent to it (a retry on another server): the request bytes waiting in
    /// `req` go to the new one. Its transport is a new `B::default()` (see
    /// [`replace_back_with`](Stream::replace_back_with) for one of the
    /// owner's).
    pub fn replace_back<P: Poller>(&mut self, cx: &mut Ctx<P>, back: Connection)
    where
        B: Default,
    {
        self.replace_back_with(cx, back, B::default());
    }

    /// [`replace_back`](Stream::replace_back) with the new connection's
    /// transport, which is initialised here.
    pub fn replace_back_with<P: Poller>(&mut self, cx: &mut Ctx<P>, mut back: Connection, mut xprt: B) {
        xprt.init(&mut back);
        let mut old = std::mem::replace(&mut self.back, back);
        let mut old_xprt = std::mem::replace(&mut self.back_xprt, xprt);
        old_xprt.close(&mut old);
        old.force_close(cx);
        if matches!(self.outcome, Outcome::ConnectFailed(_)) {
            self.outcome = Outcome::Running;
        }
    }

    /// Marks the stream failed (e.g. a phase timeout of the owner).
    pub fn abort(&mut self, outcome: Outcome) {
        if self.outcome == Outcome::Running {
            self.outcome = outcome;
        }
    }
}

/// Sets `conn`'s interests: recv while its outgoing channel (`out`, which it
/// produces into) has room and no EOF; send while its incoming channel
/// (`inc`, which it consumes) has data, or its transport has bytes of its
/// own to send.
fn interest<T: Transport, P: Poller>(cx: &mut Ctx<P>, conn: &Connection, xprt: &T, out: &Channel, inc: &Channel) {
    if !conn.flags.contains(ConnFlags::CTRL_READY) {
        return;
    }
    let fd = conn.fd();
    let room = !conn.flags.contains(ConnFlags::WAIT_ROOM);
    if !out.eof && room && !conn.flags.intersects(ConnFlags::SOCK_RD_SH | ConnFlags::ERROR) {
        cx.want_recv(fd);
    } else {
        cx.stop_recv(fd);
    }
    let to_send = inc.pending() > 0 || xprt.snd_pending();
    if to_send && !conn.flags.intersects(ConnFlags::SOCK_WR_SH | ConnFlags::ERROR) {
        cx.want_send(fd);
    } else {
        cx.stop_send(fd);
    }
}

fn state<P: Poller>(cx: &Ctx<P>, c: &Connection) -> FdState {
    cx.state(c.fd()).unwrap_or_default()
}

/// Whether `p`'s transport holds bytes for its owner that the fd's
/// readiness does not show (the readiness rule of [`crate::transport`]).
fn held<T: Transport>(p: &Side<'_, T>) -> bool {
    p.xprt.hides_readiness() && p.xprt.rcv_pending()
}

/// One direction: flush, receive, flush again, until nothing moves.
/// With `recv_only`, nothing is sent (the consumer is still connecting).
/// A producer whose transport hides readiness is received from while it
/// holds bytes, READY or not.
#[allow(clippy::too_many_arguments)]
fn forward<S: SockOps, P: Poller, A: Transport, C: Transport>(
    ops: &mut S,
    cx: &mut Ctx<P>,
    pools: &mut Pools,
    mode: SpliceMode,
    mut p: Side<'_, A>,
    mut c: Side<'_, C>,
    ch: &mut Channel,
    recv_only: bool,
) -> bool {
    let mut any = false;
    for _round in 0..64 {
        let mut moved = 0;
        if !recv_only && state(cx, c.conn).contains(FdState::SEND_READY) {
            moved += flush(ops, cx, pools, &mut c, ch);
        }
        // Room was made (or not): recompute WAIT_ROOM from the channel.
        let pipe_room = ch.pipe.as_ref().is_none_or(|pp| pp.data < pp.capacity);
        let buf_room = ch.buf.as_ref().is_none_or(|b| !b.is_full());
        // A pipe the consumer can no longer splice from is drained through
        // the buffer first: nothing newer may be received before it (order).
        // Bytes still in the pipe while either side fell back from splice:
        // nothing new is received until they are out, or newer bytes could
        // overtake them through the buffer.
        let draining = (c.conn.flags.contains(ConnFlags::NO_SPLICE) || p.conn.flags.contains(ConnFlags::NO_SPLICE))
            && ch.pipe.as_ref().is_some_and(|pp| pp.data > 0);
        // No room (a full pipe, a full buffer) is WAIT_ROOM
        // too, so the producer is not polled for read meanwhile.
        if draining || !(pipe_room && buf_room) {
            p.conn.flags |= ConnFlags::WAIT_ROOM;
        } else {
            p.conn.flags.remove(ConnFlags::WAIT_ROOM);
        }
        let worth = state(cx, p.conn).contains(FdState::RECV_READY) || held(&p);
        if !ch.eof && worth && !p.conn.flags.contains(ConnFlags::WAIT_ROOM) {
            let n = receive(ops, cx, pools, mode, &mut p, &c, ch);
            ch.received(n);
            moved += n;
            if p.conn.flags.intersects(ConnFlags::SOCK_RD_SH | ConnFlags::ERROR) {
                ch.eof = true;
            }
        }
        if ch.eof && ch.pending() == 0 && !ch.shut_sent && !recv_only {
            c.xprt.shut_write(ops, cx, c.conn);
            ch.shut_sent = true;
        }
        release(pools, ch);
        if moved == 0 {
            break;
        }
        any = true;
    }
    // No rescheduling is needed when the round limit stops a transport
    // that still holds bytes: the last round received some, so the channel
    // is not empty and the consumer's send keeps the stream called (or the
    // channel is full, and room will call it).
    any
}

fn splice_ok<A: Transport, C: Transport>(mode: SpliceMode, p: &Side<'_, A>, c: &Side<'_, C>, ch: &Channel) -> bool {
    SpliceMode::PLATFORM_HAS_SPLICE
        && mode != SpliceMode::Never
        && p.xprt.can_splice()
        && c.xprt.can_splice()
        && (mode == SpliceMode::Always || (ch.splice_allowed() && ch.streaming))
        && ch.buf.as_ref().is_none_or(|b| b.is_empty())
        && !p.conn.flags.contains(ConnFlags::NO_SPLICE)
        && !c.conn.flags.contains(ConnFlags::NO_SPLICE)
}

fn receive<S: SockOps, P: Poller, A: Transport, C: Transport>(
    ops: &mut S,
    cx: &mut Ctx<P>,
    pools: &mut Pools,
    mode: SpliceMode,
    p: &mut Side<'_, A>,
    c: &Side<'_, C>,
    ch: &mut Channel,
) -> usize {
    if !held(p) && splice_ok(mode, p, c, ch) {
        let pipe = match ch.pipe.take() {
            Some(pp) => pp,
            None => match pools.pipes.get() {
                Ok(pp) => pp,
                Err(e) => {
                    log::warn!("fd {}: no pipe for splice ({e}); using buffers", p.conn.fd());
                    p.conn.flags |= ConnFlags::NO_SPLICE;
                    return 0;
                }
            },
        };
        let mut pipe = pipe;
        let room = pipe.capacity.saturating_sub(pipe.data);
        let n = p.xprt.rcv_pipe(ops, cx, p.conn, &mut pipe, ch.budget(room));
        ch.pipe = Some(pipe);
        // splice moved nothing yet left the fd READY: it could not consume
        // what the poller reported, so recv must (falls through below).
        let unconsumed = n == 0
            && state(cx, p.conn).contains(FdState::RECV_READY)
            && !p.conn.flags.intersects(ConnFlags::WAIT_ROOM | ConnFlags::SOCK_RD_SH | ConnFlags::ERROR);
        let pipe_holds_data = ch.pipe.as_ref().is_some_and(|pp| pp.data > 0);
        if (n > 0 || !p.conn.flags.contains(ConnFlags::NO_SPLICE)) && !unconsumed || pipe_holds_data {
            // Older bytes wait in the pipe: recv must not put newer ones
            // in the buffer ahead of them.
            return n;
        }
        // Splice just failed on this connection, or could not consume the
        // event: fall through to recv.
    }
    let mut buf = ch.buf.take().unwrap_or_else(|| pools.bufs.get());
    let max = ch.budget(buf.free());
    let n = p.xprt.rcv_buf(ops, cx, p.conn, &mut buf, max);
    if n > 0 && buf.is_full() {
        ch.streaming = true;
    }
    ch.buf = Some(buf);
    n
}

/// Sends what the channel holds: the pipe first (it was filled first), then
/// the buffer. A pipe whose splice out failed is drained into the buffer.
/// Then the transport's own bytes, if it has any left ([`flush_own`]).
fn flush<S: SockOps, P: Poller, C: Transport>(
    ops: &mut S,
    cx: &mut Ctx<P>,
    pools: &mut Pools,
    c: &mut Side<'_, C>,
    ch: &mut Channel,
) -> usize {
    let mut sent = 0;
    if let Some(pipe) = ch.pipe.as_mut() {
        if pipe.data > 0 && !c.conn.flags.contains(ConnFlags::NO_SPLICE) {
            sent += c.xprt.snd_pipe(ops, cx, c.conn, pipe);
        }
        if pipe.data > 0 && c.conn.flags.contains(ConnFlags::NO_SPLICE) {
            // The pipe may hold more than the buffer: send the buffer as it
            // fills (it holds only bytes from this pipe, see `forward`), until
            // the pipe is empty or the socket is full.
            let buf = ch.buf.get_or_insert_with(|| pools.bufs.get());
            loop {
                raw_sock::drain_pipe(ops, cx, pipe, buf);
                if pipe.data == 0 || buf.is_empty() || !state(cx, c.conn).contains(FdState::SEND_READY) {
                    break;
                }
                let len = buf.len();
                let n = c.xprt.snd_buf(ops, cx, c.conn, buf, len, SendFlags::empty());
                sent += n;
                if n == 0 {
                    break;
                }
            }
        }
    }
    let pipe_empty = ch.pipe.as_ref().is_none_or(|pp| pp.data == 0);
    if pipe_empty {
        if let Some(buf) = ch.buf.as_mut() {
            if !buf.is_empty() {
                let len = buf.len();
                sent += c.xprt.snd_buf(ops, cx, c.conn, buf, len, SendFlags::empty());
            }
        }
    }
    if pipe_empty && state(cx, c.conn).contains(FdState::SEND_READY) {
        sent += flush_own(ops, cx, c, ch.buf.as_mut());
    }
    ch.bytes_out += sent as u64;
    sent
}

/// Flushes the transport's own bytes ([`Transport::snd_pending`]: a
/// handshake, alerts, `close_notify`) with a [`snd_buf`](Transport::snd_buf)
/// of whatever `buf` holds, even nothing. Returns the owner's bytes sent
/// with them.
fn flush_own<S: SockOps, P: Poller, C: Transport>(
    ops: &mut S,
    cx: &mut Ctx<P>,
    c: &mut Side<'_, C>,
    buf: Option<&mut Buffer>,
) -> usize {
    if !c.xprt.snd_pending() {
        return 0;
    }
    let mut none = Buffer::with_capacity(0);
    let buf = buf.unwrap_or(&mut none);
    let len = buf.len();
    c.xprt.snd_buf(ops, cx, c.conn, buf, len, SendFlags::empty())
}

fn release(pools: &mut Pools, ch: &mut Channel) {
    if ch.buf.as_ref().is_some_and(|b| b.is_empty()) {
        pools.bufs.put(ch.buf.take().expect("checked"));
    }
    if ch.pipe.as_ref().is_some_and(|p| p.data == 0) {
        pools.pipes.put(ch.pipe.take().expect("checked"));
    }
}
