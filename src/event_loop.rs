//! The event loop: an fd table driven by one [`AnyPoller`], with timers, a
//! waker, signals and speculative I/O. The rules of the fd state live in
//! [`crate::fd`]; this file applies them.
//!
//! One iteration:
//!
//! 1. apply the update list (the only place that calls the poller's
//!    add/modify/delete for registered fds);
//! 2. wait: timeout 0 while an fd is runnable (ACTIVE and READY) without
//!    an event, else until the next timer;
//! 3. turn events into state (READY bits, sticky ERROR/HUP) and put their
//!    fds on the run list; drop stale events (generation mismatch);
//! 4. fire due timers, deliver a wake-up and signals;
//! 5. call the owner of each fd on the run list with the directions that
//!    are ACTIVE and READY. An owner that made progress and is still
//!    runnable is called again next iteration (speculatively, without a
//!    wait); one that did nothing is not called again until something new
//!    happens, so an ignored event can never become a busy loop.
//!
//! ```
//! use anypoll::{Ctx, EventLoop, FdState, Handler, Io, IoEvent};
//! use std::io::Write;
//! use std::os::unix::net::UnixStream;
//!
//! struct Reader { got: Vec<u8> }
//! impl Handler for Reader {
//!     fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
//!         let mut buf = [0u8; 64];
//!         loop {
//!             match cx.recv(ev.fd, &mut buf) {
//!                 Io::Done(n) => self.got.extend_from_slice(&buf[..n]),
//!                 Io::Closed => { cx.deregister(ev.fd).unwrap(); cx.stop(); return; }
//!                 Io::WouldBlock => return,
//!                 Io::Error(e) => panic!("{e}"),
//!             }
//!         }
//!     }
//! }
//!
//! let (mut a, b) = UnixStream::pair().unwrap();
//! b.set_nonblocking(true).unwrap();
//! let mut el = EventLoop::from_env().unwrap();
//! el.cx().register(&b, 0, FdState::RECV_ACTIVE).unwrap();
//! a.write_all(b"hello").unwrap();
//! drop(a);
//! let mut h = Reader { got: Vec::new() };
//! el.run(&mut h).unwrap();
//! assert_eq!(h.got, b"hello");
//! ```

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anypoll_backends::registry;
use anypoll_backends::{AnyPoller, Capabilities, Events, Interest, Poller, Token, Trigger, Waker};

use crate::counters::Counters;
use crate::error;
use crate::fd::{on_event, wanted, Directions, FdState, FdTable, Strategy};
use crate::handle::{self, LoopHandle, Task};
use crate::signal::{Signal, SignalPipe};
use crate::sockops::{Real, SockOps};
use crate::timer::{TimerId, Timers};

/// The token of the loop's own signal pipe. The pipe is not in the fd
/// table: it is registered with the poller directly, under a token that
/// [`pack`] never produces (the low half of a packed token is a
/// non-negative fd, so never all ones). Every owner value stays the
/// embedder's: none is reserved.
const SIGNAL_TOKEN: Token = Token(usize::MAX);

/// What the loop hands an owner.
#[derive(Debug, Clone, Copy)]
pub struct IoEvent {
    /// The fd.
    pub fd: RawFd,
    /// The owner value given at registration.
    pub owner: usize,
    /// The directions that are ACTIVE and READY now: worth an I/O attempt
    /// (see [`Directions`] for why this is not an `Interest` or a `Ready`).
    pub ready: Directions,
    /// The fd's whole state, sticky ERROR and hang-up bits included.
    pub state: FdState,
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

/// The owner side of the loop: one value holds every owner's state, and
/// each call gets a [`Ctx`] to change interests, do I/O and set timers.
pub trait Handler<P: Poller = AnyPoller> {
    /// An fd is ready in `ev.ready`.
    fn io(&mut self, cx: &mut Ctx<P>, ev: IoEvent);
    /// A timer set with [`Ctx::add_timer`] fired.
    fn timer(&mut self, cx: &mut Ctx<P>, id: TimerId, data: u64) {
        let _ = (cx, id, data);
    }
    /// A signal arrived (see [`EventLoop::handle_signals`]).
    fn signal(&mut self, cx: &mut Ctx<P>, signal: Signal) {
        let _ = (cx, signal);
    }
    /// A [`Waker`] woke the loop (after the work queued on a
    /// [`LoopHandle`] was done).
    fn wake(&mut self, cx: &mut Ctx<P>) {
        let _ = cx;
    }
    /// An fd queued with [`LoopHandle::register`] by another thread is now
    /// registered for `owner`; the handler owns it from here on (keep it
    /// until you [`close`](Ctx::close) it). The default closes it with a
    /// warning: a handler that takes fds from other threads overrides this.
    fn adopt(&mut self, cx: &mut Ctx<P>, fd: OwnedFd, owner: usize) {
        log::warn!(
            "fd {}: handed to the loop for owner {owner}, but the handler does not adopt fds: closing it",
            fd.as_raw_fd()
        );
        let _ = cx.close(fd);
    }
}

#[derive(Debug, Clone, Copy)]
enum TimerKind {
    User(u64),
    /// Re-enable recv on a paused fd (a listener after EMFILE).
    Resume(RawFd, u32),
}

/// Everything a handler may touch: the fd table, timers, counters, the
/// poller's identity. Obtained as the `cx` argument of [`Handler`] calls,
/// or from [`EventLoop::cx`] before the loop runs.
///
/// # Contract
///
/// An fd enters the loop as a borrowed fd ([`register`](Ctx::register),
/// `impl AsFd`) or an owned one ([`LoopHandle::register`]), and leaves it
/// as an owned one ([`close`](Ctx::close)) or by number
/// ([`deregister`](Ctx::deregister)). In between, every call names it by
/// its `RawFd` number, as [`IoEvent::fd`] does: the number is the key of
/// the fd table. These raw-fd calls are safe: the loop never turns a
/// number into an owner (no `OwnedFd::from_raw_fd` on it), and passes it
/// only to syscalls, which refuse a closed one. A number that is not
/// registered (negative ones included) is ignored by the state calls
/// (`set_state`, `want_*`, `may_*`, `done_*`, `inject_event`, …) and gives
/// `None` from the queries. The I/O calls (`recv`, `send`, `accept`) make
/// their syscall on the number whether or not it is registered: it is the
/// caller's to name an fd it uses (I/O on another owner's fd is not
/// undefined behaviour, but it is a bug), and a closed one gives EBADF.
#[derive(Debug)]
pub struct Ctx<P: Poller = AnyPoller> {
    poller: P,
    strategy: Strategy,
    /// The trigger a `STREAM` fd is registered with (rule 3 of [`crate::fd`]).
    stream_trigger: Trigger,
    fds: FdTable,
    timers: Timers<TimerKind>,
    counters: Counters,
    errors: HashMap<RawFd, io::Error>,
    stop: bool,
    now: Instant,
    /// A listener paused for EMFILE/ENFILE logs once per episode.
    pub(crate) emfile_logged: bool,
    /// Work queued by [`LoopHandle`]s.
    inbox: handle::Shared<P>,
    /// Connections dropped while registered leave their sockets here.
    graveyard: Arc<handle::Graveyard>,
}

impl<P: Poller> Drop for Ctx<P> {
    fn drop(&mut self) {
        // Handles that outlive the loop get an error instead of queueing
        // work nobody runs; what is queued (fds included) is dropped now.
        let tasks = {
            let mut inbox = handle::lock(&self.inbox);
            inbox.closed = true;
            std::mem::take(&mut inbox.tasks)
        };
        drop(tasks);
    }
}

/// The trigger an fd in `state` is registered with, under `strategy`
/// (rule 3 of [`crate::fd`]): `stream` for a `STREAM` fd under the level
/// strategy (edge where the backend can do it).
fn trigger_of(strategy: Strategy, stream: Trigger, state: FdState) -> Trigger {
    match strategy {
        Strategy::Edge => Trigger::Edge,
        Strategy::Level if state.contains(FdState::STREAM) => stream,
        Strategy::Level => Trigger::Level,
    }
}

fn pack(fd: RawFd, gen: u32) -> usize {
    // A generation tag needs 64 bits of token; on 32-bit targets the low
    // half of the generation still catches almost every reuse.
    ((u64::from(gen) << 32) | u64::from(fd as u32)) as usize
}

fn unpack(token: usize) -> (RawFd, u32) {
    let t = token as u64;
    (t as u32 as RawFd, (t >> 32) as u32)
}

impl<P: Poller> Ctx<P> {
    /// The backend's name.
    pub fn backend(&self) -> &'static str {
        self.poller.name()
    }
    /// The backend itself, to read what a backend of the embedder's own
    /// records. Read-only: the loop alone adds, modifies and deletes.
    pub fn poller(&self) -> &P {
        &self.poller
    }
    /// The backend's capabilities.
    pub fn capabilities(&self) -> Capabilities {
        self.poller.capabilities()
    }
    /// The strategy in use.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }
    /// The loop's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    /// The loop's counters, for layers that make their own syscalls.
    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }
    /// A waker for this loop, usable from any thread.
    ///
    /// ```
    /// use anypoll::{Ctx, EventLoop, Handler, IoEvent};
    ///
    /// struct Woken;
    /// impl Handler for Woken {
    ///     fn io(&mut self, _cx: &mut Ctx, _ev: IoEvent) {}
    ///     fn wake(&mut self, cx: &mut Ctx) {
    ///         cx.stop();
    ///     }
    /// }
    ///
    /// let mut el = EventLoop::from_env().unwrap();
    /// let waker = el.cx().waker();
    /// let t = std::thread::spawn(move || waker.wake().unwrap());
    /// el.run(&mut Woken).unwrap(); // no fd, no timer: only the wake-up ends it
    /// t.join().unwrap();
    /// ```
    pub fn waker(&self) -> Waker {
        self.poller.waker()
    }
    /// A handle for other threads, to queue fds and closures for this
    /// loop ([`LoopHandle`]).
    pub fn handle(&self) -> LoopHandle<P> {
        LoopHandle::new(self.inbox.clone(), self.poller.waker(), self.poller.name())
    }
    /// The time at the start of this iteration's dispatch.
    pub fn now(&self) -> Instant {
        self.now
    }
    /// Asks the loop to return from [`EventLoop::run`] after this iteration.
    pub fn stop(&mut self) {
        self.stop = true;
    }
    /// Whether [`stop`](Ctx::stop) was called.
    pub fn is_stopping(&self) -> bool {
        self.stop
    }
    /// How many fds are registered (the loop's own signal pipe, which is
    /// not in the fd table, excluded).
    pub fn fd_count(&self) -> usize {
        self.fds.len()
    }

    /// Registers `fd` for `owner` with an initial `state`, usually some of
    /// `RECV_ACTIVE`, `SEND_ACTIVE`, and `SEND_READY` for a connected socket
    /// (a send is tried before any poll). Directions that start ACTIVE and
    /// READY get a speculative call without a wait. The kernel is told at
    /// the next wait, in one batch, and only if needed. Add
    /// `FdState::STREAM` for a byte stream (TCP, Unix stream, pipe): under
    /// the level strategy it is then registered edge-triggered where the
    /// backend can (epoll, kqueue), which saves the kernel work per event
    /// (rule 3 of [`crate::fd`]). Never on a datagram socket or a listener.
    ///
    /// # Contract
    /// The loop watches `fd`; it does not own it (hand it over with
    /// [`LoopHandle::register`] or keep it, e.g. in a
    /// [`Connection`](crate::connection::Connection)). From here on the
    /// fd is named by its number ([`IoEvent::fd`], and every `Ctx` call
    /// that takes a `RawFd`). Keep it open until [`deregister`](Ctx::deregister)
    /// or [`close`](Ctx::close): an fd closed while registered is noticed
    /// only when the kernel refuses it (its owner then sees the ERROR bit,
    /// and the error, naming the operation, fd and backend, comes out of
    /// its next recv or [`take_error`](Ctx::take_error)), and until then
    /// its number may be reused by another fd. Registering a number that is
    /// still registered replaces the old registration.
    ///
    /// # Errors
    /// `InvalidInput` if the backend cannot watch this fd number (select and
    /// FD_SETSIZE), naming the fd and the backend.
    pub fn register(&mut self, fd: impl AsFd, owner: usize, state: FdState) -> io::Result<()> {
        self.register_raw(fd.as_fd().as_raw_fd(), owner, state)
    }

    /// [`register`](Ctx::register) by number: the handle's fds and the
    /// tests of fd.rs's negative case come through here.
    fn register_raw(&mut self, fd: RawFd, owner: usize, state: FdState) -> io::Result<()> {
        let backend = self.poller.name();
        if let Some(limit) = self.poller.fd_limit() {
            if fd >= limit {
                return Err(error::new(
                    "register",
                    Some(fd),
                    backend,
                    io::ErrorKind::InvalidInput,
                    &format!("cannot be watched: the backend watches fds below {limit} only"),
                ));
            }
        }
        if let Some(old) = self.fds.get(fd) {
            if old.polled.is_some() {
                // The number was registered and not deregistered: drop the
                // old kernel registration before the new one takes over.
                let _ = self.poller.delete(fd);
                self.counters.ctl += 1;
            }
        }
        self.errors.remove(&fd);
        if self.fds.insert(fd, owner, state).is_none() {
            return Err(error::new("register", Some(fd), backend, io::ErrorKind::InvalidInput, "not an fd (negative)"));
        }
        self.reschedule_if_runnable(fd);
        Ok(())
    }

    /// Stops watching `fd` and forgets it. Does not close it. Call it
    /// before closing an fd, or use [`close`](Ctx::close).
    ///
    /// # Errors
    /// `NotFound` for a number that is not registered (a negative one
    /// included); the kernel's error if it refuses the removal (the fd is
    /// forgotten all the same). Both name the operation, the fd and the
    /// backend, and the kernel's errno stays reachable
    /// ([`LoopError`](crate::LoopError)).
    pub fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        let backend = self.poller.name();
        let e = self.fds.remove(fd).ok_or_else(|| {
            error::new("deregister", Some(fd), backend, io::ErrorKind::NotFound, "not registered with the loop")
        })?;
        self.errors.remove(&fd);
        if e.polled.is_some() {
            self.counters.ctl += 1;
            self.poller.delete(fd).map_err(|err| error::wrap("deregister", Some(fd), backend, err))?;
        }
        Ok(())
    }

    /// Deregisters and closes `fd`, which the caller hands over.
    ///
    /// # Errors
    /// As [`deregister`](Ctx::deregister); the fd is closed in every case.
    pub fn close(&mut self, fd: OwnedFd) -> io::Result<()> {
        let r = self.deregister(fd.as_raw_fd());
        drop(fd);
        self.counters.other += 1;
        r
    }

    /// The state of `fd`.
    pub fn state(&self, fd: RawFd) -> Option<FdState> {
        self.fds.get(fd).map(|e| e.state)
    }

    /// What the poller reported last for `fd`.
    pub fn last_ready(&self, fd: RawFd) -> Option<anypoll_backends::Ready> {
        self.fds.get(fd).map(|e| e.last)
    }

    /// Applies `ready` to `fd` as if the poller had reported it, and
    /// schedules its owner: for tests that script poll flags the kernel
    /// cannot be made to produce (HUP without IN, ERR without errno), and
    /// for layers that learn readiness elsewhere.
    pub fn inject_event(&mut self, fd: RawFd, ready: anypoll_backends::Ready) {
        let Some(e) = self.fds.get_mut(fd) else { return };
        e.state = on_event(e.state, ready);
        e.last = ready;
        e.progress = true;
        self.fds.queue(fd);
        self.fds.schedule(fd);
    }

    /// Forgets a hang-up the poller reported for `fd`: the sticky
    /// `SEEN_HUP`/`SEEN_RDHUP` bits and the HUP/READ_CLOSED of its last
    /// report. For a HUP that proved spurious, such as the one some Ubuntu
    /// 5.4/5.15 kernels report on a connect that succeeded: without this the
    /// fd would never be polled again and its first read would take the
    /// read-shutdown path. A real hang-up is reported again at the next
    /// wait: the fd is re-registered even if what the kernel watches does
    /// not change, so that an edge-triggered kernel checks it anew.
    pub fn forget_hangup(&mut self, fd: RawFd) {
        let Some(e) = self.fds.get_mut(fd) else { return };
        e.last.remove(anypoll_backends::Ready::HUP | anypoll_backends::Ready::READ_CLOSED);
        e.rearm = true;
        self.fds.queue(fd);
        self.set_state(fd, FdState::empty(), FdState::SEEN_HUP | FdState::SEEN_RDHUP);
    }

    /// The owner value of `fd`.
    pub fn owner(&self, fd: RawFd) -> Option<usize> {
        self.fds.get(fd).map(|e| e.owner)
    }

    /// The error that made the loop set ERROR on `fd` itself (the backend
    /// refused it), if any. The fd's next recv returns it too (once), if
    /// it is not taken here first.
    pub fn take_error(&mut self, fd: RawFd) -> Option<io::Error> {
        self.errors.remove(&fd)
    }

    /// Where a [`Connection`](crate::connection::Connection) dropped while
    /// registered leaves its socket, for this loop to deregister and close
    /// at its next iteration. Weak: once the loop is gone, there is no
    /// registration left to undo, and the socket is simply closed.
    pub(crate) fn graveyard(&self) -> Weak<handle::Graveyard> {
        Arc::downgrade(&self.graveyard)
    }

    /// Deregisters and closes the sockets of connections that were dropped
    /// while registered.
    fn bury_dropped(&mut self) {
        for fd in self.graveyard.take() {
            log::debug!("fd {}: its connection was dropped while registered: closing it", fd.as_raw_fd());
            if let Err(e) = self.close(fd) {
                log::debug!("{e}");
            }
        }
    }

    /// Does the work [`LoopHandle`]s queued, in order, on the loop's thread.
    fn run_tasks<H: Handler<P>>(&mut self, handler: &mut H) {
        let tasks = std::mem::take(&mut handle::lock(&self.inbox).tasks);
        for task in tasks {
            match task {
                Task::Fd { fd, owner, state } => match self.register(&fd, owner, state) {
                    Ok(()) => handler.adopt(self, fd, owner),
                    Err(e) => {
                        log::warn!("{e}; closing the fd handed to the loop")
                    }
                },
                Task::Run(f) => f(self),
            }
        }
    }

    /// Watches the signal pipe's read end `fd` under [`SIGNAL_TOKEN`],
    /// outside the fd table. Level-triggered where the backend can; else
    /// edge, which is enough because the loop drains the pipe to EAGAIN.
    fn watch_signals(&mut self, fd: RawFd) -> io::Result<()> {
        let caps = self.poller.capabilities();
        let trigger = if caps.contains(Capabilities::LEVEL) { Trigger::Level } else { Trigger::Edge };
        self.counters.ctl += 1;
        self.poller.add(fd, SIGNAL_TOKEN, Interest::READ, trigger)
    }

    fn reschedule_if_runnable(&mut self, fd: RawFd) {
        if self.fds.get(fd).is_some_and(|e| !e.runnable().is_empty()) {
            self.fds.schedule(fd);
        }
    }

    /// Sets and clears state bits of `fd`, then schedules a speculative call
    /// if a direction became runnable. Every public state call goes here.
    pub fn set_state(&mut self, fd: RawFd, set: FdState, clear: FdState) {
        self.fds.change(fd, set, clear, false);
    }

    /// The owner wants to receive.
    pub fn want_recv(&mut self, fd: RawFd) {
        self.set_state(fd, FdState::RECV_ACTIVE, FdState::empty());
    }
    /// The owner no longer wants to receive.
    pub fn stop_recv(&mut self, fd: RawFd) {
        self.set_state(fd, FdState::empty(), FdState::RECV_ACTIVE);
    }
    /// The owner wants to send.
    pub fn want_send(&mut self, fd: RawFd) {
        self.set_state(fd, FdState::SEND_ACTIVE, FdState::empty());
    }
    /// The owner no longer wants to send.
    pub fn stop_send(&mut self, fd: RawFd) {
        self.set_state(fd, FdState::empty(), FdState::SEND_ACTIVE);
    }
    /// Declares that a recv is worth trying (without an event).
    pub fn may_recv(&mut self, fd: RawFd) {
        self.set_state(fd, FdState::RECV_READY, FdState::empty());
    }
    /// Declares that a send is worth trying (without an event).
    pub fn may_send(&mut self, fd: RawFd) {
        self.set_state(fd, FdState::SEND_READY, FdState::empty());
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
    /// which filters them in its `ops` ([`crate::raw_sock`]).
    pub fn recv_with<S: SockOps>(&mut self, ops: &mut S, fd: RawFd, buf: &mut [u8]) -> Io {
        let state = self.state(fd).unwrap_or_default();
        if state.contains(FdState::RECV_SHUT) || (state.contains(FdState::ERROR) && self.errors.contains_key(&fd)) {
            // Over, or refused by the backend: no syscall, the loop says how.
            return self.input_over(ops, fd);
        }
        loop {
            self.counters.reads += 1;
            match ops.recv(fd, buf, 0) {
                Ok(0) if !buf.is_empty() => {
                    self.set_state(fd, FdState::RECV_SHUT, FdState::empty());
                    return self.input_over(ops, fd);
                }
                Ok(n) if n < buf.len() => {
                    self.done_recv(fd);
                    return Io::Done(n);
                }
                Ok(n) => {
                    self.mark_progress(fd);
                    return Io::Done(n);
                }
                Err(e) => match self.io_error(fd, e, FdState::RECV_READY) {
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
        self.counters.other += 1;
        let e = match ops.so_error(fd) {
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
            self.counters.writes += 1;
            match ops.send(fd, buf, flags) {
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
                Err(e) => match self.io_error(fd, e, FdState::SEND_READY) {
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
    pub(crate) fn io_error(&mut self, fd: RawFd, e: io::Error, ready: FdState) -> Option<Io> {
        if e.kind() == io::ErrorKind::Interrupted {
            return None;
        }
        if e.kind() == io::ErrorKind::WouldBlock {
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
            self.counters.accepts += 1;
            match crate::sys::accept(fd) {
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

    /// Stops receiving on `fd` for `pause`, then resumes (a listener after
    /// EMFILE: the pending connection stays queued, so a level-triggered
    /// listener would spin).
    pub fn pause_recv(&mut self, fd: RawFd, pause: Duration) {
        let Some(gen) = self.fds.get(fd).map(|e| e.gen) else { return };
        self.stop_recv(fd);
        let at = Instant::now() + pause;
        self.timers.add(at, TimerKind::Resume(fd, gen));
    }

    /// Sets a timer `after` from now; [`Handler::timer`] gets `data`.
    ///
    /// ```
    /// use anypoll::{Ctx, EventLoop, Handler, IoEvent, TimerId};
    /// use std::time::Duration;
    ///
    /// struct Clock {
    ///     fired: Vec<u64>,
    /// }
    /// impl Handler for Clock {
    ///     fn io(&mut self, _cx: &mut Ctx, _ev: IoEvent) {}
    ///     fn timer(&mut self, cx: &mut Ctx, _id: TimerId, data: u64) {
    ///         self.fired.push(data);
    ///         if cx.timer_count() == 0 {
    ///             cx.stop();
    ///         }
    ///     }
    /// }
    ///
    /// let mut el = EventLoop::from_env().unwrap();
    /// let cx = el.cx();
    /// cx.add_timer(Duration::from_millis(30), 3);
    /// cx.add_timer(Duration::from_millis(10), 1);
    /// let never = cx.add_timer(Duration::from_millis(5), 99);
    /// assert!(cx.cancel_timer(never));
    /// let later = cx.add_timer(Duration::from_millis(1), 2);
    /// cx.reschedule_timer(later, Duration::from_millis(20)).unwrap();
    /// let mut clock = Clock { fired: Vec::new() };
    /// el.run(&mut clock).unwrap();
    /// assert_eq!(clock.fired, [1, 2, 3]);
    /// ```
    pub fn add_timer(&mut self, after: Duration, data: u64) -> TimerId {
        self.timers.add(Instant::now() + after, TimerKind::User(data))
    }
    /// Sets a timer at `deadline`.
    pub fn add_timer_at(&mut self, deadline: Instant, data: u64) -> TimerId {
        self.timers.add(deadline, TimerKind::User(data))
    }
    /// Cancels a timer; false if it already fired or was cancelled.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.timers.cancel(id)
    }
    /// Moves a pending timer to `after` from now; returns its new id.
    pub fn reschedule_timer(&mut self, id: TimerId, after: Duration) -> Option<TimerId> {
        self.timers.reschedule(id, Instant::now() + after)
    }
    /// How many timers are pending (the loop's own included).
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Rule 2 of [`crate::fd`]: brings the kernel in line with the table
    /// for every fd on the update list.
    fn apply_updates(&mut self, spare: &mut Vec<RawFd>) {
        std::mem::swap(&mut self.fds.updates, spare);
        for &fd in spare.iter() {
            let Some(e) = self.fds.get_mut(fd) else { continue };
            if !e.queued {
                continue;
            }
            e.queued = false;
            let trigger = trigger_of(self.strategy, self.stream_trigger, e.state);
            // An owner that ignored its last call (no progress) ends the lazy
            // removal of rule 3: what it left READY is no longer polled.
            let lazy = if e.progress { e.polled } else { None };
            let want = wanted(e.state, lazy, self.strategy);
            let token = Token(pack(fd, e.gen));
            let rearm = std::mem::take(&mut e.rearm);
            let (op, result) = match e.polled {
                Some(now) if now == want && !rearm => continue,
                None if want.is_empty() => continue,
                None => ("add", self.poller.add(fd, token, want, trigger).map(|_| Some(want))),
                Some(_) if want.is_empty() => ("delete", self.poller.delete(fd).map(|_| None)),
                Some(_) => ("modify", self.poller.modify(fd, token, want, trigger).map(|_| Some(want))),
            };
            self.counters.ctl += 1;
            match result {
                Ok(polled) => {
                    if let Some(e) = self.fds.get_mut(fd) {
                        e.polled = polled;
                    }
                }
                Err(err) => {
                    let err = error::wrap(op, Some(fd), self.poller.name(), err);
                    log::warn!("{err}");
                    self.errors.insert(fd, err);
                    self.set_state(fd, FdState::ERROR | FdState::RECV_READY | FdState::SEND_READY, FdState::empty());
                }
            }
        }
        spare.clear();
    }
}

/// An event loop over one backend: the fd table, timers, signals and a
/// waker, driving one [`Handler`].
///
/// # Backends
///
/// `P` is any [`Poller`]. The default, [`AnyPoller`], is the registry's
/// run-time choice ([`from_env`](EventLoop::from_env),
/// [`with_backend`](EventLoop::with_backend), or
/// [`new`](EventLoop::new) with [`registry::choose`]); a backend of the
/// embedder's own plugs in through [`new`](EventLoop::new), and its
/// [`Handler`]s implement `Handler<TheirPoller>`.
///
/// # Threads
///
/// A loop is single-threaded by design: its fd table, its update and run
/// lists, its timers and its poller are touched by the thread that runs
/// it, without locks or atomics on the hot path, and a handler sees a
/// state no other thread can change under it between two calls (the
/// speculative I/O and lazy-removal rules of [`crate::fd`] depend on that).
/// This is also why [`Poller`] takes `&mut self`. A daemon scales with one
/// loop per thread (as HAProxy's threads do), each with its own fds.
///
/// Other threads hand work to a loop through a [`LoopHandle`]
/// ([`handle`](EventLoop::handle)): it queues an fd with its owner and
/// state, or a closure, and wakes the loop, which applies it on its own
/// thread between two waits. An acceptor thread feeding worker loops is
/// the model case. A [`Waker`] ([`Ctx::waker`]) only wakes.
///
/// # Errors
///
/// Errors from the loop's own syscalls (the wait, and the kernel's
/// refusal of a registration) keep the original `io::Error` as their
/// source, with its errno, and name the operation, the fd and the backend
/// in their message.
#[derive(Debug)]
pub struct EventLoop<P: Poller = AnyPoller> {
    cx: Ctx<P>,
    events: Events,
    signals: Option<SignalPipe>,
    sigbuf: Vec<Signal>,
    spare: Vec<RawFd>,
    run: Vec<RawFd>,
}

impl EventLoop<AnyPoller> {
    /// A loop on the backend chosen by `ANYPOLL_POLLER` or the best
    /// available, with the strategy chosen from its capabilities.
    ///
    /// # Errors
    /// The registry's [`SelectError`](registry::SelectError), converted: it
    /// names the backend asked for, where the name came from, and what is
    /// available here.
    pub fn from_env() -> io::Result<EventLoop> {
        let (poller, _) = registry::choose(None, None)?;
        EventLoop::new(poller, None)
    }

    /// A loop on the backend called `name` (`"epoll"`, `"poll"`, …), with
    /// the strategy chosen from its capabilities. The name is chosen by the
    /// same registry code as `--poller` and `ANYPOLL_POLLER` (a name given
    /// here wins over both), with the same errors.
    ///
    /// # Errors
    /// `InvalidInput` for a name that is unknown here, the backend's own
    /// error when it cannot be created; the message names the backend and
    /// the ones available.
    ///
    /// ```
    /// use anypoll::EventLoop;
    ///
    /// let mut el = EventLoop::with_backend("poll").unwrap();
    /// assert_eq!(el.cx().backend(), "poll");
    /// let err = EventLoop::with_backend("nope").unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// assert!(err.to_string().contains("unknown poller 'nope'"), "{err}");
    /// assert!(err.to_string().contains("available here"), "{err}");
    /// ```
    pub fn with_backend(name: &str) -> io::Result<EventLoop> {
        let (poller, _) = registry::choose(Some(name), None)?;
        EventLoop::new(poller, None)
    }

    /// Re-creates the poller after `fork()` in the child, and registers every
    /// fd again. Without it the child shares the parent's epoll or kqueue
    /// set, and fds the child closed keep waking both: 100% CPU.
    pub fn after_fork(&mut self) -> io::Result<()> {
        let name = self.cx.poller.name();
        self.cx.poller = registry::create(name, registry::Source::Api)?;
        if let Some(pipe) = &self.signals {
            self.cx.watch_signals(pipe.fd())?;
        }
        let fds: Vec<RawFd> = self.cx.fds.iter().map(|(fd, _)| fd).collect();
        for fd in fds {
            self.cx.fds.get_mut(fd).expect("listed").polled = None;
            self.cx.fds.queue(fd);
        }
        Ok(())
    }
}

impl<P: Poller> EventLoop<P> {
    /// A loop on `poller`: any [`Poller`], one of the registry's
    /// ([`AnyPoller`]) or a backend of the embedder's own. `strategy` forces level or edge; `None` picks
    /// level where the backend has it (a short read then proves the fd
    /// drained, saving the EAGAIN read that edge needs), else edge.
    ///
    /// # Errors
    /// `Unsupported` when the forced strategy is not one the backend can do
    /// (edge on poll, select or event ports); the message names both.
    ///
    /// ```
    /// use anypoll::backends::registry;
    /// use anypoll::{EventLoop, Strategy};
    ///
    /// let (poll, _) = registry::choose(Some("poll"), None).unwrap();
    /// let err = EventLoop::new(poll, Some(Strategy::Edge)).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::Unsupported);
    /// assert!(err.to_string().contains("poll") && err.to_string().contains("edge"));
    ///
    /// let (poll, _) = registry::choose(Some("poll"), None).unwrap();
    /// let mut el = EventLoop::new(poll, None).unwrap();
    /// assert_eq!(el.cx().strategy(), Strategy::Level);
    /// ```
    pub fn new(poller: P, strategy: Option<Strategy>) -> io::Result<EventLoop<P>> {
        let caps = poller.capabilities();
        let strategy = match strategy {
            Some(Strategy::Edge) if !caps.contains(Capabilities::EDGE) => {
                return Err(anypoll_backends::unsupported_trigger(poller.name(), caps, Trigger::Edge))
            }
            Some(Strategy::Level) if !caps.contains(Capabilities::LEVEL) => {
                return Err(anypoll_backends::unsupported_trigger(poller.name(), caps, Trigger::Level))
            }
            Some(s) => s,
            None if caps.contains(Capabilities::LEVEL) => Strategy::Level,
            None => Strategy::Edge,
        };
        crate::sys::ignore_sigpipe();
        Ok(EventLoop {
            cx: Ctx {
                poller,
                strategy,
                stream_trigger: if caps.contains(Capabilities::EDGE | Capabilities::RDHUP) {
                    Trigger::Edge
                } else {
                    Trigger::Level
                },
                fds: FdTable::new(strategy),
                timers: Timers::new(),
                counters: Counters::default(),
                errors: HashMap::new(),
                stop: false,
                now: Instant::now(),
                emfile_logged: false,
                inbox: handle::shared(),
                graveyard: Arc::default(),
            },
            events: Events::with_capacity(1024),
            signals: None,
            sigbuf: Vec::new(),
            spare: Vec::new(),
            run: Vec::new(),
        })
    }

    /// The context, to register fds and set timers before running.
    pub fn cx(&mut self) -> &mut Ctx<P> {
        &mut self.cx
    }

    /// A `Send` handle for other threads ([`LoopHandle`]): it queues fds
    /// and closures for this loop and wakes it.
    pub fn handle(&self) -> LoopHandle<P> {
        self.cx.handle()
    }

    /// Delivers `signals` to [`Handler::signal`], through a self-pipe the
    /// loop watches (see [`crate::signal`]). One loop per process may do
    /// this (dispositions are per process); dropping the loop restores the
    /// previous dispositions.
    ///
    /// # Errors
    /// `AlreadyExists` when another loop of the process handles signals.
    ///
    /// ```
    /// use anypoll::{Ctx, EventLoop, Handler, IoEvent, Signal};
    ///
    /// struct Daemon {
    ///     got: Option<Signal>,
    /// }
    /// impl Handler for Daemon {
    ///     fn io(&mut self, _cx: &mut Ctx, _ev: IoEvent) {}
    ///     fn signal(&mut self, cx: &mut Ctx, signal: Signal) {
    ///         self.got = Some(signal);
    ///         cx.stop(); // a graceful stop on SIGTERM
    ///     }
    /// }
    ///
    /// let mut el = EventLoop::from_env().unwrap();
    /// el.handle_signals(&[Signal::Int, Signal::Term]).unwrap();
    /// // SAFETY: raise() signals this thread; the loop's handler is installed.
    /// unsafe { libc::raise(Signal::Term.as_raw()) };
    /// let mut d = Daemon { got: None };
    /// el.run(&mut d).unwrap();
    /// assert_eq!(d.got, Some(Signal::Term));
    /// ```
    pub fn handle_signals(&mut self, signals: &[Signal]) -> io::Result<()> {
        let pipe = SignalPipe::install(signals)?;
        self.cx.watch_signals(pipe.fd())?;
        self.signals = Some(pipe);
        Ok(())
    }

    /// Runs until [`Ctx::stop`].
    pub fn run<H: Handler<P>>(&mut self, handler: &mut H) -> io::Result<()> {
        while !self.cx.stop {
            self.run_once(handler, None)?;
        }
        Ok(())
    }

    /// One iteration; the wait lasts at most `max_wait` (`None`: until the
    /// next timer, or forever if there is none).
    pub fn run_once<H: Handler<P>>(&mut self, handler: &mut H, max_wait: Option<Duration>) -> io::Result<()> {
        let cx = &mut self.cx;
        cx.counters.iterations += 1;
        cx.bury_dropped();
        cx.apply_updates(&mut self.spare);

        let now = Instant::now();
        let timeout = if !cx.fds.spec.is_empty() || cx.stop {
            Some(Duration::ZERO)
        } else {
            let to_timer = cx.timers.next_deadline().map(|d| d.saturating_duration_since(now));
            match (to_timer, max_wait) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        cx.counters.waits += 1;
        self.events.clear();
        cx.poller.wait(&mut self.events, timeout).map_err(|e| error::wrap("wait", None, cx.poller.name(), e))?;
        cx.now = Instant::now();
        cx.counters.events += self.events.len() as u64;

        let mut signalled = false;
        for ev in self.events.iter() {
            if ev.token() == SIGNAL_TOKEN {
                signalled = true;
                continue;
            }
            let (fd, gen) = unpack(ev.token().0);
            let Some(e) = cx.fds.get_mut(fd).filter(|e| e.gen == gen) else {
                cx.counters.stale += 1;
                continue;
            };
            let before = e.state;
            e.state = on_event(e.state, ev.ready());
            e.last = ev.ready();
            e.progress = true;
            let final_now = e.state.intersects(FdState::ERROR | FdState::SEEN_HUP);
            let final_before = before.intersects(FdState::ERROR | FdState::SEEN_HUP);
            if final_now && !final_before {
                cx.fds.queue(fd);
            }
            cx.fds.schedule(fd);
        }
        let woken = self.events.woken();

        while let Some((id, kind)) = self.cx.timers.pop_due(self.cx.now) {
            self.cx.counters.timers += 1;
            match kind {
                TimerKind::User(data) => handler.timer(&mut self.cx, id, data),
                TimerKind::Resume(fd, gen) => {
                    if self.cx.fds.get(fd).is_some_and(|e| e.gen == gen) {
                        // Not the end of an EMFILE episode (accept_batch
                        // ends it when an accept succeeds), so no new warning.
                        log::debug!("fd {fd}: resuming after a pause");
                        self.cx.want_recv(fd);
                        self.cx.may_recv(fd);
                    }
                }
            }
        }
        if woken {
            self.cx.run_tasks(handler);
            handler.wake(&mut self.cx);
        }
        if signalled {
            if let Some(pipe) = &self.signals {
                self.sigbuf.clear();
                pipe.drain(&mut self.sigbuf);
                self.cx.counters.reads += 1;
                for i in 0..self.sigbuf.len() {
                    let sig = self.sigbuf[i];
                    handler.signal(&mut self.cx, sig);
                }
            }
        }

        std::mem::swap(&mut self.cx.fds.spec, &mut self.run);
        for i in 0..self.run.len() {
            let fd = self.run[i];
            let cx = &mut self.cx;
            let Some(e) = cx.fds.get_mut(fd) else { continue };
            e.spec = false;
            let ready = e.runnable();
            if ready.is_empty() || !e.progress {
                continue;
            }
            e.progress = false;
            let (owner, state, gen) = (e.owner, e.state, e.gen);
            handler.io(cx, IoEvent { fd, owner, ready, state });
            if let Some(e) = cx.fds.get(fd) {
                if e.gen == gen && e.progress && !e.spec && !e.runnable().is_empty() {
                    cx.counters.spec_calls += 1;
                    cx.fds.schedule(fd);
                } else if e.gen == gen && !e.progress && cx.strategy == Strategy::Level {
                    // Ignored: a level-triggered kernel would report the READY
                    // directions it still polls at every wait, a spin. Unpoll them.
                    let ready = e.runnable().interest();
                    if e.polled.is_some_and(|p| p.intersects(ready)) {
                        cx.fds.queue(fd);
                    }
                }
            }
        }
        self.run.clear();
        Ok(())
    }
}
