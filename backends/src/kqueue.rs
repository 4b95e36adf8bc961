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
//!   capacity), nor than 256 changes. When more changes are queued, they are
//!   first applied in separate `kevent()` calls of at most 256 changes, with
//!   `EV_RECEIPT` on each and an event list as long as the chunk: receipts
//!   guarantee the kernel returns without collecting readiness events, so
//!   nothing beyond the capacity is drained. ERROR events from those calls
//!   that do not fit are kept for the next wait. Bounded chunks are the
//!   default because libkqueue caps one call's event list at 512 entries
//!   (`EFAULT` beyond); they cost one syscall per 256 changes of a burst.
//! * **A failed change forgets no knote.** After a failed `EV_ADD` the
//!   filter stays recorded as possibly in the kernel (libkqueue fails
//!   `EV_ADD` on an existing knote and keeps it), as after an `EV_DELETE`
//!   that failed with anything but `ENOENT`/`EBADF`, so that `delete()`
//!   removes it.
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
// only the kqueue platforms (and the model) call them.
#![cfg_attr(
    not(any(anypoll_kqueue, all(target_os = "linux", any(feature = "models", feature = "libkqueue")))),
    allow(dead_code)
)]

use std::os::fd::RawFd;

use crate::{Interest, Ready, Trigger};

#[cfg(any(anypoll_kqueue, all(target_os = "linux", any(feature = "models", feature = "libkqueue"))))]
mod backend;
mod changes;
pub mod deviations;
#[cfg(anypoll_kqueue)]
mod libc_sys;
#[cfg(all(target_os = "linux", feature = "libkqueue"))]
mod libkqueue_sys;

#[cfg(any(anypoll_kqueue, all(target_os = "linux", any(feature = "models", feature = "libkqueue"))))]
pub use backend::KqueueOn;
#[cfg(anypoll_kqueue)]
pub use libc_sys::Libc;
#[cfg(all(target_os = "linux", feature = "libkqueue"))]
pub use libkqueue_sys::LibKqueue;

/// Takes ownership of the fd a `kqueue()` returned (negative: the error in
/// errno) and makes it close-on-exec: the part both native seams share.
#[cfg(any(anypoll_kqueue, all(target_os = "linux", feature = "libkqueue")))]
fn own_kqueue(fd: libc::c_int) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd = crate::sys::cvt(fd)?;
    // SAFETY: kqueue() just returned this fd, and it belongs to nobody else.
    let kq = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: fcntl on the fd we own, with integer arguments only.
    crate::sys::cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    Ok(kq)
}

/// A native `struct kevent` (the platform's, or libkqueue's) and its
/// conversion from and to the seam's [`bits::Kevent`].
#[cfg(any(anypoll_kqueue, all(target_os = "linux", feature = "libkqueue")))]
trait NativeKevent: Copy {
    fn zeroed() -> Self;
    fn from_seam(e: &bits::Kevent) -> Self;
    fn to_seam(&self) -> bits::Kevent;
}

/// One `kevent()` call over native structs: the part both native seams
/// share. The changes are converted into `bufs.0`, `bufs.1` grows to room
/// for the events, both counts are clamped to `c_int`, and the timeout
/// becomes a `timespec` that outlives the call. `call` makes the syscall
/// with (changelist, nchanges, eventlist, nevents, timeout): the pointers
/// hold `nchanges` initialized entries and room for `nevents`, and the
/// timeout pointer is null or valid. The events it returned are converted
/// back.
#[cfg(any(anypoll_kqueue, all(target_os = "linux", feature = "libkqueue")))]
fn native_kevent<N: NativeKevent>(
    bufs: &mut (Vec<N>, Vec<N>),
    changes: &[bits::Kevent],
    events: &mut [bits::Kevent],
    timeout: Option<std::time::Duration>,
    call: impl FnOnce(*const N, libc::c_int, *mut N, libc::c_int, *const libc::timespec) -> libc::c_int,
) -> std::io::Result<usize> {
    let ts = crate::sys::timespec(timeout);
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    let nchanges = changes.len().min(libc::c_int::MAX as usize);
    let nevents = events.len().min(libc::c_int::MAX as usize);
    let (ch, out) = bufs;
    ch.clear();
    ch.extend(changes[..nchanges].iter().map(N::from_seam));
    if out.len() < nevents {
        out.resize(nevents, N::zeroed());
    }
    let n = call(ch.as_ptr(), nchanges as libc::c_int, out.as_mut_ptr(), nevents as libc::c_int, ts_ptr);
    let n = (crate::sys::cvt(n)? as usize).min(nevents);
    for (e, k) in events.iter_mut().zip(&out[..n]) {
        *e = k.to_seam();
    }
    Ok(n)
}

/// The kqueue backend over libkqueue on Linux (feature `libkqueue`).
#[cfg(all(target_os = "linux", feature = "libkqueue"))]
pub type KqueueLibkqueue = KqueueOn<LibKqueue>;

/// The kqueue backend over the real `kqueue()`/`kevent()`.
#[cfg(anypoll_kqueue)]
pub type Kqueue = KqueueOn<Libc>;

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
    /// `EV_ONESHOT`: delete the knote after one delivery.
    pub const EV_ONESHOT: u16 = 0x0010;
    /// `EVFILT_USER` as the [syscall seam](super::KqSys) numbers it
    /// (FreeBSD's value; each platform's own number is the production
    /// imp's business).
    pub const EVFILT_USER: i16 = -11;
    /// A filter the seam does not know (a native number it could not map).
    pub const EVFILT_OTHER: i16 = i16::MIN;

    /// One `struct kevent` as the [syscall seam](super::KqSys) carries it:
    /// the fields FreeBSD, macOS, NetBSD and OpenBSD all have, with the
    /// filter in the seam's numbering ([`EVFILT_READ`], [`EVFILT_WRITE`],
    /// [`EVFILT_USER`]) and `udata` as the integer this backend stores in it
    /// (never a pointer it dereferences). The production imp converts it to
    /// and from the platform's `struct kevent`; on Linux there is none, and
    /// the model (`kqueue_model`, feature `models`) reads it as it is.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Kevent {
        /// `ident`: the fd, or the `EVFILT_USER` identifier.
        pub ident: usize,
        /// `filter`.
        pub filter: i16,
        /// `flags` (`EV_*`).
        pub flags: u16,
        /// `fflags` (`NOTE_*`; with `EV_EOF` the socket error).
        pub fflags: u32,
        /// `data`: bytes readable, space writable, or with `EV_ERROR` the errno.
        pub data: i64,
        /// `udata`.
        pub udata: usize,
    }
}

/// The two syscalls of kqueue, as the backend makes them.
///
/// Implementations are cheap to clone: the backend keeps one, and so does
/// each `EVFILT_USER` waker.
pub trait KqSys: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The backend's registry name over this seam (`kqueue`, `kqueue-model`).
    const NAME: &'static str;

    /// Whether this kernel has `EVFILT_USER` at all (OpenBSD before 7.8 has
    /// not: the waker is a pipe there). Where it is `true` the backend still
    /// falls back to the pipe when `EV_ADD` of the user event says `EINVAL`.
    const USER_FILTER: bool;

    /// kqueue(2): a new kqueue, close-on-exec.
    fn kqueue(&self) -> std::io::Result<std::os::fd::OwnedFd>;

    /// kevent(2): applies `changes` in order, then collects at most
    /// `events.len()` events, waiting at most `timeout` (`None`: forever).
    /// Returns how many entries of `events` it filled. `EINTR` is returned
    /// as an error, not retried.
    fn kevent(
        &self,
        kq: RawFd,
        changes: &[bits::Kevent],
        events: &mut [bits::Kevent],
        timeout: Option<std::time::Duration>,
    ) -> std::io::Result<usize>;
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

#[cfg(test)]
mod tests {
    use super::bits::*;
    use super::*;

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
}
