//! A model of the kqueue kernel object, on Linux, for tests (feature
//! `models`). It is **not** the real OS: the registry lists it as
//! `kqueue-model`, and the conformance matrix marks its column as a model.
//!
//! [`KqueueModel`] is the real kqueue backend's logic
//! ([`KqueueOn`]) over [`Model`], an implementation
//! of the [`KqSys`] seam written from kqueue(2) (FreeBSD) and the facts in
//! the [kqueue module docs](crate::kqueue). It runs over real fds:
//!
//! * **Knotes.** One per (ident, filter): `EVFILT_READ` and `EVFILT_WRITE`
//!   per fd, `EVFILT_USER` per ident. `EV_ADD` creates one, or on an
//!   existing one updates udata and re-checks its condition, without
//!   touching its `EV_CLEAR`/`EV_DISPATCH`/`EV_ONESHOT`; `EV_DELETE`,
//!   `EV_ENABLE`, `EV_DISABLE` on a missing knote give `ENOENT`; a change
//!   for a closed fd gives `EBADF`; an unknown filter `EINVAL`.
//! * **One call.** Changes are applied in order before the wait. A failed
//!   change, or any change with `EV_RECEIPT`, is copied to the event list
//!   with `EV_ERROR` and the errno in `data` (0 for a receipt); then the
//!   call returns those entries without waiting. A failed change with no
//!   room left fails the call with its errno, and the later changes are not
//!   applied. A changelist may be longer than the event list.
//! * **Readiness** comes from poll(2) (`POLLIN`, `POLLOUT`, `POLLRDHUP`,
//!   `POLLHUP`, `POLLERR`), never from epoll. `data` is `FIONREAD` for the
//!   read filter and `SO_SNDBUF − SIOCOUTQ` for the write filter (1 where
//!   the fd has neither, e.g. an eventfd).
//! * **EOF.** The read filter reports `EV_EOF` once the peer shut its side
//!   (`POLLRDHUP`/`POLLHUP`) or on a socket error. The write filter reports
//!   it on `POLLHUP`, on a socket error, and after a *local*
//!   `shutdown(SHUT_WR)` ([`Quirks::local_shutdown_eof`]), found without a
//!   side effect by a zero-length `send(MSG_DONTWAIT | MSG_NOSIGNAL)` that
//!   says `EPIPE` (stream sockets only, and only when no error is pending).
//! * **`fflags` = the socket error, not consumed.** Linux clears the error
//!   when it is read (`SO_ERROR`, and also a `recv` that returns it, even
//!   with `MSG_PEEK`), and the socket's owner must still read it. So the
//!   model never reads it: `POLLERR` says an error is pending, and the
//!   model reports `ECONNRESET` if it ever saw the socket connected
//!   (`getpeername`), `ECONNREFUSED` otherwise. The backend only tests
//!   `fflags != 0`; another errno (`ETIMEDOUT`, …) is reported as one of
//!   those two. Known gap: an error that arrives between the model's poll
//!   and its zero-length send probe is consumed by the probe.
//! * **`EV_CLEAR`** (edge): a knote fires when its condition holds and
//!   something happened on the fd since it last fired, or it is new or
//!   re-added (`EV_ADD` re-checks), or its EOF is new. poll(2) cannot say
//!   "something happened" (data that was drained and refilled between two
//!   calls looks unchanged), so the model keeps the fds of its `EV_CLEAR`
//!   knotes in a private edge-triggered epoll set, read with a zero
//!   timeout at every call and waited for (as one fd) in a blocking call:
//!   it only says *that* the fd was woken, readiness still comes from
//!   poll(2). An edge for a condition that no longer holds is dropped, as
//!   FreeBSD's scan re-checks `f_event`. `EV_DISPATCH` disables a knote
//!   after it fired, `EV_ONESHOT` deletes it.
//! * **`EVFILT_USER`** with `NOTE_TRIGGER` (the waker). Without `EV_CLEAR`
//!   it stays triggered (every wait returns at once); an `EV_CLEAR` in a
//!   change resets it (as on FreeBSD). The kqueue fd is an eventfd that a
//!   trigger writes to, so a trigger from another thread ends a wait.
//!   [`Quirks::no_user_filter`] makes `EVFILT_USER` `EINVAL`, as on NetBSD
//!   before 10, so that the backend falls back to the pipe waker.
//! * **Close.** A knote disappears when its fd is closed: each call checks
//!   every knote's fd with `fstat`, and drops the knote if the fd is closed
//!   or now names another file (device and inode differ). Limit: a number
//!   reused by a `dup` of the *same* file looks like the same fd, and keeps
//!   the knote that a real kernel would have dropped.
//! * **Timeouts** are `ppoll` timespecs: no rounding to milliseconds.
//!
//! Each documented quirk of a kernel or of libkqueue is a [`Quirks`]
//! switch, which tests set to show that the backend's defence works.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::ops::Bound;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::kqueue::bits::{self, Kevent};
use crate::kqueue::{KqSys, KqueueOn};
use crate::sys::cvt;

mod probe;
use probe::{connected, drain, file_id, ioctl_int, poke, ppoll, send_shut, send_space, sock_type};

/// The kqueue backend over the model: its registry name is `kqueue-model`.
pub type KqueueModel = KqueueOn<Model>;

/// The model's switches. [`Default`] is FreeBSD's behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quirks {
    /// `EV_EOF` on the write filter after a local `shutdown(SHUT_WR)`
    /// (FreeBSD, macOS: on by default).
    pub local_shutdown_eof: bool,
    /// No `EVFILT_USER` (NetBSD before 10): adding one is `EINVAL`.
    pub no_user_filter: bool,
    /// `EV_ADD` on an existing `EVFILT_USER` knote takes the change's
    /// `EV_CLEAR`: a user event re-added without it turns level-triggered
    /// and, once triggered, busy-loops every wait.
    pub user_add_takes_clear: bool,
    /// libkqueue: `EV_ADD` on an existing fd knote fails with this errno
    /// and leaves the knote alive, as it was.
    pub add_existing_fails: Option<i32>,
    /// libkqueue: one call's event list holds at most this many entries
    /// (512 there); an error or receipt beyond it fails the call with
    /// `EFAULT`.
    pub event_list_cap: Option<usize>,
    /// A change that fails: `EV_ADD` for this ident fails with this errno
    /// (no knote is created), as an `ENOMEM` or a filter's refusal would.
    pub fail_add: Option<(RawFd, i32)>,
}

impl Default for Quirks {
    fn default() -> Quirks {
        Quirks {
            local_shutdown_eof: true,
            no_user_filter: false,
            user_add_takes_clear: false,
            add_existing_fails: None,
            event_list_cap: None,
            fail_add: None,
        }
    }
}

/// The model of the kernel: every kqueue created through it. Cheap to clone
/// (the clones share the kqueues).
#[derive(Debug, Clone, Default)]
pub struct Model {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    quirks: Mutex<Quirks>,
    /// Per kqueue fd (an eventfd): its knotes.
    kqs: Mutex<HashMap<RawFd, Kq>>,
    /// `kevent()` calls so far, for tests that look for a busy loop.
    calls: std::sync::atomic::AtomicUsize,
}

/// (ident, filter).
type Key = (usize, i16);

#[derive(Debug)]
struct Kq {
    knotes: BTreeMap<Key, Knote>,
    /// The knote that fired last (the round robin starts after it).
    last: Option<Key>,
    /// The private edge-triggered epoll set of the `EV_CLEAR` knotes' fds,
    /// created with the kqueue: a real kqueue's `EV_CLEAR` costs no fd, so
    /// the model's fd count must not change after `kqueue()` either (tests
    /// count a process's fds).
    edges: OwnedFd,
}

#[derive(Debug, Clone)]
struct Knote {
    udata: usize,
    clear: bool,
    dispatch: bool,
    oneshot: bool,
    enabled: bool,
    /// The file the fd named when the knote was added (device, inode).
    file: Option<(u64, u64)>,
    /// A stream socket (the write filter's shutdown probe applies).
    stream: bool,
    /// The model saw the socket connected (for the errno it reports).
    connected: bool,
    /// `EV_CLEAR`: new or re-added, not fired since.
    fresh: bool,
    /// `EV_CLEAR`: the fd was woken since the knote last fired.
    edged: bool,
    /// `EV_CLEAR`: EOF was already reported.
    eof_told: bool,
    /// `EVFILT_USER`: triggered.
    triggered: bool,
}

impl Knote {
    fn new(ch: &Kevent) -> Knote {
        Knote {
            udata: ch.udata,
            clear: ch.flags & bits::EV_CLEAR != 0,
            dispatch: ch.flags & bits::EV_DISPATCH != 0,
            oneshot: ch.flags & bits::EV_ONESHOT != 0,
            enabled: ch.flags & bits::EV_DISABLE == 0,
            file: None,
            stream: false,
            connected: false,
            fresh: true,
            edged: false,
            eof_told: false,
            triggered: false,
        }
    }
}

impl Model {
    /// A model with these switches.
    pub fn new(quirks: Quirks) -> Model {
        Model { inner: Arc::new(Inner { quirks: Mutex::new(quirks), ..Inner::default() }) }
    }

    /// Changes the switches from the next call on (a test flips one
    /// between two waits).
    pub fn set_quirks(&self, quirks: Quirks) {
        *self.inner.quirks.lock().unwrap_or_else(|e| e.into_inner()) = quirks;
    }

    /// The knotes of every kqueue of this model, as (ident, filter).
    pub fn knotes(&self) -> Vec<(usize, i16)> {
        self.lock().values().flat_map(|kq| kq.knotes.keys().copied()).collect()
    }

    /// How many `kevent()` calls were made so far.
    pub fn calls(&self) -> usize {
        self.inner.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RawFd, Kq>> {
        self.inner.kqs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn no_kq(kq: RawFd) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("kqueue-model: fd {kq} is not a kqueue of this model"))
}

impl KqSys for Model {
    const NAME: &'static str = "kqueue-model";
    const USER_FILTER: bool = true;

    fn kqueue(&self) -> io::Result<OwnedFd> {
        // SAFETY: eventfd with constant flags; the result is checked.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: eventfd() succeeded, so fd is open and ours alone.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: epoll_create1 with a constant flag; the result is checked.
        let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: epoll_create1() succeeded, so ep is open and ours alone.
        let edges = unsafe { OwnedFd::from_raw_fd(ep) };
        // A number reused after an earlier kqueue of this model was closed.
        self.lock().insert(fd, Kq { knotes: BTreeMap::new(), last: None, edges });
        Ok(owned)
    }

    fn kevent(
        &self,
        kq: RawFd,
        changes: &[Kevent],
        events: &mut [Kevent],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        self.inner.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let quirks = self.inner.quirks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let q = &quirks;
        let room = q.event_list_cap.map_or(events.len(), |c| c.min(events.len()));
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut guard = self.lock();
        let mut st = guard.get_mut(&kq).ok_or_else(|| no_kq(kq))?;
        let mut n = 0;
        let mut wake = false;
        for ch in changes {
            let errno = st.apply(ch, q, &mut wake);
            if errno != 0 || ch.flags & bits::EV_RECEIPT != 0 {
                if n >= room {
                    if room < events.len() {
                        return Err(io::Error::from_raw_os_error(libc::EFAULT));
                    }
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(errno));
                    }
                    return Ok(n);
                }
                events[n] = Kevent { flags: bits::EV_ERROR, data: errno as i64, ..*ch };
                n += 1;
            }
        }
        if wake {
            poke(kq);
        }
        // Errors and receipts end the call before it collects anything.
        if n > 0 || room == 0 {
            return Ok(n);
        }
        loop {
            drain(kq);
            let (got, mut waitset) = st.collect(&mut events[..room], q);
            if got > 0 {
                return Ok(got);
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if d <= now => return Ok(0),
                Some(d) => Some(d - now),
                None => None,
            };
            waitset.push(libc::pollfd { fd: kq, events: libc::POLLIN, revents: 0 });
            waitset.push(libc::pollfd { fd: st.edges.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            drop(guard);
            ppoll(&mut waitset, left)?;
            guard = self.lock();
            // Present: only kqueue() inserts, and nothing removes.
            let Some(again) = guard.get_mut(&kq) else { return Err(no_kq(kq)) };
            st = again;
        }
    }
}

impl Kq {
    /// Applies one change; returns its errno (0: done).
    fn apply(&mut self, ch: &Kevent, q: &Quirks, wake: &mut bool) -> i32 {
        match ch.filter {
            bits::EVFILT_READ | bits::EVFILT_WRITE => self.apply_fd(ch, q),
            bits::EVFILT_USER if !q.no_user_filter => self.apply_user(ch, q, wake),
            _ => libc::EINVAL,
        }
    }

    fn apply_fd(&mut self, ch: &Kevent, q: &Quirks) -> i32 {
        let errno = self.apply_fd_knote(ch, q);
        if let Ok(fd) = RawFd::try_from(ch.ident) {
            self.watch_edges(fd);
        }
        errno
    }

    fn apply_fd_knote(&mut self, ch: &Kevent, q: &Quirks) -> i32 {
        let key = (ch.ident, ch.filter);
        let Ok(fd) = RawFd::try_from(ch.ident) else { return libc::EBADF };
        let Some(id) = file_id(fd) else {
            self.knotes.remove(&key);
            return libc::EBADF;
        };
        if self.knotes.get(&key).is_some_and(|k| k.file != Some(id)) {
            // The fd was closed and the number reused: its knote went.
            self.knotes.remove(&key);
        }
        if ch.flags & bits::EV_ADD != 0 {
            if let Some((_, e)) = q.fail_add.filter(|&(f, _)| f == fd) {
                return e;
            }
            match self.knotes.get_mut(&key) {
                Some(k) => {
                    if let Some(e) = q.add_existing_fails {
                        return e;
                    }
                    k.udata = ch.udata;
                    // EV_ADD re-checks the condition (FreeBSD calls f_event).
                    k.fresh = true;
                    k.eof_told = false;
                }
                None => {
                    let stream = sock_type(fd) == Some(libc::SOCK_STREAM);
                    let knote = Knote { file: Some(id), stream, connected: stream && connected(fd), ..Knote::new(ch) };
                    self.knotes.insert(key, knote);
                }
            }
        } else if ch.flags & bits::EV_DELETE != 0 {
            return if self.knotes.remove(&key).is_some() { 0 } else { libc::ENOENT };
        }
        let Some(k) = self.knotes.get_mut(&key) else { return libc::ENOENT };
        enable_disable(k, ch.flags);
        0
    }

    fn apply_user(&mut self, ch: &Kevent, q: &Quirks, wake: &mut bool) -> i32 {
        let key = (ch.ident, bits::EVFILT_USER);
        if ch.flags & bits::EV_ADD != 0 {
            match self.knotes.get_mut(&key) {
                Some(k) => {
                    if q.user_add_takes_clear {
                        k.clear = ch.flags & bits::EV_CLEAR != 0;
                    }
                    k.udata = ch.udata;
                }
                None => {
                    self.knotes.insert(key, Knote::new(ch));
                }
            }
        } else if ch.flags & bits::EV_DELETE != 0 {
            return if self.knotes.remove(&key).is_some() { 0 } else { libc::ENOENT };
        }
        let Some(k) = self.knotes.get_mut(&key) else { return libc::ENOENT };
        enable_disable(k, ch.flags);
        if ch.fflags & bits::NOTE_TRIGGER != 0 {
            k.triggered = true;
        }
        // FreeBSD's filt_usertouch: EV_CLEAR in a change resets the event.
        if ch.flags & bits::EV_ADD == 0 && ch.flags & bits::EV_CLEAR != 0 {
            k.triggered = false;
        }
        *wake |= k.triggered && k.enabled;
        0
    }

    /// Drops the knotes of closed fds, then fills `out` with the knotes
    /// that fire. Returns how many fired, the poll set that waits for the
    /// others (level knotes; the edge set covers the `EV_CLEAR` ones).
    fn collect(&mut self, out: &mut [Kevent], q: &Quirks) -> (usize, Vec<libc::pollfd>) {
        self.knotes.retain(|&(ident, filter), k| filter == bits::EVFILT_USER || file_id(ident as RawFd) == k.file);
        self.read_edges();
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut at: HashMap<RawFd, usize> = HashMap::new();
        for (&(ident, filter), k) in &self.knotes {
            if filter != bits::EVFILT_USER && k.enabled {
                let fd = ident as RawFd;
                at.entry(fd).or_insert_with(|| {
                    fds.push(libc::pollfd { fd, events: libc::POLLIN | libc::POLLOUT | libc::POLLRDHUP, revents: 0 });
                    fds.len() - 1
                });
            }
        }
        // A zero timeout: EINTR cannot happen, and an error leaves revents 0.
        let _ = ppoll(&mut fds, Some(Duration::ZERO));
        let (mut n, mut waitset, mut gone) = (0, Vec::new(), Vec::new());
        // Round robin from the knote after the last one that fired, as the
        // kernel's queue of active knotes is: a short event list does not
        // starve the knotes behind the first.
        let order: Vec<Key> = match self.last {
            Some(last) => {
                let after = self.knotes.range((Bound::Excluded(last), Bound::Unbounded));
                after.chain(self.knotes.range(..=last)).map(|(&key, _)| key).collect()
            }
            None => self.knotes.keys().copied().collect(),
        };
        for key in order {
            let Some(k) = self.knotes.get_mut(&key) else { continue };
            if !k.enabled {
                continue;
            }
            let (ident, filter) = key;
            let state = if filter == bits::EVFILT_USER {
                State { active: k.triggered, eof: false, fflags: 0, data: 0 }
            } else {
                let fd = ident as RawFd;
                let revents = at.get(&fd).map_or(0, |&i| fds[i].revents);
                if k.stream && !k.connected {
                    k.connected = connected(fd);
                }
                state(fd, filter, revents, k, q)
            };
            let fires = state.active
                && (!k.clear || filter == bits::EVFILT_USER || k.fresh || k.edged || (state.eof && !k.eof_told));
            if !fires {
                // An edge for a condition that no longer holds is spent.
                k.edged &= state.active;
                if filter != bits::EVFILT_USER && !k.clear {
                    let events =
                        if filter == bits::EVFILT_READ { libc::POLLIN | libc::POLLRDHUP } else { libc::POLLOUT };
                    waitset.push(libc::pollfd { fd: ident as RawFd, events, revents: 0 });
                }
                continue;
            }
            if n == out.len() {
                // No room: it fires in a later call (its state is kept).
                continue;
            }
            let mut flags = if state.eof { bits::EV_EOF } else { 0 };
            flags |= if k.clear { bits::EV_CLEAR } else { 0 };
            out[n] = Kevent { ident, filter, flags, fflags: state.fflags, data: state.data, udata: k.udata };
            n += 1;
            self.last = Some(key);
            if k.clear {
                k.fresh = false;
                k.edged = false;
                k.eof_told |= state.eof;
                k.triggered = false;
            }
            if k.dispatch {
                k.enabled = false;
            }
            if k.oneshot {
                gone.push(key);
            }
        }
        for key in gone {
            self.knotes.remove(&key);
        }
        (n, waitset)
    }

    /// Marks the `EV_CLEAR` knotes whose fd was woken since the last call.
    fn read_edges(&mut self) {
        let ep = &self.edges;
        let mut buf = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            // SAFETY: `buf` is a live array of 64 epoll_events; zero timeout.
            let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), buf.as_mut_ptr(), buf.len() as libc::c_int, 0) };
            let Ok(n) = usize::try_from(n) else { return };
            for e in &buf[..n] {
                let (mask, fd) = (e.events as libc::c_int, e.u64 as usize);
                let any = libc::EPOLLHUP | libc::EPOLLERR;
                let dirs = [
                    (bits::EVFILT_READ, libc::EPOLLIN | libc::EPOLLRDHUP | any),
                    (bits::EVFILT_WRITE, libc::EPOLLOUT | any),
                ];
                for (filter, bits) in dirs {
                    if let Some(k) = self.knotes.get_mut(&(fd, filter)).filter(|_| mask & bits != 0) {
                        k.edged = true;
                    }
                }
            }
            if n < buf.len() {
                return;
            }
        }
    }

    /// Puts `fd` in the edge set with the directions of its `EV_CLEAR`
    /// knotes, or takes it out when it has none.
    fn watch_edges(&mut self, fd: RawFd) {
        let mut want = 0;
        for (filter, bit) in
            [(bits::EVFILT_READ, libc::EPOLLIN | libc::EPOLLRDHUP), (bits::EVFILT_WRITE, libc::EPOLLOUT)]
        {
            if self.knotes.get(&(fd as usize, filter)).is_some_and(|k| k.clear) {
                want |= bit;
            }
        }
        let ep = &self.edges;
        let mut ev = libc::epoll_event { events: (want | libc::EPOLLET) as u32, u64: fd as u64 };
        let ctl = |op, ev: &mut libc::epoll_event| {
            // SAFETY: epoll_ctl on our epoll fd with a live event.
            unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, ev) == 0 }
        };
        // Errors are the fd's own (closed): its knotes go at the next call.
        if want == 0 {
            ctl(libc::EPOLL_CTL_DEL, &mut ev);
        } else if !ctl(libc::EPOLL_CTL_MOD, &mut ev) {
            ctl(libc::EPOLL_CTL_ADD, &mut ev);
        }
    }
}

fn enable_disable(k: &mut Knote, flags: u16) {
    if flags & bits::EV_ENABLE != 0 {
        k.enabled = true;
    }
    if flags & bits::EV_DISABLE != 0 {
        k.enabled = false;
    }
}

/// What a filter sees of its fd now.
struct State {
    active: bool,
    eof: bool,
    fflags: u32,
    data: i64,
}

fn state(fd: RawFd, filter: i16, revents: i16, k: &Knote, q: &Quirks) -> State {
    let err = revents & libc::POLLERR != 0;
    let socket = k.file.is_some() && sock_type(fd).is_some();
    let fflags =
        if err && socket { (if k.connected { libc::ECONNRESET } else { libc::ECONNREFUSED }) as u32 } else { 0 };
    if filter == bits::EVFILT_READ {
        let eof = revents & (libc::POLLRDHUP | libc::POLLHUP) != 0 || (err && socket);
        let readable = revents & libc::POLLIN != 0;
        let data = ioctl_int(fd, libc::FIONREAD).map_or(i64::from(readable), i64::from);
        State { active: readable || eof || err, eof, fflags, data }
    } else {
        let writable = revents & libc::POLLOUT != 0;
        let shut = q.local_shutdown_eof && k.stream && !err && send_shut(fd);
        let eof = revents & libc::POLLHUP != 0 || err || shut;
        let data = send_space(fd).unwrap_or(i64::from(writable));
        State { active: writable || eof, eof, fflags, data }
    }
}

#[cfg(test)]
mod tests;
