//! The event ports backend (illumos, Solaris).
//!
//! * `port_create` gives the port (an fd, made close-on-exec here);
//!   `port_associate(PORT_SOURCE_FD, fd, events, user)` watches an fd;
//!   `port_getn` collects events; `port_send(PORT_SOURCE_USER)` is the waker.
//! * **Every association is oneshot** in the kernel: delivering an event
//!   dissociates the fd. Level is done by re-associating, after each event,
//!   with the still-wanted mask (the slot's watched interest). The
//!   re-association waits until the start of the *next* wait, as libevent's
//!   `evport.c` and Redis's `ae_evport.c` do: `port_associate` polls the fd at
//!   once (`VOP_POLL`) and queues an event if the condition already holds, so
//!   re-associating straight after the event would queue one for the data the
//!   caller is about to read. Oneshot is native: no re-association until
//!   `modify`. A oneshot event that carried nothing the caller watches is not
//!   a delivery, so that association is renewed too (see `desired_mask`).
//! * **Edge is refused**: nothing in event ports reports changes only.
//! * The kernel reports `revents & (asked | POLLHUP | POLLERR)`, in poll's
//!   bits, so [`translate`] is [`poll::translate`](crate::poll::translate).
//!   `POLLRDHUP` (`0x4000`, "read-side hangup" in illumos's `sys/poll.h`) is
//!   asked with read interest on illumos; sockfs (`so_poll`, `sotpi_poll`)
//!   sets it once the read side is shut down, hence
//!   [`Capabilities::RDHUP`](crate::Capabilities::RDHUP) on illumos. Solaris
//!   has no `POLLRDHUP`; there a half-close shows when recv returns 0. (An
//!   illumos kernel from before `POLLRDHUP` existed ignores the bit.)
//! * illumos sockfs reports a pending socket error as `POLLIN`/`POLLOUT`
//!   (whatever was asked), not `POLLERR`: a refused connect shows as
//!   [`Ready::WRITABLE`] and must be confirmed with `SO_ERROR`, as on select.
//!   `POLLHUP`/`POLLERR` are still reported where the file reports them
//!   (a socket shut down both ways, a pipe), but since a failed connect is
//!   not, this backend does **not** claim `ERRHUP`: that capability means
//!   "a failed connect shows as ERROR", and without it the connection layer
//!   confirms every connect with `SO_ERROR`, one mechanism for select and
//!   event ports alike.
//! * The association's user pointer carries the slot generation (an integer,
//!   never dereferenced); `portev_object` is the fd. Every event goes through
//!   the slot table's `accept`. The kernel copies `portev_user` when the event
//!   is collected, and `port_associate` over a fired, uncollected event
//!   discards that event (`port_associate_fd` → `port_remove_done_event`), so
//!   an event never carries an older mask.
//! * Closing an fd dissociates it. Re-associating a closed fd fails with
//!   `EBADFD` (illumos returns `EBADFD`, not `EBADF`; both are accepted): the
//!   registration is gone (logged at debug), not a wait error. As with poll,
//!   an fd number closed without `delete` and reused before the new owner's
//!   `add` is watched under the old registration until that `add`.
//! * `port_dissociate` fails with `ENOENT` when the association already fired
//!   and was not re-armed, and `EBADFD` when the fd is closed: both harmless.
//! * **`port_getn`: `max` = the events buffer's capacity, `nget` = 1 in/out.**
//!   `nget` is the number of events to *wait for* (`port_getn(3C)`: it "blocks
//!   until the desired number of events are available", then writes back how
//!   many it returned, up to `max`). HAProxy's `src/ev_evports.c` keeps
//!   `max = maxpollevents` and went back to `nevlist = 1` ("normally we should
//!   probably expect to pass global.tune.maxpollevents here [...] but it
//!   appears unreliable in tests, even starting with value 2 [...] let's
//!   switch back to 1"): with `nget > 1` a lone event waits for the timeout
//!   and comes back with `ETIME`, and is lost unless `nget` is honoured.
//!   libevent (`EVENTS_PER_GETN` 8), Redis, APR and the `polling` crate also
//!   pass `nget = 1` with `max > 1`. Batching through `max` is safe; waiting
//!   for more than one is not.
//! * **`ETIME` may come with events**: after a timeout the kernel's
//!   `port_getn` still copies out the events queued meanwhile, and libc writes
//!   their count to `nget` before returning -1/`ETIME`; they are honoured
//!   (`Ok(n)`). (The `polling` crate, through rustix's `port::getn`, returns
//!   the error before reading `nget` back and drops them.) On `EINTR` the
//!   illumos kernel returns no event and libc leaves `nget` as it was passed
//!   (1), so "honouring `nget`" alone would read one entry the kernel never
//!   wrote. The first entry is therefore cleared before each call
//!   (`portev_source` 0, which no source uses) and entries still 0 are
//!   skipped: `nget` is honoured on `EINTR` too (for kernels that do return
//!   events then), and `EINTR` with no event is `Ok(0)`. Forgetting `nget`
//!   on `EINTR`/`ETIME` made HAProxy loop endlessly with `SIGCHLD`.
//! * The wait timeout is capped at `i32::MAX` seconds, so the kernel's
//!   `now + timeout` cannot overflow into an already-expired deadline (which
//!   would make a loop waiting "forever" spin).
//! * The waker is `port_send` with a reserved user value: no fd, so illumos
//!   bugs 16700 (an eventfd counter that must be reset before it is written)
//!   and 13436 (a pipe that must be drained before it is relied on) do not
//!   apply. Wakes coalesce: an `AtomicBool` "pending" flag makes many `wake()`
//!   calls queue one user event, cleared by the wait that collects it, which
//!   sets [`Events::woken`](crate::Events::woken). The wakers share the port
//!   fd, so one that outlives the poller never sends to a reused fd number.
//! * [`Capabilities::O1`](crate::Capabilities::O1): the port queues fired
//!   events; a wait costs the events collected, not the fds associated.

use std::time::Duration;

use crate::{Interest, Ready, Trigger};

/// Event ports' constants and the errnos the backend acts on, with illumos's
/// (and Solaris's) values. They are spelled out so that the pure functions
/// build and are tested on every host. Poll's bits are
/// [`poll::bits`](crate::poll::bits).
pub mod bits {
    /// `PORT_SOURCE_USER`: events sent with `port_send` (the waker).
    pub const PORT_SOURCE_USER: i32 = 3;
    /// `PORT_SOURCE_FD`: events of fds associated with `port_associate`.
    pub const PORT_SOURCE_FD: i32 = 4;
    /// `POLLRDHUP` on illumos (`sys/poll.h`). Solaris has none.
    pub const ILLUMOS_RDHUP: i16 = 0x4000;
    /// `ENOENT`: `port_dissociate` of an fd with no active association.
    pub const ENOENT: i32 = 2;
    /// `EINTR`: a signal interrupted `port_getn`.
    pub const EINTR: i32 = 4;
    /// `EBADF`
    pub const EBADF: i32 = 9;
    /// `ETIME`: `port_getn`'s timeout expired (possibly with events).
    pub const ETIME: i32 = 62;
    /// `EBADFD`: what `port_associate`/`port_dissociate` return for an fd
    /// that is not open.
    pub const EBADFD: i32 = 81;
}

/// This platform's `POLLRDHUP` for event ports, or 0 where there is none.
#[cfg(target_os = "illumos")]
pub const RDHUP_HERE: i16 = bits::ILLUMOS_RDHUP;
/// This platform's `POLLRDHUP` for event ports, or 0 where there is none.
#[cfg(not(target_os = "illumos"))]
pub const RDHUP_HERE: i16 = 0;

/// The longest wait handed to `port_getn`, so that the kernel's
/// `now + timeout` cannot overflow.
const MAX_WAIT: Duration = Duration::from_secs(i32::MAX as u64);

/// Translates a `PORT_SOURCE_FD` event's `portev_events` (poll's bits) into
/// [`Ready`]; `rdhup` is the platform's `POLLRDHUP` (0 where there is none).
pub fn translate(events: i32, rdhup: i16) -> Ready {
    // Poll's revents widened to an int: the low 16 bits are all there is.
    crate::poll::translate(events as i16, rdhup)
}

/// The `port_associate` events mask for an interest: `POLLIN` (plus
/// `rdhup`) for read, `POLLOUT` for write. `POLLHUP`/`POLLERR` need no asking.
pub fn mask(interest: Interest, rdhup: i16) -> i32 {
    i32::from(crate::poll::mask(interest, rdhup))
}

/// The mask a registration must be associated with now, or `None` when it
/// must not be associated: `trigger` and `watched` (the slot's interest
/// while armed, nothing once a oneshot fired) come from the slot after
/// `accept`.
///
/// Used after `add`/`modify` and after every event, since the event ended the
/// kernel's association: a level registration is renewed; a oneshot one is
/// renewed only if it is still armed (its event carried nothing the caller
/// watches, so nothing was delivered); edge never gets this far.
#[cfg_attr(not(any(target_os = "illumos", target_os = "solaris")), allow(dead_code))]
pub(crate) fn desired_mask(trigger: Trigger, watched: Interest, rdhup: i16) -> Option<i32> {
    match trigger {
        Trigger::Edge | Trigger::EdgeOneshot => None,
        Trigger::Level | Trigger::Oneshot if watched.is_empty() => None,
        Trigger::Level | Trigger::Oneshot => Some(mask(watched, rdhup)),
    }
}

/// How many entries at the start of the list `port_getn` may have filled,
/// from its return value `ret`, the `errno` it left (when `ret` is -1), the
/// `nget` it left and the `max` passed in; `Err(errno)` for a real error.
///
/// `ETIME` and `EINTR` are not errors: their `nget` is honoured (`ETIME` can
/// come with events). On `EINTR` illumos leaves `nget` as passed in, so the
/// caller skips entries that still hold the cleared `portev_source`.
#[cfg_attr(not(any(target_os = "illumos", target_os = "solaris")), allow(dead_code))]
pub(crate) fn getn_filled(ret: i32, errno: i32, nget: u32, max: u32) -> Result<usize, i32> {
    if ret != 0 && errno != bits::ETIME && errno != bits::EINTR {
        return Err(errno);
    }
    Ok(nget.min(max) as usize)
}

/// `port_getn`'s timeout: `None` waits forever, a zero duration polls, and
/// anything longer than [`MAX_WAIT`] is capped to it.
#[cfg_attr(not(any(target_os = "illumos", target_os = "solaris")), allow(dead_code))]
pub(crate) fn wait_timeout(timeout: Option<Duration>) -> Option<libc::timespec> {
    crate::sys::timespec(timeout.map(|d| d.min(MAX_WAIT)))
}

#[cfg(any(target_os = "illumos", target_os = "solaris"))]
pub use imp::EvPorts;

#[cfg(any(target_os = "illumos", target_os = "solaris"))]
mod imp {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::ptr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::{bits, desired_mask, getn_filled, translate, wait_timeout, RDHUP_HERE};
    use crate::slots::Slots;
    use crate::sys::{context, cvt};
    use crate::waker::Wake;
    use crate::{check_trigger, Capabilities, Event, Events, Interest, Poller, Token, Trigger, Waker};

    const _: () = assert!(
        bits::PORT_SOURCE_USER == libc::PORT_SOURCE_USER
            && bits::PORT_SOURCE_FD == libc::PORT_SOURCE_FD
            && bits::ENOENT == libc::ENOENT
            && bits::EINTR == libc::EINTR
            && bits::EBADF == libc::EBADF
            && bits::ETIME == libc::ETIME
            && bits::EBADFD == libc::EBADFD
    );
    #[cfg(target_os = "illumos")]
    const _: () = assert!(bits::ILLUMOS_RDHUP == libc::POLLRDHUP);

    const NAME: &str = "evports";
    /// The `portev_user` of the waker's user event. No registration has this
    /// generation: generations are `u32`s carried in a pointer-sized word.
    const WAKE_USER: usize = usize::MAX;

    /// The port, shared by the poller and its wakers.
    #[derive(Debug)]
    struct Port {
        fd: OwnedFd,
        /// A wake-up is queued in the port and no wait has collected it yet.
        wake_pending: AtomicBool,
    }

    impl Wake for Port {
        fn wake(&self) -> io::Result<()> {
            if self.wake_pending.swap(true, Ordering::AcqRel) {
                // One user event is already queued: this wake rides on it.
                return Ok(());
            }
            // SAFETY: port_send takes the port fd, an int and a user value
            // that the kernel only copies (WAKE_USER is never dereferenced).
            let sent = cvt(unsafe { libc::port_send(self.fd.as_raw_fd(), 0, WAKE_USER as *mut libc::c_void) });
            if let Err(e) = sent {
                // Nothing is queued, so the next wake must try again.
                self.wake_pending.store(false, Ordering::Release);
                return Err(context(NAME, "port_send", None, e));
            }
            Ok(())
        }
    }

    /// `port_getn`'s output buffer. `port_event` holds a raw `portev_user`
    /// pointer, which makes it neither `Send` nor `Sync`.
    struct NativeEvents(Vec<libc::port_event>);

    // SAFETY: the `portev_user` pointers in the buffer are opaque integers
    // (generations, WAKE_USER) that are never dereferenced.
    unsafe impl Send for NativeEvents {}
    // SAFETY: as above; shared access only reads those integers.
    unsafe impl Sync for NativeEvents {}

    impl std::fmt::Debug for NativeEvents {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "NativeEvents({} entries)", self.0.len())
        }
    }

    fn empty_event() -> libc::port_event {
        libc::port_event {
            portev_events: 0,
            portev_source: 0,
            portev_pad: 0,
            portev_object: 0,
            portev_user: ptr::null_mut(),
        }
    }

    /// The event ports backend. See the [module docs](super).
    #[derive(Debug)]
    pub struct EvPorts {
        port: Arc<Port>,
        slots: Slots,
        /// fd number → whether the kernel holds an association for it on this
        /// port (armed, or fired with its event not collected yet).
        associated: Vec<bool>,
        /// fds whose association fired in the last wait and that still want
        /// events: re-associated at the start of the next wait.
        rearm: Vec<RawFd>,
        native: NativeEvents,
    }

    impl EvPorts {
        /// A new event port.
        pub fn new() -> io::Result<EvPorts> {
            // SAFETY: port_create takes no arguments; the result is checked.
            let fd = cvt(unsafe { libc::port_create() }).map_err(|e| context(NAME, "port_create", None, e))?;
            // SAFETY: the fd was just created and belongs to nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: fcntl on an fd we own, with integer arguments only.
            let cloexec = unsafe {
                cvt(libc::fcntl(fd.as_raw_fd(), libc::F_GETFD))
                    .and_then(|fl| cvt(libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, fl | libc::FD_CLOEXEC)))
            };
            cloexec.map_err(|e| context(NAME, "fcntl(FD_CLOEXEC)", Some(fd.as_raw_fd()), e))?;
            Ok(EvPorts {
                port: Arc::new(Port { fd, wake_pending: AtomicBool::new(false) }),
                slots: Slots::new(),
                associated: Vec::new(),
                rearm: Vec::new(),
                native: NativeEvents(Vec::new()),
            })
        }

        fn caps() -> Capabilities {
            let rdhup = if RDHUP_HERE != 0 { Capabilities::RDHUP } else { Capabilities::empty() };
            Capabilities::LEVEL | Capabilities::ONESHOT | Capabilities::O1 | rdhup
        }

        fn is_associated(&self, fd: RawFd) -> bool {
            usize::try_from(fd).ok().and_then(|i| self.associated.get(i)).copied().unwrap_or(false)
        }

        fn set_associated(&mut self, fd: RawFd, on: bool) {
            let Ok(i) = usize::try_from(fd) else { return };
            if i >= self.associated.len() {
                if !on {
                    return;
                }
                self.associated.resize(i + 1, false);
            }
            self.associated[i] = on;
        }

        /// `port_associate(PORT_SOURCE_FD)`, with the generation as user value.
        fn associate(&mut self, fd: RawFd, mask: i32, gen: u32) -> io::Result<()> {
            // SAFETY: port_associate only records the fd number, the mask and
            // the user value, an integer (the generation) never dereferenced.
            cvt(unsafe {
                libc::port_associate(
                    self.port.fd.as_raw_fd(),
                    libc::PORT_SOURCE_FD,
                    fd as libc::uintptr_t,
                    mask,
                    gen as usize as *mut libc::c_void,
                )
            })?;
            self.set_associated(fd, true);
            Ok(())
        }

        /// `port_dissociate(PORT_SOURCE_FD)`; an association that is already
        /// gone is not an error.
        fn dissociate(&mut self, fd: RawFd) -> io::Result<()> {
            self.set_associated(fd, false);
            // SAFETY: integer arguments only.
            let r = cvt(unsafe {
                libc::port_dissociate(self.port.fd.as_raw_fd(), libc::PORT_SOURCE_FD, fd as libc::uintptr_t)
            });
            match r {
                Ok(_) => Ok(()),
                // ENOENT: it fired and was not re-armed (or the kernel dropped
                // it when the fd was closed). EBADF(D): the fd is closed, which
                // dissociated it.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EBADF) | Some(libc::EBADFD)) => {
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }

        /// Brings the kernel to what the slot wants now (nothing when the fd
        /// is not registered).
        fn sync(&mut self, fd: RawFd) -> io::Result<()> {
            let want =
                self.slots.get(fd).and_then(|s| Some((desired_mask(s.trigger, s.watched(), RDHUP_HERE)?, s.gen)));
            match want {
                Some((mask, gen)) => {
                    self.associate(fd, mask, gen).map_err(|e| context(NAME, "port_associate", Some(fd), e))
                }
                None if self.is_associated(fd) => {
                    self.dissociate(fd).map_err(|e| context(NAME, "port_dissociate", Some(fd), e))
                }
                None => Ok(()),
            }
        }

        /// Re-associates the fds whose association fired in the last wait
        /// and that still want events. On an error other than a closed fd,
        /// that fd is dropped from the list and the error names it; the rest
        /// wait for the next call.
        fn rearm_pending(&mut self) -> io::Result<()> {
            while let Some(fd) = self.rearm.pop() {
                if self.is_associated(fd) {
                    // add/modify since the event already did it.
                    continue;
                }
                let Some(slot) = self.slots.get(fd) else { continue };
                let Some(mask) = desired_mask(slot.trigger, slot.watched(), RDHUP_HERE) else { continue };
                let gen = slot.gen;
                match self.associate(fd, mask, gen) {
                    Ok(()) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF) | Some(libc::EBADFD)) => {
                        log::debug!("{NAME}: fd {fd} was closed without delete; its registration is gone ({e})");
                    }
                    Err(e) => return Err(context(NAME, "port_associate (re-arm)", Some(fd), e)),
                }
            }
            Ok(())
        }

        fn dispatch(&mut self, ev: libc::port_event, events: &mut Events) {
            match libc::c_int::from(ev.portev_source) {
                libc::PORT_SOURCE_FD => self.fd_event(ev, events),
                libc::PORT_SOURCE_USER if ev.portev_user as usize == WAKE_USER => {
                    self.port.wake_pending.store(false, Ordering::Release);
                    events.set_woken();
                }
                // The cleared entry: port_getn did not write it (EINTR).
                0 => {}
                source => {
                    log::debug!("{NAME}: ignoring an event from source {source} (user {:#x})", ev.portev_user as usize)
                }
            }
        }

        fn fd_event(&mut self, ev: libc::port_event, events: &mut Events) {
            let Ok(fd) = RawFd::try_from(ev.portev_object) else {
                log::debug!("{NAME}: ignoring an fd event for object {:#x}", ev.portev_object);
                return;
            };
            // Delivering the event ended the association (always oneshot).
            self.set_associated(fd, false);
            // A user value that is no u32 matches no generation (0 is never one).
            let gen = u32::try_from(ev.portev_user as usize).unwrap_or(0);
            if let Some((token, ready)) = self.slots.accept(fd, Some(gen), translate(ev.portev_events, RDHUP_HERE)) {
                events.push(Event { token, fd, ready });
            }
            if self.slots.get(fd).is_some_and(|s| desired_mask(s.trigger, s.watched(), RDHUP_HERE).is_some()) {
                self.rearm.push(fd);
            }
        }
    }

    impl Poller for EvPorts {
        fn name(&self) -> &'static str {
            NAME
        }

        fn capabilities(&self) -> Capabilities {
            Self::caps()
        }

        fn add(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
            check_trigger(NAME, Self::caps(), trigger)?;
            let (_, old) = self.slots.insert(fd, token, interest, trigger)?;
            if let Err(e) = self.sync(fd) {
                self.slots.restore(fd, old);
                return Err(e);
            }
            Ok(())
        }

        fn modify(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
            check_trigger(NAME, Self::caps(), trigger)?;
            let (old, _) = self.slots.update(NAME, fd, token, interest, trigger)?;
            if let Err(e) = self.sync(fd) {
                self.slots.restore(fd, Some(old));
                return Err(e);
            }
            Ok(())
        }

        fn delete(&mut self, fd: RawFd) -> io::Result<()> {
            self.slots.remove(NAME, fd)?;
            if self.is_associated(fd) {
                self.dissociate(fd).map_err(|e| context(NAME, "port_dissociate", Some(fd), e))?;
            }
            Ok(())
        }

        fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
            events.clear();
            self.rearm_pending()?;
            let max = u32::try_from(events.capacity()).unwrap_or(u32::MAX).max(1);
            if self.native.0.len() < max as usize {
                self.native.0.resize(max as usize, empty_event());
            }
            // Cleared so that an entry port_getn did not write is recognized.
            self.native.0[0].portev_source = 0;
            // Wait for one event, take up to `max` (see the module docs).
            let mut nget: libc::c_uint = 1;
            let mut ts = wait_timeout(timeout);
            let tsp = ts.as_mut().map_or(ptr::null_mut(), |t| t as *mut libc::timespec);
            // SAFETY: `native` holds at least `max` port_events for the kernel
            // to fill; `nget` and `ts` outlive the call.
            let ret =
                unsafe { libc::port_getn(self.port.fd.as_raw_fd(), self.native.0.as_mut_ptr(), max, &mut nget, tsp) };
            let errno = if ret == 0 { 0 } else { io::Error::last_os_error().raw_os_error().unwrap_or(0) };
            let n = getn_filled(ret, errno, nget, max)
                .map_err(|e| context(NAME, "port_getn", None, io::Error::from_raw_os_error(e)))?;
            for i in 0..n {
                let ev = self.native.0[i];
                self.dispatch(ev, events);
            }
            Ok(events.len())
        }

        fn waker(&self) -> Waker {
            Waker::new(self.port.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::bits::{EBADF, EINTR, ETIME, ILLUMOS_RDHUP};
    use super::{desired_mask, getn_filled, mask, translate, wait_timeout, MAX_WAIT};
    use crate::poll::bits::{ERR, HUP, IN, NVAL, OUT, PRI};
    use crate::slots::Slots;
    use crate::{Interest, Ready, Token, Trigger};

    /// Poll's bits as `portev_events` carries them (an int).
    fn ev(bits: i16) -> i32 {
        i32::from(bits)
    }

    #[test]
    fn plain_bits() {
        assert_eq!(translate(ev(IN), ILLUMOS_RDHUP), Ready::READABLE);
        assert_eq!(translate(ev(OUT), ILLUMOS_RDHUP), Ready::WRITABLE);
        assert_eq!(translate(ev(IN | OUT), ILLUMOS_RDHUP), Ready::READABLE | Ready::WRITABLE);
        assert_eq!(translate(ev(IN | PRI), ILLUMOS_RDHUP), Ready::READABLE | Ready::PRIORITY);
        assert_eq!(translate(0, ILLUMOS_RDHUP), Ready::empty());
    }

    #[test]
    fn hup_and_read_hangup() {
        // Data and EOF together: readable, and both directions are closed.
        assert_eq!(translate(ev(IN | HUP), 0), Ready::READABLE | Ready::HUP | Ready::READ_CLOSED);
        assert_eq!(translate(ev(HUP), 0), Ready::HUP | Ready::READ_CLOSED);
        // illumos's POLLRDHUP: a half-close without a recv.
        assert_eq!(translate(ev(IN | ILLUMOS_RDHUP), ILLUMOS_RDHUP), Ready::READABLE | Ready::READ_CLOSED);
        // On Solaris (no POLLRDHUP) 0x4000 means nothing to us.
        assert_eq!(translate(ev(IN | ILLUMOS_RDHUP), 0), Ready::READABLE);
    }

    #[test]
    fn refused_connect_is_error_without_readable() {
        assert_eq!(translate(ev(ERR | HUP | OUT), ILLUMOS_RDHUP), Ready::ERROR | Ready::HUP | Ready::READ_CLOSED);
        assert_eq!(
            translate(ev(IN | OUT | ERR | HUP | ILLUMOS_RDHUP), ILLUMOS_RDHUP),
            Ready::ERROR | Ready::HUP | Ready::READ_CLOSED
        );
        assert_eq!(translate(ev(ERR), 0), Ready::ERROR);
    }

    #[test]
    fn nval_is_an_error() {
        assert_eq!(translate(ev(NVAL), 0), Ready::ERROR);
        assert_eq!(translate(ev(NVAL | IN), 0), Ready::ERROR);
    }

    #[test]
    fn association_masks() {
        assert_eq!(mask(Interest::READ, ILLUMOS_RDHUP), ev(IN | ILLUMOS_RDHUP));
        assert_eq!(mask(Interest::WRITE, ILLUMOS_RDHUP), ev(OUT));
        assert_eq!(mask(Interest::BOTH, ILLUMOS_RDHUP), ev(IN | OUT | ILLUMOS_RDHUP));
        assert_eq!(mask(Interest::READ, 0), ev(IN));
        assert_eq!(mask(Interest::empty(), ILLUMOS_RDHUP), 0);
    }

    #[test]
    fn desired_mask_by_trigger() {
        let r = ILLUMOS_RDHUP;
        assert_eq!(desired_mask(Trigger::Level, Interest::READ, r), Some(ev(IN | r)));
        assert_eq!(desired_mask(Trigger::Level, Interest::BOTH, 0), Some(ev(IN | OUT)));
        assert_eq!(desired_mask(Trigger::Oneshot, Interest::WRITE, r), Some(ev(OUT)));
        // Silent registrations and edge are never associated.
        assert_eq!(desired_mask(Trigger::Level, Interest::empty(), r), None);
        assert_eq!(desired_mask(Trigger::Oneshot, Interest::empty(), r), None);
        assert_eq!(desired_mask(Trigger::Edge, Interest::READ, r), None);
    }

    /// The decision the wait makes after each fd event, on the real slot table.
    fn after_event(slots: &mut Slots, fd: i32, gen: u32, ready: Ready) -> (Option<(Token, Ready)>, Option<i32>) {
        let delivered = slots.accept(fd, Some(gen), ready);
        let rearm = slots.get(fd).and_then(|s| desired_mask(s.trigger, s.watched(), ILLUMOS_RDHUP));
        (delivered, rearm)
    }

    #[test]
    fn level_is_reassociated_after_every_event() {
        let mut s = Slots::new();
        let (slot, _) = s.insert(7, Token(1), Interest::READ, Trigger::Level).unwrap();
        for _ in 0..3 {
            let (delivered, rearm) = after_event(&mut s, 7, slot.gen, Ready::READABLE);
            assert_eq!(delivered, Some((Token(1), Ready::READABLE)));
            assert_eq!(rearm, Some(ev(IN | ILLUMOS_RDHUP)));
        }
    }

    #[test]
    fn oneshot_waits_for_modify() {
        let mut s = Slots::new();
        let (slot, _) = s.insert(7, Token(1), Interest::BOTH, Trigger::Oneshot).unwrap();
        let (delivered, rearm) = after_event(&mut s, 7, slot.gen, Ready::WRITABLE);
        assert_eq!(delivered, Some((Token(1), Ready::WRITABLE)));
        assert_eq!(rearm, None);
        s.update("evports", 7, Token(1), Interest::READ, Trigger::Oneshot).unwrap();
        let s7 = *s.get(7).unwrap();
        assert_eq!(desired_mask(s7.trigger, s7.watched(), ILLUMOS_RDHUP), Some(ev(IN | ILLUMOS_RDHUP)));
    }

    #[test]
    fn undelivered_oneshot_event_keeps_the_registration_alive() {
        // A oneshot read registration whose event carried only POLLOUT-ish
        // readiness: nothing reaches the caller, so the association is renewed.
        let mut s = Slots::new();
        let (slot, _) = s.insert(7, Token(1), Interest::READ, Trigger::Oneshot).unwrap();
        let (delivered, rearm) = after_event(&mut s, 7, slot.gen, Ready::WRITABLE);
        assert_eq!(delivered, None);
        assert_eq!(rearm, Some(ev(IN | ILLUMOS_RDHUP)));
    }

    #[test]
    fn stale_or_silent_events_are_not_delivered() {
        let mut s = Slots::new();
        let (old, _) = s.insert(7, Token(1), Interest::READ, Trigger::Level).unwrap();
        let (new, _) = s.insert(7, Token(2), Interest::READ, Trigger::Level).unwrap();
        let (delivered, rearm) = after_event(&mut s, 7, old.gen, Ready::READABLE);
        assert_eq!(delivered, None);
        // The current registration still wants events under its own generation.
        assert_eq!(rearm, Some(ev(IN | ILLUMOS_RDHUP)));
        assert_eq!(after_event(&mut s, 7, new.gen, Ready::READABLE).0, Some((Token(2), Ready::READABLE)));

        s.update("evports", 7, Token(2), Interest::empty(), Trigger::Level).unwrap();
        assert_eq!(after_event(&mut s, 7, new.gen, Ready::ERROR | Ready::HUP), (None, None));
        // A deleted fd is never re-associated.
        s.remove("evports", 7).unwrap();
        assert_eq!(after_event(&mut s, 7, new.gen, Ready::READABLE), (None, None));
    }

    #[test]
    fn getn_honours_nget_on_success_etime_and_eintr() {
        assert_eq!(getn_filled(0, 0, 3, 64), Ok(3));
        // ETIME can come with events; they must not be lost.
        assert_eq!(getn_filled(-1, ETIME, 2, 64), Ok(2));
        assert_eq!(getn_filled(-1, ETIME, 0, 64), Ok(0));
        assert_eq!(getn_filled(-1, EINTR, 0, 64), Ok(0));
        // illumos leaves nget at the 1 passed in on EINTR: the entry is
        // counted here and dropped by the cleared portev_source.
        assert_eq!(getn_filled(-1, EINTR, 1, 64), Ok(1));
        // Never past the buffer.
        assert_eq!(getn_filled(0, 0, 1000, 64), Ok(64));
        assert_eq!(getn_filled(-1, EBADF, 1, 64), Err(EBADF));
    }

    #[test]
    fn timeouts() {
        assert!(wait_timeout(None).is_none());
        let zero = wait_timeout(Some(Duration::ZERO)).unwrap();
        assert_eq!((zero.tv_sec, zero.tv_nsec), (0, 0));
        let t = wait_timeout(Some(Duration::from_millis(1500))).unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1, 500_000_000));
        let long = wait_timeout(Some(Duration::MAX)).unwrap();
        assert_eq!(long.tv_sec as u64, MAX_WAIT.as_secs());
    }
}
