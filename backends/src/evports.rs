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
        Trigger::Edge | Trigger::EdgeOneshot => None,
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
mod imp;

#[cfg(test)]
mod tests;
