//! The epoll backend (Linux, Android).
//!
//! * Level is the default, `EPOLLET` gives edge, `EPOLLONESHOT` oneshot, and
//!   both edge-oneshot. `EPOLL_CTL_MOD` re-arms a oneshot registration and
//!   checks the fd at once, so re-arming with data still unread fires.
//! * `EPOLLRDHUP` is always asked with read interest, so a peer's
//!   half-close shows as [`Ready::READ_CLOSED`] without a recv.
//! * ERR and HUP are reported whatever the interest; the shared slot table
//!   keeps a silent registration silent. An empty interest is not left in the
//!   kernel at all (`EPOLL_CTL_DEL`), so a half-dead socket that nobody
//!   wants to hear from costs no wake-up.
//! * `EPOLL_CTL_ADD` can fail with `EEXIST` for a `dup`ed fd, and `MOD` with
//!   `ENOENT`: each is retried as the other operation instead of failing.
//! * The wait timeout goes to the kernel to the nanosecond with
//!   `epoll_pwait2` (Linux 5.11+, called through `syscall(2)`; a null
//!   sigmask, so nothing about signals changes). On an older kernel (or
//!   under a seccomp filter that refuses the call) the first `ENOSYS` or
//!   `EPERM` switches the poller to `epoll_wait` for good, where the timeout
//!   is rounded **up** to whole milliseconds, so a wait never ends early
//!   but a 100 µs one takes 1 ms;
//!   [`timeout_resolution`](crate::Poller::timeout_resolution) then says
//!   1 ms. The poller finds out when it is created (one zero-timeout wait).
//! * User data packs the fd and its generation (see `slots.rs`).
//! * epoll watches open files, not numbers. An fd closed without `delete`
//!   while a `dup` of it lives stays in the set under its old number, and
//!   nothing can remove it by number any more. Its events carry the old
//!   generation and are dropped, but a level-triggered one still wakes
//!   every wait. Always `delete` before `close` (the event loop's
//!   `Ctx::close` does).

use crate::Ready;

/// epoll's bits, with Linux's values (the same on every architecture). They
/// are spelled out so that [`translate`] builds and is tested on every host.
pub mod bits {
    /// `EPOLLIN`
    pub const IN: u32 = 0x001;
    /// `EPOLLPRI`
    pub const PRI: u32 = 0x002;
    /// `EPOLLOUT`
    pub const OUT: u32 = 0x004;
    /// `EPOLLERR`
    pub const ERR: u32 = 0x008;
    /// `EPOLLHUP`
    pub const HUP: u32 = 0x010;
    /// `EPOLLRDHUP`
    pub const RDHUP: u32 = 0x2000;
}

/// Translates an `epoll_event.events` word into [`Ready`].
pub fn translate(events: u32) -> Ready {
    let mut r = Ready::empty();
    if events & bits::IN != 0 {
        r |= Ready::READABLE;
    }
    if events & bits::OUT != 0 {
        r |= Ready::WRITABLE;
    }
    if events & bits::PRI != 0 {
        r |= Ready::PRIORITY;
    }
    if events & bits::RDHUP != 0 {
        r |= Ready::READ_CLOSED;
    }
    if events & bits::HUP != 0 {
        r |= Ready::HUP;
    }
    if events & bits::ERR != 0 {
        r |= Ready::ERROR;
    }
    r.normalize()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub use imp::Epoll;

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::sync::Arc;
    use std::time::Duration;

    use super::{bits, translate};
    use crate::slots::{pack, unpack, Slot, Slots};
    use crate::sys::{context, cvt, timeout_ms, MILLISECOND, NANOSECOND};
    use crate::waker::FdWaker;
    use crate::{check_trigger, Capabilities, Event, Events, Interest, Poller, Token, Trigger, Waker};

    const _: () = assert!(
        bits::IN == libc::EPOLLIN as u32
            && bits::PRI == libc::EPOLLPRI as u32
            && bits::OUT == libc::EPOLLOUT as u32
            && bits::ERR == libc::EPOLLERR as u32
            && bits::HUP == libc::EPOLLHUP as u32
            && bits::RDHUP == libc::EPOLLRDHUP as u32
    );

    const NAME: &str = "epoll";
    /// User data of the waker's registration: no fd has this generation (0).
    const WAKER_DATA: u64 = u64::MAX;

    /// The epoll backend. See the [module docs](super).
    #[derive(Debug)]
    pub struct Epoll {
        epfd: OwnedFd,
        slots: Slots,
        native: Vec<libc::epoll_event>,
        waker: Arc<FdWaker>,
        /// Whether to wait with `epoll_pwait2` (cleared when the kernel has no
        /// such call: see [`pwait2_missing`]).
        pwait2: bool,
    }

    /// The kernel's `__kernel_timespec`, which `epoll_pwait2` takes: 64-bit
    /// fields on every architecture, unlike `libc::timespec` on 32-bit ones.
    #[repr(C)]
    struct KernelTimespec {
        tv_sec: i64,
        tv_nsec: i64,
    }

    fn kernel_timespec(d: Duration) -> KernelTimespec {
        KernelTimespec { tv_sec: d.as_secs().min(i64::MAX as u64) as i64, tv_nsec: i64::from(d.subsec_nanos()) }
    }

    /// Whether `epoll_pwait2` failed because the kernel has no such call:
    /// `ENOSYS` before Linux 5.11, or `EPERM` from a seccomp filter that
    /// refuses calls it does not know (older Docker profiles). Neither is an
    /// error `epoll_pwait2` itself returns.
    pub(crate) fn pwait2_missing(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM))
    }

    impl Epoll {
        /// A new epoll instance with its waker registered.
        pub fn new() -> io::Result<Epoll> {
            // SAFETY: epoll_create1 with a constant flag; the result is checked.
            let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
                .map_err(|e| context(NAME, "epoll_create1", None, e))?;
            // SAFETY: the fd was just created and belongs to nobody else.
            let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
            let waker = Arc::new(FdWaker::new().map_err(|e| context(NAME, "waker (eventfd or pipe)", None, e))?);
            let mut ep = Epoll { epfd, slots: Slots::new(), native: Vec::new(), waker, pwait2: true };
            ep.ctl(libc::EPOLL_CTL_ADD, ep.waker.fd(), libc::EPOLLIN as u32, WAKER_DATA)
                .map_err(|e| context(NAME, "epoll_ctl(ADD) of the waker", Some(ep.waker.fd()), e))?;
            // Find out now whether the kernel has epoll_pwait2, so that
            // `timeout_resolution` is right before the first wait. Nothing
            // is lost: the only registration is the level-triggered waker.
            ep.native.resize(1, libc::epoll_event { events: 0, u64: 0 });
            let _ = ep.wait_raw(1, Some(Duration::ZERO));
            Ok(ep)
        }

        /// One kernel wait into `native[..max]`: `epoll_pwait2` with the
        /// timeout to the nanosecond while the kernel has it, else
        /// `epoll_wait` with the timeout rounded up to whole milliseconds.
        /// The first "no such call" answer switches to the fallback for
        /// good (see [`pwait2_missing`]).
        fn wait_raw(&mut self, max: libc::c_int, timeout: Option<Duration>) -> io::Result<usize> {
            debug_assert!(max as usize <= self.native.len());
            let epfd = self.epfd.as_raw_fd();
            if self.pwait2 {
                let ts = timeout.map(kernel_timespec);
                let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const KernelTimespec);
                // SAFETY: `native` holds at least `max` epoll_events for the
                // kernel to fill; `tsp` is null or points to a
                // `__kernel_timespec` that outlives the call; a null sigmask
                // makes the kernel ignore its size argument.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_epoll_pwait2,
                        epfd,
                        self.native.as_mut_ptr(),
                        max,
                        tsp,
                        std::ptr::null::<libc::sigset_t>(),
                        0usize,
                    )
                };
                match cvt(r as libc::c_int) {
                    Ok(n) => return Ok(n as usize),
                    Err(e) if pwait2_missing(&e) => {
                        log::debug!("epoll: epoll_pwait2 is not available ({e}): waits now round up to whole ms");
                        self.pwait2 = false;
                    }
                    Err(e) => return Err(context(NAME, "epoll_pwait2", None, e)),
                }
            }
            // SAFETY: `native` holds at least `max` epoll_events for the kernel to fill.
            let n = unsafe { libc::epoll_wait(epfd, self.native.as_mut_ptr(), max, timeout_ms(timeout)) };
            cvt(n).map(|n| n as usize).map_err(|e| context(NAME, "epoll_wait", None, e))
        }

        /// Test hook: behave as on a kernel without `epoll_pwait2`.
        #[cfg(test)]
        pub(crate) fn without_pwait2(mut self) -> Epoll {
            self.pwait2 = false;
            self
        }

        fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
            let mut ev = libc::epoll_event { events, u64: data };
            // SAFETY: `ev` is a valid epoll_event that outlives the call.
            cvt(unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) }).map(drop)
        }

        fn mask(slot: &Slot) -> u32 {
            let mut m = 0;
            if slot.interest.contains(Interest::READ) {
                m |= bits::IN | bits::RDHUP;
            }
            if slot.interest.contains(Interest::WRITE) {
                m |= bits::OUT;
            }
            m | match slot.trigger {
                Trigger::Level => 0,
                Trigger::Edge => libc::EPOLLET as u32,
                Trigger::Oneshot => libc::EPOLLONESHOT as u32,
                Trigger::EdgeOneshot => (libc::EPOLLET | libc::EPOLLONESHOT) as u32,
            }
        }

        /// Brings the kernel from `old` (None: not in the set) to `new`
        /// (None or an empty interest: out of the set).
        fn sync(&self, fd: RawFd, old: Option<&Slot>, new: Option<&Slot>) -> io::Result<()> {
            let in_kernel = |s: Option<&Slot>| s.is_some_and(|s| !s.interest.is_empty());
            let result = match (in_kernel(old), in_kernel(new)) {
                (false, false) => Ok(()),
                (_, true) => {
                    let new = new.expect("in the kernel");
                    let (first, second) = if in_kernel(old) {
                        (libc::EPOLL_CTL_MOD, libc::EPOLL_CTL_ADD)
                    } else {
                        (libc::EPOLL_CTL_ADD, libc::EPOLL_CTL_MOD)
                    };
                    let (mask, data) = (Self::mask(new), pack(fd, new.gen));
                    match self.ctl(first, fd, mask, data) {
                        // A dup'ed fd already in the set (EEXIST), or an fd
                        // the kernel dropped when it was closed (ENOENT).
                        Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOENT)) => {
                            self.ctl(second, fd, mask, data)
                        }
                        r => r,
                    }
                }
                (true, false) => match self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0) {
                    // Closed before delete: the kernel already forgot it.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EBADF)) => Ok(()),
                    r => r,
                },
            };
            result.map_err(|e| context(NAME, "epoll_ctl", Some(fd), e))
        }
    }

    impl Poller for Epoll {
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
        }

        fn add(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
            check_trigger(NAME, self.capabilities(), trigger)?;
            let (new, old) = self.slots.insert(fd, token, interest, trigger)?;
            // An old slot means the number was reused without delete: the
            // old file may still be in the set (dup), so MOD it over.
            if let Err(e) = self.sync(fd, old.as_ref(), Some(&new)) {
                self.slots.restore(fd, old);
                return Err(e);
            }
            Ok(())
        }

        fn modify(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
            check_trigger(NAME, self.capabilities(), trigger)?;
            let (old, new) = self.slots.update(NAME, fd, token, interest, trigger)?;
            if let Err(e) = self.sync(fd, Some(&old), Some(&new)) {
                self.slots.restore(fd, Some(old));
                return Err(e);
            }
            Ok(())
        }

        fn delete(&mut self, fd: RawFd) -> io::Result<()> {
            let old = self.slots.remove(NAME, fd)?;
            self.sync(fd, Some(&old), None)
        }

        fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
            events.clear();
            let cap = events.capacity();
            if self.native.len() < cap {
                self.native.resize(cap, libc::epoll_event { events: 0, u64: 0 });
            }
            let max = cap.min(libc::c_int::MAX as usize) as libc::c_int;
            let n = match self.wait_raw(max, timeout) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
                Err(e) => return Err(e),
            };
            for ev in &self.native[..n] {
                let (data, mask) = (ev.u64, ev.events);
                if data == WAKER_DATA {
                    self.waker.drain();
                    events.set_woken();
                    continue;
                }
                let (fd, gen) = unpack(data);
                if let Some((token, ready)) = self.slots.accept(fd, Some(gen), translate(mask)) {
                    events.push(Event { token, fd, ready });
                }
            }
            Ok(events.len())
        }

        fn timeout_resolution(&self) -> Duration {
            if self.pwait2 {
                NANOSECOND
            } else {
                MILLISECOND
            }
        }

        fn waker(&self) -> Waker {
            Waker::new(self.waker.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bits::*;
    use super::translate;
    use crate::Ready;

    #[test]
    fn plain_bits() {
        assert_eq!(translate(IN), Ready::READABLE);
        assert_eq!(translate(OUT), Ready::WRITABLE);
        assert_eq!(translate(IN | OUT), Ready::READABLE | Ready::WRITABLE);
        assert_eq!(translate(PRI), Ready::PRIORITY);
        assert_eq!(translate(0), Ready::empty());
    }

    #[test]
    fn half_close_and_hup() {
        assert_eq!(translate(IN | RDHUP), Ready::READABLE | Ready::READ_CLOSED);
        // HUP alone (no IN, no ERR): the read-shutdown path.
        assert_eq!(translate(HUP), Ready::HUP | Ready::READ_CLOSED);
        assert_eq!(
            translate(IN | OUT | HUP | RDHUP),
            Ready::READABLE | Ready::WRITABLE | Ready::HUP | Ready::READ_CLOSED
        );
    }

    #[test]
    fn refused_connect_is_error_without_readable() {
        // What Linux really reports for a refused non-blocking connect.
        let r = translate(IN | OUT | ERR | HUP | RDHUP);
        assert_eq!(r, Ready::ERROR | Ready::HUP | Ready::READ_CLOSED);
        assert_eq!(translate(ERR), Ready::ERROR);
    }
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod wait_tests {
    use std::io;
    use std::time::{Duration, Instant};

    use super::imp::pwait2_missing;
    use super::Epoll;
    use crate::{Events, Poller};

    #[test]
    fn no_such_call_means_fallback_other_errors_do_not() {
        for errno in [libc::ENOSYS, libc::EPERM] {
            assert!(pwait2_missing(&io::Error::from_raw_os_error(errno)), "errno {errno}");
        }
        for errno in [libc::EINVAL, libc::EBADF, libc::EFAULT, libc::EINTR] {
            assert!(!pwait2_missing(&io::Error::from_raw_os_error(errno)), "errno {errno}");
        }
    }

    /// The fallback for kernels without epoll_pwait2: a 100 µs wait takes
    /// the whole millisecond it is rounded up to, never less, and the
    /// backend says that its resolution is 1 ms.
    #[test]
    fn fallback_rounds_up_to_whole_ms_never_early() {
        let mut ep = Epoll::new().unwrap().without_pwait2();
        assert_eq!(ep.timeout_resolution(), Duration::from_millis(1));
        let mut events = Events::with_capacity(4);
        for want in [Duration::from_micros(100), Duration::from_micros(1100)] {
            let rounded = Duration::from_millis(want.as_nanos().div_ceil(1_000_000) as u64);
            for _ in 0..5 {
                let t = Instant::now();
                assert_eq!(ep.wait(&mut events, Some(want)).unwrap(), 0);
                let took = t.elapsed();
                assert!(took >= rounded, "a {want:?} wait on the fallback returned after {took:?}");
            }
        }
    }
}
