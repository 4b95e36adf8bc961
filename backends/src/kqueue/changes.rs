//! The queued changes of the kqueue backend, coalesced per (fd, filter),
//! and what the kernel may hold per fd. Pure, so coalescing and error
//! attribution are tested on every host.

use std::os::fd::RawFd;

use super::{bits, trigger_flag, Filter};
use crate::slots::Slot;
use crate::Trigger;

/// What a queued change does to one filter of one fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
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
pub(super) struct Change {
    pub(super) fd: RawFd,
    pub(super) filter: Filter,
    pub(super) op: Op,
    pub(super) gen: u32,
}

impl Change {
    /// The udata word: the generation, except 0 for `EV_DELETE` (the kernel
    /// does not keep a deleted knote's udata), so that an error entry tells
    /// a removal from an add of the same filter.
    pub(super) fn udata(&self) -> usize {
        match self.op {
            Op::Delete => 0,
            _ => self.gen as usize,
        }
    }

    /// The `flags` word, without `EV_RECEIPT`.
    pub(super) fn flags(&self) -> u16 {
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
pub(super) struct Changelist {
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
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// The live changes, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Change> {
        self.entries.iter().filter(|e| e.live).map(|e| &e.change)
    }

    pub(super) fn applied(&self, fd: RawFd, filter: Filter) -> bool {
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
    pub(super) fn sync(&mut self, fd: RawFd, old: Option<&Slot>, new: &Slot) {
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
    pub(super) fn disable(&mut self, fd: RawFd, filter: Filter, gen: u32) {
        self.push(Change { fd, filter, op: Op::Disable, gen });
    }

    /// Drops every queued change for `fd` and returns the filters that may
    /// still have a knote in the kernel (which the caller deletes now).
    pub(super) fn forget(&mut self, fd: RawFd) -> u8 {
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
    pub(super) fn submitted(&mut self) {
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
    pub(super) fn maybe_submitted(&mut self) {
        let adds: Vec<(RawFd, Filter)> =
            self.iter().filter(|c| matches!(c.op, Op::Add(_))).map(|c| (c.fd, c.filter)).collect();
        for (fd, f) in adds {
            self.set_applied(fd, f, true);
        }
    }

    /// Finds the sent change an `EV_ERROR` entry (fd, filter, udata) is for,
    /// searching forward from `cursor` (results come back in changelist
    /// order), and returns what it did.
    ///
    /// A failed change never makes the record forget a knote: after a
    /// failed `EV_ADD` the filter stays "may be in the kernel" (FreeBSD
    /// leaves nothing, but libkqueue leaves the old knote alive), and a
    /// failed `EV_DELETE` other than `ENOENT`/`EBADF` (the knote is gone)
    /// puts it back. So `delete` always removes what may be there, at the
    /// cost of one `ENOENT` when nothing was: a knote nobody can reach
    /// would wake every wait with events the slot table drops.
    pub(super) fn attribute(
        &mut self,
        cursor: &mut usize,
        fd: RawFd,
        filter: Filter,
        udata: usize,
        errno: i64,
    ) -> Option<Op> {
        let start = (*cursor).min(self.sent.len());
        let pos = self.sent[start..].iter().position(|c| c.fd == fd && c.filter == filter && c.udata() == udata)?;
        let j = start + pos;
        *cursor = j + 1;
        let op = self.sent[j].op;
        let gone = errno == libc::ENOENT as i64 || errno == libc::EBADF as i64;
        if op == Op::Delete && errno != 0 && !gone {
            self.set_applied(fd, filter, true);
        }
        Some(op)
    }
}

#[cfg(test)]
mod tests {
    use super::super::bits::*;
    use super::*;
    use crate::{Interest, Token};

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
        // A failed add may have left a knote (libkqueue keeps the old one):
        // it stays on record, so that delete removes it.
        assert!(c.applied(10, Filter::Read));
        // ENOENT on a delete: the knote is gone.
        assert_eq!(c.attribute(&mut cursor, 11, Filter::Write, 0, 2), Some(Op::Delete));
        assert_eq!(c.attribute(&mut cursor, 11, Filter::Write, 0, 2), None);
        assert!(c.applied(11, Filter::Read) && !c.applied(11, Filter::Write));
    }

    #[test]
    fn a_delete_that_failed_otherwise_keeps_the_knote_on_record() {
        let mut c = Changelist::default();
        let a = slot(1, Interest::READ, Trigger::Level);
        c.sync(12, None, &a);
        c.submitted();
        c.sync(12, Some(&a), &slot(1, Interest::empty(), Trigger::Level));
        c.submitted();
        assert!(!c.applied(12, Filter::Read));
        let mut cursor = 0;
        assert_eq!(c.attribute(&mut cursor, 12, Filter::Read, 0, libc::ENOMEM as i64), Some(Op::Delete));
        assert!(c.applied(12, Filter::Read));
        assert_eq!(c.forget(12), Filter::Read.bit());
    }
}
