//! The kqueue backend (macOS, iOS, FreeBSD, NetBSD, OpenBSD, DragonFly).
//!
//! ## Native facts this backend is built on
//!
//! * One *knote* per (ident, filter). An fd has separate `EVFILT_READ` and
//!   `EVFILT_WRITE` knotes, so one fd can come back as two events in one
//!   wait, not necessarily adjacent: they are merged into one
//!   [`Event`](crate::Event) (see [`translate_fd`]).
//! * Level is the default, `EV_CLEAR` gives edge, `EV_DISPATCH` gives oneshot
//!   (the knote is *disabled* after one delivery and re-enabled by `EV_ENABLE`,
//!   which re-checks the condition). `EV_ADD` on an existing knote updates its
//!   udata, but **not** its `EV_CLEAR`/`EV_DISPATCH` (FreeBSD's
//!   `kqueue_register` only copies udata, fflags and data), and does not
//!   re-enable it without `EV_ENABLE`: a change of trigger is `EV_DELETE` +
//!   `EV_ADD`, and every add/modify sends `EV_ADD | EV_ENABLE`.
//! * Knotes belong to the fd *number*: `close()` removes them (even when a
//!   `dup` keeps the file open), so unlike epoll no stale registration
//!   survives a close.
//! * `kevent()` applies the changelist in order, then waits. A change that
//!   fails is copied to the event list with `EV_ERROR` and the errno in
//!   `data` (ident, filter and udata kept), and then **the call does not wait
//!   at all**: it returns only those error entries. If the event list has no
//!   room for an error, `kevent()` fails with that errno and the changes after
//!   it are *not* applied. `EV_RECEIPT` makes every change produce an entry
//!   (`data` 0 on success), which also means no wait. On `EINTR` all changes
//!   were applied (kqueue(2) of FreeBSD and NetBSD).
//! * `EV_EOF` on the read filter: the peer will send nothing more; `fflags`
//!   then holds the socket error (0 for a clean FIN). On the write filter,
//!   `EV_EOF` means the sending side is shut — also after a *local*
//!   `shutdown(SHUT_WR)`, so it does not prove that the peer closed.
//! * The kevent struct differs: NetBSD has `uint32_t` filter and flags and
//!   numbers its filters from 0 (`EVFILT_READ` 0, `EVFILT_WRITE` 1) where
//!   the others use negative `short`s (-1, -2); FreeBSD ≥ 12 has an `ext[4]`
//!   tail; `data` is `intptr_t` on macOS and DragonFly, `int64_t` elsewhere;
//!   `udata` is `void *` except on NetBSD before 10 (`intptr_t`, and older
//!   `libc` crates spell it so). `kevent()`'s counts are `size_t` on NetBSD.
//!   Structs are built zeroed and filled field by field; udata goes through
//!   a small trait that accepts either type.
//! * macOS rejects a timeout above 100,000,000 s with `EINVAL`: longer
//!   waits are capped there (an early `Ok(0)` is harmless).
//! * Older macOS fails `EV_ADD` of `EVFILT_WRITE` with `EPIPE` on a pipe whose
//!   reader is gone, yet reports events for it (mio#582): `EPIPE` on an add
//!   is ignored.
//!
//! ## Readiness mapping ([`translate`], [`translate_fd`])
//!
//! | native event | [`Ready`] |
//! |---|---|
//! | `EVFILT_READ` | `READABLE` |
//! | `EVFILT_READ` + `EV_EOF` (half close, `fflags` 0) | `READABLE \| READ_CLOSED` (EOF is readable: recv returns 0) |
//! | `EVFILT_READ` + `EV_EOF` + `fflags` ≠ 0 (reset, refused connect) | `ERROR \| READ_CLOSED` |
//! | `EVFILT_WRITE` | `WRITABLE` |
//! | `EVFILT_WRITE` + `EV_EOF`, `fflags` 0 | `WRITABLE` only (a local `shutdown(SHUT_WR)` gives it too) |
//! | `EVFILT_WRITE` + `EV_EOF` + `fflags` ≠ 0 | `ERROR` |
//! | `EV_ERROR` with `data` ≠ 0 | `ERROR` |
//! | `EV_ERROR` with `data` 0 | nothing (an `EV_RECEIPT` receipt) |
//! | read **and** write `EV_EOF` for one fd in one wait | adds `HUP` |
//!
//! `HUP` means "both directions are closed", and that is exactly what EOF
//! on both filters says (the receive side by the peer, the send side by the
//! peer's reset or by our own `shutdown(SHUT_WR)`). Linux's `EPOLLHUP` is
//! set in the same case (`sk_shutdown == SHUTDOWN_MASK`), so a refused
//! connect reads `ERROR | HUP | READ_CLOSED` on both backends. A write-side
//! EOF alone is never `HUP`. `HUP` needs both filters registered and firing
//! in the same wait, so on kqueue `READ_CLOSED` is the dependable signal.
//! Every result is [normalized](Ready::normalize): `ERROR` hides
//! `READABLE`/`WRITABLE`.
//!
//! ## How changes reach the kernel
//!
//! * `add` and `modify` make **no syscall**: they queue changes, which go
//!   into the next wait's `kevent()` call
//!   ([`Capabilities::BATCH`](crate::Capabilities::BATCH)). Changes for one
//!   (fd, filter) are coalesced while queued, so at most one
//!   `EV_DELETE` and one `EV_ADD`/`EV_DISABLE` per filter travel together,
//!   and a change that only undoes a queued one disappears (an `add`
//!   followed by a `modify` to an empty interest costs nothing).
//! * **Per-change errors** come back as `EV_ERROR` entries. The fd is the
//!   entry's ident; which change failed is found by walking the sent list
//!   forward from the previous match (errors come back in changelist order),
//!   matching fd, filter and udata — `EV_DELETE` carries udata 0, every other
//!   change its slot generation (≥ 1) — so a `DELETE` + `ADD` pair for one
//!   filter is told apart. `ENOENT`/`EBADF` on `EV_DELETE`/`EV_DISABLE` are
//!   harmless (the knote already went, e.g. with `close()`). A failed
//!   `EV_ADD` is logged with `log::warn!` naming the fd and errno — the
//!   `add`/`modify` call already returned — and its registration gets one
//!   [`Ready::ERROR`] event (through the slot table, so only if the
//!   generation is still current), so that its owner does not wait forever.
//!   When errors made the call return without waiting and produced no event,
//!   the wait is issued again (with no changes).
//! * **Room for errors.** Every change could fail, so the changelist sent
//!   with the wait is never longer than the event list (the caller's
//!   capacity). When more changes are queued, they are first applied in one
//!   separate `kevent()` call with `EV_RECEIPT` on each and an event list as
//!   long as the changelist: receipts guarantee the kernel returns without
//!   collecting readiness events, so nothing beyond the capacity is drained.
//!   ERROR events from that call that do not fit are kept for the next wait.
//! * **delete is immediate.** `delete()` drops the fd's queued changes and,
//!   if any of its knotes may be in the kernel, removes them at once with one
//!   `kevent(EV_DELETE | EV_RECEIPT)` call (`ENOENT`/`EBADF` ignored). The
//!   caller may then close the fd at once, or keep it open (hand it to
//!   another loop) without a knote left behind — a left-behind level knote
//!   would wake every wait with events the slot table drops. Relying on
//!   `close()` alone cannot cover the fd that stays open, and a queued
//!   `EV_DELETE` would hit `EBADF` after a close and make that wait cost two
//!   syscalls. An fd whose changes never reached the kernel is deleted
//!   without a syscall.
//!
//! ## Oneshot
//!
//! `EV_DISPATCH` on each watched filter. When one filter of a registration
//! that watches both fires, the slot is disarmed and an `EV_DISABLE` for the
//! other filter is queued (it travels with the next wait), so the fd is
//! silent until `modify`, like `EPOLLONESHOT`. `modify` re-arms with
//! `EV_ADD | EV_ENABLE`. An empty interest deletes both knotes.
//!
//! ## Stale events and the waker
//!
//! * udata carries the slot generation (never 0); the fd is the event's
//!   ident. Every event goes through the slot table's `accept`.
//! * The waker is an `EVFILT_USER` knote (ident 0, udata 0) added with
//!   `EV_CLEAR` — without it the user event stays triggered and every wait
//!   returns at once — and triggered with `NOTE_TRIGGER` and *no* `EV_ADD`
//!   or `EV_CLEAR` (an `EV_CLEAR` in the trigger resets it on FreeBSD, and
//!   an `EV_ADD` could re-create it without `EV_CLEAR`). Where the kernel
//!   refuses `EVFILT_USER` with `EINVAL` (NetBSD before 10) it falls back to
//!   a pipe; OpenBSD (no `EVFILT_USER` before 7.8) always uses the pipe,
//!   registered as `EVFILT_READ` with udata 0 and drained when it fires.

// The change queue and the per-fd merge are pure (tested on every host) but
// only the kqueue platforms call them.
#![cfg_attr(not(anypoll_kqueue), allow(dead_code))]

use std::os::fd::RawFd;

use crate::slots::Slot;
use crate::{Interest, Ready, Trigger};

/// kqueue's constants, with their values spelled out so that [`translate`]
/// builds and is tested on every host. The flag values are the same on every
/// kqueue platform; the filter numbers are not (NetBSD counts from 0).
pub mod bits {
    /// `EVFILT_READ` on macOS, iOS, FreeBSD, OpenBSD and DragonFly.
    pub const EVFILT_READ: i16 = -1;
    /// `EVFILT_WRITE` on macOS, iOS, FreeBSD, OpenBSD and DragonFly.
    pub const EVFILT_WRITE: i16 = -2;
    /// `EVFILT_READ` on NetBSD (whose `filter` field is a `uint32_t`).
    pub const NETBSD_EVFILT_READ: u32 = 0;
    /// `EVFILT_WRITE` on NetBSD.
    pub const NETBSD_EVFILT_WRITE: u32 = 1;
    /// `EV_ADD`: add the knote, or update an existing one (udata only).
    pub const EV_ADD: u16 = 0x0001;
    /// `EV_DELETE`: remove the knote.
    pub const EV_DELETE: u16 = 0x0002;
    /// `EV_ENABLE`: let a disabled knote report again.
    pub const EV_ENABLE: u16 = 0x0004;
    /// `EV_DISABLE`: keep the knote but report nothing.
    pub const EV_DISABLE: u16 = 0x0008;
    /// `EV_CLEAR`: reset the state after each delivery (edge).
    pub const EV_CLEAR: u16 = 0x0020;
    /// `EV_RECEIPT`: every change returns an `EV_ERROR` entry, `data` 0 on success.
    pub const EV_RECEIPT: u16 = 0x0040;
    /// `EV_DISPATCH`: disable the knote after one delivery (oneshot).
    pub const EV_DISPATCH: u16 = 0x0080;
    /// `EV_ERROR`: a change failed; `data` is the errno.
    pub const EV_ERROR: u16 = 0x4000;
    /// `EV_EOF`: the direction is shut; on sockets `fflags` holds `so_error`.
    pub const EV_EOF: u16 = 0x8000;
    /// `NOTE_TRIGGER`: fires an `EVFILT_USER` knote.
    pub const NOTE_TRIGGER: u32 = 0x0100_0000;
}

/// One of the two filters this backend uses. (The native numbers differ per
/// platform, see [`bits`], so the filter is decoded before translation.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter {
    /// `EVFILT_READ`.
    Read,
    /// `EVFILT_WRITE`.
    Write,
}

impl Filter {
    const BOTH: [Filter; 2] = [Filter::Read, Filter::Write];

    /// The interest direction this filter watches.
    pub fn interest(self) -> Interest {
        match self {
            Filter::Read => Interest::READ,
            Filter::Write => Interest::WRITE,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Filter::Read => 1,
            Filter::Write => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Filter::Read => "EVFILT_READ",
            Filter::Write => "EVFILT_WRITE",
        }
    }
}

/// The part of a returned `struct kevent` that [`translate`] reads, with the
/// filter decoded and the flags narrowed to 16 bits (NetBSD's are 32 bits
/// wide but use only the low 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeEvent {
    /// Which filter fired.
    pub filter: Filter,
    /// `flags` (`EV_EOF`, `EV_ERROR`, …; see [`bits`]).
    pub flags: u16,
    /// `fflags`: with `EV_EOF` on a socket, the pending socket error.
    pub fflags: u32,
    /// `data`: bytes available or send-buffer room; with `EV_ERROR`, the errno.
    pub data: i64,
}

/// Translates one kqueue event into [`Ready`]; see the table in the
/// [module docs](self).
pub fn translate(ev: NativeEvent) -> Ready {
    if ev.flags & bits::EV_ERROR != 0 {
        // data 0 is an EV_RECEIPT receipt for a change that worked.
        return if ev.data != 0 { Ready::ERROR } else { Ready::empty() };
    }
    let eof = ev.flags & bits::EV_EOF != 0;
    let mut r = match ev.filter {
        Filter::Read if eof => Ready::READABLE | Ready::READ_CLOSED,
        Filter::Read => Ready::READABLE,
        // A write-side EOF also follows our own shutdown(SHUT_WR): no HUP.
        Filter::Write => Ready::WRITABLE,
    };
    if eof && ev.fflags != 0 {
        r |= Ready::ERROR;
    }
    r.normalize()
}

/// Translates every event one wait returned for one fd (its read and write
/// filters, in any order) into one [`Ready`]: the union of [`translate`], plus
/// [`Ready::HUP`] when both filters report `EV_EOF`.
pub fn translate_fd(events: impl IntoIterator<Item = NativeEvent>) -> Ready {
    let (mut r, mut read_eof, mut write_eof) = (Ready::empty(), false, false);
    for ev in events {
        r |= translate(ev);
        if ev.flags & bits::EV_EOF != 0 && ev.flags & bits::EV_ERROR == 0 {
            match ev.filter {
                Filter::Read => read_eof = true,
                Filter::Write => write_eof = true,
            }
        }
    }
    if read_eof && write_eof {
        r |= Ready::HUP;
    }
    r.normalize()
}

/// The kqueue flag for a trigger.
fn trigger_flag(trigger: Trigger) -> u16 {
    match trigger {
        Trigger::Level => 0,
        Trigger::Edge => bits::EV_CLEAR,
        Trigger::Oneshot => bits::EV_DISPATCH,
        Trigger::EdgeOneshot => bits::EV_CLEAR | bits::EV_DISPATCH,
    }
}

/// What a queued change does to one filter of one fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `EV_ADD | EV_ENABLE` and the trigger's flag: creates the knote, or
    /// updates its udata and re-enables it.
    Add(Trigger),
    /// `EV_DELETE`.
    Delete,
    /// `EV_DISABLE`: silences the other filter of a oneshot that fired.
    Disable,
}

/// One queued change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Change {
    fd: RawFd,
    filter: Filter,
    op: Op,
    gen: u32,
}

impl Change {
    /// The udata word: the generation, except 0 for `EV_DELETE` (the kernel
    /// does not keep a deleted knote's udata), so that an error entry tells
    /// a removal from an add of the same filter.
    fn udata(&self) -> usize {
        match self.op {
            Op::Delete => 0,
            _ => self.gen as usize,
        }
    }

    /// The `flags` word, without `EV_RECEIPT`.
    fn flags(&self) -> u16 {
        match self.op {
            Op::Add(t) => bits::EV_ADD | bits::EV_ENABLE | trigger_flag(t),
            Op::Delete => bits::EV_DELETE,
            Op::Disable => bits::EV_DISABLE,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    change: Change,
    /// Index + 1 of the previous entry for the same fd (0: none).
    prev: u32,
    live: bool,
}

/// The queued changes, and what the kernel may hold per fd. Pure, so its
/// coalescing and error attribution are tested on every host.
#[derive(Debug, Default)]
struct Changelist {
    entries: Vec<Entry>,
    live: usize,
    /// Per fd: index + 1 of its newest entry (0: none queued).
    head: Vec<u32>,
    /// Per fd: the filters ([`Filter::bit`]) that may have a knote in the
    /// kernel after every change sent so far.
    applied: Vec<u8>,
    /// The changes of the last call, in order, for attributing errors.
    sent: Vec<Change>,
}

impl Changelist {
    fn len(&self) -> usize {
        self.live
    }

    /// The live changes, in order.
    fn iter(&self) -> impl Iterator<Item = &Change> {
        self.entries.iter().filter(|e| e.live).map(|e| &e.change)
    }

    fn applied(&self, fd: RawFd, filter: Filter) -> bool {
        self.applied.get(fd as usize).is_some_and(|b| b & filter.bit() != 0)
    }

    fn set_applied(&mut self, fd: RawFd, filter: Filter, on: bool) {
        let i = fd as usize;
        if i >= self.applied.len() {
            if !on {
                return;
            }
            self.applied.resize(i + 1, 0);
        }
        if on {
            self.applied[i] |= filter.bit();
        } else {
            self.applied[i] &= !filter.bit();
        }
    }

    /// The newest live entry for (fd, filter).
    fn last(&self, fd: RawFd, filter: Filter) -> Option<usize> {
        let mut at = self.head.get(fd as usize).copied().unwrap_or(0);
        while at != 0 {
            let e = &self.entries[at as usize - 1];
            if e.live && e.change.filter == filter {
                return Some(at as usize - 1);
            }
            at = e.prev;
        }
        None
    }

    fn append(&mut self, change: Change) {
        let i = change.fd as usize;
        if i >= self.head.len() {
            self.head.resize(i + 1, 0);
        }
        self.entries.push(Entry { change, prev: self.head[i], live: true });
        self.head[i] = self.entries.len() as u32;
        self.live += 1;
    }

    fn kill(&mut self, at: usize) {
        if self.entries[at].live {
            self.entries[at].live = false;
            self.live -= 1;
        }
    }

    /// Queues a change, coalescing it with the ones queued for its (fd,
    /// filter): per filter at most one `Delete` followed by one `Add` or
    /// `Disable` stays queued.
    fn push(&mut self, c: Change) {
        let last = self.last(c.fd, c.filter);
        match (c.op, last.map(|i| self.entries[i].change.op)) {
            (Op::Add(t), Some(Op::Add(u))) if t == u => self.entries[last.unwrap()].change = c,
            (Op::Add(_), Some(Op::Add(_))) => {
                // A different trigger: the knote must be re-created.
                self.kill(last.unwrap());
                self.push(Change { op: Op::Delete, ..c });
                self.append(c);
            }
            (Op::Add(_), Some(Op::Disable)) => self.entries[last.unwrap()].change = c,
            (Op::Add(_), Some(Op::Delete) | None) => self.append(c),
            (Op::Delete, Some(Op::Delete)) => {}
            (Op::Delete, Some(_)) => {
                // Undo the queued add/disable; delete only what the kernel may hold.
                self.kill(last.unwrap());
                if self.last(c.fd, c.filter).is_none() && self.applied(c.fd, c.filter) {
                    self.append(c);
                }
            }
            (Op::Delete | Op::Disable, None) => {
                if self.applied(c.fd, c.filter) {
                    self.append(c);
                }
            }
            // A queued add or delete decides anyway.
            (Op::Disable, Some(_)) => {}
        }
    }

    /// Queues what brings the kernel from the registration `old` (`None`:
    /// none) to `new` for `fd`.
    fn sync(&mut self, fd: RawFd, old: Option<&Slot>, new: &Slot) {
        for f in Filter::BOTH {
            let want = new.interest.contains(f.interest());
            let had = old.filter(|o| o.interest.contains(f.interest()));
            if want {
                // A new trigger, or a new owner of the number (add over a
                // slot): re-create the knote rather than trust EV_ADD to
                // update it.
                if had.is_some_and(|o| o.trigger != new.trigger || o.gen != new.gen) {
                    self.push(Change { fd, filter: f, op: Op::Delete, gen: 0 });
                }
                self.push(Change { fd, filter: f, op: Op::Add(new.trigger), gen: new.gen });
            } else if had.is_some() {
                self.push(Change { fd, filter: f, op: Op::Delete, gen: 0 });
            }
        }
    }

    /// Queues an `EV_DISABLE` for a filter of a oneshot that fired elsewhere.
    fn disable(&mut self, fd: RawFd, filter: Filter, gen: u32) {
        self.push(Change { fd, filter, op: Op::Disable, gen });
    }

    /// Drops every queued change for `fd` and returns the filters that may
    /// still have a knote in the kernel (which the caller deletes now).
    fn forget(&mut self, fd: RawFd) -> u8 {
        let i = fd as usize;
        let mut at = self.head.get(i).copied().unwrap_or(0);
        while at != 0 {
            self.kill(at as usize - 1);
            at = self.entries[at as usize - 1].prev;
        }
        if let Some(h) = self.head.get_mut(i) {
            *h = 0;
        }
        self.applied.get_mut(i).map(std::mem::take).unwrap_or(0)
    }

    /// The kernel took every live change (success, `EINTR`, or receipts).
    fn submitted(&mut self) {
        self.sent.clear();
        let entries = std::mem::take(&mut self.entries);
        for e in &entries {
            if let Some(h) = self.head.get_mut(e.change.fd as usize) {
                *h = 0;
            }
            if e.live {
                let c = e.change;
                match c.op {
                    Op::Add(_) => self.set_applied(c.fd, c.filter, true),
                    Op::Delete => self.set_applied(c.fd, c.filter, false),
                    Op::Disable => {}
                }
                self.sent.push(c);
            }
        }
        self.entries = entries;
        self.entries.clear();
        self.live = 0;
    }

    /// A `kevent()` call failed: the changes stay queued (re-applying them is
    /// harmless), but some may have been applied, so their adds count.
    fn maybe_submitted(&mut self) {
        let adds: Vec<(RawFd, Filter)> =
            self.iter().filter(|c| matches!(c.op, Op::Add(_))).map(|c| (c.fd, c.filter)).collect();
        for (fd, f) in adds {
            self.set_applied(fd, f, true);
        }
    }

    /// Finds the sent change an `EV_ERROR` entry (fd, filter, udata) is for,
    /// searching forward from `cursor` (results come back in changelist
    /// order), and returns what it did. A failed add that was the last change
    /// for its filter leaves no knote behind.
    fn attribute(&mut self, cursor: &mut usize, fd: RawFd, filter: Filter, udata: usize, errno: i64) -> Option<Op> {
        let start = (*cursor).min(self.sent.len());
        let pos = self.sent[start..].iter().position(|c| c.fd == fd && c.filter == filter && c.udata() == udata)?;
        let j = start + pos;
        *cursor = j + 1;
        let op = self.sent[j].op;
        if matches!(op, Op::Add(_))
            && errno != 0
            && !self.sent[j + 1..].iter().any(|c| c.fd == fd && c.filter == filter)
        {
            self.set_applied(fd, filter, false);
        }
        Some(op)
    }
}

/// One returned event, decoded: the fd (ident), the generation (udata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Item {
    fd: RawFd,
    gen: u32,
    ev: NativeEvent,
}

/// Sorts `items` so that the events of one (fd, generation) are adjacent,
/// wherever the kernel put them, and calls `f` once per group.
fn for_each_fd(items: &mut [Item], mut f: impl FnMut(RawFd, u32, &[Item])) {
    items.sort_unstable_by_key(|i| (i.fd, i.gen));
    let mut start = 0;
    while start < items.len() {
        let (fd, gen) = (items[start].fd, items[start].gen);
        let end = start + items[start..].iter().take_while(|i| i.fd == fd && i.gen == gen).count();
        f(fd, gen, &items[start..end]);
        start = end;
    }
}

#[cfg(anypoll_kqueue)]
pub use imp::Kqueue;

#[cfg(anypoll_kqueue)]
mod imp {
    use std::fmt;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::ptr;
    use std::sync::Arc;
    use std::time::Duration;

    use super::{bits, for_each_fd, translate_fd, Change, Changelist, Filter, Item, NativeEvent, Op};
    use crate::slots::Slots;
    use crate::sys::{context, cvt, timespec};
    use crate::waker::FdWaker;
    #[cfg(not(target_os = "openbsd"))]
    use crate::waker::Wake;
    use crate::{check_trigger, Capabilities, Event, Events, Interest, Poller, Token, Trigger, Waker};

    const _: () = assert!(
        bits::EV_ADD as u32 == libc::EV_ADD as u32
            && bits::EV_DELETE as u32 == libc::EV_DELETE as u32
            && bits::EV_ENABLE as u32 == libc::EV_ENABLE as u32
            && bits::EV_DISABLE as u32 == libc::EV_DISABLE as u32
            && bits::EV_CLEAR as u32 == libc::EV_CLEAR as u32
            && bits::EV_RECEIPT as u32 == libc::EV_RECEIPT as u32
            && bits::EV_DISPATCH as u32 == libc::EV_DISPATCH as u32
            && bits::EV_ERROR as u32 == libc::EV_ERROR as u32
            && bits::EV_EOF as u32 == libc::EV_EOF as u32
    );
    #[cfg(not(target_os = "netbsd"))]
    const _: () = assert!(bits::EVFILT_READ == libc::EVFILT_READ && bits::EVFILT_WRITE == libc::EVFILT_WRITE);
    #[cfg(target_os = "netbsd")]
    const _: () =
        assert!(bits::NETBSD_EVFILT_READ == libc::EVFILT_READ && bits::NETBSD_EVFILT_WRITE == libc::EVFILT_WRITE);
    #[cfg(not(target_os = "openbsd"))]
    const _: () = assert!(bits::NOTE_TRIGGER == libc::NOTE_TRIGGER);

    const NAME: &str = "kqueue";
    /// udata of the waker's knote. Slot generations start at 1, and error
    /// entries (udata 0 for `EV_DELETE`) are told apart by `EV_ERROR`.
    const WAKER_UDATA: usize = 0;
    /// ident of the `EVFILT_USER` waker (its own filter: no clash with fd 0).
    #[cfg(not(target_os = "openbsd"))]
    const WAKER_IDENT: usize = 0;
    /// macOS fails `kevent()` with `EINVAL` above this many seconds.
    const MAX_WAIT: Duration = Duration::from_secs(100_000_000);

    /// `udata` is `void *` on most platforms and `intptr_t` on NetBSD before
    /// 10 (and in older `libc` crates): this converts either from and to the
    /// integer this backend stores in it. It is never dereferenced.
    trait Word: Copy {
        fn from_word(w: usize) -> Self;
        fn word(self) -> usize;
    }

    impl Word for *mut libc::c_void {
        fn from_word(w: usize) -> Self {
            w as *mut libc::c_void
        }
        fn word(self) -> usize {
            self as usize
        }
    }

    impl Word for isize {
        fn from_word(w: usize) -> Self {
            w as isize
        }
        fn word(self) -> usize {
            self as usize
        }
    }

    /// A buffer of `struct kevent`. Its raw `udata` pointer makes
    /// `libc::kevent` neither `Send` nor `Sync`.
    #[derive(Default)]
    struct KeventBuf(Vec<libc::kevent>);

    // SAFETY: the udata "pointers" in the buffer are integers (generations,
    // 0) that are never dereferenced.
    unsafe impl Send for KeventBuf {}
    // SAFETY: as above; shared access only reads those integers.
    unsafe impl Sync for KeventBuf {}

    impl fmt::Debug for KeventBuf {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "KeventBuf(len {})", self.0.len())
        }
    }

    fn zeroed() -> libc::kevent {
        // SAFETY: `struct kevent` holds only integers, integer arrays and a
        // raw pointer, for all of which all-zero bytes are a valid value.
        unsafe { std::mem::zeroed() }
    }

    fn kevent_for(f: Filter) -> libc::kevent {
        let mut k = zeroed();
        k.filter = match f {
            Filter::Read => libc::EVFILT_READ,
            Filter::Write => libc::EVFILT_WRITE,
        };
        k
    }

    /// The native form of a change.
    fn to_kevent(c: &Change, receipt: bool) -> libc::kevent {
        let mut k = kevent_for(c.filter);
        k.ident = c.fd as libc::uintptr_t;
        k.flags = (c.flags() | if receipt { bits::EV_RECEIPT } else { 0 }).into();
        k.udata = Word::from_word(c.udata());
        k
    }

    fn filter_of(k: &libc::kevent) -> Option<Filter> {
        let f = k.filter;
        if f == libc::EVFILT_READ {
            Some(Filter::Read)
        } else if f == libc::EVFILT_WRITE {
            Some(Filter::Write)
        } else {
            None
        }
    }

    #[allow(clippy::unnecessary_cast)]
    fn flags16(k: &libc::kevent) -> u16 {
        // NetBSD's flags are 32 bits wide; every flag lives in the low 16.
        k.flags as u16
    }

    #[allow(clippy::unnecessary_cast)]
    fn data64(k: &libc::kevent) -> i64 {
        k.data as i64
    }

    /// One `kevent()` call. `Ok(None)` is `EINTR`.
    fn kevent(
        kq: RawFd,
        changes: &[libc::kevent],
        out: &mut [libc::kevent],
        timeout: Option<Duration>,
    ) -> io::Result<Option<usize>> {
        let ts = timespec(timeout.map(|d| d.min(MAX_WAIT)));
        let ts_ptr = ts.as_ref().map_or(ptr::null(), |t| t as *const libc::timespec);
        let nchanges = changes.len().min(libc::c_int::MAX as usize);
        let nevents = out.len().min(libc::c_int::MAX as usize);
        // SAFETY: `changes` holds `nchanges` initialized kevents and `out`
        // room for `nevents`; `ts_ptr` is null or points at `ts`, which
        // outlives the call.
        let n = unsafe { libc::kevent(kq, changes.as_ptr(), nchanges as _, out.as_mut_ptr(), nevents as _, ts_ptr) };
        match cvt(n) {
            Ok(n) => Ok(Some(n as usize)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Applies `changes` now, with `EV_RECEIPT` (so the kernel does not
    /// collect events), and returns each change's errno (0: done).
    fn apply_now(kq: RawFd, changes: &mut [libc::kevent]) -> io::Result<Vec<i64>> {
        for k in changes.iter_mut() {
            k.flags |= libc::EV_RECEIPT;
        }
        let mut out = vec![zeroed(); changes.len()];
        let n = match kevent(kq, changes, &mut out, Some(Duration::ZERO))? {
            Some(n) => n,
            // Every change was applied; the receipts are lost.
            None => return Ok(vec![0; changes.len()]),
        };
        Ok(out[..n].iter().map(|k| if flags16(k) & bits::EV_ERROR != 0 { data64(k) } else { 0 }).collect())
    }

    /// The `EVFILT_USER` waker.
    #[cfg(not(target_os = "openbsd"))]
    #[derive(Debug)]
    struct UserWaker {
        kq: Arc<OwnedFd>,
    }

    #[cfg(not(target_os = "openbsd"))]
    impl Wake for UserWaker {
        fn wake(&self) -> io::Result<()> {
            let mut k = zeroed();
            k.ident = WAKER_IDENT;
            k.filter = libc::EVFILT_USER;
            // No EV_ADD (it could re-create the knote without EV_CLEAR) and
            // no EV_CLEAR (FreeBSD would reset the trigger at once).
            k.fflags = libc::NOTE_TRIGGER;
            k.udata = Word::from_word(WAKER_UDATA);
            loop {
                // No event list, and a zero timeout in case a kernel would
                // scan anyway: this call never blocks.
                match kevent(self.kq.as_raw_fd(), std::slice::from_ref(&k), &mut [], Some(Duration::ZERO)) {
                    Ok(Some(_)) => return Ok(()),
                    Ok(None) => continue,
                    Err(e) => return Err(context(NAME, "kevent(EVFILT_USER, NOTE_TRIGGER)", None, e)),
                }
            }
        }
    }

    #[derive(Debug)]
    enum KqWaker {
        /// `EVFILT_USER` with `EV_CLEAR`: nothing to drain.
        #[cfg(not(target_os = "openbsd"))]
        User(Arc<UserWaker>),
        /// A pipe watched with `EVFILT_READ` (level), drained when it fires.
        Pipe(Arc<FdWaker>),
    }

    impl KqWaker {
        /// The waker's event came: make the next wake give a new one.
        fn fired(&self) {
            match self {
                // EV_CLEAR already reset it.
                #[cfg(not(target_os = "openbsd"))]
                KqWaker::User(_) => {}
                KqWaker::Pipe(p) => p.drain(),
            }
        }
    }

    /// The kqueue backend. See the [module docs](super).
    #[derive(Debug)]
    pub struct Kqueue {
        /// Shared with the `EVFILT_USER` wakers, so that one outliving the
        /// poller never triggers a reused fd number.
        kq: Arc<OwnedFd>,
        slots: Slots,
        changes: Changelist,
        /// The changelist of a call, in native form.
        scratch: KeventBuf,
        /// The event list of a call.
        native: KeventBuf,
        /// This wait's events, decoded, before merging per fd.
        batch: Vec<Item>,
        /// ERROR events for failed adds that did not fit in an earlier wait.
        pending: Vec<Item>,
        waker: KqWaker,
    }

    impl Kqueue {
        /// A new kqueue with its waker registered.
        pub fn new() -> io::Result<Kqueue> {
            // SAFETY: kqueue() takes no argument; the result is checked.
            let fd = cvt(unsafe { libc::kqueue() }).map_err(|e| context(NAME, "kqueue", None, e))?;
            // SAFETY: the fd was just created and belongs to nobody else.
            let kq = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
            // SAFETY: fcntl on the fd we own, with integer arguments only.
            cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })
                .map_err(|e| context(NAME, "fcntl(FD_CLOEXEC)", None, e))?;
            let waker = Self::new_waker(&kq)?;
            Ok(Kqueue {
                kq,
                slots: Slots::new(),
                changes: Changelist::default(),
                scratch: KeventBuf::default(),
                native: KeventBuf::default(),
                batch: Vec::new(),
                pending: Vec::new(),
                waker,
            })
        }

        fn new_waker(kq: &Arc<OwnedFd>) -> io::Result<KqWaker> {
            #[cfg(not(target_os = "openbsd"))]
            {
                let mut k = zeroed();
                k.ident = WAKER_IDENT;
                k.filter = libc::EVFILT_USER;
                // EV_CLEAR, or the triggered user event never resets.
                k.flags = libc::EV_ADD | libc::EV_CLEAR;
                k.udata = Word::from_word(WAKER_UDATA);
                let errs = apply_now(kq.as_raw_fd(), std::slice::from_mut(&mut k))
                    .map_err(|e| context(NAME, "kevent(EVFILT_USER)", None, e))?;
                match errs.first().copied().unwrap_or(0) {
                    0 => return Ok(KqWaker::User(Arc::new(UserWaker { kq: kq.clone() }))),
                    e if e == libc::EINVAL as i64 => {
                        log::debug!("kqueue: no EVFILT_USER here (EINVAL); the waker is a pipe");
                    }
                    e => {
                        let err = io::Error::from_raw_os_error(e as i32);
                        return Err(context(NAME, "kevent(EVFILT_USER)", None, err));
                    }
                }
            }
            let pipe = FdWaker::new()?;
            let mut k = kevent_for(Filter::Read);
            k.ident = pipe.fd() as libc::uintptr_t;
            k.flags = libc::EV_ADD;
            k.udata = Word::from_word(WAKER_UDATA);
            let errs = apply_now(kq.as_raw_fd(), std::slice::from_mut(&mut k))
                .map_err(|e| context(NAME, "kevent(waker pipe)", Some(pipe.fd()), e))?;
            if let Some(&e) = errs.first().filter(|&&e| e != 0) {
                let err = io::Error::from_raw_os_error(e as i32);
                return Err(context(NAME, "kevent(waker pipe)", Some(pipe.fd()), err));
            }
            Ok(KqWaker::Pipe(Arc::new(pipe)))
        }

        /// Handles an `EV_ERROR` entry; returns the ERROR event a failed add
        /// gives its registration.
        fn change_result(&mut self, cursor: &mut usize, k: &libc::kevent) -> Option<Item> {
            let errno = data64(k);
            let fd = k.ident as RawFd;
            let udata = k.udata.word();
            let Some(filter) = filter_of(k) else {
                if errno != 0 {
                    let raw = k.filter; // a copy: the struct is packed on macOS
                    log::warn!("kqueue: a change for ident {fd} (filter {raw}) failed: errno {errno}");
                }
                return None;
            };
            let op = self.changes.attribute(cursor, fd, filter, udata, errno).unwrap_or(if udata == 0 {
                Op::Delete
            } else {
                Op::Add(Trigger::Level)
            });
            if errno == 0 {
                return None; // a receipt
            }
            let err = io::Error::from_raw_os_error(errno as i32);
            let harmless = matches!(errno as i32, libc::ENOENT | libc::EBADF);
            match op {
                Op::Delete | Op::Disable if harmless => {
                    log::trace!("kqueue: {op:?} of {} for fd {fd}: {err} (already gone)", filter.name());
                    None
                }
                Op::Delete | Op::Disable => {
                    log::warn!("kqueue: {op:?} of {} for fd {fd} failed: {err}", filter.name());
                    None
                }
                Op::Add(_) if errno == libc::EPIPE as i64 => {
                    // Older macOS, a pipe whose other end is gone: events still come (mio#582).
                    log::debug!("kqueue: EV_ADD of {} for fd {fd}: {err} (ignored)", filter.name());
                    None
                }
                Op::Add(_) => {
                    log::warn!(
                        "kqueue: watching fd {fd} with {} failed: {err}; the add/modify call had already \
                         returned, so its registration gets an ERROR event",
                        filter.name()
                    );
                    let ev = NativeEvent { filter, flags: bits::EV_ERROR, fflags: 0, data: errno };
                    Some(Item { fd, gen: udata as u32, ev })
                }
            }
        }

        /// Applies every queued change now, with receipts (no event is
        /// collected). Failed adds' ERROR events go to `pending`.
        fn flush(&mut self) -> io::Result<()> {
            let list: Vec<libc::kevent> = self.changes.iter().map(|c| to_kevent(c, true)).collect();
            let mut out = vec![zeroed(); list.len()];
            match kevent(self.kq.as_raw_fd(), &list, &mut out, Some(Duration::ZERO)) {
                Ok(n) => {
                    self.changes.submitted();
                    let mut cursor = 0;
                    for k in &out[..n.unwrap_or(0)] {
                        if flags16(k) & bits::EV_ERROR != 0 {
                            if let Some(item) = self.change_result(&mut cursor, k) {
                                self.pending.push(item);
                            }
                        }
                    }
                    Ok(())
                }
                Err(e) => {
                    self.changes.maybe_submitted();
                    Err(context(NAME, "kevent (applying queued changes)", None, e))
                }
            }
        }

        /// Merges this wait's events per fd, passes them through the slot
        /// table and silences the other filter of a oneshot that fired.
        fn deliver(&mut self, events: &mut Events) {
            let Kqueue { batch, slots, changes, .. } = self;
            for_each_fd(batch, |fd, gen, group| {
                let ready = translate_fd(group.iter().map(|i| i.ev));
                let Some((token, ready)) = slots.accept(fd, Some(gen), ready) else {
                    return;
                };
                // Groups come sorted by fd, and only the current generation
                // passes `accept`, so this never merges in practice; it keeps
                // "one event per fd" true whatever the kernel returned.
                if !events.merge_last(fd, ready) {
                    events.push(Event { token, fd, ready });
                }
                let Some(slot) = slots.get(fd) else { return };
                if slot.trigger.is_oneshot() && !slot.armed {
                    for f in Filter::BOTH {
                        let fired = group.iter().any(|i| i.ev.filter == f && i.ev.flags & bits::EV_ERROR == 0);
                        if slot.interest.contains(f.interest()) && !fired {
                            changes.disable(fd, f, gen);
                        }
                    }
                }
            });
        }
    }

    impl Poller for Kqueue {
        fn name(&self) -> &'static str {
            NAME
        }

        fn capabilities(&self) -> Capabilities {
            Capabilities::LEVEL
                | Capabilities::EDGE
                | Capabilities::ONESHOT
                | Capabilities::EDGE_ONESHOT
                | Capabilities::RDHUP
                | Capabilities::ERRHUP
                | Capabilities::O1
                | Capabilities::BATCH
        }

        fn add(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
            check_trigger(NAME, self.capabilities(), trigger)?;
            let (new, old) = self.slots.insert(fd, token, interest, trigger)?;
            // An old slot: the number was reused without delete (or added
            // twice); its knotes, if any survive, are re-created.
            self.changes.sync(fd, old.as_ref(), &new);
            Ok(())
        }

        fn modify(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
            check_trigger(NAME, self.capabilities(), trigger)?;
            let (old, new) = self.slots.update(NAME, fd, token, interest, trigger)?;
            self.changes.sync(fd, Some(&old), &new);
            Ok(())
        }

        fn delete(&mut self, fd: RawFd) -> io::Result<()> {
            self.slots.remove(NAME, fd)?;
            self.pending.retain(|i| i.fd != fd);
            let filters = self.changes.forget(fd);
            let mut list: Vec<libc::kevent> = Filter::BOTH
                .into_iter()
                .filter(|f| filters & f.bit() != 0)
                .map(|f| to_kevent(&Change { fd, filter: f, op: Op::Delete, gen: 0 }, true))
                .collect();
            if list.is_empty() {
                return Ok(());
            }
            let errs = apply_now(self.kq.as_raw_fd(), &mut list)
                .map_err(|e| context(NAME, "kevent(EV_DELETE)", Some(fd), e))?;
            // ENOENT: never added or already gone; EBADF: closed before delete.
            match errs.into_iter().find(|&e| e != 0 && e != libc::ENOENT as i64 && e != libc::EBADF as i64) {
                Some(e) => Err(context(NAME, "kevent(EV_DELETE)", Some(fd), io::Error::from_raw_os_error(e as i32))),
                None => Ok(()),
            }
        }

        fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
            events.clear();
            self.batch.clear();
            let cap = events.capacity().min(libc::c_int::MAX as usize);
            // Every change sent with the wait must have room for its error
            // entry: more changes than that are applied first, with receipts.
            if self.changes.len() > cap.saturating_sub(self.pending.len()) {
                self.flush()?;
            }
            let carried = self.pending.len().min(cap);
            self.batch.extend(self.pending.drain(..carried));
            let room = cap - self.batch.len();
            if room > 0 {
                if self.native.0.len() < room {
                    self.native.0.resize(room, zeroed());
                }
                // ERROR events already in hand: do not block.
                let timeout = if self.batch.is_empty() { timeout } else { Some(Duration::ZERO) };
                for _ in 0..2 {
                    self.scratch.0.clear();
                    let scratch = &mut self.scratch.0;
                    scratch.extend(self.changes.iter().map(|c| to_kevent(c, false)));
                    let n = match kevent(self.kq.as_raw_fd(), scratch, &mut self.native.0[..room], timeout) {
                        Ok(Some(n)) => n,
                        // kqueue(2): on EINTR every change was applied.
                        Ok(None) => {
                            self.changes.submitted();
                            break;
                        }
                        Err(e) => {
                            self.changes.maybe_submitted();
                            return Err(context(NAME, "kevent", None, e));
                        }
                    };
                    self.changes.submitted();
                    let (mut errors, mut cursor) = (false, 0);
                    for i in 0..n {
                        let k = self.native.0[i];
                        let flags = flags16(&k);
                        if flags & bits::EV_ERROR != 0 {
                            errors = true;
                            if let Some(item) = self.change_result(&mut cursor, &k) {
                                self.batch.push(item);
                            }
                            continue;
                        }
                        if k.udata.word() == WAKER_UDATA {
                            self.waker.fired();
                            events.set_woken();
                            continue;
                        }
                        let Some(filter) = filter_of(&k) else { continue };
                        let ev = NativeEvent { filter, flags, fflags: k.fflags, data: data64(&k) };
                        self.batch.push(Item { fd: k.ident as RawFd, gen: k.udata.word() as u32, ev });
                    }
                    // Errors end the call before it waits: wait again, now
                    // without changes, unless there is something to report.
                    if !(errors && self.batch.is_empty() && !events.woken()) {
                        break;
                    }
                }
            }
            self.deliver(events);
            Ok(events.len())
        }

        fn waker(&self) -> Waker {
            match &self.waker {
                #[cfg(not(target_os = "openbsd"))]
                KqWaker::User(w) => Waker::new(w.clone()),
                KqWaker::Pipe(w) => Waker::new(w.clone()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bits::*;
    use super::*;
    use crate::Token;

    /// ECONNREFUSED, ECONNRESET and EBADF on macOS and the BSDs.
    const ECONNREFUSED: u32 = 61;
    const ECONNRESET: u32 = 54;
    const EBADF: i64 = 9;

    fn ev(filter: Filter, flags: u16, fflags: u32) -> NativeEvent {
        NativeEvent { filter, flags, fflags, data: 0 }
    }

    #[test]
    fn plain_read_and_write() {
        assert_eq!(translate(ev(Filter::Read, 0, 0)), Ready::READABLE);
        assert_eq!(translate(ev(Filter::Write, 0, 0)), Ready::WRITABLE);
        assert_eq!(translate_fd([ev(Filter::Read, 0, 0), ev(Filter::Write, 0, 0)]), Ready::READABLE | Ready::WRITABLE);
    }

    #[test]
    fn read_eof_is_a_half_close() {
        assert_eq!(translate(ev(Filter::Read, EV_EOF, 0)), Ready::READABLE | Ready::READ_CLOSED);
        // The peer's FIN with our send side still open: no HUP.
        assert_eq!(
            translate_fd([ev(Filter::Write, 0, 0), ev(Filter::Read, EV_EOF, 0)]),
            Ready::READABLE | Ready::WRITABLE | Ready::READ_CLOSED
        );
    }

    #[test]
    fn refused_connect_is_error_without_readable() {
        // What macOS and FreeBSD report for a refused non-blocking connect.
        let read = ev(Filter::Read, EV_EOF, ECONNREFUSED);
        let write = ev(Filter::Write, EV_EOF, ECONNREFUSED);
        assert_eq!(translate(read), Ready::ERROR | Ready::READ_CLOSED);
        assert_eq!(translate(write), Ready::ERROR);
        let both = translate_fd([read, write]);
        assert_eq!(both, Ready::ERROR | Ready::HUP | Ready::READ_CLOSED);
        assert!(!both.intersects(Ready::READABLE | Ready::WRITABLE));
        // A reset seen through the read filter alone.
        assert_eq!(translate(ev(Filter::Read, EV_EOF, ECONNRESET)), Ready::ERROR | Ready::READ_CLOSED);
    }

    #[test]
    fn ev_error_is_error_and_a_receipt_is_nothing() {
        let failed = NativeEvent { filter: Filter::Read, flags: EV_ERROR, fflags: 0, data: EBADF };
        assert_eq!(translate(failed), Ready::ERROR);
        let receipt = NativeEvent { data: 0, ..failed };
        assert_eq!(translate(receipt), Ready::empty());
        assert_eq!(translate_fd([receipt]), Ready::empty());
    }

    #[test]
    fn write_eof_after_local_shutdown_is_not_hup() {
        // shutdown(SHUT_WR) on our side: the write filter says EOF, fflags 0.
        let r = translate(ev(Filter::Write, EV_EOF, 0));
        assert_eq!(r, Ready::WRITABLE);
        assert_eq!(
            translate_fd([ev(Filter::Read, 0, 0), ev(Filter::Write, EV_EOF, 0)]),
            Ready::READABLE | Ready::WRITABLE
        );
        // ...and once the peer's FIN comes too, both directions are closed.
        assert_eq!(
            translate_fd([ev(Filter::Read, EV_EOF, 0), ev(Filter::Write, EV_EOF, 0)]),
            Ready::READABLE | Ready::WRITABLE | Ready::READ_CLOSED | Ready::HUP
        );
    }

    #[test]
    fn events_of_one_fd_merge_even_when_not_adjacent() {
        let item = |fd, gen, filter| Item { fd, gen, ev: ev(filter, 0, 0) };
        let mut items = vec![
            item(5, 1, Filter::Read),
            item(7, 2, Filter::Read),
            item(5, 1, Filter::Write),
            item(5, 9, Filter::Read),
        ];
        let mut seen = Vec::new();
        for_each_fd(&mut items, |fd, gen, group| seen.push((fd, gen, translate_fd(group.iter().map(|i| i.ev)))));
        assert_eq!(
            seen,
            vec![
                (5, 1, Ready::READABLE | Ready::WRITABLE),
                // Another generation of fd 5 (a stale event) stays apart.
                (5, 9, Ready::READABLE),
                (7, 2, Ready::READABLE),
            ]
        );
    }

    fn slot(gen: u32, interest: Interest, trigger: Trigger) -> Slot {
        Slot { token: Token(1), gen, interest, trigger, armed: true }
    }

    fn queued(c: &Changelist) -> Vec<(RawFd, Filter, Op, usize)> {
        c.iter().map(|c| (c.fd, c.filter, c.op, c.udata())).collect()
    }

    #[test]
    fn changes_coalesce_before_the_wait() {
        let mut c = Changelist::default();
        let a = slot(1, Interest::READ, Trigger::Level);
        c.sync(3, None, &a);
        let b = slot(1, Interest::BOTH, Trigger::Level);
        c.sync(3, Some(&a), &b);
        assert_eq!(
            queued(&c),
            vec![(3, Filter::Read, Op::Add(Trigger::Level), 1), (3, Filter::Write, Op::Add(Trigger::Level), 1)]
        );
        // Back to nothing before the wait: nothing reached the kernel, so nothing to send.
        c.sync(3, Some(&b), &slot(1, Interest::empty(), Trigger::Level));
        assert_eq!(c.len(), 0);
        assert_eq!(c.forget(3), 0);
    }

    #[test]
    fn trigger_change_recreates_the_knote() {
        let mut c = Changelist::default();
        let a = slot(1, Interest::READ, Trigger::Level);
        c.sync(4, None, &a);
        c.submitted();
        assert!(c.applied(4, Filter::Read));
        let b = slot(1, Interest::READ, Trigger::Edge);
        c.sync(4, Some(&a), &b);
        assert_eq!(queued(&c), vec![(4, Filter::Read, Op::Delete, 0), (4, Filter::Read, Op::Add(Trigger::Edge), 1)]);
        assert_eq!(c.iter().map(Change::flags).collect::<Vec<_>>(), vec![EV_DELETE, EV_ADD | EV_ENABLE | EV_CLEAR]);
        // A second modify before the wait replaces the add, keeps the delete.
        let o = slot(1, Interest::READ, Trigger::Oneshot);
        c.sync(4, Some(&b), &o);
        assert_eq!(queued(&c), vec![(4, Filter::Read, Op::Delete, 0), (4, Filter::Read, Op::Add(Trigger::Oneshot), 1)]);
        assert_eq!(c.iter().last().unwrap().flags(), EV_ADD | EV_ENABLE | EV_DISPATCH);
    }

    #[test]
    fn add_over_a_reused_number_recreates_with_the_new_generation() {
        let mut c = Changelist::default();
        let old = slot(1, Interest::READ, Trigger::Level);
        c.sync(5, None, &old);
        c.submitted();
        c.sync(5, Some(&old), &slot(2, Interest::READ, Trigger::Level));
        assert_eq!(queued(&c), vec![(5, Filter::Read, Op::Delete, 0), (5, Filter::Read, Op::Add(Trigger::Level), 2)]);
    }

    #[test]
    fn oneshot_disable_only_for_a_knote_in_the_kernel_and_rearm_replaces_it() {
        let mut c = Changelist::default();
        let s = slot(3, Interest::BOTH, Trigger::Oneshot);
        c.sync(6, None, &s);
        c.submitted();
        c.disable(6, Filter::Write, 3);
        c.disable(7, Filter::Write, 3); // never added: nothing to disable
        assert_eq!(queued(&c), vec![(6, Filter::Write, Op::Disable, 3)]);
        c.sync(6, Some(&s), &s); // modify re-arms
        assert_eq!(
            queued(&c),
            vec![(6, Filter::Write, Op::Add(Trigger::Oneshot), 3), (6, Filter::Read, Op::Add(Trigger::Oneshot), 3)]
        );
    }

    #[test]
    fn forget_drops_queued_changes_and_reports_what_the_kernel_holds() {
        let mut c = Changelist::default();
        let a = slot(1, Interest::BOTH, Trigger::Edge);
        c.sync(8, None, &a);
        c.sync(9, None, &slot(2, Interest::READ, Trigger::Level));
        c.submitted();
        c.sync(8, Some(&a), &slot(1, Interest::READ, Trigger::Level));
        c.sync(9, Some(&slot(2, Interest::READ, Trigger::Level)), &slot(2, Interest::BOTH, Trigger::Level));
        assert_eq!(c.forget(8), Filter::Read.bit() | Filter::Write.bit());
        assert!(c.iter().all(|ch| ch.fd == 9));
        assert_eq!(c.forget(8), 0);
    }

    #[test]
    fn errors_are_attributed_to_the_right_change() {
        let mut c = Changelist::default();
        let a = slot(1, Interest::READ, Trigger::Level);
        c.sync(10, None, &a);
        c.sync(11, None, &slot(2, Interest::BOTH, Trigger::Level));
        c.submitted();
        // fd 10: a delete + add pair for one filter; fd 11 loses write.
        c.sync(10, Some(&a), &slot(1, Interest::READ, Trigger::Edge));
        c.sync(11, Some(&slot(2, Interest::BOTH, Trigger::Level)), &slot(2, Interest::READ, Trigger::Level));
        c.submitted();
        let mut cursor = 0;
        // Only the add of fd 10 failed: it is told apart from its delete by udata.
        assert_eq!(c.attribute(&mut cursor, 10, Filter::Read, 1, 22), Some(Op::Add(Trigger::Edge)));
        assert!(!c.applied(10, Filter::Read));
        assert_eq!(c.attribute(&mut cursor, 11, Filter::Write, 0, 2), Some(Op::Delete));
        assert_eq!(c.attribute(&mut cursor, 11, Filter::Write, 0, 2), None);
        assert!(c.applied(11, Filter::Read) && !c.applied(11, Filter::Write));
    }
}
