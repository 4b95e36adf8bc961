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
//! * **Every association is (re)made at the start of a wait**, `add`'s and
//!   `modify`'s too: an event carries the `revents` of the moment the
//!   association fired (`port_fd_callback` hands out `portkev_events`, set
//!   when it fired; nothing polls again at `port_getn`). An fd added with
//!   `BOTH` while only writable fires at once with `POLLOUT`; data that
//!   arrives before the wait would otherwise be reported as `WRITABLE`
//!   alone. `port_associate` over the fired association discards its
//!   queued event (`port_remove_done_event`) and polls again. `add` also
//!   associates at once, so that its errors (`EBADFD`, the port's limit on
//!   associations, which only a new association can hit) come back from
//!   `add`: one more `port_associate` per `add`. `modify` makes no syscall
//!   unless it silences the fd (dissociated at once), and several calls
//!   before a wait cost one association.
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
//!   the error before reading `nget` back and drops them.)
//! * **`EINTR`: `nget` is not trusted.** illumos's `portfs` returns `EINTR`
//!   as a plain error (`set_errno`), so libc's `port_getn` returns -1 before
//!   it writes `nget` back: `nget` keeps the value passed in (1) whatever the
//!   kernel copied out. illumos copies out nothing then, but a kernel that
//!   does (the `eintr_with_events` switch of the model) would have collected,
//!   hence dissociated, events that `nget` does not count: trusting it reads
//!   one entry the kernel may never have written and loses the others. So
//!   every entry of the buffer is kept cleared (`portev_source` 0, which no
//!   source uses: the entries a wait dispatches are cleared as they are
//!   read), and on `EINTR` the events are the leading entries the kernel
//!   wrote, counted up to the first cleared one. `EINTR` with nothing
//!   written is `Ok(0)`. Forgetting `nget` on `EINTR`/`ETIME` made HAProxy
//!   loop endlessly with `SIGCHLD`.
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
//! * **The syscall seam**: the logic is written once, generic over
//!   [`PortOps`] (`port_create`, `port_associate`, `port_dissociate`,
//!   `port_getn`, `port_send`). On illumos and Solaris it runs over `Sys`,
//!   a zero-sized type of `#[inline]` libc calls (no vtable, as `SockOps`
//!   for the transport); with the feature `models` on Linux it runs over
//!   `evports_model::Model`, a user-space model of the port, as the
//!   `evports-model` backend. The
//!   buffer is this module's [`bits::PortEvent`], layout-identical to
//!   illumos's `port_event_t` (asserted at compile time there).
//! * [`Capabilities::O1`](crate::Capabilities::O1): the port queues fired
//!   events; a wait costs the events collected, not the fds associated.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

use crate::{Interest, Ready, Trigger};

/// Event ports' constants and the errnos the backend acts on, with illumos's
/// (and Solaris's) values, and the event buffer's layout. They are spelled
/// out so that the pure functions build and are tested on every host. Poll's
/// bits are [`poll::bits`](crate::poll::bits).
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

    /// One event as `port_getn` fills it: illumos's `port_event_t`, with
    /// the user value as an integer (the backend never stores a pointer
    /// there), which also keeps the buffer `Send`. Layout-identical to
    /// `libc::port_event` (asserted on illumos and Solaris).
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PortEvent {
        /// The events: poll's bits for `PORT_SOURCE_FD`, the sender's
        /// value for `PORT_SOURCE_USER`.
        pub portev_events: i32,
        /// Where the event comes from (`PORT_SOURCE_*`); never 0.
        pub portev_source: u16,
        /// Padding.
        pub portev_pad: u16,
        /// The fd for `PORT_SOURCE_FD`.
        pub portev_object: usize,
        /// The user value given to `port_associate` or `port_send`.
        pub portev_user: usize,
    }

    impl PortEvent {
        /// A cleared entry: `portev_source` 0 marks it as not written.
        pub const CLEARED: PortEvent =
            PortEvent { portev_events: 0, portev_source: 0, portev_pad: 0, portev_object: 0, portev_user: 0 };
    }
}

/// This platform's `POLLRDHUP` for event ports, or 0 where there is none.
#[cfg(target_os = "illumos")]
pub const RDHUP_HERE: i16 = bits::ILLUMOS_RDHUP;
/// This platform's `POLLRDHUP` for event ports, or 0 where there is none.
#[cfg(not(target_os = "illumos"))]
pub const RDHUP_HERE: i16 = 0;

/// The event-port syscalls the backend makes: the seam between its logic
/// and the kernel (or a model of it). Each returns what the libc function
/// returns: `Ok` for 0, the errno for -1, with illumos's names (the values
/// are the host's).
pub trait PortOps: Send + Sync + std::fmt::Debug + 'static {
    /// The backend's name as the registry knows it, for messages.
    const NAME: &'static str;
    /// `POLLRDHUP` on the system behind this seam, 0 where it has none.
    const RDHUP: i16;
    /// `port_create(3C)`: a new port.
    fn port_create(&self) -> io::Result<OwnedFd>;
    /// `port_associate(3C)`: watch `object` (an fd for `PORT_SOURCE_FD`)
    /// for `events` (poll's bits), once; `user` comes back in the event.
    fn port_associate(&self, port: RawFd, source: i32, object: usize, events: i32, user: usize) -> io::Result<()>;
    /// `port_dissociate(3C)`.
    fn port_dissociate(&self, port: RawFd, source: i32, object: usize) -> io::Result<()>;
    /// `port_getn(3C)` with `max` = `list.len()`: waits for `*nget` events
    /// (at most `timeout`), puts up to `max` in `list` and, on success or
    /// `ETIME`, writes their count to `*nget`.
    fn port_getn(
        &self,
        port: RawFd,
        list: &mut [bits::PortEvent],
        nget: &mut u32,
        timeout: Option<&libc::timespec>,
    ) -> io::Result<()>;
    /// `port_send(3C)`: queues a `PORT_SOURCE_USER` event.
    fn port_send(&self, port: RawFd, events: i32, user: usize) -> io::Result<()>;
}

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
#[cfg_attr(
    not(any(target_os = "illumos", target_os = "solaris", all(target_os = "linux", feature = "models"))),
    allow(dead_code)
)]
pub(crate) fn desired_mask(trigger: Trigger, watched: Interest, rdhup: i16) -> Option<i32> {
    match trigger {
        Trigger::Edge => None,
        Trigger::Level | Trigger::Oneshot if watched.is_empty() => None,
        Trigger::Level | Trigger::Oneshot => Some(mask(watched, rdhup)),
    }
}

/// How many entries at the start of `list` (the buffer passed to
/// `port_getn`, every entry cleared before the call) hold events, from the
/// call's `result` and the `nget` it left; the error for a real failure.
///
/// `ETIME` and `EINTR` are not errors. On success and `ETIME`, `nget` counts
/// the events (`ETIME` can come with events). On `EINTR` libc leaves `nget`
/// as passed in, so the events are the entries the kernel wrote: the leading
/// ones whose `portev_source` is no longer 0.
#[cfg_attr(
    not(any(target_os = "illumos", target_os = "solaris", all(target_os = "linux", feature = "models"))),
    allow(dead_code)
)]
pub(crate) fn getn_filled(result: io::Result<()>, nget: u32, list: &[bits::PortEvent]) -> io::Result<usize> {
    match result.as_ref().map_err(io::Error::raw_os_error) {
        Ok(()) | Err(Some(bits::ETIME)) => Ok((nget as usize).min(list.len())),
        Err(Some(bits::EINTR)) => Ok(list.iter().take_while(|e| e.portev_source != 0).count()),
        Err(_) => result.map(|()| 0),
    }
}

/// `port_getn`'s timeout: `None` waits forever, a zero duration polls, and
/// anything longer than [`MAX_WAIT`] is capped to it.
#[cfg_attr(
    not(any(target_os = "illumos", target_os = "solaris", all(target_os = "linux", feature = "models"))),
    allow(dead_code)
)]
pub(crate) fn wait_timeout(timeout: Option<Duration>) -> Option<libc::timespec> {
    crate::sys::timespec(timeout.map(|d| d.min(MAX_WAIT)))
}

#[cfg(any(target_os = "illumos", target_os = "solaris"))]
pub use sys_ops::Sys;

/// The production [`PortOps`]: libc's calls, nothing else.
#[cfg(any(target_os = "illumos", target_os = "solaris"))]
mod sys_ops {
    use std::io;
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};
    use std::ptr;

    use super::bits::{self, PortEvent};
    use super::{PortOps, RDHUP_HERE};
    use crate::sys::cvt;

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
    // The buffer is handed to the kernel as `port_event_t`s.
    const _: () = assert!(
        std::mem::size_of::<PortEvent>() == std::mem::size_of::<libc::port_event>()
            && std::mem::align_of::<PortEvent>() == std::mem::align_of::<libc::port_event>()
            && std::mem::offset_of!(PortEvent, portev_events) == std::mem::offset_of!(libc::port_event, portev_events)
            && std::mem::offset_of!(PortEvent, portev_source) == std::mem::offset_of!(libc::port_event, portev_source)
            && std::mem::offset_of!(PortEvent, portev_pad) == std::mem::offset_of!(libc::port_event, portev_pad)
            && std::mem::offset_of!(PortEvent, portev_object) == std::mem::offset_of!(libc::port_event, portev_object)
            && std::mem::offset_of!(PortEvent, portev_user) == std::mem::offset_of!(libc::port_event, portev_user)
    );

    /// illumos's and Solaris's event ports, through libc. Zero-sized.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Sys;

    impl PortOps for Sys {
        const NAME: &'static str = "evports";
        const RDHUP: i16 = RDHUP_HERE;

        fn port_create(&self) -> io::Result<OwnedFd> {
            // SAFETY: port_create takes no arguments; the result is checked.
            let fd = cvt(unsafe { libc::port_create() })?;
            // SAFETY: the fd was just created and belongs to nobody else.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }

        #[inline]
        fn port_associate(&self, port: RawFd, source: i32, object: usize, events: i32, user: usize) -> io::Result<()> {
            // SAFETY: port_associate only records the object, the mask and
            // the user value, an integer that is never dereferenced.
            cvt(unsafe { libc::port_associate(port, source, object as libc::uintptr_t, events, user as *mut _) })
                .map(drop)
        }

        #[inline]
        fn port_dissociate(&self, port: RawFd, source: i32, object: usize) -> io::Result<()> {
            // SAFETY: integer arguments only.
            cvt(unsafe { libc::port_dissociate(port, source, object as libc::uintptr_t) }).map(drop)
        }

        #[inline]
        fn port_getn(
            &self,
            port: RawFd,
            list: &mut [PortEvent],
            nget: &mut u32,
            timeout: Option<&libc::timespec>,
        ) -> io::Result<()> {
            let max = u32::try_from(list.len()).unwrap_or(u32::MAX);
            let tsp = timeout.map_or(ptr::null_mut(), |t| (t as *const libc::timespec).cast_mut());
            // SAFETY: `list` holds `max` entries, layout-identical to
            // port_event (asserted above), for the kernel to fill; `nget`
            // and the timeout outlive the call, and the kernel only reads
            // the timeout (it is `const` in port_getn's prototype).
            cvt(unsafe { libc::port_getn(port, list.as_mut_ptr().cast(), max, nget, tsp) }).map(drop)
        }

        #[inline]
        fn port_send(&self, port: RawFd, events: i32, user: usize) -> io::Result<()> {
            // SAFETY: the kernel only copies the user value, an integer
            // that is never dereferenced.
            cvt(unsafe { libc::port_send(port, events, user as *mut _) }).map(drop)
        }
    }
}

#[cfg(any(target_os = "illumos", target_os = "solaris", all(target_os = "linux", feature = "models")))]
pub use imp::EvPorts;

#[cfg(any(target_os = "illumos", target_os = "solaris", all(target_os = "linux", feature = "models")))]
mod imp {
    use std::io;
    use std::os::fd::{AsRawFd, OwnedFd, RawFd};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::bits::{self, PortEvent};
    use super::{desired_mask, getn_filled, translate, wait_timeout, PortOps};
    use crate::slots::Slots;
    use crate::sys::{context, cvt};
    use crate::waker::Wake;
    use crate::{check_trigger, Capabilities, Event, Events, Interest, Poller, Token, Trigger, Waker};

    // getn_filled matches errnos by their illumos values: they must be the host's.
    const _: () = assert!(bits::ETIME == libc::ETIME && bits::EINTR == libc::EINTR);

    /// [`EvPorts::fds`] bit: the kernel may hold an association for the fd
    /// (armed, or fired with its event not collected yet).
    const ASSOCIATED: u8 = 1;
    /// [`EvPorts::fds`] bit: the fd is in [`EvPorts::pending`].
    const PENDING: u8 = 2;

    /// The `portev_user` of the waker's user event. No registration has this
    /// generation: generations are `u32`s carried in a pointer-sized word.
    const WAKE_USER: usize = usize::MAX;

    /// The port, shared by the poller and its wakers.
    #[derive(Debug)]
    struct Port<P> {
        fd: OwnedFd,
        ops: P,
        /// A wake-up is queued in the port and no wait has collected it yet.
        wake_pending: AtomicBool,
    }

    impl<P: PortOps> Wake for Port<P> {
        fn wake(&self) -> io::Result<()> {
            if self.wake_pending.swap(true, Ordering::AcqRel) {
                // One user event is already queued: this wake rides on it.
                return Ok(());
            }
            if let Err(e) = self.ops.port_send(self.fd.as_raw_fd(), 0, WAKE_USER) {
                // Nothing is queued, so the next wake must try again.
                self.wake_pending.store(false, Ordering::Release);
                return Err(context(P::NAME, "port_send", Some(self.fd.as_raw_fd()), e));
            }
            Ok(())
        }
    }

    /// The event ports backend over the syscalls `P`: `Sys`
    /// on illumos and Solaris. See the [module docs](super).
    #[derive(Debug)]
    pub struct EvPorts<P> {
        port: Arc<Port<P>>,
        slots: Slots,
        /// fd number → [`ASSOCIATED`] | [`PENDING`].
        fds: Vec<u8>,
        /// The fds to (re-)associate at the start of the next wait, each
        /// once (its [`PENDING`] bit).
        pending: Vec<RawFd>,
        /// `port_getn`'s buffer. Every entry is cleared (`portev_source` 0)
        /// between waits, so that on `EINTR` the written ones are known.
        native: Vec<PortEvent>,
    }

    impl<P: PortOps + Default> EvPorts<P> {
        /// A new event port.
        pub fn new() -> io::Result<EvPorts<P>> {
            EvPorts::with_ops(P::default())
        }
    }

    impl<P: PortOps> EvPorts<P> {
        /// A new event port made and used through `ops`.
        pub fn with_ops(ops: P) -> io::Result<EvPorts<P>> {
            let fd = ops.port_create().map_err(|e| context(P::NAME, "port_create", None, e))?;
            // SAFETY: fcntl on an fd we own, with integer arguments only.
            let cloexec = unsafe {
                cvt(libc::fcntl(fd.as_raw_fd(), libc::F_GETFD))
                    .and_then(|fl| cvt(libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, fl | libc::FD_CLOEXEC)))
            };
            cloexec.map_err(|e| context(P::NAME, "fcntl(FD_CLOEXEC)", Some(fd.as_raw_fd()), e))?;
            Ok(EvPorts {
                port: Arc::new(Port { fd, ops, wake_pending: AtomicBool::new(false) }),
                slots: Slots::new(),
                fds: Vec::new(),
                pending: Vec::new(),
                native: Vec::new(),
            })
        }

        fn caps() -> Capabilities {
            let rdhup = if P::RDHUP != 0 { Capabilities::RDHUP } else { Capabilities::empty() };
            Capabilities::LEVEL | Capabilities::ONESHOT | Capabilities::O1 | rdhup
        }

        fn port_fd(&self) -> RawFd {
            self.port.fd.as_raw_fd()
        }

        fn flags(&self, fd: RawFd) -> u8 {
            usize::try_from(fd).ok().and_then(|i| self.fds.get(i)).copied().unwrap_or(0)
        }

        fn is_associated(&self, fd: RawFd) -> bool {
            self.flags(fd) & ASSOCIATED != 0
        }

        fn set_flag(&mut self, fd: RawFd, flag: u8, on: bool) {
            let Ok(i) = usize::try_from(fd) else { return };
            if i >= self.fds.len() {
                if !on {
                    return;
                }
                self.fds.resize(i + 1, 0);
            }
            if on {
                self.fds[i] |= flag;
            } else {
                self.fds[i] &= !flag;
            }
        }

        /// Queues `fd` for association at the start of the next wait.
        fn defer(&mut self, fd: RawFd) {
            if self.flags(fd) & PENDING == 0 {
                self.set_flag(fd, PENDING, true);
                self.pending.push(fd);
            }
        }

        /// `port_associate(PORT_SOURCE_FD)`, with the generation as user value.
        fn associate(&mut self, fd: RawFd, mask: i32, gen: u32) -> io::Result<()> {
            let object = usize::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
            self.port.ops.port_associate(self.port_fd(), bits::PORT_SOURCE_FD, object, mask, gen as usize)?;
            self.set_flag(fd, ASSOCIATED, true);
            Ok(())
        }

        /// `port_dissociate(PORT_SOURCE_FD)` if the kernel may hold an
        /// association; one that is already gone is not an error.
        fn dissociate(&mut self, fd: RawFd) -> io::Result<()> {
            if !self.is_associated(fd) {
                return Ok(());
            }
            self.set_flag(fd, ASSOCIATED, false);
            let Ok(object) = usize::try_from(fd) else { return Ok(()) };
            match self.port.ops.port_dissociate(self.port_fd(), bits::PORT_SOURCE_FD, object) {
                Ok(()) => Ok(()),
                // ENOENT: it fired and was not re-armed (or the kernel dropped
                // it when the fd was closed). EBADF(D): the fd is closed, which
                // dissociated it.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EBADF) | Some(libc::EBADFD)) => {
                    Ok(())
                }
                Err(e) => Err(context(P::NAME, "port_dissociate", Some(fd), e)),
            }
        }

        /// The mask and generation `fd` must be associated with now, if any.
        fn wanted(&self, fd: RawFd) -> Option<(i32, u32)> {
            self.slots.get(fd).and_then(|s| Some((desired_mask(s.trigger, s.watched(), P::RDHUP)?, s.gen)))
        }

        /// After `add`/`modify`: an fd that must be silent is dissociated now;
        /// one that wants events is associated at the start of the next wait
        /// (see the module docs), and by `add` also now (`now`), so that its
        /// errors (`EBADFD`, the port's limit on associations) come back
        /// from `add`.
        fn sync(&mut self, fd: RawFd, now: bool) -> io::Result<()> {
            match self.wanted(fd) {
                Some((mask, gen)) => {
                    if now {
                        self.associate(fd, mask, gen).map_err(|e| context(P::NAME, "port_associate", Some(fd), e))?;
                    }
                    self.defer(fd);
                    Ok(())
                }
                None => self.dissociate(fd),
            }
        }

        /// Associates the pending fds that still want events, with their
        /// current mask and generation; this discards an event their old
        /// association queued, so that every event a wait collects was seen
        /// during that wait. On an error other than a closed fd, that fd is
        /// dropped from the list and the error names it; the rest wait for
        /// the next call.
        fn associate_pending(&mut self) -> io::Result<()> {
            while let Some(fd) = self.pending.pop() {
                self.set_flag(fd, PENDING, false);
                let Some((mask, gen)) = self.wanted(fd) else { continue };
                match self.associate(fd, mask, gen) {
                    Ok(()) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF) | Some(libc::EBADFD)) => {
                        self.set_flag(fd, ASSOCIATED, false);
                        log::debug!("{}: fd {fd} was closed without delete; its registration is gone ({e})", P::NAME);
                    }
                    Err(e) => return Err(context(P::NAME, "port_associate", Some(fd), e)),
                }
            }
            Ok(())
        }

        fn dispatch(&mut self, ev: PortEvent, events: &mut Events) {
            match i32::from(ev.portev_source) {
                bits::PORT_SOURCE_FD => self.fd_event(ev, events),
                bits::PORT_SOURCE_USER if ev.portev_user == WAKE_USER => {
                    self.port.wake_pending.store(false, Ordering::Release);
                    events.set_woken();
                }
                // A cleared entry that a kernel counted without writing it.
                0 => {}
                source => {
                    log::debug!("{}: ignoring an event from source {source} (user {:#x})", P::NAME, ev.portev_user)
                }
            }
        }

        fn fd_event(&mut self, ev: PortEvent, events: &mut Events) {
            let Ok(fd) = RawFd::try_from(ev.portev_object) else {
                log::debug!("{}: ignoring an fd event for object {:#x}", P::NAME, ev.portev_object);
                return;
            };
            // Delivering the event ended the association (always oneshot).
            self.set_flag(fd, ASSOCIATED, false);
            // A user value that is no u32 matches no generation (0 is never one).
            let gen = u32::try_from(ev.portev_user).unwrap_or(0);
            if let Some((token, ready)) = self.slots.accept(fd, Some(gen), translate(ev.portev_events, P::RDHUP)) {
                events.push(Event { token, fd, ready });
            }
            if self.wanted(fd).is_some() {
                self.defer(fd);
            }
        }
    }

    impl<P: PortOps> Poller for EvPorts<P> {
        fn name(&self) -> &'static str {
            P::NAME
        }

        fn capabilities(&self) -> Capabilities {
            Self::caps()
        }

        fn add(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
            check_trigger(P::NAME, Self::caps(), trigger)?;
            let (_, old) = self.slots.insert(fd, token, interest, trigger)?;
            if let Err(e) = self.sync(fd, true) {
                self.slots.restore(fd, old);
                return Err(e);
            }
            Ok(())
        }

        fn modify(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
            check_trigger(P::NAME, Self::caps(), trigger)?;
            let (old, _) = self.slots.update(P::NAME, fd, token, interest, trigger)?;
            if let Err(e) = self.sync(fd, false) {
                self.slots.restore(fd, Some(old));
                return Err(e);
            }
            Ok(())
        }

        fn delete(&mut self, fd: RawFd) -> io::Result<()> {
            self.slots.remove(P::NAME, fd)?;
            // A pending association of it is skipped: it has no slot now.
            self.dissociate(fd)
        }

        fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
            events.clear();
            self.associate_pending()?;
            let max = events.capacity().clamp(1, u32::MAX as usize);
            if self.native.len() < max {
                self.native.resize(max, PortEvent::CLEARED);
            }
            // Wait for one event, take up to `max` (see the module docs).
            let mut nget: u32 = 1;
            let ts = wait_timeout(timeout);
            let list = &mut self.native[..max];
            let r = self.port.ops.port_getn(self.port.fd.as_raw_fd(), list, &mut nget, ts.as_ref());
            let n = getn_filled(r, nget, list).map_err(|e| context(P::NAME, "port_getn", Some(self.port_fd()), e))?;
            for i in 0..n {
                // Cleared as it is read: the buffer is all cleared again after the loop.
                let ev = std::mem::replace(&mut self.native[i], PortEvent::CLEARED);
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
mod tests;
