//! The kqueue backend's logic, written once over the [`KqSys`] seam: the
//! changelist, the receipts, the waker choice and the wait. Production runs
//! it over [`Libc`](super::Libc) (zero-sized: the generic code compiles to
//! the direct calls); on Linux, with the feature `models`, over the
//! [kqueue model](crate::kqueue_model).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use super::bits::{self, Kevent};
use super::changes::{Change, Changelist, Op};
use super::{for_each_fd, translate_fd, Filter, Item, KqSys, NativeEvent};
use crate::slots::Slots;
use crate::sys::context;
use crate::waker::{FdWaker, Wake};
use crate::{check_trigger, Capabilities, Event, Events, Interest, Poller, Token, Trigger, Waker};

/// udata of the waker's knote. Slot generations start at 1, and error
/// entries (udata 0 for `EV_DELETE`) are told apart by `EV_ERROR`.
const WAKER_UDATA: usize = 0;
/// ident of the `EVFILT_USER` waker (its own filter: no clash with fd 0).
const WAKER_IDENT: usize = 0;
/// macOS fails `kevent()` with `EINVAL` above this many seconds.
const MAX_WAIT: Duration = Duration::from_secs(100_000_000);
/// The most changes one `kevent()` call carries. A bounded chunk is the
/// more robust default: libkqueue caps one call's event list at 512
/// entries (`EFAULT` beyond, so 10,000 receipts at once failed), the
/// receipt buffer of a flush stays small, and the cost is one more
/// syscall per 256 changes, which only a burst of more changes than the
/// wait's capacity ever pays (each change costs the kernel more than its
/// share of a syscall). Below the cap, with room to spare.
const CHUNK: usize = 256;

fn kevent_for(f: Filter) -> Kevent {
    let filter = match f {
        Filter::Read => bits::EVFILT_READ,
        Filter::Write => bits::EVFILT_WRITE,
    };
    Kevent { filter, ..Kevent::default() }
}

/// The native form of a change.
fn to_kevent(c: &Change, receipt: bool) -> Kevent {
    Kevent {
        ident: c.fd as usize,
        flags: c.flags() | if receipt { bits::EV_RECEIPT } else { 0 },
        udata: c.udata(),
        ..kevent_for(c.filter)
    }
}

fn filter_of(k: &Kevent) -> Option<Filter> {
    match k.filter {
        bits::EVFILT_READ => Some(Filter::Read),
        bits::EVFILT_WRITE => Some(Filter::Write),
        _ => None,
    }
}

/// One `kevent()` call. `Ok(None)` is `EINTR`.
fn kevent<S: KqSys>(
    sys: &S,
    kq: RawFd,
    changes: &[Kevent],
    out: &mut [Kevent],
    timeout: Option<Duration>,
) -> io::Result<Option<usize>> {
    let timeout = timeout.map(|d| d.min(MAX_WAIT));
    match sys.kevent(kq, changes, out, timeout) {
        Ok(n) => Ok(Some(n.min(out.len()))),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
        Err(e) => Err(e),
    }
}

/// Applies `changes` now, with `EV_RECEIPT` (so the kernel does not
/// collect events), and returns each change's errno (0: done).
fn apply_now<S: KqSys>(sys: &S, kq: RawFd, changes: &mut [Kevent]) -> io::Result<Vec<i64>> {
    for k in changes.iter_mut() {
        k.flags |= bits::EV_RECEIPT;
    }
    let mut out = vec![Kevent::default(); changes.len()];
    let n = match kevent(sys, kq, changes, &mut out, Some(Duration::ZERO))? {
        Some(n) => n,
        // Every change was applied; the receipts are lost.
        None => return Ok(vec![0; changes.len()]),
    };
    Ok(out[..n].iter().map(|k| if k.flags & bits::EV_ERROR != 0 { k.data } else { 0 }).collect())
}

/// The `EVFILT_USER` waker.
#[derive(Debug)]
struct UserWaker<S: KqSys> {
    sys: S,
    kq: Arc<OwnedFd>,
}

impl<S: KqSys> Wake for UserWaker<S> {
    fn wake(&self) -> io::Result<()> {
        // No EV_ADD (it could re-create the knote without EV_CLEAR) and
        // no EV_CLEAR (FreeBSD would reset the trigger at once).
        let k = Kevent {
            ident: WAKER_IDENT,
            filter: bits::EVFILT_USER,
            fflags: bits::NOTE_TRIGGER,
            udata: WAKER_UDATA,
            ..Kevent::default()
        };
        loop {
            // No event list, and a zero timeout in case a kernel would
            // scan anyway: this call never blocks.
            match kevent(&self.sys, self.kq.as_raw_fd(), std::slice::from_ref(&k), &mut [], Some(Duration::ZERO)) {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => continue,
                Err(e) => return Err(context(S::NAME, "kevent(EVFILT_USER, NOTE_TRIGGER)", None, e)),
            }
        }
    }
}

#[derive(Debug)]
enum KqWaker<S: KqSys> {
    /// `EVFILT_USER` with `EV_CLEAR`: nothing to drain.
    User(Arc<UserWaker<S>>),
    /// A pipe watched with `EVFILT_READ` (level), drained when it fires.
    Pipe(Arc<FdWaker>),
}

impl<S: KqSys> KqWaker<S> {
    /// The waker's event came: make the next wake give a new one.
    fn fired(&self) {
        match self {
            // EV_CLEAR already reset it.
            KqWaker::User(_) => {}
            KqWaker::Pipe(p) => p.drain(),
        }
    }
}

/// The kqueue backend over the syscalls `S`. See the [module docs](super).
#[derive(Debug)]
pub struct KqueueOn<S: KqSys> {
    sys: S,
    /// Shared with the `EVFILT_USER` wakers, so that one outliving the
    /// poller never triggers a reused fd number.
    kq: Arc<OwnedFd>,
    slots: Slots,
    changes: Changelist,
    /// The changelist of a call.
    scratch: Vec<Kevent>,
    /// The event list of a call.
    native: Vec<Kevent>,
    /// This wait's events, decoded, before merging per fd.
    batch: Vec<Item>,
    /// ERROR events for failed adds that did not fit in an earlier wait.
    pending: Vec<Item>,
    waker: KqWaker<S>,
}

impl<S: KqSys + Default> KqueueOn<S> {
    /// A new kqueue with its waker registered.
    pub fn new() -> io::Result<Self> {
        Self::with_sys(S::default())
    }
}

impl<S: KqSys> KqueueOn<S> {
    /// A new kqueue over the syscalls `sys`, with its waker registered.
    pub fn with_sys(sys: S) -> io::Result<Self> {
        let kq = Arc::new(sys.kqueue().map_err(|e| context(S::NAME, "kqueue", None, e))?);
        let waker = Self::new_waker(&sys, &kq)?;
        Ok(KqueueOn {
            sys,
            kq,
            slots: Slots::new(),
            changes: Changelist::default(),
            scratch: Vec::new(),
            native: Vec::new(),
            batch: Vec::new(),
            pending: Vec::new(),
            waker,
        })
    }

    fn new_waker(sys: &S, kq: &Arc<OwnedFd>) -> io::Result<KqWaker<S>> {
        if S::USER_FILTER {
            // EV_CLEAR, or the triggered user event never resets.
            let mut k = Kevent {
                ident: WAKER_IDENT,
                filter: bits::EVFILT_USER,
                flags: bits::EV_ADD | bits::EV_CLEAR,
                udata: WAKER_UDATA,
                ..Kevent::default()
            };
            let errs = apply_now(sys, kq.as_raw_fd(), std::slice::from_mut(&mut k))
                .map_err(|e| context(S::NAME, "kevent(EVFILT_USER)", None, e))?;
            match errs.first().copied().unwrap_or(0) {
                0 => return Ok(KqWaker::User(Arc::new(UserWaker { sys: sys.clone(), kq: kq.clone() }))),
                e if e == libc::EINVAL as i64 => {
                    log::debug!("{}: no EVFILT_USER here (EINVAL); the waker is a pipe", S::NAME);
                }
                e => {
                    let err = io::Error::from_raw_os_error(e as i32);
                    return Err(context(S::NAME, "kevent(EVFILT_USER)", None, err));
                }
            }
        }
        let pipe = FdWaker::new()?;
        let mut k =
            Kevent { ident: pipe.fd() as usize, flags: bits::EV_ADD, udata: WAKER_UDATA, ..kevent_for(Filter::Read) };
        let errs = apply_now(sys, kq.as_raw_fd(), std::slice::from_mut(&mut k))
            .map_err(|e| context(S::NAME, "kevent(waker pipe)", Some(pipe.fd()), e))?;
        if let Some(&e) = errs.first().filter(|&&e| e != 0) {
            let err = io::Error::from_raw_os_error(e as i32);
            return Err(context(S::NAME, "kevent(waker pipe)", Some(pipe.fd()), err));
        }
        Ok(KqWaker::Pipe(Arc::new(pipe)))
    }

    /// Handles an `EV_ERROR` entry; returns the ERROR event a failed add
    /// gives its registration.
    fn change_result(&mut self, cursor: &mut usize, k: &Kevent) -> Option<Item> {
        let errno = k.data;
        let fd = k.ident as RawFd;
        let udata = k.udata;
        let Some(filter) = filter_of(k) else {
            if errno != 0 {
                log::warn!("{}: a change for ident {fd} (filter {}) failed: errno {errno}", S::NAME, k.filter);
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
                log::trace!("{}: {op:?} of {} for fd {fd}: {err} (already gone)", S::NAME, filter.name());
                None
            }
            Op::Delete | Op::Disable => {
                log::warn!("{}: {op:?} of {} for fd {fd} failed: {err}", S::NAME, filter.name());
                None
            }
            Op::Add(_) if errno == libc::EPIPE as i64 => {
                // Older macOS, a pipe whose other end is gone: events still come (mio#582).
                log::debug!("{}: EV_ADD of {} for fd {fd}: {err} (ignored)", S::NAME, filter.name());
                None
            }
            Op::Add(_) => {
                log::warn!(
                    "{}: watching fd {fd} with {} failed: {err}; the add/modify call had already \
                     returned, so its registration gets an ERROR event",
                    S::NAME,
                    filter.name()
                );
                let ev = NativeEvent { filter, flags: bits::EV_ERROR, fflags: 0, data: errno };
                Some(Item { fd, gen: udata as u32, ev })
            }
        }
    }

    /// Applies every queued change now, with receipts (no event is
    /// collected), [`CHUNK`] changes per call. Failed adds' ERROR events go
    /// to `pending`.
    fn flush(&mut self) -> io::Result<()> {
        let list: Vec<Kevent> = self.changes.iter().map(|c| to_kevent(c, true)).collect();
        let mut out = vec![Kevent::default(); list.len().min(CHUNK)];
        let mut errors = Vec::new();
        for chunk in list.chunks(CHUNK) {
            match kevent(&self.sys, self.kq.as_raw_fd(), chunk, &mut out[..chunk.len()], Some(Duration::ZERO)) {
                // EINTR (None): every change was applied, the receipts are lost.
                Ok(n) => errors.extend(out[..n.unwrap_or(0)].iter().filter(|k| k.flags & bits::EV_ERROR != 0)),
                Err(e) => {
                    // The earlier chunks are sent again with the rest: harmless.
                    self.changes.maybe_submitted();
                    return Err(context(S::NAME, "kevent (applying queued changes)", None, e));
                }
            }
        }
        self.changes.submitted();
        let mut cursor = 0;
        for k in &errors {
            if let Some(item) = self.change_result(&mut cursor, k) {
                self.pending.push(item);
            }
        }
        Ok(())
    }

    /// Merges this wait's events per fd, passes them through the slot
    /// table and silences the other filter of a oneshot that fired.
    fn deliver(&mut self, events: &mut Events) {
        let KqueueOn { batch, slots, changes, .. } = self;
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

impl<S: KqSys> Poller for KqueueOn<S> {
    fn name(&self) -> &'static str {
        S::NAME
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
        check_trigger(S::NAME, self.capabilities(), trigger)?;
        let (new, old) = self.slots.insert(fd, token, interest, trigger)?;
        // An old slot: the number was reused without delete (or added
        // twice); its knotes, if any survive, are re-created.
        self.changes.sync(fd, old.as_ref(), &new);
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
        check_trigger(S::NAME, self.capabilities(), trigger)?;
        let (old, new) = self.slots.update(S::NAME, fd, token, interest, trigger)?;
        self.changes.sync(fd, Some(&old), &new);
        Ok(())
    }

    fn delete(&mut self, fd: RawFd) -> io::Result<()> {
        self.slots.remove(S::NAME, fd)?;
        self.pending.retain(|i| i.fd != fd);
        let filters = self.changes.forget(fd);
        let mut list: Vec<Kevent> = Filter::BOTH
            .into_iter()
            .filter(|f| filters & f.bit() != 0)
            .map(|f| to_kevent(&Change { fd, filter: f, op: Op::Delete, gen: 0 }, true))
            .collect();
        if list.is_empty() {
            return Ok(());
        }
        let errs = apply_now(&self.sys, self.kq.as_raw_fd(), &mut list)
            .map_err(|e| context(S::NAME, "kevent(EV_DELETE)", Some(fd), e))?;
        // ENOENT: never added or already gone; EBADF: closed before delete.
        match errs.into_iter().find(|&e| e != 0 && e != libc::ENOENT as i64 && e != libc::EBADF as i64) {
            Some(e) => Err(context(S::NAME, "kevent(EV_DELETE)", Some(fd), io::Error::from_raw_os_error(e as i32))),
            None => Ok(()),
        }
    }

    fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        events.clear();
        self.batch.clear();
        let cap = events.capacity().min(libc::c_int::MAX as usize);
        // Every change sent with the wait must have room for its error
        // entry, and a call carries at most CHUNK: more changes than that
        // are applied first, with receipts.
        if self.changes.len() > cap.min(CHUNK).saturating_sub(self.pending.len()) {
            self.flush()?;
        }
        let carried = self.pending.len().min(cap);
        self.batch.extend(self.pending.drain(..carried));
        let room = cap - self.batch.len();
        if room > 0 {
            if self.native.len() < room {
                self.native.resize(room, Kevent::default());
            }
            // ERROR events already in hand: do not block.
            let timeout = if self.batch.is_empty() { timeout } else { Some(Duration::ZERO) };
            for _ in 0..2 {
                self.scratch.clear();
                self.scratch.extend(self.changes.iter().map(|c| to_kevent(c, false)));
                let kq = self.kq.as_raw_fd();
                let n = match kevent(&self.sys, kq, &self.scratch, &mut self.native[..room], timeout) {
                    Ok(Some(n)) => n,
                    // kqueue(2): on EINTR every change was applied.
                    Ok(None) => {
                        self.changes.submitted();
                        break;
                    }
                    Err(e) => {
                        self.changes.maybe_submitted();
                        return Err(context(S::NAME, "kevent", None, e));
                    }
                };
                self.changes.submitted();
                let (mut errors, mut cursor) = (false, 0);
                for i in 0..n {
                    let k = self.native[i];
                    if k.flags & bits::EV_ERROR != 0 {
                        errors = true;
                        if let Some(item) = self.change_result(&mut cursor, &k) {
                            self.batch.push(item);
                        }
                        continue;
                    }
                    if k.udata == WAKER_UDATA {
                        self.waker.fired();
                        events.set_woken();
                        continue;
                    }
                    let Some(filter) = filter_of(&k) else { continue };
                    let ev = NativeEvent { filter, flags: k.flags, fflags: k.fflags, data: k.data };
                    self.batch.push(Item { fd: k.ident as RawFd, gen: k.udata as u32, ev });
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
            KqWaker::User(w) => Waker::new(w.clone()),
            KqWaker::Pipe(w) => Waker::new(w.clone()),
        }
    }
}
