//! [`LoopHandle`]: how other threads hand work to a loop.
//!
//! The loop is single-threaded (see [`EventLoop`](crate::EventLoop)): its
//! fd table, timers and poller are touched by its own thread only, without
//! locks. Other threads do not register fds themselves, as `polling` or
//! mio's `Registry::try_clone` allow; they queue the work on a
//! [`LoopHandle`] and wake the loop, which applies it between two waits,
//! on its own thread. One mutex-protected queue per loop, taken once per
//! wake-up: the cost is on the handing side, never on the loop's hot path.

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anypoll_backends::{AnyPoller, Poller, Waker};

use crate::{Ctx, FdState};

/// A closure queued for a loop's thread.
pub(crate) type Job<P> = Box<dyn FnOnce(&mut Ctx<P>) + Send>;

/// Work queued for a loop by another thread.
pub(crate) enum Task<P: Poller> {
    /// Register `fd` for `owner` with `state`, then hand it to
    /// [`Handler::adopt`](crate::Handler::adopt).
    Fd { fd: OwnedFd, owner: usize, state: FdState },
    /// Run a closure on the loop's thread with its context.
    Run(Job<P>),
}

/// The queue a loop shares with its handles.
pub(crate) struct Inbox<P: Poller> {
    pub(crate) tasks: Vec<Task<P>>,
    /// Set when the loop is dropped: nothing queued later would run.
    pub(crate) closed: bool,
}

pub(crate) type Shared<P> = Arc<Mutex<Inbox<P>>>;

pub(crate) fn shared<P: Poller>() -> Shared<P> {
    Arc::new(Mutex::new(Inbox { tasks: Vec::new(), closed: false }))
}

/// Locks the inbox. A thread that panicked while holding the lock left
/// a queue that is still consistent (push and take are single calls), so
/// a poisoned lock is used as is rather than turned into a panic.
pub(crate) fn lock<P: Poller>(s: &Shared<P>) -> MutexGuard<'_, Inbox<P>> {
    s.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A `Send` handle to a loop, for other threads: it queues an fd (with its
/// owner and state) or a closure for the loop, and wakes it. Cheap to
/// clone. Obtained from [`EventLoop::handle`](crate::EventLoop::handle)
/// or [`Ctx::handle`].
///
/// The model case is an acceptor thread feeding worker loops: it accepts,
/// and hands each connection to a worker with [`register`](Self::register);
/// the worker's [`Handler::adopt`](crate::Handler::adopt) takes ownership.
///
/// ```
/// use anypoll::{Ctx, EventLoop, FdState, Handler, IoEvent};
/// use std::os::fd::OwnedFd;
///
/// #[derive(Default)]
/// struct Worker {
///     fds: Vec<OwnedFd>,
/// }
/// impl Handler for Worker {
///     fn io(&mut self, _cx: &mut Ctx, _ev: IoEvent) {}
///     fn adopt(&mut self, cx: &mut Ctx, fd: OwnedFd, _owner: usize) {
///         self.fds.push(fd);
///         cx.stop();
///     }
/// }
///
/// let mut el = EventLoop::from_env().unwrap();
/// let handle = el.handle();
/// let t = std::thread::spawn(move || {
///     let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
///     handle.register(a.into(), 7, FdState::RECV_ACTIVE).unwrap();
/// });
/// let mut w = Worker::default();
/// el.run(&mut w).unwrap(); // only the handed fd ends it
/// t.join().unwrap();
/// assert_eq!(w.fds.len(), 1);
/// ```
pub struct LoopHandle<P: Poller = AnyPoller> {
    shared: Shared<P>,
    waker: Waker,
    backend: &'static str,
}

impl<P: Poller> LoopHandle<P> {
    pub(crate) fn new(shared: Shared<P>, waker: Waker, backend: &'static str) -> LoopHandle<P> {
        LoopHandle { shared, waker, backend }
    }

    /// Queues `fd` for the loop and wakes it. On its own thread, at its
    /// next iteration, the loop registers it for `owner` with `state`
    /// (as [`Ctx::register`]) and hands it to
    /// [`Handler::adopt`](crate::Handler::adopt), which owns it from then
    /// on. If the loop cannot register it (select's fd limit), it logs why,
    /// naming the fd and the backend, and closes it.
    ///
    /// # Errors
    /// `NotConnected` if the loop was dropped (`fd` is closed), or the
    /// waker's error (the fd stays queued and is registered at the loop's
    /// next wake-up).
    pub fn register(&self, fd: OwnedFd, owner: usize, state: FdState) -> io::Result<()> {
        self.push(Task::Fd { fd, owner, state })
    }

    /// Queues `f` to run on the loop's thread with its context, and wakes
    /// the loop.
    ///
    /// # Errors
    /// As [`register`](Self::register).
    pub fn run(&self, f: impl FnOnce(&mut Ctx<P>) + Send + 'static) -> io::Result<()> {
        self.push(Task::Run(Box::new(f)))
    }

    fn push(&self, task: Task<P>) -> io::Result<()> {
        {
            let mut inbox = lock(&self.shared);
            if inbox.closed {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    format!("the loop on the {} backend is gone", self.backend),
                ));
            }
            inbox.tasks.push(task);
        }
        // After the push: a wait that returns for this wake-up finds it.
        self.waker.wake()
    }
}

impl<P: Poller> Clone for LoopHandle<P> {
    fn clone(&self) -> LoopHandle<P> {
        LoopHandle { shared: Arc::clone(&self.shared), waker: self.waker.clone(), backend: self.backend }
    }
}

impl<P: Poller> fmt::Debug for LoopHandle<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle").field("backend", &self.backend).finish_non_exhaustive()
    }
}

impl<P: Poller> fmt::Debug for Inbox<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox").field("tasks", &self.tasks.len()).field("closed", &self.closed).finish()
    }
}

/// Sockets dropped while still registered (a [`Connection`] dropped
/// without a close), which the loop deregisters and closes at the start of
/// its next iteration, on its own thread. Until then the socket stays
/// open, so its number cannot be reused under the loop's registration.
///
/// [`Connection`]: crate::connection::Connection
#[derive(Debug, Default)]
pub(crate) struct Graveyard {
    pending: AtomicBool,
    fds: Mutex<Vec<OwnedFd>>,
}

impl Graveyard {
    /// Queues `fd` for the loop to deregister and close.
    pub(crate) fn bury(&self, fd: OwnedFd) {
        self.fds.lock().unwrap_or_else(|p| p.into_inner()).push(fd);
        self.pending.store(true, Ordering::Release);
    }

    /// What was queued since the last call; one atomic load when nothing was.
    pub(crate) fn take(&self) -> Vec<OwnedFd> {
        // A plain load first: the common case (nothing dropped) costs no
        // read-modify-write.
        if !self.pending.load(Ordering::Relaxed) || !self.pending.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut *self.fds.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
