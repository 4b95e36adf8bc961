//! A user-space model of an illumos event port, so that the event-ports
//! backend's own logic ([`EvPorts`](crate::evports::EvPorts)) runs on Linux:
//! the `evports-model` backend (feature `models`, Linux only). It is a
//! model, never the real OS.
//!
//! Written from `port_create(3C)`, `port_associate(3C)`, `port_getn(3C)` and
//! the facts in [`evports`](crate::evports), over real fds, with poll(2)
//! (`ppoll`, so timeouts keep nanoseconds) for their readiness:
//!
//! * **`PORT_SOURCE_FD` associations are one-shot**: when the fd's
//!   condition holds, the association *fires*: its event (the `revents` of
//!   that moment) is queued and the fd is no longer polled; collecting the
//!   event with `port_getn` ends the association.
//! * `port_associate` on an associated fd (armed, or fired and not
//!   collected) replaces its events and user value and discards the queued
//!   event (`port_remove_done_event`); the new association polls the fd at
//!   once (`VOP_POLL`) and fires there if the condition already holds.
//! * `port_dissociate`: `EBADFD` for an fd that is not open, `ENOENT` for
//!   one with no association (it fired and was collected, or never was).
//! * Closing an fd ends its association: an association whose fd poll
//!   reports as `POLLNVAL`, or whose number now names another file
//!   (`fstat` device and inode, checked when it fires and on
//!   `port_dissociate`), is dropped without an event.
//! * **`port_getn(list, nget, timeout)`**: `max` is `list.len()`; `nget > max`
//!   is `EINVAL`. It waits until `*nget` events are queued (0: it does not
//!   wait), then returns up to `max` of them and writes their count to
//!   `*nget`. When the timeout expires first it returns the events queued
//!   meanwhile (possibly none) with `ETIME`, `*nget` updated, as libc's
//!   wrapper does. A signal ends the wait with `EINTR`, no event and `*nget`
//!   untouched (illumos's `portfs` returns `EINTR` through `set_errno`, so
//!   libc never writes `nget` back).
//! * `port_send` queues a `PORT_SOURCE_USER` event and wakes a waiting
//!   `port_getn` (from any thread).
//! * **illumos sockfs**: a pending socket error shows as the `POLLIN`/
//!   `POLLOUT` asked for, not `POLLERR` (seen as Linux's `POLLERR` on a
//!   socket, without reading `SO_ERROR`, which would consume it);
//!   `POLLRDHUP` (illumos's `0x4000`) once the read side is shut (Linux's
//!   `POLLRDHUP`).
//!
//! [`Quirks`] turns on the misbehaviours the backend must survive; each has
//! a test in `backends/tests/evports_model.rs` that fails without the
//! backend's defence. What the model can and cannot prove is in
//! `docs/design.md` ("Kernel models: event ports").

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::evports::bits::{self, PortEvent};
use crate::evports::PortOps;
use crate::sys::cvt;

/// The quirk switches: each makes the model misbehave the way a kernel was
/// seen or feared to. All off (the default) is illumos as documented.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quirks {
    /// HAProxy's finding (`src/ev_evports.c`): with `nget > 1`, a wait whose
    /// timeout expires with fewer than `nget` events collects them and
    /// returns `ETIME` with `nget` 0: they are lost.
    pub lone_event_lost_with_nget: bool,
    /// Every `port_getn` that returns events returns them with -1/`ETIME`
    /// (`nget` updated), as after a timeout that raced with them.
    pub etime_with_events: bool,
    /// Every `port_getn` that returns events returns them with -1/`EINTR`
    /// and leaves `nget` as passed in (libc does not write it back on a
    /// plain error): a signal that raced with them, on a kernel that copies
    /// events out anyway.
    pub eintr_with_events: bool,
}

/// One model port. Clones share it, so a test keeps one to set
/// [`Quirks`] and to look inside while the backend uses another.
#[derive(Debug, Clone, Default)]
pub struct Model {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    quirks: Quirks,
    /// The port's fd: an eventfd that `port_send` writes to wake `port_getn`.
    port: Option<RawFd>,
    assoc: HashMap<RawFd, Assoc>,
    /// Fired events, oldest first.
    queue: VecDeque<Queued>,
}

#[derive(Debug, Clone, Copy)]
struct Assoc {
    /// illumos poll bits asked for.
    events: i32,
    user: usize,
    file: File,
    /// The event it fired with (queued, not collected), or `None` while armed.
    fired: Option<i32>,
}

/// Which file an fd number named when it was associated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct File {
    dev: u64,
    ino: u64,
    socket: bool,
}

#[derive(Debug, Clone, Copy)]
enum Queued {
    Fd(RawFd),
    User { events: i32, user: usize },
}

/// How a `port_getn` wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Enough,
    TimedOut,
    Interrupted,
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// The file `fd` names now, or `EBADFD` (illumos's errno for an fd that is
/// not open in `port_associate`/`port_dissociate`).
fn file_of(fd: RawFd) -> io::Result<File> {
    // SAFETY: fstat writes a `stat` into the zeroed one we pass.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live, writable stat; fd is only an integer here.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(errno(libc::EBADFD));
    }
    Ok(File { dev: st.st_dev, ino: st.st_ino, socket: st.st_mode & libc::S_IFMT == libc::S_IFSOCK })
}

/// illumos poll bits → Linux's (they differ only in `POLLRDHUP`).
fn to_linux(events: i32) -> i16 {
    let mut m = (events as i16) & (libc::POLLIN | libc::POLLPRI | libc::POLLOUT);
    if events & i32::from(bits::ILLUMOS_RDHUP) != 0 {
        m |= libc::POLLRDHUP;
    }
    m
}

/// What illumos reports for an fd whose Linux poll gave `revents`, for an
/// association asking `events` (illumos bits).
fn illumos_revents(revents: i16, events: i32, file: File) -> i32 {
    let io_bits = i32::from(libc::POLLIN | libc::POLLOUT);
    // sockfs `so_poll`: "in sockets the errors are represented as input/output events".
    if file.socket && revents & libc::POLLERR != 0 && events & io_bits != 0 {
        return events & io_bits;
    }
    let same = libc::POLLIN | libc::POLLPRI | libc::POLLOUT | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
    let mut r = i32::from(revents & same);
    if revents & libc::POLLRDHUP != 0 {
        r |= i32::from(bits::ILLUMOS_RDHUP);
    }
    r
}

/// `ppoll` for up to `timeout` (`None`: forever).
fn ppoll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ts = crate::sys::timespec(timeout);
    let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` is a valid array of its length; `tsp` is null or points
    // to a live timespec; a null sigmask leaves the mask alone.
    let n = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, tsp, std::ptr::null()) };
    cvt(n).map(|n| n as usize)
}

impl Model {
    /// A model port that will misbehave as `quirks` says.
    pub fn new(quirks: Quirks) -> Model {
        let m = Model::default();
        m.set_quirks(quirks);
        m
    }

    /// Changes the quirks; the next call sees them.
    pub fn set_quirks(&self, quirks: Quirks) {
        self.lock().quirks = quirks;
    }

    /// The quirks in force.
    pub fn quirks(&self) -> Quirks {
        self.lock().quirks
    }

    /// How many fds are associated (armed, or fired and not collected):
    /// after the backend deleted every fd, anything left is a leak.
    pub fn associations(&self) -> usize {
        self.lock().assoc.len()
    }

    /// How many events are queued and not collected.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the state half-changed in a way
        // that matters to a model: keep going with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, if `port` is this model's port (`EBADF` otherwise).
    fn port(&self, port: RawFd) -> io::Result<MutexGuard<'_, State>> {
        let st = self.lock();
        if st.port != Some(port) {
            return Err(errno(libc::EBADF));
        }
        Ok(st)
    }

    /// Polls the armed associations (and the port's eventfd) for up to
    /// `timeout`, and fires those whose condition holds.
    fn poll_armed(&self, port: RawFd, timeout: Option<Duration>) -> io::Result<()> {
        let mut fds = vec![libc::pollfd { fd: port, events: libc::POLLIN, revents: 0 }];
        {
            let st = self.port(port)?;
            for (&fd, a) in st.assoc.iter().filter(|(_, a)| a.fired.is_none()) {
                fds.push(libc::pollfd { fd, events: to_linux(a.events), revents: 0 });
            }
        }
        // Unlocked meanwhile, so that port_send can reach us.
        if ppoll(&mut fds, timeout)? == 0 {
            return Ok(());
        }
        let mut st = self.port(port)?;
        if fds[0].revents != 0 {
            let mut count = 0u64;
            // SAFETY: reading 8 bytes into a live u64 from the eventfd we own;
            // it is non-blocking, and a failure only means it was empty.
            unsafe { libc::read(port, (&mut count as *mut u64).cast(), 8) };
        }
        for p in fds[1..].iter().filter(|p| p.revents != 0) {
            st.fire(p.fd, p.revents);
        }
        Ok(())
    }

    /// Collects the events and shapes the result as the kernel and libc
    /// would for a wait that ended as `end`.
    fn finish(&self, st: &mut State, list: &mut [PortEvent], nget: &mut u32, end: End) -> io::Result<()> {
        let q = st.quirks;
        if end == End::TimedOut && q.lone_event_lost_with_nget && *nget > 1 {
            let lost = st.queue.len().min(list.len());
            for _ in 0..lost {
                st.collect();
            }
            *nget = 0;
            return Err(errno(libc::ETIME));
        }
        if end == End::Interrupted && !q.eintr_with_events {
            return Err(errno(libc::EINTR));
        }
        let mut n = 0;
        while n < list.len() {
            let Some(ev) = st.collect() else { break };
            list[n] = ev;
            n += 1;
        }
        if end == End::Interrupted || (n > 0 && q.eintr_with_events) {
            return Err(errno(libc::EINTR));
        }
        *nget = n as u32;
        if end == End::TimedOut || (n > 0 && q.etime_with_events) {
            return Err(errno(libc::ETIME));
        }
        Ok(())
    }
}

impl State {
    /// An armed association's fd polled ready with Linux's `revents`.
    fn fire(&mut self, fd: RawFd, revents: i16) {
        let Some(a) = self.assoc.get(&fd).copied() else { return };
        if a.fired.is_some() {
            return;
        }
        // Closed (POLLNVAL), or closed and the number reused: the close
        // ended the association.
        if revents & libc::POLLNVAL != 0 || file_of(fd).ok() != Some(a.file) {
            self.assoc.remove(&fd);
            return;
        }
        let ev = illumos_revents(revents, a.events, a.file);
        self.assoc.insert(fd, Assoc { fired: Some(ev), ..a });
        self.queue.push_back(Queued::Fd(fd));
    }

    /// Takes the oldest queued event; an fd's ends its association.
    fn collect(&mut self) -> Option<PortEvent> {
        loop {
            let ev = match self.queue.pop_front()? {
                Queued::User { events, user } => PortEvent {
                    portev_events: events,
                    portev_source: bits::PORT_SOURCE_USER as u16,
                    portev_pad: 0,
                    portev_object: 0,
                    portev_user: user,
                },
                Queued::Fd(fd) => {
                    // A queued fd event always has its fired association.
                    let Some(Assoc { fired: Some(events), user, .. }) = self.assoc.remove(&fd) else { continue };
                    PortEvent {
                        portev_events: events,
                        portev_source: bits::PORT_SOURCE_FD as u16,
                        portev_pad: 0,
                        portev_object: fd as usize,
                        portev_user: user,
                    }
                }
            };
            return Some(ev);
        }
    }

    /// Ends `fd`'s association, dropping its queued event.
    fn remove(&mut self, fd: RawFd) -> Option<Assoc> {
        let a = self.assoc.remove(&fd)?;
        if a.fired.is_some() {
            self.queue.retain(|q| !matches!(q, Queued::Fd(f) if *f == fd));
        }
        Some(a)
    }
}

fn fd_object(source: i32, object: usize) -> io::Result<RawFd> {
    if source != bits::PORT_SOURCE_FD {
        // The model has fd associations only; the backend makes no other.
        return Err(errno(libc::EINVAL));
    }
    RawFd::try_from(object).map_err(|_| errno(libc::EBADFD))
}

impl PortOps for Model {
    const NAME: &'static str = "evports-model";
    const RDHUP: i16 = bits::ILLUMOS_RDHUP;

    fn port_create(&self) -> io::Result<OwnedFd> {
        let mut st = self.lock();
        if st.port.is_some() {
            // One model, one port: that is all a backend makes.
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "evports-model: this model already has a port"));
        }
        // SAFETY: eventfd with constant flags; the result is checked.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        st.port = Some(fd);
        // SAFETY: eventfd() succeeded, so fd is open and ours alone.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn port_associate(&self, port: RawFd, source: i32, object: usize, events: i32, user: usize) -> io::Result<()> {
        let fd = fd_object(source, object)?;
        let file = file_of(fd)?;
        let mut st = self.port(port)?;
        st.remove(fd);
        st.assoc.insert(fd, Assoc { events, user, file, fired: None });
        drop(st);
        // The association polls the fd at once.
        let mut now = [libc::pollfd { fd, events: to_linux(events), revents: 0 }];
        if ppoll(&mut now, Some(Duration::ZERO))? > 0 {
            self.port(port)?.fire(fd, now[0].revents);
        }
        Ok(())
    }

    fn port_dissociate(&self, port: RawFd, source: i32, object: usize) -> io::Result<()> {
        let fd = fd_object(source, object)?;
        let file = file_of(fd)?;
        let mut st = self.port(port)?;
        match st.remove(fd) {
            Some(a) if a.file == file => Ok(()),
            // The association was the closed file's: gone with its close.
            _ => Err(errno(libc::ENOENT)),
        }
    }

    fn port_getn(
        &self,
        port: RawFd,
        list: &mut [PortEvent],
        nget: &mut u32,
        timeout: Option<&libc::timespec>,
    ) -> io::Result<()> {
        if *nget as usize > list.len() {
            return Err(errno(libc::EINVAL));
        }
        let want = *nget as usize;
        let start = Instant::now();
        // None: forever (also a deadline too far to represent).
        let deadline = timeout.and_then(|t| {
            let d = Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0));
            start.checked_add(d)
        });
        let mut block = false;
        loop {
            let left = match (block, deadline) {
                (false, _) => Some(Duration::ZERO),
                (true, Some(d)) => Some(d.saturating_duration_since(Instant::now())),
                (true, None) => None,
            };
            let end = match self.poll_armed(port, left) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => Some(End::Interrupted),
                Err(e) => return Err(e),
                Ok(()) => None,
            };
            let mut st = self.port(port)?;
            let end = end.or_else(|| {
                if st.queue.len() >= want {
                    Some(End::Enough)
                } else if deadline.is_some_and(|d| Instant::now() >= d) {
                    Some(End::TimedOut)
                } else {
                    None
                }
            });
            if let Some(end) = end {
                return self.finish(&mut st, list, nget, end);
            }
            // Each pass blocks until a fd fires, a port_send, a signal or the deadline.
            block = true;
        }
    }

    fn port_send(&self, port: RawFd, events: i32, user: usize) -> io::Result<()> {
        self.port(port)?.queue.push_back(Queued::User { events, user });
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to the port's eventfd.
        let n = unsafe { libc::write(port, (&one as *const u64).cast(), 8) };
        match cvt(n as libc::c_int) {
            // EAGAIN: the counter is saturated, a wake-up is pending anyway.
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }
}
