//! The vocabulary shared by every backend: what the caller asks for
//! ([`Interest`], [`Trigger`]) and what it gets back ([`Ready`] in an
//! [`Event`], collected in [`Events`]).

use std::os::fd::RawFd;

use crate::Capabilities;

/// The caller's value that comes back with every event for a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub usize);

bitflags::bitflags! {
    /// The directions a registration watches. An empty interest is allowed
    /// and silences the fd (no ERR/HUP either) without forgetting it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Interest: u8 {
        /// Data, EOF or a pending connection to accept.
        const READ = 1 << 0;
        /// Room in the send buffer, or a connect that finished.
        const WRITE = 1 << 1;
    }
}

impl Interest {
    /// Both directions.
    pub const BOTH: Interest = Interest::READ.union(Interest::WRITE);
}

/// How events repeat.
///
/// | trigger | repeats | kernel mechanism |
/// |---|---|---|
/// | `Level` | every wait while the condition holds | epoll default, kqueue default, poll, select; event ports by re-associating after each event |
/// | `Edge` | once per change of state; the caller must drain to EAGAIN | `EPOLLET`, kqueue `EV_CLEAR` |
/// | `Oneshot` | once, then silence until [`modify`](crate::Poller::modify) | `EPOLLONESHOT`, kqueue `EV_DISPATCH`, event ports natively, poll/select by dropping the fd from the set |
/// | `EdgeOneshot` | once per arm, then silence until `modify`; re-arming with the condition still true fires at once | `EPOLLET \| EPOLLONESHOT`, kqueue `EV_CLEAR \| EV_DISPATCH`, `polling`'s `PollMode::EdgeOneshot` |
///
/// A backend that cannot do a trigger refuses it with an error that names the
/// backend and the trigger: edge is never emulated with level (the way
/// libevent does), because a program written for edge then spins.
///
/// # Portability
///
/// | backend | `Level` | `Edge` | `Oneshot` | `EdgeOneshot` |
/// |---|---|---|---|---|
/// | epoll | ✓ | ✓ | ✓ | ✓ |
/// | kqueue | ✓ | ✓ | ✓ | ✓ |
/// | event ports | ✓ | — | ✓ | — |
/// | poll | ✓ | — | ✓ | — |
/// | select | ✓ | — | ✓ | — |
/// | compat | ✓ | where `polling` has edge (epoll, kqueue) | ✓ | as `Edge` |
///
/// `—` is an [`Unsupported`](std::io::ErrorKind::Unsupported) error; check
/// [`Capabilities::allows`] first. kqueue's `EdgeOneshot` uses
/// `EV_DISPATCH` (the knote is disabled after one event and re-enabled by
/// `modify`) rather than `EV_ONESHOT` (deleted after one event), so that
/// it keeps the same knote bookkeeping as `Oneshot`; what the caller sees
/// is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// Level-triggered.
    Level,
    /// Edge-triggered.
    Edge,
    /// Oneshot: disarmed after one event.
    Oneshot,
    /// Edge-triggered and oneshot: one event per arm, then disarmed until
    /// `modify`.
    EdgeOneshot,
}

impl Trigger {
    /// Every trigger, in the order of the table above.
    pub const ALL: [Trigger; 4] = [Trigger::Level, Trigger::Edge, Trigger::Oneshot, Trigger::EdgeOneshot];

    /// `"level"`, `"edge"`, `"oneshot"` or `"edge-oneshot"`.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Level => "level",
            Trigger::Edge => "edge",
            Trigger::Oneshot => "oneshot",
            Trigger::EdgeOneshot => "edge-oneshot",
        }
    }

    /// The capability a backend needs for this trigger.
    pub fn capability(self) -> Capabilities {
        match self {
            Trigger::Level => Capabilities::LEVEL,
            Trigger::Edge => Capabilities::EDGE,
            Trigger::Oneshot => Capabilities::ONESHOT,
            Trigger::EdgeOneshot => Capabilities::EDGE_ONESHOT,
        }
    }

    /// Whether a registration with this trigger is disarmed by its event
    /// until `modify` (`Oneshot` and `EdgeOneshot`).
    pub fn is_oneshot(self) -> bool {
        matches!(self, Trigger::Oneshot | Trigger::EdgeOneshot)
    }
}

bitflags::bitflags! {
    /// Normalized readiness: the same meaning on every backend.
    ///
    /// | bit | meaning | epoll | kqueue | event ports / poll | select |
    /// |---|---|---|---|---|---|
    /// | `READABLE` | a recv will not block: data or EOF | `EPOLLIN` | `EVFILT_READ` | `POLLIN` | read set |
    /// | `WRITABLE` | a send will not block, or a connect ended | `EPOLLOUT` | `EVFILT_WRITE` | `POLLOUT` | write set |
    /// | `PRIORITY` | out-of-band data | `EPOLLPRI` | — | `POLLPRI` | except set |
    /// | `READ_CLOSED` | the peer will send nothing more | `EPOLLRDHUP` or HUP | `EV_EOF` on the read filter | `POLLRDHUP` (where it exists) or HUP | — |
    /// | `HUP` | both directions are closed | `EPOLLHUP` | `EV_EOF` on both filters | `POLLHUP` | — |
    /// | `ERROR` | the socket has a pending error | `EPOLLERR` | `EV_EOF` with a non-zero `fflags`, or `EV_ERROR` | `POLLERR`, `POLLNVAL` | — |
    ///
    /// Rules that hold on every backend:
    /// * `ERROR` is never reported with `READABLE` or `WRITABLE`, even where
    ///   the kernel sets IN and OUT too (Linux sets IN|OUT|ERR|HUP|RDHUP on a
    ///   refused connect). The next I/O on the fd returns the error (read it
    ///   with `SO_ERROR` or one recv). A reader that wants data queued before
    ///   a reset tries one recv when it sees `ERROR`.
    /// * `HUP` implies `READ_CLOSED`.
    /// * select reports no ERR/HUP at all (no [`Capabilities::ERRHUP`]): a
    ///   refused connect shows as `READABLE | WRITABLE` and must be confirmed
    ///   with `SO_ERROR`.
    /// * kqueue's `EV_EOF` also fires after a *local* `shutdown(SHUT_WR)` on
    ///   the write filter, so a write-side EOF alone is not proof that the
    ///   peer closed; only the read filter's EOF gives `READ_CLOSED`.
    ///
    /// ```
    /// use anypoll_backends::{registry, Capabilities, Events, Interest, Poller, Ready, Token, Trigger};
    /// use std::os::fd::AsRawFd;
    /// use std::time::Duration;
    ///
    /// // The rules, as `normalize` applies them to a raw translation.
    /// let refused = (Ready::READABLE | Ready::WRITABLE | Ready::ERROR | Ready::HUP).normalize();
    /// assert_eq!(refused, Ready::ERROR | Ready::HUP | Ready::READ_CLOSED);
    ///
    /// // A peer that closes: READABLE on every backend (the recv will say
    /// // EOF), READ_CLOSED too where the backend can tell.
    /// let (mut poller, _) = registry::choose(None, None).unwrap();
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// poller.add(b.as_raw_fd(), Token(1), Interest::READ, Trigger::Level).unwrap();
    /// drop(a);
    /// let mut events = Events::with_capacity(4);
    /// poller.wait(&mut events, Some(Duration::from_secs(5))).unwrap();
    /// let ready = events.iter().next().expect("the hang-up is an event").ready();
    /// assert!(ready.contains(Ready::READABLE) && !ready.contains(Ready::ERROR), "{ready:?}");
    /// if poller.capabilities().contains(Capabilities::RDHUP) {
    ///     assert!(ready.contains(Ready::READ_CLOSED), "{ready:?}");
    /// }
    /// ```
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Ready: u8 {
        /// A recv will not block: data or EOF.
        const READABLE = 1 << 0;
        /// A send will not block, or a pending connect has ended.
        const WRITABLE = 1 << 1;
        /// Out-of-band (priority) data.
        const PRIORITY = 1 << 2;
        /// The peer shut down its sending side.
        const READ_CLOSED = 1 << 3;
        /// Both directions are closed.
        const HUP = 1 << 4;
        /// A pending socket error.
        const ERROR = 1 << 5;
    }
}

impl Ready {
    /// Applies the cross-backend rules above to a raw translation: `ERROR`
    /// hides `READABLE`/`WRITABLE`/`PRIORITY`, and `HUP` implies `READ_CLOSED`.
    pub const fn normalize(self) -> Ready {
        let mut r = self;
        if r.contains(Ready::ERROR) {
            r = r.difference(Ready::READABLE.union(Ready::WRITABLE).union(Ready::PRIORITY));
        }
        if r.contains(Ready::HUP) {
            r = r.union(Ready::READ_CLOSED);
        }
        r
    }
}

/// One event: which registration, and what it is ready for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub(crate) token: Token,
    pub(crate) fd: RawFd,
    pub(crate) ready: Ready,
}

impl Event {
    /// Builds an event, for tests and for code that injects events.
    pub fn new(token: Token, fd: RawFd, ready: Ready) -> Event {
        Event { token, fd, ready }
    }
    /// The token given at registration.
    pub fn token(&self) -> Token {
        self.token
    }
    /// The fd the event is for.
    pub fn fd(&self) -> RawFd {
        self.fd
    }
    /// What the fd is ready for.
    pub fn ready(&self) -> Ready {
        self.ready
    }
}

/// The caller's buffer for [`Poller::wait`](crate::Poller::wait).
///
/// Its capacity bounds how many events one wait returns; it is at least 1,
/// since epoll_wait refuses `maxevents = 0` with EINVAL, and a loop that
/// retried that at once would spin.
///
/// ```
/// use anypoll_backends::{registry, Events, Interest, Poller, Token, Trigger};
/// use std::os::fd::AsRawFd;
/// use std::os::unix::net::UnixStream;
/// use std::time::Duration;
///
/// assert_eq!(Events::with_capacity(0).capacity(), 1);
///
/// // Three ready fds, room for two: a level-triggered wait hands out two,
/// // the next one the rest, and no event is lost.
/// let (mut poller, _) = registry::choose(None, None).unwrap();
/// let pairs: Vec<_> = (0..3).map(|_| UnixStream::pair().unwrap()).collect();
/// for (i, (a, _)) in pairs.iter().enumerate() {
///     poller.add(a.as_raw_fd(), Token(i), Interest::WRITE, Trigger::Level).unwrap();
/// }
/// let mut events = Events::with_capacity(2);
/// let mut seen = Vec::new();
/// for _ in 0..2 {
///     let n = poller.wait(&mut events, Some(Duration::from_secs(5))).unwrap();
///     assert!(n <= 2 && n == events.len() && !events.woken());
///     seen.extend(events.iter().map(|ev| ev.token().0));
///     for ev in &events {
///         poller.delete(ev.fd()).unwrap(); // served: out of the next wait
///     }
/// }
/// seen.sort();
/// assert_eq!(seen, [0, 1, 2]);
///
/// // A waker's wake-up is no event, but the buffer says so.
/// poller.waker().wake().unwrap();
/// poller.wait(&mut events, Some(Duration::from_secs(5))).unwrap();
/// assert!(events.woken() && events.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct Events {
    list: Vec<Event>,
    cap: usize,
    woken: bool,
}

impl Events {
    /// A buffer for up to `capacity` events per wait (at least 1).
    pub fn with_capacity(capacity: usize) -> Events {
        let cap = capacity.max(1);
        Events { list: Vec::with_capacity(cap), cap, woken: false }
    }
    /// How many events one wait may return.
    pub fn capacity(&self) -> usize {
        self.cap
    }
    /// How many events the last wait returned.
    pub fn len(&self) -> usize {
        self.list.len()
    }
    /// Whether the last wait returned no event.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
    /// Whether a [`Waker`](crate::Waker) woke the last wait.
    pub fn woken(&self) -> bool {
        self.woken
    }
    /// The events of the last wait.
    pub fn iter(&self) -> std::slice::Iter<'_, Event> {
        self.list.iter()
    }
    /// Empties the buffer.
    pub fn clear(&mut self) {
        self.list.clear();
        self.woken = false;
    }
    pub(crate) fn is_full(&self) -> bool {
        self.list.len() >= self.cap
    }
    pub(crate) fn push(&mut self, ev: Event) {
        self.list.push(ev);
    }
    pub(crate) fn set_woken(&mut self) {
        self.woken = true;
    }
    /// Merges `ready` into the last event if it is for `fd` (kqueue reports
    /// the read and write filters as two events).
    #[cfg_attr(not(anypoll_kqueue), allow(dead_code))]
    pub(crate) fn merge_last(&mut self, fd: RawFd, ready: Ready) -> bool {
        match self.list.last_mut() {
            Some(ev) if ev.fd == fd => {
                ev.ready = (ev.ready | ready).normalize();
                true
            }
            _ => false,
        }
    }
}

impl<'a> IntoIterator for &'a Events {
    type Item = &'a Event;
    type IntoIter = std::slice::Iter<'a, Event>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_error_hides_io_and_hup_implies_read_closed() {
        let r = (Ready::READABLE | Ready::WRITABLE | Ready::ERROR | Ready::HUP).normalize();
        assert_eq!(r, Ready::ERROR | Ready::HUP | Ready::READ_CLOSED);
        assert_eq!(Ready::READABLE.normalize(), Ready::READABLE);
    }

    #[test]
    fn every_trigger_has_its_own_name_and_capability() {
        for (i, a) in Trigger::ALL.iter().enumerate() {
            assert_eq!(a.capability().bits().count_ones(), 1, "{a:?}");
            for b in &Trigger::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
                assert!(!a.capability().intersects(b.capability()), "{a:?} and {b:?}");
            }
        }
        let oneshots: Vec<Trigger> = Trigger::ALL.into_iter().filter(|t| t.is_oneshot()).collect();
        assert_eq!(oneshots, [Trigger::Oneshot, Trigger::EdgeOneshot]);
        // Edge and oneshot together are not edge-oneshot: a backend claims it on its own.
        assert!(!(Capabilities::EDGE | Capabilities::ONESHOT).allows(Trigger::EdgeOneshot));
    }

    #[test]
    fn events_capacity_is_at_least_one() {
        assert_eq!(Events::with_capacity(0).capacity(), 1);
    }

    #[test]
    fn merge_last_only_merges_same_fd() {
        let mut e = Events::with_capacity(4);
        assert!(!e.merge_last(3, Ready::READABLE));
        e.push(Event::new(Token(1), 3, Ready::READABLE));
        assert!(e.merge_last(3, Ready::WRITABLE));
        assert!(!e.merge_last(4, Ready::WRITABLE));
        assert_eq!(e.iter().next().unwrap().ready(), Ready::READABLE | Ready::WRITABLE);
    }
}
