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
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anypoll_backends::{AnyPoller, Capabilities, Interest, OpError, Poller, Token, Trigger, Waker};

use crate::counters::Counters;
use crate::fd::{on_event, wanted, Directions, FdState, FdTable, Strategy};
use crate::handle::{self, LoopHandle, Task};
use crate::signal::Signal;
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

mod ctx_io;
mod run;

pub use ctx_io::{Io, ShortRead};
pub use run::EventLoop;

/// The owner side of the loop: one value holds every owner's state, and
/// each call gets a [`Ctx`] to change interests, do I/O and set timers.
///
/// Only [`io`](Handler::io) is required; the other calls default to doing
/// nothing (or, for [`adopt`](Handler::adopt), closing the fd). Here a
/// handler gives up on a silent peer after 20 ms:
///
/// ```
/// use anypoll::{Ctx, EventLoop, FdState, Handler, Io, IoEvent, TimerId};
/// use std::os::unix::net::UnixStream;
/// use std::time::Duration;
///
/// struct Idle { peer: Option<UnixStream>, timeout: Option<TimerId>, why: &'static str }
/// impl Handler for Idle {
///     fn io(&mut self, cx: &mut Ctx, ev: IoEvent) {
///         match cx.recv(ev.fd, &mut [0u8; 16]) {
///             Io::WouldBlock => return,
///             Io::Done(_) => self.why = "data",
///             Io::Closed | Io::Error(_) => self.why = "closed",
///         }
///         cx.stop();
///     }
///     fn timer(&mut self, cx: &mut Ctx, id: TimerId, _data: u64) {
///         assert_eq!(Some(id), self.timeout);
///         let peer = self.peer.take().expect("one timeout");
///         cx.close(peer.into()).unwrap(); // deregistered, then closed
///         self.why = "idle";
///         cx.stop();
///     }
/// }
///
/// let (_quiet, b) = UnixStream::pair().unwrap();
/// b.set_nonblocking(true).unwrap();
/// let mut el = EventLoop::from_env().unwrap();
/// el.cx().register(&b, 0, FdState::RECV_ACTIVE).unwrap();
/// let timeout = Some(el.cx().add_timer(Duration::from_millis(20), 0));
/// let mut h = Idle { peer: Some(b), timeout, why: "" };
/// el.run(&mut h).unwrap(); // returns at cx.stop()
/// assert_eq!(h.why, "idle");
/// assert_eq!(el.cx().fd_count(), 0);
/// ```
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
///
/// ```
/// use anypoll::{EventLoop, FdState, Io};
/// use std::io::Read;
/// use std::os::fd::AsRawFd;
///
/// let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
/// b.set_nonblocking(true).unwrap();
/// let mut el = EventLoop::from_env().unwrap();
/// let cx = el.cx(); // the same Ctx a handler gets
/// cx.register(&b, 7, FdState::RECV_ACTIVE).unwrap();
/// let fd = b.as_raw_fd();
/// assert_eq!(cx.owner(fd), Some(7));
/// assert!(cx.state(fd).unwrap().contains(FdState::RECV_ACTIVE));
///
/// assert!(matches!(cx.send(fd, b"hi", false), Io::Done(2)));
/// let mut buf = [0u8; 2];
/// a.read_exact(&mut buf).unwrap();
/// assert_eq!(&buf, b"hi");
/// // Nothing to read: WouldBlock, and recv is no longer READY (it is polled).
/// assert!(matches!(cx.recv(fd, &mut buf), Io::WouldBlock));
/// assert!(!cx.state(fd).unwrap().contains(FdState::RECV_READY));
///
/// cx.deregister(fd).unwrap();
/// assert_eq!((cx.owner(fd), cx.fd_count()), (None, 0));
/// ```
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
    /// Listeners (fd, generation) paused at the backend's fd limit: the
    /// next deregistration may have freed a number below it, so they are
    /// resumed then, not only when their pause ends.
    pub(crate) waiting_for_room: Vec<(RawFd, u32)>,
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
    /// The backend's fd limit (the `FD_LIMIT` capability): it watches fds
    /// below this number only (select: `FD_SETSIZE`); `None` when any fd
    /// fits. Like RLIMIT_NOFILE, it is a capacity: a listener should not
    /// accept a connection whose fds would not fit (see
    /// [`listener`](crate::listener)).
    pub fn fd_limit(&self) -> Option<RawFd> {
        self.poller.fd_limit()
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
                let why = format!("cannot be watched: the backend watches fds below {limit} only");
                return Err(OpError::wrap(
                    backend,
                    "register",
                    Some(fd),
                    io::Error::new(io::ErrorKind::InvalidInput, why),
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
            let why = io::Error::new(io::ErrorKind::InvalidInput, "not an fd (negative)");
            return Err(OpError::wrap(backend, "register", Some(fd), why));
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
    /// ([`OpError`]).
    pub fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        let backend = self.poller.name();
        let e = self.fds.remove(fd).ok_or_else(|| {
            let why = io::Error::new(io::ErrorKind::NotFound, "not registered with the loop");
            OpError::wrap(backend, "deregister", Some(fd), why)
        })?;
        self.errors.remove(&fd);
        // Its number is about to be free: listeners waiting for room below
        // the backend's fd limit look again (once each; one that still
        // finds none pauses again, silently).
        for (l, gen) in std::mem::take(&mut self.waiting_for_room) {
            self.resume(l, gen);
        }
        if e.polled.is_some() {
            self.counters.ctl += 1;
            self.poller.delete(fd).map_err(|err| OpError::wrap(backend, "deregister", Some(fd), err))?;
        }
        Ok(())
    }

    /// Ends the pause of `fd` (its [`pause_recv`](Ctx::pause_recv) timer,
    /// or a deregistration for a listener waiting for room), if it is still
    /// the registration (`gen`) that was paused.
    fn resume(&mut self, fd: RawFd, gen: u32) {
        if self.fds.get(fd).is_some_and(|e| e.gen == gen) {
            // Not the end of an out-of-fds episode (accept_batch ends it
            // when an accept succeeds), so no new warning.
            log::debug!("fd {fd}: resuming after a pause");
            self.want_recv(fd);
            self.may_recv(fd);
        }
    }

    /// Marks listener `fd`, just paused, as waiting for room below the fd
    /// limit: the next deregistration resumes it.
    pub(crate) fn wait_for_room(&mut self, fd: RawFd) {
        if let Some(gen) = self.fds.get(fd).map(|e| e.gen) {
            if !self.waiting_for_room.contains(&(fd, gen)) {
                self.waiting_for_room.push((fd, gen));
            }
        }
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
                    let err = OpError::wrap(self.poller.name(), op, Some(fd), err);
                    log::warn!("{err}");
                    self.errors.insert(fd, err);
                    self.set_state(fd, FdState::ERROR | FdState::RECV_READY | FdState::SEND_READY, FdState::empty());
                }
            }
        }
        spare.clear();
    }
}
