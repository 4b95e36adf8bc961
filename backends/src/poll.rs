//! The poll backend (every Unix).
//!
//! * Level only, plus oneshot, which poll does exactly: a fired oneshot fd is
//!   left out of the set until `modify`. Edge is refused: emulating it on
//!   top of poll stalls as soon as someone does I/O outside the loop, since
//!   the re-arm never happens.
//! * `POLLRDHUP` exists on Linux and Android only; elsewhere a peer's
//!   half-close is seen when recv returns 0 (no [`Capabilities::RDHUP`](crate::Capabilities::RDHUP)).
//! * `POLLNVAL` (an fd that is not open) is [`Ready::ERROR`].
//! * An fd that must be silent (empty interest, fired oneshot) is kept in the
//!   array with a negative fd, which poll skips; so poll reports no
//!   ERR/HUP for it either.
//! * The cost of a wait grows with the registered fds.
//! * The wait timeout goes to the kernel to the nanosecond with `ppoll`
//!   (a null sigmask) on Linux, Android, FreeBSD, DragonFly, NetBSD,
//!   OpenBSD, illumos and Solaris. macOS and iOS have no `ppoll`: there,
//!   and on any other Unix, `poll` takes whole milliseconds, rounded **up**
//!   (a 100 µs wait takes 1 ms, never less), and
//!   [`timeout_resolution`](crate::Poller::timeout_resolution) says 1 ms.

use crate::Ready;

/// poll's bits. `IN` to `NVAL` have the same values on every Unix;
/// `POLLRDHUP` differs, so [`translate`] takes it as a parameter
/// ([`RDHUP_HERE`] is this platform's, 0 where there is none).
pub mod bits {
    /// `POLLIN`
    pub const IN: i16 = 0x001;
    /// `POLLPRI`
    pub const PRI: i16 = 0x002;
    /// `POLLOUT`
    pub const OUT: i16 = 0x004;
    /// `POLLERR`
    pub const ERR: i16 = 0x008;
    /// `POLLHUP`
    pub const HUP: i16 = 0x010;
    /// `POLLNVAL`
    pub const NVAL: i16 = 0x020;
    /// `POLLRDHUP` on Linux and Android.
    pub const LINUX_RDHUP: i16 = 0x2000;
}

/// This platform's `POLLRDHUP`, or 0 where poll has none.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub const RDHUP_HERE: i16 = bits::LINUX_RDHUP;
/// This platform's `POLLRDHUP`, or 0 where poll has none.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub const RDHUP_HERE: i16 = 0;

/// Translates poll's `revents` into [`Ready`]; `rdhup` is the platform's
/// `POLLRDHUP` bit (0 where there is none). Event ports report the same
/// bits and use this function too.
pub fn translate(revents: i16, rdhup: i16) -> Ready {
    let mut r = Ready::empty();
    if revents & bits::IN != 0 {
        r |= Ready::READABLE;
    }
    if revents & bits::OUT != 0 {
        r |= Ready::WRITABLE;
    }
    if revents & bits::PRI != 0 {
        r |= Ready::PRIORITY;
    }
    if rdhup != 0 && revents & rdhup != 0 {
        r |= Ready::READ_CLOSED;
    }
    if revents & bits::HUP != 0 {
        r |= Ready::HUP;
    }
    if revents & (bits::ERR | bits::NVAL) != 0 {
        r |= Ready::ERROR;
    }
    r.normalize()
}

/// The `events` mask for an interest; `rdhup` as in [`translate`].
pub fn mask(interest: crate::Interest, rdhup: i16) -> i16 {
    let mut m = 0;
    if interest.contains(crate::Interest::READ) {
        m |= bits::IN | rdhup;
    }
    if interest.contains(crate::Interest::WRITE) {
        m |= bits::OUT;
    }
    m
}

pub use imp::Poll;

mod imp {
    use std::io;
    use std::os::fd::RawFd;
    use std::sync::Arc;
    use std::time::Duration;

    use super::{bits, mask, translate, RDHUP_HERE};
    use crate::slots::Slots;
    use crate::sys::{context, cvt};
    use crate::waker::FdWaker;
    use crate::{check_trigger, Capabilities, Event, Events, Interest, Poller, Token, Trigger, Waker};

    const _: () = assert!(
        bits::IN == libc::POLLIN
            && bits::PRI == libc::POLLPRI
            && bits::OUT == libc::POLLOUT
            && bits::ERR == libc::POLLERR
            && bits::HUP == libc::POLLHUP
            && bits::NVAL == libc::POLLNVAL
    );
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const _: () = assert!(bits::LINUX_RDHUP == libc::POLLRDHUP);

    const NAME: &str = "poll";

    /// `ppoll` where the platform has it (`anypoll_ppoll`, see build.rs):
    /// the timeout to the nanosecond.
    #[cfg(anypoll_ppoll)]
    mod call {
        use std::time::Duration;

        /// The syscall, for error messages.
        pub const POLL_CALL: &str = "ppoll";
        pub const RESOLUTION: Duration = crate::sys::NANOSECOND;
        /// A cap that no `ppoll` refuses as too long (68 years; a capped
        /// wait only ends early with nothing).
        const MAX_WAIT: Duration = Duration::from_secs(i32::MAX as u64);

        // The libc crate has no ppoll for illumos and Solaris, which have
        // had it in libc since Solaris 10.
        #[cfg(any(target_os = "illumos", target_os = "solaris"))]
        extern "C" {
            fn ppoll(
                fds: *mut libc::pollfd,
                nfds: libc::nfds_t,
                timeout: *const libc::timespec,
                sigmask: *const libc::sigset_t,
            ) -> libc::c_int;
        }
        #[cfg(not(any(target_os = "illumos", target_os = "solaris")))]
        use libc::ppoll;

        pub fn sys_poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> libc::c_int {
            let ts = crate::sys::timespec(timeout.map(|d| d.min(MAX_WAIT)));
            let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: `fds` is a valid array of `len` pollfds; `tsp` is null
            // or points to a timespec that outlives the call; a null sigmask
            // leaves the signal mask alone.
            unsafe { ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, tsp, std::ptr::null()) }
        }
    }

    /// `poll` elsewhere (macOS, iOS, …): whole milliseconds, rounded up.
    #[cfg(not(anypoll_ppoll))]
    mod call {
        use std::time::Duration;

        /// The syscall, for error messages.
        pub const POLL_CALL: &str = "poll";
        pub const RESOLUTION: Duration = crate::sys::MILLISECOND;

        pub fn sys_poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> libc::c_int {
            // SAFETY: `fds` is a valid array of `len` pollfds.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, crate::sys::timeout_ms(timeout)) }
        }
    }
    use call::{sys_poll, POLL_CALL, RESOLUTION};
    const NONE: u32 = u32::MAX;

    /// The poll backend. See the [module docs](super).
    #[derive(Debug)]
    pub struct Poll {
        /// `fds[0]` is the waker; a silent fd is stored as `!fd` (negative).
        fds: Vec<libc::pollfd>,
        /// fd number → position in `fds`, or `NONE`.
        pos: Vec<u32>,
        slots: Slots,
        waker: Arc<FdWaker>,
        /// Where the next scan of `fds` starts, so that a small events
        /// buffer does not starve the fds at the end of the array.
        cursor: usize,
    }

    impl Poll {
        /// A new poll set with its waker.
        pub fn new() -> io::Result<Poll> {
            let waker = Arc::new(FdWaker::new().map_err(|e| context(NAME, "waker (eventfd or pipe)", None, e))?);
            let fds = vec![libc::pollfd { fd: waker.fd(), events: libc::POLLIN, revents: 0 }];
            Ok(Poll { fds, pos: Vec::new(), slots: Slots::new(), waker, cursor: 1 })
        }

        /// Writes the slot's current state into its pollfd.
        fn sync(&mut self, fd: RawFd) {
            let i = self.pos[fd as usize] as usize;
            let watched = self.slots.get(fd).map(|s| s.watched()).unwrap_or(Interest::empty());
            let pfd = &mut self.fds[i];
            pfd.events = mask(watched, RDHUP_HERE);
            pfd.fd = if watched.is_empty() { !fd } else { fd };
        }

        fn caps() -> Capabilities {
            let rdhup = if RDHUP_HERE != 0 { Capabilities::RDHUP } else { Capabilities::empty() };
            Capabilities::LEVEL | Capabilities::ONESHOT | Capabilities::ERRHUP | rdhup
        }
    }

    impl Poller for Poll {
        fn name(&self) -> &'static str {
            NAME
        }

        fn capabilities(&self) -> Capabilities {
            Self::caps()
        }

        fn add(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
            check_trigger(NAME, Self::caps(), trigger)?;
            let (_, old) = self.slots.insert(fd, token, interest, trigger)?;
            if old.is_none() {
                let i = fd as usize;
                if i >= self.pos.len() {
                    self.pos.resize(i + 1, NONE);
                }
                self.pos[i] = self.fds.len() as u32;
                self.fds.push(libc::pollfd { fd, events: 0, revents: 0 });
            }
            self.sync(fd);
            Ok(())
        }

        fn modify(&mut self, fd: RawFd, token: Token, interest: Interest, trigger: Trigger) -> io::Result<()> {
            check_trigger(NAME, Self::caps(), trigger)?;
            self.slots.update(NAME, fd, token, interest, trigger)?;
            self.sync(fd);
            Ok(())
        }

        fn delete(&mut self, fd: RawFd) -> io::Result<()> {
            self.slots.remove(NAME, fd)?;
            let i = std::mem::replace(&mut self.pos[fd as usize], NONE) as usize;
            self.fds.swap_remove(i);
            if let Some(moved) = self.fds.get(i) {
                let moved_fd = if moved.fd < 0 { !moved.fd } else { moved.fd };
                self.pos[moved_fd as usize] = i as u32;
            }
            Ok(())
        }

        fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
            events.clear();
            let mut left = match cvt(sys_poll(&mut self.fds, timeout)) {
                Ok(n) => n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
                Err(e) => return Err(context(NAME, POLL_CALL, None, e)),
            };
            if left > 0 && self.fds[0].revents != 0 {
                self.fds[0].revents = 0;
                self.waker.drain();
                events.set_woken();
                left -= 1;
            }
            let len = self.fds.len();
            if len <= 1 {
                return Ok(0);
            }
            let start = self.cursor.clamp(1, len - 1);
            let mut k = 0;
            while left > 0 && k < len - 1 && !events.is_full() {
                let i = 1 + (start - 1 + k) % (len - 1);
                k += 1;
                let pfd = &mut self.fds[i];
                if pfd.revents == 0 {
                    continue;
                }
                left -= 1;
                let (fd, revents) = (pfd.fd, std::mem::take(&mut pfd.revents));
                if let Some((token, ready)) = self.slots.accept(fd, None, translate(revents, RDHUP_HERE)) {
                    events.push(Event { token, fd, ready });
                    if self.slots.get(fd).is_some_and(|s| !s.armed) {
                        self.sync(fd);
                    }
                }
            }
            self.cursor = 1 + (start - 1 + k) % (len - 1);
            // Clear what the scan did not reach; level-triggered, it comes back.
            for pfd in &mut self.fds {
                pfd.revents = 0;
            }
            Ok(events.len())
        }

        fn timeout_resolution(&self) -> Duration {
            RESOLUTION
        }

        fn waker(&self) -> Waker {
            Waker::new(self.waker.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bits::*;
    use super::{mask, translate};
    use crate::{Interest, Ready};

    #[test]
    fn plain_bits() {
        assert_eq!(translate(IN, 0), Ready::READABLE);
        assert_eq!(translate(OUT, 0), Ready::WRITABLE);
        assert_eq!(translate(PRI | IN, 0), Ready::PRIORITY | Ready::READABLE);
    }

    #[test]
    fn rdhup_only_where_the_platform_has_it() {
        assert_eq!(translate(IN | LINUX_RDHUP, LINUX_RDHUP), Ready::READABLE | Ready::READ_CLOSED);
        // On a platform without POLLRDHUP, 0x2000 means nothing to us.
        assert_eq!(translate(IN | LINUX_RDHUP, 0), Ready::READABLE);
        assert_eq!(mask(Interest::READ, 0), IN);
        assert_eq!(mask(Interest::BOTH, LINUX_RDHUP), IN | OUT | LINUX_RDHUP);
    }

    #[test]
    fn errors() {
        assert_eq!(translate(NVAL, 0), Ready::ERROR);
        assert_eq!(translate(IN | OUT | ERR | HUP, 0), Ready::ERROR | Ready::HUP | Ready::READ_CLOSED);
        assert_eq!(translate(HUP, 0), Ready::HUP | Ready::READ_CLOSED);
    }
}
