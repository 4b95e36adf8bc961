//! [`EventLoop`]: the loop that owns a [`Ctx`] and drives one [`Handler`],
//! one iteration at a time (the steps in the [module docs](super)).

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anypoll_backends::registry;
use anypoll_backends::{AnyPoller, Capabilities, Events, OpError, Poller, Trigger};

use super::{unpack, Ctx, Handler, IoEvent, TimerKind, SIGNAL_TOKEN};
use crate::counters::Counters;
use crate::fd::{on_event, FdState, FdTable, Strategy};
use crate::handle::{self, LoopHandle};
use crate::signal::{Signal, SignalPipe};
use crate::timer::Timers;

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
/// the model case. A [`Waker`](anypoll_backends::Waker) ([`Ctx::waker`]) only wakes.
///
/// # Errors
///
/// Errors from the loop's own syscalls (the wait, and the kernel's
/// refusal of a registration) keep the original `io::Error` as their
/// source, with its errno, and name the operation, the fd and the backend
/// in their message ([`OpError`]).
///
/// # Example
///
/// A loop is driven by [`run`](EventLoop::run) (until
/// [`Ctx::stop`]) or, as here, by [`run_once`](EventLoop::run_once) in a
/// loop of one's own. Another thread asks it, through its handle, to set a
/// timer; the closure runs on the loop's thread with the loop's [`Ctx`].
///
/// ```
/// use anypoll::{Ctx, EventLoop, Handler, IoEvent, TimerId};
/// use std::time::Duration;
///
/// #[derive(Default)]
/// struct Worker { fired: Vec<u64> }
/// impl Handler for Worker {
///     fn io(&mut self, _cx: &mut Ctx, _ev: IoEvent) {}
///     fn timer(&mut self, _cx: &mut Ctx, _id: TimerId, data: u64) {
///         self.fired.push(data);
///     }
/// }
///
/// let mut el = EventLoop::from_env().unwrap();
/// let handle = el.handle();
/// std::thread::spawn(move || handle.run(|cx| drop(cx.add_timer(Duration::from_millis(1), 42))))
///     .join()
///     .unwrap()
///     .unwrap();
/// let mut w = Worker::default();
/// for _ in 0..100 {
///     el.run_once(&mut w, Some(Duration::from_millis(50))).unwrap();
///     if !w.fired.is_empty() {
///         break;
///     }
/// }
/// assert_eq!(w.fired, [42]);
/// ```
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
                waiting_for_room: Vec::new(),
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
        cx.poller.wait(&mut self.events, timeout).map_err(|e| OpError::wrap(cx.poller.name(), "wait", None, e))?;
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
                    self.cx.resume(fd, gen);
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
