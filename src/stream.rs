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

use std::time::Instant;

use anypoll_backends::Poller;

use crate::buffer::BufferPool;
use crate::channel::{Channel, INFINITE};
use crate::connection::{ConnError, ConnFlags, ConnectStatus, Connection};
use crate::pipe::PipePool;
use crate::raw_sock::{self, SendFlags};
use crate::sockops::SockOps;
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

/// Two connections and two channels.
///
/// End a stream with [`close`](Stream::close), which closes both
/// connections (deregistered, then closed) and gives the buffers and pipes
/// back to the pools. A stream dropped without it closes its connections
/// all the same, through the loop they are registered with, at its next
/// iteration (see [`Connection`]'s docs); its buffers and pipes are then
/// freed rather than pooled.
#[derive(Debug)]
pub struct Stream {
    /// The client side.
    pub front: Connection,
    /// The server side.
    pub back: Connection,
    /// Client → server.
    pub req: Channel,
    /// Server → client.
    pub res: Channel,
    /// The last time a byte moved.
    pub last_activity: Instant,
    splice: SpliceMode,
    outcome: Outcome,
}

impl Stream {
    /// A stream between two connections whose control layers the owner has
    /// already initialised (registered with the loop).
    pub fn new(front: Connection, back: Connection, splice: SpliceMode) -> Stream {
        Stream {
            front,
            back,
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
                    // Take what the client sends meanwhile; send nothing yet.
                    let moved =
                        forward(ops, cx, pools, self.splice, &mut self.front, &mut self.back, &mut self.req, true);
                    if moved {
                        self.last_activity = cx.now();
                    }
                    self.set_interests(cx);
                    return self.settle();
                }
                ConnectStatus::Connected => {}
            }
        }
        let a = forward(ops, cx, pools, self.splice, &mut self.front, &mut self.back, &mut self.req, false);
        let b = forward(ops, cx, pools, self.splice, &mut self.back, &mut self.front, &mut self.res, false);
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
        interest(cx, &self.front, &self.req, &self.res);
        if connecting {
            // Wait for the connect to end: writable, or an error.
            if self.back.flags.contains(ConnFlags::CTRL_READY) {
                cx.want_send(self.back.fd());
            }
        } else {
            interest(cx, &self.back, &self.res, &self.req);
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
        self.front.force_close(cx);
        self.back.force_close(cx);
        if self.outcome == Outcome::Running {
            self.outcome = Outcome::Finished;
        }
    }

    /// Replaces a back connection whose connect failed before anything was
    /// sent to it (a retry on another server): the request bytes waiting in
    /// `req` go to the new one.
    pub fn replace_back<P: Poller>(&mut self, cx: &mut Ctx<P>, back: Connection) {
        let mut old = std::mem::replace(&mut self.back, back);
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
/// (`inc`, which it consumes) has data.
fn interest<P: Poller>(cx: &mut Ctx<P>, conn: &Connection, out: &Channel, inc: &Channel) {
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
    if inc.pending() > 0 && !conn.flags.intersects(ConnFlags::SOCK_WR_SH | ConnFlags::ERROR) {
        cx.want_send(fd);
    } else {
        cx.stop_send(fd);
    }
}

fn state<P: Poller>(cx: &Ctx<P>, c: &Connection) -> FdState {
    cx.state(c.fd()).unwrap_or_default()
}

/// One direction: flush, receive, flush again, until nothing moves.
/// With `recv_only`, nothing is sent (the consumer is still connecting).
#[allow(clippy::too_many_arguments)]
fn forward<S: SockOps, P: Poller>(
    ops: &mut S,
    cx: &mut Ctx<P>,
    pools: &mut Pools,
    mode: SpliceMode,
    p: &mut Connection,
    c: &mut Connection,
    ch: &mut Channel,
    recv_only: bool,
) -> bool {
    let mut any = false;
    for _round in 0..64 {
        let mut moved = 0;
        if !recv_only && state(cx, c).contains(FdState::SEND_READY) {
            moved += flush(ops, cx, pools, c, ch);
        }
        // Room was made (or not): recompute WAIT_ROOM from the channel.
        let pipe_room = ch.pipe.as_ref().is_none_or(|pp| pp.data < pp.capacity);
        let buf_room = ch.buf.as_ref().is_none_or(|b| !b.is_full());
        // A pipe the consumer can no longer splice from is drained through
        // the buffer first: nothing newer may be received before it (order).
        // Bytes still in the pipe while either side fell back from splice:
        // nothing new is received until they are out, or newer bytes could
        // overtake them through the buffer.
        let draining = (c.flags.contains(ConnFlags::NO_SPLICE) || p.flags.contains(ConnFlags::NO_SPLICE))
            && ch.pipe.as_ref().is_some_and(|pp| pp.data > 0);
        // No room (a full pipe, a full buffer) is WAIT_ROOM
        // too, so the producer is not polled for read meanwhile.
        if draining || !(pipe_room && buf_room) {
            p.flags |= ConnFlags::WAIT_ROOM;
        } else {
            p.flags.remove(ConnFlags::WAIT_ROOM);
        }
        if !ch.eof && state(cx, p).contains(FdState::RECV_READY) && !p.flags.contains(ConnFlags::WAIT_ROOM) {
            let n = receive(ops, cx, pools, mode, p, c, ch);
            ch.received(n);
            moved += n;
            if p.flags.intersects(ConnFlags::SOCK_RD_SH | ConnFlags::ERROR) {
                ch.eof = true;
            }
        }
        if ch.eof && ch.pending() == 0 && !ch.shut_sent && !recv_only {
            raw_sock::shut_write(ops, cx, c);
            ch.shut_sent = true;
        }
        release(pools, ch);
        if moved == 0 {
            break;
        }
        any = true;
    }
    any
}

fn splice_ok(mode: SpliceMode, p: &Connection, c: &Connection, ch: &Channel) -> bool {
    SpliceMode::PLATFORM_HAS_SPLICE
        && mode != SpliceMode::Never
        && (mode == SpliceMode::Always || (ch.splice_allowed() && ch.streaming))
        && ch.buf.as_ref().is_none_or(|b| b.is_empty())
        && !p.flags.contains(ConnFlags::NO_SPLICE)
        && !c.flags.contains(ConnFlags::NO_SPLICE)
}

fn receive<S: SockOps, P: Poller>(
    ops: &mut S,
    cx: &mut Ctx<P>,
    pools: &mut Pools,
    mode: SpliceMode,
    p: &mut Connection,
    c: &Connection,
    ch: &mut Channel,
) -> usize {
    if splice_ok(mode, p, c, ch) {
        let pipe = match ch.pipe.take() {
            Some(pp) => pp,
            None => match pools.pipes.get() {
                Ok(pp) => pp,
                Err(e) => {
                    log::warn!("no pipe for splice ({e}); using buffers");
                    p.flags |= ConnFlags::NO_SPLICE;
                    return 0;
                }
            },
        };
        let mut pipe = pipe;
        let room = pipe.capacity.saturating_sub(pipe.data);
        let n = raw_sock::rcv_pipe(ops, cx, p, &mut pipe, ch.budget(room));
        ch.pipe = Some(pipe);
        // splice moved nothing yet left the fd READY: it could not consume
        // what the poller reported, so recv must (falls through below).
        let unconsumed = n == 0
            && state(cx, p).contains(FdState::RECV_READY)
            && !p.flags.intersects(ConnFlags::WAIT_ROOM | ConnFlags::SOCK_RD_SH | ConnFlags::ERROR);
        let pipe_holds_data = ch.pipe.as_ref().is_some_and(|pp| pp.data > 0);
        if (n > 0 || !p.flags.contains(ConnFlags::NO_SPLICE)) && !unconsumed || pipe_holds_data {
            // Older bytes wait in the pipe: recv must not put newer ones
            // in the buffer ahead of them.
            return n;
        }
        // Splice just failed on this connection, or could not consume the
        // event: fall through to recv.
    }
    let mut buf = ch.buf.take().unwrap_or_else(|| pools.bufs.get());
    let max = ch.budget(buf.free());
    let n = raw_sock::rcv_buf(ops, cx, p, &mut buf, max);
    if n > 0 && buf.is_full() {
        ch.streaming = true;
    }
    ch.buf = Some(buf);
    n
}

/// Sends what the channel holds: the pipe first (it was filled first), then
/// the buffer. A pipe whose splice out failed is drained into the buffer.
fn flush<S: SockOps, P: Poller>(
    ops: &mut S,
    cx: &mut Ctx<P>,
    pools: &mut Pools,
    c: &mut Connection,
    ch: &mut Channel,
) -> usize {
    let mut sent = 0;
    if let Some(pipe) = ch.pipe.as_mut() {
        if pipe.data > 0 && !c.flags.contains(ConnFlags::NO_SPLICE) {
            sent += raw_sock::snd_pipe(ops, cx, c, pipe);
        }
        if pipe.data > 0 && c.flags.contains(ConnFlags::NO_SPLICE) {
            // The pipe may hold more than the buffer: send the buffer as it
            // fills (it holds only bytes from this pipe, see `forward`), until
            // the pipe is empty or the socket is full.
            let buf = ch.buf.get_or_insert_with(|| pools.bufs.get());
            loop {
                raw_sock::drain_pipe(ops, cx, pipe, buf);
                if pipe.data == 0 || buf.is_empty() || !state(cx, c).contains(FdState::SEND_READY) {
                    break;
                }
                let len = buf.len();
                let n = raw_sock::snd_buf(ops, cx, c, buf, len, SendFlags::empty());
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
                sent += raw_sock::snd_buf(ops, cx, c, buf, len, SendFlags::empty());
            }
        }
    }
    ch.bytes_out += sent as u64;
    sent
}

fn release(pools: &mut Pools, ch: &mut Channel) {
    if ch.buf.as_ref().is_some_and(|b| b.is_empty()) {
        pools.bufs.put(ch.buf.take().expect("checked"));
    }
    if ch.pipe.as_ref().is_some_and(|p| p.data == 0) {
        pools.pipes.put(ch.pipe.take().expect("checked"));
    }
}
