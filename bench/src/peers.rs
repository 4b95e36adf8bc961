//! The Rust peers of `bench poller`, each written the way its own docs
//! teach, with nothing added:
//!
//! * `polling` level: wait, one read per event (a byte left behind is
//!   reported again), forward.
//! * `polling` oneshot: the same, then `modify` to re-arm: one epoll_ctl
//!   per event.
//! * `mio` (edge): read until `WouldBlock`, as edge-triggered readiness
//!   requires: one EAGAIN read per event.
//!
//! All read with the same buffer as anypoll and forward with one write.

use std::io::{self, Read, Write};
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;

use super::ring::{check_drained, Budget, Contender, Guard, Ring, RunStats, Stopwatch, Workload, BUF, FILL, WAIT};

/// Events fetched per wait, as anypoll's loop does.
const EVENTS: usize = 1024;

/// `polling`, level-triggered or oneshot.
pub(crate) struct Polling {
    poller: polling::Poller,
    events: polling::Events,
    ring: Ring,
    oneshot: bool,
    buf: Box<[u8; BUF]>,
    w: Workload,
}

impl Polling {
    pub fn new(w: &Workload, oneshot: bool) -> io::Result<Polling> {
        let ring = Ring::new(w)?;
        let poller = polling::Poller::new()?;
        let mode = if oneshot { polling::PollMode::Oneshot } else { polling::PollMode::Level };
        for (i, rx) in ring.rx.iter().enumerate() {
            // SAFETY: `rx` stays open and is deleted from the poller before it
            // closes (see Drop), as `add` requires.
            unsafe { poller.add_with_mode(rx, polling::Event::readable(i), mode)? };
        }
        let events = polling::Events::with_capacity(NonZeroUsize::new(EVENTS).expect("not zero"));
        Ok(Polling { poller, events, ring, oneshot, buf: Box::new([0; BUF]), w: *w })
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        for rx in &self.ring.rx {
            let _ = self.poller.delete(rx);
        }
    }
}

impl Contender for Polling {
    fn run(&mut self) -> io::Result<RunStats> {
        let Polling { poller, events, ring, oneshot, buf, w } = self;
        let mut budget = Budget::new(w);
        let mut guard = Guard::new(w);
        ring.seed()?;
        let clock = Stopwatch::start();
        while !budget.done() {
            events.clear();
            poller.wait(events, Some(WAIT))?;
            guard.waited(&budget)?;
            for ev in events.iter() {
                let i = ev.key;
                match (&ring.rx[i]).read(&mut buf[..]) {
                    Ok(0) => return Err(io::Error::other(format!("pair {i} closed"))),
                    Ok(k) => {
                        let f = budget.take(k);
                        if f > 0 {
                            (&ring.tx[ring.next(i)]).write_all(&FILL[..f])?;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if *oneshot {
                    poller.modify_with_mode(&ring.rx[i], polling::Event::readable(i), polling::PollMode::Oneshot)?;
                }
            }
        }
        let (elapsed, cpu) = clock.stop();
        ring.check_drained()?;
        Ok(RunStats { elapsed, cpu, events: budget.received, waits: guard.waits, syscalls: None })
    }
}

/// `mio`: edge-triggered, read until `WouldBlock`.
pub(crate) struct Mio {
    poll: mio::Poll,
    events: mio::Events,
    /// The read ends, moved out of the ring into mio's socket type.
    rx: Vec<mio::net::UnixStream>,
    ring: Ring,
    buf: Box<[u8; BUF]>,
    w: Workload,
}

impl Mio {
    pub fn new(w: &Workload) -> io::Result<Mio> {
        let mut ring = Ring::new(w)?;
        let poll = mio::Poll::new()?;
        let mut rx: Vec<mio::net::UnixStream> =
            std::mem::take(&mut ring.rx).into_iter().map(mio::net::UnixStream::from_std).collect();
        for (i, s) in rx.iter_mut().enumerate() {
            poll.registry().register(s, mio::Token(i), mio::Interest::READABLE)?;
        }
        Ok(Mio { poll, events: mio::Events::with_capacity(EVENTS), rx, ring, buf: Box::new([0; BUF]), w: *w })
    }
}

impl Contender for Mio {
    fn run(&mut self) -> io::Result<RunStats> {
        let Mio { poll, events, rx, ring, buf, w } = self;
        let mut budget = Budget::new(w);
        let mut guard = Guard::new(w);
        ring.seed()?;
        let clock = Stopwatch::start();
        while !budget.done() {
            match poll.poll(events, Some(WAIT)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            guard.waited(&budget)?;
            for ev in events.iter() {
                let i = ev.token().0;
                loop {
                    match (&rx[i]).read(&mut buf[..]) {
                        Ok(0) => return Err(io::Error::other(format!("pair {i} closed"))),
                        Ok(k) => {
                            let f = budget.take(k);
                            if f > 0 {
                                (&ring.tx[ring.next(i)]).write_all(&FILL[..f])?;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        let (elapsed, cpu) = clock.stop();
        check_drained(rx.iter().map(|s| s.as_raw_fd()))?;
        Ok(RunStats { elapsed, cpu, events: budget.received, waits: guard.waits, syscalls: None })
    }
}
