//! The compat backend, over the [`polling`] crate.
//!
//! It is the path for platforms that have no native backend here, and a
//! reference to compare the native ones with: the conformance matrix runs
//! it beside them. `polling` picks its own mechanism at compile time
//! (epoll on Linux, kqueue on the BSDs, event ports on illumos, …).
//!
//! * Level and oneshot always; edge and edge-oneshot where `polling`
//!   supports edge.
//! * `polling` retries EINTR inside its wait, so a signal does not end a
//!   compat wait early (it still never comes out as an error).
//! * ERR/HUP come through `polling`'s `is_err` and `is_interrupt`, which it
//!   fills on Linux only ([`Capabilities::ERRHUP`](crate::Capabilities::ERRHUP) is claimed there alone);
//!   half-close is not reported on its own (no `RDHUP`).
//! * The wait timeout is `polling`'s: to the nanosecond on Linux and
//!   Android (a timerfd), on the kqueue platforms and on illumos; whole
//!   milliseconds, rounded up, where `polling` falls back to `poll`.
//! * `polling`'s own wake-up events are invisible to the caller, so the
//!   waker also raises a flag that the next wait turns into
//!   [`Events::woken`](crate::Events::woken).

use crate::Ready;

/// Translates what a [`polling::Event`] says into [`Ready`]: its readable
/// and writable flags, `is_interrupt()` (hang-up) and `is_err()` (`None`
/// where `polling` cannot tell).
pub fn translate(readable: bool, writable: bool, hup: bool, err: Option<bool>) -> Ready {
    let mut r = Ready::empty();
    if readable {
        r |= Ready::READABLE;
    }
    if writable {
        r |= Ready::WRITABLE;
    }
    if hup {
        r |= Ready::HUP;
    }
    if err == Some(true) {
        r |= Ready::ERROR;
    }
    r.normalize()
}

pub use imp::Compat;

mod imp {
    use std::io;
    use std::num::NonZeroUsize;
    use std::os::fd::{BorrowedFd, RawFd};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use polling::PollMode;

    use super::translate;
    use crate::slots::{pack, unpack, Slot, Slots};
    use crate::sys::context;
    use crate::waker::Wake;
    use crate::{check_trigger, Capabilities, Event, Events, Interest, Poller, Token, Trigger, Waker};

    const NAME: &str = "compat";

    /// `polling` sets a timerfd on Linux and Android and passes a
    /// `timespec` to kqueue and event ports; its `poll` fallback, used
    /// everywhere else, takes whole milliseconds (rounded up).
    const RESOLUTION: Duration = if cfg!(any(
        target_os = "linux",
        target_os = "android",
        target_vendor = "apple",
        anypoll_kqueue,
        target_os = "illumos",
        target_os = "solaris"
    )) {
        crate::sys::NANOSECOND
    } else {
        crate::sys::MILLISECOND
    };

    struct Shared {
        poller: polling::Poller,
        woken: AtomicBool,
    }

    impl Wake for Shared {
        fn wake(&self) -> io::Result<()> {
            self.woken.store(true, Ordering::SeqCst);
            self.poller.notify()
        }
    }

    /// The compat backend. See the [module docs](super).
    pub struct Compat {
        shared: Arc<Shared>,
        slots: Slots,
        native: polling::Events,
    }

    impl std::fmt::Debug for Compat {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Compat").field("fds", &self.slots.len()).finish()
        }
    }

    /// The key carries the generation where usize has room for it.
    fn key(fd: RawFd, gen: u32) -> usize {
        if usize::BITS >= 64 {
            pack(fd, gen) as usize
        } else {
            fd as u32 as usize
        }
    }

    fn native(slot: &Slot, k: usize) -> (polling::Event, PollMode) {
        let w = slot.interest;
        let ev = polling::Event::new(k, w.contains(Interest::READ), w.contains(Interest::WRITE));
        let mode = match slot.trigger {
            Trigger::Level => PollMode::Level,
            Trigger::Edge => PollMode::Edge,
            Trigger::Oneshot => PollMode::Oneshot,
            Trigger::EdgeOneshot => PollMode::EdgeOneshot,
        };
        (ev, mode)
    }

    impl Compat {
        /// A new `polling::Poller`.
        pub fn new() -> io::Result<Compat> {
            let poller = polling::Poller::new().map_err(|e| context(NAME, "polling::Poller::new", None, e))?;
            let shared = Arc::new(Shared { poller, woken: AtomicBool::new(false) });
            Ok(Compat { shared, slots: Slots::new(), native: polling::Events::with_capacity(NonZeroUsize::MIN) })
        }

        fn caps(&self) -> Capabilities {
            let mut c = Capabilities::LEVEL | Capabilities::ONESHOT;
            // `polling` does edge-oneshot wherever it does edge (epoll, kqueue).
            if self.shared.poller.supports_edge() {
                c |= Capabilities::EDGE | Capabilities::EDGE_ONESHOT;
            }
            if cfg!(any(target_os = "linux", target_os = "android")) {
                c |= Capabilities::ERRHUP | Capabilities::O1;
            }
            c
        }
    }

    impl Compat {
        fn sync(&self, fd: RawFd, old: Option<&Slot>, new: &Slot) -> io::Result<()> {
            let in_kernel = |s: Option<&Slot>| s.is_some_and(|s| !s.interest.is_empty());
            // SAFETY: the caller keeps fd open while it is registered.
            let fd_ref = unsafe { BorrowedFd::borrow_raw(fd) };
            let p = &self.shared.poller;
            if new.interest.is_empty() {
                if in_kernel(old) {
                    return match p.delete(fd_ref) {
                        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EBADF)) => Ok(()),
                        r => r,
                    };
                }
                return Ok(());
            }
            let (ev, mode) = native(new, key(fd, new.gen));
            // SAFETY: as above.
            let add = || unsafe { p.add_with_mode(fd, ev, mode) };
            if in_kernel(old) {
                match p.modify_with_mode(fd_ref, ev, mode) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => add(),
                    r => r,
                }
            } else {
                match add() {
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => p.modify_with_mode(fd_ref, ev, mode),
                    r => r,
                }
            }
        }
    }

    impl Poller for Compat {
        fn name(&self) -> &'static str {
            NAME
        }

        fn capabilities(&self) -> Capabilities {
            self.caps()
        }

        fn add(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
            check_trigger(NAME, self.caps(), trigger)?;
            let (slot, old) = self.slots.insert(fd, token, interest, trigger)?;
            self.sync(fd, old.as_ref(), &slot).map_err(|e| {
                self.slots.restore(fd, old);
                context(NAME, "add", Some(fd), e)
            })
        }

        fn modify(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
            check_trigger(NAME, self.caps(), trigger)?;
            let (old, slot) = self.slots.update(NAME, fd, token, interest, trigger)?;
            self.sync(fd, Some(&old), &slot).map_err(|e| {
                self.slots.restore(fd, Some(old));
                context(NAME, "modify", Some(fd), e)
            })
        }

        fn delete(&mut self, fd: RawFd) -> io::Result<()> {
            self.slots.remove(NAME, fd)?;
            // SAFETY: the caller keeps fd open until after delete.
            let fd_ref = unsafe { BorrowedFd::borrow_raw(fd) };
            match self.shared.poller.delete(fd_ref) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EBADF)) => Ok(()),
                r => r.map_err(|e| context(NAME, "delete", Some(fd), e)),
            }
        }

        fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
            events.clear();
            if self.native.capacity().get() != events.capacity() {
                let cap = NonZeroUsize::new(events.capacity()).unwrap_or(NonZeroUsize::MIN);
                self.native = polling::Events::with_capacity(cap);
            }
            self.native.clear();
            match self.shared.poller.wait(&mut self.native, timeout) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
                Err(e) => return Err(context(NAME, "wait", None, e)),
            }
            if self.shared.woken.swap(false, Ordering::SeqCst) {
                events.set_woken();
            }
            for ev in self.native.iter() {
                let (fd, gen) = unpack(ev.key as u64);
                let gen = (usize::BITS >= 64).then_some(gen);
                let ready = translate(ev.readable, ev.writable, ev.is_interrupt(), ev.is_err());
                if let Some((token, ready)) = self.slots.accept(fd, gen, ready) {
                    events.push(Event { token, fd, ready });
                }
            }
            Ok(events.len())
        }

        fn timeout_resolution(&self) -> Duration {
            RESOLUTION
        }

        fn waker(&self) -> Waker {
            Waker::new(self.shared.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::translate;
    use crate::Ready;

    #[test]
    fn flags_to_ready() {
        assert_eq!(translate(true, false, false, None), Ready::READABLE);
        assert_eq!(translate(true, true, false, Some(false)), Ready::READABLE | Ready::WRITABLE);
        assert_eq!(translate(true, false, true, None), Ready::READABLE | Ready::HUP | Ready::READ_CLOSED);
        assert_eq!(translate(true, true, true, Some(true)), Ready::ERROR | Ready::HUP | Ready::READ_CLOSED);
    }
}
