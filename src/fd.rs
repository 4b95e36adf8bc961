//! The fd table: what the loop knows about each fd, and the rules that turn
//! that knowledge into kernel registrations.
//!
//! # State of one fd
//!
//! Each fd has two directions, recv and send, and each direction three bits:
//!
//! * `ACTIVE`: the owner wants to do I/O in this direction;
//! * `READY`: no EAGAIN was seen since the poller last said "ready" (or since
//!   the owner declared it ready), so an I/O attempt is worth making;
//! * `SHUT`: the direction is closed (recv returned 0, a hang-up was
//!   reported, or the owner shut it); nothing more will ever happen there.
//!
//! plus a sticky `ERROR` (a hard error was reported or returned) and the
//! sticky hang-up bits the poller reported (`SEEN_RDHUP`, `SEEN_HUP`).
//!
//! # Rules
//!
//! 1. **Speculative I/O.** Enabling a direction (`want_*`) does not touch the
//!    kernel. If the direction is READY, the owner is called at once, without
//!    a wait (and the wait timeout is 0 while such an fd exists). It tries the
//!    I/O; only an EAGAIN (`Ctx::would_block`) clears READY, and only then is the
//!    direction polled.
//! 2. **Update list.** Every state change that could alter what the kernel
//!    must watch puts the fd on the update list, once. The list is applied in
//!    one batch just before the wait. An fd whose wanted registration equals
//!    its current one costs nothing, so enabling then disabling a direction
//!    between two waits costs no syscall.
//! 3. **Level strategy.** A direction is polled when it is ACTIVE and not
//!    READY. Once polled, it stays polled while ACTIVE even when an event
//!    makes it READY again (lazy removal): the kernel is only told to stop
//!    when the owner stops wanting the direction, or ignores a call (makes
//!    no progress in it): the kernel would then report the same READY
//!    direction at every wait, a spin, so the loop stops polling it. A short
//!    read or write means the socket was drained at that instant, so it
//!    clears READY without the extra call that would only return EAGAIN
//!    ("done").
//!
//!    An fd registered with the `STREAM` property (a byte stream, where the
//!    short-read rule is exact) is registered **edge-triggered** when the
//!    backend can do it and also reports read hang-ups (epoll, kqueue; not
//!    compat, whose `polling` reports no RDHUP: an end of input that came
//!    in before a short read would never be reported again), with the
//!    same polled set. The
//!    kernel's level re-report adds nothing the READY bits do not already
//!    say, and it costs: a level-triggered epoll keeps every fd it reported
//!    on its ready list and polls it again at the next wait, to find it
//!    empty. Any other fd stays level-triggered, so when a short read did
//!    not drain it (a datagram socket, a terminal), the kernel reports it
//!    again and nothing is lost. A direction that becomes polled again is
//!    (re-)added or modified, and both re-check readiness in the kernel, so
//!    readiness that arrived while it was not polled is reported.
//! 4. **Edge strategy.** Both directions are registered once, when the fd is
//!    added, and never changed. READY is set by events and cleared only by
//!    EAGAIN, or by a shutdown report: a short read proves nothing, unless a
//!    hang-up (RDHUP/HUP) was reported.
//! 5. **Nothing is polled that cannot change.** A SHUT direction, and every
//!    direction of an fd with a sticky ERROR or HUP, is not polled: the
//!    kernel would report the same final state on every wait (level) and the
//!    loop would spin. The owner learns the state from the sticky bits,
//!    which keep the direction READY, so a close is never missed; and an
//!    EAGAIN under a sticky ERROR not told yet is that error (read with
//!    `SO_ERROR`), never a wait, since no event would end the wait.
//! 6. **Generations.** Each registration of an fd number gets a new
//!    generation, carried in the poller token. An event whose generation is
//!    not the fd's current one was queued for a previous owner of the number
//!    (closed and reused within one batch) and is dropped.

use std::os::fd::RawFd;

use anypoll_backends::{Interest, Ready};

bitflags::bitflags! {
    /// The state bits of one fd; see the [module docs](self).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct FdState: u16 {
        /// The owner wants to receive.
        const RECV_ACTIVE = 1 << 0;
        /// A recv is worth trying.
        const RECV_READY = 1 << 1;
        /// Nothing more will be received.
        const RECV_SHUT = 1 << 2;
        /// The owner wants to send.
        const SEND_ACTIVE = 1 << 3;
        /// A send is worth trying.
        const SEND_READY = 1 << 4;
        /// Nothing more can be sent.
        const SEND_SHUT = 1 << 5;
        /// A hard error was reported or returned (sticky).
        const ERROR = 1 << 6;
        /// The poller reported that the peer closed its sending side (sticky).
        const SEEN_RDHUP = 1 << 7;
        /// The poller reported that both directions are closed (sticky).
        const SEEN_HUP = 1 << 8;
        /// Set by the owner at registration: the fd is a byte stream (a
        /// TCP or Unix stream socket, a pipe), so a short read or write
        /// proves it drained or full at that instant. The level strategy
        /// then registers it edge-triggered where the backend can (rule 3).
        /// Never set it on a datagram socket, a listener or a terminal: a
        /// short read there proves nothing, and only level triggering would
        /// report the rest.
        const STREAM = 1 << 9;
    }
}

bitflags::bitflags! {
    /// The directions of an fd that are worth an I/O attempt now: ACTIVE
    /// (the owner wants them) and READY (no EAGAIN since the poller or the
    /// owner said so). What [`IoEvent::ready`](crate::IoEvent::ready)
    /// holds.
    ///
    /// Its own type, because neither of the backends' types says this.
    /// [`Interest`] is what the kernel is asked to watch, and a direction
    /// can be runnable while it is not watched at all (speculative I/O:
    /// READY without a poll). [`Ready`] is what the kernel reported last,
    /// with HUP, ERROR and PRIORITY bits that never appear here (they are
    /// in [`FdState`]), and a direction can be runnable without any report.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Directions: u8 {
        /// A recv is worth trying.
        const RECV = 1 << 0;
        /// A send is worth trying.
        const SEND = 1 << 1;
    }
}

impl Directions {
    /// The kernel interest that watches these directions.
    pub(crate) fn interest(self) -> Interest {
        let mut i = Interest::empty();
        if self.contains(Directions::RECV) {
            i |= Interest::READ;
        }
        if self.contains(Directions::SEND) {
            i |= Interest::WRITE;
        }
        i
    }
}

/// How the loop uses the kernel; see rules 3 and 4 in the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Poll a direction while it is ACTIVE and not READY.
    Level,
    /// Register both directions once; READY cleared only by EAGAIN.
    Edge,
}

impl Strategy {
    /// `"level"` or `"edge"`.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Level => "level",
            Strategy::Edge => "edge",
        }
    }
}

/// One fd's entry.
#[derive(Debug, Clone, Copy)]
pub struct FdEntry {
    /// The state bits.
    pub state: FdState,
    /// The generation of this registration.
    pub gen: u32,
    /// The owner's value, handed back with every call.
    pub owner: usize,
    /// What the kernel currently watches (`None`: not registered at all).
    pub polled: Option<Interest>,
    /// Whether the fd is on the update list.
    pub(crate) queued: bool,
    /// Whether the fd is on the speculative (run) list.
    pub(crate) spec: bool,
    /// Set when the kernel must be told again even if what it watches does
    /// not change: a re-registration makes it check readiness anew (after
    /// a hang-up report was forgotten, an edge-triggered kernel would
    /// otherwise never report a real one again).
    pub(crate) rearm: bool,
    /// Set when the owner made progress (I/O that moved data, or a state
    /// change) during its last call; an owner that did nothing is not
    /// called again until something new happens, so an ignored event
    /// cannot turn into a spin.
    pub(crate) progress: bool,
    /// Set once an I/O call returned the fd's hard error (`Io::Error`):
    /// the ERROR bit then no longer stands for an error still to be told,
    /// and the end of input is plain `Io::Closed`.
    pub(crate) error_told: bool,
    /// What the poller reported last for this fd (empty before any event).
    /// The transport reads it for the rules that depend on the exact flags
    /// (HUP without IN, ERR without IN on a pending connect).
    pub last: Ready,
}

impl FdEntry {
    /// The directions that are ACTIVE and READY (the owner should be called).
    pub fn runnable(&self) -> Directions {
        let s = self.state;
        let mut d = Directions::empty();
        if s.contains(FdState::RECV_ACTIVE | FdState::RECV_READY) {
            d |= Directions::RECV;
        }
        if s.contains(FdState::SEND_ACTIVE | FdState::SEND_READY) {
            d |= Directions::SEND;
        }
        d
    }
}

/// What the kernel should watch for an fd in `state`, given what it
/// watches now (`polled`) and the strategy. Pure: rules 3 to 5.
pub fn wanted(state: FdState, polled: Option<Interest>, strategy: Strategy) -> Interest {
    if state.intersects(FdState::ERROR | FdState::SEEN_HUP) {
        return Interest::empty();
    }
    let now = polled.unwrap_or(Interest::empty());
    let dir = |active: FdState, ready: FdState, shut: FdState, bit: Interest| -> bool {
        if state.contains(shut) {
            return false;
        }
        match strategy {
            Strategy::Edge => true,
            Strategy::Level => state.contains(active) && (!state.contains(ready) || now.contains(bit)),
        }
    };
    let mut w = Interest::empty();
    if dir(FdState::RECV_ACTIVE, FdState::RECV_READY, FdState::RECV_SHUT, Interest::READ) {
        w |= Interest::READ;
    }
    if dir(FdState::SEND_ACTIVE, FdState::SEND_READY, FdState::SEND_SHUT, Interest::WRITE) {
        w |= Interest::WRITE;
    }
    w
}

/// The state after the poller reported `ready`. Pure.
///
/// READABLE, READ_CLOSED, HUP and ERROR all make recv READY: the owner must
/// try a recv to see the data, the EOF or the error (a sticky HUP or ERROR
/// keeps it READY, so a close is never missed). WRITABLE, HUP and ERROR make
/// send READY.
pub fn on_event(state: FdState, ready: Ready) -> FdState {
    let mut s = state;
    if ready.intersects(Ready::READABLE | Ready::READ_CLOSED | Ready::HUP | Ready::ERROR | Ready::PRIORITY) {
        s |= FdState::RECV_READY;
    }
    if ready.intersects(Ready::WRITABLE | Ready::HUP | Ready::ERROR) {
        s |= FdState::SEND_READY;
    }
    if ready.contains(Ready::READ_CLOSED) {
        s |= FdState::SEEN_RDHUP;
    }
    if ready.contains(Ready::HUP) {
        s |= FdState::SEEN_HUP | FdState::SEEN_RDHUP;
    }
    if ready.contains(Ready::ERROR) {
        s |= FdState::ERROR;
    }
    s
}

/// The fd table, indexed by fd number, with its update and run lists.
#[derive(Debug)]
pub struct FdTable {
    entries: Vec<Option<FdEntry>>,
    next_gen: u32,
    strategy: Strategy,
    pub(crate) updates: Vec<RawFd>,
    pub(crate) spec: Vec<RawFd>,
    count: usize,
}

impl FdTable {
    /// An empty table for a loop with `strategy`.
    pub fn new(strategy: Strategy) -> FdTable {
        FdTable { entries: Vec::new(), next_gen: 1, strategy, updates: Vec::new(), spec: Vec::new(), count: 0 }
    }

    /// Adds `fd` with `state`, a fresh generation, and queues it for
    /// update; returns the generation. `None` for a negative number, which
    /// no fd has (the table is indexed by number).
    pub fn insert(&mut self, fd: RawFd, owner: usize, state: FdState) -> Option<u32> {
        let i = usize::try_from(fd).ok()?;
        if i >= self.entries.len() {
            self.entries.resize(i + 1, None);
        }
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        let entry = FdEntry {
            state,
            gen,
            owner,
            polled: None,
            queued: false,
            spec: false,
            rearm: false,
            progress: true,
            error_told: false,
            last: Ready::empty(),
        };
        if self.entries[i].replace(entry).is_none() {
            self.count += 1;
        }
        self.queue(fd);
        Some(gen)
    }

    /// Removes `fd`; returns its last entry.
    pub fn remove(&mut self, fd: RawFd) -> Option<FdEntry> {
        let e = self.entries.get_mut(usize::try_from(fd).ok()?)?.take();
        if e.is_some() {
            self.count -= 1;
        }
        e
    }

    /// The entry of `fd`.
    pub fn get(&self, fd: RawFd) -> Option<&FdEntry> {
        self.entries.get(usize::try_from(fd).ok()?)?.as_ref()
    }

    /// The entry of `fd`, mutable.
    pub fn get_mut(&mut self, fd: RawFd) -> Option<&mut FdEntry> {
        self.entries.get_mut(usize::try_from(fd).ok()?)?.as_mut()
    }

    /// How many fds are in the table.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every fd in the table.
    pub fn iter(&self) -> impl Iterator<Item = (RawFd, &FdEntry)> {
        self.entries.iter().enumerate().filter_map(|(i, e)| Some((i as RawFd, e.as_ref()?)))
    }

    /// Puts `fd` on the update list (once).
    pub fn queue(&mut self, fd: RawFd) {
        if let Some(e) = self.entries.get_mut(index(fd)).and_then(Option::as_mut) {
            push_once(&mut self.updates, &mut e.queued, fd);
        }
    }

    /// Changes the state of `fd`: sets `set`, clears `clear`; with
    /// `progress`, records progress even when the state does not change.
    /// A change counts as progress, and queues the fd for update only if it
    /// alters what the kernel must watch (so the common "event, then a
    /// short read" costs the update list nothing). A direction left
    /// runnable is scheduled for a speculative call. One lookup in all.
    pub fn change(&mut self, fd: RawFd, set: FdState, clear: FdState, progress: bool) {
        let strategy = self.strategy;
        let Some(e) = self.entries.get_mut(index(fd)).and_then(Option::as_mut) else { return };
        let new = (e.state | set) - clear;
        e.progress |= progress;
        if new != e.state {
            e.state = new;
            e.progress = true;
            if wanted(new, e.polled, strategy) != e.polled.unwrap_or(Interest::empty()) {
                push_once(&mut self.updates, &mut e.queued, fd);
            }
        }
        if !e.runnable().is_empty() {
            push_once(&mut self.spec, &mut e.spec, fd);
        }
    }

    /// Puts `fd` on the run list (once), for a speculative call.
    pub(crate) fn schedule(&mut self, fd: RawFd) {
        if let Some(e) = self.entries.get_mut(index(fd)).and_then(Option::as_mut) {
            push_once(&mut self.spec, &mut e.spec, fd);
        }
    }
}

/// The table index of `fd`: a negative number maps past any table, so
/// lookups find nothing (never a wrap-around to a huge index by `as`).
fn index(fd: RawFd) -> usize {
    usize::try_from(fd).unwrap_or(usize::MAX)
}

/// Pushes `fd` on `list` unless its entry's flag `on` says it is there
/// already: the update list (flag `queued`) and the run list (`spec`) hold
/// each fd once.
fn push_once(list: &mut Vec<RawFd>, on: &mut bool, fd: RawFd) {
    if !*on {
        *on = true;
        list.push(fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RA: FdState = FdState::RECV_ACTIVE;
    const RR: FdState = FdState::RECV_READY;
    const SA: FdState = FdState::SEND_ACTIVE;
    const SR: FdState = FdState::SEND_READY;

    #[test]
    fn level_polls_active_and_not_ready() {
        assert_eq!(wanted(RA, None, Strategy::Level), Interest::READ);
        assert_eq!(wanted(RA | RR, None, Strategy::Level), Interest::empty());
        assert_eq!(wanted(RA | SA | SR, None, Strategy::Level), Interest::READ);
        assert_eq!(wanted(FdState::empty(), Some(Interest::BOTH), Strategy::Level), Interest::empty());
    }

    #[test]
    fn level_keeps_a_polled_direction_that_became_ready() {
        // Lazy removal: an event made it READY; no syscall to unpoll it.
        assert_eq!(wanted(RA | RR, Some(Interest::READ), Strategy::Level), Interest::READ);
    }

    #[test]
    fn edge_registers_both_once() {
        assert_eq!(wanted(FdState::empty(), None, Strategy::Edge), Interest::BOTH);
        assert_eq!(wanted(RA | RR, Some(Interest::BOTH), Strategy::Edge), Interest::BOTH);
    }

    #[test]
    fn final_states_are_not_polled() {
        for s in [FdState::ERROR, FdState::SEEN_HUP] {
            assert_eq!(wanted(RA | SA | s, Some(Interest::BOTH), Strategy::Level), Interest::empty());
            assert_eq!(wanted(RA | SA | s, Some(Interest::BOTH), Strategy::Edge), Interest::empty());
        }
        assert_eq!(wanted(RA | FdState::RECV_SHUT | SA, None, Strategy::Level), Interest::WRITE);
    }

    #[test]
    fn events_make_directions_ready_and_stick() {
        let s = on_event(RA, Ready::ERROR);
        assert!(s.contains(RR | SR | FdState::ERROR));
        let s = on_event(RA, Ready::HUP | Ready::READ_CLOSED);
        assert!(s.contains(RR | SR | FdState::SEEN_HUP | FdState::SEEN_RDHUP));
        assert_eq!(on_event(FdState::empty(), Ready::WRITABLE), SR);
    }

    #[test]
    fn a_change_queues_only_what_the_kernel_must_hear() {
        let mut t = FdTable::new(Strategy::Level);
        t.insert(4, 0, RA);
        t.updates.clear();
        let e = t.get_mut(4).unwrap();
        e.queued = false;
        e.polled = Some(Interest::READ);
        e.state |= RR; // an event
                       // A short read clears READY: still polled (lazy), so no update.
        t.change(4, FdState::empty(), RR, true);
        assert!(t.updates.is_empty());
        assert!(t.get(4).unwrap().progress);
        // Stopping the direction must reach the kernel.
        t.change(4, FdState::empty(), RA, false);
        assert_eq!(t.updates, vec![4]);
    }

    #[test]
    fn a_negative_fd_is_refused_and_never_indexes() {
        let mut t = FdTable::new(Strategy::Level);
        assert_eq!(t.insert(-1, 0, RA), None);
        assert_eq!(t.insert(RawFd::MIN, 0, RA), None);
        assert!(t.is_empty() && t.updates.is_empty());
        assert!(t.get(-1).is_none() && t.get_mut(-1).is_none() && t.remove(-1).is_none());
        t.change(-1, RA, FdState::empty(), true);
        t.queue(-1);
        t.schedule(-1);
        assert!(t.updates.is_empty() && t.spec.is_empty());
    }

    #[test]
    fn toggling_queues_once_and_generations_differ() {
        let mut t = FdTable::new(Strategy::Level);
        let g1 = t.insert(4, 0, FdState::empty());
        t.change(4, RA, FdState::empty(), false);
        t.change(4, FdState::empty(), RA, false);
        assert_eq!(t.updates, vec![4]);
        let g2 = t.insert(4, 0, FdState::empty());
        assert!(g1.is_some() && g2.is_some());
        assert_ne!(g1, g2);
        assert_eq!(t.len(), 1);
    }
}
